//! llama.cpp's multimodal library (libmtmd) through `llama-cpp-sys-2`
//! (feature `mtmd`): Qwen2-Audio's Whisper-style audio encoder and projector
//! from an "mmproj" GGUF, for `peer-encoder`.
//!
//! How libmtmd encodes audio (llama.cpp's `tools/mtmd`, as vendored in
//! `llama-cpp-sys-2` 0.1.161): `mtmd_tokenize` computes the log-mel
//! features (`mtmd_audio_preprocessor_whisper`: the samples plus 30 s of
//! zeros, cut into windows of exactly 3000 frames; an incomplete last window
//! is dropped) and wraps every window in `<|audio_bos|>` / `<|audio_eos|>`,
//! which it tokenizes with the text model's vocabulary; `mtmd_encode_chunk`
//! runs the encoder graph (`clip_graph_whisper_enc`: conv1d x2, 32 blocks
//! without an attention mask, avg-pool, the `qwen2a` linear projector) on one
//! window, always all 3000 frames (750 output rows).

use crate::ggml::llama;
use llama_cpp_sys_2 as sys;
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};
use std::time::Instant;

/// Loader lines worth keeping: the shape and precision of the loaded tower.
const KEEP: [&str; 10] = [
    "projector:",
    "n_embd:",
    "n_head:",
    "n_ff:",
    "n_layer:",
    "projection_dim:",
    "n_mel_bins:",
    "model size:",
    "flash attention is",
    "compute buffer size",
];

static INFO: Mutex<Vec<String>> = Mutex::new(Vec::new());

unsafe extern "C" fn log_cb(level: sys::ggml_log_level, text: *const c_char, _: *mut c_void) {
    if text.is_null() {
        return;
    }
    // SAFETY: libmtmd passes a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    if level >= sys::GGML_LOG_LEVEL_WARN {
        eprint!("{s}");
    } else if KEEP.iter().any(|k| s.contains(k)) {
        if let Ok(mut v) = INFO.lock() {
            v.push(s.trim().to_string());
        }
    }
}

/// The audio encoder of one mmproj file, run on `threads` threads.
pub struct AudioEncoder<'m> {
    ctx: *mut sys::mtmd_context,
    path: PathBuf,
    n_embd: usize,
    _text: &'m llama::Model,
    /// libmtmd's loader lines: projector type, n_embd, n_layer, n_head,
    /// n_ff, projection_dim, model size, flash attention, compute buffer.
    pub info: Vec<String>,
}

/// One encoding of a clip.
pub struct Encoded {
    /// `mtmd_tokenize`: log-mel features of the padded clip (always with 4
    /// threads: libmtmd hard-codes them) and the two marker tokens.
    pub mel_s: f64,
    /// `mtmd_encode_chunk` over every audio chunk: encoder and projector.
    pub encode_s: f64,
    /// Output rows (audio tokens) of each audio chunk.
    pub chunk_tokens: Vec<usize>,
    /// `mtmd_encode_chunk` time of each audio chunk.
    pub chunk_s: Vec<f64>,
    /// Projected rows of the first audio chunk, `[tokens][n_embd]` (empty
    /// unless asked for).
    pub first: Vec<f32>,
}

/// Frees what `mtmd_tokenize` was given and made, on every path.
struct Inputs {
    bitmap: *mut sys::mtmd_bitmap,
    chunks: *mut sys::mtmd_input_chunks,
}

impl Drop for Inputs {
    fn drop(&mut self) {
        // SAFETY: both come from their init functions (or are null, which
        // the free functions accept) and are freed once.
        unsafe {
            sys::mtmd_input_chunks_free(self.chunks);
            sys::mtmd_bitmap_free(self.bitmap);
        }
    }
}

impl<'m> AudioEncoder<'m> {
    /// Loads `mmproj` on the CPU. `text` supplies the vocabulary for the
    /// audio marker tokens (a vocab-only model is enough; a full model's
    /// width is checked against the projector's).
    pub fn new(mmproj: &Path, text: &'m llama::Model, threads: usize) -> Result<Self, String> {
        static LOG: Once = Once::new();
        llama::init();
        // SAFETY: installs a callback that only reads its arguments.
        LOG.call_once(|| unsafe { sys::mtmd_log_set(Some(log_cb), std::ptr::null_mut()) });
        if let Ok(mut v) = INFO.lock() {
            v.clear();
        }
        let c = CString::new(mmproj.to_string_lossy().as_bytes())
            .map_err(|_| format!("{}: path contains a NUL byte", mmproj.display()))?;
        let threads =
            i32::try_from(threads.max(1)).map_err(|_| format!("{threads} threads is too many"))?;
        // SAFETY: default params with CPU only; a valid C path; the text
        // model outlives the context ('m).
        let ctx = unsafe {
            let mut p = sys::mtmd_context_params_default();
            p.use_gpu = false;
            p.print_timings = false;
            p.n_threads = threads;
            sys::mtmd_init_from_file(c.as_ptr(), text.as_ptr(), p)
        };
        if ctx.is_null() {
            return Err(format!(
                "{}: libmtmd could not load the mmproj (see its log above)",
                mmproj.display()
            ));
        }
        let info = INFO.lock().map(|v| v.clone()).unwrap_or_default();
        // The output width (the projector's, `clip_n_mmproj_embd`) is not in
        // libmtmd's C API; its loader logs it. A vocab-only text model has
        // n_embd 0, so libmtmd skips its own width check.
        let width = info
            .iter()
            .find_map(|l| l.split("projection_dim:").nth(1))
            .and_then(|v| v.trim().parse::<usize>().ok());
        let enc = AudioEncoder {
            ctx,
            path: mmproj.to_path_buf(),
            n_embd: width.unwrap_or(0),
            _text: text,
            info,
        };
        if enc.n_embd == 0 {
            return Err(format!(
                "{}: libmtmd's loader did not log the projection width",
                mmproj.display()
            ));
        }
        let text_embd = text.n_embd();
        if text_embd != 0 && text_embd != enc.n_embd {
            return Err(format!(
                "{}: projects to {} but the text model is {text_embd} wide",
                mmproj.display(),
                enc.n_embd
            ));
        }
        // SAFETY: valid context.
        if !unsafe { sys::mtmd_support_audio(enc.ctx) } {
            return Err(format!(
                "{}: the mmproj has no audio encoder",
                mmproj.display()
            ));
        }
        // SAFETY: valid context.
        let rate = unsafe { sys::mtmd_get_audio_sample_rate(enc.ctx) };
        if rate != 16000 {
            return Err(format!(
                "{}: the audio encoder wants {rate} Hz, the bench gives 16000 Hz",
                mmproj.display()
            ));
        }
        Ok(enc)
    }

    /// Width of the projected rows (the projector's output dimension).
    pub fn n_embd(&self) -> usize {
        self.n_embd
    }

    /// Encodes 16 kHz mono `samples`; `keep_first` copies the first audio
    /// chunk's projected rows into [`Encoded::first`].
    pub fn encode(&mut self, samples: &[f32], keep_first: bool) -> Result<Encoded, String> {
        let file = self.path.display();
        if samples.is_empty() {
            return Err(format!("{file}: no samples to encode"));
        }
        // SAFETY: mtmd_bitmap_init_from_audio copies `samples`.
        let bitmap = unsafe { sys::mtmd_bitmap_init_from_audio(samples.len(), samples.as_ptr()) };
        // SAFETY: plain constructor.
        let chunks = unsafe { sys::mtmd_input_chunks_init() };
        let inputs = Inputs { bitmap, chunks };
        if bitmap.is_null() || chunks.is_null() {
            return Err(format!("{file}: libmtmd could not allocate the inputs"));
        }
        // SAFETY: returns a static NUL-terminated string.
        let marker = unsafe { CStr::from_ptr(sys::mtmd_default_marker()) };
        let text = sys::mtmd_input_text {
            text: marker.as_ptr(),
            text_len: marker.to_bytes().len(),
            add_special: false,
            parse_special: true,
        };
        let bitmaps = [inputs.bitmap as *const sys::mtmd_bitmap];
        let t0 = Instant::now();
        // SAFETY: valid context, chunk list, text and one bitmap.
        let rc = unsafe { sys::mtmd_tokenize(self.ctx, inputs.chunks, &text, bitmaps.as_ptr(), 1) };
        let mel_s = t0.elapsed().as_secs_f64();
        if rc != 0 {
            return Err(format!("{file}: mtmd_tokenize failed with {rc}"));
        }
        let mut out = Encoded {
            mel_s,
            encode_s: 0.0,
            chunk_tokens: Vec::new(),
            chunk_s: Vec::new(),
            first: Vec::new(),
        };
        // SAFETY: valid chunk list.
        let n_chunks = unsafe { sys::mtmd_input_chunks_size(inputs.chunks) };
        for i in 0..n_chunks {
            // SAFETY: i < size; the chunk lives as long as the list.
            let chunk = unsafe { sys::mtmd_input_chunks_get(inputs.chunks, i) };
            // SAFETY: valid chunk.
            if unsafe { sys::mtmd_input_chunk_get_type(chunk) } != sys::MTMD_INPUT_CHUNK_TYPE_AUDIO
            {
                continue;
            }
            // SAFETY: valid chunk.
            let n = unsafe { sys::mtmd_input_chunk_get_n_tokens(chunk) };
            let t = Instant::now();
            // SAFETY: valid context and audio chunk.
            let rc = unsafe { sys::mtmd_encode_chunk(self.ctx, chunk) };
            let dt = t.elapsed().as_secs_f64();
            out.encode_s += dt;
            out.chunk_s.push(dt);
            if rc != 0 {
                return Err(format!("{file}: mtmd_encode_chunk failed with {rc}"));
            }
            if keep_first && out.chunk_tokens.is_empty() {
                // SAFETY: after a successful encode the output holds
                // n_embd * n floats (mtmd.h).
                let p = unsafe { sys::mtmd_get_output_embd(self.ctx) };
                if p.is_null() {
                    return Err(format!("{file}: libmtmd returned no embeddings"));
                }
                // SAFETY: see above.
                out.first = unsafe { std::slice::from_raw_parts(p, self.n_embd * n) }.to_vec();
            }
            out.chunk_tokens.push(n);
        }
        if out.chunk_tokens.is_empty() {
            return Err(format!("{file}: mtmd_tokenize made no audio chunk"));
        }
        Ok(out)
    }
}

impl Drop for AudioEncoder<'_> {
    fn drop(&mut self) {
        // SAFETY: created by mtmd_init_from_file, freed once.
        unsafe { sys::mtmd_free(self.ctx) }
    }
}
