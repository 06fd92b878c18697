//! Helpers shared by kompakt's end-to-end tests: fixture paths, golden
//! tensors (written by `fixtures/make_fixtures.py` with transformers), and
//! fixture models converted once per test process.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use kompakt_converter::{ConvertOptions, PromptStyle};
use kompakt_format::DType;

/// `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A golden tensor as f32 (ints converted), with its shape.
pub struct Golden {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reads every tensor of a golden safetensors file.
pub fn load_golden(path: &Path) -> HashMap<String, Golden> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("golden safetensors");
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let d = view.data();
            let data: Vec<f32> = match view.dtype() {
                safetensors::Dtype::F32 => d
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                safetensors::Dtype::I64 => d
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
                safetensors::Dtype::I32 => d
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
                other => panic!("golden {name}: unexpected dtype {other:?}"),
            };
            (
                name,
                Golden {
                    shape: view.shape().to_vec(),
                    data,
                },
            )
        })
        .collect()
}

/// Reads a golden JSON file.
pub fn load_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("golden json")
}

/// Largest absolute difference; panics on a length mismatch.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Asserts `max |a - b| <= atol` and returns the measured maximum.
pub fn assert_close(what: &str, a: &[f32], b: &[f32], atol: f32) -> f32 {
    let d = max_abs_diff(a, b);
    assert!(
        d.is_finite() && d <= atol,
        "{what}: max abs diff {d} > {atol}"
    );
    d
}

static CONVERTED: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
static TMP: OnceLock<tempfile::TempDir> = OnceLock::new();

/// Converts fixture model `name` once per process and returns the `.kpk` path.
pub fn converted(name: &str, dtype: DType, style: PromptStyle) -> PathBuf {
    let key = format!("{name}-{dtype}-{style:?}");
    let map = CONVERTED.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = map.get(&key) {
        return p.clone();
    }
    let dir = TMP.get_or_init(|| tempfile::tempdir().expect("temp dir"));
    let out = dir.path().join(format!("{key}.kpk"));
    let mut opts = ConvertOptions::new(fixtures().join("models").join(name), &out, dtype);
    opts.prompt_style = Some(style);
    opts.name = Some(name.to_string());
    kompakt_converter::convert(&opts, &mut |_| true)
        .unwrap_or_else(|e| panic!("converting {name}: {e}"));
    map.insert(key, out.clone());
    out
}
