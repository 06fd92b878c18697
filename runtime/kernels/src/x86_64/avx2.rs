//! AVX2 + FMA + F16C kernels (installed only after run-time detection of all
//! three features). Integer dot products follow ggml's AVX2 scheme:
//! `maddubs` (u8 x i8 -> i16 pairs), `madd` with the sub-scales -> i32.

use crate::scalar;
use crate::table::KernelTable;
use std::arch::x86_64::*;

pub static TABLE: KernelTable = KernelTable {
    isa: "avx2",
    dot,
    axpy,
    row_f32,
    row_f16,
    row_bf16,
    row_q8_0: scalar::row_q8_0,
    row_q4k: scalar::row_q4k,
    row_q3k: scalar::row_q3k,
    row_q2k: scalar::row_q2k,
    row_iq2: scalar::row_iq2,
    quantize_q8k: scalar::quantize_q8k,
};

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[allow(dead_code)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: this table is installed only when avx2, fma and f16c were detected.
    unsafe { dot_impl(a, b) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_impl(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY: every load reads 8 floats below n.
    unsafe {
        while i + 32 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8 * k)),
                    _mm256_loadu_ps(pb.add(i + 8 * k)),
                    *a,
                );
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i)),
                _mm256_loadu_ps(pb.add(i)),
                acc[0],
            );
            i += 8;
        }
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum(v);
    for j in i..n {
        s += a[j] * b[j];
    }
    s
}

pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    // SAFETY: this table is installed only when avx2, fma and f16c were detected.
    unsafe { axpy_impl(a, x, y) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn axpy_impl(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len();
    let va = _mm256_set1_ps(a);
    let mut i = 0;
    // SAFETY: loads and stores of 8 floats below n; x and y do not alias (& vs &mut).
    unsafe {
        while i + 8 <= n {
            let p = y.as_mut_ptr().add(i);
            _mm256_storeu_ps(
                p,
                _mm256_fmadd_ps(va, _mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(p)),
            );
            i += 8;
        }
    }
    for j in i..n {
        y[j] += a * x[j];
    }
}

/// Loads 8 weights of kind `K` (0 = f32, 1 = f16, 2 = bf16) from `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_w<const K: u8>(p: *const u8) -> __m256 {
    // SAFETY: the caller guarantees 8 weights are readable at p.
    unsafe {
        match K {
            0 => _mm256_loadu_ps(p as *const f32),
            1 => _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
            _ => _mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)),
                16,
            )),
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_plain<const K: u8, const NR: usize>(row: &[u8], x: &[&[f32]], out: &mut [f32]) {
    let width = if K == 0 { 4 } else { 2 };
    let n = x[0].len();
    assert!(row.len() >= n * width && x.len() == NR && out.len() == NR);
    for xr in x {
        assert_eq!(xr.len(), n);
    }
    let xp: [*const f32; NR] = core::array::from_fn(|r| x[r].as_ptr());
    let mut acc = [[_mm256_setzero_ps(); 2]; NR];
    let mut i = 0;
    // SAFETY: all loads are below n elements of row and of every x row (checked above).
    unsafe {
        while i + 16 <= n {
            let w0 = load_w::<K>(row.as_ptr().add(i * width));
            let w1 = load_w::<K>(row.as_ptr().add((i + 8) * width));
            for r in 0..NR {
                acc[r][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xp[r].add(i)), acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xp[r].add(i + 8)), acc[r][1]);
            }
            i += 16;
        }
        while i + 8 <= n {
            let w0 = load_w::<K>(row.as_ptr().add(i * width));
            for r in 0..NR {
                acc[r][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xp[r].add(i)), acc[r][0]);
            }
            i += 8;
        }
    }
    let mut tail = [0f32; NR];
    if i < n {
        let f = match K {
            0 => scalar::row_f32,
            1 => scalar::row_f16,
            _ => scalar::row_bf16,
        };
        let xt: [&[f32]; NR] = core::array::from_fn(|r| &x[r][i..]);
        f(&row[i * width..n * width], &xt, &mut tail);
    }
    for r in 0..NR {
        out[r] = hsum(_mm256_add_ps(acc[r][0], acc[r][1])) + tail[r];
    }
}

fn rows_plain_dispatch<const K: u8>(row: &[u8], x: &[&[f32]], out: &mut [f32]) {
    // SAFETY: this table is installed only when avx2, fma and f16c were detected.
    unsafe {
        match x.len() {
            1 => rows_plain::<K, 1>(row, x, out),
            2 => rows_plain::<K, 2>(row, x, out),
            3 => rows_plain::<K, 3>(row, x, out),
            4 => rows_plain::<K, 4>(row, x, out),
            _ => {
                for (xc, oc) in x.chunks(4).zip(out.chunks_mut(4)) {
                    rows_plain_dispatch::<K>(row, xc, oc);
                }
            }
        }
    }
}

pub fn row_f32(row: &[u8], x: &[&[f32]], out: &mut [f32]) {
    rows_plain_dispatch::<0>(row, x, out)
}
pub fn row_f16(row: &[u8], x: &[&[f32]], out: &mut [f32]) {
    rows_plain_dispatch::<1>(row, x, out)
}
pub fn row_bf16(row: &[u8], x: &[&[f32]], out: &mut [f32]) {
    rows_plain_dispatch::<2>(row, x, out)
}
