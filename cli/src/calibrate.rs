//! `kompakt calibrate`: runs the uncompressed model on calibration text
//! (decoder, in independent windows) and speech (encoder, projector and the
//! translation prompt's prefill) and records, for every linear layer, the
//! mean squared input per input channel (llama.cpp's imatrix) and, for every
//! block, ShortGPT's block influence. The file format is described in
//! `kompakt_converter::calib`.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use kompakt_converter::calib::{self, Calibration};
use kompakt_runtime::{eval, KvPrecision, Model, Session};
use serde_json::json;

#[derive(Args)]
pub struct CalibrateArgs {
    /// The uncompressed model (.kpk, e.g. the f32 or f16 conversion)
    #[arg(long)]
    pub model: PathBuf,
    /// Calibration text file(s), UTF-8 (repeatable)
    #[arg(long)]
    pub text: Vec<PathBuf>,
    /// Directory of calibration WAV files (at most 30 s each): run through the
    /// encoder and the translation prompt
    #[arg(long)]
    pub audio: Option<PathBuf>,
    /// Prompt language for the audio clips
    #[arg(long, default_value = "de")]
    pub lang: String,
    /// Use at most this many tokens of each text file (0 = all)
    #[arg(long, default_value_t = 0)]
    pub max_tokens: usize,
    /// Context window in tokens (the text is cut into independent windows)
    #[arg(long, default_value_t = 512)]
    pub window: usize,
    /// Worker threads (0 = one per core)
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Output calibration file (safetensors)
    #[arg(long, short)]
    pub out: PathBuf,
}

fn wavs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading --audio {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav")))
        .collect();
    v.sort();
    if v.is_empty() {
        bail!("--audio {}: no .wav files", dir.display());
    }
    Ok(v)
}

fn xxh3_file(p: &Path) -> Result<String> {
    let b = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(format!("{:016x}", calib::hash_bytes(&b)))
}

/// Source layer ids of the model's layers (`<stack>.layer_ids` when pruned).
fn layer_ids(model: &Model, stack: &str, n: usize) -> Result<Vec<usize>> {
    let meta = model.file().metadata();
    Ok(match meta.opt_i64s(&format!("{stack}.layer_ids")) {
        Some(v) => v.iter().map(|&l| l as usize).collect(),
        None => (0..n).collect(),
    })
}

/// Turns the runtime's accumulated sums into the file's contents.
pub fn to_file(
    model: &Model,
    stats: &kompakt_runtime::calib::Calibration,
    inputs: serde_json::Value,
) -> Result<Calibration> {
    let cfg = model.config();
    let mut c = Calibration {
        model: cfg.name.clone(),
        inputs,
        llm_layer_ids: layer_ids(model, "llm", cfg.llm.n_layers)?,
        audio_layer_ids: layer_ids(model, "audio", cfg.audio.n_layers)?,
        ..Default::default()
    };
    for (name, s) in &stats.inputs {
        c.imatrix.insert(name.clone(), s.mean());
        c.counts.insert(name.clone(), s.count);
    }
    let block = |v: &[kompakt_runtime::calib::Influence], n: usize| -> Vec<f32> {
        (0..n)
            .map(|i| v.get(i).map_or(0.0, |b| b.value() as f32))
            .collect()
    };
    c.llm_influence = block(&stats.llm_blocks, cfg.llm.n_layers);
    c.audio_influence = block(&stats.audio_blocks, cfg.audio.n_layers);
    c.llm_tokens = stats.llm_blocks.first().map_or(0, |b| b.count);
    c.audio_frames = stats.audio_blocks.first().map_or(0, |b| b.count);
    Ok(c)
}

pub fn run(args: CalibrateArgs) -> Result<()> {
    if args.text.is_empty() && args.audio.is_none() {
        bail!("nothing to calibrate on: pass --text FILE and/or --audio DIR");
    }
    if args.window < 2 {
        bail!("--window must be at least 2");
    }
    let model = Arc::new(crate::load_model(&args.model, false)?);
    model
        .template(&args.lang)
        .with_context(|| format!("--lang {}", args.lang))?;
    let mut session = Session::new(model.clone(), args.threads)?;
    session.set_kv_precision(KvPrecision::F32);
    session.set_calibration(true);

    let mut inputs = Vec::new();
    let mut texts = Vec::new();
    for p in &args.text {
        let t = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let mut ids = eval::tokenize(&model, &t)?;
        if args.max_tokens > 0 {
            ids.truncate(args.max_tokens);
        }
        if ids.len() < 2 {
            bail!("{}: fewer than 2 tokens of text", p.display());
        }
        inputs.push(json!({
            "text": p.file_name().map(|n| n.to_string_lossy().into_owned()),
            "xxh3": xxh3_file(p)?, "tokens": ids.len(), "window": args.window,
        }));
        texts.push((p, ids));
    }
    let clips = match &args.audio {
        Some(d) => wavs(d)?,
        None => Vec::new(),
    };
    let windows: usize = texts
        .iter()
        .map(|(_, ids)| eval::windows(ids, args.window).len())
        .sum();
    let bar = ProgressBar::new((windows + clips.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} windows and clips, ETA {eta} {msg}",
        )
        .expect("static template"),
    );
    let started = std::time::Instant::now();
    for (p, ids) in &texts {
        bar.set_message(p.display().to_string());
        for w in eval::windows(ids, args.window) {
            session
                .text_logits(w, args.window)
                .with_context(|| format!("running {}", p.display()))?;
            bar.inc(1);
        }
    }
    for clip in &clips {
        bar.set_message(clip.display().to_string());
        let pcm = kompakt_audio::load_16k_mono(clip)
            .with_context(|| format!("reading {}", clip.display()))?;
        let secs = pcm.len() as f64 / 16000.0;
        if secs > 30.0 {
            bail!(
                "{}: {secs:.1} s of audio; calibration clips must be at most 30 s",
                clip.display()
            );
        }
        let run = |s: &mut Session| -> kompakt_runtime::Result<()> {
            let emb = s.encode(&s.features(&pcm)?)?;
            s.prompt_logits(&args.lang, &emb)?;
            Ok(())
        };
        run(&mut session).with_context(|| format!("running {}", clip.display()))?;
        inputs.push(json!({
            "audio": clip.file_name().map(|n| n.to_string_lossy().into_owned()),
            "xxh3": xxh3_file(clip)?, "seconds": secs, "prompt": args.lang,
        }));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let stats = session
        .take_calibration()
        .context("calibration statistics were not collected")?;
    let mut c = to_file(&model, &stats, serde_json::Value::Array(inputs))?;
    c.path = args.out.clone();
    calib::write(&args.out, &c)?;
    eprintln!(
        "wrote {}: {} importance vectors, {} decoder tokens, {} encoder frames, {} + {} block influences in {:.1} s",
        args.out.display(),
        c.imatrix.len(),
        c.llm_tokens,
        c.audio_frames,
        c.llm_influence.len(),
        c.audio_influence.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kompakt_converter::{ConvertOptions, PromptStyle};
    use kompakt_format::DType;

    #[test]
    fn writes_every_tensor_for_the_fixture() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let dir = tempfile::tempdir().unwrap();
        let kpk = dir.path().join("m.kpk");
        let mut o = ConvertOptions::new(root.join("models/tiny-mha"), &kpk, DType::F32);
        o.prompt_style = Some(PromptStyle::Chat);
        kompakt_converter::convert(&o, &mut |_| true).unwrap();
        let audio = dir.path().join("clips");
        std::fs::create_dir(&audio).unwrap();
        std::fs::copy(
            root.join("audio/short_16k_mono_s16.wav"),
            audio.join("a.wav"),
        )
        .unwrap();
        let text = dir.path().join("calib.en.txt");
        std::fs::write(
            &text,
            "The weather is nice today. We walked along the river and talked about the next trip.",
        )
        .unwrap();
        let out = dir.path().join("calib.safetensors");
        run(CalibrateArgs {
            model: kpk.clone(),
            text: vec![text],
            audio: Some(audio),
            lang: "de".into(),
            max_tokens: 0,
            window: 8,
            threads: 1,
            out: out.clone(),
        })
        .unwrap();
        let c = calib::read(&out).unwrap();
        let m = Model::load(&kpk).unwrap();
        let cfg = m.config();
        let (d, h) = (cfg.audio.d_model, cfg.llm.hidden_size);
        let mut expect: Vec<(String, usize)> = vec![
            ("projector.weight".into(), d),
            ("llm.lm_head.weight".into(), h),
        ];
        for i in 0..cfg.llm.n_layers {
            for w in ["attn.q", "attn.k", "attn.v", "mlp.gate", "mlp.up"] {
                expect.push((format!("llm.layers.{i}.{w}.weight"), h));
            }
            expect.push((format!("llm.layers.{i}.attn.o.weight"), cfg.llm.q_dim()));
            expect.push((format!("llm.layers.{i}.mlp.down.weight"), cfg.llm.ffn_dim));
        }
        for i in 0..cfg.audio.n_layers {
            for w in ["attn.q", "attn.k", "attn.v", "attn.o", "ffn.fc1"] {
                expect.push((format!("audio.layers.{i}.{w}.weight"), d));
            }
            expect.push((
                format!("audio.layers.{i}.ffn.fc2.weight"),
                cfg.audio.ffn_dim,
            ));
        }
        assert_eq!(c.imatrix.len(), expect.len());
        for (name, cols) in &expect {
            let v = &c.imatrix[name];
            assert_eq!(v.len(), *cols, "{name}");
            assert!(v.iter().all(|x| x.is_finite() && *x >= 0.0), "{name}");
            assert!(v.iter().any(|x| *x > 0.0), "{name}");
        }
        assert_eq!(c.llm_influence.len(), cfg.llm.n_layers);
        assert_eq!(c.audio_influence.len(), cfg.audio.n_layers);
        for v in c.llm_influence.iter().chain(&c.audio_influence) {
            assert!(v.is_finite() && *v >= 0.0 && *v <= 2.0, "{v}");
        }
        assert!(c.llm_tokens > 0 && c.audio_frames > 0);
        assert_eq!(c.llm_layer_ids, vec![0, 1]);
        // q, k and v share one input.
        assert_eq!(
            c.imatrix["llm.layers.0.attn.q.weight"],
            c.imatrix["llm.layers.0.attn.v.weight"]
        );
        assert_eq!(c.inputs.as_array().unwrap().len(), 2);
    }
}
