//! Calibration on the fixture models: the runtime's statistics are the
//! mean squares of the tapped inputs and ShortGPT block influences; a
//! calibration file lowers the importance-weighted quantization error of a
//! conversion; `auto:N` depth pruning drops the lowest-influence layers; bad
//! calibration files are refused with a message naming the problem.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kompakt_converter::calib::{self, Calibration};
use kompakt_converter::{ConvertOptions, PromptStyle};
use kompakt_format::{DType, KpkFile};
use kompakt_runtime::{eval, Model, Session};
use kompakt_tests::{converted, fixtures};

const TEXT: &str = "The weather is nice today. Der Zug fährt um acht Uhr ab. 今天天气很好。\n\
                    We walked along the river and talked about the next trip.";

fn speech() -> Vec<f32> {
    kompakt_audio::load_16k_mono(&fixtures().join("audio/short_16k_mono_s16.wav")).unwrap()
}

/// Runs `kpk` on the text (windows of 16) and the fixture speech with the
/// collector on; returns the file contents `kompakt calibrate` would write.
fn calibrate(kpk: &Path, audio: bool) -> Calibration {
    let model = Arc::new(Model::load(kpk).unwrap());
    let mut s = Session::new(model.clone(), 1).unwrap();
    s.set_calibration(true);
    let ids = eval::tokenize(&model, TEXT).unwrap();
    for w in eval::windows(&ids, 16) {
        s.text_logits(w, 16).unwrap();
    }
    if audio {
        let emb = s.encode(&s.features(&speech()).unwrap()).unwrap();
        s.prompt_logits("de", &emb).unwrap();
    }
    let stats = s.take_calibration().unwrap();
    let cfg = model.config();
    let meta = model.file().metadata();
    let ids_of = |key: &str, n: usize| -> Vec<usize> {
        meta.opt_i64s(key)
            .map(|v| v.iter().map(|&l| l as usize).collect())
            .unwrap_or_else(|| (0..n).collect())
    };
    let mut c = Calibration {
        model: cfg.name.clone(),
        inputs: serde_json::json!([{"text": "TEXT"}]),
        llm_layer_ids: ids_of("llm.layer_ids", cfg.llm.n_layers),
        audio_layer_ids: ids_of("audio.layer_ids", cfg.audio.n_layers),
        llm_influence: (0..cfg.llm.n_layers)
            .map(|i| stats.llm_blocks[i].value() as f32)
            .collect(),
        audio_influence: (0..cfg.audio.n_layers)
            .map(|i| stats.audio_blocks.get(i).map_or(0.0, |b| b.value() as f32))
            .collect(),
        llm_tokens: stats.llm_blocks[0].count,
        audio_frames: stats.audio_blocks.first().map_or(0, |b| b.count),
        ..Default::default()
    };
    for (n, st) in &stats.inputs {
        c.imatrix.insert(n.clone(), st.mean());
        c.counts.insert(n.clone(), st.count);
    }
    c
}

fn write_calib(dir: &Path, name: &str, c: &Calibration) -> PathBuf {
    let p = dir.join(name);
    calib::write(&p, c).unwrap();
    p
}

fn mean_sq(x: &[f32], cols: usize) -> Vec<f64> {
    let n = x.len() / cols;
    let mut m = vec![0.0f64; cols];
    for row in x.chunks_exact(cols) {
        for (a, &v) in m.iter_mut().zip(row) {
            *a += (v as f64).powi(2) / n as f64;
        }
    }
    m
}

fn assert_rel(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= 1e-5 * w.abs().max(1e-6),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn imatrix_and_block_influence_match_the_taps() {
    let kpk = converted("tiny-mha", DType::F32, PromptStyle::Chat);
    let model = Arc::new(Model::load(&kpk).unwrap());
    let file = KpkFile::open(&kpk).unwrap();
    let vec_of = |n: &str| file.tensor(n).unwrap().to_f32_vec().unwrap();
    let h = model.config().llm.hidden_size;
    let eps = model.config().llm.rms_norm_eps;
    let mut s = Session::new(model.clone(), 1).unwrap();
    s.set_taps(true);
    s.set_calibration(true);
    // One window: every position passes once.
    let ids = eval::tokenize(&model, TEXT).unwrap();
    let ids = &ids[..12];
    s.text_logits(ids, 12).unwrap();
    let c = s.calibration().unwrap().clone();
    let l0 = s.taps().get("llm.layers.0").unwrap().data.clone();
    let l1 = s.taps().get("llm.layers.1").unwrap().data.clone();

    // Input of layer 1's q/k/v: RMSNorm of layer 0's output.
    let mut normed = vec![0.0f32; l0.len()];
    kompakt_runtime::ops::rms_norm_into(
        &l0,
        &mut normed,
        h,
        &vec_of("llm.layers.1.attn_norm.weight"),
        eps,
    );
    let want = mean_sq(&normed, h);
    for w in ["attn.q", "attn.k", "attn.v"] {
        let st = &c.inputs[&format!("llm.layers.1.{w}.weight")];
        assert_eq!(st.count, 12);
        assert_rel(w, &st.mean(), &want);
    }
    // lm_head's input: the final norm of the last layer's output.
    kompakt_runtime::ops::rms_norm_into(&l1, &mut normed, h, &vec_of("llm.norm.weight"), eps);
    assert_rel(
        "lm_head",
        &c.inputs["llm.lm_head.weight"].mean(),
        &mean_sq(&normed, h),
    );
    // Block influence of layer 1: 1 - mean cos(layer 0 output, layer 1 output).
    let cos: f64 = l0
        .chunks(h)
        .zip(l1.chunks(h))
        .map(|(a, b)| {
            let d: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            d / (na * nb)
        })
        .sum::<f64>()
        / 12.0;
    assert!((c.llm_blocks[1].value() - (1.0 - cos)).abs() < 1e-9);
    assert_eq!(c.llm_blocks[1].count, 12);

    // Audio: the projector's input is the tapped encoder output.
    let emb = s.encode(&s.features(&speech()).unwrap()).unwrap();
    let c = s.calibration().unwrap();
    let d = model.config().audio.d_model;
    assert_rel(
        "projector",
        &c.inputs["projector.weight"].mean(),
        &mean_sq(&emb.encoder, d),
    );
    assert_eq!(c.inputs["projector.weight"].count, emb.n as u64);
    assert_eq!(c.audio_blocks.len(), model.config().audio.n_layers);

    // The hook changes no numbers.
    let mut plain = Session::new(model.clone(), 1).unwrap();
    let mut cal = Session::new(model, 1).unwrap();
    cal.set_calibration(true);
    assert_eq!(
        plain.text_logits(ids, 5).unwrap(),
        cal.text_logits(ids, 5).unwrap()
    );
}

/// Sum over the linear layers of `kpk` of the importance-weighted relative
/// squared error against the f32 file.
fn weighted_error(kpk: &Path, reference: &Path, c: &Calibration) -> (f64, usize) {
    let (q, r) = (
        KpkFile::open(kpk).unwrap(),
        KpkFile::open(reference).unwrap(),
    );
    let (mut total, mut n) = (0.0, 0);
    for (name, imp) in &c.imatrix {
        let shape: Vec<usize> = r
            .tensor(name)
            .unwrap()
            .shape()
            .iter()
            .map(|&d| d as usize)
            .collect();
        let a = kompakt_runtime::weights::vector(&r, name, &shape).unwrap();
        let b = kompakt_runtime::weights::vector(&q, name, &shape).unwrap();
        let cols = imp.len();
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let w = imp[i % cols] as f64;
            num += w * ((x - y) as f64).powi(2);
            den += w * (*x as f64).powi(2);
        }
        total += num / den;
        n += 1;
    }
    (total, n)
}

#[test]
fn calibrated_conversion_has_lower_weighted_error() {
    let dir = tempfile::tempdir().unwrap();
    let f32_kpk = converted("tiny-mha", DType::F32, PromptStyle::Chat);
    let c = calibrate(&f32_kpk, true);
    let path = write_calib(dir.path(), "calib.safetensors", &c);
    let c = calib::read(&path).unwrap();
    let src = fixtures().join("models/tiny-mha");
    for dtype in [DType::Q2K, DType::Q4K] {
        let plain = dir.path().join(format!("plain-{dtype}.kpk"));
        let mut o = ConvertOptions::new(&src, &plain, dtype);
        o.prompt_style = Some(PromptStyle::Chat);
        kompakt_converter::convert(&o, &mut |_| true).unwrap();
        let calibrated = dir.path().join(format!("calib-{dtype}.kpk"));
        o.out = calibrated.clone();
        o.calibration = Some(path.clone());
        kompakt_converter::convert(&o, &mut |_| true).unwrap();
        let (e0, n) = weighted_error(&plain, &f32_kpk, &c);
        let (e1, _) = weighted_error(&calibrated, &f32_kpk, &c);
        eprintln!("{dtype}: importance-weighted rel. error over {n} matrices: {e0:.4} -> {e1:.4}");
        assert!(n > 20);
        assert!(e1 < e0, "{dtype}: {e1} >= {e0}");
        let f = KpkFile::open(&calibrated).unwrap();
        let m = f.metadata();
        let recipe = m.get_str("provenance.recipe").unwrap();
        assert!(recipe.contains("\"calibration\""), "{recipe}");
        assert!(
            recipe.contains(&format!("{:016x}", c.file_xxh3)),
            "{recipe}"
        );
        assert!(m
            .get_strs("provenance.techniques")
            .unwrap()
            .iter()
            .any(|t| t.contains("importance-weighted")));
    }
    // A budgeted conversion uses the calibration in its plan.
    let mut o = ConvertOptions::new(&src, dir.path().join("mixed.kpk"), DType::F32);
    o.budget = Some(
        std::fs::metadata(dir.path().join("plain-q4_k.kpk"))
            .unwrap()
            .len(),
    );
    o.calibration = Some(path);
    // Off by default: importance weighting only.
    assert!(!o.layer_sensitivity);
    let s = kompakt_converter::convert(&o, &mut |_| true).unwrap();
    assert!(s.plan.unwrap().choices.iter().all(|c| c.sensitivity == 1.0));
    assert!(s.file_size <= o.budget.unwrap());
    o.layer_sensitivity = true;
    let s = kompakt_converter::convert(&o, &mut |_| true).unwrap();
    let plan = s.plan.unwrap();
    assert!(plan.choices.iter().any(|c| c.sensitivity != 1.0));
    assert!(s.file_size <= o.budget.unwrap());
}

/// A copy of tiny-mha with 4 decoder and 4 encoder layers (copies of the two
/// source layers) in which layers 0 and 2 of each stack are identities (their
/// output projections zeroed): block influence 0.
fn four_layer_checkpoint(dir: &Path) -> PathBuf {
    let src = fixtures().join("models/tiny-mha");
    let out = dir.join("tiny-4layer");
    std::fs::create_dir_all(&out).unwrap();
    let mut tensors: HashMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)> = HashMap::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") {
            let bytes = std::fs::read(&p).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            for (n, v) in st.iter() {
                tensors.insert(
                    n.to_string(),
                    (v.dtype(), v.shape().to_vec(), v.data().to_vec()),
                );
            }
        } else if name != "model.safetensors.index.json" && name != "config.json" {
            std::fs::copy(&p, out.join(&name)).unwrap();
        }
    }
    let mut outt = HashMap::new();
    let zero_llm = ["self_attn.o_proj.weight", "mlp.down_proj.weight"];
    let zero_audio = [
        "self_attn.out_proj.weight",
        "self_attn.out_proj.bias",
        "fc2.weight",
        "fc2.bias",
    ];
    for (n, t) in &tensors {
        let mut put = |prefix: &str, zero: &[&str]| -> bool {
            let Some(rest) = n.strip_prefix(prefix) else {
                return false;
            };
            let (l, tail) = rest.split_once('.').unwrap();
            let l: usize = l.parse().unwrap();
            for dst in [l, l + 2] {
                let mut t = t.clone();
                if dst % 2 == 0 && zero.contains(&tail) {
                    t.2.iter_mut().for_each(|b| *b = 0);
                }
                outt.insert(format!("{prefix}{dst}.{tail}"), t);
            }
            true
        };
        if !put("language_model.model.layers.", &zero_llm)
            && !put("audio_tower.layers.", &zero_audio)
        {
            outt.insert(n.clone(), t.clone());
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = outt
        .iter()
        .map(|(n, (d, s, b))| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(
        out.join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    cfg["text_config"]["num_hidden_layers"] = 4.into();
    cfg["text_config"]["layer_types"] = serde_json::json!(vec!["full_attention"; 4]);
    cfg["audio_config"]["encoder_layers"] = 4.into();
    std::fs::write(out.join("config.json"), cfg.to_string()).unwrap();
    out
}

#[test]
fn auto_depth_pruning_drops_the_lowest_influence_layers() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = four_layer_checkpoint(dir.path());
    let full = dir.path().join("full.kpk");
    let mut o = ConvertOptions::new(&ckpt, &full, DType::F32);
    o.prompt_style = Some(PromptStyle::Chat);
    kompakt_converter::convert(&o, &mut |_| true).unwrap();
    let c = calibrate(&full, true);
    eprintln!(
        "block influence: llm {:?}, audio {:?}",
        c.llm_influence, c.audio_influence
    );
    assert!(c.llm_influence[0] < 1e-6 && c.llm_influence[2] < 1e-6);
    assert!(c.audio_influence[0] < 1e-6 && c.audio_influence[2] < 1e-6);
    assert!(c.llm_influence[1] > 1e-4 && c.llm_influence[3] > 1e-4);
    let path = write_calib(dir.path(), "calib.safetensors", &c);

    // auto:1 drops layer 2 (layer 0 has the same influence but is the first).
    let pruned = dir.path().join("pruned.kpk");
    let mut p = o.clone();
    p.out = pruned.clone();
    p.calibration = Some(path.clone());
    p.drop_llm_auto = Some(1);
    p.drop_audio_auto = Some(1);
    let s = kompakt_converter::convert(&p, &mut |_| true).unwrap();
    assert_eq!(s.dropped_llm_layers, vec![2]);
    assert_eq!(s.dropped_audio_layers, vec![2]);
    let f = KpkFile::open(&pruned).unwrap();
    let m = f.metadata();
    assert_eq!(m.get_i64s("llm.layer_ids").unwrap(), &[0, 1, 3]);
    assert_eq!(m.get_i64s("audio.layer_ids").unwrap(), &[0, 1, 3]);
    let t = m.get_strs("provenance.techniques").unwrap();
    assert!(
        t.iter()
            .any(|t| t.contains("decoder depth pruning (3 of 4") && t.contains("block influence")),
        "{t:?}"
    );
    let recipe: serde_json::Value =
        serde_json::from_str(m.get_str("provenance.recipe").unwrap()).unwrap();
    assert_eq!(recipe["llm_layers"]["by_block_influence"][0]["layer"], 2);
    // An identity layer removed: the same logits as the full model.
    let ids = eval::tokenize(&Model::load(&full).unwrap(), TEXT).unwrap();
    let logits = |k: &Path| {
        let mut s = Session::new(Arc::new(Model::load(k).unwrap()), 1).unwrap();
        s.text_logits(&ids, 64).unwrap()
    };
    let (a, b) = (logits(&full), logits(&pruned));
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-4, "{diff}");

    // Calibrating the pruned model records its source layer ids, and its
    // file still maps onto the checkpoint.
    let c2 = calibrate(&pruned, false);
    assert_eq!(c2.llm_layer_ids, vec![0, 1, 3]);
    let path2 = write_calib(dir.path(), "calib2.safetensors", &c2);
    let mut q = o.clone();
    q.out = dir.path().join("q.kpk");
    q.dtype = DType::Q4K;
    q.calibration = Some(path2.clone());
    q.drop_llm_layers = vec![2];
    kompakt_converter::convert(&q, &mut |_| true).unwrap();
    // ... but not a conversion that keeps a layer it never saw.
    q.drop_llm_layers = vec![];
    let err = kompakt_converter::convert(&q, &mut |_| true).unwrap_err();
    assert!(err.to_string().contains("source llm layer 2"), "{err}");

    // Too many, audio without audio calibration, no calibration at all.
    let mut bad = p.clone();
    bad.drop_llm_auto = Some(3);
    let err = kompakt_converter::convert(&bad, &mut |_| true).unwrap_err();
    assert!(
        err.to_string().contains("never the first or the last"),
        "{err}"
    );
    bad = p.clone();
    bad.calibration = Some(path2);
    bad.drop_llm_auto = None;
    let err = kompakt_converter::convert(&bad, &mut |_| true).unwrap_err();
    assert!(err.to_string().contains("no audio inputs"), "{err}");
    bad.calibration = None;
    let err = kompakt_converter::convert(&bad, &mut |_| true).unwrap_err();
    assert!(err.to_string().contains("needs --calibration"), "{err}");
}

#[test]
fn bad_calibration_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f32_kpk = converted("tiny-mha", DType::F32, PromptStyle::Chat);
    let good = calibrate(&f32_kpk, false);
    let convert = |calib: &Path| {
        let mut o = ConvertOptions::new(
            fixtures().join("models/tiny-mha"),
            dir.path().join("out.kpk"),
            DType::Q4K,
        );
        o.calibration = Some(calib.to_path_buf());
        let e = kompakt_converter::convert(&o, &mut |_| true).unwrap_err();
        assert!(!dir.path().join("out.kpk").exists());
        e.to_string()
    };

    let corrupt = dir.path().join("corrupt.safetensors");
    std::fs::write(&corrupt, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": garbage").unwrap();
    let e = convert(&corrupt);
    assert!(
        e.contains("corrupt.safetensors") && e.contains("not a safetensors file"),
        "{e}"
    );

    let missing = dir.path().join("missing.safetensors");
    let e = convert(&missing);
    assert!(e.contains("missing.safetensors"), "{e}");

    let mut c = good.clone();
    c.imatrix
        .get_mut("llm.layers.1.mlp.down.weight")
        .unwrap()
        .truncate(7);
    let e = convert(&write_calib(dir.path(), "shape.safetensors", &c));
    assert!(
        e.contains("llm.layers.1.mlp.down.weight.imatrix") && e.contains("has 7 values"),
        "{e}"
    );

    let mut c = good.clone();
    c.imatrix.remove("llm.layers.0.attn.o.weight");
    let e = convert(&write_calib(dir.path(), "gap.safetensors", &c));
    assert!(e.contains("no `llm.layers.0.attn.o.weight.imatrix`"), "{e}");

    // A model with more layers than the checkpoint.
    let mut c = good.clone();
    c.llm_layer_ids = vec![0, 1, 2];
    c.llm_influence = vec![0.1, 0.1, 0.1];
    let e = convert(&write_calib(dir.path(), "model.safetensors", &c));
    assert!(
        e.contains("does not fit this model") && e.contains("LLM layer 2"),
        "{e}"
    );

    // Not a calibration file: a safetensors file without the format tag.
    let e = convert(&fixtures().join("models/tiny-mha/model-00002-of-00002.safetensors"));
    assert!(e.contains("not a kompakt-calibration file"), "{e}");

    let mut c = good;
    c.imatrix.get_mut("llm.lm_head.weight").unwrap()[3] = -1.0;
    let e = convert(&write_calib(dir.path(), "negative.safetensors", &c));
    assert!(
        e.contains("llm.lm_head.weight.imatrix") && e.contains("not a finite non-negative"),
        "{e}"
    );
}
