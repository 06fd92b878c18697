//! The kernel table: one set of function pointers picked once at run time.

use crate::blocks::{BlockQ8A32, BlockQ8K};
use std::sync::OnceLock;

/// Dot products of one stored weight row (raw bytes, any alignment) with
/// `x.len()` (1..=4) f32 activation rows; `out.len() == x.len()`.
pub type RowF32Fn = fn(row: &[u8], x: &[&[f32]], out: &mut [f32]);
/// Dot products of one stored quantized weight row with `a.len()` (1..=4)
/// activation rows quantized to [`BlockQ8K`]; `out.len() == a.len()`.
pub type RowQ8Fn = fn(row: &[u8], a: &[&[BlockQ8K]], out: &mut [f32]);
/// Dot products of one stored Q8_0 weight row with `a.len()` (1..=4)
/// activation rows quantized to [`BlockQ8A32`] (one block per weight block).
pub type RowQ8_0Fn = fn(row: &[u8], a: &[&[BlockQ8A32]], out: &mut [f32]);

/// Panel kernel for mat-mat: `out[j * nw + i]` = weight row `i` (of the `nw`
/// rows stored back to back in `w`, `w.len() / nw` bytes each) dotted with
/// activation row `j` of `a` (any count); `out.len() >= nw * a.len()`.
/// Register-blocked over several weight and activation rows; with one
/// activation row (mat-vec) a loop over the weight rows with the row kernel
/// inlined (`matmul` uses it for every `n = 1` product).
pub type GemmQ8Fn = fn(w: &[u8], nw: usize, a: &[&[BlockQ8K]], out: &mut [f32]);
/// Q4KX4 mat-vec: `out[i]` = row `r0 + i` of the whole interleaved matrix
/// `w` (`rows` rows, `nb` blocks per row) dotted with `x`; `r0` starts a
/// panel (`interleave::PANEL_ROWS`) and `r0 + out.len()` ends one or is `rows`.
/// Q4KX4 mat-mat: `out[j * nw + i]` = row `r0 + i` (of the whole
/// interleaved matrix `w`) dotted with activation row `j` of `a`; `r0` and
/// `nw` are multiples of 4.
pub type GemmX4Fn =
    fn(w: &[u8], rows: usize, nb: usize, r0: usize, nw: usize, a: &[&[BlockQ8K]], out: &mut [f32]);
pub type GemvX4Fn =
    fn(w: &[u8], rows: usize, nb: usize, r0: usize, x: &[BlockQ8K], out: &mut [f32]);
/// [`GemmQ8Fn`] for Q8_0 weights with [`BlockQ8A32`] activations.
pub type GemmQ8_0Fn = fn(w: &[u8], nw: usize, a: &[&[BlockQ8A32]], out: &mut [f32]);

/// Function pointers for every kernel, for one instruction set.
#[derive(Clone, Copy, Debug)]
pub struct KernelTable {
    /// `"avx2"`, `"neon"`, `"neon+dotprod"` or `"scalar"`.
    pub isa: &'static str,
    pub dot: fn(&[f32], &[f32]) -> f32,
    /// `dot` with f16 `b` (attention over an f16 KV cache); equal lengths.
    pub dot_f16: fn(&[f32], &[half::f16]) -> f32,
    pub axpy: fn(f32, &[f32], &mut [f32]),
    /// `axpy` with f16 `x`; equal lengths.
    pub axpy_f16: fn(f32, &[half::f16], &mut [f32]),
    pub row_f32: RowF32Fn,
    pub row_f16: RowF32Fn,
    pub row_bf16: RowF32Fn,
    pub row_q8_0: RowQ8_0Fn,
    pub row_q4k: RowQ8Fn,
    pub row_q3k: RowQ8Fn,
    pub row_q2k: RowQ8Fn,
    pub row_iq2: RowQ8Fn,
    /// Mat-mat panel kernels (`None`: `matmul` calls the row kernels with
    /// up to 4 activation rows per weight row).
    pub gemm_q8_0: Option<GemmQ8_0Fn>,
    pub gemm_q4k: Option<GemmQ8Fn>,
    pub gemm_q3k: Option<GemmQ8Fn>,
    pub gemm_q2k: Option<GemmQ8Fn>,
    pub gemm_iq2: Option<GemmQ8Fn>,
    /// Q4KX4 mat-vec; without it Q4KX4 goes through `row_q4k`/`gemm_q4k`
    /// on rows turned back into Q4K.
    pub gemv_q4k_x4: Option<GemvX4Fn>,
    /// Q4KX4 mat-mat (several activation rows); without it, as above.
    pub gemm_q4k_x4: Option<GemmX4Fn>,
    /// Quantizes one activation row (any length) to `ceil(len/256)` blocks.
    pub quantize_q8k: fn(&[f32], &mut [BlockQ8K]),
    /// Quantizes one activation row (any length) to `ceil(len/32)` blocks
    /// (the activations of Q8_0 weights).
    pub quantize_q8a32: fn(&[f32], &mut [BlockQ8A32]),
}

/// The safe scalar reference table.
pub fn scalar_kernels() -> &'static KernelTable {
    &crate::scalar::TABLE
}

/// The best table for this CPU, ignoring `KOMPAKT_FORCE_SCALAR`.
pub fn best_kernels() -> &'static KernelTable {
    static BEST: OnceLock<&'static KernelTable> = OnceLock::new();
    BEST.get_or_init(detect)
}

/// The table every public entry point uses: [`best_kernels`], or the scalar
/// one when the environment variable `KOMPAKT_FORCE_SCALAR` is `1`/`true`.
/// `KOMPAKT_NO_PANELS=1` drops the panel kernels (`gemm_*`) and the Q4KX4
/// ones, so `matmul` calls the per-row kernels for every `n`, mat-vec
/// included (A/B comparisons; Q4KX4 rows are turned back into Q4K).
pub fn kernels() -> &'static KernelTable {
    static CHOSEN: OnceLock<&'static KernelTable> = OnceLock::new();
    static NO_PANELS: OnceLock<KernelTable> = OnceLock::new();
    CHOSEN.get_or_init(|| {
        let flag = |k: &str| {
            std::env::var(k)
                .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
                .unwrap_or(false)
        };
        let t = if flag("KOMPAKT_FORCE_SCALAR") {
            scalar_kernels()
        } else {
            best_kernels()
        };
        if flag("KOMPAKT_NO_PANELS") {
            NO_PANELS.get_or_init(|| KernelTable {
                gemm_q8_0: None,
                gemm_q4k: None,
                gemm_q3k: None,
                gemm_q2k: None,
                gemm_iq2: None,
                gemv_q4k_x4: None,
                gemm_q4k_x4: None,
                ..*t
            })
        } else {
            t
        }
    })
}

#[cfg(target_arch = "x86_64")]
fn detect() -> &'static KernelTable {
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        &crate::x86_64::avx2::TABLE
    } else {
        scalar_kernels()
    }
}

#[cfg(target_arch = "aarch64")]
fn detect() -> &'static KernelTable {
    if std::arch::is_aarch64_feature_detected!("neon") {
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            &crate::aarch64::neon::TABLE_DOTPROD
        } else {
            &crate::aarch64::neon::TABLE
        }
    } else {
        scalar_kernels()
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detect() -> &'static KernelTable {
    scalar_kernels()
}
