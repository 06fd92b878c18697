//! Structural compression on the fixture models: vocabulary trimming keeps
//! the output when the untrimmed model only emits kept tokens; depth pruning
//! and budgeted mixed precision give loadable files of the promised shape
//! and size.
use std::sync::Arc;

use kompakt_converter::vocab::KeepVocab;
use kompakt_converter::{ConvertError, ConvertOptions};
use kompakt_format::{DType, KpkFile};
use kompakt_runtime::{Model, Quiet, Session, TranslateOptions};
use kompakt_tests::fixtures;

fn translate(path: &std::path::Path) -> (String, Vec<u32>) {
    let model = Arc::new(Model::load(path).unwrap());
    let mut s = Session::new(model, 2).unwrap();
    let pcm =
        kompakt_audio::load_16k_mono(&fixtures().join("audio/medium_44k1_stereo_s24.wav")).unwrap();
    let opts = TranslateOptions {
        lang: "de".into(),
        beams: 1,
        max_new_tokens: 24,
        ..Default::default()
    };
    let out = s.translate(&pcm, &opts, &mut Quiet).unwrap();
    (out.text, out.token_ids)
}

fn options(dir: &tempfile::TempDir, name: &str) -> ConvertOptions {
    ConvertOptions::new(
        fixtures().join("models/tiny-gqa"),
        dir.path().join(name),
        DType::F32,
    )
}

#[test]
fn trimmed_vocabulary_gives_the_same_translation() {
    let dir = tempfile::tempdir().unwrap();
    let full = options(&dir, "full.kpk");
    kompakt_converter::convert(&full, &mut |_| true).unwrap();
    let (text, ids) = translate(&full.out);

    let mut trimmed = options(&dir, "trimmed.kpk");
    trimmed.keep_vocab = Some(KeepVocab::Ids(ids.clone()));
    let summary = kompakt_converter::convert(&trimmed, &mut |_| true).unwrap();
    let kept = summary.kept_vocab.unwrap();
    let file = KpkFile::open(&trimmed.out).unwrap();
    assert_eq!(
        file.metadata().get_u64("llm.vocab_size").unwrap() as usize,
        kept
    );
    assert!(kept < 512, "kept {kept} rows of 512");
    assert_eq!(
        file.tensor("llm.lm_head.weight").unwrap().shape()[0] as usize,
        kept
    );
    let (text2, ids2) = translate(&trimmed.out);
    assert_eq!(ids2, ids);
    assert_eq!(text2, text);
    eprintln!("vocabulary 512 -> {kept} rows, same {} tokens", ids.len());
}

#[test]
fn automatic_trimming_keeps_bytes_specials_and_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&dir, "auto.kpk");
    o.keep_vocab = Some(KeepVocab::Auto);
    let s = kompakt_converter::convert(&o, &mut |_| true).unwrap();
    let kept = s.kept_vocab.unwrap();
    // 456 regular + 6 special tokens; padding rows 462..512 are dropped.
    assert!((262..=462).contains(&kept), "kept {kept}");
    translate(&o.out);
}

#[test]
fn dropped_layers_are_recorded_and_the_model_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&dir, "pruned.kpk");
    o.drop_llm_layers = vec![1];
    o.drop_audio_layers = vec![0];
    kompakt_converter::convert(&o, &mut |_| true).unwrap();
    let f = KpkFile::open(&o.out).unwrap();
    let m = f.metadata();
    assert_eq!(m.get_u64("llm.n_layers").unwrap(), 1);
    assert_eq!(m.get_i64s("llm.layer_ids").unwrap(), &[0]);
    assert_eq!(m.get_i64s("audio.layer_ids").unwrap(), &[1]);
    assert!(f.get_tensor("llm.layers.1.attn.q.weight").is_none());
    translate(&o.out);

    let mut bad = options(&dir, "bad.kpk");
    bad.drop_llm_layers = vec![7];
    let err = kompakt_converter::convert(&bad, &mut |_| true).unwrap_err();
    assert!(err.to_string().contains("layer 7"), "{err}");
}

#[test]
fn budget_is_respected_and_too_small_a_budget_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let size = |dtype: DType| {
        let mut o = options(&dir, &format!("{dtype}.kpk"));
        o.dtype = dtype;
        kompakt_converter::convert(&o, &mut |_| true)
            .unwrap()
            .file_size
    };
    // On 64-wide rows every block type pads, so the smallest type differs
    // per tensor; the allocator starts from each tensor's smallest.
    let small = size(DType::IQ2).min(size(DType::Q8_0));
    let budget = (small + size(DType::F16)) / 2;
    let mut mixed = options(&dir, "mixed.kpk");
    mixed.budget = Some(budget);
    let s = kompakt_converter::convert(&mixed, &mut |_| true).unwrap();
    assert!(s.file_size <= budget, "{} > {budget}", s.file_size);
    let plan = s.plan.unwrap();
    let types: std::collections::BTreeSet<_> =
        plan.choices.iter().map(|c| c.dtype.name()).collect();
    assert!(
        types.len() > 1,
        "a mixed plan uses several types: {types:?}"
    );
    let f = KpkFile::open(&mixed.out).unwrap();
    assert!(f
        .metadata()
        .get_str("provenance.recipe")
        .unwrap()
        .contains("\"plan\""));
    translate(&mixed.out);

    let mut tiny = options(&dir, "tiny.kpk");
    tiny.budget = Some(small / 4);
    match kompakt_converter::convert(&tiny, &mut |_| true) {
        Err(ConvertError::Option(msg)) => assert!(msg.contains("--keep-vocab"), "{msg}"),
        other => panic!("expected a budget error, got {other:?}"),
    }
    assert!(!tiny.out.exists());
}

/// Without recipe rules the allocator keeps its floors even at the smallest
/// budget that fits: embeddings and lm_head never `iq2`, the projector at
/// `q8_0` or more, the audio encoder at `q4_k` or more; decoder layers do go
/// down to `iq2`.
#[test]
fn default_type_floors_hold_at_the_smallest_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&dir, "floor.kpk");
    o.budget = Some(1);
    let msg = match kompakt_converter::convert(&o, &mut |_| true) {
        Err(ConvertError::Option(msg)) => msg,
        other => panic!("expected a budget error, got {other:?}"),
    };
    // "even the smallest types give N bytes, ..."
    let smallest: u64 = msg
        .split_whitespace()
        .skip_while(|w| *w != "give")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in `{msg}`"));
    o.budget = Some(smallest);
    let s = kompakt_converter::convert(&o, &mut |_| true).unwrap();
    assert!(s.file_size <= smallest);
    let plan = s.plan.unwrap();
    let of = |name: &str| plan.dtype_of(name).unwrap();
    // On the fixture's 64-wide rows iq2 is the smallest type (66 bytes per
    // row against q8_0's 68), so without the floors these would take it.
    for t in ["llm.embed.weight", "llm.lm_head.weight"] {
        assert_ne!(of(t), DType::IQ2, "{t}");
    }
    assert!(matches!(of("projector.weight"), DType::Q8_0 | DType::F16));
    for c in &plan.choices {
        if c.kpk.starts_with("audio.") {
            assert!(
                matches!(c.dtype, DType::Q4K | DType::Q8_0 | DType::F16),
                "{} {}",
                c.kpk,
                c.dtype
            );
        }
    }
    assert!(plan
        .choices
        .iter()
        .any(|c| c.kpk.starts_with("llm.layers.") && c.dtype == DType::IQ2));
    translate(&o.out);
}

/// q4_k decoder matrices are stored as q4_k_x4 (the same blocks, rows
/// interleaved by four) unless `interleave_q4k` is off; the encoder's stay
/// row-major; both files translate alike.
#[test]
fn interleaved_q4k_gives_the_same_translation() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = options(&dir, "rows.kpk");
    rows.dtype = DType::Q4K;
    rows.interleave_q4k = false;
    let mut x4 = options(&dir, "x4.kpk");
    x4.dtype = DType::Q4K;
    for o in [&rows, &x4] {
        kompakt_converter::convert(o, &mut |_| true).unwrap();
    }
    let (fr, fx) = (
        KpkFile::open(&rows.out).unwrap(),
        KpkFile::open(&x4.out).unwrap(),
    );
    assert_eq!(fr.file_size(), fx.file_size());
    let mut interleaved = 0;
    for t in fx.tensors() {
        let r = fr.tensor(&t.name).unwrap();
        let want = if r.dtype() == DType::Q4K
            && (t.name.starts_with("llm.layers.") || t.name == "llm.lm_head.weight")
        {
            interleaved += 1;
            DType::Q4KX4
        } else {
            r.dtype()
        };
        assert_eq!(t.dtype, want, "{}", t.name);
    }
    assert!(interleaved >= 8, "{interleaved} interleaved tensors");
    assert_eq!(
        fx.tensor("audio.layers.0.ffn.fc1.weight").unwrap().dtype(),
        DType::Q4K
    );
    assert_eq!(translate(&rows.out), translate(&x4.out));
}

#[test]
fn recipe_rules_restrict_the_types_of_matching_tensors() {
    use kompakt_converter::recipe::Recipe;
    let dir = tempfile::tempdir().unwrap();
    let dtypes = |path: &std::path::Path| -> std::collections::HashMap<String, DType> {
        let f = KpkFile::open(path).unwrap();
        f.tensors().map(|t| (t.name.clone(), t.dtype)).collect()
    };

    // Single-type rules apply without a budget; other tensors take --dtype.
    let mut o = options(&dir, "rules.kpk");
    o.dtype = DType::Q4K;
    o.recipe = Some(
        Recipe::from_toml(
            "name = \"t\"\n[[types]]\nmatch = [\"llm.lm_head.weight\", \"projector.weight\"]\n\
             types = [\"q8_0\"]\n[[types]]\nmatch = \"audio.layers.*.ffn.*\"\ntypes = [\"f16\"]\n",
            "t",
        )
        .unwrap(),
    );
    kompakt_converter::convert(&o, &mut |_| true).unwrap();
    let d = dtypes(&o.out);
    assert_eq!(d["llm.lm_head.weight"], DType::Q8_0);
    assert_eq!(d["projector.weight"], DType::Q8_0);
    assert_eq!(d["audio.layers.0.ffn.fc1.weight"], DType::F16);
    // Decoder matrices in q4_k are stored interleaved (see the test below).
    assert_eq!(d["llm.layers.0.mlp.up.weight"], DType::Q4KX4);
    assert_eq!(d["llm.norm.weight"], DType::F32);
    let f = KpkFile::open(&o.out).unwrap();
    let prov = f
        .metadata()
        .get_str("provenance.recipe")
        .unwrap()
        .to_string();
    assert!(prov.contains("\"name\":\"t\""), "{prov}");
    translate(&o.out);

    // With a budget the allocator picks among each rule's types only.
    let mut m = options(&dir, "mixed-rules.kpk");
    m.budget = Some(10_000_000);
    m.recipe = Some(
        Recipe::from_toml(
            "[[types]]\nmatch = \"llm.layers.*\"\ntypes = [\"q2_k\", \"q3_k\"]\n",
            "t",
        )
        .unwrap(),
    );
    let s = kompakt_converter::convert(&m, &mut |_| true).unwrap();
    for c in s.plan.unwrap().choices {
        if c.kpk.starts_with("llm.layers.") {
            assert!(
                matches!(c.dtype, DType::Q2K | DType::Q3K),
                "{} {}",
                c.kpk,
                c.dtype
            );
        }
    }

    // A pattern matching no weight matrix, and several types without a
    // budget, are refused before anything is written.
    for (text, needle) in [
        (
            "[[types]]\nmatch = \"llm.layer.*\"\ntypes = [\"q8_0\"]\n",
            "llm.layer.*",
        ),
        (
            "[[types]]\nmatch = \"*\"\ntypes = [\"q2_k\", \"q8_0\"]\n",
            "size target",
        ),
    ] {
        let mut bad = options(&dir, "bad.kpk");
        bad.recipe = Some(Recipe::from_toml(text, "t").unwrap());
        match kompakt_converter::convert(&bad, &mut |_| true) {
            Err(ConvertError::Option(msg)) => assert!(msg.contains(needle), "{msg}"),
            other => panic!("expected a recipe error, got {other:?}"),
        }
        assert!(!bad.out.exists());
    }
}

/// A copy of tiny-gqa whose decoder matrices hold the dequantized values of
/// `codes` (what `kompakt-train qat` writes), with or without the codes file.
fn checkpoint_with_codes(
    dir: &std::path::Path,
    codes: &kompakt_converter::codes::Codes,
    with_file: bool,
    with_values: bool,
) -> std::path::PathBuf {
    let src = fixtures().join("models/tiny-gqa");
    let dst = dir.join(format!("ckpt-{with_file}-{with_values}"));
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut values: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        let mut data = view.data().to_vec();
        if let (Some(c), true) = (codes.get(&name), with_values) {
            let rb = c.row_bytes();
            let mut row = vec![0f32; c.cols];
            data.clear();
            for r in 0..c.rows {
                kompakt_kernels::scalar::dequantize_row(
                    c.dtype,
                    &c.bytes[r * rb..(r + 1) * rb],
                    &mut row,
                );
                data.extend(row.iter().flat_map(|v| v.to_le_bytes()));
            }
        }
        values.push((name, view.shape().to_vec(), data));
    }
    let views = values.iter().map(|(n, s, d)| {
        (
            n.as_str(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap(),
        )
    });
    safetensors::tensor::serialize_to_file(views, None, &dst.join("model.safetensors")).unwrap();
    if with_file {
        kompakt_converter::codes::write(&dst.join(kompakt_converter::codes::FILE), codes).unwrap();
    }
    dst
}

/// Converts tiny-gqa as `ptq` says with its codes exported, then a checkpoint
/// holding those codes (as `kompakt-train qat` writes it) the same way:
/// the decoder's quantized tensors must be byte for byte the same.
fn codes_round_trip(dir: &tempfile::TempDir, tag: &str, ptq: &mut ConvertOptions) {
    ptq.export_codes = Some(dir.path().join(format!("{tag}.codes")));
    let s = kompakt_converter::convert(ptq, &mut |_| true).unwrap();
    let codes = kompakt_converter::codes::read(ptq.export_codes.as_ref().unwrap()).unwrap();
    assert_eq!(s.exported_codes, codes.len());
    assert!(!codes.is_empty());
    for n in codes.keys() {
        assert!(
            n.starts_with("language_model.model.layers.") && n.ends_with("_proj.weight"),
            "{n}"
        );
    }
    let trained = checkpoint_with_codes(&dir.path().join(tag), &codes, true, true);
    let mut qat = ptq.clone();
    qat.checkpoint = trained;
    qat.out = dir.path().join(format!("{tag}-qat.kpk"));
    qat.export_codes = None;
    let s = kompakt_converter::convert(&qat, &mut |_| true).unwrap();
    assert_eq!(s.trained_codes, codes.len());
    let (fp, fq) = (
        KpkFile::open(&ptq.out).unwrap(),
        KpkFile::open(&qat.out).unwrap(),
    );
    let mut compared = 0;
    for t in fp.tensors() {
        if t.name.starts_with("llm.layers.") && t.dtype.is_quantized() {
            let q = fq.tensor(&t.name).unwrap();
            assert_eq!(q.dtype(), t.dtype, "{}", t.name);
            assert!(q.data == fp.tensor(&t.name).unwrap().data, "{}", t.name);
            compared += 1;
        }
    }
    assert_eq!(compared, codes.len(), "{tag}");
    if let Some(b) = qat.budget {
        assert!(fq.file_size() <= b);
    }
    let techniques = format!("{:?}", fq.metadata().get("provenance.techniques"));
    assert!(
        techniques.contains("quantization-aware training"),
        "{techniques}"
    );
    assert_eq!(translate(&ptq.out), translate(&qat.out), "{tag}");

    // Codes that do not match the weights (the original floats) are refused.
    let stale = checkpoint_with_codes(&dir.path().join(tag), &codes, true, false);
    let mut bad = qat.clone();
    bad.checkpoint = stale;
    bad.out = dir.path().join(format!("{tag}-stale.kpk"));
    let e = kompakt_converter::convert(&bad, &mut |_| true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("differ from the checkpoint's weights") && e.contains("kompakt_codes"),
        "{e}"
    );
    assert!(!bad.out.exists());
}

#[test]
fn trained_codes_are_stored_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    // Uniform q4_k (stored interleaved) and q2_k.
    for dtype in [DType::Q4K, DType::Q2K] {
        let mut o = options(&dir, &format!("{dtype}.kpk"));
        o.dtype = dtype;
        codes_round_trip(&dir, dtype.name(), &mut o);
    }
    // A mixed-precision plan: the trained tensors are fixed, the rest allocated.
    let size = |dtype: DType| {
        let mut o = options(&dir, &format!("size-{dtype}.kpk"));
        o.dtype = dtype;
        kompakt_converter::convert(&o, &mut |_| true)
            .unwrap()
            .file_size
    };
    let mut o = options(&dir, "plan.kpk");
    o.budget = Some((size(DType::IQ2).min(size(DType::Q8_0)) + size(DType::F16)) / 2);
    codes_round_trip(&dir, "plan", &mut o);
}

/// `train/tests/data/quant_vectors.safetensors`: blocks of every type that
/// `kompakt-train qat` trains in, quantized and dequantized by the kernels
/// (its Python fake-quantization must decode them bit for bit). This test
/// keeps the committed file equal to what the kernels produce; after a
/// deliberate change, rewrite it with `KOMPAKT_BLESS=1` and rerun the
/// Python tests.
#[test]
fn qat_vectors_for_kompakt_train_match_the_kernels() {
    let (rows, cols) = (6usize, 600usize); // a partial last block per row
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut input: Vec<f32> = (0..rows * cols)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect();
    input[..cols].fill(0.0); // an all-zero row
    input[cols..2 * cols].fill(0.031); // a constant row
    input[2 * cols + 7] = 1.5; // an outlier
    input[3 * cols + 300] = -2.0;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = vec![(
        "input".into(),
        vec![rows, cols],
        input.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )];
    for dtype in [DType::Q8_0, DType::Q4K, DType::Q3K, DType::Q2K] {
        let q = kompakt_kernels::quantize(dtype, &input, rows, cols, None).unwrap();
        let rb = q.len() / rows;
        let mut deq = Vec::with_capacity(rows * cols * 4);
        let mut row = vec![0f32; cols];
        for r in 0..rows {
            kompakt_kernels::scalar::dequantize_row(dtype, &q[r * rb..(r + 1) * rb], &mut row);
            deq.extend(row.iter().flat_map(|v| v.to_le_bytes()));
        }
        tensors.push((format!("{}.blocks", dtype.name()), vec![rows, rb], q));
        tensors.push((
            format!("{}.dequantized", dtype.name()),
            vec![rows, cols],
            deq,
        ));
    }
    let views = tensors.iter().map(|(n, s, d)| {
        let dt = if n.ends_with(".blocks") {
            safetensors::Dtype::U8
        } else {
            safetensors::Dtype::F32
        };
        (
            n.as_str(),
            safetensors::tensor::TensorView::new(dt, s.clone(), d).unwrap(),
        )
    });
    let bytes = safetensors::tensor::serialize(views, None).unwrap();
    let path = fixtures().join("../../train/tests/data/quant_vectors.safetensors");
    if std::env::var_os("KOMPAKT_BLESS").is_some() {
        std::fs::write(&path, &bytes).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == bytes,
        "{} is not what the kernels produce: after a deliberate change, rerun this test with \
         KOMPAKT_BLESS=1, then the kompakt-train tests",
        path.display()
    );
}
