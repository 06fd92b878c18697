//! AVX2 + FMA + F16C kernels (installed only after run-time detection of all
//! three features). Integer dot products follow ggml's AVX2 scheme:
//! `maddubs` (u8 x i8 -> i16 pairs), `madd` with the sub-scales -> i32.

use crate::blocks::*;
use crate::iq2_grid::{GRID, LEVELS};
use crate::scalar;
use crate::table::KernelTable;
use bytemuck::cast_slice;
use std::arch::x86_64::*;

pub static TABLE: KernelTable = KernelTable {
    isa: "avx2",
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
    gemm_q8_0: Some(gemm_q8_0),
    gemm_q4k: Some(gemm_q4k),
    gemm_q3k: Some(gemm_q3k),
    gemm_q2k: Some(gemm_q2k),
    gemm_iq2: Some(gemm_iq2),
    gemv_q4k_x4: Some(gemv_q4k_x4),
    gemm_q4k_x4: Some(gemm_q4k_x4),
    quantize_q8k,
    quantize_q8a32,
};

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: this table is installed only when avx2, fma and f16c were detected;
    // b has a.len() f32.
    unsafe { dot_impl::<0>(a, b.as_ptr() as *const u8) }
}

pub fn dot_f16(a: &[f32], b: &[half::f16]) -> f32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: as in `dot`; b has a.len() f16.
    unsafe { dot_impl::<1>(a, b.as_ptr() as *const u8) }
}

/// Value `j` of kind `K` (0 = f32, 1 = f16) at `p`.
///
/// # Safety
/// `p` points to at least `j + 1` values of kind `K`.
#[inline]
unsafe fn value_at<const K: u8>(p: *const u8, j: usize) -> f32 {
    // SAFETY: the caller guarantees value j is readable.
    unsafe {
        match K {
            0 => (p as *const f32).add(j).read_unaligned(),
            _ => (p as *const half::f16).add(j).read_unaligned().to_f32(),
        }
    }
}

/// `sum a[i] * b[i]`, `b` of kind `K` (0 = f32, 1 = f16) with `a.len()` values.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_impl<const K: u8>(a: &[f32], pb: *const u8) -> f32 {
    let n = a.len();
    let w = if K == 0 { 4 } else { 2 };
    let pa = a.as_ptr();
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY: every load reads 8 values below n.
    unsafe {
        while i + 32 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8 * k)),
                    load_w::<K>(pb.add((i + 8 * k) * w)),
                    *a,
                );
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i)),
                load_w::<K>(pb.add(i * w)),
                acc[0],
            );
            i += 8;
        }
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum(v);
    for (j, av) in a.iter().enumerate().skip(i) {
        // SAFETY: j < n values at pb.
        s += av * unsafe { value_at::<K>(pb, j) };
    }
    s
}

pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    // SAFETY: this table is installed only when avx2, fma and f16c were detected;
    // x has y.len() f32.
    unsafe { axpy_impl::<0>(a, x.as_ptr() as *const u8, y) }
}

pub fn axpy_f16(a: f32, x: &[half::f16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    // SAFETY: as in `axpy`; x has y.len() f16.
    unsafe { axpy_impl::<1>(a, x.as_ptr() as *const u8, y) }
}

/// `y[i] += a * x[i]`, `x` of kind `K` (0 = f32, 1 = f16) with `y.len()` values.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn axpy_impl<const K: u8>(a: f32, px: *const u8, y: &mut [f32]) {
    let n = y.len();
    let w = if K == 0 { 4 } else { 2 };
    let va = _mm256_set1_ps(a);
    let mut i = 0;
    // SAFETY: loads and stores of 8 values below n; x is a shared slice, y a
    // unique one, so they do not alias.
    unsafe {
        while i + 8 <= n {
            let p = y.as_mut_ptr().add(i);
            _mm256_storeu_ps(
                p,
                _mm256_fmadd_ps(va, load_w::<K>(px.add(i * w)), _mm256_loadu_ps(p)),
            );
            i += 8;
        }
    }
    for (j, yv) in y.iter_mut().enumerate().skip(i) {
        // SAFETY: j < n values at px.
        *yv += a * unsafe { value_at::<K>(px, j) };
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

macro_rules! row_q8 {
    ($name:ident, $imp:ident) => {
        pub fn $name(row: &[u8], a: &[&[BlockQ8K]], out: &mut [f32]) {
            for (ac, oc) in a.chunks(4).zip(out.chunks_mut(4)) {
                // SAFETY: this table is installed only when avx2, fma and f16c were detected.
                unsafe {
                    match ac.len() {
                        1 => $imp::<1>(row, ac, oc),
                        2 => $imp::<2>(row, ac, oc),
                        3 => $imp::<3>(row, ac, oc),
                        _ => $imp::<4>(row, ac, oc),
                    }
                }
            }
        }
    };
}

pub fn row_q8_0(row: &[u8], a: &[&[BlockQ8A32]], out: &mut [f32]) {
    for (ac, oc) in a.chunks(4).zip(out.chunks_mut(4)) {
        // SAFETY: this table is installed only when avx2, fma and f16c were detected.
        unsafe {
            match ac.len() {
                1 => q8_0_impl::<1>(row, ac, oc),
                2 => q8_0_impl::<2>(row, ac, oc),
                3 => q8_0_impl::<3>(row, ac, oc),
                _ => q8_0_impl::<4>(row, ac, oc),
            }
        }
    }
}
row_q8!(row_q4k, q4k_impl);
row_q8!(row_q3k, q3k_impl);
row_q8!(row_q2k, q2k_impl);
row_q8!(row_iq2, iq2_impl);

/// Checks that every activation row covers `nb` super-blocks.
fn check_acts(a: &[&[BlockQ8K]], nb: usize, nr: usize, out: &[f32]) {
    assert!(a.len() == nr && out.len() == nr);
    for ar in a {
        assert!(
            ar.len() >= nb,
            "activation row has {} blocks, need {nb}",
            ar.len()
        );
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn loadu(p: *const i8) -> __m256i {
    // SAFETY: the caller guarantees 32 readable bytes at p.
    unsafe { _mm256_loadu_si256(p as *const __m256i) }
}

/// Prefetches (into L1) every cache line of the `T` that starts `dist` bytes
/// after `b`: one prefetch per 64 bytes of `T`, so calling it for each of a
/// run of consecutive blocks touches every line ahead of them. No
/// dereference (`wrapping_add`), and a prefetch past the end never faults.
#[inline(always)]
fn prefetch_ahead<T>(b: &T, dist: usize) {
    let p = (b as *const T as *const i8).wrapping_add(dist);
    let mut o = 0;
    while o < size_of::<T>() {
        // SAFETY: a prefetch is a hint: it reads nothing and cannot fault.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(o)) };
        o += 64;
    }
}

/// Prefetch distances (bytes ahead in the weight stream) of the mat-vec
/// kernels: (row-major Q8_0 / Q4K / Q3K / Q2K, Q4KX4), decided once.
///
/// A single core streaming weights from DRAM is limited by the cache misses
/// it keeps in flight. Measured with `kernel-table` (`KT_PAIRED=5`, lm_head
/// 156032x4096, 1 thread, alternating rounds), the two machines disagree:
/// on a 2-vCPU EPYC Zen 3 VM (AVX2, no AVX-512) prefetching raised the
/// kernels from 57-66 % of the read probe to 71-83 % (Q8_0, Q4K at 2,048
/// bytes) and Q4KX4 from 57-63 % to 77-80 % (1,152 bytes); on a 2-vCPU Zen 4
/// VM (AVX-512) the same prefetches cost 5-9 % (Q4KX4 85 -> 78 %, Q4K 24.0
/// -> 22.5 GB/s), its hardware prefetch already near the probe. So the
/// default is on for CPUs without AVX-512F and off with it: a proxy from two
/// machines, not a law, which `KOMPAKT_PREFETCH` overrides (`0`/`off`: none;
/// `on`: the distances above; a number: that many bytes for every kernel;
/// anything else: the default).
fn prefetch_distances() -> (usize, usize) {
    static D: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();
    *D.get_or_init(|| {
        let var = std::env::var("KOMPAKT_PREFETCH").ok();
        prefetch_choice(var.as_deref(), is_x86_feature_detected!("avx512f"))
    })
}

/// [`prefetch_distances`] from the variable's value and the CPU's AVX-512F.
fn prefetch_choice(var: Option<&str>, avx512f: bool) -> (usize, usize) {
    let on = (ROW_PREFETCH_AHEAD, X4_PREFETCH_AHEAD);
    match var.map(str::trim) {
        Some("0") | Some("off") => (0, 0),
        Some("on") => on,
        Some(v) => match v.parse::<usize>() {
            Ok(n) => (n, n),
            Err(_) if avx512f => (0, 0),
            Err(_) => on,
        },
        None if avx512f => (0, 0),
        None => on,
    }
}

/// Default prefetch distance of the row-major mat-vec kernels.
const ROW_PREFETCH_AHEAD: usize = 2048;

/// Q8_0 x Q8A32: per 32-weight block `psignb` + `maddubs` + `madd` to i32,
/// one FMA with `d_w * d_x`; two accumulators per row (FMA latency).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_impl<const NR: usize>(row: &[u8], a: &[&[BlockQ8A32]], out: &mut [f32]) {
    let blocks: &[BlockQ8_0] = cast_slice(row);
    assert!(a.len() == NR && out.len() == NR);
    for ar in a {
        assert!(
            ar.len() >= blocks.len(),
            "activation row has {} blocks, need {}",
            ar.len(),
            blocks.len()
        );
    }
    let ones = _mm256_set1_epi16(1);
    // One block's contribution `d_w * d_x * (w . x)` for row r, as 8 f32 lanes.
    let term = |blk: &BlockQ8A32, w: __m256i, aw: __m256i, d: f32| {
        // SAFETY: blk.qs has 32 bytes; avx2 is enabled in this function.
        unsafe {
            let x = loadu(blk.qs.as_ptr());
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w)), ones);
            (_mm256_set1_ps(d * blk.d), _mm256_cvtepi32_ps(p))
        }
    };
    let mut acc0 = [_mm256_setzero_ps(); NR];
    let mut acc1 = [_mm256_setzero_ps(); NR];
    let pairs = blocks.len() / 2;
    let pf = prefetch_distances().0;
    for k in 0..pairs {
        let (b0, b1) = (&blocks[2 * k], &blocks[2 * k + 1]);
        if pf != 0 {
            prefetch_ahead(b0, pf);
            prefetch_ahead(b1, pf);
        }
        // SAFETY: each block's qs has 32 bytes.
        let (w0, w1) = unsafe { (loadu(b0.qs.as_ptr()), loadu(b1.qs.as_ptr())) };
        let (aw0, aw1) = (_mm256_sign_epi8(w0, w0), _mm256_sign_epi8(w1, w1));
        let (d0, d1) = f16x2(&[b0.d[0], b0.d[1], b1.d[0], b1.d[1]]);
        for r in 0..NR {
            // SAFETY: activation blocks 2k, 2k+1 exist in every row (checked).
            let (x0, x1) = unsafe { (a[r].get_unchecked(2 * k), a[r].get_unchecked(2 * k + 1)) };
            let (s0, p0) = term(x0, w0, aw0, d0);
            let (s1, p1) = term(x1, w1, aw1, d1);
            acc0[r] = _mm256_fmadd_ps(s0, p0, acc0[r]);
            acc1[r] = _mm256_fmadd_ps(s1, p1, acc1[r]);
        }
    }
    if blocks.len() % 2 == 1 {
        let k = blocks.len() - 1;
        let b = &blocks[k];
        // SAFETY: qs has 32 bytes.
        let w = unsafe { loadu(b.qs.as_ptr()) };
        let aw = _mm256_sign_epi8(w, w);
        let d = f16x1(b.d);
        for r in 0..NR {
            // SAFETY: activation block k exists in every row (checked).
            let (s, p) = term(unsafe { a[r].get_unchecked(k) }, w, aw, d);
            acc0[r] = _mm256_fmadd_ps(s, p, acc0[r]);
        }
    }
    for r in 0..NR {
        out[r] = hsum(_mm256_add_ps(acc0[r], acc1[r]));
    }
}

/// Checks a panel: `nw` rows of `w.len() / nw` bytes, whole blocks of
/// `block` bytes; returns (bytes per row, blocks per row).
fn panel_shape(w: &[u8], nw: usize, block: usize, na: usize, out: &[f32]) -> (usize, usize) {
    assert!(
        nw > 0 && w.len().is_multiple_of(nw),
        "panel of {nw} rows, {} bytes",
        w.len()
    );
    let rb = w.len() / nw;
    assert!(
        rb.is_multiple_of(block),
        "row of {rb} bytes is not whole blocks of {block}"
    );
    assert!(out.len() >= nw * na, "panel output too short");
    (rb, rb / block)
}

/// Calls `mk(i0, rm, j0, rn)` over the panel in micro-tiles of up to `RM`
/// weight rows x `RN` activation rows: activation rows outer (their blocks
/// stay in L1 while the weight rows of the panel pass).
#[inline(always)]
fn tiles<const RM: usize, const RN: usize>(
    nw: usize,
    na: usize,
    mut mk: impl FnMut(usize, usize, usize, usize),
) {
    for j0 in (0..na).step_by(RN) {
        let rn = RN.min(na - j0);
        for i0 in (0..nw).step_by(RM) {
            mk(i0, RM.min(nw - i0), j0, rn);
        }
    }
}

/// Q8_0 panel: micro-tiles of 2 weight rows x 4 activation rows
/// ([`q8_0_mk_h`]). Per 32-block: the weight blocks are loaded once, each
/// activation block once (`|x|` once), then per pair `psignb` (weight sign
/// taken from `x`), `maddubs`, `madd`; the four pairs of a weight row are
/// summed with `phaddd` and scaled with one convert, `mul` and FMA. The
/// weight scales are converted from f16 once per panel into 8-lane vectors,
/// the activation scales laid out 4 rows side by side per block.
pub fn gemm_q8_0(w: &[u8], nw: usize, a: &[&[BlockQ8A32]], out: &mut [f32]) {
    if let [x] = a {
        // SAFETY: this table is installed only when avx2/fma/f16c were detected.
        return unsafe { gemv_q8_0(w, nw, x, out) };
    }
    if a.is_empty() {
        return;
    }
    let (_, nb) = panel_shape(w, nw, size_of::<BlockQ8_0>(), a.len(), out);
    for ar in a {
        assert!(
            ar.len() >= nb,
            "activation row has {} blocks, need {nb}",
            ar.len()
        );
    }
    let blocks: &[BlockQ8_0] = cast_slice(w);
    // SAFETY: this table is installed only when avx2/fma/f16c were detected.
    let dw = unsafe { q8_0_scales(blocks) };
    let na = a.len();
    // Activation scales of each group of 4 rows side by side per block
    // (the last row repeated in a partial group).
    let groups = na.div_ceil(4);
    let mut dx4 = vec![[0f32; 4]; groups * nb];
    for g in 0..groups {
        for k in 0..nb {
            dx4[g * nb + k] = core::array::from_fn(|t| a[(4 * g + t).min(na - 1)][k].d);
        }
    }
    tiles::<2, 4>(nw, na, |i0, rm, j0, rn| {
        let wp = |i: usize| blocks[(i0 + i.min(rm - 1)) * nb..].as_ptr();
        let dp = |i: usize| dw[(i0 + i.min(rm - 1)) * nb..].as_ptr();
        let ap = |j: usize| a[j0 + j.min(rn - 1)].as_ptr();
        let aq: [_; 4] = core::array::from_fn(ap);
        let xs = dx4[(j0 / 4) * nb..].as_ptr();
        let mut o = [[0f32; 4]; 4];
        // SAFETY: avx2/fma/f16c were detected (this table is installed
        // only then); every pointer has nb blocks / scales (rows of the
        // panel, activation rows checked above, dx4 has nb entries per
        // group); rows past rm / rn repeat the last one (valid reads,
        // results discarded).
        unsafe {
            if rm == 2 {
                q8_0_mk_h::<2>([wp(0), wp(1)], [dp(0), dp(1)], aq, xs, nb, &mut o)
            } else {
                q8_0_mk_h::<1>([wp(0)], [dp(0)], aq, xs, nb, &mut o)
            }
        }
        for j in 0..rn {
            for i in 0..rm {
                out[(j0 + j) * nw + i0 + i] = o[j][i];
            }
        }
    });
}

/// Q8_0 micro-kernel of `RM` weight rows x 4 activation rows that sums the
/// four pairs' i32 vectors of a weight row with three `phaddd` before the
/// float work: one convert, one `mul` and one FMA per weight row and block
/// instead of four (lanes: activation row `j` in lanes `j` and `4 + j`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_mk_h<const RM: usize>(
    w: [*const BlockQ8_0; RM],
    dw: [*const [f32; 8]; RM],
    a: [*const BlockQ8A32; 4],
    dx4: *const [f32; 4],
    nb: usize,
    out: &mut [[f32; 4]; 4],
) {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); RM];
    // SAFETY: the caller guarantees nb readable blocks / scales behind every pointer.
    unsafe {
        for k in 0..nb {
            let wv: [__m256i; RM] = core::array::from_fn(|i| loadu((*w[i].add(k)).qs.as_ptr()));
            let dot = |i: usize, x: __m256i, ax: __m256i| {
                _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(wv[i], x)), ones)
            };
            let mut h01 = [_mm256_setzero_si256(); RM];
            let mut h23 = [_mm256_setzero_si256(); RM];
            for jp in 0..2 {
                let x0 = loadu((*a[2 * jp].add(k)).qs.as_ptr());
                let x1 = loadu((*a[2 * jp + 1].add(k)).qs.as_ptr());
                let (ax0, ax1) = (_mm256_sign_epi8(x0, x0), _mm256_sign_epi8(x1, x1));
                for i in 0..RM {
                    let h = _mm256_hadd_epi32(dot(i, x0, ax0), dot(i, x1, ax1));
                    if jp == 0 {
                        h01[i] = h;
                    } else {
                        h23[i] = h;
                    }
                }
            }
            let dx = _mm256_broadcast_ps(&*(dx4.add(k) as *const __m128));
            for i in 0..RM {
                let p = _mm256_cvtepi32_ps(_mm256_hadd_epi32(h01[i], h23[i]));
                let s = _mm256_mul_ps(dx, _mm256_loadu_ps((*dw[i].add(k)).as_ptr()));
                acc[i] = _mm256_fmadd_ps(p, s, acc[i]);
            }
        }
        for i in 0..RM {
            let mut v = [0f32; 8];
            _mm256_storeu_ps(v.as_mut_ptr(), acc[i]);
            for j in 0..4 {
                out[j][i] = v[j] + v[4 + j];
            }
        }
    }
}

/// The f16 scales of Q8_0 blocks as 8-lane f32 vectors (F16C, 8 at a time).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_scales(blocks: &[BlockQ8_0]) -> Vec<[f32; 8]> {
    let mut dw = vec![[0f32; 8]; blocks.len()];
    for (bc, dc) in blocks.chunks(8).zip(dw.chunks_mut(8)) {
        let mut h = [0u16; 8];
        for (v, b) in h.iter_mut().zip(bc) {
            *v = u16::from_le_bytes(b.d);
        }
        let mut f = [0f32; 8];
        // SAFETY: h holds 8 u16 (16 bytes) and f 8 f32.
        unsafe {
            _mm256_storeu_ps(
                f.as_mut_ptr(),
                _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr() as *const __m128i)),
            )
        };
        for (d, v) in dc.iter_mut().zip(f) {
            *d = [v; 8];
        }
    }
    dw
}

/// One weight super-block (256 weights) of a K or IQ2 type unpacked for the
/// mat-mat panels, the same shape for every type:
/// `w . x = d * sum_c (q_c . x_c) * s_c  -  dmin * sum_g m[g] * bsum_x[g]`
/// with `q` unsigned bytes in weight order (`q[c]` = weights `32c..32c+32`),
/// `s[c]` the i16 sub-scales per 16 weights of chunk `c` as `madd` operand
/// (lanes 0-7: weights `32c..32c+16`, lanes 8-15: the next 16), `m` 16 i16
/// offsets per 16 weights (paired with the activation `bsums`).
/// Q4K/Q2K: `q`, `sc`, `min` as stored. Q3K: `q` = stored 0..7, `m = 4 sc`,
/// `dmin = d`. IQ2: `q = sign * grid + L` (0..2L, `L` the largest codebook
/// magnitude), `m = L (s+1)`,
/// `d = dmin = d / 16`.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct PackedK {
    q: [__m256i; 8],
    s: [__m256i; 8],
    m: __m256i,
    d: f32,
    dmin: f32,
}

impl PackedK {
    // SAFETY (of zeroed): all-zero bytes are a valid value of every field.
    const ZERO: PackedK = unsafe { core::mem::zeroed() };
}

thread_local! {
    /// Per-thread scratch for the unpacked weight panel (reused across calls).
    static PANEL: core::cell::RefCell<Vec<PackedK>> = const { core::cell::RefCell::new(Vec::new()) };
}

/// i16 vector `[v[2c] x 8 | v[2c+1] x 8]` for each chunk `c` from the 16
/// per-16 values `v` (one i16 vector).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn per16_scales(v: __m256i) -> [__m256i; 8] {
    let h = halves(v);
    let cs = chunk_scale_shuffles();
    core::array::from_fn(|c| _mm256_shuffle_epi8(h[c / 4], cs[c % 4]))
}

/// i16 vector of 16 lanes all `v[c]`, for each of the 8 per-32 values `v`
/// (bytes of `v8`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn per32_scales(v8: u64) -> [__m256i; 8] {
    let scv = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(v8 as i64)));
    let sh = lane16_shuffles();
    core::array::from_fn(|c| _mm256_shuffle_epi8(scv, sh[c]))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn pack_q4k(b: &BlockQ4K, p: &mut PackedK) {
    let m4 = _mm256_set1_epi8(0x0F);
    let (sc, mn) = unpack_6bit16(&b.scales);
    for g in 0..4 {
        // SAFETY: qs has 128 bytes, 32g+32 <= 128.
        let q = unsafe { loadu(b.qs.as_ptr().add(32 * g) as *const i8) };
        p.q[2 * g] = _mm256_and_si256(q, m4);
        p.q[2 * g + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
    }
    p.s = per32_scales(sc);
    p.m = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(
        _mm_cvtsi64_si128(mn as i64),
        _mm_cvtsi64_si128(mn as i64),
    ));
    (p.d, p.dmin) = f16x2(&[b.d[0], b.d[1], b.dmin[0], b.dmin[1]]);
}

#[target_feature(enable = "avx2,fma,f16c")]
fn pack_q2k(b: &BlockQ2K, p: &mut PackedK) {
    let m3 = _mm256_set1_epi8(3);
    let m15 = _mm_set1_epi8(15);
    // SAFETY: scales is 16 bytes.
    let ms = unsafe { _mm_loadu_si128(b.scales.as_ptr() as *const __m128i) };
    p.s = per16_scales(_mm256_cvtepu8_epi16(_mm_and_si128(ms, m15)));
    p.m = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(ms, 4), m15));
    for g in 0..2 {
        // SAFETY: qs has 64 bytes, 32g+32 <= 64.
        let qv = unsafe { loadu(b.qs.as_ptr().add(32 * g) as *const i8) };
        p.q[4 * g] = _mm256_and_si256(qv, m3);
        p.q[4 * g + 1] = _mm256_and_si256(_mm256_srli_epi16(qv, 2), m3);
        p.q[4 * g + 2] = _mm256_and_si256(_mm256_srli_epi16(qv, 4), m3);
        p.q[4 * g + 3] = _mm256_and_si256(_mm256_srli_epi16(qv, 6), m3);
    }
    (p.d, p.dmin) = f16x2(&[b.d[0], b.d[1], b.dmin[0], b.dmin[1]]);
}

/// Q3K codes 0..7 of the 32-weight chunk `4g + k` of a block: low 2 bits
/// from `ql` (half `g`, shifted by `2k`), bit `4g + k` of each `qh` byte
/// moved to bit 2 (16-bit shifts move no bit across a byte that the mask
/// keeps).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q3k_codes(ql: __m256i, qh: __m256i, g: usize, k: usize) -> __m256i {
    let hb = match 4 * g + k {
        0 => _mm256_slli_epi16(qh, 2),
        1 => _mm256_slli_epi16(qh, 1),
        2 => qh,
        3 => _mm256_srli_epi16(qh, 1),
        4 => _mm256_srli_epi16(qh, 2),
        5 => _mm256_srli_epi16(qh, 3),
        6 => _mm256_srli_epi16(qh, 4),
        _ => _mm256_srli_epi16(qh, 5),
    };
    let l = match k {
        0 => ql,
        1 => _mm256_srli_epi16(ql, 2),
        2 => _mm256_srli_epi16(ql, 4),
        _ => _mm256_srli_epi16(ql, 6),
    };
    _mm256_or_si256(
        _mm256_and_si256(l, _mm256_set1_epi8(3)),
        _mm256_and_si256(hb, _mm256_set1_epi8(4)),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
fn pack_q3k(b: &BlockQ3K, p: &mut PackedK) {
    let (lo, hi) = unpack_6bit16(&b.scales);
    let sc8 = _mm_sub_epi8(_mm_set_epi64x(hi as i64, lo as i64), _mm_set1_epi8(32));
    let scall = _mm256_cvtepi8_epi16(sc8);
    p.s = per16_scales(scall);
    p.m = _mm256_slli_epi16(scall, 2);
    // SAFETY: qh is 32 bytes.
    let qh = unsafe { loadu(b.qh.as_ptr() as *const i8) };
    for g in 0..2 {
        // SAFETY: ql has 64 bytes, 32g+32 <= 64.
        let ql = unsafe { loadu(b.ql.as_ptr().add(32 * g) as *const i8) };
        for k in 0..4 {
            p.q[4 * g + k] = q3k_codes(ql, qh, g, k);
        }
    }
    p.d = f16x1(b.d);
    p.dmin = p.d;
}

// The panels' unsigned IQ2 codes reach 2 L; a `maddubs` pair of them with
// i8 activations must stay below i16 saturation.
const _: () = assert!(2 * 2 * (LEVELS[2] as i32) * 127 < i16::MAX as i32);

#[target_feature(enable = "avx2,fma,f16c")]
fn pack_iq2(b: &BlockIQ2, p: &mut PackedK) {
    let m15 = _mm256_set1_epi16(15);
    let ptab = _mm256_setr_epi8(
        0, -128, -128, 0, -128, 0, 0, -128, -128, 0, 0, -128, 0, -128, -128, 0, 0, -128, -128, 0,
        -128, 0, 0, -128, -128, 0, 0, -128, 0, -128, -128, 0,
    );
    let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let one8 = _mm256_set1_epi8(1);
    // Offset that makes the signed codebook values unsigned for `maddubs`.
    const L: u8 = LEVELS[2];
    let offset = _mm256_set1_epi8(L as i8);
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 4, 4, 4, 4, 4, 4, 4, 4, 6, 6, 6, 6, 6, 6,
        6, 6,
    );
    let quarter: [__m256i; 4] = core::array::from_fn(|q| {
        let (l, h) = (2 * q as i32, 2 * q as i32 + 1);
        _mm256_setr_epi32(l, h, l, h, l, h, l, h)
    });
    let sc = u32::from_le_bytes(b.scales) as u64;
    // s + 1 per sub-block of 32 (bytes), then as i16 scale vectors.
    let mut s1 = 0u64;
    for j in 0..8 {
        s1 |= (((sc >> (4 * j)) & 15) + 1) << (8 * j);
    }
    p.s = per32_scales(s1);
    let s1v = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(s1 as i64));
    // m per 16 = L (s + 1) of its sub-block of 32.
    let s1xl = _mm_mullo_epi16(s1v, _mm_set1_epi16(L as i16));
    p.m = _mm256_setr_m128i(
        _mm_unpacklo_epi16(s1xl, s1xl),
        _mm_unpackhi_epi16(s1xl, s1xl),
    );
    for h in 0..2 {
        // SAFETY: qs is 64 bytes, 32h+32 <= 64.
        let c = unsafe { loadu(b.qs.as_ptr().add(32 * h) as *const i8) };
        let s7 = _mm256_srli_epi16(c, 9);
        let par = _mm256_xor_si256(
            _mm256_shuffle_epi8(ptab, _mm256_and_si256(s7, m15)),
            _mm256_shuffle_epi8(ptab, _mm256_srli_epi16(s7, 4)),
        );
        let sgn = _mm256_or_si256(s7, par);
        for q in 0..4 {
            let j = 4 * h + q;
            let mut c4 = [0u8; 8];
            c4.copy_from_slice(&b.qs[8 * j..8 * j + 8]);
            let c4 = u64::from_le_bytes(c4);
            let gi = |k: u32| GRID[((c4 >> (16 * k)) & 511) as usize] as i64;
            let gv = _mm256_set_epi64x(gi(3), gi(2), gi(1), gi(0));
            let sb = _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(sgn, quarter[q]), spread);
            let neg = _mm256_cmpeq_epi8(_mm256_and_si256(sb, bits), bits);
            let sv = _mm256_or_si256(neg, one8);
            p.q[j] = _mm256_add_epi8(_mm256_sign_epi8(gv, sv), offset);
        }
    }
    p.d = f16x1(b.d) * (1.0 / 16.0);
    p.dmin = p.d;
}

/// Shared body of the K/IQ2 panels: unpack the panel's weight rows once into
/// [`PackedK`] (per-thread scratch), then micro-tiles of 2 weight rows x 4
/// activation rows over [`kq_mk`].
fn gemm_packed<B: bytemuck::Pod>(
    w: &[u8],
    nw: usize,
    a: &[&[BlockQ8K]],
    out: &mut [f32],
    pack: unsafe fn(&B, &mut PackedK),
) {
    if a.is_empty() {
        return;
    }
    let (_, nb) = panel_shape(w, nw, size_of::<B>(), a.len(), out);
    let blocks: &[B] = cast_slice(w);
    gemm_unpacked(nw, nb, a, out, |buf| {
        for (b, p) in blocks.iter().zip(buf.iter_mut()) {
            // SAFETY: this table is installed only when avx2/fma/f16c were detected.
            unsafe { pack(b, p) };
        }
    })
}

/// Q4KX4 mat-mat: rows `r0..r0 + nw` unpacked four at a time by
/// [`pack_q4k_x4`], then the panel kernel of [`gemm_packed`].
pub fn gemm_q4k_x4(
    w: &[u8],
    rows: usize,
    nb: usize,
    r0: usize,
    nw: usize,
    a: &[&[BlockQ8K]],
    out: &mut [f32],
) {
    use crate::interleave::{block_index, X4Block, GROUP_ROWS};
    let blocks: &[X4Block] = cast_slice(w);
    assert!(
        blocks.len() == rows * nb / GROUP_ROWS
            && r0.is_multiple_of(GROUP_ROWS)
            && nw.is_multiple_of(GROUP_ROWS)
            && r0 + nw <= rows
            && out.len() >= nw * a.len(),
        "Q4KX4 mat-mat: rows {r0}..+{nw} of {rows}, {} blocks for {nb} per row",
        blocks.len()
    );
    if a.is_empty() || nw == 0 {
        return;
    }
    gemm_unpacked(nw, nb, a, out, |buf| {
        for gl in 0..nw / GROUP_ROWS {
            for k in 0..nb {
                let b = &blocks[block_index(rows, nb, r0 / GROUP_ROWS + gl, k)];
                let base = GROUP_ROWS * gl * nb + k;
                let four = buf
                    .get_disjoint_mut(core::array::from_fn(|r| base + r * nb))
                    .expect("four rows of the panel buffer");
                // SAFETY: this table is installed only when avx2/fma/f16c were detected.
                unsafe { pack_q4k_x4(b, four) };
            }
        }
    })
}

/// The four rows of an interleaved block unpacked like [`pack_q4k`]: the
/// 8-byte pieces of the rows are transposed back with 64-bit unpacks, the
/// scales and mins decoded as in [`q4k_x4_span`].
#[target_feature(enable = "avx2,fma,f16c")]
fn pack_q4k_x4(b: &crate::interleave::X4Block, mut p: [&mut PackedK; 4]) {
    let m4 = _mm256_set1_epi8(0x0F);
    for g in 0..4 {
        // Chunks 4g..4g+4, each [r0 | r1 | r2 | r3] x 8 bytes.
        // SAFETY: qs has 512 bytes, 32 (4g + 3) + 32 <= 512.
        let c: [__m256i; 4] = core::array::from_fn(|k| unsafe {
            _mm256_loadu_si256(b.qs.as_ptr().add(32 * (4 * g + k)) as *const __m256i)
        });
        // Row r's 32 bytes: its 8-byte piece of chunks 0, 1, 2, 3.
        let t0 = _mm256_unpacklo_epi64(c[0], c[1]); // r0 c0 c1 | r2 c0 c1
        let t1 = _mm256_unpackhi_epi64(c[0], c[1]); // r1 c0 c1 | r3 c0 c1
        let t2 = _mm256_unpacklo_epi64(c[2], c[3]); // r0 c2 c3 | r2 c2 c3
        let t3 = _mm256_unpackhi_epi64(c[2], c[3]); // r1 c2 c3 | r3 c2 c3
        let rows = [
            _mm256_permute2x128_si256(t0, t2, 0x20),
            _mm256_permute2x128_si256(t1, t3, 0x20),
            _mm256_permute2x128_si256(t0, t2, 0x31),
            _mm256_permute2x128_si256(t1, t3, 0x31),
        ];
        for (pr, q) in p.iter_mut().zip(rows) {
            pr.q[2 * g] = _mm256_and_si256(q, m4);
            pr.q[2 * g + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        }
    }
    let (sc, mn) = x4_scales(b);
    let mut sc8 = [0u64; 4];
    let mut mn8 = [0u64; 4];
    // SAFETY: two 32-byte stores into 32-byte arrays.
    unsafe {
        _mm256_storeu_si256(sc8.as_mut_ptr() as *mut __m256i, sc);
        _mm256_storeu_si256(mn8.as_mut_ptr() as *mut __m256i, mn);
    }
    // Scales: qword r = row r. Mins: qwords = rows 0, 2, 1, 3.
    let mrow = [mn8[0], mn8[2], mn8[1], mn8[3]];
    for (r, pr) in p.iter_mut().enumerate() {
        pr.s = per32_scales(sc8[r]);
        pr.m = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(
            _mm_cvtsi64_si128(mrow[r] as i64),
            _mm_cvtsi64_si128(mrow[r] as i64),
        ));
        (pr.d, pr.dmin) = f16x2(&[b.d[r][0], b.d[r][1], b.dmin[r][0], b.dmin[r][1]]);
    }
}

/// The 6-bit sub-scales and mins of an X4 block's four rows as bytes:
/// scales with lane 0 = rows 0, 1 and lane 1 = rows 2, 3 (8 bytes each),
/// mins with lane 0 = rows 0, 2 and lane 1 = rows 1, 3 (the layout of
/// `nib`: `crate::interleave::scale_slot` / `min_slot`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn x4_scales(b: &crate::interleave::X4Block) -> (__m256i, __m256i) {
    let m4 = _mm256_set1_epi8(0x0F);
    let m30 = _mm256_set1_epi8(0x30);
    // SAFETY: nib is 32 bytes, hi 16.
    let (nib, hi) = unsafe {
        (
            _mm256_loadu_si256(b.nib.as_ptr() as *const __m256i),
            _mm256_broadcastsi128_si256(_mm_loadu_si128(b.hi.as_ptr() as *const __m128i)),
        )
    };
    // The high 2 bits of the scales of lane 0 / lane 1 sit at bits 0-1 / 2-3
    // of `hi`, those of the mins at bits 4-5 / 6-7: shift them to bits 4-5.
    let sc = _mm256_or_si256(
        _mm256_and_si256(nib, m4),
        _mm256_and_si256(
            _mm256_sllv_epi32(hi, _mm256_setr_epi32(4, 4, 4, 4, 2, 2, 2, 2)),
            m30,
        ),
    );
    let mn = _mm256_or_si256(
        _mm256_and_si256(_mm256_srli_epi16(nib, 4), m4),
        _mm256_and_si256(
            _mm256_srlv_epi32(hi, _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2)),
            m30,
        ),
    );
    (sc, mn)
}

/// Fills the per-thread panel buffer (`nw * nb` unpacked blocks, row-major)
/// with `fill`, then runs the register-blocked micro-tiles over it.
fn gemm_unpacked(
    nw: usize,
    nb: usize,
    a: &[&[BlockQ8K]],
    out: &mut [f32],
    fill: impl FnOnce(&mut [PackedK]),
) {
    for ar in a {
        assert!(
            ar.len() >= nb,
            "activation row has {} blocks, need {nb}",
            ar.len()
        );
    }
    let na = a.len();
    PANEL.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < nw * nb {
            buf.resize(nw * nb, PackedK::ZERO);
        }
        fill(&mut buf[..nw * nb]);
        let packed = &buf[..nw * nb];
        tiles::<2, 4>(nw, na, |i0, rm, j0, rn| {
            let wp = |i: usize| packed[(i0 + i.min(rm - 1)) * nb..].as_ptr();
            let ap = |j: usize| a[j0 + j.min(rn - 1)].as_ptr();
            // SAFETY: avx2 detected (see above).
            let mut acc = [[unsafe { _mm256_setzero_ps() }; 2]; 4];
            // SAFETY: avx2/fma/f16c detected (see above); every pointer has
            // nb blocks (panel rows; activation rows checked); rows past
            // rm / rn repeat the last one (valid reads, results discarded).
            unsafe {
                match (rm, rn) {
                    (2, 3..) => {
                        kq_mk::<2, 4>([wp(0), wp(1)], [ap(0), ap(1), ap(2), ap(3)], nb, &mut acc)
                    }
                    (2, _) => kq_mk::<2, 2>([wp(0), wp(1)], [ap(0), ap(1)], nb, &mut acc),
                    (_, 3..) => kq_mk::<1, 4>([wp(0)], [ap(0), ap(1), ap(2), ap(3)], nb, &mut acc),
                    _ => kq_mk::<1, 2>([wp(0)], [ap(0), ap(1)], nb, &mut acc),
                }
            }
            for j in 0..rn {
                for i in 0..rm {
                    // SAFETY: avx2 detected (see above).
                    out[(j0 + j) * nw + i0 + i] = unsafe { hsum(acc[j][i]) };
                }
            }
        });
    });
}

/// Micro-kernel over unpacked super-blocks: per 32-weight chunk one
/// `maddubs` + `madd` (with the sub-scales) + `add` per (weight row,
/// activation row) pair into i32; per super-block the offset term (`madd`
/// of `m` with the activation `bsums`) and two FMAs into f32.
/// Not inlined, with the f32 accumulators behind a reference: they live in
/// memory (touched once per super-block), leaving the 16 vector registers to
/// the i32 accumulators and the weight vectors.
#[inline(never)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn kq_mk<const RM: usize, const RN: usize>(
    w: [*const PackedK; RM],
    a: [*const BlockQ8K; RN],
    nb: usize,
    acc: &mut [[__m256; 2]; 4],
) {
    // The chunk count as an opaque value: with a constant 8, LLVM unrolls the
    // chunk loop and interchanges it with the activation loop, spilling the
    // weight vectors to the stack.
    let chunks = core::hint::black_box(8usize);
    // SAFETY: the caller guarantees nb readable blocks behind every pointer.
    unsafe {
        for k in 0..nb {
            let pw: [&PackedK; RM] = core::array::from_fn(|i| &*w[i].add(k));
            let pa: [&BlockQ8K; RN] = core::array::from_fn(|j| &*a[j].add(k));
            let mut acci = [[_mm256_setzero_si256(); RM]; RN];
            for c in 0..chunks.min(8) {
                let q: [__m256i; RM] = core::array::from_fn(|i| pw[i].q[c]);
                for j in 0..RN {
                    let x = loadu(pa[j].qs.as_ptr().add(32 * c));
                    for i in 0..RM {
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q[i], x), pw[i].s[c]);
                        acci[j][i] = _mm256_add_epi32(acci[j][i], p);
                    }
                }
            }
            for j in 0..RN {
                let bs = _mm256_loadu_si256(pa[j].bsums.as_ptr() as *const __m256i);
                let dx = _mm256_set1_ps(pa[j].d);
                for i in 0..RM {
                    let mn = _mm256_cvtepi32_ps(_mm256_madd_epi16(bs, pw[i].m));
                    let t = _mm256_fmsub_ps(
                        _mm256_cvtepi32_ps(acci[j][i]),
                        _mm256_set1_ps(pw[i].d),
                        _mm256_mul_ps(mn, _mm256_set1_ps(pw[i].dmin)),
                    );
                    acc[j][i] = _mm256_fmadd_ps(t, dx, acc[j][i]);
                }
            }
        }
    }
}

pub fn gemm_q4k(w: &[u8], nw: usize, a: &[&[BlockQ8K]], out: &mut [f32]) {
    if let [x] = a {
        // SAFETY: this table is installed only when avx2/fma/f16c were detected.
        return unsafe { gemv_q4k(w, nw, x, out) };
    }
    gemm_packed::<BlockQ4K>(w, nw, a, out, pack_q4k)
}
pub fn gemm_q3k(w: &[u8], nw: usize, a: &[&[BlockQ8K]], out: &mut [f32]) {
    if let [x] = a {
        // SAFETY: this table is installed only when avx2/fma/f16c were detected.
        return unsafe { gemv_q3k(w, nw, x, out) };
    }
    gemm_packed::<BlockQ3K>(w, nw, a, out, pack_q3k)
}
pub fn gemm_q2k(w: &[u8], nw: usize, a: &[&[BlockQ8K]], out: &mut [f32]) {
    if let [x] = a {
        // SAFETY: this table is installed only when avx2/fma/f16c were detected.
        return unsafe { gemv_q2k(w, nw, x, out) };
    }
    gemm_packed::<BlockQ2K>(w, nw, a, out, pack_q2k)
}
pub fn gemm_iq2(w: &[u8], nw: usize, a: &[&[BlockQ8K]], out: &mut [f32]) {
    if let [x] = a {
        // SAFETY: this table is installed only when avx2/fma/f16c were detected.
        return unsafe { gemv_iq2(w, nw, x, out) };
    }
    gemm_packed::<BlockIQ2>(w, nw, a, out, pack_iq2)
}

/// Mat-vec path of a panel kernel (one activation row): the type's row
/// kernel for each weight row of the panel, inlined into one loop (no
/// indirect call, activation-count dispatch or constant setup per row).
macro_rules! gemv_each_row {
    ($name:ident, $imp:ident, $blk:ty, $act:ty) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name(w: &[u8], nw: usize, x: &[$act], out: &mut [f32]) {
            let (rb, _) = panel_shape(w, nw, size_of::<$blk>(), 1, out);
            let acts = [x];
            for (row, o) in w.chunks_exact(rb).zip(out.chunks_exact_mut(1)) {
                // SAFETY: avx2/fma/f16c are enabled in this function.
                unsafe { $imp::<1>(row, &acts, o) }
            }
        }
    };
}
gemv_each_row!(gemv_q3k, q3k_impl, BlockQ3K, BlockQ8K);
gemv_each_row!(gemv_q2k, q2k_impl, BlockQ2K, BlockQ8K);
gemv_each_row!(gemv_iq2, iq2_impl, BlockIQ2, BlockQ8K);
gemv_each_row!(gemv_q8_0, q8_0_impl, BlockQ8_0, BlockQ8A32);

/// `pshufb` controls broadcasting 16-bit lane `j` (0..8) of a 128-bit lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn lane16_shuffles() -> [__m256i; 8] {
    core::array::from_fn(|j| {
        let (l, h) = (2 * j as i8, 2 * j as i8 + 1);
        _mm256_setr_epi8(
            l, h, l, h, l, h, l, h, l, h, l, h, l, h, l, h, l, h, l, h, l, h, l, h, l, h, l, h, l,
            h, l, h,
        )
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_impl<const NR: usize>(row: &[u8], a: &[&[BlockQ8K]], out: &mut [f32]) {
    let blocks: &[BlockQ4K] = cast_slice(row);
    check_acts(a, blocks.len(), NR, out);
    let m4 = _mm256_set1_epi8(0x0F);
    let sshuf = lane16_shuffles();
    let mut acc = [_mm256_setzero_ps(); NR];
    let mut accm = [_mm256_setzero_ps(); NR];
    for (bi, b) in blocks.iter().enumerate() {
        let (scv, mnv, d, dmin) = q4k_block_scales(b);
        let mut acci = [_mm256_setzero_si256(); NR];
        for g in 0..4 {
            // SAFETY: qs has 128 bytes, 32*g+32 <= 128.
            let q = unsafe { _mm256_loadu_si256(b.qs.as_ptr().add(32 * g) as *const __m256i) };
            let lo = _mm256_and_si256(q, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            let s0 = _mm256_shuffle_epi8(scv, sshuf[2 * g]);
            let s1 = _mm256_shuffle_epi8(scv, sshuf[2 * g + 1]);
            for r in 0..NR {
                // SAFETY: block bi exists in every activation row (checked); 64g+64 <= 256.
                unsafe {
                    let blk = a[r].get_unchecked(bi);
                    let x0 = loadu(blk.qs.as_ptr().add(64 * g));
                    let x1 = loadu(blk.qs.as_ptr().add(64 * g + 32));
                    let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, x0), s0);
                    let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, x1), s1);
                    acci[r] = _mm256_add_epi32(acci[r], _mm256_add_epi32(p0, p1));
                }
            }
        }
        for r in 0..NR {
            // SAFETY: block bi exists (checked); bsums is 16 i16 = 32 bytes.
            let blk = unsafe { a[r].get_unchecked(bi) };
            let bs = unsafe { _mm256_loadu_si256(blk.bsums.as_ptr() as *const __m256i) };
            acc[r] = _mm256_fmadd_ps(
                _mm256_set1_ps(d * blk.d),
                _mm256_cvtepi32_ps(acci[r]),
                acc[r],
            );
            accm[r] = _mm256_fmadd_ps(
                _mm256_set1_ps(dmin * blk.d),
                _mm256_cvtepi32_ps(_mm256_madd_epi16(bs, mnv)),
                accm[r],
            );
        }
    }
    for r in 0..NR {
        out[r] = hsum(_mm256_sub_ps(acc[r], accm[r]));
    }
}

/// A Q4K block's scales: the 8 sub-scales as i16 in both 128-bit lanes, the
/// 8 mins duplicated per 16 to pair with `bsums` (`[m0, m0, m1, m1, ..]`),
/// and the f16 super-scales `d` and `dmin`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4k_block_scales(b: &BlockQ4K) -> (__m256i, __m256i, f32, f32) {
    let (sc, mn) = unpack_6bit16(&b.scales);
    let scv = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64)));
    let mnv = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(
        _mm_cvtsi64_si128(mn as i64),
        _mm_cvtsi64_si128(mn as i64),
    ));
    let (d, dmin) = f16x2(&[b.d[0], b.d[1], b.dmin[0], b.dmin[1]]);
    (scv, mnv, d, dmin)
}

/// Q4K mat-vec: [`q4k_vec_impl`] for each weight row of the panel, on a copy
/// of the activation row in [`q4k_vec_order`] (made once per panel: ~4 KB
/// per 4096 columns, against up to 256 weight rows of 2.3 KB each).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv_q4k(w: &[u8], nw: usize, x: &[BlockQ8K], out: &mut [f32]) {
    let (rb, nb) = panel_shape(w, nw, size_of::<BlockQ4K>(), 1, out);
    assert!(
        x.len() >= nb,
        "activation row has {} blocks, need {nb}",
        x.len()
    );
    let xp: Vec<BlockQ8K> = x[..nb].iter().map(q4k_vec_order).collect();
    // Opaque to LLVM, which otherwise rewrites each lane-varying `pshufb`
    // of constant controls into three shuffles (pshuflw + pshufd + vpermq).
    let sshuf = std::hint::black_box(chunk_scale_shuffles());
    for (row, o) in w.chunks_exact(rb).zip(out.iter_mut()) {
        // SAFETY: avx2/fma/f16c are enabled in this function; xp has nb blocks.
        *o = unsafe { q4k_vec_impl(row, &xp, &sshuf) };
    }
}

/// An activation block reordered for [`q4k_vec_impl`]: in every 64 values
/// the middle two 16-value chunks swap (`[A B C D] -> [A C B D]`), so that
/// the 32 bytes at `64g + 32h` are the activations of the 16 low nibbles
/// (sub-block `2g`) and then the 16 high nibbles (sub-block `2g + 1`) of
/// weight bytes `32g + 16h .. 32g + 16h + 16`. `d` and `bsums` (original
/// order: the mins pair with whole sub-blocks) are unchanged.
fn q4k_vec_order(b: &BlockQ8K) -> BlockQ8K {
    let mut p = *b;
    for (dst, src) in p.qs.chunks_exact_mut(64).zip(b.qs.chunks_exact(64)) {
        dst[16..32].copy_from_slice(&src[32..48]);
        dst[32..48].copy_from_slice(&src[16..32]);
    }
    p
}

/// One Q4K row against one activation row in [`q4k_vec_order`]. Each
/// 16 weight bytes are broadcast to both 128-bit lanes and shifted by 0 (low
/// lane) or 4 (high lane), so one 256-bit vector holds 16 weights of
/// sub-block `2g` and 16 of `2g + 1`: the two `maddubs` products of a
/// 64-weight group then share one scale vector, and are added in i16 (at
/// most 2 x 2 x 15 x 128 = 7680) before a single `madd`. Per 256 weights
/// that is 4 `madd` and 4 scale shuffles instead of 8 and 8 in
/// [`q4k_impl`], whose layout pairs each `maddubs` with its own scale.
/// `sshuf` = [`chunk_scale_shuffles`] (low lane: scale `2g`; high: `2g + 1`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_vec_impl(row: &[u8], xp: &[BlockQ8K], sshuf: &[__m256i; 4]) -> f32 {
    let blocks: &[BlockQ4K] = cast_slice(row);
    assert!(xp.len() >= blocks.len());
    let m4 = _mm256_set1_epi8(0x0F);
    let shift = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
    let mut acc = _mm256_setzero_ps();
    let mut accm = _mm256_setzero_ps();
    let pf = prefetch_distances().0;
    for (b, x) in blocks.iter().zip(xp) {
        if pf != 0 {
            prefetch_ahead(b, pf);
        }
        let (scv, mnv, d, dmin) = q4k_block_scales(b);
        let mut acci = _mm256_setzero_si256();
        for (g, s) in sshuf.iter().enumerate() {
            // SAFETY: qs has 128 bytes (32g + 32 <= 128); x.qs has 256 (64g + 64 <= 256).
            unsafe {
                let qp = b.qs.as_ptr().add(32 * g) as *const __m128i;
                let qa = _mm256_broadcastsi128_si256(_mm_loadu_si128(qp));
                let qb = _mm256_broadcastsi128_si256(_mm_loadu_si128(qp.add(1)));
                let la = _mm256_and_si256(_mm256_srlv_epi32(qa, shift), m4);
                let lb = _mm256_and_si256(_mm256_srlv_epi32(qb, shift), m4);
                let xa = loadu(x.qs.as_ptr().add(64 * g));
                let xb = loadu(x.qs.as_ptr().add(64 * g + 32));
                let t =
                    _mm256_add_epi16(_mm256_maddubs_epi16(la, xa), _mm256_maddubs_epi16(lb, xb));
                let sv = _mm256_shuffle_epi8(scv, *s);
                acci = _mm256_add_epi32(acci, _mm256_madd_epi16(t, sv));
            }
        }
        // SAFETY: bsums is 16 i16 = 32 bytes.
        let bs = unsafe { _mm256_loadu_si256(x.bsums.as_ptr() as *const __m256i) };
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * x.d), _mm256_cvtepi32_ps(acci), acc);
        accm = _mm256_fmadd_ps(
            _mm256_set1_ps(dmin * x.d),
            _mm256_cvtepi32_ps(_mm256_madd_epi16(bs, mnv)),
            accm,
        );
    }
    hsum(_mm256_sub_ps(acc, accm))
}

/// `d` and `dmin`, two adjacent little-endian f16, converted with F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16x2(p: &[u8; 4]) -> (f32, f32) {
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes(*p)));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

/// One little-endian f16 converted with F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16x1(p: [u8; 2]) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(
        _mm_cvtsi32_si128(u16::from_le_bytes(p) as i32),
    ))
}

/// 16 i16 sub-scales `s[0..16]` (one 256-bit vector) to the two vectors
/// `[s[8g..8g+8] | s[8g..8g+8]]` (g = 0, 1: one per 128-weight half).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn halves(s: __m256i) -> [__m256i; 2] {
    [
        _mm256_permute2x128_si256(s, s, 0x00),
        _mm256_permute2x128_si256(s, s, 0x11),
    ]
}

/// `pshufb` controls over a [`halves`] vector for 32-weight chunk `k` of a
/// 128-weight half: low 128-bit lane = i16 scale `2k` (its first 16
/// weights), high lane = i16 scale `2k + 1`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn chunk_scale_shuffles() -> [__m256i; 4] {
    core::array::from_fn(|k| {
        let (a, b) = (4 * k as i8, 4 * k as i8 + 2);
        _mm256_setr_epi8(
            a,
            a + 1,
            a,
            a + 1,
            a,
            a + 1,
            a,
            a + 1,
            a,
            a + 1,
            a,
            a + 1,
            a,
            a + 1,
            a,
            a + 1,
            b,
            b + 1,
            b,
            b + 1,
            b,
            b + 1,
            b,
            b + 1,
            b,
            b + 1,
            b,
            b + 1,
            b,
            b + 1,
            b,
            b + 1,
        )
    })
}

/// Q3K: the 16 signed sub-scales are unpacked to i16 with vector ops; per
/// 32-weight chunk the 3-bit `q` is `(ql >> 2k) & 3 | bit (4g+k) of qh << 2`
/// (5 ops), one `maddubs` with the unsigned `q`, one `madd` with the
/// sub-scales; the `-4` offset is one `madd` of the block's `bsums` with the
/// scales. Integer sums stay in i32 over the whole block, one FMA per block.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3k_impl<const NR: usize>(row: &[u8], a: &[&[BlockQ8K]], out: &mut [f32]) {
    let blocks: &[BlockQ3K] = cast_slice(row);
    check_acts(a, blocks.len(), NR, out);
    let b32 = _mm_set1_epi8(32);
    let cs = chunk_scale_shuffles();
    let mut acc = [_mm256_setzero_ps(); NR];
    let pf = prefetch_distances().0;
    for (bi, b) in blocks.iter().enumerate() {
        if pf != 0 {
            prefetch_ahead(b, pf);
        }
        let (lo, hi) = unpack_6bit16(&b.scales);
        let sc8 = _mm_sub_epi8(_mm_set_epi64x(hi as i64, lo as i64), b32);
        let scall = _mm256_cvtepi8_epi16(sc8);
        let sch = halves(scall);
        let d = f16x1(b.d);
        // SAFETY: qh is 32 bytes.
        let qh = unsafe { _mm256_loadu_si256(b.qh.as_ptr() as *const __m256i) };
        let mut acci = [_mm256_setzero_si256(); NR];
        for g in 0..2 {
            // SAFETY: ql has 64 bytes, 32g+32 <= 64.
            let ql = unsafe { _mm256_loadu_si256(b.ql.as_ptr().add(32 * g) as *const __m256i) };
            for k in 0..4 {
                let q = q3k_codes(ql, qh, g, k);
                let s = _mm256_shuffle_epi8(sch[g], cs[k]);
                for r in 0..NR {
                    // SAFETY: block bi exists (checked); 128g+32k+32 <= 256.
                    unsafe {
                        let blk = a[r].get_unchecked(bi);
                        let x = loadu(blk.qs.as_ptr().add(128 * g + 32 * k));
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), s);
                        acci[r] = _mm256_add_epi32(acci[r], p);
                    }
                }
            }
        }
        for r in 0..NR {
            // SAFETY: block bi exists (checked); bsums is 32 bytes.
            let blk = unsafe { a[r].get_unchecked(bi) };
            let bs = unsafe { _mm256_loadu_si256(blk.bsums.as_ptr() as *const __m256i) };
            let corr = _mm256_slli_epi32(_mm256_madd_epi16(bs, scall), 2);
            let t = _mm256_sub_epi32(acci[r], corr);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * blk.d), _mm256_cvtepi32_ps(t), acc[r]);
        }
    }
    for r in 0..NR {
        out[r] = hsum(acc[r]);
    }
}

/// Q2K: scales and mins by vector ops from the 16 packed bytes; per
/// 32-weight chunk `and`/shift, `maddubs`, `madd` with the sub-scales; the
/// min term is one `madd` of the mins with `bsums`, accumulated in f32
/// lanes (no horizontal sum per block).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q2k_impl<const NR: usize>(row: &[u8], a: &[&[BlockQ8K]], out: &mut [f32]) {
    let blocks: &[BlockQ2K] = cast_slice(row);
    check_acts(a, blocks.len(), NR, out);
    let m3 = _mm256_set1_epi8(3);
    let m15 = _mm_set1_epi8(15);
    let cs = chunk_scale_shuffles();
    let mut acc = [_mm256_setzero_ps(); NR];
    let mut accm = [_mm256_setzero_ps(); NR];
    let pf = prefetch_distances().0;
    for (bi, b) in blocks.iter().enumerate() {
        if pf != 0 {
            prefetch_ahead(b, pf);
        }
        // SAFETY: scales is 16 bytes.
        let ms = unsafe { _mm_loadu_si128(b.scales.as_ptr() as *const __m128i) };
        let sc = _mm256_cvtepu8_epi16(_mm_and_si128(ms, m15));
        let mn = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(ms, 4), m15));
        let sch = halves(sc);
        let (d, dmin) = f16x2(&[b.d[0], b.d[1], b.dmin[0], b.dmin[1]]);
        let mut acci = [_mm256_setzero_si256(); NR];
        for g in 0..2 {
            // SAFETY: qs has 64 bytes, 32g+32 <= 64.
            let qv = unsafe { _mm256_loadu_si256(b.qs.as_ptr().add(32 * g) as *const __m256i) };
            for k in 0..4 {
                let l = match k {
                    0 => qv,
                    1 => _mm256_srli_epi16(qv, 2),
                    2 => _mm256_srli_epi16(qv, 4),
                    _ => _mm256_srli_epi16(qv, 6),
                };
                let q = _mm256_and_si256(l, m3);
                let s = _mm256_shuffle_epi8(sch[g], cs[k]);
                for r in 0..NR {
                    // SAFETY: block bi exists (checked); 128g+32k+32 <= 256.
                    unsafe {
                        let blk = a[r].get_unchecked(bi);
                        let x = loadu(blk.qs.as_ptr().add(128 * g + 32 * k));
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), s);
                        acci[r] = _mm256_add_epi32(acci[r], p);
                    }
                }
            }
        }
        for r in 0..NR {
            // SAFETY: block bi exists (checked); bsums is 32 bytes.
            let blk = unsafe { a[r].get_unchecked(bi) };
            let bs = unsafe { _mm256_loadu_si256(blk.bsums.as_ptr() as *const __m256i) };
            let m = _mm256_cvtepi32_ps(_mm256_madd_epi16(bs, mn));
            acc[r] = _mm256_fmadd_ps(
                _mm256_set1_ps(d * blk.d),
                _mm256_cvtepi32_ps(acci[r]),
                acc[r],
            );
            accm[r] = _mm256_fmadd_ps(_mm256_set1_ps(dmin * blk.d), m, accm[r]);
        }
    }
    for r in 0..NR {
        out[r] = hsum(_mm256_sub_ps(acc[r], accm[r]));
    }
}

/// IQ2: the sign bytes of all 32 groups of a block are decoded with SIMD (two
/// vectors of 16 codes): `code >> 9` plus the parity bit (two 16-entry
/// `pshufb` parity lookups on the nibbles). Per sub-block, a `vpermd`
/// broadcasts its 4 sign bytes, a `pshufb` spreads each over its 8 weights,
/// and `and` + `add 0x7f` make a byte that is negative exactly where the sign
/// bit is set (0x7f otherwise) for `psignb` (one op fewer than `cmpeq` +
/// `or 1`: 4.1 -> 4.6 GB/s at 4096x4096); the 4 codebook vectors (4 KiB
/// table, in L1) are four scalar loads. The block 320 bytes ahead is
/// prefetched (the lm_head streams 175 MB).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn iq2_impl<const NR: usize>(row: &[u8], a: &[&[BlockQ8K]], out: &mut [f32]) {
    let blocks: &[BlockIQ2] = cast_slice(row);
    check_acts(a, blocks.len(), NR, out);
    let m15 = _mm256_set1_epi16(15);
    // Parity of a nibble, as 0x80 (odd) or 0.
    let ptab = _mm256_setr_epi8(
        0, -128, -128, 0, -128, 0, 0, -128, -128, 0, 0, -128, 0, -128, -128, 0, 0, -128, -128, 0,
        -128, 0, 0, -128, -128, 0, 0, -128, 0, -128, -128, 0,
    );
    let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let x7f = _mm256_set1_epi8(0x7f);
    // Sign byte of group g (low byte of 16-bit lane g) to bytes 8g..8g+8.
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 4, 4, 4, 4, 4, 4, 4, 4, 6, 6, 6, 6, 6, 6,
        6, 6,
    );
    // vpermd indices broadcasting the 64-bit quarter q to all four quarters.
    let quarter: [__m256i; 4] = core::array::from_fn(|q| {
        let (l, h) = (2 * q as i32, 2 * q as i32 + 1);
        _mm256_setr_epi32(l, h, l, h, l, h, l, h)
    });
    let sshuf = lane16_shuffles();
    let mut acc = [_mm256_setzero_ps(); NR];
    for (bi, b) in blocks.iter().enumerate() {
        let d = f16x1(b.d) * (1.0 / 16.0);
        // SAFETY: qs is 64 bytes; scales 4 bytes.
        let (codes, sc) = unsafe {
            (
                [
                    _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i),
                    _mm256_loadu_si256(b.qs.as_ptr().add(32) as *const __m256i),
                ],
                u32::from_le_bytes(b.scales),
            )
        };
        // Scales s+1 of sub-blocks 0..8 as i16, in both 128-bit lanes.
        let scv = {
            let v = _mm_cvtsi32_si128(sc as i32);
            let v = _mm_unpacklo_epi8(
                _mm_and_si128(v, _mm_set1_epi8(15)),
                _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(15)),
            );
            let v = _mm_add_epi16(_mm_cvtepu8_epi16(v), _mm_set1_epi16(1));
            _mm256_broadcastsi128_si256(v)
        };
        // Past the end of the row this is the next row, contiguous in a
        // weight matrix (`wrapping_add`: no dereference; prefetches never fault).
        _mm_prefetch::<_MM_HINT_T0>((b as *const BlockIQ2 as *const i8).wrapping_add(320));
        let mut acci = [_mm256_setzero_si256(); NR];
        for h in 0..2 {
            let c = codes[h];
            let s7 = _mm256_srli_epi16(c, 9);
            let par = _mm256_xor_si256(
                _mm256_shuffle_epi8(ptab, _mm256_and_si256(s7, m15)),
                _mm256_shuffle_epi8(ptab, _mm256_srli_epi16(s7, 4)),
            );
            let sgn = _mm256_or_si256(s7, par);
            for q in 0..4 {
                let j = 4 * h + q;
                // Four scalar loads beat `vpgatherdq` (4.1 vs 3.6 GB/s on Zen 4),
                // a `vpgatherdd` of a 2 KiB nibble table for 8 groups (4.1 vs
                // 3.3), u16 code loads (3.3) and a stack array of offsets with
                // `vpbroadcastq` + `vpblendd` (3.6-3.8).
                let c4 = u64::from_le_bytes(b.qs[8 * j..8 * j + 8].try_into().unwrap());
                let gi = |k: u32| GRID[((c4 >> (16 * k)) & 511) as usize] as i64;
                let gv = _mm256_set_epi64x(gi(3), gi(2), gi(1), gi(0));
                let sb = _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(sgn, quarter[q]), spread);
                let sv = _mm256_add_epi8(_mm256_and_si256(sb, bits), x7f);
                let s = _mm256_shuffle_epi8(scv, sshuf[j]);
                for r in 0..NR {
                    // SAFETY: block bi exists (checked); 32j+32 <= 256.
                    unsafe {
                        let blk = a[r].get_unchecked(bi);
                        let x = _mm256_sign_epi8(loadu(blk.qs.as_ptr().add(32 * j)), sv);
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(gv, x), s);
                        acci[r] = _mm256_add_epi32(acci[r], p);
                    }
                }
            }
        }
        for r in 0..NR {
            // SAFETY: block bi exists (checked).
            let blk = unsafe { a[r].get_unchecked(bi) };
            acc[r] = _mm256_fmadd_ps(
                _mm256_set1_ps(d * blk.d),
                _mm256_cvtepi32_ps(acci[r]),
                acc[r],
            );
        }
    }
    for r in 0..NR {
        out[r] = hsum(acc[r]);
    }
}

pub fn quantize_q8k(x: &[f32], out: &mut [BlockQ8K]) {
    // SAFETY: this table is installed only when avx2, fma and f16c were detected.
    unsafe { quantize_q8k_impl(x, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8k_impl(x: &[f32], out: &mut [BlockQ8K]) {
    let full = x.len() / QK_K;
    let absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    for (bi, b) in out.iter_mut().enumerate() {
        if bi >= full {
            scalar::quantize_q8k(&x[(bi * QK_K).min(x.len())..], core::slice::from_mut(b));
            continue;
        }
        let p = x[bi * QK_K..].as_ptr();
        // SAFETY: block bi is full: 256 floats readable at p; stores stay inside b.qs (256 bytes).
        unsafe {
            let mut mx = _mm256_setzero_ps();
            for i in 0..32 {
                mx = _mm256_max_ps(mx, _mm256_and_ps(_mm256_loadu_ps(p.add(8 * i)), absmask));
            }
            let amax = hsum_max(mx);
            if amax == 0.0 {
                *b = BlockQ8K::zeroed();
                continue;
            }
            b.d = amax / 127.0;
            let id = _mm256_set1_ps(127.0 / amax);
            let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
            for c in 0..8 {
                let q: [__m256i; 4] = core::array::from_fn(|k| {
                    let v = _mm256_mul_ps(_mm256_loadu_ps(p.add(32 * c + 8 * k)), id);
                    _mm256_cvtps_epi32(_mm256_round_ps(
                        v,
                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
                    ))
                });
                let i0 = _mm256_packs_epi32(q[0], q[1]);
                let i2 = _mm256_packs_epi32(q[2], q[3]);
                let i0 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(i0, i2), perm);
                _mm256_storeu_si256(b.qs.as_mut_ptr().add(32 * c) as *mut __m256i, i0);
            }
        }
        for j in 0..16 {
            b.bsums[j] = b.qs[16 * j..16 * (j + 1)].iter().map(|&q| q as i16).sum();
        }
    }
}

pub fn quantize_q8a32(x: &[f32], out: &mut [BlockQ8A32]) {
    // SAFETY: this table is installed only when avx2, fma and f16c were detected.
    unsafe { quantize_q8a32_impl(x, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8a32_impl(x: &[f32], out: &mut [BlockQ8A32]) {
    let full = x.len() / QK8_0;
    let absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (bi, b) in out.iter_mut().enumerate() {
        if bi >= full {
            scalar::quantize_q8a32(&x[(bi * QK8_0).min(x.len())..], core::slice::from_mut(b));
            continue;
        }
        let p = x[bi * QK8_0..].as_ptr();
        // SAFETY: block bi is full: 32 floats readable at p; the store writes b.qs (32 bytes).
        unsafe {
            let v: [__m256; 4] = core::array::from_fn(|k| _mm256_loadu_ps(p.add(8 * k)));
            let mx = _mm256_max_ps(
                _mm256_max_ps(_mm256_and_ps(v[0], absmask), _mm256_and_ps(v[1], absmask)),
                _mm256_max_ps(_mm256_and_ps(v[2], absmask), _mm256_and_ps(v[3], absmask)),
            );
            let amax = hsum_max(mx);
            if amax == 0.0 {
                *b = BlockQ8A32::zeroed();
                continue;
            }
            b.d = amax / 127.0;
            let id = _mm256_set1_ps(127.0 / amax);
            let q: [__m256i; 4] = core::array::from_fn(|k| {
                _mm256_cvtps_epi32(_mm256_round_ps(
                    _mm256_mul_ps(v[k], id),
                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
                ))
            });
            let i0 = _mm256_packs_epi32(q[0], q[1]);
            let i2 = _mm256_packs_epi32(q[2], q[3]);
            let i0 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(i0, i2), perm);
            _mm256_storeu_si256(b.qs.as_mut_ptr() as *mut __m256i, i0);
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_max(v: __m256) -> f32 {
    let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_max_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Q4KX4 mat-vec ([`crate::interleave`]): rows `r0..r0 + out.len()` of a
/// `rows`-row matrix of `nb` blocks per row; `r0` starts a panel and the
/// range ends at a panel boundary or at `rows`. Per panel, chunk by chunk,
/// each group of four rows goes through [`q4k_x4_span`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv_q4k_x4_impl(
    w: &[u8],
    rows: usize,
    nb: usize,
    r0: usize,
    x: &[BlockQ8K],
    out: &mut [f32],
) {
    // `pshufb` controls: sub-scale j of each row into its quarter as i16.
    // Opaque to LLVM, which otherwise rewrites the shuffles (see gemv_q4k).
    let ctrl: [__m256i; 8] = std::hint::black_box(core::array::from_fn(|j| {
        let (a, b, z) = (j as i8, 8 + j as i8, -128i8);
        _mm256_setr_epi8(
            a, z, a, z, a, z, a, z, b, z, b, z, b, z, b, z, a, z, a, z, a, z, a, z, b, z, b, z, b,
            z, b, z,
        )
    }));
    crate::interleave::gemv_spans(
        w,
        rows,
        nb,
        r0,
        x,
        out,
        // Sums over each 32-value sub-block, twice (one per 128-bit lane).
        |b| -> [i16; 16] {
            core::array::from_fn(|i| b.bsums[2 * (i % 8)] + b.bsums[2 * (i % 8) + 1])
        },
        |span, xs, bs| q4k_x4_span(span, xs, bs, &ctrl),
    );
}

/// Kernel-table entry for [`gemv_q4k_x4_impl`].
pub fn gemv_q4k_x4(w: &[u8], rows: usize, nb: usize, r0: usize, x: &[BlockQ8K], out: &mut [f32]) {
    // SAFETY: this table is installed only when avx2, fma and f16c are detected.
    unsafe { gemv_q4k_x4_impl(w, rows, nb, r0, x, out) }
}

/// Default prefetch distance of [`q4k_x4_span`]: two X4 blocks (576 and
/// 4,608 bytes did less on the Zen 3 VM; see [`prefetch_distances`]).
const X4_PREFETCH_AHEAD: usize = 2 * 576;

/// Four interleaved rows over consecutive blocks. Per block: the 8 sub-scales
/// and 8 mins of all four rows from one 32-byte and one 16-byte load (a few
/// vector ops, no scalar unpack); per 8 weight bytes of each row, `maddubs`
/// against the 8 activations broadcast to all four row quarters; one
/// `madd` per sub-block applies the four rows' scales at once. The float
/// update is one FMA per four rows, lanes `2r, 2r + 1` holding row `r`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4k_x4_span(
    span: &[crate::interleave::X4Block],
    x: &[BlockQ8K],
    bsv: &[[i16; 16]],
    ctrl: &[__m256i; 8],
) -> [f32; 4] {
    let m4 = _mm256_set1_epi8(0x0F);
    let idx_d = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    let idx_m = _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7);
    let mut acc = _mm256_setzero_ps();
    let mut accm = _mm256_setzero_ps();
    let pf = prefetch_distances().1;
    for ((b, xb), bs) in span.iter().zip(x).zip(bsv) {
        // SAFETY: every load below is in bounds of `b` (576 bytes), `xb`
        // (qs: 256 bytes) or `bs` (32 bytes).
        unsafe {
            // The block two ahead in file order (spans follow each other
            // in memory).
            if pf != 0 {
                prefetch_ahead(b, pf);
            }
            let (sc, mn) = x4_scales(b);
            let bsum = _mm256_loadu_si256(bs.as_ptr() as *const __m256i);
            let m02 = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm256_castsi256_si128(mn)), bsum);
            let m13 =
                _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm256_extracti128_si256(mn, 1)), bsum);
            // [r0 r0 r1 r1 | r2 r2 r3 r3], the layout of `acci`.
            let mins = _mm256_hadd_epi32(m02, m13);
            let mut acci = _mm256_setzero_si256();
            let xq = xb.qs.as_ptr();
            for g in 0..4 {
                let mut plo = _mm256_setzero_si256();
                let mut phi = _mm256_setzero_si256();
                for k in 0..4 {
                    // 8 bytes of each row: low nibbles = sub-block 2g,
                    // high = 2g + 1 (at most 4 x 2 x 15 x 127 per i16).
                    let c = 4 * g + k;
                    let wv = _mm256_loadu_si256(b.qs.as_ptr().add(32 * c) as *const __m256i);
                    let lo = _mm256_and_si256(wv, m4);
                    let hn = _mm256_and_si256(_mm256_srli_epi16(wv, 4), m4);
                    let xl =
                        _mm256_set1_epi64x((xq.add(64 * g + 8 * k) as *const i64).read_unaligned());
                    let xh = _mm256_set1_epi64x(
                        (xq.add(64 * g + 32 + 8 * k) as *const i64).read_unaligned(),
                    );
                    plo = _mm256_add_epi16(plo, _mm256_maddubs_epi16(lo, xl));
                    phi = _mm256_add_epi16(phi, _mm256_maddubs_epi16(hn, xh));
                }
                acci = _mm256_add_epi32(
                    acci,
                    _mm256_add_epi32(
                        _mm256_madd_epi16(plo, _mm256_shuffle_epi8(sc, ctrl[2 * g])),
                        _mm256_madd_epi16(phi, _mm256_shuffle_epi8(sc, ctrl[2 * g + 1])),
                    ),
                );
            }
            // [d0..d3, dmin0..dmin3] * d_x
            let dd = _mm256_mul_ps(
                _mm256_cvtph_ps(_mm_loadu_si128(b.d.as_ptr() as *const __m128i)),
                _mm256_set1_ps(xb.d),
            );
            acc = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(acci),
                _mm256_permutevar8x32_ps(dd, idx_d),
                acc,
            );
            accm = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(mins),
                _mm256_permutevar8x32_ps(dd, idx_m),
                accm,
            );
        }
    }
    // Pairwise sums: [r0, r1, r0, r1 | r2, r3, r2, r3].
    let h = _mm256_hadd_ps(_mm256_sub_ps(acc, accm), _mm256_setzero_ps());
    let (lo, hi) = (_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    [
        _mm_cvtss_f32(lo),
        _mm_cvtss_f32(_mm_movehdup_ps(lo)),
        _mm_cvtss_f32(hi),
        _mm_cvtss_f32(_mm_movehdup_ps(hi)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_follows_the_variable_then_the_cpu() {
        let on = (ROW_PREFETCH_AHEAD, X4_PREFETCH_AHEAD);
        assert!(on.0 > 0 && on.1 > 0);
        // Unset or unreadable: on without AVX-512F, off with it.
        assert_eq!(prefetch_choice(None, false), on);
        assert_eq!(prefetch_choice(None, true), (0, 0));
        assert_eq!(prefetch_choice(Some("lots"), false), on);
        assert_eq!(prefetch_choice(Some("lots"), true), (0, 0));
        // Set: the same on every CPU.
        for avx512f in [false, true] {
            assert_eq!(prefetch_choice(Some("0"), avx512f), (0, 0));
            assert_eq!(prefetch_choice(Some("off"), avx512f), (0, 0));
            assert_eq!(prefetch_choice(Some("on"), avx512f), on);
            assert_eq!(prefetch_choice(Some(" 4096 "), avx512f), (4096, 4096));
        }
    }
}
