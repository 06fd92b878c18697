//! Quantized block formats, quantizers and matrix kernels for kompakt.
//!
//! Weights are row-major `[rows = out features, cols = in features]`, stored as
//! whole blocks per row (see `format-spec/FORMAT.md`, "Quantized block layouts"). The public entry
//! points ([`matmul`], [`dequantize`], [`quantize`], [`dot`], [`axpy`]) use the
//! kernel table picked once at run time ([`kernels`]): AVX2+FMA+F16C on x86_64,
//! NEON (+ `sdot` when the CPU has `dotprod`) on aarch64, the safe scalar
//! reference in [`scalar`] otherwise or when `KOMPAKT_FORCE_SCALAR=1`.
//! The AVX2 mat-vec kernels prefetch the weight stream ahead of use on CPUs
//! without AVX-512F (where that measured faster); `KOMPAKT_PREFETCH=0`, `on`
//! or a distance in bytes overrides that choice.
//!
//! Quantized weights are multiplied with activations quantized to 8 bits
//! using integer dot products, at ggml's granularity: Q8_0 weights with
//! [`blocks::BlockQ8A32`] (one f32 scale per 32, ggml's `q8_0`), the K and
//! IQ2 types with [`blocks::BlockQ8K`] (one f32 scale per 256, ggml's
//! `q8_K`); float weights use f32 activations.

// Kernels index several arrays by one position; iterator chains hide that.
#![allow(clippy::needless_range_loop)]

pub mod blocks;
pub mod interleave;
pub mod iq2_grid;
pub mod lut2;
pub mod probe;
pub mod quantize;
pub mod scalar;
mod table;

#[cfg(target_arch = "x86_64")]
pub mod x86_64;

#[cfg(target_arch = "aarch64")]
pub mod aarch64;

pub use kompakt_format::DType;
pub use table::{
    best_kernels, kernels, scalar_kernels, GemmQ8Fn, GemmQ8_0Fn, GemmX4Fn, GemvX4Fn, KernelTable,
    RowF32Fn, RowQ8Fn, RowQ8_0Fn,
};

use blocks::{BlockQ8A32, BlockQ8K};
use bytemuck::Zeroable;
use rayon::prelude::*;

/// Errors of the kernel API.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelError {
    /// The weight bytes do not match `dtype.storage_bytes([rows, cols])`.
    #[error("weight data is {got} bytes, {dtype} [{rows}, {cols}] needs {expected}")]
    LengthMismatch {
        dtype: DType,
        rows: usize,
        cols: usize,
        expected: u64,
        got: usize,
    },
    /// The size of the tensor overflows `u64`/`usize`.
    #[error("tensor size overflows")]
    Overflow,
    /// The dtype has no kernels (U8, I32).
    #[error("dtype {0} is not a weight type")]
    Unsupported(DType),
    /// `src` is not `rows * cols` long.
    #[error("source has {got} values, expected {expected}")]
    SourceLength { expected: usize, got: usize },
    /// The importance vector is not `cols` long or has negative / non-finite values.
    #[error("importance vector must have {cols} finite non-negative values")]
    BadImportance { cols: usize },
    /// The shape cannot be stored in the dtype (`DType::shape_error`).
    #[error("{0}")]
    BadShape(String),
}

/// A borrowed weight matrix `[rows, cols]` in any weight dtype.
#[derive(Clone, Copy, Debug)]
pub struct WeightRef<'a> {
    pub dtype: DType,
    pub data: &'a [u8],
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
}

impl<'a> WeightRef<'a> {
    /// Checks that `data` holds exactly `dtype.storage_bytes([rows, cols])`
    /// bytes. `data` needs no alignment.
    pub fn new(
        dtype: DType,
        data: &'a [u8],
        rows: usize,
        cols: usize,
    ) -> Result<Self, KernelError> {
        if !is_weight_type(dtype) {
            return Err(KernelError::Unsupported(dtype));
        }
        if let Some(e) = dtype.shape_error(&[rows as u64, cols as u64]) {
            return Err(KernelError::BadShape(e));
        }
        let expected = dtype
            .storage_bytes(&[rows as u64, cols as u64])
            .ok_or(KernelError::Overflow)?;
        if usize::try_from(expected).map_err(|_| KernelError::Overflow)? != data.len() {
            return Err(KernelError::LengthMismatch {
                dtype,
                rows,
                cols,
                expected,
                got: data.len(),
            });
        }
        Ok(WeightRef {
            dtype,
            data,
            rows,
            cols,
        })
    }

    /// Bytes of one stored row.
    pub fn row_bytes(&self) -> usize {
        row_bytes(self.dtype, self.cols)
    }

    /// The stored bytes of row `r` (not for [`DType::Q4KX4`], whose rows
    /// are interleaved: see [`interleave::row`]).
    pub fn row(&self, r: usize) -> &'a [u8] {
        assert!(
            self.dtype.group_rows() == 1,
            "{} has no contiguous rows",
            self.dtype
        );
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }
}

fn is_weight_type(d: DType) -> bool {
    !matches!(d, DType::U8 | DType::I32)
}

/// Bytes of one row of `cols` values, padded to whole blocks.
pub fn row_bytes(dtype: DType, cols: usize) -> usize {
    cols.div_ceil(dtype.block_elems() as usize) * dtype.block_bytes() as usize
}

/// Number of [`BlockQ8K`] activation blocks per row of `cols` values.
pub fn q8k_blocks(cols: usize) -> usize {
    cols.div_ceil(blocks::QK_K)
}

/// Number of [`BlockQ8A32`] activation blocks per row of `cols` values.
pub fn q8a32_blocks(cols: usize) -> usize {
    cols.div_ceil(blocks::QK8_0)
}

/// `y[i*rows + r] = sum_c x[i*cols + c] * W[r, c]` for `i in 0..n`.
///
/// Runs on rayon's current pool. With few activation rows (decode), split
/// over output rows, each weight row decoded once per group of up to 4
/// activation rows; with more (prefill, audio encoder) and a table with
/// panel kernels, a 2-D split into panels of weight rows x activation rows,
/// each panel register-blocked (see [`GemmQ8Fn`]) and written straight
/// into `y`.
/// Panics if `x` or `y` are shorter than `n*cols` / `n*rows`.
pub fn matmul(w: &WeightRef, x: &[f32], n: usize, y: &mut [f32]) {
    matmul_with(kernels(), w, x, n, y)
}

/// [`matmul`] with an explicit kernel table (tests compare tables).
pub fn matmul_with(t: &KernelTable, w: &WeightRef, x: &[f32], n: usize, y: &mut [f32]) {
    let (rows, cols) = (w.rows, w.cols);
    assert!(
        x.len() >= n * cols,
        "x has {} values, need {}",
        x.len(),
        n * cols
    );
    assert!(
        y.len() >= n * rows,
        "y has {} values, need {}",
        y.len(),
        n * rows
    );
    if n == 0 || rows == 0 {
        return;
    }
    let y = &mut y[..n * rows];
    if cols == 0 {
        y.fill(0.0);
        return;
    }
    match w.dtype {
        DType::F32 | DType::F16 | DType::BF16 => {
            let f = match w.dtype {
                DType::F32 => t.row_f32,
                DType::F16 => t.row_f16,
                _ => t.row_bf16,
            };
            let xs: Vec<&[f32]> = (0..n).map(|i| &x[i * cols..(i + 1) * cols]).collect();
            run_rows(w, &xs, y, f);
        }
        DType::U8 | DType::I32 => panic!("matmul: {} is not a weight type", w.dtype),
        DType::Q8_0 => {
            let nb = q8a32_blocks(cols);
            let mut act = vec![BlockQ8A32::zeroed(); n * nb];
            act.par_chunks_mut(nb)
                .zip(x[..n * cols].par_chunks(cols))
                .for_each(|(a, xr)| (t.quantize_q8a32)(xr, a));
            let acts: Vec<&[BlockQ8A32]> = act.chunks(nb).collect();
            match t.gemm_q8_0 {
                Some(g) if n == 1 => run_gemv(w, &acts, y, g),
                Some(g) if n >= PANEL_MIN_N_Q8_0 => run_row_panels(w, &acts, y, g),
                _ => run_rows(w, &acts, y, t.row_q8_0),
            }
        }
        DType::Q4KX4 => {
            let nb = q8k_blocks(cols);
            let act = quantize_acts_q8k(t, x, n, cols);
            let acts: Vec<&[BlockQ8K]> = act.chunks(nb).collect();
            match (t.gemv_q4k_x4, t.gemm_q4k_x4) {
                // Below the panel threshold one mat-vec per activation row
                // is faster (n = 2, 3: 141 against 68-74 GFLOP/s for the
                // panels; AVX2, 4096x4096 in L3, 1 thread).
                (Some(g), _) if n < PANEL_MIN_N => {
                    for (a, yr) in acts.iter().zip(y.chunks_exact_mut(rows)) {
                        run_gemv_x4(w, a, yr, g);
                    }
                }
                (_, Some(g)) if n > 1 => {
                    run_panels(w, &acts, y, interleave::GROUP_ROWS, |r0, pw, a, out| {
                        g(w.data, rows, nb, r0, pw, a, out)
                    })
                }
                _ => run_x4_as_rows(t, w, &acts, y),
            }
        }
        _ => {
            let f = row_q8_fn(t, w.dtype);
            let nb = q8k_blocks(cols);
            let act = quantize_acts_q8k(t, x, n, cols);
            let acts: Vec<&[BlockQ8K]> = act.chunks(nb).collect();
            match gemm_q8_fn(t, w.dtype) {
                Some(g) if n == 1 => run_gemv(w, &acts, y, g),
                Some(g) if n >= PANEL_MIN_N => run_row_panels(w, &acts, y, g),
                _ => run_rows(w, &acts, y, f),
            }
        }
    }
}

/// The `n` rows of `x` quantized to [`BlockQ8K`], row after row.
fn quantize_acts_q8k(t: &KernelTable, x: &[f32], n: usize, cols: usize) -> Vec<BlockQ8K> {
    let nb = q8k_blocks(cols);
    let mut act = vec![BlockQ8K::zeroed(); n * nb];
    act.par_chunks_mut(nb)
        .zip(x[..n * cols].par_chunks(cols))
        .for_each(|(a, xr)| (t.quantize_q8k)(xr, a));
    act
}

/// Q4KX4 mat-vec: tiles of whole panels in parallel, each one call of the
/// table's interleaved kernel.
fn run_gemv_x4(w: &WeightRef, x: &[BlockQ8K], y: &mut [f32], g: GemvX4Fn) {
    let tile = gemv_tile(w.rows).next_multiple_of(interleave::PANEL_ROWS);
    let nb = q8k_blocks(w.cols);
    y.par_chunks_mut(tile)
        .enumerate()
        .for_each(|(ti, yt)| g(w.data, w.rows, nb, ti * tile, x, yt));
}

/// Q4KX4 on a table without its kernels (scalar, NEON mat-mat, or
/// `KOMPAKT_NO_PANELS`): tiles of whole panels in parallel, each turned back
/// into row-major Q4K and multiplied by [`run_rows`] with the Q4K row kernel.
/// (Every table with a Q4K panel kernel also has the Q4KX4 ones.)
fn run_x4_as_rows(t: &KernelTable, w: &WeightRef, acts: &[&[BlockQ8K]], y: &mut [f32]) {
    let (rows, n, nb) = (w.rows, acts.len(), q8k_blocks(w.cols));
    let tile = gemv_tile(rows).next_multiple_of(interleave::PANEL_ROWS);
    let yp = OutPtr(y.as_mut_ptr());
    (0..rows.div_ceil(tile)).into_par_iter().for_each(|ti| {
        let yp = &yp;
        let r0 = ti * tile;
        let tr = tile.min(rows - r0);
        let mut q = vec![blocks::BlockQ4K::zeroed(); tr * nb];
        interleave::rows_q4k(w.data, rows, nb, r0, &mut q);
        let tw = WeightRef {
            dtype: DType::Q4K,
            data: bytemuck::cast_slice(&q),
            rows: tr,
            cols: w.cols,
        };
        let mut buf = vec![0f32; tr * n];
        run_rows(&tw, acts, &mut buf, t.row_q4k);
        // SAFETY: y has rows*n elements (checked by `matmul`); this task
        // alone writes y[j*rows + r0 .. + tr] (its rows are its own).
        unsafe { yp.write_rect(&buf, rows, r0, tr, 0) };
    });
}

fn row_q8_fn(t: &KernelTable, d: DType) -> RowQ8Fn {
    match d {
        DType::Q4K => t.row_q4k,
        DType::Q3K => t.row_q3k,
        DType::Q2K => t.row_q2k,
        DType::IQ2 => t.row_iq2,
        _ => unreachable!(),
    }
}

/// Fewest activation rows for which `matmul` uses the panel kernels of the
/// K/IQ2 types (below, the row kernels are as fast: AVX2, Zen 4, 4096x4096).
const PANEL_MIN_N: usize = 4;
/// The same for Q8_0 (its panels convert the weight scales per panel; at
/// n = 8 the row kernels were faster, at 12 and 16 the panels).
const PANEL_MIN_N_Q8_0: usize = 12;

fn gemm_q8_fn(t: &KernelTable, d: DType) -> Option<GemmQ8Fn> {
    match d {
        DType::Q4K => t.gemm_q4k,
        DType::Q3K => t.gemm_q3k,
        DType::Q2K => t.gemm_q2k,
        DType::IQ2 => t.gemm_iq2,
        _ => None,
    }
}

/// A panel kernel over activation blocks `A` ([`GemmQ8Fn`], [`GemmQ8_0Fn`]).
type PanelFn<A> = fn(&[u8], usize, &[&[A]], &mut [f32]);

/// `y` as a raw pointer shared by the panel tasks (each writes its own
/// disjoint rectangle).
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint elements only (see `run_panels`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Copies a task's result `buf` (`out[j * pw + i]`: weight rows
    /// `r0..r0 + pw` against activation rows `a0..a0 + buf.len() / pw`) into
    /// its rectangle of `y` (`y[(a0 + j) * rows + r0 + i]`).
    ///
    /// # Safety
    /// `y` has room for every element written, and no other task writes or
    /// reads that rectangle while this runs.
    unsafe fn write_rect(&self, buf: &[f32], rows: usize, r0: usize, pw: usize, a0: usize) {
        for (j, part) in buf.chunks_exact(pw).enumerate() {
            // SAFETY: the caller's contract.
            unsafe {
                core::ptr::copy_nonoverlapping(part.as_ptr(), self.0.add((a0 + j) * rows + r0), pw)
            };
        }
    }
}

/// Mat-mat driver for the panel kernels: a 2-D split of (weight rows x
/// activation rows) into panels run in parallel; each panel's result goes
/// straight into its rectangle of `y` (no [rows, n] transpose buffer).
fn run_row_panels<A: Sync>(w: &WeightRef, acts: &[&[A]], y: &mut [f32], f: PanelFn<A>) {
    let rb = w.row_bytes();
    run_panels(w, acts, y, 1, |r0, pw, a, out| {
        f(&w.data[r0 * rb..(r0 + pw) * rb], pw, a, out)
    })
}

/// The 2-D split of [`run_row_panels`]; `f(r0, pw, acts, out)` computes
/// weight rows `r0..r0 + pw` (`r0` and `pw` multiples of `align`, or `pw`
/// the rest of the rows) against `acts` into `out[j * pw + i]`.
fn run_panels<A: Sync>(
    w: &WeightRef,
    acts: &[&[A]],
    y: &mut [f32],
    align: usize,
    f: impl Fn(usize, usize, &[&[A]], &mut [f32]) + Sync,
) {
    let (rows, n) = (w.rows, acts.len());
    assert!(y.len() >= rows * n);
    let rb = w.row_bytes();
    let threads = rayon::current_num_threads().max(1);
    // Activation rows per panel: ~256 KiB of quantized activations, at least
    // 64 (they stay in L2 while the panel's weight rows stream past; more
    // rows per panel = fewer repeats of the panel's weight unpacking);
    // weight rows per panel: ~96 KiB of weights, at least 4, fewer when that
    // leaves too few panels for load balance.
    let arow = core::mem::size_of_val(acts[0]).max(1);
    let na = n.min((256 * 1024 / arow).max(64));
    let ablocks = n.div_ceil(na);
    let mut nw = (96 * 1024 / rb.max(1)).clamp(4, 256).min(rows);
    while nw > 4 && rows.div_ceil(nw) * ablocks < 4 * threads {
        nw = (nw / 2).max(4);
    }
    let nw = (nw - nw % align).max(align).max(1);
    let rblocks = rows.div_ceil(nw);
    let yp = OutPtr(y.as_mut_ptr());
    (0..rblocks * ablocks).into_par_iter().for_each(|t| {
        // Capture the whole `OutPtr` (Sync), not its raw-pointer field.
        let yp = &yp;
        // Consecutive tasks share one weight panel.
        let (ri, ai) = (t / ablocks, t % ablocks);
        let (r0, a0) = (ri * nw, ai * na);
        let (pw, pa) = (nw.min(rows - r0), na.min(n - a0));
        let mut buf = vec![0f32; pw * pa];
        f(r0, pw, &acts[a0..a0 + pa], &mut buf);
        // SAFETY: y has rows*n elements (asserted); this task alone writes
        // y[(a0+j)*rows + r0 .. + pw] (its weight-row and activation-row
        // ranges are disjoint from every other task's rectangle).
        unsafe { yp.write_rect(&buf, rows, r0, pw, a0) };
    });
}

/// Weight rows per parallel task of a mat-vec: enough tasks for load
/// balance (8 per thread), at most 256 rows.
fn gemv_tile(rows: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    rows.div_ceil(threads * 8).clamp(1, 256)
}

/// Mat-vec driver for the panel kernels (one activation row): tiles of
/// [`gemv_tile`] weight rows in parallel, each one panel call writing its
/// slice of `y`.
fn run_gemv<A: Sync>(w: &WeightRef, acts: &[&[A]], y: &mut [f32], f: PanelFn<A>) {
    let rb = w.row_bytes();
    let tile = gemv_tile(w.rows);
    y.par_chunks_mut(tile).enumerate().for_each(|(ti, yt)| {
        let r0 = ti * tile;
        f(&w.data[r0 * rb..(r0 + yt.len()) * rb], yt.len(), acts, yt);
    });
}

/// Shared driver: tiles of weight rows in parallel; within a tile, groups of
/// up to 4 activation rows, each weight row decoded once per group.
fn run_rows<A: Sync>(
    w: &WeightRef,
    acts: &[&[A]],
    y: &mut [f32],
    f: impl Fn(&[u8], &[&[A]], &mut [f32]) + Sync,
) {
    let (rows, n) = (w.rows, acts.len());
    let rb = w.row_bytes();
    let threads = rayon::current_num_threads().max(1);
    // Tile: at most ~192 KiB of weights (stays in L2 while the activation
    // groups sweep over it), and enough tiles for load balance.
    let by_cache = (192 * 1024 / rb.max(1)).max(1);
    let by_balance = rows.div_ceil(threads * 8).max(1);
    let tile = if n == 1 {
        gemv_tile(rows)
    } else {
        by_cache.min(by_balance).min(64)
    };
    if n == 1 {
        y.par_chunks_mut(tile).enumerate().for_each(|(ti, yt)| {
            let r0 = ti * tile;
            for (j, out) in yt.iter_mut().enumerate() {
                let mut o = [0f32; 1];
                f(w.row(r0 + j), acts, &mut o);
                *out = o[0];
            }
        });
        return;
    }
    // Compute into a row-major [rows, n] buffer, then transpose into y.
    let mut tmp = vec![0f32; rows * n];
    tmp.par_chunks_mut(tile * n)
        .enumerate()
        .for_each(|(ti, t)| {
            let r0 = ti * tile;
            let tr = t.len() / n;
            let mut o = [0f32; 4];
            for i0 in (0..n).step_by(4) {
                let g = (n - i0).min(4);
                for j in 0..tr {
                    f(w.row(r0 + j), &acts[i0..i0 + g], &mut o[..g]);
                    t[j * n + i0..j * n + i0 + g].copy_from_slice(&o[..g]);
                }
            }
        });
    y.par_chunks_mut(rows).enumerate().for_each(|(i, yr)| {
        for (r, v) in yr.iter_mut().enumerate() {
            *v = tmp[r * n + i];
        }
    });
}

/// Dequantizes row `row` of `w` into `out[..cols]` (embedding lookup).
pub fn dequantize_row(w: &WeightRef, row: usize, out: &mut [f32]) {
    assert!(row < w.rows, "row {row} out of {}", w.rows);
    assert!(out.len() >= w.cols);
    if w.dtype == DType::Q4KX4 {
        let mut q = vec![blocks::BlockQ4K::zeroed(); q8k_blocks(w.cols)];
        interleave::row(w.data, w.rows, q.len(), row, &mut q);
        scalar::dequantize_row(DType::Q4K, bytemuck::cast_slice(&q), &mut out[..w.cols]);
        return;
    }
    scalar::dequantize_row(w.dtype, w.row(row), &mut out[..w.cols]);
}

/// Dequantizes all of `w` into `out[..rows*cols]`.
pub fn dequantize(w: &WeightRef, out: &mut [f32]) {
    assert!(out.len() >= w.rows * w.cols);
    if w.cols == 0 {
        return;
    }
    if w.dtype == DType::Q4KX4 {
        let nb = q8k_blocks(w.cols);
        let g = interleave::GROUP_ROWS;
        out[..w.rows * w.cols]
            .par_chunks_mut(g * w.cols)
            .enumerate()
            .for_each(|(i, o)| {
                let mut q = vec![blocks::BlockQ4K::zeroed(); g * nb];
                interleave::rows_q4k(w.data, w.rows, nb, g * i, &mut q);
                let q: &[u8] = bytemuck::cast_slice(&q);
                let rb = row_bytes(DType::Q4K, w.cols);
                for (qr, or) in q.chunks_exact(rb).zip(o.chunks_exact_mut(w.cols)) {
                    scalar::dequantize_row(DType::Q4K, qr, or);
                }
            });
        return;
    }
    out[..w.rows * w.cols]
        .par_chunks_mut(w.cols)
        .enumerate()
        .for_each(|(r, o)| scalar::dequantize_row(w.dtype, w.row(r), o));
}

/// Quantizes a row-major `[rows, cols]` f32 matrix to `dtype`.
///
/// `importance` (length `cols`, e.g. the mean squared activation of each
/// input channel from calibration) weights the squared error the quantizer
/// minimises; without it every weight counts the same. F32/F16/BF16 are
/// plain conversions (importance ignored).
pub fn quantize(
    dtype: DType,
    src: &[f32],
    rows: usize,
    cols: usize,
    importance: Option<&[f32]>,
) -> Result<Vec<u8>, KernelError> {
    if !is_weight_type(dtype) {
        return Err(KernelError::Unsupported(dtype));
    }
    let total = rows.checked_mul(cols).ok_or(KernelError::Overflow)?;
    if src.len() != total {
        return Err(KernelError::SourceLength {
            expected: total,
            got: src.len(),
        });
    }
    if let Some(imp) = importance {
        if imp.len() != cols || imp.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(KernelError::BadImportance { cols });
        }
    }
    if let Some(e) = dtype.shape_error(&[rows as u64, cols as u64]) {
        return Err(KernelError::BadShape(e));
    }
    let bytes = dtype
        .storage_bytes(&[rows as u64, cols as u64])
        .ok_or(KernelError::Overflow)?;
    let mut out = vec![0u8; usize::try_from(bytes).map_err(|_| KernelError::Overflow)?];
    let rb = row_bytes(dtype, cols);
    if rb == 0 || cols == 0 {
        return Ok(out);
    }
    let row_dtype = if dtype == DType::Q4KX4 {
        DType::Q4K
    } else {
        dtype
    };
    out.par_chunks_mut(rb)
        .zip(src.par_chunks(cols))
        .for_each(|(o, s)| quantize::quantize_row(row_dtype, s, importance, o));
    if dtype == DType::Q4KX4 {
        out = interleave::interleave(&out, rows, q8k_blocks(cols));
    }
    Ok(out)
}

/// `sum a[i] * b[i]` over the common length.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    (kernels().dot)(&a[..n], &b[..n])
}

/// `y[i] += a * x[i]` over the common length.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    (kernels().axpy)(a, &x[..n], &mut y[..n])
}

/// [`dot`] with f16 `b`, over the common length.
pub fn dot_f16(a: &[f32], b: &[half::f16]) -> f32 {
    let n = a.len().min(b.len());
    (kernels().dot_f16)(&a[..n], &b[..n])
}

/// [`axpy`] with f16 `x`, over the common length.
pub fn axpy_f16(a: f32, x: &[half::f16], y: &mut [f32]) {
    let n = x.len().min(y.len());
    (kernels().axpy_f16)(a, &x[..n], &mut y[..n])
}
