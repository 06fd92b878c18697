//! `kompakt`: convert, inspect, translate and benchmark `.kpk` models.
use clap::{Parser, Subcommand};

mod bench;
mod calibrate;
mod convert;
mod eval;
mod inspect;
mod score;
mod synth;
mod translate;

#[derive(Parser)]
#[command(
    name = "kompakt",
    version,
    about = "Compress Qwen2-Audio into one small file and run it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a Hugging Face Qwen2-Audio checkpoint into a .kpk file
    Convert(convert::ConvertArgs),
    /// BLEU and chrF of translations against references (equal to sacreBLEU's)
    Score(score::ScoreArgs),
    /// Summarise a .kpk file: size, parameters, bits per weight, size bin
    Inspect(inspect::InspectArgs),
    /// Translate English speech (WAV files) into German or Chinese text
    Translate(translate::TranslateArgs),
    /// Fidelity meter: compare candidate models against a reference on held-out text and speech
    Eval(eval::EvalArgs),
    /// Measure load time, memory, per-stage speed and real-time factor against memory bandwidth
    Bench(bench::BenchArgs),
    /// Record activation importance and block influence on calibration text and speech
    Calibrate(calibrate::CalibrateArgs),
    /// Write a Qwen2-Audio-7B-shaped checkpoint with random weights (for scale tests)
    SynthCheckpoint(synth::SynthArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Convert(args) => convert::run(args),
        Command::Score(args) => score::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Translate(args) => translate::run(args),
        Command::Eval(args) => eval::run(args),
        Command::SynthCheckpoint(args) => synth::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Calibrate(args) => calibrate::run(args),
    };
    if let Err(err) = result {
        // A reader that went away (`kompakt translate ... | head`) ends the
        // command quietly, as it ends other Unix tools.
        let broken_pipe = err.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if broken_pipe {
            std::process::exit(0);
        }
        eprintln!("error: {}", one_line(&err));
        std::process::exit(1);
    }
}

/// The error chain on one line, leaving out causes whose text the message
/// before them already contains.
fn one_line(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out.replace('\n', " ")
}

/// Loads a model: memory-mapped, or with `huge_pages` read into memory
/// backed by transparent huge pages (`--huge-pages`).
pub(crate) fn load_model(
    path: &std::path::Path,
    huge_pages: bool,
) -> anyhow::Result<kompakt_runtime::Model> {
    let m = if huge_pages {
        kompakt_runtime::Model::load_in_huge_pages(path)
    } else {
        kompakt_runtime::Model::load(path)
    };
    // The runtime's errors about the file already name it.
    m.map_err(|e| {
        let text = e.to_string();
        let e = anyhow::Error::new(e);
        if text.contains(&path.display().to_string()) {
            e
        } else {
            e.context(format!("loading {}", path.display()))
        }
    })
}
