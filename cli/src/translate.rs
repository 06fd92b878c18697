//! `kompakt translate`: speech in, one translation per input out.
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use kompakt_runtime::{Model, Observer, Session, TranslateOptions};

#[derive(Args)]
pub struct TranslateArgs {
    /// The .kpk model
    #[arg(long)]
    pub model: PathBuf,
    /// Target language (a prompt stored in the model: de, zh)
    #[arg(long, default_value = "de")]
    pub lang: String,
    /// Beam width (1 = greedy)
    #[arg(long, default_value_t = 1)]
    pub beams: usize,
    /// Maximum number of generated tokens per input
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Worker threads (0 = one per core)
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print one JSON object per input with token ids and stage timings
    #[arg(long)]
    pub json: bool,
    /// Stream text to the terminal as it is decoded
    #[arg(long)]
    pub stream: bool,
    /// WAV files (any PCM or float format, any rate and channel count; at most 30 s each)
    #[arg(required = true)]
    pub audio: Vec<PathBuf>,
}

struct Streamer {
    on: bool,
}

impl Observer for Streamer {
    fn on_text(&mut self, piece: &str) -> bool {
        if self.on {
            eprint!("{piece}");
        }
        true
    }
}

pub fn run(args: TranslateArgs) -> Result<()> {
    if args.beams == 0 || args.max_tokens == 0 {
        bail!("--beams and --max-tokens must be at least 1");
    }
    let t0 = Instant::now();
    let model = Arc::new(
        Model::load(&args.model).with_context(|| format!("loading {}", args.model.display()))?,
    );
    let load_s = t0.elapsed().as_secs_f64();
    if !model.config().templates.contains_key(&args.lang) {
        bail!(
            "target language `{}` is not in this model (available: {})",
            args.lang,
            model.config().languages().join(", ")
        );
    }
    let mut session = Session::new(model.clone(), args.threads)?;
    let opts = TranslateOptions {
        lang: args.lang.clone(),
        beams: args.beams,
        max_new_tokens: args.max_tokens,
    };
    let stdout = std::io::stdout();
    for path in &args.audio {
        let t = Instant::now();
        let pcm = kompakt_audio::load_16k_mono(path)
            .with_context(|| format!("reading {}", path.display()))?;
        let read_s = t.elapsed().as_secs_f64();
        let mut streamer = Streamer { on: args.stream };
        let out = session
            .translate(&pcm, &opts, &mut streamer)
            .with_context(|| format!("translating {}", path.display()))?;
        if args.stream {
            eprintln!();
        }
        let mut lock = stdout.lock();
        if args.json {
            let tm = &out.timings;
            let v = serde_json::json!({
                "file": path.display().to_string(),
                "lang": args.lang,
                "text": out.text,
                "token_ids": out.token_ids,
                "audio_seconds": pcm.len() as f64 / 16000.0,
                "audio_tokens": out.n_audio_tokens,
                "prompt_tokens": out.prompt_tokens,
                "timings": {
                    "load_s": load_s,
                    "read_s": read_s,
                    "features_s": tm.features_s,
                    "encoder_s": tm.encoder_s,
                    "prefill_s": tm.prefill_s,
                    "prefill_tokens_per_s": tm.prefill_tokens as f64 / tm.prefill_s.max(1e-9),
                    "decode_s": tm.decode_s,
                    "decode_tokens": tm.decode_tokens,
                    "decode_tokens_per_s": tm.decode_tokens as f64 / tm.decode_s.max(1e-9),
                }
            });
            writeln!(lock, "{v}")?;
        } else {
            writeln!(lock, "{}", out.text.replace('\n', " "))?;
        }
    }
    Ok(())
}
