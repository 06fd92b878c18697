//! Quantizers: f32 rows to stored rows of every weight dtype.

use crate::blocks::*;
use kompakt_format::DType;

/// Quantizes one row `src` (`cols` values) into `out` (the stored row).
pub fn quantize_row(dtype: DType, src: &[f32], importance: Option<&[f32]>, out: &mut [u8]) {
    match dtype {
        DType::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(src) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        DType::F16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(src) {
                o.copy_from_slice(&to_f16_le(*v));
            }
        }
        DType::BF16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(src) {
                o.copy_from_slice(&half::bf16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        DType::U8 | DType::I32 => panic!("{dtype} is not a weight type"),
        _ => {
            let be = dtype.block_elems() as usize;
            let bb = dtype.block_bytes() as usize;
            let mut x = [0f32; QK_K];
            let mut w = [0f32; QK_K];
            for (bi, o) in out.chunks_exact_mut(bb).enumerate() {
                let start = (bi * be).min(src.len());
                let end = ((bi + 1) * be).min(src.len());
                let n = end - start;
                x[..be].fill(0.0);
                x[..n].copy_from_slice(&src[start..end]);
                match importance {
                    Some(imp) => {
                        w[..be].fill(0.0);
                        w[..n].copy_from_slice(&imp[start..end]);
                    }
                    None => {
                        w[..be].fill(0.0);
                        w[..n].fill(1.0);
                    }
                }
                quantize_block(dtype, &x[..be], &w[..be], o);
            }
        }
    }
}

/// Quantizes one block minimising `sum w[i] * (x[i] - q[i])^2`.
pub fn quantize_block(dtype: DType, x: &[f32], w: &[f32], out: &mut [u8]) {
    let _ = (x, w, out);
    unimplemented!("{dtype}: quantizer not yet implemented")
}
