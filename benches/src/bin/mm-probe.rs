//! Runs one mat-mat `reps` times for profiling (`perf stat` / `perf record`):
//! `mm-probe <kompakt|kompakt-rows|ggml> <type> <rows>x<cols> <n> <threads> <reps>`.
//! Under a shared machine, `perf stat -e cycles:u,instructions:u` counts of
//! the two engines are steadier than wall-clock times. Both run once untimed,
//! then `reps` times: (counts at reps R - counts at reps 0) / R is one run.
use kompakt_benches::*;
use kompakt_kernels::{kernels, matmul_with, DType, WeightRef};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    assert!(
        a.len() == 7,
        "usage: mm-probe <kompakt|kompakt-rows|ggml> <type> <rows>x<cols> <n> <threads> <reps>"
    );
    let dt = DType::from_name(&a[2]).expect("type");
    let (rows, cols) = a[3].split_once('x').expect("shape");
    let (rows, cols): (usize, usize) = (rows.parse().unwrap(), cols.parse().unwrap());
    let n: usize = a[4].parse().unwrap();
    let threads: usize = a[5].parse().unwrap();
    let reps: usize = a[6].parse().unwrap();
    let x = gaussian(2, n * cols);
    let mut y = vec![0f32; n * rows];
    match a[1].as_str() {
        "kompakt" | "kompakt-rows" => {
            let data = kompakt_weight(dt, rows, cols);
            let w = WeightRef::new(dt, &data, rows, cols).unwrap();
            // `kompakt-rows`: the same table without the panel kernels
            // (the per-row kernels with up to 4 activation rows; for n = 1
            // one indirect call per weight row).
            let mut t = *kernels();
            if a[1] == "kompakt-rows" {
                (t.gemm_q8_0, t.gemm_q4k, t.gemm_q3k, t.gemm_q2k, t.gemm_iq2) =
                    (None, None, None, None, None);
            }
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let s = pool.install(|| time_best(|| matmul_with(&t, &w, &x, n, &mut y), reps, 0.0));
            println!(
                "{} {} {rows}x{cols} n={n}: {:.1} GFLOP/s (best)",
                a[1],
                dt.name(),
                2.0 * (rows * cols * n) as f64 / s / 1e9
            );
        }
        #[cfg(feature = "ggml")]
        "ggml" => {
            ggml::init();
            let (_, ty) = ggml::peers(dt)[0];
            let gd = ggml::weight(ty, rows, cols);
            let s = ggml::matmat_secs(ty, &gd, rows, cols, n, threads, reps, 0.0);
            println!(
                "ggml {} {rows}x{cols} n={n}: {:.1} GFLOP/s (best)",
                dt.name(),
                2.0 * (rows * cols * n) as f64 / s / 1e9
            );
        }
        e => panic!("unknown engine {e}"),
    }
}
