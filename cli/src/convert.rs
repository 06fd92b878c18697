//! `kompakt convert`: a Hugging Face checkpoint to one `.kpk` file.
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
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
    /// Model name stored in the file
    #[arg(long)]
    pub name: Option<String>,
}

pub fn run(args: ConvertArgs) -> Result<()> {
    let dtype = DType::from_name(&args.dtype)
        .filter(|d| !matches!(d, DType::U8 | DType::I32))
        .with_context(|| {
            format!(
                "unknown --dtype `{}` (use f32, f16, bf16, q8_0, q4_k, q3_k, q2_k or iq2)",
                args.dtype
            )
        })?;
    let opts = ConvertOptions {
        checkpoint: args.checkpoint.clone(),
        out: args.out.clone(),
        dtype,
        prompt_style: args.prompt_style.map(|s| match s {
            Style::Chat => PromptStyle::Chat,
            Style::Base => PromptStyle::Base,
        }),
        name: args.name,
    };
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
        bar.set_message(p.tensor.to_string());
        true
    })
    .with_context(|| format!("converting {}", args.checkpoint.display()))?;
    bar.finish_and_clear();
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
