//! NEON kernels; the `neon+dotprod` table uses `sdot` (emitted with inline
//! asm, since `vdotq_s32` is not stable) for the 8-bit integer dot products,
//! the plain `neon` table widening multiplies (`smull` + `sadalp`).
//! One activation row at a time (the mat-mat path loops over rows).

use crate::blocks::*;
use crate::iq2_grid::{GRID, SIGNS};
use crate::scalar;
use crate::table::KernelTable;
use bytemuck::cast_slice;
use std::arch::aarch64::*;
use std::arch::asm;

pub static TABLE: KernelTable = KernelTable {
    isa: "neon",
    dot,
    dot_f16: scalar::dot_f16,
    axpy,
    axpy_f16: scalar::axpy_f16,
    row_f32,
    row_f16: scalar::row_f16,
    row_bf16,
    row_q8_0: row_q8_0::<false>,
    row_q4k: row_q4k::<false>,
    row_q3k: row_q3k::<false>,
    row_q2k: row_q2k::<false>,
    row_iq2: row_iq2::<false>,
    quantize_q8k: scalar::quantize_q8k,
    quantize_q8a32: scalar::quantize_q8a32,
    gemm_q8_0: None,
    gemm_q4k: None,
    gemm_q3k: None,
    gemm_q2k: None,
    gemm_iq2: None,
    gemv_q4k_x4: Some(gemv_q4k_x4::<false>),
    gemm_q4k_x4: None,
};

pub static TABLE_DOTPROD: KernelTable = KernelTable {
    isa: "neon+dotprod",
    row_q8_0: row_q8_0::<true>,
    row_q4k: row_q4k::<true>,
    row_q3k: row_q3k::<true>,
    row_q2k: row_q2k::<true>,
    row_iq2: row_iq2::<true>,
    gemv_q4k_x4: Some(gemv_q4k_x4::<true>),
    ..TABLE
};

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: this table is installed only when neon was detected.
    unsafe { dot_impl(a, b) }
}

#[target_feature(enable = "neon")]
unsafe fn dot_impl(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let mut i = 0;
    // SAFETY: loads of 4 floats below n.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); 4];
        while i + 16 <= n {
            for k in 0..4 {
                acc[k] = vfmaq_f32(
                    acc[k],
                    vld1q_f32(a.as_ptr().add(i + 4 * k)),
                    vld1q_f32(b.as_ptr().add(i + 4 * k)),
                );
            }
            i += 16;
        }
        while i + 4 <= n {
            acc[0] = vfmaq_f32(
                acc[0],
                vld1q_f32(a.as_ptr().add(i)),
                vld1q_f32(b.as_ptr().add(i)),
            );
            i += 4;
        }
        let mut s = vaddvq_f32(vaddq_f32(
            vaddq_f32(acc[0], acc[1]),
            vaddq_f32(acc[2], acc[3]),
        ));
        for j in i..n {
            s += a[j] * b[j];
        }
        s
    }
}

pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    // SAFETY: this table is installed only when neon was detected.
    unsafe { axpy_impl(a, x, y) }
}

#[target_feature(enable = "neon")]
unsafe fn axpy_impl(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len();
    let mut i = 0;
    // SAFETY: loads/stores of 4 floats below n.
    unsafe {
        let va = vdupq_n_f32(a);
        while i + 4 <= n {
            let p = y.as_mut_ptr().add(i);
            vst1q_f32(p, vfmaq_f32(vld1q_f32(p), va, vld1q_f32(x.as_ptr().add(i))));
            i += 4;
        }
    }
    for j in i..n {
        y[j] += a * x[j];
    }
}

/// `K`: 0 = f32, 2 = bf16.
#[target_feature(enable = "neon")]
unsafe fn row_plain<const K: u8>(row: &[u8], x: &[f32]) -> f32 {
    let width = if K == 0 { 4 } else { 2 };
    let n = x.len();
    assert!(row.len() >= n * width);
    let mut i = 0;
    // SAFETY: loads of 4 weights / floats below n (checked above).
    let s = unsafe {
        let mut acc = [vdupq_n_f32(0.0); 2];
        while i + 8 <= n {
            for k in 0..2 {
                let p = row.as_ptr().add((i + 4 * k) * width);
                let w = if K == 0 {
                    vld1q_f32(p as *const f32)
                } else {
                    vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p as *const u16)))
                };
                acc[k] = vfmaq_f32(acc[k], w, vld1q_f32(x.as_ptr().add(i + 4 * k)));
            }
            i += 8;
        }
        vaddvq_f32(vaddq_f32(acc[0], acc[1]))
    };
    let mut t = [0f32];
    if i < n {
        let f = if K == 0 {
            scalar::row_f32
        } else {
            scalar::row_bf16
        };
        f(&row[i * width..n * width], &[&x[i..]], &mut t);
    }
    s + t[0]
}

pub fn row_f32(row: &[u8], x: &[&[f32]], out: &mut [f32]) {
    for (o, xr) in out.iter_mut().zip(x) {
        // SAFETY: this table is installed only when neon was detected.
        *o = unsafe { row_plain::<0>(row, xr) };
    }
}

pub fn row_bf16(row: &[u8], x: &[&[f32]], out: &mut [f32]) {
    for (o, xr) in out.iter_mut().zip(x) {
        // SAFETY: this table is installed only when neon was detected.
        *o = unsafe { row_plain::<2>(row, xr) };
    }
}

#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: sdot only reads and writes vector registers; dotprod is enabled.
    unsafe {
        asm!("sdot {0:v}.4s, {1:v}.16b, {2:v}.16b", inout(vreg) acc, in(vreg) a, in(vreg) b, options(pure, nomem, nostack));
    }
    acc
}

/// `acc + a . b` over 16 signed bytes, summed into 4 lanes.
#[inline(always)]
unsafe fn idot<const DOT: bool>(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: DOT is true only in functions compiled with dotprod, installed after detection.
    unsafe {
        if DOT {
            sdot(acc, a, b)
        } else {
            let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
            let hi = vmull_high_s8(a, b);
            vpadalq_s16(vpadalq_s16(acc, lo), hi)
        }
    }
}

#[inline(always)]
unsafe fn ld(p: *const i8) -> int8x16_t {
    // SAFETY: the caller guarantees 16 readable bytes.
    unsafe { vld1q_s8(p) }
}

macro_rules! row_q8 {
    ($name:ident, $body:ident, $dot:ident, $nodot:ident) => {
        row_q8!($name, $body, $dot, $nodot, BlockQ8K);
    };
    ($name:ident, $body:ident, $dot:ident, $nodot:ident, $act:ty) => {
        #[target_feature(enable = "neon,dotprod")]
        unsafe fn $dot(row: &[u8], a: &[$act]) -> f32 {
            // SAFETY: compiled with dotprod.
            unsafe { $body::<true>(row, a) }
        }
        #[target_feature(enable = "neon")]
        unsafe fn $nodot(row: &[u8], a: &[$act]) -> f32 {
            // SAFETY: DOT = false uses only neon.
            unsafe { $body::<false>(row, a) }
        }
        pub fn $name<const DOT: bool>(row: &[u8], a: &[&[$act]], out: &mut [f32]) {
            for (o, ar) in out.iter_mut().zip(a) {
                // SAFETY: the dotprod table is installed only when neon and dotprod were
                // detected, the plain one only when neon was.
                *o = unsafe {
                    if DOT {
                        $dot(row, ar)
                    } else {
                        $nodot(row, ar)
                    }
                };
            }
        }
    };
}

row_q8!(row_q8_0, q8_0_body, q8_0_dot, q8_0_nodot, BlockQ8A32);
row_q8!(row_q4k, q4k_body, q4k_dot, q4k_nodot);
row_q8!(row_q3k, q3k_body, q3k_dot, q3k_nodot);
row_q8!(row_q2k, q2k_body, q2k_dot, q2k_nodot);
row_q8!(row_iq2, iq2_body, iq2_dot, iq2_nodot);

#[inline(always)]
unsafe fn q8_0_body<const DOT: bool>(row: &[u8], a: &[BlockQ8A32]) -> f32 {
    let blocks: &[BlockQ8_0] = cast_slice(row);
    assert!(a.len() >= blocks.len());
    let mut sum = [0f32; 2];
    for (k, (b, ab)) in blocks.iter().zip(a).enumerate() {
        // SAFETY: b.qs and ab.qs have 32 bytes each.
        let isum = unsafe {
            let z = vdupq_n_s32(0);
            let acc = idot::<DOT>(z, ld(b.qs.as_ptr()), ld(ab.qs.as_ptr()));
            let acc = idot::<DOT>(acc, ld(b.qs.as_ptr().add(16)), ld(ab.qs.as_ptr().add(16)));
            vaddvq_s32(acc)
        };
        sum[k & 1] += f16_le(b.d) * ab.d * isum as f32;
    }
    sum[0] + sum[1]
}

#[inline(always)]
unsafe fn q4k_body<const DOT: bool>(row: &[u8], a: &[BlockQ8K]) -> f32 {
    let blocks: &[BlockQ4K] = cast_slice(row);
    assert!(a.len() >= blocks.len());
    let mut sum = 0f32;
    for (b, ab) in blocks.iter().zip(a) {
        let (sc, mn) = scalar::q4k_scales(b);
        let (mut isum, mut msum) = (0i32, 0i32);
        for g in 0..4 {
            // SAFETY: qs has 128 bytes (32g + 32 <= 128); activation offsets 64g + 64 <= 256.
            unsafe {
                let m4 = vdupq_n_u8(15);
                let q0 = vld1q_u8(b.qs.as_ptr().add(32 * g));
                let q1 = vld1q_u8(b.qs.as_ptr().add(32 * g + 16));
                let x = ab.qs.as_ptr().add(64 * g);
                let z = vdupq_n_s32(0);
                let lo = idot::<DOT>(z, vreinterpretq_s8_u8(vandq_u8(q0, m4)), ld(x));
                let lo = idot::<DOT>(lo, vreinterpretq_s8_u8(vandq_u8(q1, m4)), ld(x.add(16)));
                let hi = idot::<DOT>(z, vreinterpretq_s8_u8(vshrq_n_u8::<4>(q0)), ld(x.add(32)));
                let hi = idot::<DOT>(hi, vreinterpretq_s8_u8(vshrq_n_u8::<4>(q1)), ld(x.add(48)));
                isum += sc[2 * g] as i32 * vaddvq_s32(lo) + sc[2 * g + 1] as i32 * vaddvq_s32(hi);
            }
        }
        for j in 0..8 {
            msum += mn[j] as i32 * (ab.bsums[2 * j] as i32 + ab.bsums[2 * j + 1] as i32);
        }
        sum += ab.d * (f16_le(b.d) * isum as f32 - f16_le(b.dmin) * msum as f32);
    }
    sum
}

#[inline(always)]
unsafe fn q3k_body<const DOT: bool>(row: &[u8], a: &[BlockQ8K]) -> f32 {
    let blocks: &[BlockQ3K] = cast_slice(row);
    assert!(a.len() >= blocks.len());
    let mut sum = 0f32;
    for (b, ab) in blocks.iter().zip(a) {
        let sc = scalar::q3k_scales(b);
        let mut isum = 0i32;
        for g in 0..2 {
            for k in 0..4 {
                for h in 0..2 {
                    let j = 8 * g + 2 * k + h;
                    // SAFETY: ql offsets 32g + 16h + 16 <= 64, qh 16h + 16 <= 32,
                    // activation 128g + 32k + 16h + 16 <= 256.
                    let s = unsafe {
                        let ql = vld1q_u8(b.ql.as_ptr().add(32 * g + 16 * h));
                        let qh = vld1q_u8(b.qh.as_ptr().add(16 * h));
                        let lo = vandq_u8(vshlq_u8(ql, vdupq_n_s8(-2 * k as i8)), vdupq_n_u8(3));
                        let hb = vandq_u8(
                            vshlq_u8(qh, vdupq_n_s8(-((4 * g + k) as i8))),
                            vdupq_n_u8(1),
                        );
                        let q = vorrq_u8(lo, vshlq_n_u8::<2>(hb));
                        let x = ld(ab.qs.as_ptr().add(128 * g + 32 * k + 16 * h));
                        vaddvq_s32(idot::<DOT>(vdupq_n_s32(0), vreinterpretq_s8_u8(q), x))
                    };
                    isum += sc[j] as i32 * (s - 4 * ab.bsums[j] as i32);
                }
            }
        }
        sum += ab.d * f16_le(b.d) * isum as f32;
    }
    sum
}

#[inline(always)]
unsafe fn q2k_body<const DOT: bool>(row: &[u8], a: &[BlockQ8K]) -> f32 {
    let blocks: &[BlockQ2K] = cast_slice(row);
    assert!(a.len() >= blocks.len());
    let mut sum = 0f32;
    for (b, ab) in blocks.iter().zip(a) {
        let (mut isum, mut msum) = (0i32, 0i32);
        for g in 0..2 {
            for k in 0..4 {
                for h in 0..2 {
                    let j = 8 * g + 2 * k + h;
                    // SAFETY: qs offsets 32g + 16h + 16 <= 64, activation 128g + 32k + 16h + 16 <= 256.
                    let s = unsafe {
                        let qv = vld1q_u8(b.qs.as_ptr().add(32 * g + 16 * h));
                        let q = vandq_u8(vshlq_u8(qv, vdupq_n_s8(-2 * k as i8)), vdupq_n_u8(3));
                        let x = ld(ab.qs.as_ptr().add(128 * g + 32 * k + 16 * h));
                        vaddvq_s32(idot::<DOT>(vdupq_n_s32(0), vreinterpretq_s8_u8(q), x))
                    };
                    isum += (b.scales[j] & 15) as i32 * s;
                    msum += (b.scales[j] >> 4) as i32 * ab.bsums[j] as i32;
                }
            }
        }
        sum += ab.d * (f16_le(b.d) * isum as f32 - f16_le(b.dmin) * msum as f32);
    }
    sum
}

#[inline(always)]
unsafe fn iq2_body<const DOT: bool>(row: &[u8], a: &[BlockQ8K]) -> f32 {
    let blocks: &[BlockIQ2] = cast_slice(row);
    assert!(a.len() >= blocks.len());
    let mut sum = 0f32;
    for (b, ab) in blocks.iter().zip(a) {
        let mut isum = 0i32;
        for j in 0..8 {
            let mut acc;
            // SAFETY: activation offsets 32j + 32 <= 256.
            unsafe {
                acc = vdupq_n_s32(0);
                for p in 0..2 {
                    let (c0, c1) = (b.code(4 * j + 2 * p), b.code(4 * j + 2 * p + 1));
                    let gv = vcombine_s8(
                        vcreate_s8(GRID[(c0 & 511) as usize]),
                        vcreate_s8(GRID[(c1 & 511) as usize]),
                    );
                    let sv = vcombine_s8(
                        vcreate_s8(SIGNS[(c0 >> 9) as usize]),
                        vcreate_s8(SIGNS[(c1 >> 9) as usize]),
                    );
                    let x = ld(ab.qs.as_ptr().add(32 * j + 16 * p));
                    acc = idot::<DOT>(acc, vmulq_s8(gv, sv), x);
                }
            }
            isum += (((b.scales[j / 2] >> (4 * (j % 2))) & 15) as i32 + 1) * vaddvq_s32(acc);
        }
        sum += ab.d * f16_le(b.d) * (1.0 / 16.0) * isum as f32;
    }
    sum
}

/// `acc + a . b` over 16 signed bytes holding two rows of 8: lanes 0, 1 get
/// bytes 0..8 and lanes 2, 3 bytes 8..16 (`sdot`'s grouping; the widening
/// form pairs its products so the rows stay apart).
#[inline(always)]
unsafe fn idot_rows<const DOT: bool>(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: DOT is true only in functions compiled with dotprod, installed after detection.
    unsafe {
        if DOT {
            sdot(acc, a, b)
        } else {
            // Products of 4-bit codes and i8 activations: pair sums fit i16.
            let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
            let hi = vmull_high_s8(a, b);
            vpadalq_s16(acc, vpaddq_s16(lo, hi))
        }
    }
}

/// `vqtbl2q` indices that gather sub-scale `j` of rows 0..4 of an
/// [`crate::interleave::X4Block`] (bytes `j, 8 + j, 16 + j, 24 + j` of the
/// decoded 32) into the low byte of four u32 lanes.
const X4_SCALE_IDX: [[u8; 16]; 8] = x4_idx([0, 8, 16, 24]);
/// The same for the mins (rows 0, 1, 2, 3 at `j, 16 + j, 8 + j, 24 + j`).
const X4_MIN_IDX: [[u8; 16]; 8] = x4_idx([0, 16, 8, 24]);

const fn x4_idx(at: [u8; 4]) -> [[u8; 16]; 8] {
    let mut t = [[255u8; 16]; 8];
    let mut j = 0;
    while j < 8 {
        let mut r = 0;
        while r < 4 {
            t[j][4 * r] = at[r] + j as u8;
            r += 1;
        }
        j += 1;
    }
    t
}

/// Q4KX4 mat-vec (layout in [`crate::interleave`]; the AVX2 kernel's
/// scheme with 128-bit vectors): rows `r0..r0 + out.len()`, whole panels.
#[inline(always)]
unsafe fn q4k_x4_body<const DOT: bool>(
    w: &[u8],
    rows: usize,
    nb: usize,
    r0: usize,
    x: &[BlockQ8K],
    out: &mut [f32],
) {
    let bs32 = |b: &BlockQ8K| -> [i32; 8] {
        core::array::from_fn(|j| b.bsums[2 * j] as i32 + b.bsums[2 * j + 1] as i32)
    };
    crate::interleave::gemv_spans(w, rows, nb, r0, x, out, bs32, |span, xs, bs| {
        // SAFETY: as for this function.
        unsafe { q4k_x4_span::<DOT>(span, xs, bs) }
    });
}

#[inline(always)]
unsafe fn q4k_x4_span<const DOT: bool>(
    span: &[crate::interleave::X4Block],
    x: &[BlockQ8K],
    bs32: &[[i32; 8]],
) -> [f32; 4] {
    // SAFETY: every load is within `b` (576 bytes), `xb.qs` (256) or the
    // 16-byte index tables; DOT as for `idot_rows`.
    unsafe {
        let m4 = vdupq_n_u8(15);
        let m3 = vdupq_n_u8(3);
        let mut acc = vdupq_n_f32(0.0);
        for ((b, xb), bs) in span.iter().zip(x).zip(bs32) {
            let n0 = vld1q_u8(b.nib.as_ptr());
            let n1 = vld1q_u8(b.nib.as_ptr().add(16));
            let h = vld1q_u8(b.hi.as_ptr());
            let sc = uint8x16x2_t(
                vorrq_u8(vandq_u8(n0, m4), vshlq_n_u8::<4>(vandq_u8(h, m3))),
                vorrq_u8(
                    vandq_u8(n1, m4),
                    vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<2>(h), m3)),
                ),
            );
            let mn = uint8x16x2_t(
                vorrq_u8(
                    vshrq_n_u8::<4>(n0),
                    vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<4>(h), m3)),
                ),
                vorrq_u8(vshrq_n_u8::<4>(n1), vshlq_n_u8::<4>(vshrq_n_u8::<6>(h))),
            );
            let mut mins = vdupq_n_s32(0);
            for j in 0..8 {
                let m = vqtbl2q_u8(mn, vld1q_u8(X4_MIN_IDX[j].as_ptr()));
                mins = vmlaq_n_s32(mins, vreinterpretq_s32_u8(m), bs[j]);
            }
            let mut acci = vdupq_n_s32(0);
            let xq = xb.qs.as_ptr();
            for g in 0..4 {
                let z = vdupq_n_s32(0);
                let (mut lo01, mut lo23, mut hi01, mut hi23) = (z, z, z, z);
                for k in 0..4 {
                    let q = b.qs.as_ptr().add(32 * (4 * g + k));
                    let (q01, q23) = (vld1q_u8(q), vld1q_u8(q.add(16)));
                    let xl = vld1_s8(xq.add(64 * g + 8 * k));
                    let xh = vld1_s8(xq.add(64 * g + 32 + 8 * k));
                    let (xl, xh) = (vcombine_s8(xl, xl), vcombine_s8(xh, xh));
                    let s8 = vreinterpretq_s8_u8;
                    lo01 = idot_rows::<DOT>(lo01, s8(vandq_u8(q01, m4)), xl);
                    lo23 = idot_rows::<DOT>(lo23, s8(vandq_u8(q23, m4)), xl);
                    hi01 = idot_rows::<DOT>(hi01, s8(vshrq_n_u8::<4>(q01)), xh);
                    hi23 = idot_rows::<DOT>(hi23, s8(vshrq_n_u8::<4>(q23)), xh);
                }
                let sl = vqtbl2q_u8(sc, vld1q_u8(X4_SCALE_IDX[2 * g].as_ptr()));
                let sh = vqtbl2q_u8(sc, vld1q_u8(X4_SCALE_IDX[2 * g + 1].as_ptr()));
                acci = vmlaq_s32(acci, vpaddq_s32(lo01, lo23), vreinterpretq_s32_u8(sl));
                acci = vmlaq_s32(acci, vpaddq_s32(hi01, hi23), vreinterpretq_s32_u8(sh));
            }
            let d: [f32; 4] = core::array::from_fn(|r| f16_le(b.d[r]));
            let dm: [f32; 4] = core::array::from_fn(|r| f16_le(b.dmin[r]));
            let d = vmulq_n_f32(vld1q_f32(d.as_ptr()), xb.d);
            let dm = vmulq_n_f32(vld1q_f32(dm.as_ptr()), xb.d);
            acc = vfmaq_f32(acc, vcvtq_f32_s32(acci), d);
            acc = vfmsq_f32(acc, vcvtq_f32_s32(mins), dm);
        }
        let mut o = [0f32; 4];
        vst1q_f32(o.as_mut_ptr(), acc);
        o
    }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn q4k_x4_dot(w: &[u8], rows: usize, nb: usize, r0: usize, x: &[BlockQ8K], out: &mut [f32]) {
    // SAFETY: compiled with dotprod.
    unsafe { q4k_x4_body::<true>(w, rows, nb, r0, x, out) }
}

#[target_feature(enable = "neon")]
unsafe fn q4k_x4_nodot(
    w: &[u8],
    rows: usize,
    nb: usize,
    r0: usize,
    x: &[BlockQ8K],
    out: &mut [f32],
) {
    // SAFETY: compiled with neon.
    unsafe { q4k_x4_body::<false>(w, rows, nb, r0, x, out) }
}

/// Kernel-table entry for the Q4KX4 mat-vec.
pub fn gemv_q4k_x4<const DOT: bool>(
    w: &[u8],
    rows: usize,
    nb: usize,
    r0: usize,
    x: &[BlockQ8K],
    out: &mut [f32],
) {
    // SAFETY: the dotprod table is installed only when neon and dotprod were
    // detected, the plain one only when neon was.
    unsafe {
        if DOT {
            q4k_x4_dot(w, rows, nb, r0, x, out)
        } else {
            q4k_x4_nodot(w, rows, nb, r0, x, out)
        }
    }
}
