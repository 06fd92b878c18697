//! Issue 23: quantization error of the table-lookup 2-bit layout
//! (`kompakt_kernels::lut2`) against kompakt's Q2K and Q3K on real weight
//! matrices given as f32 `.npy` files (`[rows, cols]`): relative RMS error
//! `||w - dequant(w)|| / ||w||` and stored bits per weight, no importance.
//!
//!     cargo run --release -p kompakt-benches --bin lut2-error -- W.npy...
use kompakt_benches::read_npy;
use kompakt_kernels::{dequantize, lut2, quantize, DType, WeightRef};

fn rel(w: &[f32], d: &[f32]) -> f64 {
    let e: f64 = w.iter().zip(d).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let n: f64 = w.iter().map(|a| (*a as f64).powi(2)).sum();
    (e / n).sqrt()
}

fn main() {
    println!("| tensor | shape | lut2 bpw | lut2 rel. RMSE | q2_k bpw | q2_k rel. RMSE | q3_k bpw | q3_k rel. RMSE |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for p in std::env::args().skip(1) {
        let (shape, w) = read_npy(std::path::Path::new(&p));
        let (rows, cols) = (shape[0], shape[1]);
        let l = lut2::quantize(&w, rows, cols, None);
        let ld = lut2::dequantize(&l, rows, cols);
        let mut cells = vec![(l.len() as f64 * 8.0 / w.len() as f64, rel(&w, &ld))];
        for dt in [DType::Q2K, DType::Q3K] {
            let q = quantize(dt, &w, rows, cols, None).expect("quantize");
            let mut d = vec![0f32; rows * cols];
            dequantize(&WeightRef::new(dt, &q, rows, cols).unwrap(), &mut d);
            cells.push((q.len() as f64 * 8.0 / w.len() as f64, rel(&w, &d)));
        }
        let name = std::path::Path::new(&p)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let c: Vec<String> = cells
            .iter()
            .map(|(b, e)| format!("{b:.3} | {e:.4}"))
            .collect();
        println!("| {name} | {rows}x{cols} | {} |", c.join(" | "));
    }
}
