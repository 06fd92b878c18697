//! The mat-mat panel kernels (`KernelTable::gemm_*`) and the panel driver of
//! `matmul` against the scalar reference: random panel shapes (weight rows,
//! activation rows, blocks not multiples of the micro-tile sizes) and random
//! `matmul` shapes (rows, cols with padding, n = 1, 2, 3, 5, 17, ...). Half
//! of the panel cases have one activation row: the panels' mat-vec path.

use kompakt_kernels::blocks::{BlockQ8A32, BlockQ8K};
use kompakt_kernels::*;
use proptest::prelude::*;

mod common;
use common::{row_fn, Rng, KTYPES};

fn gemm_fn(t: &KernelTable, dt: DType) -> Option<GemmQ8Fn> {
    match dt {
        DType::Q4K => t.gemm_q4k,
        DType::Q3K => t.gemm_q3k,
        DType::Q2K => t.gemm_q2k,
        _ => t.gemm_iq2,
    }
}

/// Scaled weights: a few rows much larger than the others, so a result
/// written to the wrong output cell shows.
fn weights(rng: &mut Rng, rows: usize, cols: usize, scale: f32) -> Vec<f32> {
    let mut w = rng.gvec(rows * cols);
    for r in 0..rows {
        let s = scale * (1.0 + (r % 3) as f32 * 4.0);
        w[r * cols..(r + 1) * cols].iter_mut().for_each(|v| *v *= s);
    }
    w
}

/// Tolerance per output: 1e-5 of `sum_c |w_rc| * max|x|` (f32 summation
/// order only: the panel and the row kernels see the same quantized data).
fn mag(w: &[f32], cols: usize, r: usize, xmax: f32) -> f32 {
    w[r * cols..(r + 1) * cols]
        .iter()
        .map(|v| v.abs())
        .sum::<f32>()
        * xmax
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn gemm_panels_match_scalar_rows(nb in 1usize..4, nw in 1usize..11, na in prop_oneof![Just(1usize), 1usize..14], seed in 0u64..10_000, scale in 0.01f32..100.0) {
        let cols = nb * 256;
        let mut rng = Rng(seed);
        let w = weights(&mut rng, nw, cols, scale);
        let s = scalar_kernels();
        let b = best_kernels();
        let acts: Vec<Vec<BlockQ8K>> = (0..na).map(|_| {
            let mut a = vec![BlockQ8K::zeroed(); nb];
            (s.quantize_q8k)(&rng.gvec(cols), &mut a);
            a
        }).collect();
        let ar: Vec<&[BlockQ8K]> = acts.iter().map(|a| &a[..]).collect();
        for dt in KTYPES {
            let Some(g) = gemm_fn(b, dt) else { continue };
            let q = quantize(dt, &w, nw, cols, None).unwrap();
            let rb = q.len() / nw;
            let mut got = vec![f32::NAN; nw * na];
            g(&q, nw, &ar, &mut got);
            for i in 0..nw {
                let mut want = vec![0f32; na];
                for j in 0..na {
                    row_fn(s, dt)(&q[i * rb..(i + 1) * rb], &ar[j..j + 1], &mut want[j..j + 1]);
                }
                let tol = 1e-5 * mag(&w, cols, i, 5.0);
                for j in 0..na {
                    let v = got[j * nw + i];
                    prop_assert!((v - want[j]).abs() <= tol, "{} w{} a{}: {} vs {}", dt, i, j, v, want[j]);
                }
            }
        }
    }

    #[test]
    fn gemm_q8_0_panels_match_scalar_rows(nb in 1usize..20, nw in 1usize..11, na in prop_oneof![Just(1usize), 1usize..14], seed in 0u64..10_000, scale in 0.01f32..100.0) {
        let cols = nb * 32;
        let mut rng = Rng(seed);
        let w = weights(&mut rng, nw, cols, scale);
        let s = scalar_kernels();
        let b = best_kernels();
        let Some(g) = b.gemm_q8_0 else { return Ok(()) };
        let acts: Vec<Vec<BlockQ8A32>> = (0..na).map(|_| {
            let mut a = vec![BlockQ8A32::zeroed(); nb];
            (s.quantize_q8a32)(&rng.gvec(cols), &mut a);
            a
        }).collect();
        let ar: Vec<&[BlockQ8A32]> = acts.iter().map(|a| &a[..]).collect();
        let q = quantize(DType::Q8_0, &w, nw, cols, None).unwrap();
        let rb = q.len() / nw;
        let mut got = vec![f32::NAN; nw * na];
        g(&q, nw, &ar, &mut got);
        for i in 0..nw {
            let mut want = vec![0f32; na];
            for j in 0..na {
                (s.row_q8_0)(&q[i * rb..(i + 1) * rb], &ar[j..j + 1], &mut want[j..j + 1]);
            }
            let tol = 1e-5 * mag(&w, cols, i, 5.0);
            for j in 0..na {
                let v = got[j * nw + i];
                prop_assert!((v - want[j]).abs() <= tol, "q8_0 w{} a{}: {} vs {}", i, j, v, want[j]);
            }
        }
    }
}

const QTYPES: [DType; 6] = [
    DType::Q8_0,
    DType::Q4K,
    DType::Q3K,
    DType::Q2K,
    DType::IQ2,
    DType::F16,
];

/// Quantizes `w` to `dt`, runs `matmul` with the scalar and the best table
/// on `pool`, and describes the first output that differs by more than the
/// tolerance (1/127 of an activation step's worth per output, for float
/// summation order). Both tables' activation quantizers round ties to even:
/// when the scalar one rounded them away from zero, a single tie (x = -74.5
/// steps) against a large weight put one output 10x over this tolerance.
fn matmul_mismatch(
    pool: &rayon::ThreadPool,
    dt: DType,
    w: &[f32],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
) -> Option<String> {
    let xmax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let q = quantize(dt, w, rows, cols, None).unwrap();
    let wr = WeightRef::new(dt, &q, rows, cols).unwrap();
    let mut ys = vec![f32::NAN; n * rows];
    let mut yb = vec![f32::NAN; n * rows];
    pool.install(|| {
        matmul_with(scalar_kernels(), &wr, x, n, &mut ys);
        matmul_with(best_kernels(), &wr, x, n, &mut yb);
    });
    for i in 0..n {
        for r in 0..rows {
            let (p, v) = (ys[i * rows + r], yb[i * rows + r]);
            let tol = 2e-2 * mag(w, cols, r, xmax) / 127.0 + 1e-6;
            if (p - v).abs() > tol || p.is_nan() || v.is_nan() {
                return Some(format!("y[{i}][{r}]: {p} vs {v}"));
            }
        }
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Whole `matmul` (activation quantization, 2-D panel split, output
    /// placement) of the best table against the scalar table
    /// ([`matmul_mismatch`]).
    #[test]
    fn matmul_best_matches_scalar(rows in 1usize..150, cols in 1usize..700, ni in 0usize..8, extra in 0usize..80, seed in 0u64..10_000, threads in 1usize..4) {
        let n = [1, 2, 3, 5, 17, 4, 8, 64][ni].max(1) + if ni == 7 { extra } else { 0 };
        let mut rng = Rng(seed);
        let w = weights(&mut rng, rows, cols, 1.0);
        let x = rng.gvec(n * cols);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for dt in QTYPES {
            let bad = matmul_mismatch(&pool, dt, &w, rows, cols, &x, n);
            prop_assert!(bad.is_none(), "{} {}x{} n={} {}", dt, rows, cols, n, bad.unwrap_or_default());
        }
        // Q4KX4 needs whole groups of four rows.
        let r4 = rows - rows % 4;
        if r4 > 0 {
            let bad = matmul_mismatch(&pool, DType::Q4KX4, &w[..r4 * cols], r4, cols, &x, n);
            prop_assert!(bad.is_none(), "q4_k_x4 {}x{} n={} {}", r4, cols, n, bad.unwrap_or_default());
        }
    }
}

/// Q4KX4 holds the same blocks as Q4K, so every product matches Q4K's up to
/// float summation order, on both tables: several panels (the last short)
/// and column chunks (the last narrow, padded columns), n = 1 (interleaved
/// kernel) and n = 2, 9 (rows turned back into Q4K).
#[test]
fn q4k_x4_matches_q4k() {
    let (rows, cols) = (136, 16 * 256 + 300);
    let mut rng = Rng(11);
    let w = weights(&mut rng, rows, cols, 1.0);
    let q = quantize(DType::Q4K, &w, rows, cols, None).unwrap();
    let q4 = quantize(DType::Q4KX4, &w, rows, cols, None).unwrap();
    assert_eq!(q.len(), q4.len());
    assert_ne!(q, q4, "the layouts differ");
    let a = WeightRef::new(DType::Q4K, &q, rows, cols).unwrap();
    let b = WeightRef::new(DType::Q4KX4, &q4, rows, cols).unwrap();
    let (mut da, mut db) = (vec![0f32; rows * cols], vec![0f32; rows * cols]);
    kompakt_kernels::dequantize(&a, &mut da);
    kompakt_kernels::dequantize(&b, &mut db);
    assert_eq!(da, db);
    let mut one = vec![0f32; cols];
    kompakt_kernels::dequantize_row(&b, 70, &mut one);
    assert_eq!(one, da[70 * cols..71 * cols]);
    for n in [1, 2, 9] {
        let x = rng.gvec(n * cols);
        for t in [scalar_kernels(), best_kernels()] {
            let (mut ya, mut yb) = (vec![f32::NAN; n * rows], vec![f32::NAN; n * rows]);
            matmul_with(t, &a, &x, n, &mut ya);
            matmul_with(t, &b, &x, n, &mut yb);
            for (i, (p, v)) in ya.iter().zip(&yb).enumerate() {
                let tol = 1e-5 * mag(&w, cols, i % rows, 5.0);
                assert!((p - v).abs() <= tol, "{} n={n} y[{i}]: {p} vs {v}", t.isa);
            }
        }
    }
}

#[test]
fn q4k_x4_needs_whole_groups_of_rows() {
    let w = vec![0.5f32; 6 * 256];
    let e = quantize(DType::Q4KX4, &w, 6, 256, None).unwrap_err();
    assert!(e.to_string().contains("groups of 4"), "{e}");
    let e = WeightRef::new(DType::Q4KX4, &vec![0u8; 6 * 144], 6, 256).unwrap_err();
    assert!(e.to_string().contains("6 row"), "{e}");
}

/// Several activation panels and several weight panels (n above the panel
/// height of ~256 KiB of quantized activations, rows not a multiple of the
/// panel width), 1 and 3 threads.
#[test]
fn matmul_many_panels_match_scalar() {
    let (rows, cols, n) = (37, 2048, 250);
    let mut rng = Rng(5);
    let w = weights(&mut rng, rows, cols, 1.0);
    let x = rng.gvec(n * cols);
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for dt in QTYPES {
            if let Some(bad) = matmul_mismatch(&pool, dt, &w, rows, cols, &x, n) {
                panic!("{dt} t={threads} {bad}");
            }
        }
    }
}

/// A case the proptest above found: value 10 of block 2 of activation row 4 is
/// exactly -74.5 steps, which the scalar quantizer once rounded to -75 and
/// the AVX2 one to -74 (ties to even), against a weight large enough to put
/// the output 0.36 apart. Both now round ties to even.
#[test]
fn activation_ties_round_alike_on_every_table() {
    let (rows, cols, n) = (56, 97, 5);
    let mut rng = Rng(8769);
    let w = weights(&mut rng, rows, cols, 1.0);
    let x = rng.gvec(n * cols);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let bad = matmul_mismatch(&pool, DType::Q8_0, &w, rows, cols, &x, n);
    assert!(bad.is_none(), "q8_0 {rows}x{cols} n={n}: {bad:?}");
}
