//! Mat-vec output error on real weights: kompakt's `matmul` (8-bit integer
//! activations) against the f32 product with the original weights, per
//! type, next to ggml's own quantize + `vec_dot` path.
//!
//! Inputs: the real Qwen2.5 tensors and importance vectors of
//! `scripts/quant-quality/extract.py` (`DIR`, default `$KOMPAKT_DATA/qq`,
//! `KOMPAKT_DATA` defaulting to `$HOME/kompakt-data`). The activations
//! are `QQ_SAMPLES` (default 8) rows of Gaussian noise scaled per input
//! channel by `sqrt(importance)`, i.e. with the real per-channel RMS of the
//! activations that enter each matrix (outlier channels included). At most
//! 2^20 weights (leading rows) per tensor.
//!
//! Columns, each a mean over tensors of the relative RMSE of `y`:
//! - `total`: kompakt `matmul` vs `W_f32 x` (weight + activation rounding);
//! - `act`: kompakt `matmul` vs `dequant(W_q) x` in f64 (the activation
//!   rounding alone);
//! - `total`/`act, per 256 (old)` for q8_0: the same with the activations rounded
//!   per 256 values (one scale per [`BlockQ8K`]-sized block, as the Q8_0
//!   kernel did before it took per-32 activations), computed in f64;
//! - ggml `total` / `act`: ggml's quantizer and `vec_dot` with its
//!   `vec_dot_type` (only for tensors whose width suits the ggml type;
//!   kompakt's `total` over the same tensors in parentheses).
//!
//! Usage: `matvec-error [DIR]`; `QQ_ONLY=q8_0` keeps some types.
use kompakt_benches::{ggml, read_npy};
use kompakt_kernels::{dequantize, matmul, quantize, DType, WeightRef};
use llama_cpp_sys_2 as sys;

const MAX_VALUES: usize = 1 << 20;

fn rel(want: &[f64], got: &[f64]) -> f64 {
    let (mut e, mut s) = (0f64, 0f64);
    for (a, b) in want.iter().zip(got) {
        e += (a - b) * (a - b);
        s += a * a;
    }
    (e / s).sqrt()
}

fn product(w: &[f32], rows: usize, cols: usize, x: &[f64]) -> Vec<f64> {
    (0..rows)
        .map(|r| {
            w[r * cols..(r + 1) * cols]
                .iter()
                .zip(x)
                .map(|(a, b)| *a as f64 * b)
                .sum()
        })
        .collect()
}

/// Rounds `x` to 8 bits with one scale per `block` values (ggml's
/// `amax / 127` rule), back to f64.
fn round_act(x: &[f32], block: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for c in x.chunks(block) {
        let amax = c.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        out.extend(c.iter().map(|v| (v * id).round() as f64 * d as f64));
    }
    out
}

fn gaussian_row(seed: u64, imp: &[f32]) -> Vec<f32> {
    kompakt_benches::gaussian(seed, imp.len())
        .iter()
        .zip(imp)
        .map(|(g, i)| g * i.sqrt())
        .collect()
}

fn ggml_peer(dt: DType) -> Option<(&'static str, sys::ggml_type)> {
    match dt {
        DType::Q8_0 => Some(("q8_0", sys::GGML_TYPE_Q8_0)),
        DType::Q4K => Some(("q4_K", sys::GGML_TYPE_Q4_K)),
        DType::Q3K => Some(("q3_K", sys::GGML_TYPE_Q3_K)),
        DType::Q2K => Some(("q2_K", sys::GGML_TYPE_Q2_K)),
        DType::IQ2 => Some(("iq2_xxs", sys::GGML_TYPE_IQ2_XXS)),
        _ => None,
    }
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| kompakt_benches::data_dir().join("qq").display().to_string());
    let samples: usize = std::env::var("QQ_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    ggml::init();
    let only = std::env::var("QQ_ONLY").ok();
    let types: Vec<DType> = [DType::Q8_0, DType::Q4K, DType::Q3K, DType::Q2K, DType::IQ2]
        .into_iter()
        .filter(|d| {
            only.as_ref()
                .is_none_or(|o| o.split(',').any(|t| t == d.name()))
        })
        .collect();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e} (run scripts/quant-quality/extract.py)"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".weight.npy"))
        .collect();
    files.sort();
    println!(
        "{} tensors from {dir}; {samples} activation rows per tensor, Gaussian x sqrt(importance) per channel\n",
        files.len()
    );
    println!("| type | kompakt total | kompakt act | total, act per 256 (old q8_0) | act, per 256 (old q8_0) | ggml type | ggml total (kompakt total on the same tensors) | ggml act | tensors for ggml |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut detail = Vec::new();
    for &dt in &types {
        let mut sums = [0f64; 7];
        let (mut nk, mut ng) = (0usize, 0usize);
        for p in &files {
            let name = p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace(".weight.npy", "");
            let (sh, w) = read_npy(p);
            let (_, imp) = read_npy(&p.with_file_name(format!("{name}.weight.imp.npy")));
            let cols = sh[1];
            let rows = sh[0].min(MAX_VALUES / cols);
            let w = &w[..rows * cols];
            let q = quantize(dt, w, rows, cols, Some(&imp)).unwrap();
            let wr = WeightRef::new(dt, &q, rows, cols).unwrap();
            let mut wd = vec![0f32; rows * cols];
            dequantize(&wr, &mut wd);
            let g = ggml_peer(dt).filter(|_| cols % 256 == 0 || dt == DType::Q8_0);
            let gq = g.map(|(_, ty)| {
                let gq = ggml::quantize(ty, w, rows, cols, Some(&imp));
                let gd = ggml::dequantize(ty, &gq, rows, cols);
                (ty, gq, gd)
            });
            let mut e = [0f64; 6];
            for s in 0..samples {
                let x = gaussian_row(1000 + s as u64, &imp);
                let x64: Vec<f64> = x.iter().map(|v| *v as f64).collect();
                let want = product(w, rows, cols, &x64);
                let deq = product(&wd, rows, cols, &x64);
                let mut y = vec![0f32; rows];
                matmul(&wr, &x, 1, &mut y);
                let y: Vec<f64> = y.iter().map(|v| *v as f64).collect();
                e[0] += rel(&want, &y).powi(2);
                e[1] += rel(&deq, &y).powi(2);
                let old = product(&wd, rows, cols, &round_act(&x, 256));
                e[2] += rel(&deq, &old).powi(2);
                e[5] += rel(&want, &old).powi(2);
                if let Some((ty, gq, gd)) = &gq {
                    let gy: Vec<f64> = ggml::matvec(*ty, gq, rows, cols, &x)
                        .iter()
                        .map(|v| *v as f64)
                        .collect();
                    e[3] += rel(&want, &gy).powi(2);
                    e[4] += rel(&product(gd, rows, cols, &x64), &gy).powi(2);
                }
            }
            let e: Vec<f64> = e.iter().map(|v| (v / samples as f64).sqrt()).collect();
            for k in [0, 1, 2, 5] {
                sums[k] += e[k];
            }
            nk += 1;
            if gq.is_some() {
                sums[3] += e[3];
                sums[4] += e[4];
                sums[6] += e[0];
                ng += 1;
            }
            let line = format!(
                "| {name} | {} | {:.5} | {:.5} | {:.5} | {:.5} | {} | {} |",
                dt.name(),
                e[0],
                e[1],
                e[5],
                e[2],
                if gq.is_some() {
                    format!("{:.5}", e[3])
                } else {
                    "-".into()
                },
                if gq.is_some() {
                    format!("{:.5}", e[4])
                } else {
                    "-".into()
                },
            );
            eprintln!("{line}");
            detail.push(line);
        }
        let (gname, gt, ga) = match ggml_peer(dt) {
            Some((n, _)) if ng > 0 => (
                n,
                format!(
                    "{:.5} (kompakt {:.5})",
                    sums[3] / ng as f64,
                    sums[6] / ng as f64
                ),
                format!("{:.5}", sums[4] / ng as f64),
            ),
            _ => ("-", "-".into(), "-".into()),
        };
        println!(
            "| {} | {:.5} | {:.5} | {} | {} | {gname} | {gt} | {ga} | {ng} / {nk} |",
            dt.name(),
            sums[0] / nk as f64,
            sums[1] / nk as f64,
            if dt == DType::Q8_0 {
                format!("{:.5}", sums[5] / nk as f64)
            } else {
                "-".into()
            },
            if dt == DType::Q8_0 {
                format!("{:.5}", sums[2] / nk as f64)
            } else {
                "-".into()
            },
        );
    }
    println!("\n## Per tensor\n");
    println!("| tensor | type | kompakt total | kompakt act | total, act per 256 | act, per 256 | ggml total | ggml act |");
    println!("|---|---|---|---|---|---|---|---|");
    for d in detail {
        println!("{d}");
    }
}
