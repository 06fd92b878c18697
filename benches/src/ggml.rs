//! ggml peers through `llama-cpp-sys-2`: `ggml_quantize_chunk` to quantize,
//! the CPU type traits' `from_float` / `vec_dot` for the mat-vec loop.

use kompakt_format::DType;
use llama_cpp_sys_2 as sys;
use rayon::prelude::*;
use std::ffi::c_void;

/// ggml types nearest to each kompakt type (IQ2 has two neighbours).
pub fn peers(dt: DType) -> Vec<(&'static str, sys::ggml_type)> {
    match dt {
        DType::Q8_0 => vec![("Q8_0", sys::GGML_TYPE_Q8_0)],
        DType::Q4K => vec![("Q4_K", sys::GGML_TYPE_Q4_K)],
        DType::Q3K => vec![("Q3_K", sys::GGML_TYPE_Q3_K)],
        DType::Q2K => vec![("Q2_K", sys::GGML_TYPE_Q2_K)],
        DType::IQ2 => vec![
            ("IQ2_XXS", sys::GGML_TYPE_IQ2_XXS),
            ("IQ2_XS", sys::GGML_TYPE_IQ2_XS),
        ],
        _ => vec![],
    }
}

pub fn init() {
    // SAFETY: plain initialisation calls without arguments.
    unsafe { sys::ggml_cpu_init() };
}

pub fn row_bytes(ty: sys::ggml_type, cols: usize) -> usize {
    // SAFETY: pure size computation.
    unsafe { sys::ggml_row_size(ty, cols as i64) }
}

pub fn bpw(ty: sys::ggml_type, cols: usize) -> f64 {
    row_bytes(ty, cols) as f64 * 8.0 / cols as f64
}

/// Quantizes `[rows, cols]` (cols a multiple of 256 for the K and IQ
/// types) with `ggml_quantize_chunk`, in parallel chunks of rows; a uniform
/// importance is passed to the types that require one (iq2_xxs, iq2_xs).
pub fn quantize(
    ty: sys::ggml_type,
    src: &[f32],
    rows: usize,
    cols: usize,
    imp: Option<&[f32]>,
) -> Vec<u8> {
    assert_eq!(src.len(), rows * cols);
    let ones = vec![1f32; cols];
    // SAFETY: initialisation of the type's tables (idempotent, not thread-safe: done here once).
    let need = unsafe {
        sys::ggml_quantize_init(ty);
        sys::ggml_quantize_requires_imatrix(ty)
    };
    let imp = imp.or(if need { Some(&ones[..]) } else { None });
    if let Some(v) = imp {
        assert_eq!(v.len(), cols);
    }
    let rb = row_bytes(ty, cols);
    let mut dst = vec![0u8; rows * rb];
    let per = 16;
    dst.par_chunks_mut(per * rb)
        .enumerate()
        .for_each(|(ci, d)| {
            let nr = d.len() / rb;
            let s = &src[ci * per * cols..(ci * per + nr) * cols];
            // SAFETY: s holds nr*cols floats, d nr*rb bytes, imp cols floats.
            let n = unsafe {
                sys::ggml_quantize_chunk(
                    ty,
                    s.as_ptr(),
                    d.as_mut_ptr() as *mut c_void,
                    0,
                    nr as i64,
                    cols as i64,
                    imp.map_or(std::ptr::null(), |v| v.as_ptr()),
                )
            };
            assert_eq!(n, d.len());
        });
    dst
}

pub fn dequantize(ty: sys::ggml_type, data: &[u8], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    let rb = row_bytes(ty, cols);
    // SAFETY: the type traits are static; each row has rb bytes and cols outputs.
    unsafe {
        let tr = sys::ggml_get_type_traits(ty);
        let f = (*tr).to_float.expect("to_float");
        for r in 0..rows {
            f(
                data[r * rb..].as_ptr() as *const c_void,
                out[r * cols..].as_mut_ptr(),
                cols as i64,
            );
        }
    }
    out
}

/// Seconds per mat-vec `y = W x` with ggml's `vec_dot` on `threads`,
/// including the quantization of `x` to the type's `vec_dot_type` (q8_K /
/// q8_0) with its `from_float`, as kompakt's `matmul` includes its own.
pub fn matvec_secs(
    ty: sys::ggml_type,
    data: &[u8],
    rows: usize,
    cols: usize,
    threads: usize,
    reps: usize,
) -> f64 {
    let x = crate::gaussian(2, cols);
    // SAFETY: static type traits.
    let (vd, from, vdt) = unsafe {
        let tr = sys::ggml_get_type_traits_cpu(ty);
        let vdt = (*tr).vec_dot_type;
        let from = (*sys::ggml_get_type_traits_cpu(vdt))
            .from_float
            .expect("from_float");
        ((*tr).vec_dot.expect("vec_dot"), from, vdt)
    };
    let mut xq = vec![0u8; row_bytes(vdt, cols)];
    let rb = row_bytes(ty, cols);
    assert!(data.len() >= rows * rb);
    let mut y = vec![0f32; rows];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let chunk = rows.div_ceil(threads * 8).max(1);
    pool.install(|| {
        crate::time_best(
            || {
                // SAFETY: x has cols floats, xq the row size of vec_dot_type.
                unsafe { from(x.as_ptr(), xq.as_mut_ptr() as *mut c_void, cols as i64) };
                let xq = &xq;
                y.par_chunks_mut(chunk).enumerate().for_each(|(ci, yc)| {
                    for (j, o) in yc.iter_mut().enumerate() {
                        let r = ci * chunk + j;
                        // SAFETY: row r has rb bytes (checked); xq is the matching activation row.
                        unsafe {
                            vd(
                                cols as i32,
                                o,
                                0,
                                data[r * rb..].as_ptr() as *const c_void,
                                0,
                                xq.as_ptr() as *const c_void,
                                0,
                                1,
                            )
                        };
                    }
                })
            },
            reps,
            0.3,
        )
    })
}

/// A full-size ggml weight made by repeating 64 quantized rows.
pub fn weight(ty: sys::ggml_type, rows: usize, cols: usize) -> Vec<u8> {
    let s = 64.min(rows);
    crate::tile_rows(
        &quantize(ty, &crate::gaussian(1, s * cols), s, cols, None),
        s,
        rows,
    )
}

/// `y = W x` for one activation row with ggml's own path: `x` quantized to
/// the type's `vec_dot_type` (q8_0 for Q8_0, q8_K for the K/IQ types) with
/// `from_float`, then `vec_dot` per row. `cols` must suit the type's block.
pub fn matvec(ty: sys::ggml_type, data: &[u8], rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), cols);
    let rb = row_bytes(ty, cols);
    assert!(data.len() >= rows * rb);
    // SAFETY: static type traits; x has cols floats, xq the row size of vec_dot_type,
    // every weight row rb bytes.
    unsafe {
        let tr = sys::ggml_get_type_traits_cpu(ty);
        let vdt = (*tr).vec_dot_type;
        let from = (*sys::ggml_get_type_traits_cpu(vdt))
            .from_float
            .expect("from_float");
        let vd = (*tr).vec_dot.expect("vec_dot");
        let mut xq = vec![0u8; row_bytes(vdt, cols)];
        from(x.as_ptr(), xq.as_mut_ptr() as *mut c_void, cols as i64);
        (0..rows)
            .map(|r| {
                let mut o = 0f32;
                vd(
                    cols as i32,
                    &mut o,
                    0,
                    data[r * rb..].as_ptr() as *const c_void,
                    0,
                    xq.as_ptr() as *const c_void,
                    0,
                    1,
                );
                o
            })
            .collect()
    }
}
