//! Milestone-1 API: F32/F16/BF16 weights, dot, axpy, SIMD vs scalar.

use kompakt_kernels::*;
use proptest::prelude::*;

fn lcg(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn naive(w: &[f32], x: &[f32], rows: usize, cols: usize, n: usize) -> Vec<f32> {
    let mut y = vec![0f32; n * rows];
    for i in 0..n {
        for r in 0..rows {
            y[i * rows + r] = (0..cols)
                .map(|c| w[r * cols + c] as f64 * x[i * cols + c] as f64)
                .sum::<f64>() as f32;
        }
    }
    y
}

fn close(a: &[f32], b: &[f32], tol: f32) {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * scale,
            "at {i}: {x} vs {y} (scale {scale})"
        );
    }
}

#[test]
fn weight_ref_checks_length() {
    let d = vec![0u8; 12];
    assert!(WeightRef::new(DType::F32, &d, 3, 1).is_ok());
    assert!(matches!(
        WeightRef::new(DType::F32, &d, 2, 2),
        Err(KernelError::LengthMismatch { .. })
    ));
    assert!(matches!(
        WeightRef::new(DType::U8, &d, 3, 4),
        Err(KernelError::Unsupported(_))
    ));
    assert!(WeightRef::new(DType::Q4K, &vec![0u8; 2 * 4 * 144], 2, 896).is_ok());
}

#[test]
fn isa_is_reported() {
    let isa = kernels().isa;
    println!("kernel isa: {isa}");
    assert!(
        ["avx2", "neon", "neon+dotprod", "scalar"].contains(&isa),
        "{isa}"
    );
    assert_eq!(scalar_kernels().isa, "scalar");
}

#[test]
fn float_matmul_matches_naive_unaligned() {
    for &(rows, cols, n) in &[
        (7, 33, 1),
        (16, 64, 3),
        (5, 100, 9),
        (33, 896, 2),
        (1, 1, 1),
    ] {
        let w = lcg(1, rows * cols);
        let x = lcg(2, n * cols);
        let want = naive(&w, &x, rows, cols, n);
        for dt in [DType::F32, DType::F16, DType::BF16] {
            let bytes = quantize(dt, &w, rows, cols, None).unwrap();
            // Unaligned copy.
            let mut buf = vec![0u8; bytes.len() + 1];
            buf[1..].copy_from_slice(&bytes);
            let wr = WeightRef::new(dt, &buf[1..], rows, cols).unwrap();
            let tol = match dt {
                DType::F32 => 1e-5,
                DType::F16 => 2e-3,
                _ => 1e-2,
            };
            for t in [scalar_kernels(), best_kernels()] {
                let mut y = vec![0f32; n * rows];
                matmul_with(t, &wr, &x, n, &mut y);
                close(&y, &want, tol);
            }
            let mut deq = vec![0f32; rows * cols];
            dequantize(&wr, &mut deq);
            close(&deq, &w, tol);
            let mut r0 = vec![0f32; cols];
            dequantize_row(&wr, rows - 1, &mut r0);
            assert_eq!(&r0[..], &deq[(rows - 1) * cols..]);
        }
    }
}

proptest! {
    #[test]
    fn simd_dot_axpy_match_scalar(n in 0usize..300, seed in 0u64..1000, a in -2f32..2.0) {
        let x = lcg(seed, n);
        let y = lcg(seed + 7, n);
        let s = (scalar_kernels().dot)(&x, &y);
        let v = (best_kernels().dot)(&x, &y);
        prop_assert!((s - v).abs() <= 1e-5 * (n as f32 + 1.0));
        let mut y1 = y.clone();
        let mut y2 = y.clone();
        (scalar_kernels().axpy)(a, &x, &mut y1);
        (best_kernels().axpy)(a, &x, &mut y2);
        for (p, q) in y1.iter().zip(&y2) {
            prop_assert!((p - q).abs() <= 1e-6);
        }
        // f16 operands (attention over an f16 KV cache): the scalar f16
        // kernels equal the f32 ones on the rounded values, SIMD within the
        // same tolerance.
        let xh: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
        let xr: Vec<f32> = xh.iter().map(|v| v.to_f32()).collect();
        let s16 = (scalar_kernels().dot_f16)(&y, &xh);
        prop_assert_eq!(s16, (scalar_kernels().dot)(&y, &xr));
        let v16 = (best_kernels().dot_f16)(&y, &xh);
        prop_assert!((s16 - v16).abs() <= 1e-5 * (n as f32 + 1.0));
        let (mut y1, mut y2, mut y3) = (y.clone(), y.clone(), y.clone());
        (scalar_kernels().axpy_f16)(a, &xh, &mut y1);
        (best_kernels().axpy_f16)(a, &xh, &mut y2);
        (scalar_kernels().axpy)(a, &xr, &mut y3);
        prop_assert_eq!(&y1, &y3);
        for (p, q) in y1.iter().zip(&y2) {
            prop_assert!((p - q).abs() <= 1e-6);
        }
    }

    #[test]
    fn simd_float_rows_match_scalar(cols in 1usize..200, nr in 1usize..5, seed in 0u64..1000) {
        let w = lcg(seed, cols);
        let xs: Vec<Vec<f32>> = (0..nr).map(|i| lcg(seed * 10 + i as u64, cols)).collect();
        let xr: Vec<&[f32]> = xs.iter().map(|v| &v[..]).collect();
        for dt in [DType::F32, DType::F16, DType::BF16] {
            let bytes = quantize(dt, &w, 1, cols, None).unwrap();
            let (fs, fb) = match dt {
                DType::F32 => (scalar_kernels().row_f32, best_kernels().row_f32),
                DType::F16 => (scalar_kernels().row_f16, best_kernels().row_f16),
                _ => (scalar_kernels().row_bf16, best_kernels().row_bf16),
            };
            let mut a = vec![0f32; nr];
            let mut b = vec![0f32; nr];
            fs(&bytes, &xr, &mut a);
            fb(&bytes, &xr, &mut b);
            for (p, q) in a.iter().zip(&b) {
                prop_assert!((p - q).abs() <= 1e-5 * (cols as f32).sqrt().max(1.0), "{dt}: {p} vs {q}");
            }
        }
    }
}
