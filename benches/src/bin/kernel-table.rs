//! Prints markdown tables: read bandwidth, mat-vec GB/s of weights streamed
//! per type and shape at 1 and 2 threads (with `--features ggml`, ggml's
//! nearest types side by side, measured in the same process), and mat-mat
//! GFLOP/s. Full mode: the shapes that exceed the LLC plus 4096x4096 (fits in
//! L3: a cache number, not a DRAM one). `--short` / `KOMPAKT_BENCH_SHORT=1`:
//! two small shapes, Q4K, Q4KX4 and IQ2, < 1 minute.
//!
//! Filters for focused runs: `KT_TYPES=q3_k,q2_k` (kompakt dtype names) and
//! `KT_SHAPES=4096x4096,156032x4096` (rows x cols); `KT_NO_MATMAT=1` skips
//! the mat-mat table, `KT_NO_MATVEC=1` the mat-vec one; `KT_NO_BW=1` skips the
//! bandwidth probe; `KT_MM_N=64,256,512` sets the mat-mat activation rows,
//! `KT_MM_REPS=10` its timed runs per cell, `KT_MM_THREADS=1` skips its 2t columns.
//! `KT_PAIRED=7` adds a table of 1-thread mat-vec against probes taken just
//! before it, that many rounds per cell (on a shared machine whose bandwidth
//! drifts, the main table's ratio mixes two moments): one of a fresh buffer,
//! one of the weight bytes themselves (on this VM, where a buffer sits in
//! memory moves its read speed by a quarter).
//! `KT_VS_GGML=7` (with `--features ggml`) adds a table of kompakt against
//! ggml at 1 and 2 threads, that many rounds per cell of the two libraries
//! back to back, alternating which goes first: the main table times them
//! minutes apart, and this VM's 2-thread bandwidth moves by half in that time.
//!
//! Both libraries' timings include quantizing the activation row (kompakt to
//! Q8K, or Q8A32 for Q8_0, inside `matmul`; ggml to its `vec_dot_type` with
//! `from_float`).
use kompakt_benches::*;
use kompakt_kernels::{kernels, DType, WeightRef};

fn main() {
    let short = short_mode();
    let reps = if short { 3 } else { 10 };
    #[cfg(feature = "ggml")]
    ggml::init();
    // `KT_NO_BW=1`: skip the bandwidth probe (focused kernel comparisons).
    let no_bw = std::env::var("KT_NO_BW").is_ok_and(|v| v == "1");
    let bw = |t| {
        if no_bw {
            f64::NAN
        } else {
            read_bandwidth(1 << 30, t, if short { 3 } else { 8 })
        }
    };
    let (mut bw1, mut bw2) = (bw(1), bw(2));
    let shapes: Vec<_> = if short {
        vec![SHAPES[0], SHAPES[3]]
    } else {
        LARGE_SHAPES.iter().copied().chain([SHAPES[0]]).collect()
    };
    let types: Vec<DType> = if short {
        vec![DType::Q4K, DType::Q4KX4, DType::IQ2]
    } else {
        // Q4KX4 (Q4K rows interleaved by four) right after Q4K.
        let mut t: Vec<DType> = KTYPES.to_vec();
        let at = t
            .iter()
            .position(|&d| d == DType::Q4K)
            .map_or(t.len(), |i| i + 1);
        t.insert(at, DType::Q4KX4);
        t.push(DType::F16);
        t
    };
    let env_list = |k: &str| {
        std::env::var(k).ok().map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        })
    };
    let types: Vec<DType> = match env_list("KT_TYPES") {
        Some(f) => types
            .into_iter()
            .filter(|d| f.iter().any(|n| n == d.name()))
            .collect(),
        None => types,
    };
    let shapes: Vec<_> = match env_list("KT_SHAPES") {
        Some(f) => SHAPES
            .iter()
            .copied()
            .filter(|(_, r, c)| f.contains(&format!("{r}x{c}")))
            .collect(),
        None => shapes,
    };
    let mut lines = Vec::new();
    // `KT_PAIRED=7`: also that many rounds per cell of (1-thread probe, then
    // 1-thread mat-vec) back to back, for a ratio to bandwidth that does not
    // mix moments of a shared machine whose bandwidth drifts.
    let paired_rounds: usize = std::env::var("KT_PAIRED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut paired = Vec::new();
    // `KT_VS_GGML=7`: rounds of kompakt and ggml back to back per thread count.
    #[cfg_attr(not(feature = "ggml"), allow(unused_variables))]
    let vs_rounds: usize = std::env::var("KT_VS_GGML")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    #[allow(unused_mut)]
    let mut vs: Vec<VsGgml> = Vec::new();
    // `KT_NO_MATVEC=1`: only the mat-mat table.
    let no_matvec = std::env::var("KT_NO_MATVEC").is_ok_and(|v| v == "1");
    for &(name, rows, cols) in shapes.iter().filter(|_| !no_matvec) {
        for &dt in &types {
            let data = kompakt_weight(dt, rows, cols);
            let w = WeightRef::new(dt, &data, rows, cols).unwrap();
            let gb = data.len() as f64 / 1e9;
            let k1 = gb / kompakt_matmul_secs(&w, 1, 1, reps);
            let k2 = gb / kompakt_matmul_secs(&w, 1, 2, 2 * reps);
            if paired_rounds > 0 {
                paired.push((name, dt, paired_ratios(&w, gb, paired_rounds)));
            }
            #[cfg(feature = "ggml")]
            if vs_rounds > 0 {
                for (gname, ty) in ggml::peers(dt) {
                    let gd = ggml::weight(ty, rows, cols);
                    let r = [1, 2].map(|t| vs_ggml(&w, ty, &gd, t, vs_rounds));
                    vs.push((name, dt, gname, r));
                }
            }
            drop(data);
            #[cfg_attr(not(feature = "ggml"), allow(unused_variables))]
            let kwps = |g: f64| g / dt.bits_per_weight();
            #[allow(unused_mut)]
            let mut peers: Vec<[String; 6]> = Vec::new();
            #[cfg(feature = "ggml")]
            for (gname, ty) in ggml::peers(dt) {
                let gd = ggml::weight(ty, rows, cols);
                let ggb = gd.len() as f64 / 1e9;
                let g1 = ggb / ggml::matvec_secs(ty, &gd, rows, cols, 1, reps);
                let g2 = ggb / ggml::matvec_secs(ty, &gd, rows, cols, 2, 2 * reps);
                let gbpw = ggml::bpw(ty, cols);
                // Speed ratio: kompakt weights/s over ggml weights/s.
                let r1 = kwps(k1) / (g1 / gbpw);
                let r2 = kwps(k2) / (g2 / gbpw);
                peers.push([
                    gname.to_string(),
                    format!("{gbpw:.4}"),
                    format!("{g1:.1}"),
                    format!("{g2:.1}"),
                    format!("{:.2} / {:.2}", k1 / g1, k2 / g2),
                    format!("{r1:.2} / {r2:.2}"),
                ]);
            }
            if peers.is_empty() {
                peers.push(core::array::from_fn(|_| "-".to_string()));
            }
            for p in &peers {
                lines.push((name, dt, gb, k1, k2, p.clone()));
            }
        }
    }
    // Second bandwidth measurement after the run: the machine is shared, keep the best.
    bw1 = bw1.max(bw(1));
    bw2 = bw2.max(bw(2));
    println!(
        "kernels: `{}`; read bandwidth (best of repeated sums over 1 GiB, split per thread): \
         1 thread {bw1:.1} GB/s, 2 threads {bw2:.1} GB/s\n",
        kernels().isa
    );
    println!(
        "## Mat-vec, GB/s of weights streamed (best of runs), activation quantization included\n"
    );
    println!("| shape | type | bpw | MB | kompakt 1t | kompakt 2t | % bw 1t | % bw 2t | ggml type | ggml bpw | ggml 1t | ggml 2t | k/g GB/s 1t / 2t | k/g weights/s 1t / 2t |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, dt, gb, k1, k2, p) in &lines {
        println!(
            "| {name} | {} | {} | {:.0} | {k1:.1} | {k2:.1} | {} | {} | {} | {} | {} | {} | {} | {} |",
            dt.name(),
            dt.bits_per_weight(),
            gb * 1e3,
            percent(k1 / bw1),
            percent(k2 / bw2),
            p[0],
            p[1],
            p[2],
            p[3],
            p[4],
            p[5]
        );
    }
    if !paired.is_empty() {
        println!(
            "\n## Mat-vec against a probe taken just before it (1 thread, {paired_rounds} rounds)\n"
        );
        println!(
            "Two probes per round: a fresh 1 GiB buffer (as in the main table) and a sum over \
             the weight bytes themselves, which takes where the buffer sits in memory out of the \
             ratio. Medians (ranges).\n"
        );
        println!("| shape | type | kompakt GB/s | probe 1 GiB, GB/s | probe of the weights, GB/s | kompakt / probe 1 GiB | kompakt / probe of the weights |");
        println!("|---|---|---|---|---|---|---|");
        for (name, dt, r) in &paired {
            let col = |f: fn(&(f64, f64, f64)) -> f64| r.iter().map(f).collect::<Vec<f64>>();
            println!(
                "| {name} | {} | {} | {} | {} | {} % | {} % |",
                dt.name(),
                median_range(&col(|p| p.0), 1),
                median_range(&col(|p| p.1), 1),
                median_range(&col(|p| p.2), 1),
                median_range(&col(|p| 100.0 * p.0 / p.1), 0),
                median_range(&col(|p| 100.0 * p.0 / p.2), 0)
            );
        }
    }
    if !vs.is_empty() {
        println!(
            "\n## Mat-vec, kompakt against ggml back to back ({vs_rounds} rounds, order alternating)\n"
        );
        println!(
            "kompakt / ggml in weights/s, medians (ranges); \"per own bandwidth\": each library's \
             speed over a read probe of its own weight buffer, taken with it.\n"
        );
        println!("| shape | type | ggml type | 1t | 1t, per own bandwidth | 2t | 2t, per own bandwidth |");
        println!("|---|---|---|---|---|---|---|");
        for (name, dt, gname, r) in &vs {
            let col = |t: usize, f: fn(&(f64, f64)) -> f64| {
                median_range(&r[t].iter().map(f).collect::<Vec<f64>>(), 2)
            };
            println!(
                "| {name} | {} | {gname} | {} | {} | {} | {} |",
                dt.name(),
                col(0, |p| p.0),
                col(0, |p| p.1),
                col(1, |p| p.0),
                col(1, |p| p.1)
            );
        }
    }
    if std::env::var("KT_NO_MATMAT").is_ok_and(|v| v == "1") {
        return;
    }
    // `KT_MM_N=64,256,512`: activation rows of the mat-mat table.
    let ns: Vec<usize> = match env_list("KT_MM_N") {
        Some(v) => v.iter().filter_map(|s| s.parse().ok()).collect(),
        None if short => vec![64],
        None => vec![64, 256],
    };
    // `KT_MM_REPS=10`: timed runs per mat-mat cell (best of; default 3).
    let mm_reps: usize = std::env::var("KT_MM_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(reps.min(3));
    // `KT_MM_THREADS=1`: only the 1-thread columns (2t shown as "-").
    let mm_1t = std::env::var("KT_MM_THREADS").is_ok_and(|v| v == "1");
    let mshapes: Vec<_> = if std::env::var("KT_SHAPES").is_ok() {
        shapes.clone()
    } else if short {
        vec![SHAPES[3]]
    } else {
        vec![SHAPES[0], SHAPES[3]]
    };
    println!("\n## Mat-mat (prefill / encoder), GFLOP/s (best of runs), activation quantization included\n");
    println!("| shape | type | n | kompakt 1t | kompakt 2t | ggml type | ggml 1t | ggml 2t | k/g 1t / 2t |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &(name, rows, cols) in &mshapes {
        for &dt in &types {
            let data = kompakt_weight(dt, rows, cols);
            let w = WeightRef::new(dt, &data, rows, cols).unwrap();
            #[allow(unused_mut)]
            // (name, ggml_type, weights); ggml_type is a C `unsigned int`.
            let mut gw: Vec<(&str, u32, Vec<u8>)> = Vec::new();
            #[cfg(feature = "ggml")]
            for (gname, ty) in ggml::peers(dt) {
                gw.push((gname, ty, ggml::weight(ty, rows, cols)));
            }
            for &n in &ns {
                let flop = 2.0 * (rows * cols * n) as f64 / 1e9;
                let k1 = flop / kompakt_matmul_secs(&w, n, 1, mm_reps);
                let k2 = if mm_1t {
                    f64::NAN
                } else {
                    flop / kompakt_matmul_secs(&w, n, 2, mm_reps)
                };
                let row = |g: &str, g1: f64, g2: f64| {
                    println!(
                        "| {name} | {} | {n} | {} | {} | {g} | {} | {} | {} / {} |",
                        dt.name(),
                        num(k1, 1),
                        num(k2, 1),
                        num(g1, 1),
                        num(g2, 1),
                        num(k1 / g1, 2),
                        num(k2 / g2, 2)
                    )
                };
                if gw.is_empty() {
                    row("-", f64::NAN, f64::NAN);
                }
                #[allow(unused_variables)]
                for (gname, ty, gd) in &gw {
                    #[cfg(feature = "ggml")]
                    {
                        let g1 = flop / ggml::matmat_secs(*ty, gd, rows, cols, n, 1, mm_reps, 0.2);
                        let g2 = if mm_1t {
                            f64::NAN
                        } else {
                            flop / ggml::matmat_secs(*ty, gd, rows, cols, n, 2, mm_reps, 0.2)
                        };
                        row(gname, g1, g2);
                    }
                }
            }
        }
    }
}

/// `v` with `digits` decimals, or "-" where there is no measurement (NaN:
/// no ggml peer, a skipped probe or thread count).
fn num(v: f64, digits: usize) -> String {
    if v.is_nan() {
        "-".to_string()
    } else {
        format!("{v:.digits$}")
    }
}

/// A row of the kompakt-against-ggml table: shape, type, ggml type, and per
/// thread count (1, 2) the rounds of [`vs_ggml`].
type VsGgml = (&'static str, DType, &'static str, [Vec<(f64, f64)>; 2]);

/// "median (lowest-highest)" of `v` with `digits` decimals.
fn median_range(v: &[f64], digits: usize) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.digits$} ({lo:.digits$}-{hi:.digits$})", median(v))
}

/// `rounds` pairs of ratios of kompakt's mat-vec speed to ggml's, in weights
/// per second, at `threads` threads: (raw, each library's speed divided by
/// a read probe of its own weight buffer at the same thread count). The two
/// are timed back to back (each the best of 5 runs and 0.2 s), the order
/// alternating between rounds. Where a buffer sits in memory moves its read
/// speed by up to a quarter on this VM; the second ratio takes that out.
#[cfg(feature = "ggml")]
fn vs_ggml(w: &WeightRef, ty: u32, gd: &[u8], threads: usize, rounds: usize) -> Vec<(f64, f64)> {
    use kompakt_kernels::probe::read_bandwidth_of;
    let (rows, cols) = (w.rows, w.cols);
    let weights = (rows * cols) as f64;
    // (weights/s, weights/s per GB/s of the buffer's own read bandwidth)
    let k = || {
        let s = weights / kompakt_matmul_secs(w, 1, threads, 5);
        (s, s / read_bandwidth_of(w.data, threads, 5, 0.3))
    };
    let g = || {
        let s = weights / ggml::matvec_secs(ty, gd, rows, cols, threads, 5);
        (s, s / read_bandwidth_of(gd, threads, 5, 0.3))
    };
    (0..rounds)
        .map(|i| {
            let (kw, gw) = if i % 2 == 0 {
                let kw = k();
                (kw, g())
            } else {
                let gw = g();
                (k(), gw)
            };
            (kw.0 / gw.0, kw.1 / gw.1)
        })
        .collect()
}

/// A fraction as a whole percentage, or "-" (see [`num`]).
fn percent(v: f64) -> String {
    if v.is_nan() {
        "-".to_string()
    } else {
        format!("{:.0} %", 100.0 * v)
    }
}

/// `rounds` triples of (1-thread mat-vec GB/s, 1-thread read bandwidth of a
/// fresh 1 GiB buffer, 1-thread read bandwidth of the weight bytes
/// themselves), measured back to back: the probes as in the main table (best
/// of at least 8 sums and 1 s), then the mat-vec (best of 3).
fn paired_ratios(w: &WeightRef, gb: f64, rounds: usize) -> Vec<(f64, f64, f64)> {
    let x = gaussian(2, w.cols);
    let mut y = vec![0f32; w.rows];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a 1-thread pool");
    (0..rounds)
        .map(|_| {
            let bw = read_bandwidth(1 << 30, 1, 8);
            let own = kompakt_kernels::probe::read_bandwidth_of(w.data, 1, 8, 1.0);
            let secs =
                pool.install(|| time_best(|| kompakt_kernels::matmul(w, &x, 1, &mut y), 3, 0.0));
            (gb / secs, bw, own)
        })
        .collect()
}
