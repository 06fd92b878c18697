//! End-to-end check against the workspace fixtures (`tests/fixtures/golden/audio/<name>.safetensors`
//! from `tests/fixtures/make_fixtures.py`): WAV -> mono -> 16 kHz -> log-mel, compared with
//! `waveform_16k`, `input_features` and `feature_attention_mask`. The fixture features come from
//! transformers' torch path (float32 STFT), hence the 1e-4 tolerance.

use std::path::{Path, PathBuf};

use kompakt_audio::{load_16k_mono, mel_filter_bank, MelConfig, MelExtractor};
use safetensors::{Dtype, SafeTensors};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn f32s(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn mask_sum(st: &SafeTensors<'_>) -> i64 {
    let t = st.tensor("feature_attention_mask").unwrap();
    match t.dtype() {
        Dtype::I32 => t
            .data()
            .chunks_exact(4)
            .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .sum(),
        Dtype::I64 => t
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .sum(),
        other => panic!("feature_attention_mask has dtype {other:?}"),
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn pipeline_matches_fixture_goldens() {
    let golden = fixtures().join("golden/audio");
    if !golden.is_dir() {
        println!("skipped: {} does not exist", golden.display());
        return;
    }
    let cfg = MelConfig::whisper(128);
    let filters = mel_filter_bank(cfg.n_fft, 128, cfg.sample_rate, 0.0, 8000.0);
    let filters_file = golden.join("mel_filters.safetensors");
    if filters_file.is_file() {
        let bytes = std::fs::read(&filters_file).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let d = max_abs_diff(&filters, &f32s(&st, "mel_filters"));
        println!("mel_filters: max abs diff {d:e}");
        assert!(d <= 1e-6);
    }
    let extractor = MelExtractor::new(cfg, filters).unwrap();

    let mut entries: Vec<PathBuf> = std::fs::read_dir(&golden)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .filter(|p| p.file_stem().is_some_and(|s| s != "mel_filters"))
        .collect();
    entries.sort();
    assert!(!entries.is_empty(), "no goldens in {}", golden.display());
    for golden_file in entries {
        let stem = golden_file
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let wav = fixtures().join("audio").join(format!("{stem}.wav"));
        let bytes = std::fs::read(&golden_file).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();

        let x = load_16k_mono(&wav).unwrap_or_else(|e| panic!("{e}"));
        let want_wave = f32s(&st, "waveform_16k");
        assert_eq!(x.len(), want_wave.len(), "{stem}: resampled length");
        let d_wave = max_abs_diff(&x, &want_wave);

        let mel = extractor.compute(&x).unwrap();
        let d_feat = max_abs_diff(&mel.data, &f32s(&st, "input_features"));
        let valid = mask_sum(&st);
        println!(
            "{stem}: {} samples at 16 kHz, waveform max abs diff {d_wave:e}, \
             features max abs diff {d_feat:e}, valid frames {} (reference {valid})",
            x.len(),
            mel.valid_frames
        );
        assert!(d_wave <= 1e-5, "{stem}: waveform {d_wave}");
        assert!(d_feat < 1e-4, "{stem}: features {d_feat}");
        assert_eq!(mel.valid_frames as i64, valid, "{stem}: valid frames");
    }
}
