//! Shared measurement code for the criterion bench (`benches/matvec.rs`) and
//! the markdown table printer (`src/bin/kernel-table.rs`).
//!
//! Weight values do not change kernel speed, so a full-size matrix is made by
//! quantizing 64 random rows and repeating their bytes.

use kompakt_kernels::{matmul, quantize, DType, WeightRef};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[cfg(feature = "ggml")]
pub mod ggml;
#[cfg(feature = "mtmd")]
pub mod mtmd;

/// The real Qwen2-Audio shapes `(name, rows = out, cols = in)`.
pub const SHAPES: [(&str, usize, usize); 8] = [
    ("attn 4096x4096", 4096, 4096),
    ("ffn up 11008x4096", 11008, 4096),
    ("ffn down 4096x11008", 4096, 11008),
    ("enc attn 1280x1280", 1280, 1280),
    ("enc fc1 5120x1280", 5120, 1280),
    ("enc fc2 1280x5120", 1280, 5120),
    ("lm_head 156032x4096", 156032, 4096),
    ("lm_head 32000x4096", 32000, 4096),
];

/// The large shapes of the LLM (FFN up/down and the full lm_head). At 8 bits
/// and more all three exceed the LLC (32 MiB here) and measure DRAM
/// streaming; at 4.5 bits and less the FFN matrices (25 MB at Q4K) fit in
/// it and stay partly cached between timed passes: only the lm_head is
/// streamed from DRAM at every type.
pub const LARGE_SHAPES: [(&str, usize, usize); 3] = [SHAPES[1], SHAPES[2], SHAPES[6]];

pub const KTYPES: [DType; 5] = [DType::Q8_0, DType::Q4K, DType::Q3K, DType::Q2K, DType::IQ2];

/// Where the benches' inputs and outputs live by default: `$KOMPAKT_DATA`,
/// else `$HOME/kompakt-data` (the proxy under `proxy/`, the evaluation data
/// under `evaldata/`, the `quant-quality` tensors under `qq/`, the libmtmd
/// files under `mtmd/`). Every binary's command-line paths override it.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("KOMPAKT_DATA") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join("kompakt-data"),
    }
}

/// `KOMPAKT_BENCH_SHORT=1` or a `--short` argument.
pub fn short_mode() -> bool {
    std::env::var("KOMPAKT_BENCH_SHORT").is_ok_and(|v| v == "1")
        || std::env::args().any(|a| a == "--short")
}

pub fn gaussian(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut u = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| ((-2.0 * u().ln()).sqrt() * (std::f64::consts::TAU * u()).cos()) as f32)
        .collect()
}

/// Repeats the bytes of a 64-row sample to `rows` rows.
pub fn tile_rows(sample: &[u8], sample_rows: usize, rows: usize) -> Vec<u8> {
    let rb = sample.len() / sample_rows;
    let mut out = Vec::with_capacity(rb * rows);
    while out.len() < rb * rows {
        let take = (rb * rows - out.len()).min(sample.len());
        out.extend_from_slice(&sample[..take]);
    }
    out
}

/// A full-size kompakt weight of `dtype`.
pub fn kompakt_weight(dtype: DType, rows: usize, cols: usize) -> Vec<u8> {
    let s = 64.min(rows);
    let q = quantize(dtype, &gaussian(1, s * cols), s, cols, None).expect("quantize");
    tile_rows(&q, s, rows)
}

/// Best-of-`reps` seconds of `f` after one warm-up call, at least `min_s` total.
pub fn time_best(mut f: impl FnMut(), reps: usize, min_s: f64) -> f64 {
    f();
    let mut best = f64::INFINITY;
    let start = Instant::now();
    let mut i = 0;
    while i < reps || (start.elapsed().as_secs_f64() < min_s && i < 50 * reps) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        i += 1;
    }
    best
}

/// Median of `v` (mean of the middle two for an even count; NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Read bandwidth in GB/s over a `bytes`-long buffer on `threads` threads,
/// best of at least `reps` passes and 1 s: [`kompakt_kernels::probe`], the
/// same measurement `kompakt bench` makes.
pub fn read_bandwidth(bytes: usize, threads: usize, reps: usize) -> f64 {
    kompakt_kernels::probe::read_bandwidth(bytes, threads, reps, 1.0)
}

/// Seconds per `matmul` of `w` with `n` activation rows on `threads`
/// (includes the quantization of the activations to Q8K / Q8A32, as `matmul` does).
pub fn kompakt_matmul_secs(w: &WeightRef, n: usize, threads: usize, reps: usize) -> f64 {
    let x = gaussian(2, n * w.cols);
    let mut y = vec![0f32; n * w.rows];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| time_best(|| matmul(w, &x, n, &mut y), reps, 0.2))
}

/// Reads a little-endian f32 `.npy` (C order) as (shape, data).
pub fn read_npy(p: &Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(&b[..6], b"\x93NUMPY", "{}: not npy", p.display());
    let (hl, off) = if b[6] == 1 {
        (u16::from_le_bytes([b[8], b[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
    };
    let h = std::str::from_utf8(&b[off..off + hl]).unwrap();
    assert!(
        h.contains("'<f4'") && h.contains("'fortran_order': False"),
        "{h}"
    );
    let sh = &h[h.find("'shape': (").unwrap() + 10..];
    let shape: Vec<usize> = sh[..sh.find(')').unwrap()]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data: Vec<f32> = b[off + hl..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(data.len(), shape.iter().product::<usize>());
    (shape, data)
}
