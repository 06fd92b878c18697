//! `kpk_session_*` and `kpk_translate_*`: one stream's state over a shared
//! model, and translating with it.
use std::ffi::{c_char, c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, TryLockError};

use kompakt_audio::longform;
use kompakt_runtime::{
    KvPrecision, Observer, Segment, Session, Stage, TranslateOptions, Translation,
};

use crate::model::{clear_out, kpk_model, path_from_c};
use crate::status::{
    check_struct, guard, guard_void, kpk_status, non_null, read_struct, str_arg, CStruct, Error,
};

/// Largest beam width accepted.
pub const KPK_MAX_BEAMS: i32 = 16;

/// Stage of a translation, passed as `int` to `kpk_progress_callback`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum kpk_stage {
    /// Log-mel features of the audio.
    Features = 0,
    /// The audio encoder.
    Encoder = 1,
    /// The decoder over the prompt.
    Prefill = 2,
    /// Token generation; `done` is tokens / `max_tokens`.
    Decode = 3,
}

/// Receives each new piece of the translation as NUL-terminated UTF-8,
/// valid only during the call. Return false to abort.
pub type kpk_text_callback =
    Option<unsafe extern "C" fn(piece: *const c_char, user_data: *mut c_void) -> bool>;

/// Receives progress: `stage` is a `kpk_stage`, `done` in 0..1 within it.
/// Return false to abort.
pub type kpk_progress_callback =
    Option<unsafe extern "C" fn(stage: i32, done: f32, user_data: *mut c_void) -> bool>;

/// Storage of a session's KV cache (`kpk_session_params.kv_cache`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum kpk_kv_type {
    /// 2 bytes per cached value: half the memory (llama.cpp's default too).
    F16 = 0,
    /// 4 bytes per cached value: exactly the computed keys and values.
    F32 = 1,
}

/// Options of `kpk_session_new()`. Get them from `kpk_session_default_params()`.
///
/// `kv_cache` and `prefill_chunk` were added after the first release of this
/// header. A caller built against that header (whose struct ends after
/// `n_threads`, `struct_size` = its `sizeof`) is still accepted: the fields it
/// does not have take their defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kpk_session_params {
    /// `sizeof(kpk_session_params)`.
    pub struct_size: usize,
    /// Worker threads of this session; 0 = one per core. Default: 0.
    pub n_threads: i32,
    /// Storage of the KV cache, a `kpk_kv_type`. Default: `KPK_KV_TYPE_F16`.
    pub kv_cache: i32,
    /// Prompt positions per prefill micro-batch: lower values lower the peak
    /// memory of long clips (a 30 s clip is ~790 positions); the logits are
    /// the same up to rounding. 0 = the library's default (512, llama.cpp's
    /// `n_ubatch`). Default: 0.
    pub prefill_chunk: i32,
}

impl CStruct for kpk_session_params {
    const NAME: &'static str = "kpk_session_params";
}

/// `kpk_session_params` as the first header declared it; callers built
/// against it pass `struct_size == sizeof` of this.
#[repr(C)]
#[derive(Clone, Copy)]
struct kpk_session_params_v1 {
    struct_size: usize,
    n_threads: i32,
}

impl CStruct for kpk_session_params_v1 {
    const NAME: &'static str = "kpk_session_params";
}

/// Reads a caller's `kpk_session_params` of this header or of the first one
/// (see [`kpk_session_params`]).
///
/// # Safety
/// `p` is NULL or points to an initialized `kpk_session_params` of either
/// version (as its `struct_size` says).
unsafe fn read_session_params(p: *const kpk_session_params) -> Result<kpk_session_params, Error> {
    let v1 = p.cast::<kpk_session_params_v1>();
    // SAFETY: checks NULL and alignment, then reads the leading usize only.
    if unsafe { check_struct(v1, "params") }.is_ok() {
        // SAFETY: checked: a complete first-version struct.
        let old = unsafe { v1.read() };
        return Ok(kpk_session_params {
            n_threads: old.n_threads,
            ..kpk_session_default_params()
        });
    }
    // SAFETY: per the contract; fails with this header's size in the message.
    unsafe { read_struct(p, "params") }
}

/// Options of one translation. Get them from `kpk_translate_default_params()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kpk_translate_params {
    /// `sizeof(kpk_translate_params)`.
    pub struct_size: usize,
    /// Target language code with a prompt in the model (see
    /// `kpk_model_info.languages`); NULL means `"de"`. Default: `"de"`.
    pub language: *const c_char,
    /// Beam width, 1 (greedy) to `KPK_MAX_BEAMS`. Default: 1.
    pub beams: i32,
    /// Upper limit of generated tokens, at least 1. Default: 256.
    pub max_tokens: i32,
    /// Streams the text as it is decoded (with beams > 1: once the search
    /// ends). May be NULL. Default: NULL.
    pub on_text: kpk_text_callback,
    /// Reports progress. May be NULL. Default: NULL.
    pub on_progress: kpk_progress_callback,
    /// Passed to both callbacks. Default: NULL.
    pub user_data: *mut c_void,
    /// A one-off instruction, UTF-8, used instead of the model's instruction
    /// for `language` (which is then not used): the model's prompt template
    /// (`kpk_model_prompt_template()`) with this text in place of
    /// `{instruction}`. NULL means the model's own. Default: NULL. (Added in
    /// the second version of this struct; callers built against the first
    /// pass its smaller `struct_size` and get NULL.)
    pub instruction: *const c_char,
}

impl CStruct for kpk_translate_params {
    const NAME: &'static str = "kpk_translate_params";
}

/// `kpk_translate_params` as the first header declared it (no
/// `instruction`); callers built against it pass `struct_size == sizeof` of
/// this.
#[repr(C)]
#[derive(Clone, Copy)]
struct kpk_translate_params_v1 {
    struct_size: usize,
    language: *const c_char,
    beams: i32,
    max_tokens: i32,
    on_text: kpk_text_callback,
    on_progress: kpk_progress_callback,
    user_data: *mut c_void,
}

impl CStruct for kpk_translate_params_v1 {
    const NAME: &'static str = "kpk_translate_params";
}

/// Reads a caller's `kpk_translate_params` of this header or of the first
/// one.
///
/// # Safety
/// `p` is NULL or points to an initialized `kpk_translate_params` of either
/// version (as its `struct_size` says).
unsafe fn read_translate_params(
    p: *const kpk_translate_params,
) -> Result<kpk_translate_params, Error> {
    let v1 = p.cast::<kpk_translate_params_v1>();
    // SAFETY: checks NULL and alignment, then reads the leading usize only.
    if unsafe { check_struct(v1, "params") }.is_ok() {
        // SAFETY: checked: a complete first-version struct.
        let old = unsafe { v1.read() };
        return Ok(kpk_translate_params {
            struct_size: std::mem::size_of::<kpk_translate_params>(),
            language: old.language,
            beams: old.beams,
            max_tokens: old.max_tokens,
            on_text: old.on_text,
            on_progress: old.on_progress,
            user_data: old.user_data,
            instruction: std::ptr::null(),
        });
    }
    // SAFETY: per the contract; fails with this header's size in the message.
    unsafe { read_struct(p, "params") }
}

/// The last translation of a session, filled by `kpk_session_last_result()`.
/// Pointers are owned by the session, valid until its next call or its free.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kpk_result {
    /// Set to `sizeof(kpk_result)` before calling `kpk_session_last_result()`.
    pub struct_size: usize,
    /// The translation, UTF-8 (`""` when the last call failed).
    pub text: *const c_char,
    /// Generated token ids (the model's original id space), EOS included if
    /// emitted.
    pub token_ids: *const u32,
    /// Entries of `token_ids`.
    pub n_tokens: usize,
    /// Audio positions in the prompt.
    pub n_audio_tokens: usize,
    /// Prompt length in tokens, audio included.
    pub n_prompt_tokens: usize,
    /// Wall-clock seconds of feature extraction.
    pub features_s: f64,
    /// Wall-clock seconds of the audio encoder.
    pub encoder_s: f64,
    /// Wall-clock seconds of the prompt prefill.
    pub prefill_s: f64,
    /// Wall-clock seconds of token generation.
    pub decode_s: f64,
}

impl CStruct for kpk_result {
    const NAME: &'static str = "kpk_result";
}

/// One segment of a long recording (`kpk_session_segment()`). Pointers
/// are owned by the session, valid until its next call or its free.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kpk_segment {
    /// Set to `sizeof(kpk_segment)` before calling `kpk_session_segment()`.
    pub struct_size: usize,
    /// Start of the segment in seconds from the start of the audio.
    pub start_s: f64,
    /// End of the segment in seconds.
    pub end_s: f64,
    /// The segment's translation, UTF-8.
    pub text: *const c_char,
    /// Its generated token ids (original id space).
    pub token_ids: *const u32,
    /// Entries of `token_ids`.
    pub n_tokens: usize,
}

impl CStruct for kpk_segment {
    const NAME: &'static str = "kpk_segment";
}

/// A segment's result as the session keeps it for `kpk_session_segment()`.
struct SegmentOut {
    start_s: f64,
    end_s: f64,
    text: CString,
    token_ids: Vec<u32>,
}

struct State {
    session: Session,
    text: CString,
    last: Option<Translation>,
    segments: Vec<SegmentOut>,
}

/// One translation stream (opaque): caches, buffers and worker threads over
/// a model, of which it holds its own reference. Use a session from one
/// thread at a time; create one session per concurrent stream.
pub struct kpk_session {
    state: Mutex<State>,
    /// Set by a `kpk_session_free()` that ran while a call was in progress
    /// (from one of its callbacks); that call frees the session on return.
    free_requested: AtomicBool,
}

/// The default session parameters.
#[no_mangle]
pub extern "C" fn kpk_session_default_params() -> kpk_session_params {
    kpk_session_params {
        struct_size: std::mem::size_of::<kpk_session_params>(),
        n_threads: 0,
        kv_cache: kpk_kv_type::F16 as i32,
        prefill_chunk: 0,
    }
}

/// The default translation parameters: German, greedy, at most 256 tokens,
/// no callbacks.
#[no_mangle]
pub extern "C" fn kpk_translate_default_params() -> kpk_translate_params {
    kpk_translate_params {
        struct_size: std::mem::size_of::<kpk_translate_params>(),
        language: c"de".as_ptr(),
        beams: 1,
        max_tokens: 256,
        on_text: None,
        on_progress: None,
        user_data: std::ptr::null_mut(),
        instruction: std::ptr::null(),
    }
}

/// Creates a session over `model`; `params` may be NULL for the defaults.
/// The session holds its own reference to the model, so it stays usable
/// after `kpk_model_free(model)`. On failure `*session_out` is NULL.
///
/// # Safety
/// `model` is NULL or a live model; `params` is NULL or points to a
/// `kpk_session_params`; `session_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn kpk_session_new(
    model: *const kpk_model,
    params: *const kpk_session_params,
    session_out: *mut *mut kpk_session,
) -> kpk_status {
    guard(|| {
        // SAFETY: pointer contracts as documented above.
        unsafe { clear_out(session_out, "session_out")? };
        non_null(model, "model")?;
        let params = if params.is_null() {
            kpk_session_default_params()
        } else {
            // SAFETY: per the contract.
            unsafe { read_session_params(params)? }
        };
        let threads = usize::try_from(params.n_threads).map_err(|_| {
            Error::invalid(format!(
                "`params->n_threads` is {}; use 0 for one per core",
                params.n_threads
            ))
        })?;
        let kv = match params.kv_cache {
            x if x == kpk_kv_type::F16 as i32 => KvPrecision::F16,
            x if x == kpk_kv_type::F32 as i32 => KvPrecision::F32,
            x => {
                return Err(Error::invalid(format!(
                    "`params->kv_cache` is {x}; use KPK_KV_TYPE_F16 (0) or KPK_KV_TYPE_F32 (1)"
                )))
            }
        };
        let chunk = usize::try_from(params.prefill_chunk).map_err(|_| {
            Error::invalid(format!(
                "`params->prefill_chunk` is {}; use a positive count, or 0 for the default",
                params.prefill_chunk
            ))
        })?;
        // SAFETY: non-NULL live model per the contract.
        let model = unsafe { &*model }.model.clone();
        let mut session = Session::new(model, threads)?;
        session.set_kv_precision(kv);
        if chunk > 0 {
            session.set_prefill_chunk(chunk);
        }
        let s = kpk_session {
            state: Mutex::new(State {
                session,
                text: CString::default(),
                last: None,
                segments: Vec::new(),
            }),
            free_requested: AtomicBool::new(false),
        };
        // SAFETY: checked by clear_out.
        unsafe { session_out.write(Box::into_raw(Box::new(s))) };
        Ok(())
    })
}

/// Frees a session; NULL is a no-op. Called from a callback of a running
/// call on this session, the free happens when that call returns (its
/// `text_out` is then NULL).
///
/// # Safety
/// `session` is NULL or a live session not yet freed.
#[no_mangle]
pub unsafe extern "C" fn kpk_session_free(session: *mut kpk_session) {
    if session.is_null() {
        return;
    }
    guard_void(|| {
        // SAFETY: a live session per the contract.
        let s = unsafe { &*session };
        let busy = matches!(s.state.try_lock(), Err(TryLockError::WouldBlock));
        if busy {
            s.free_requested.store(true, Ordering::SeqCst);
        } else {
            // SAFETY: from Box::into_raw, not in use, freed once per the contract.
            drop(unsafe { Box::from_raw(session) });
        }
    })
}

/// Forwards the runtime's text and progress to the C callbacks.
struct CObserver {
    on_text: kpk_text_callback,
    on_progress: kpk_progress_callback,
    user_data: *mut c_void,
    buf: Vec<u8>,
    aborted_by: Option<&'static str>,
}

impl Observer for CObserver {
    fn on_text(&mut self, piece: &str) -> bool {
        let Some(cb) = self.on_text else { return true };
        self.buf.clear();
        self.buf.extend(piece.bytes().filter(|&b| b != 0));
        self.buf.push(0);
        // SAFETY: a NUL-terminated buffer that outlives the call; the
        // callback's contract is the caller's.
        let go = unsafe { cb(self.buf.as_ptr().cast(), self.user_data) };
        if !go {
            self.aborted_by = Some("on_text");
        }
        go
    }

    fn on_progress(&mut self, stage: Stage, done: f32) -> bool {
        let Some(cb) = self.on_progress else {
            return true;
        };
        let stage = match stage {
            Stage::Features => kpk_stage::Features,
            Stage::Encoder => kpk_stage::Encoder,
            Stage::Prefill => kpk_stage::Prefill,
            Stage::Decode => kpk_stage::Decode,
        };
        // SAFETY: the callback's contract is the caller's.
        let go = unsafe { cb(stage as i32, done.clamp(0.0, 1.0), self.user_data) };
        if !go {
            self.aborted_by = Some("on_progress");
        }
        go
    }
}

/// Where the audio of one call comes from.
enum Audio<'a> {
    Pcm(&'a [f32]),
    Wav(std::path::PathBuf),
}

/// Checked translate options and the observer built from the C params.
fn options(
    state: &State,
    p: &kpk_translate_params,
) -> Result<(TranslateOptions, CObserver), Error> {
    let lang = if p.language.is_null() {
        "de"
    } else {
        // SAFETY: a NUL-terminated string per the params' contract.
        unsafe { str_arg(p.language, "params->language")? }
    };
    let instruction = if p.instruction.is_null() {
        None
    } else {
        // SAFETY: a NUL-terminated string per the params' contract.
        Some(unsafe { str_arg(p.instruction, "params->instruction")? }.to_string())
    };
    let config = state.session.model().config();
    if let Some(i) = &instruction {
        state.session.model().instruction_prompt(i)?;
    } else if !config.templates.contains_key(lang) {
        return Err(Error::new(
            kpk_status::UnknownLanguage,
            format!(
                "target language `{lang}` is not available in this model (available: {})",
                config.languages().join(", ")
            ),
        ));
    }
    if !(1..=KPK_MAX_BEAMS).contains(&p.beams) {
        return Err(Error::invalid(format!(
            "`params->beams` is {}; use 1 to {KPK_MAX_BEAMS}",
            p.beams
        )));
    }
    if p.max_tokens < 1 {
        return Err(Error::invalid(format!(
            "`params->max_tokens` is {}; use at least 1",
            p.max_tokens
        )));
    }
    let opts = TranslateOptions {
        lang: lang.to_string(),
        instruction,
        beams: p.beams as usize,
        max_new_tokens: p.max_tokens as usize,
        ..Default::default()
    };
    let observer = CObserver {
        on_text: p.on_text,
        on_progress: p.on_progress,
        user_data: p.user_data,
        buf: Vec::new(),
        aborted_by: None,
    };
    Ok((opts, observer))
}

fn run<'a>(
    state: &mut State,
    audio: impl FnOnce() -> Result<Audio<'a>, Error>,
    p: &kpk_translate_params,
) -> Result<(), Error> {
    state.last = None;
    state.text = CString::default();
    state.segments.clear();
    let (opts, mut observer) = options(state, p)?;
    let aborted = |observer: &CObserver| {
        let by = observer.aborted_by.unwrap_or("a");
        Error::new(
            kpk_status::Aborted,
            format!("aborted: the {by} callback returned false"),
        )
    };
    let rate = kompakt_audio::TARGET_SAMPLE_RATE;
    let long_file = |path: &std::path::Path| -> Result<Option<longform::WavInfo>, Error> {
        let info = longform::wav_info(path)?;
        Ok((info.duration_s() > longform::MAX_CLIP_S).then_some(info))
    };
    let result = match audio()? {
        Audio::Pcm(pcm) if pcm.len() as f64 / f64::from(rate) > longform::MAX_CLIP_S => {
            check_finite(pcm)?;
            state.session.translate_segments(pcm, &opts, &mut observer)
        }
        Audio::Pcm(pcm) => {
            check_finite(pcm)?;
            single(&mut state.session, pcm, &opts, &mut observer)
        }
        Audio::Wav(path) => match long_file(&path)? {
            // Read and cut as `kompakt translate` does a long file: the
            // segments' samples straight from the file, a minute of energies
            // at a time, so the output is the CLI's.
            Some(info) => {
                let cfg = kompakt_audio::vad::VadConfig::default();
                let cuts = longform::segment_file(&path, &info, &cfg)?;
                let mut segments = Vec::with_capacity(cuts.len());
                let mut failed = None;
                for (k, cut) in cuts.iter().enumerate() {
                    if k > 0 && !observer.on_text("\n") {
                        failed = Some(kompakt_runtime::RuntimeError::Aborted);
                        break;
                    }
                    let pcm = longform::read_cut_16k(&path, cut)?;
                    check_finite(&pcm)?;
                    match state.session.translate_clip(&pcm, &opts, &mut observer) {
                        Ok((translation, pieces)) => segments.push(Segment {
                            start_s: cut.offset_s,
                            end_s: cut.offset_s + cut.duration_s,
                            translation,
                            pieces,
                        }),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                match failed {
                    Some(e) => Err(e),
                    None => Ok(segments),
                }
            }
            None => {
                let pcm = kompakt_audio::load_16k_mono(&path)?;
                check_finite(&pcm)?;
                single(&mut state.session, &pcm, &opts, &mut observer)
            }
        },
    };
    let segments = match result {
        Ok(s) => s,
        Err(kompakt_runtime::RuntimeError::Aborted) => return Err(aborted(&observer)),
        Err(e) => return Err(e.into()),
    };
    let mut all = Translation {
        text: String::new(),
        token_ids: Vec::new(),
        n_audio_tokens: 0,
        prompt_tokens: 0,
        timings: Default::default(),
    };
    let mut texts = Vec::with_capacity(segments.len());
    for seg in segments {
        let t = seg.translation;
        texts.push(t.text.clone());
        all.token_ids.extend(&t.token_ids);
        all.n_audio_tokens += t.n_audio_tokens;
        all.prompt_tokens += t.prompt_tokens;
        all.timings += &t.timings;
        state.segments.push(SegmentOut {
            start_s: seg.start_s,
            end_s: seg.end_s,
            text: CString::new(t.text.replace('\0', "")).unwrap_or_default(),
            token_ids: t.token_ids,
        });
    }
    all.text = texts.join("\n");
    state.text = CString::new(all.text.replace('\0', "")).unwrap_or_default();
    state.last = Some(all);
    Ok(())
}

/// Fails with `KPK_ERR_AUDIO` naming the first sample that is not finite.
fn check_finite(pcm: &[f32]) -> Result<(), Error> {
    match pcm.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(Error::new(
            kpk_status::Audio,
            format!("sample {i} is {}: samples must be finite", pcm[i]),
        )),
        None => Ok(()),
    }
}

/// A clip of at most 30 s as one segment, translated exactly as before
/// long audio was accepted (the text untrimmed).
fn single(
    session: &mut Session,
    pcm: &[f32],
    opts: &TranslateOptions,
    observer: &mut CObserver,
) -> kompakt_runtime::Result<Vec<Segment>> {
    let t = session.translate(pcm, opts, observer)?;
    Ok(vec![Segment {
        start_s: 0.0,
        end_s: pcm.len() as f64 / f64::from(kompakt_audio::TARGET_SAMPLE_RATE),
        translation: t,
        pieces: 1,
    }])
}

/// Shared body of the translate calls: locks the session, runs, publishes
/// the text, and performs a free requested by a callback.
///
/// # Safety
/// Pointer contracts of `kpk_translate_pcm()`.
unsafe fn translate<'a>(
    session: *mut kpk_session,
    audio: impl FnOnce() -> Result<Audio<'a>, Error>,
    params: *const kpk_translate_params,
    text_out: *mut *const c_char,
) -> kpk_status {
    let mut free_now = false;
    let status = guard(|| {
        if !text_out.is_null() {
            if !text_out.is_aligned() {
                return Err(Error::invalid("`text_out` is misaligned"));
            }
            // SAFETY: non-NULL, aligned, writable per the contract.
            unsafe { text_out.write(std::ptr::null()) };
        }
        non_null(session, "session")?;
        // SAFETY: a live session per the contract.
        let s = unsafe { &*session };
        let params = if params.is_null() {
            kpk_translate_default_params()
        } else {
            // SAFETY: per the contract.
            unsafe { read_translate_params(params)? }
        };
        let mut state =
            match s.state.try_lock() {
                Ok(g) => g,
                // A panic in an earlier call left nothing half-updated that
                // matters: every call starts from fresh caches.
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return Err(Error::new(
                    kpk_status::Busy,
                    "the session is in use by another call (a session serves one call at a time; \
                     do not call it from its own callbacks)",
                )),
            };
        let result = run(&mut state, audio, &params);
        if s.free_requested.load(Ordering::SeqCst) {
            free_now = true;
        } else if result.is_ok() && !text_out.is_null() {
            // SAFETY: checked above.
            unsafe { text_out.write(state.text.as_ptr()) };
        }
        drop(state);
        result
    });
    if free_now {
        // SAFETY: a free was requested during the call; the lock is released
        // and nobody else may use the session any more.
        drop(unsafe { Box::from_raw(session) });
    }
    status
}

/// Translates `n_samples` samples of 16 kHz mono audio in [-1, 1], of any
/// length. Audio of at most 30 s (`kpk_model_info.max_samples`) is one
/// segment; longer audio is cut at pauses into segments as `kompakt
/// translate` cuts a long WAV file (energy VAD, each segment at most 30 s),
/// translated one after the other: the text is one line per segment
/// (joined by `\n`, also streamed between segments), the token ids and
/// timings of `kpk_session_last_result()` their sums, and
/// `kpk_session_segment()` gives each segment's times, text and ids.
/// `params` may be NULL for the defaults. On success `*text_out` (if
/// `text_out` is non-NULL) points to the UTF-8 translation, owned by the
/// session and valid until the next call on it or its free; on failure it
/// is NULL.
///
/// # Safety
/// `session` is NULL or a live session; `pcm` is NULL or points to
/// `n_samples` floats; `params` is NULL or points to a
/// `kpk_translate_params` whose `language` is NULL or NUL-terminated and
/// whose callbacks are NULL or callable with its `user_data`; `text_out` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn kpk_translate_pcm(
    session: *mut kpk_session,
    pcm: *const f32,
    n_samples: usize,
    params: *const kpk_translate_params,
    text_out: *mut *const c_char,
) -> kpk_status {
    let audio = || {
        if n_samples == 0 {
            return Ok(Audio::Pcm(&[]));
        }
        non_null(pcm, "pcm")?;
        if !pcm.is_aligned() {
            return Err(Error::invalid("`pcm` is not aligned to a float"));
        }
        if n_samples > isize::MAX as usize / std::mem::size_of::<f32>() {
            return Err(Error::invalid(format!("`n_samples` is {n_samples}")));
        }
        // SAFETY: non-NULL, aligned, `n_samples` floats per the contract,
        // size within isize::MAX; only read during this call.
        Ok(Audio::Pcm(unsafe {
            std::slice::from_raw_parts(pcm, n_samples)
        }))
    };
    // SAFETY: the contract above.
    unsafe { translate(session, audio, params, text_out) }
}

/// Reads a WAV file (integer PCM or float, any rate and channel count, any
/// length), converts it to 16 kHz mono and translates it like
/// `kpk_translate_pcm()`. A file over 30 s is read segment by segment (a
/// minute at a time to find the pauses), exactly as `kompakt translate`
/// reads it, with the same segments and output.
///
/// # Safety
/// `path` is NULL or NUL-terminated; otherwise as `kpk_translate_pcm()`.
#[no_mangle]
pub unsafe extern "C" fn kpk_translate_wav(
    session: *mut kpk_session,
    path: *const c_char,
    params: *const kpk_translate_params,
    text_out: *mut *const c_char,
) -> kpk_status {
    // SAFETY: per the contract.
    let audio = || Ok(Audio::Wav(unsafe { path_from_c(path)? }));
    // SAFETY: the contract above.
    unsafe { translate(session, audio, params, text_out) }
}

/// Describes the last successful translation of `session` into `*result`,
/// whose `struct_size` the caller sets to `sizeof(kpk_result)`. After a
/// failed call (or before any) the text is `""` and the counts are 0.
///
/// # Safety
/// `session` is NULL or a live session; `result` is NULL or points to a
/// writable `kpk_result`.
#[no_mangle]
pub unsafe extern "C" fn kpk_session_last_result(
    session: *const kpk_session,
    result: *mut kpk_result,
) -> kpk_status {
    guard(|| {
        non_null(session, "session")?;
        // SAFETY: checks pointer, alignment and struct_size.
        unsafe { check_struct(result.cast_const(), "result")? };
        // SAFETY: a live session per the contract.
        let state = unsafe { lock_idle(&*session)? };
        let mut out = kpk_result {
            struct_size: std::mem::size_of::<kpk_result>(),
            text: state.text.as_ptr(),
            token_ids: std::ptr::null(),
            n_tokens: 0,
            n_audio_tokens: 0,
            n_prompt_tokens: 0,
            features_s: 0.0,
            encoder_s: 0.0,
            prefill_s: 0.0,
            decode_s: 0.0,
        };
        if let Some(t) = &state.last {
            out.token_ids = t.token_ids.as_ptr();
            out.n_tokens = t.token_ids.len();
            out.n_audio_tokens = t.n_audio_tokens;
            out.n_prompt_tokens = t.prompt_tokens;
            out.features_s = t.timings.features_s;
            out.encoder_s = t.timings.encoder_s;
            out.prefill_s = t.timings.prefill_s;
            out.decode_s = t.timings.decode_s;
        }
        // SAFETY: checked by check_struct.
        unsafe { result.write(out) };
        Ok(())
    })
}

/// Number of segments of the last successful translation of `session` into
/// `*count_out`: 1 for audio of at most 30 s, one per stretch of speech for
/// longer audio, 0 after a failed call (or before any).
///
/// # Safety
/// `session` is NULL or a live session; `count_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn kpk_session_segment_count(
    session: *const kpk_session,
    count_out: *mut usize,
) -> kpk_status {
    guard(|| {
        non_null(session, "session")?;
        non_null(count_out, "count_out")?;
        if !count_out.is_aligned() {
            return Err(Error::invalid("`count_out` is misaligned"));
        }
        // SAFETY: a live session per the contract.
        let state = unsafe { lock_idle(&*session)? };
        // SAFETY: non-NULL, aligned, writable per the contract.
        unsafe { count_out.write(state.segments.len()) };
        Ok(())
    })
}

/// Describes segment `index` (0-based, below `kpk_session_segment_count()`)
/// of the last successful translation of `session` into `*segment`, whose
/// `struct_size` the caller sets to `sizeof(kpk_segment)`.
///
/// # Safety
/// `session` is NULL or a live session; `segment` is NULL or points to a
/// writable `kpk_segment`.
#[no_mangle]
pub unsafe extern "C" fn kpk_session_segment(
    session: *const kpk_session,
    index: usize,
    segment: *mut kpk_segment,
) -> kpk_status {
    guard(|| {
        non_null(session, "session")?;
        // SAFETY: checks pointer, alignment and struct_size.
        unsafe { check_struct(segment.cast_const(), "segment")? };
        // SAFETY: a live session per the contract.
        let state = unsafe { lock_idle(&*session)? };
        let n = state.segments.len();
        let s = state.segments.get(index).ok_or_else(|| {
            Error::invalid(format!(
                "`index` is {index}, but the last translation has {n} segment(s)"
            ))
        })?;
        let out = kpk_segment {
            struct_size: std::mem::size_of::<kpk_segment>(),
            start_s: s.start_s,
            end_s: s.end_s,
            text: s.text.as_ptr(),
            token_ids: s.token_ids.as_ptr(),
            n_tokens: s.token_ids.len(),
        };
        // SAFETY: checked by check_struct.
        unsafe { segment.write(out) };
        Ok(())
    })
}

/// The session's state when no call is in progress on it.
fn lock_idle(s: &kpk_session) -> Result<std::sync::MutexGuard<'_, State>, Error> {
    match s.state.try_lock() {
        Ok(g) => Ok(g),
        Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
        Err(TryLockError::WouldBlock) => Err(Error::new(
            kpk_status::Busy,
            "the session is in use by another call",
        )),
    }
}

/// The integration tests' fixture model (converted once per process).
#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod common;

#[cfg(test)]
mod tests {
    use super::common;
    use super::*;
    use crate::model::kpk_model_load;
    use std::ptr;

    /// The session that `kpk_session_new` builds has the requested KV cache
    /// precision and prefill chunk (not observable through the C API, whose
    /// translations are the same up to rounding).
    #[test]
    fn session_params_reach_the_session() {
        let path = CString::new(common::model_path().to_str().unwrap()).unwrap();
        let mut model = ptr::null_mut();
        // SAFETY: valid arguments.
        let st = unsafe { kpk_model_load(path.as_ptr(), ptr::null(), &mut model) };
        assert_eq!(st, kpk_status::Ok);
        for (kv, chunk, want_kv, want_chunk) in [
            (
                kpk_kv_type::F16,
                0,
                KvPrecision::F16,
                kompakt_runtime::PREFILL_CHUNK,
            ),
            (
                kpk_kv_type::F32,
                0,
                KvPrecision::F32,
                kompakt_runtime::PREFILL_CHUNK,
            ),
            (kpk_kv_type::F16, 7, KvPrecision::F16, 7),
        ] {
            let mut p = kpk_session_default_params();
            p.n_threads = 1;
            p.kv_cache = kv as i32;
            p.prefill_chunk = chunk;
            let mut s = ptr::null_mut();
            // SAFETY: valid arguments.
            let st = unsafe { kpk_session_new(model, &p, &mut s) };
            assert_eq!(st, kpk_status::Ok);
            // SAFETY: a live session, freed once below.
            let state = unsafe { &*s }.state.lock().unwrap();
            assert_eq!(state.session.kv_precision(), want_kv);
            assert_eq!(state.session.prefill_chunk(), want_chunk);
            drop(state);
            // SAFETY: freed once.
            unsafe { kpk_session_free(s) };
        }
        // SAFETY: freed once.
        unsafe { crate::model::kpk_model_free(model) };
    }
}
