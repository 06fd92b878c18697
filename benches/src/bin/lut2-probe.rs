//! Issue 23, first measurement: 1-thread mat-vec of the table-lookup 2-bit
//! layout (`kompakt_kernels::lut2`, 2.5 bits per weight) against kompakt's
//! Q2K (2.625) and Q4K (4.5) kernels and the read bandwidth, on shapes that
//! stream from DRAM, all in one run. Weights per second and GB/s of weight
//! bytes; every mat-vec time includes preparing its activations (tables for
//! lut2, Q8K quantization for the others). The weights are Gaussian: speed
//! does not depend on their values.
//!
//!     cargo run --release -p kompakt-benches --bin lut2-probe [ROUNDS]
use kompakt_benches::*;
use kompakt_kernels::{lut2, DType, WeightRef};

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    println!(
        "| shape | round | probe GB/s | lut2 Gw/s (GB/s, % probe) | q2_k Gw/s (GB/s, % probe) | q4_k Gw/s (GB/s) | lut2 / q2_k |"
    );
    println!("|---|---:|---:|---|---|---|---:|");
    for (rows, cols) in [(65536usize, 4096usize), (11008, 4096)] {
        // lut2: quantize a 64-row sample and repeat it.
        let s = 64;
        let sample = lut2::quantize(&gaussian(1, s * cols), s, cols, None);
        let lut = tile_rows(&sample, s, rows);
        let q2 = kompakt_weight(DType::Q2K, rows, cols);
        let q4 = kompakt_weight(DType::Q4K, rows, cols);
        let x = gaussian(2, cols);
        let mut y = vec![0f32; rows];
        let w2 = WeightRef::new(DType::Q2K, &q2, rows, cols).unwrap();
        let w4 = WeightRef::new(DType::Q4K, &q4, rows, cols).unwrap();
        let weights = (rows * cols) as f64;
        for round in 1..=rounds {
            let probe = read_bandwidth(1 << 30, 1, 3);
            let t_lut = pool.install(|| {
                time_best(
                    || {
                        let t = lut2::tables(&x);
                        lut2::gemv(&lut, rows, cols, &t, &mut y);
                    },
                    5,
                    0.3,
                )
            });
            let t_q2 = kompakt_matmul_secs(&w2, 1, 1, 5);
            let t_q4 = kompakt_matmul_secs(&w4, 1, 1, 5);
            let gbs = |bytes: usize, t: f64| bytes as f64 / t / 1e9;
            println!(
                "| {rows}x{cols} | {round} | {probe:.1} | {:.2} ({:.1}, {:.0} %) | {:.2} ({:.1}, {:.0} %) | {:.2} ({:.1}) | {:.2} |",
                weights / t_lut / 1e9,
                gbs(lut.len(), t_lut),
                100.0 * gbs(lut.len(), t_lut) / probe,
                weights / t_q2 / 1e9,
                gbs(q2.len(), t_q2),
                100.0 * gbs(q2.len(), t_q2) / probe,
                weights / t_q4 / 1e9,
                gbs(q4.len(), t_q4),
                t_q2 / t_lut,
            );
        }
    }
}
