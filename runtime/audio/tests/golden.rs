//! Compares the crate with goldens from transformers 5.24 / numpy written by `make_golden.py`;
//! the log-mel goldens are WhisperFeatureExtractor's numpy path (`_np_extract_fbank_features`).

use std::path::{Path, PathBuf};

use kompakt_audio::{
    load_16k_mono, mel_filter_bank, read_wav, resample, LogMel, MelConfig, MelExtractor,
};
use safetensors::{Dtype, SafeTensors};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

struct Golden {
    bytes: Vec<u8>,
}

impl Golden {
    fn load() -> Self {
        let bytes = std::fs::read(data_dir().join("golden.safetensors")).expect("golden file");
        Self { bytes }
    }

    fn f32(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        let v = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (v, t.shape().to_vec())
    }

    fn i64(&self, name: &str) -> i64 {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), Dtype::I64, "{name}");
        i64::from_le_bytes(t.data()[..8].try_into().unwrap())
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
fn filterbanks_match_transformers() {
    let g = Golden::load();
    for n_mels in [128, 80] {
        let (want, shape) = g.f32(&format!("filters_{n_mels}"));
        assert_eq!(shape, [201, n_mels]);
        let got = mel_filter_bank(400, n_mels, 16000, 0.0, 8000.0);
        let d = max_abs_diff(&got, &want);
        println!("filters_{n_mels}: max abs diff {d:e}");
        assert!(d <= 1e-6, "filters_{n_mels}: {d}");
    }
}

#[test]
fn resampler_matches_numpy_reference() {
    let g = Golden::load();
    for (file, key) in [
        ("chirp_44k.wav", "resampled_44k"),
        ("tone_48k.wav", "resampled_48k"),
    ] {
        let audio = read_wav(&data_dir().join(file)).unwrap();
        let got = resample(&audio.samples, audio.sample_rate, 16000);
        let (want, _) = g.f32(key);
        let d = max_abs_diff(&got, &want);
        println!("{key}: {} samples, max abs diff {d:e}", got.len());
        assert!(d <= 1e-5, "{key}: {d}");
    }
}

fn check_logmel(g: &Golden, got: &LogMel, case: &str) {
    let (want, shape) = g.f32(&format!("logmel_{case}"));
    let (tail, _) = g.f32(&format!("logmel_{case}_tail"));
    let valid = g.i64(&format!("valid_{case}"));
    let (n_mels, k) = (shape[0], shape[1]);
    assert_eq!(got.n_mels, n_mels);
    assert_eq!(got.n_frames, 3000);
    assert_eq!(got.valid_frames as i64, valid, "{case}: valid frames");
    let mut d = 0.0f32;
    for m in 0..n_mels {
        let row = got.mel_row(m);
        d = d.max(max_abs_diff(&row[..k], &want[m * k..(m + 1) * k]));
        for &v in &row[k..] {
            d = d.max((v - tail[0]).abs());
        }
    }
    println!("logmel_{case}: valid {valid}, max abs diff {d:e}");
    assert!(d < 1e-5, "logmel_{case}: {d}");
}

#[test]
fn logmel_matches_whisper_feature_extractor() {
    let g = Golden::load();
    let x = load_16k_mono(&data_dir().join("chirp_16k.wav")).unwrap();
    for n_mels in [128, 80] {
        let cfg = MelConfig::whisper(n_mels);
        let fb = mel_filter_bank(cfg.n_fft, n_mels, cfg.sample_rate, 0.0, 8000.0);
        let ex = MelExtractor::new(cfg, fb).unwrap();
        check_logmel(&g, &ex.compute(&x).unwrap(), &format!("16k_{n_mels}"));
    }
    let (filters, _) = g.f32("filters_128");
    let ex = MelExtractor::new(MelConfig::whisper(128), filters).unwrap();
    let x = load_16k_mono(&data_dir().join("chirp_44k.wav")).unwrap();
    check_logmel(&g, &ex.compute(&x).unwrap(), "44k_128");
}
