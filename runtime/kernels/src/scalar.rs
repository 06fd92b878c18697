//! Safe scalar reference of every kernel. The SIMD modules must match these
//! within float rounding; property tests check that.

use crate::blocks::*;
use crate::iq2_grid::{grid_value, sign_bits8};
use crate::table::KernelTable;
use bytemuck::cast_slice;
use kompakt_format::DType;

pub static TABLE: KernelTable = KernelTable {
    isa: "scalar",
    dot,
    dot_f16,
    axpy,
    axpy_f16,
    row_f32,
    row_f16,
    row_bf16,
    row_q8_0,
    row_q4k,
    row_q3k,
    row_q2k,
    row_iq2,
    quantize_q8k,
    quantize_q8a32,
    gemm_q8_0: None,
    gemm_q4k: None,
    gemm_q3k: None,
    gemm_q2k: None,
    gemm_iq2: None,
    gemv_q4k_x4: None,
    gemm_q4k_x4: None,
};

/// `sum a[i] * b[i]` (8 partial sums, like the SIMD versions).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let n8 = a.len() / 8 * 8;
    for (ca, cb) in a[..n8].chunks_exact(8).zip(b[..n8].chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += ca[k] * cb[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in n8..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// `y += a * x`.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yv, xv) in y.iter_mut().zip(x) {
        *yv += a * xv;
    }
}

/// [`dot`] with f16 `b`.
pub fn dot_f16(a: &[f32], b: &[half::f16]) -> f32 {
    let mut acc = [0f32; 8];
    let n8 = a.len() / 8 * 8;
    for (ca, cb) in a[..n8].chunks_exact(8).zip(b[..n8].chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += ca[k] * cb[k].to_f32();
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in n8..a.len() {
        s += a[i] * b[i].to_f32();
    }
    s
}

/// [`axpy`] with f16 `x`.
pub fn axpy_f16(a: f32, x: &[half::f16], y: &mut [f32]) {
    for (yv, xv) in y.iter_mut().zip(x) {
        *yv += a * xv.to_f32();
    }
}

fn row_plain(row: &[u8], x: &[&[f32]], out: &mut [f32], width: usize, conv: impl Fn(&[u8]) -> f32) {
    for (o, xr) in out.iter_mut().zip(x) {
        let mut acc = [0f32; 8];
        let mut s = 0f32;
        let n = xr.len();
        let n8 = n / 8 * 8;
        for i in 0..n8 {
            acc[i % 8] += conv(&row[i * width..(i + 1) * width]) * xr[i];
        }
        for i in n8..n {
            s += conv(&row[i * width..(i + 1) * width]) * xr[i];
        }
        *o = acc.iter().sum::<f32>() + s;
    }
}

pub fn row_f32(row: &[u8], x: &[&[f32]], out: &mut [f32]) {
    row_plain(row, x, out, 4, |b| {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    })
}

pub fn row_f16(row: &[u8], x: &[&[f32]], out: &mut [f32]) {
    row_plain(row, x, out, 2, |b| f16_le([b[0], b[1]]))
}

pub fn row_bf16(row: &[u8], x: &[&[f32]], out: &mut [f32]) {
    row_plain(row, x, out, 2, |b| {
        half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
    })
}

/// Quantizes an activation row to Q8K blocks (zero padded to whole blocks),
/// rounding ties to even as the SIMD quantizers do.
pub fn quantize_q8k(x: &[f32], out: &mut [BlockQ8K]) {
    for (bi, b) in out.iter_mut().enumerate() {
        let start = (bi * QK_K).min(x.len());
        let end = ((bi + 1) * QK_K).min(x.len());
        let src = &x[start..end];
        let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
        let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        b.d = if amax > 0.0 { amax / 127.0 } else { 0.0 };
        b.qs = [0; QK_K];
        for (q, v) in b.qs.iter_mut().zip(src) {
            *q = (v * id).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
        for j in 0..16 {
            b.bsums[j] = b.qs[16 * j..16 * (j + 1)].iter().map(|&q| q as i16).sum();
        }
    }
}

/// Quantizes an activation row to 32-value blocks (zero padded), as
/// [`quantize_q8k`] does per 256.
pub fn quantize_q8a32(x: &[f32], out: &mut [BlockQ8A32]) {
    for (bi, b) in out.iter_mut().enumerate() {
        let start = (bi * QK8_0).min(x.len());
        let end = ((bi + 1) * QK8_0).min(x.len());
        let src = &x[start..end];
        let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
        let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        b.d = if amax > 0.0 { amax / 127.0 } else { 0.0 };
        b.qs = [0; QK8_0];
        for (q, v) in b.qs.iter_mut().zip(src) {
            *q = (v * id).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
    }
}

fn rows_q8(row: &[u8], a: &[&[BlockQ8K]], out: &mut [f32], f: impl Fn(&[u8], &[BlockQ8K]) -> f32) {
    for (o, ar) in out.iter_mut().zip(a) {
        *o = f(row, ar);
    }
}

pub fn row_q8_0(row: &[u8], a: &[&[BlockQ8A32]], out: &mut [f32]) {
    for (o, ar) in out.iter_mut().zip(a) {
        *o = dot_q8_0(row, ar);
    }
}
pub fn row_q4k(row: &[u8], a: &[&[BlockQ8K]], out: &mut [f32]) {
    rows_q8(row, a, out, dot_q4k)
}
pub fn row_q3k(row: &[u8], a: &[&[BlockQ8K]], out: &mut [f32]) {
    rows_q8(row, a, out, dot_q3k)
}
pub fn row_q2k(row: &[u8], a: &[&[BlockQ8K]], out: &mut [f32]) {
    rows_q8(row, a, out, dot_q2k)
}
pub fn row_iq2(row: &[u8], a: &[&[BlockQ8K]], out: &mut [f32]) {
    rows_q8(row, a, out, dot_iq2)
}

/// Q8_0 row · Q8A32 activations (one activation block per weight block).
pub fn dot_q8_0(row: &[u8], a: &[BlockQ8A32]) -> f32 {
    let blocks: &[BlockQ8_0] = cast_slice(row);
    assert!(a.len() >= blocks.len());
    let mut acc = [0f32; 8];
    for (k, (b, ab)) in blocks.iter().zip(a).enumerate() {
        let isum: i32 =
            b.qs.iter()
                .zip(&ab.qs)
                .map(|(&w, &x)| w as i32 * x as i32)
                .sum();
        acc[k % 8] += f16_le(b.d) * ab.d * isum as f32;
    }
    acc.iter().sum()
}

/// 6-bit scales and mins of a Q4K block.
#[inline]
pub fn q4k_scales(b: &BlockQ4K) -> ([u8; 8], [u8; 8]) {
    let (s, m) = unpack_6bit16(&b.scales);
    (s.to_le_bytes(), m.to_le_bytes())
}

/// Q4K row · Q8K activations.
pub fn dot_q4k(row: &[u8], a: &[BlockQ8K]) -> f32 {
    let blocks: &[BlockQ4K] = cast_slice(row);
    let mut sum = 0f32;
    for (b, ab) in blocks.iter().zip(a) {
        let (sc, mn) = q4k_scales(b);
        let (mut isum, mut msum) = (0i32, 0i32);
        for j in 0..8 {
            let (g, sh) = (j / 2, 4 * (j % 2));
            let mut s = 0i32;
            for i in 0..32 {
                s += ((b.qs[32 * g + i] >> sh) & 15) as i32 * ab.qs[32 * j + i] as i32;
            }
            isum += sc[j] as i32 * s;
            msum += mn[j] as i32 * (ab.bsums[2 * j] as i32 + ab.bsums[2 * j + 1] as i32);
        }
        sum += ab.d * (f16_le(b.d) * isum as f32 - f16_le(b.dmin) * msum as f32);
    }
    sum
}

/// Signed scales (-32..=31) of a Q3K block.
#[inline]
pub fn q3k_scales(b: &BlockQ3K) -> [i8; 16] {
    let (lo, hi) = unpack_6bit16(&b.scales);
    let mut s = [0i8; 16];
    for (k, v) in lo
        .to_le_bytes()
        .iter()
        .chain(hi.to_le_bytes().iter())
        .enumerate()
    {
        s[k] = *v as i8 - 32;
    }
    s
}

/// `q` (0..=7) of weight `w` of a Q3K block.
#[inline]
pub fn q3k_q(b: &BlockQ3K, w: usize) -> u8 {
    let (g, k, i) = (w / 128, (w % 128) / 32, w % 32);
    let lo = (b.ql[32 * g + i] >> (2 * k)) & 3;
    let hi = (b.qh[w % 32] >> (w / 32)) & 1;
    lo | (hi << 2)
}

/// Q3K row · Q8K activations.
pub fn dot_q3k(row: &[u8], a: &[BlockQ8K]) -> f32 {
    let blocks: &[BlockQ3K] = cast_slice(row);
    let mut sum = 0f32;
    for (b, ab) in blocks.iter().zip(a) {
        let sc = q3k_scales(b);
        let mut isum = 0i32;
        for j in 0..16 {
            let mut s = 0i32;
            for w in 16 * j..16 * j + 16 {
                s += q3k_q(b, w) as i32 * ab.qs[w] as i32;
            }
            isum += sc[j] as i32 * (s - 4 * ab.bsums[j] as i32);
        }
        sum += ab.d * f16_le(b.d) * isum as f32;
    }
    sum
}

/// `q` (0..=3) of weight `w` of a Q2K block.
#[inline]
pub fn q2k_q(b: &BlockQ2K, w: usize) -> u8 {
    let (g, k, i) = (w / 128, (w % 128) / 32, w % 32);
    (b.qs[32 * g + i] >> (2 * k)) & 3
}

/// Q2K row · Q8K activations.
pub fn dot_q2k(row: &[u8], a: &[BlockQ8K]) -> f32 {
    let blocks: &[BlockQ2K] = cast_slice(row);
    let mut sum = 0f32;
    for (b, ab) in blocks.iter().zip(a) {
        let (mut isum, mut msum) = (0i32, 0i32);
        for j in 0..16 {
            let (sc, m) = ((b.scales[j] & 15) as i32, (b.scales[j] >> 4) as i32);
            let mut s = 0i32;
            for w in 16 * j..16 * j + 16 {
                s += q2k_q(b, w) as i32 * ab.qs[w] as i32;
            }
            isum += sc * s;
            msum += m * ab.bsums[j] as i32;
        }
        sum += ab.d * (f16_le(b.d) * isum as f32 - f16_le(b.dmin) * msum as f32);
    }
    sum
}

/// 4-bit sub-scale `s[j]` of an IQ2 block.
#[inline]
pub fn iq2_scale(b: &BlockIQ2, j: usize) -> u8 {
    (b.scales[j / 2] >> (4 * (j % 2))) & 15
}

/// Signed integer value (±1, ±3, ±5) of element `k` of group `g`.
#[inline]
pub fn iq2_value(b: &BlockIQ2, g: usize, k: usize) -> i32 {
    let code = b.code(g);
    let v = grid_value((code & 511) as usize, k) as i32;
    if (sign_bits8(code >> 9) >> k) & 1 == 1 {
        -v
    } else {
        v
    }
}

/// IQ2 row · Q8K activations.
pub fn dot_iq2(row: &[u8], a: &[BlockQ8K]) -> f32 {
    let blocks: &[BlockIQ2] = cast_slice(row);
    let mut sum = 0f32;
    for (b, ab) in blocks.iter().zip(a) {
        let mut isum = 0i32;
        for j in 0..8 {
            let mut s = 0i32;
            for g in 4 * j..4 * j + 4 {
                for k in 0..8 {
                    s += iq2_value(b, g, k) * ab.qs[8 * g + k] as i32;
                }
            }
            isum += (iq2_scale(b, j) as i32 + 1) * s;
        }
        sum += ab.d * f16_le(b.d) * (1.0 / 16.0) * isum as f32;
    }
    sum
}

/// Dequantizes one block (`block_elems` values) of `dtype` from `src`.
pub fn dequantize_block(dtype: DType, src: &[u8], out: &mut [f32]) {
    match dtype {
        DType::F32 => out[0] = f32::from_le_bytes([src[0], src[1], src[2], src[3]]),
        DType::F16 => out[0] = f16_le([src[0], src[1]]),
        DType::BF16 => {
            out[0] = half::bf16::from_bits(u16::from_le_bytes([src[0], src[1]])).to_f32()
        }
        DType::Q8_0 => {
            let b: &BlockQ8_0 = bytemuck::from_bytes(src);
            let d = f16_le(b.d);
            for (o, &q) in out.iter_mut().zip(&b.qs) {
                *o = d * q as f32;
            }
        }
        DType::Q4K => {
            let b: &BlockQ4K = bytemuck::from_bytes(src);
            let (sc, mn) = q4k_scales(b);
            let (d, dm) = (f16_le(b.d), f16_le(b.dmin));
            for j in 0..8 {
                let (g, sh) = (j / 2, 4 * (j % 2));
                let (s, m) = (d * sc[j] as f32, dm * mn[j] as f32);
                for i in 0..32 {
                    out[32 * j + i] = s * ((b.qs[32 * g + i] >> sh) & 15) as f32 - m;
                }
            }
        }
        DType::Q3K => {
            let b: &BlockQ3K = bytemuck::from_bytes(src);
            let sc = q3k_scales(b);
            let d = f16_le(b.d);
            for (w, o) in out.iter_mut().enumerate().take(QK_K) {
                *o = d * sc[w / 16] as f32 * (q3k_q(b, w) as f32 - 4.0);
            }
        }
        DType::Q2K => {
            let b: &BlockQ2K = bytemuck::from_bytes(src);
            let (d, dm) = (f16_le(b.d), f16_le(b.dmin));
            for (w, o) in out.iter_mut().enumerate().take(QK_K) {
                let s = b.scales[w / 16];
                *o = d * (s & 15) as f32 * q2k_q(b, w) as f32 - dm * (s >> 4) as f32;
            }
        }
        DType::IQ2 => {
            let b: &BlockIQ2 = bytemuck::from_bytes(src);
            let d = f16_le(b.d) / 16.0;
            for j in 0..8 {
                let s = d * (iq2_scale(b, j) as f32 + 1.0);
                for g in 4 * j..4 * j + 4 {
                    for k in 0..8 {
                        out[8 * g + k] = s * iq2_value(b, g, k) as f32;
                    }
                }
            }
        }
        DType::U8 | DType::I32 => panic!("{dtype} is not a weight type"),
        DType::Q4KX4 => panic!(
            "{dtype} blocks interleave four rows: dequantize through kompakt_kernels::dequantize"
        ),
    }
}

/// Dequantizes one stored row into `out` (`out.len()` = cols, padding dropped).
pub fn dequantize_row(dtype: DType, row: &[u8], out: &mut [f32]) {
    let be = dtype.block_elems() as usize;
    let bb = dtype.block_bytes() as usize;
    let mut tmp = [0f32; QK_K];
    for (bi, o) in out.chunks_mut(be).enumerate() {
        let src = &row[bi * bb..(bi + 1) * bb];
        if o.len() == be {
            dequantize_block(dtype, src, o);
        } else {
            dequantize_block(dtype, src, &mut tmp[..be]);
            o.copy_from_slice(&tmp[..o.len()]);
        }
    }
}
