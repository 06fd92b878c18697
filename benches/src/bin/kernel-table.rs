//! Prints markdown tables: read bandwidth, mat-vec GB/s of weights streamed
//! per type and shape (1 and 2 threads; ggml peers with `--features ggml`),
//! and mat-mat GFLOP/s. `--short` / `KOMPAKT_BENCH_SHORT=1`: < 1 minute.
use kompakt_benches::*;
use kompakt_kernels::{kernels, DType, WeightRef};

fn main() {
    let short = short_mode();
    let reps = if short { 3 } else { 10 };
    #[cfg(feature = "ggml")]
    ggml::init();
    let bw1 = read_bandwidth(1 << 30, 1, reps.min(5));
    let bw2 = read_bandwidth(1 << 30, 2, reps.min(5));
    println!("kernels: `{}`; read bandwidth (sum over 1 GiB): 1 thread {bw1:.1} GB/s, 2 threads {bw2:.1} GB/s\n", kernels().isa);
    println!("## Mat-vec, GB/s of weights streamed (1t / 2t), % of read bandwidth at 1t\n");
    println!("| shape | type | bpw | kompakt 1t | kompakt 2t | % bw 1t | ggml type | ggml bpw | ggml 1t | ggml 2t | kompakt/ggml 1t |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let shapes: Vec<_> = if short {
        vec![SHAPES[0], SHAPES[3]]
    } else {
        SHAPES.to_vec()
    };
    let types: Vec<DType> = if short {
        vec![DType::Q4K, DType::IQ2]
    } else {
        KTYPES.iter().copied().chain([DType::F16]).collect()
    };
    for &(name, rows, cols) in &shapes {
        for &dt in &types {
            let data = kompakt_weight(dt, rows, cols);
            let w = WeightRef::new(dt, &data, rows, cols).unwrap();
            let gb = data.len() as f64 / 1e9;
            let k1 = gb / kompakt_matmul_secs(&w, 1, 1, reps);
            let k2 = gb / kompakt_matmul_secs(&w, 1, 2, reps);
            drop(data);
            #[allow(unused_mut)]
            let mut peers_txt = vec![(
                "-".to_string(),
                "-".to_string(),
                "-".to_string(),
                "-".to_string(),
                "-".to_string(),
            )];
            #[cfg(feature = "ggml")]
            {
                peers_txt.clear();
                for (gname, ty) in ggml::peers(dt) {
                    let gd = ggml::weight(ty, rows, cols);
                    let ggb = gd.len() as f64 / 1e9;
                    let g1 = ggb / ggml::matvec_secs(ty, &gd, rows, cols, 1, reps);
                    let g2 = ggb / ggml::matvec_secs(ty, &gd, rows, cols, 2, reps);
                    // Ratio of mat-vec time per weight: (kompakt weights/s) / (ggml weights/s).
                    let ratio = (k1 / dt.bits_per_weight()) / (g1 / ggml::bpw(ty, cols));
                    peers_txt.push((
                        gname.to_string(),
                        format!("{:.4}", ggml::bpw(ty, cols)),
                        format!("{g1:.1}"),
                        format!("{g2:.1}"),
                        format!("{ratio:.2}"),
                    ));
                }
                if peers_txt.is_empty() {
                    peers_txt.push(("-".into(), "-".into(), "-".into(), "-".into(), "-".into()));
                }
            }
            for p in &peers_txt {
                println!(
                    "| {name} | {} | {} | {k1:.1} | {k2:.1} | {:.0} % | {} | {} | {} | {} | {} |",
                    dt.name(),
                    dt.bits_per_weight(),
                    100.0 * k1 / bw1,
                    p.0,
                    p.1,
                    p.2,
                    p.3,
                    p.4
                );
            }
        }
    }
    println!("\n## Mat-mat (prefill / encoder), GFLOP/s, 2 threads\n");
    println!("| shape | type | n | GFLOP/s |");
    println!("|---|---|---|---|");
    let ns: &[usize] = if short { &[64] } else { &[64, 256, 750] };
    let mshapes: Vec<_> = if short {
        vec![SHAPES[3]]
    } else {
        vec![SHAPES[0], SHAPES[3], SHAPES[4]]
    };
    for &(name, rows, cols) in &mshapes {
        for dt in [DType::Q4K, DType::Q8_0, DType::IQ2, DType::F16] {
            let data = kompakt_weight(dt, rows, cols);
            let w = WeightRef::new(dt, &data, rows, cols).unwrap();
            for &n in ns {
                let s = kompakt_matmul_secs(&w, n, 2, reps.min(3));
                println!(
                    "| {name} | {} | {n} | {:.1} |",
                    dt.name(),
                    2.0 * (rows * cols * n) as f64 / s / 1e9
                );
            }
        }
    }
}
