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
        DType::Q4K | DType::Q4KX4 => vec![("Q4_K", sys::GGML_TYPE_Q4_K)],
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

/// Seconds per mat-mat `Y = X W^T` (`n` f32 activation rows) with ggml's
/// own CPU path: one `ggml_mul_mat` node in a graph computed by
/// `ggml_graph_compute` on `threads` of ggml's threads (llamafile's tinyBLAS
/// where it applies, else ggml's `vec_dot`/`gemm` loops), including the
/// quantization of `X` to the type's `vec_dot_type`, as kompakt's `matmul`.
/// One untimed run, then best of `reps` runs and at least `min_s` seconds.
#[allow(clippy::too_many_arguments)]
pub fn matmat_secs(
    ty: sys::ggml_type,
    data: &[u8],
    rows: usize,
    cols: usize,
    n: usize,
    threads: usize,
    reps: usize,
    min_s: f64,
) -> f64 {
    let rb = row_bytes(ty, cols);
    assert!(data.len() >= rows * rb);
    let mut x = crate::gaussian(2, n * cols);
    let mut y = vec![0f32; n * rows];
    // SAFETY: the context only holds tensor and graph headers (no_alloc);
    // every tensor's data points at a live buffer of its full size (weights
    // rows*rb bytes, x n*cols f32, y n*rows f32) that outlives the compute
    // calls; the work buffer has the planned size.
    unsafe {
        let mem = sys::ggml_tensor_overhead() * 8 + sys::ggml_graph_overhead() + 4096;
        let ctx = sys::ggml_init(sys::ggml_init_params {
            mem_size: mem,
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        });
        assert!(!ctx.is_null());
        let wt = sys::ggml_new_tensor_2d(ctx, ty, cols as i64, rows as i64);
        let xt = sys::ggml_new_tensor_2d(ctx, sys::GGML_TYPE_F32, cols as i64, n as i64);
        (*wt).data = data.as_ptr() as *mut c_void;
        (*xt).data = x.as_mut_ptr() as *mut c_void;
        let yt = sys::ggml_mul_mat(ctx, wt, xt);
        (*yt).data = y.as_mut_ptr() as *mut c_void;
        let gf = sys::ggml_new_graph(ctx);
        sys::ggml_build_forward_expand(gf, yt);
        let mut plan = sys::ggml_graph_plan(gf, threads as i32, std::ptr::null_mut());
        let mut work = vec![0u8; plan.work_size + 64];
        plan.work_data = work.as_mut_ptr();
        let s = crate::time_best(
            || {
                let st = sys::ggml_graph_compute(gf, &mut plan);
                assert_eq!(st, sys::GGML_STATUS_SUCCESS);
            },
            reps,
            min_s,
        );
        sys::ggml_free(ctx);
        s
    }
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

/// llama.cpp itself (model files, contexts, decoding, quantization,
/// importance matrices) through the C API of `llama-cpp-sys-2`.
pub mod llama {
    use super::sys;
    use std::collections::HashMap;
    use std::ffi::{c_char, c_void, CStr, CString};
    use std::path::Path;
    use std::sync::Once;

    unsafe extern "C" fn log_filter(
        level: sys::ggml_log_level,
        text: *const c_char,
        _: *mut c_void,
    ) {
        // Warnings and errors only (llama.cpp logs every tensor while loading).
        if level >= sys::GGML_LOG_LEVEL_WARN && !text.is_null() {
            // SAFETY: llama.cpp passes a NUL-terminated string.
            eprint!("{}", unsafe { CStr::from_ptr(text) }.to_string_lossy());
        }
    }

    /// `llama_backend_init` once, with llama.cpp's info logging silenced.
    pub fn init() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            // SAFETY: global initialisation, done once.
            unsafe {
                sys::llama_log_set(Some(log_filter), std::ptr::null_mut());
                sys::llama_backend_init();
            }
        });
    }

    fn cstr(p: &Path) -> CString {
        CString::new(p.to_string_lossy().as_bytes()).expect("path without NUL")
    }

    /// A loaded GGUF model (memory-mapped, CPU).
    pub struct Model {
        ptr: *mut sys::llama_model,
    }

    // SAFETY: a llama_model is read-only after loading and shared across contexts.
    unsafe impl Send for Model {}
    unsafe impl Sync for Model {}

    impl Model {
        pub fn load(path: &Path) -> Model {
            Model::load_with(path, false).unwrap_or_else(|e| panic!("{e}"))
        }

        /// Loads only the hyperparameters and the tokenizer of a GGUF
        /// (`vocab_only`: no tensor is read).
        pub fn load_vocab_only(path: &Path) -> Result<Model, String> {
            Model::load_with(path, true)
        }

        fn load_with(path: &Path, vocab_only: bool) -> Result<Model, String> {
            init();
            let c = CString::new(path.to_string_lossy().as_bytes())
                .map_err(|_| format!("{}: path contains a NUL byte", path.display()))?;
            // SAFETY: default params (CPU, optionally vocab_only), a valid C path.
            let ptr = unsafe {
                let mut p = sys::llama_model_default_params();
                p.n_gpu_layers = 0;
                p.vocab_only = vocab_only;
                sys::llama_model_load_from_file(c.as_ptr(), p)
            };
            if ptr.is_null() {
                return Err(format!(
                    "llama.cpp could not load {} (see its log above)",
                    path.display()
                ));
            }
            Ok(Model { ptr })
        }

        /// The raw model, for other llama.cpp libraries (libmtmd).
        pub fn as_ptr(&self) -> *const sys::llama_model {
            self.ptr
        }

        /// Width of the input embeddings (`llama_model_n_embd`).
        pub fn n_embd(&self) -> usize {
            // SAFETY: valid model.
            unsafe { sys::llama_model_n_embd(self.ptr) as usize }
        }

        pub fn n_vocab(&self) -> usize {
            // SAFETY: valid model.
            unsafe { sys::llama_vocab_n_tokens(sys::llama_model_get_vocab(self.ptr)) as usize }
        }

        /// Bytes of all tensors (`llama_model_size`).
        pub fn tensor_bytes(&self) -> u64 {
            // SAFETY: valid model.
            unsafe { sys::llama_model_size(self.ptr) }
        }

        pub fn n_params(&self) -> u64 {
            // SAFETY: valid model.
            unsafe { sys::llama_model_n_params(self.ptr) }
        }

        /// Whether llama.cpp would put a BOS token in front of tokenized text.
        pub fn adds_bos(&self) -> bool {
            // SAFETY: valid model.
            unsafe { sys::llama_vocab_get_add_bos(sys::llama_model_get_vocab(self.ptr)) }
        }
    }

    impl Drop for Model {
        fn drop(&mut self) {
            // SAFETY: created by llama_model_load_from_file, freed once.
            unsafe { sys::llama_model_free(self.ptr) }
        }
    }

    /// The eval callback of a context: `(callback, user data)`.
    pub type EvalCallback = (sys::ggml_backend_sched_eval_callback, *mut c_void);

    /// A context (KV cache of `n_ctx` tokens) with one reusable batch.
    pub struct Context<'m> {
        ptr: *mut sys::llama_context,
        batch: sys::llama_batch,
        cap: usize,
        n_vocab: usize,
        _model: &'m Model,
    }

    impl<'m> Context<'m> {
        /// `n_batch` = largest single decode call (also the micro-batch).
        /// `kv_f32`: F32 KV cache and no flash attention (llama.cpp's default
        /// is an F16 cache, flash attention chosen automatically).
        pub fn new(
            model: &'m Model,
            n_ctx: usize,
            n_batch: usize,
            threads: usize,
            kv_f32: bool,
            cb: Option<EvalCallback>,
        ) -> Context<'m> {
            // SAFETY: default params with sizes and an optional callback whose
            // user data outlives the context (the caller's guarantee).
            let ptr = unsafe {
                let mut p = sys::llama_context_default_params();
                p.n_ctx = n_ctx as u32;
                p.n_batch = n_batch as u32;
                p.n_ubatch = n_batch as u32;
                p.n_seq_max = 1;
                p.n_threads = threads as i32;
                p.n_threads_batch = threads as i32;
                p.no_perf = true;
                if kv_f32 {
                    p.type_k = sys::GGML_TYPE_F32;
                    p.type_v = sys::GGML_TYPE_F32;
                    p.flash_attn_type = sys::LLAMA_FLASH_ATTN_TYPE_DISABLED;
                }
                if let Some((f, ud)) = cb {
                    p.cb_eval = f;
                    p.cb_eval_user_data = ud;
                }
                sys::llama_init_from_model(model.ptr, p)
            };
            assert!(!ptr.is_null(), "llama_init_from_model failed");
            // SAFETY: token batch of n_batch tokens, one sequence.
            let batch = unsafe { sys::llama_batch_init(n_batch as i32, 0, 1) };
            Context {
                ptr,
                batch,
                cap: n_batch,
                n_vocab: model.n_vocab(),
                _model: model,
            }
        }

        pub fn set_threads(&mut self, threads: usize) {
            // SAFETY: valid context.
            unsafe { sys::llama_set_n_threads(self.ptr, threads as i32, threads as i32) }
        }

        /// Empties the KV cache.
        pub fn clear(&mut self) {
            // SAFETY: valid context.
            unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.ptr), true) }
        }

        /// Decodes `ids` at positions `pos0..`, sequence 0; logits for every
        /// token (`all`) or the last only. Waits for the result.
        pub fn decode(&mut self, ids: &[u32], pos0: usize, all: bool) {
            assert!(!ids.is_empty() && ids.len() <= self.cap);
            let n = ids.len();
            // SAFETY: the batch was allocated for cap tokens and one sequence id each.
            unsafe {
                let b = &mut self.batch;
                b.n_tokens = n as i32;
                for (i, &id) in ids.iter().enumerate() {
                    *b.token.add(i) = id as sys::llama_token;
                    *b.pos.add(i) = (pos0 + i) as sys::llama_pos;
                    *b.n_seq_id.add(i) = 1;
                    *(*b.seq_id.add(i)) = 0;
                    *b.logits.add(i) = (all || i + 1 == n) as i8;
                }
                let rc = sys::llama_decode(self.ptr, *b);
                assert_eq!(rc, 0, "llama_decode failed ({rc})");
                sys::llama_synchronize(self.ptr);
            }
        }

        /// Logits of the `i`-th token of the last batch that had logits on.
        pub fn logits(&self, i: usize) -> &[f32] {
            // SAFETY: llama.cpp returns n_vocab floats for an output row (null if none).
            unsafe {
                let p = sys::llama_get_logits_ith(self.ptr, i as i32);
                assert!(!p.is_null(), "no logits for row {i}");
                std::slice::from_raw_parts(p, self.n_vocab)
            }
        }

        /// Logits of every position of `ids` (`[len][n_vocab]`), decoded from
        /// an empty cache in chunks of at most the batch size.
        pub fn all_logits(&mut self, ids: &[u32]) -> Vec<f32> {
            self.clear();
            let mut out = Vec::with_capacity(ids.len() * self.n_vocab);
            let mut pos = 0;
            for chunk in ids.chunks(self.cap) {
                self.decode(chunk, pos, true);
                for i in 0..chunk.len() {
                    out.extend_from_slice(self.logits(i));
                }
                pos += chunk.len();
            }
            out
        }
    }

    impl Drop for Context<'_> {
        fn drop(&mut self) {
            // SAFETY: allocated in new, freed once.
            unsafe {
                sys::llama_batch_free(self.batch);
                sys::llama_free(self.ptr);
            }
        }
    }

    /// llama-imatrix's statistics: for every `MUL_MAT` whose weight is a
    /// `blk.*` tensor and whose activation batch has at least 16 rows (f32),
    /// the per-column sum of squared activations and the number of rows,
    /// keyed by the weight's name (output.weight excluded, as without
    /// `--process-output`). The importance is `sum / count`.
    #[derive(Default)]
    pub struct Imatrix {
        pub stats: HashMap<String, (Vec<f32>, u64)>,
        buf: Vec<u8>,
    }

    fn tensor_name(t: &sys::ggml_tensor) -> String {
        // SAFETY: ggml names are NUL-terminated within 64 bytes.
        let n = unsafe { CStr::from_ptr(t.name.as_ptr()) }.to_string_lossy();
        // "CUDA0#blk.0.attn_k.weight#0" -> "blk.0.attn_k.weight"
        match n.split_once('#') {
            Some((_, rest)) => rest.split('#').next().unwrap_or(rest).to_string(),
            None => n.into_owned(),
        }
    }

    /// The `ggml_backend_sched_eval_callback` that fills an [`Imatrix`]
    /// (`user_data` = `*mut Imatrix`).
    ///
    /// # Safety
    /// Called by ggml's scheduler with a valid tensor; `user_data` must point
    /// to a live `Imatrix` used by no one else during decoding.
    pub unsafe extern "C" fn collect(
        t: *mut sys::ggml_tensor,
        ask: bool,
        user_data: *mut c_void,
    ) -> bool {
        // SAFETY: the caller's contract.
        let (t, im) = unsafe { (&*t, &mut *(user_data as *mut Imatrix)) };
        if t.op != sys::GGML_OP_MUL_MAT {
            return !ask;
        }
        // SAFETY: a MUL_MAT node has its weight and activations as sources.
        let (src0, src1) = unsafe { (&*t.src[0], &*t.src[1]) };
        let name = tensor_name(src0);
        if ask {
            return src1.ne[1] >= 16
                && src1.type_ == sys::GGML_TYPE_F32
                && name.starts_with("blk.");
        }
        assert_eq!(src1.nb[0], 4, "{name}: activations not contiguous in a row");
        assert_eq!(
            src0.ne[2] * src0.ne[3],
            1,
            "{name}: 3-D weights not handled"
        );
        let cols = src1.ne[0] as usize;
        // SAFETY: host buffers are read in place, others copied out.
        let base: *const u8 = unsafe {
            if sys::ggml_backend_buffer_is_host(src1.buffer) {
                src1.data as *const u8
            } else {
                let nbytes = sys::ggml_nbytes(src1);
                im.buf.resize(nbytes, 0);
                sys::ggml_backend_tensor_get(src1, im.buf.as_mut_ptr() as *mut c_void, 0, nbytes);
                im.buf.as_ptr()
            }
        };
        let e = im
            .stats
            .entry(name)
            .or_insert_with(|| (vec![0f32; cols], 0));
        assert_eq!(e.0.len(), cols, "inconsistent width");
        for i3 in 0..src1.ne[3] as usize {
            for i2 in 0..src1.ne[2] as usize {
                for r in 0..src1.ne[1] as usize {
                    // SAFETY: offsets within src1's strides.
                    let x = unsafe {
                        std::slice::from_raw_parts(
                            base.add(r * src1.nb[1] + i2 * src1.nb[2] + i3 * src1.nb[3])
                                as *const f32,
                            cols,
                        )
                    };
                    for (s, &v) in e.0.iter_mut().zip(x) {
                        *s += v * v;
                    }
                }
            }
        }
        // SAFETY: valid tensor.
        e.1 += unsafe { sys::ggml_nrows(src1) } as u64;
        true
    }

    impl Imatrix {
        /// Mean squared activation per column of every collected weight.
        pub fn means(&self) -> Vec<(String, Vec<f32>)> {
            let mut v: Vec<(String, Vec<f32>)> = self
                .stats
                .iter()
                .map(|(k, (s, c))| {
                    (
                        k.clone(),
                        s.iter().map(|x| x / (*c).max(1) as f32).collect(),
                    )
                })
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        }

        /// Writes `name\tcount\tv0 v1 ...` lines (sums), for reuse.
        pub fn save(&self, path: &Path) -> std::io::Result<()> {
            let mut s = String::new();
            let mut keys: Vec<&String> = self.stats.keys().collect();
            keys.sort();
            for k in keys {
                let (v, c) = &self.stats[k];
                s.push_str(&format!("{k}\t{c}\t"));
                let vals: Vec<String> = v.iter().map(|x| format!("{x:e}")).collect();
                s.push_str(&vals.join(" "));
                s.push('\n');
            }
            std::fs::write(path, s)
        }

        pub fn load(path: &Path) -> std::io::Result<Imatrix> {
            let mut im = Imatrix::default();
            for line in std::fs::read_to_string(path)?.lines() {
                let mut it = line.split('\t');
                let (Some(k), Some(c), Some(v)) = (it.next(), it.next(), it.next()) else {
                    continue;
                };
                let vals = v
                    .split(' ')
                    .map(|x| x.parse::<f32>().expect("imatrix value"))
                    .collect();
                im.stats
                    .insert(k.to_string(), (vals, c.parse().expect("imatrix count")));
            }
            Ok(im)
        }
    }

    /// `llama_model_quantize(src, dst)` to `ftype` with llama.cpp's default
    /// recipe for that type (e.g. Q4_K_M's Q6_K for output/attn_v/ffn_down
    /// parts), optionally with an importance matrix.
    pub fn quantize(
        src: &Path,
        dst: &Path,
        ftype: sys::llama_ftype,
        imatrix: Option<&Imatrix>,
        threads: usize,
    ) {
        init();
        let means = imatrix.map(|m| m.means()).unwrap_or_default();
        let names: Vec<CString> = means
            .iter()
            .map(|(k, _)| CString::new(k.as_str()).unwrap())
            .collect();
        let mut entries: Vec<sys::llama_model_imatrix_data> = means
            .iter()
            .zip(&names)
            .map(|((_, v), n)| sys::llama_model_imatrix_data {
                name: n.as_ptr(),
                data: v.as_ptr(),
                size: v.len(),
            })
            .collect();
        entries.push(sys::llama_model_imatrix_data {
            name: std::ptr::null(),
            data: std::ptr::null(),
            size: 0,
        });
        let (s, d) = (cstr(src), cstr(dst));
        // SAFETY: paths and the NULL-terminated imatrix array outlive the call.
        let rc = unsafe {
            let mut p = sys::llama_model_quantize_default_params();
            p.nthread = threads as i32;
            p.ftype = ftype;
            if imatrix.is_some() {
                p.imatrix = entries.as_ptr();
            }
            sys::llama_model_quantize(s.as_ptr(), d.as_ptr(), &p)
        };
        assert_eq!(
            rc,
            0,
            "llama_model_quantize {} -> {} failed",
            src.display(),
            dst.display()
        );
    }
}
