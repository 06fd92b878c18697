//! `kompakt convert`: a Hugging Face checkpoint to one `.kpk` file.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use kompakt_converter::recipe::{LayerDrop, Recipe};
use kompakt_converter::vocab::KeepVocab;
use kompakt_converter::{ConvertOptions, PromptStyle};
use kompakt_format::DType;

#[derive(Clone, Copy, ValueEnum)]
pub enum Style {
    Chat,
    Base,
}

#[derive(Args)]
pub struct ConvertArgs {
    /// Hugging Face checkpoint directory (config.json, tokenizer.json, safetensors)
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output .kpk file
    #[arg(long, short)]
    pub out: PathBuf,
    /// Storage type of the weight matrices: f32, f16, bf16, q8_0, q4_k, q3_k, q2_k, iq2
    #[arg(long, default_value = "f16")]
    pub dtype: String,
    /// Prompt format (default: chat when the tokenizer has a chat template)
    #[arg(long, value_enum)]
    pub prompt_style: Option<Style>,
    /// Instruction for a target language, LANG=TEXT (repeatable): replaces
    /// the built-in one of de or zh, or adds a language, e.g.
    /// --instruction de="Translate the English speech into German:"
    #[arg(long, value_name = "LANG=TEXT")]
    pub instruction: Vec<String>,
    /// Prompt template file (UTF-8) used instead of --prompt-style's: the
    /// prompt text with `{audio}` where the clip goes and `{instruction}`
    /// where the instruction goes, each exactly once
    #[arg(long, value_name = "FILE", conflicts_with = "prompt_style")]
    pub prompt_template: Option<PathBuf>,
    /// Model name stored in the file
    #[arg(long)]
    pub name: Option<String>,
    /// Fit IWSLT 2025 size bin N (1-5): each weight matrix gets the type that
    /// minimises the estimated loss within the bin's upper limit (10^6-byte MB, 0.5 % margin)
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=5), conflicts_with = "max_size")]
    pub bin: Option<u8>,
    /// Fit the file under this many bytes (mixed-precision allocation)
    #[arg(long)]
    pub max_size: Option<u64>,
    /// Trim the vocabulary: `auto` (Latin and Han script tokens) or a UTF-8 text
    /// corpus whose tokens are kept (repeatable); specials and byte tokens are always kept
    #[arg(long)]
    pub keep_vocab: Vec<String>,
    /// Decoder layers to drop: source indices (comma-separated), or `auto:N`
    /// for the N layers of lowest calibration block influence (needs --calibration)
    #[arg(long, value_delimiter = ',')]
    pub drop_llm_layers: Vec<String>,
    /// Audio encoder layers to drop: source indices (comma-separated), or `auto:N`
    #[arg(long, value_delimiter = ',')]
    pub drop_audio_layers: Vec<String>,
    /// Conversion recipe: a built-in preset (bin1, bin2, bin3) or a TOML file
    /// (size target, vocabulary, pruning, allowed types per tensor pattern;
    /// see converter/recipes/). Flags given here override the recipe's settings
    #[arg(long)]
    pub recipe: Option<String>,
    /// Calibration file from `kompakt calibrate`: importance-weighted
    /// quantization and allocation, and block influences for `auto:N` pruning
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// With --calibration and a budget, also weigh tensor losses by their
    /// layer's block influence (off by default: on the real-weight proxy it
    /// made the allocation worse; importance weighting is always used)
    #[arg(long)]
    pub layer_sensitivity: bool,
    /// Keep the decoder's q4_k matrices row-major instead of storing them as
    /// q4_k_x4 (the same blocks with rows interleaved by four, for the
    /// faster x86 mat-vec kernel; other CPUs turn them back into rows)
    #[arg(long)]
    pub no_interleave: bool,
    /// Also write the quantized blocks of the decoder's weight matrices to
    /// FILE (safetensors): the starting point of `kompakt-train qat`, which
    /// trains the model in exactly these formats
    #[arg(long, value_name = "FILE")]
    pub export_codes: Option<PathBuf>,
}

/// `--drop-*-layers`: explicit source indices and an optional `auto:N`.
fn layer_drops(values: &[String], flag: &str) -> Result<(Vec<usize>, Option<usize>)> {
    let mut list = Vec::new();
    let mut auto = None;
    for v in values {
        let v = v.trim();
        if let Some(n) = v.strip_prefix("auto:") {
            let n: usize = n
                .parse()
                .with_context(|| format!("{flag} {v}: expected auto:N with a layer count N"))?;
            if auto.replace(n).is_some() {
                bail!("{flag}: auto:N given twice");
            }
        } else {
            list.push(v.parse().with_context(|| {
                format!("{flag} {v}: expected layer indices (e.g. 30,31) or auto:N")
            })?);
        }
    }
    Ok((list, auto))
}

pub fn run(args: ConvertArgs) -> Result<()> {
    let dtype = DType::from_name(&args.dtype)
        .filter(|d| !matches!(d, DType::U8 | DType::I32 | DType::Q4KX4))
        .with_context(|| {
            format!(
                "unknown --dtype `{}` (use f32, f16, bf16, q8_0, q4_k, q3_k, q2_k or iq2)",
                args.dtype
            )
        })?;
    let mut opts = ConvertOptions::new(&args.checkpoint, &args.out, dtype);
    opts.prompt_style = args.prompt_style.map(|s| match s {
        Style::Chat => PromptStyle::Chat,
        Style::Base => PromptStyle::Base,
    });
    for i in &args.instruction {
        let Some((lang, text)) = i.split_once('=') else {
            bail!("--instruction `{i}`: write LANG=TEXT, e.g. de=\"Translate the English speech into German:\"");
        };
        opts.instructions
            .push((lang.trim().to_string(), text.to_string()));
    }
    if let Some(path) = &args.prompt_template {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "--prompt-template {}: cannot read it as UTF-8 text",
                path.display()
            )
        })?;
        opts.prompt_template = Some(text);
    }
    opts.name = args.name;
    opts.bin = args.bin;
    opts.budget = match (args.bin, args.max_size) {
        (Some(b), _) => kompakt_converter::convert::bin_budget(b),
        (None, Some(m)) => Some(m),
        (None, None) => None,
    };
    opts.keep_vocab = match args.keep_vocab.as_slice() {
        [] => None,
        [a] if a == "auto" => Some(KeepVocab::Auto),
        files => {
            if files.iter().any(|f| f == "auto") {
                bail!("--keep-vocab auto cannot be combined with corpus files");
            }
            Some(KeepVocab::Corpus(files.iter().map(PathBuf::from).collect()))
        }
    };
    (opts.drop_llm_layers, opts.drop_llm_auto) =
        layer_drops(&args.drop_llm_layers, "--drop-llm-layers")?;
    (opts.drop_audio_layers, opts.drop_audio_auto) =
        layer_drops(&args.drop_audio_layers, "--drop-audio-layers")?;
    opts.calibration = args.calibration;
    opts.layer_sensitivity = args.layer_sensitivity;
    opts.interleave_q4k = !args.no_interleave;
    if let Some(p) = &args.export_codes {
        if p == &args.out {
            bail!("--export-codes {}: the same path as --out", p.display());
        }
        if p.is_dir() {
            bail!("--export-codes {}: is a directory", p.display());
        }
    }
    opts.export_codes = args.export_codes.clone();
    if let Some(name) = &args.recipe {
        let r = Recipe::load(name).with_context(|| format!("--recipe {name}"))?;
        if args.bin.is_none() && args.max_size.is_none() {
            opts.bin = r.size.bin;
            opts.budget = r.budget();
        }
        if args.keep_vocab.is_empty() {
            opts.keep_vocab = r.keep_vocab();
        }
        let (llm, audio) = r.layer_drops();
        for (given, drop, list, auto) in [
            (
                &args.drop_llm_layers,
                llm,
                &mut opts.drop_llm_layers,
                &mut opts.drop_llm_auto,
            ),
            (
                &args.drop_audio_layers,
                audio,
                &mut opts.drop_audio_layers,
                &mut opts.drop_audio_auto,
            ),
        ] {
            if given.is_empty() {
                match drop {
                    Some(LayerDrop::List(v)) => *list = v,
                    Some(LayerDrop::Auto(n)) => *auto = Some(n),
                    None => {}
                }
            }
        }
        if (opts.drop_llm_auto.is_some() || opts.drop_audio_auto.is_some())
            && opts.calibration.is_none()
        {
            bail!(
                "recipe `{name}` drops layers by block influence (auto:N): give --calibration \
                 FILE from `kompakt calibrate`, or explicit --drop-llm-layers/--drop-audio-layers"
            );
        }
        opts.recipe = Some(r);
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} tensors, ETA {eta} {msg}",
        )
        .expect("static template"),
    );
    let started = std::time::Instant::now();
    let summary = kompakt_converter::convert(&opts, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(match p.stage {
            kompakt_converter::Stage::Planning => "measuring quantization errors".to_string(),
            kompakt_converter::Stage::Writing => p.tensor.to_string(),
        });
        true
    })
    .with_context(|| format!("converting {}", args.checkpoint.display()))?;
    bar.finish_and_clear();
    if opts.drop_llm_auto.is_some() || !summary.dropped_llm_layers.is_empty() {
        eprintln!("dropped decoder layers {:?}", summary.dropped_llm_layers);
    }
    if opts.drop_audio_auto.is_some() || !summary.dropped_audio_layers.is_empty() {
        eprintln!("dropped audio layers {:?}", summary.dropped_audio_layers);
    }
    if summary.trained_codes > 0 {
        eprintln!(
            "{} weight matrices stored with their trained codes ({})",
            summary.trained_codes,
            kompakt_converter::codes::FILE
        );
    }
    if let Some(p) = &opts.export_codes {
        eprintln!(
            "wrote the codes of {} decoder weight matrices to {}",
            summary.exported_codes,
            p.display()
        );
    }
    if let Some(k) = summary.kept_vocab {
        eprintln!("vocabulary trimmed to {k} token rows");
    }
    if let Some(plan) = &summary.plan {
        let mut hist = std::collections::BTreeMap::<&str, (usize, u64)>::new();
        for c in &plan.choices {
            let e = hist.entry(c.dtype.name()).or_default();
            e.0 += 1;
            e.1 += c.bytes;
        }
        let parts: Vec<String> = hist
            .iter()
            .map(|(t, (n, b))| format!("{t}: {n} tensors, {b} bytes"))
            .collect();
        eprintln!(
            "plan for a budget of {} bytes: {}",
            plan.budget,
            parts.join("; ")
        );
    }
    eprintln!(
        "wrote {} ({} bytes, {} tensors, {} parameters) in {:.1} s",
        summary.path.display(),
        summary.file_size,
        summary.tensors,
        summary.params,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
