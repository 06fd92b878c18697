//! `kompakt synth-checkpoint`: a Qwen2-Audio-7B-shaped checkpoint with seeded
//! random weights, for scale tests and benchmarks.
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use kompakt_converter::synth::{self, SynthOptions};

#[derive(Args)]
pub struct SynthArgs {
    /// Output directory (about 16.8 GB with the defaults; keep it outside the repository)
    #[arg(long)]
    pub out: PathBuf,
    /// Decoder layers (the real model has 32)
    #[arg(long, default_value_t = 32)]
    pub llm_layers: usize,
    /// Audio encoder layers (the real model has 32)
    #[arg(long, default_value_t = 32)]
    pub audio_layers: usize,
    /// Number of safetensors shards
    #[arg(long, default_value_t = 5)]
    pub shards: usize,
    /// Random seed
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Copy this tokenizer.json (e.g. a real Qwen2 BPE with Qwen2-Audio's
    /// special tokens) instead of writing the synthetic one, whose
    /// placeholder tokens make `--keep-vocab auto` keep everything
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
}

pub fn run(args: SynthArgs) -> Result<()> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {bytes}/{total_bytes} ETA {eta}",
        )
        .expect("static template"),
    );
    let opts = SynthOptions {
        out: args.out.clone(),
        llm_layers: args.llm_layers,
        audio_layers: args.audio_layers,
        shards: args.shards,
        seed: args.seed,
        tokenizer: args.tokenizer.clone(),
    };
    if let Some(t) = &args.tokenizer {
        anyhow::ensure!(t.is_file(), "--tokenizer {}: no such file", t.display());
    }
    let total = synth::write(&opts, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .with_context(|| format!("writing {}", args.out.display()))?;
    bar.finish_and_clear();
    eprintln!(
        "wrote {} ({total} bytes of bf16 tensors)",
        args.out.display()
    );
    Ok(())
}
