//! The C API called the way C code calls it, right and wrong: every misuse
//! gives its status and a non-empty `kpk_last_error()`, never a crash.
mod common;

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr;

use kompakt::kpk_kv_type;
use kompakt::model::{
    kpk_model, kpk_model_default_params, kpk_model_free, kpk_model_get_info, kpk_model_info,
    kpk_model_instruction, kpk_model_load, kpk_model_load_from_memory, kpk_model_load_huge_pages,
    kpk_model_params, kpk_model_prompt_template,
};
use kompakt::session::{
    kpk_result, kpk_segment, kpk_session, kpk_session_default_params, kpk_session_free,
    kpk_session_last_result, kpk_session_new, kpk_session_params, kpk_session_segment,
    kpk_session_segment_count, kpk_translate_default_params, kpk_translate_params,
    kpk_translate_pcm, kpk_translate_wav,
};
use kompakt::{kpk_abi_version, kpk_last_error, kpk_status, kpk_status_name, KPK_ABI_VERSION};

use kpk_status as S;

const MAX_TOKENS: i32 = 8;

fn last_error() -> String {
    // SAFETY: kpk_last_error returns a NUL-terminated thread-local string.
    unsafe { CStr::from_ptr(kpk_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Asserts the status and that the last error mentions `needle`.
#[track_caller]
fn expect(status: kpk_status, want: kpk_status, needle: &str) -> String {
    let e = last_error();
    assert_eq!(status, want, "last error: {e}");
    assert!(!e.is_empty(), "empty kpk_last_error() after {want:?}");
    assert!(e.contains(needle), "{e:?} does not mention {needle:?}");
    e
}

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

fn cpath(p: &std::path::Path) -> CString {
    c(p.to_str().expect("UTF-8 path"))
}

fn load(path: &std::path::Path) -> *mut kpk_model {
    let mut m = ptr::null_mut();
    // SAFETY: valid arguments.
    let st = unsafe { kpk_model_load(cpath(path).as_ptr(), ptr::null(), &mut m) };
    assert_eq!(st, S::Ok, "{}", last_error());
    assert!(!m.is_null());
    m
}

fn session(model: *const kpk_model) -> *mut kpk_session {
    let mut s = ptr::null_mut();
    let mut p = kpk_session_default_params();
    p.n_threads = 1;
    // SAFETY: valid arguments.
    let st = unsafe { kpk_session_new(model, &p, &mut s) };
    assert_eq!(st, S::Ok, "{}", last_error());
    s
}

fn params() -> kpk_translate_params {
    let mut p = kpk_translate_default_params();
    p.max_tokens = MAX_TOKENS;
    p
}

fn pcm() -> Vec<f32> {
    kompakt_audio::load_16k_mono(&common::wav()).expect("fixture audio")
}

/// Translates the fixture PCM; returns the status and the text.
fn translate(s: *mut kpk_session, p: &kpk_translate_params) -> (kpk_status, Option<String>) {
    let audio = pcm();
    let mut text: *const c_char = ptr::null();
    // SAFETY: valid arguments.
    let st = unsafe { kpk_translate_pcm(s, audio.as_ptr(), audio.len(), p, &mut text) };
    let text = (!text.is_null())
        // SAFETY: a NUL-terminated string owned by the session.
        .then(|| {
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        });
    (st, text)
}

fn token_ids(s: *const kpk_session) -> Vec<u32> {
    // SAFETY: zeroed is a valid kpk_result; then struct_size is set.
    let mut r: kpk_result = unsafe { std::mem::zeroed() };
    r.struct_size = std::mem::size_of::<kpk_result>();
    // SAFETY: valid arguments.
    let st = unsafe { kpk_session_last_result(s, &mut r) };
    assert_eq!(st, S::Ok, "{}", last_error());
    if r.n_tokens == 0 {
        return Vec::new();
    }
    // SAFETY: n_tokens ids owned by the session.
    unsafe { std::slice::from_raw_parts(r.token_ids, r.n_tokens) }.to_vec()
}

/// The reference: the fixture translated through a fresh model and session.
fn reference() -> (String, Vec<u32>) {
    let m = load(common::model_path());
    let s = session(m);
    let (st, text) = translate(s, &params());
    assert_eq!(st, S::Ok, "{}", last_error());
    let ids = token_ids(s);
    // SAFETY: live handles, freed once.
    unsafe {
        kpk_session_free(s);
        kpk_model_free(m);
    }
    (text.expect("text"), ids)
}

#[test]
fn versions_and_status_names() {
    assert_eq!(kpk_abi_version(), KPK_ABI_VERSION);
    let name = |v: i32| {
        // SAFETY: a static NUL-terminated string.
        unsafe { CStr::from_ptr(kpk_status_name(v)) }
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(name(S::Ok as i32), "OK");
    assert_eq!(name(S::InvalidArgument as i32), "INVALID_ARGUMENT");
    assert_eq!(name(S::Internal as i32), "INTERNAL");
    assert_eq!(name(-1), "UNKNOWN");
    assert_eq!(name(1000), "UNKNOWN");
}

#[test]
fn null_arguments() {
    let model = load(common::model_path());
    let sess = session(model);
    let mut m: *mut kpk_model = 0x10 as *mut kpk_model; // must be cleared on failure
    let mut s: *mut kpk_session = ptr::null_mut();
    let mut text: *const c_char = c"stale".as_ptr();
    let audio = pcm();
    let p = params();
    let wav = cpath(&common::wav());
    // SAFETY: NULLs where the API allows checking them; the rest valid.
    unsafe {
        expect(
            kpk_model_load(ptr::null(), ptr::null(), &mut m),
            S::InvalidArgument,
            "`path` is NULL",
        );
        assert!(m.is_null(), "model_out not cleared on failure");
        expect(
            kpk_model_load_huge_pages(ptr::null(), ptr::null(), &mut m),
            S::InvalidArgument,
            "`path` is NULL",
        );
        expect(
            kpk_model_load_huge_pages(
                cpath(common::model_path()).as_ptr(),
                ptr::null(),
                ptr::null_mut(),
            ),
            S::InvalidArgument,
            "`model_out` is NULL",
        );
        expect(
            kpk_model_load(
                cpath(common::model_path()).as_ptr(),
                ptr::null(),
                ptr::null_mut(),
            ),
            S::InvalidArgument,
            "`model_out` is NULL",
        );
        expect(
            kpk_model_load(c"".as_ptr(), ptr::null(), &mut m),
            S::InvalidArgument,
            "`path` is empty",
        );
        expect(
            kpk_model_load_from_memory(ptr::null(), 10, ptr::null(), &mut m),
            S::InvalidArgument,
            "`data` is NULL",
        );
        expect(
            kpk_model_load_from_memory([0u8; 4].as_ptr(), 0, ptr::null(), &mut m),
            S::InvalidArgument,
            "`len` is 0",
        );
        expect(
            kpk_model_get_info(ptr::null(), ptr::null_mut()),
            S::InvalidArgument,
            "`model` is NULL",
        );
        expect(
            kpk_model_get_info(model, ptr::null_mut()),
            S::InvalidArgument,
            "`info` is NULL",
        );
        expect(
            kpk_session_new(ptr::null(), ptr::null(), &mut s),
            S::InvalidArgument,
            "`model` is NULL",
        );
        expect(
            kpk_session_new(model, ptr::null(), ptr::null_mut()),
            S::InvalidArgument,
            "`session_out` is NULL",
        );
        expect(
            kpk_translate_pcm(ptr::null_mut(), audio.as_ptr(), audio.len(), &p, &mut text),
            S::InvalidArgument,
            "`session` is NULL",
        );
        assert!(text.is_null(), "text_out not cleared on failure");
        expect(
            kpk_translate_pcm(sess, ptr::null(), 16000, &p, &mut text),
            S::InvalidArgument,
            "`pcm` is NULL",
        );
        expect(
            kpk_translate_wav(ptr::null_mut(), wav.as_ptr(), &p, &mut text),
            S::InvalidArgument,
            "`session` is NULL",
        );
        expect(
            kpk_translate_wav(sess, ptr::null(), &p, &mut text),
            S::InvalidArgument,
            "`path` is NULL",
        );
        expect(
            kpk_session_last_result(ptr::null(), ptr::null_mut()),
            S::InvalidArgument,
            "`session` is NULL",
        );
        expect(
            kpk_session_last_result(sess, ptr::null_mut()),
            S::InvalidArgument,
            "`result` is NULL",
        );
        // NULL params mean the defaults; NULL text_out means "not needed".
        assert_eq!(
            kpk_translate_wav(sess, wav.as_ptr(), ptr::null(), ptr::null_mut()),
            S::Ok
        );
        // *_free(NULL) is a no-op.
        kpk_model_free(ptr::null_mut());
        kpk_session_free(ptr::null_mut());
        kpk_session_free(sess);
        kpk_model_free(model);
    }
}

#[test]
fn wrong_struct_size() {
    let model = load(common::model_path());
    let sess = session(model);
    let mut m = ptr::null_mut();
    let mut s = ptr::null_mut();
    let mut text: *const c_char = ptr::null();
    let path = cpath(common::model_path());
    let audio = pcm();
    // SAFETY: valid pointers with a wrong struct_size.
    unsafe {
        let mut mp: kpk_model_params = kpk_model_default_params();
        mp.struct_size -= 1;
        expect(
            kpk_model_load(path.as_ptr(), &mp, &mut m),
            S::InvalidArgument,
            "struct_size",
        );
        assert!(m.is_null());
        mp.struct_size = 0;
        expect(
            kpk_model_load_from_memory([1u8; 8].as_ptr(), 8, &mp, &mut m),
            S::InvalidArgument,
            "sizeof(kpk_model_params)",
        );
        let mut sp: kpk_session_params = kpk_session_default_params();
        sp.struct_size += 8;
        expect(
            kpk_session_new(model, &sp, &mut s),
            S::InvalidArgument,
            "sizeof(kpk_session_params)",
        );
        assert!(s.is_null());
        let mut tp = params();
        tp.struct_size = 8;
        expect(
            kpk_translate_pcm(sess, audio.as_ptr(), audio.len(), &tp, &mut text),
            S::InvalidArgument,
            "sizeof(kpk_translate_params)",
        );
        let mut info: kpk_model_info = std::mem::zeroed();
        expect(
            kpk_model_get_info(model, &mut info),
            S::InvalidArgument,
            "sizeof(kpk_model_info)",
        );
        let mut r: kpk_result = std::mem::zeroed();
        r.struct_size = 1 << 40;
        expect(
            kpk_session_last_result(sess, &mut r),
            S::InvalidArgument,
            "sizeof(kpk_result)",
        );
        kpk_session_free(sess);
        kpk_model_free(model);
    }
}

/// Writes `bytes` to a temp file and loads it, from the file and from memory.
fn load_bytes(name: &str, bytes: &[u8], verify: bool) -> (kpk_status, String, kpk_status) {
    let path = common::tmp().join(name);
    std::fs::write(&path, bytes).expect("writing a temp model");
    let mut p = kpk_model_default_params();
    p.verify_checksums = verify;
    let mut m = ptr::null_mut();
    // SAFETY: valid arguments.
    let st = unsafe { kpk_model_load(cpath(&path).as_ptr(), &p, &mut m) };
    let err = last_error();
    // SAFETY: m is NULL or a live model.
    unsafe { kpk_model_free(m) };
    // The huge-page copy fails (or not) exactly as the mapping does.
    #[cfg(target_os = "linux")]
    {
        let mut m = ptr::null_mut();
        // SAFETY: valid arguments.
        let st_huge = unsafe { kpk_model_load_huge_pages(cpath(&path).as_ptr(), &p, &mut m) };
        assert_eq!(st_huge, st, "{name}: {}", last_error());
        if st != S::Ok {
            assert!(m.is_null());
            assert_eq!(last_error(), err, "{name}");
        }
        // SAFETY: m is NULL or a live model.
        unsafe { kpk_model_free(m) };
    }
    let mut m = ptr::null_mut();
    // SAFETY: valid arguments.
    let st_mem = unsafe { kpk_model_load_from_memory(bytes.as_ptr(), bytes.len(), &p, &mut m) };
    if st_mem != S::Ok {
        assert!(m.is_null());
        assert!(!last_error().is_empty());
    }
    // SAFETY: m is NULL or a live model.
    unsafe { kpk_model_free(m) };
    (st, err, st_mem)
}

#[test]
fn corrupt_and_missing_models() {
    let good = std::fs::read(common::model_path()).expect("fixture model");
    let file = kompakt_format::KpkFile::open(common::model_path()).expect("fixture parses");
    let h = file.header();
    let (data_offset, meta_offset) = (h.data_offset as usize, h.meta_offset as usize);
    let biggest = file
        .tensors()
        .max_by_key(|t| t.nbytes)
        .expect("tensors")
        .clone();
    drop(file);

    let mut m = ptr::null_mut();
    let missing = common::tmp().join("does-not-exist.kpk");
    // SAFETY: valid arguments.
    let st = unsafe { kpk_model_load(cpath(&missing).as_ptr(), ptr::null(), &mut m) };
    expect(st, S::Io, "does-not-exist.kpk");
    // SAFETY: valid arguments (a directory).
    let st = unsafe { kpk_model_load(cpath(common::tmp()).as_ptr(), ptr::null(), &mut m) };
    assert_eq!(st, S::Io, "{}", last_error());
    assert!(
        last_error().ends_with("is a directory, not a .kpk file"),
        "{}",
        last_error()
    );
    assert!(m.is_null());

    let (st, e, mem) = load_bytes("garbage.kpk", b"RIFF this is not a model at all", false);
    assert_eq!((st, mem), (S::CorruptModel, S::CorruptModel), "{e}");
    assert!(
        e.contains("not a .kpk file") && e.contains("52 49 46 46 20 74 68 69 (\"RIFF thi\")"),
        "{e}"
    );

    let (st, e, mem) = load_bytes("truncated.kpk", &good[..good.len() / 2], false);
    assert_eq!((st, mem), (S::CorruptModel, S::CorruptModel), "{e}");
    assert!(!e.is_empty());

    let (st, e, mem) = load_bytes("empty.kpk", &[], false);
    assert_eq!(st, S::CorruptModel, "{e}");
    assert_eq!(
        mem,
        S::InvalidArgument,
        "an empty buffer is an argument error"
    );

    let mut bad_meta = good.clone();
    bad_meta[meta_offset + 9] ^= 0x55;
    let (st, e, mem) = load_bytes("bad-meta.kpk", &bad_meta, false);
    assert_eq!((st, mem), (S::CorruptModel, S::CorruptModel), "{e}");
    assert!(e.contains("checksum"), "{e}");

    let mut bad_version = good.clone();
    bad_version[12] = 0x7f; // major version
    let (st, e, mem) = load_bytes("bad-version.kpk", &bad_version, false);
    assert_eq!((st, mem), (S::Unsupported, S::Unsupported), "{e}");
    assert!(e.contains("version"), "{e}");

    // A flipped weight byte passes the structural checks; verify_checksums
    // catches it.
    let mut bad_data = good.clone();
    let at = data_offset + biggest.offset as usize + biggest.nbytes as usize / 2;
    bad_data[at] ^= 0x01;
    let (st, e, mem) = load_bytes("bad-data.kpk", &bad_data, false);
    assert_eq!((st, mem), (S::Ok, S::Ok), "{e}");
    let (st, e, mem) = load_bytes("bad-data.kpk", &bad_data, true);
    assert_eq!((st, mem), (S::CorruptModel, S::CorruptModel), "{e}");
    assert!(e.contains("checksum") && e.contains(&biggest.name), "{e}");
    let (st, e, mem) = load_bytes("good.kpk", &good, true);
    assert_eq!((st, mem), (S::Ok, S::Ok), "{e}");
}

#[test]
fn model_info() {
    let model = load(common::model_path());
    // SAFETY: zeroed is a valid kpk_model_info; then struct_size is set.
    let mut info: kpk_model_info = unsafe { std::mem::zeroed() };
    info.struct_size = std::mem::size_of::<kpk_model_info>();
    // SAFETY: valid arguments.
    assert_eq!(unsafe { kpk_model_get_info(model, &mut info) }, S::Ok);
    // SAFETY: strings owned by the live model.
    let s = |p: *const c_char| unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string();
    assert_eq!(s(info.architecture), "qwen2_audio");
    assert_eq!(s(info.languages), "de,zh");
    assert!(!s(info.name).is_empty());
    let file = kompakt_format::KpkFile::open(common::model_path()).unwrap();
    let summary = kompakt_format::summary::Summary::of(&file);
    assert_eq!(info.n_params, summary.params.total.params);
    assert_eq!(
        info.storage_bytes,
        std::fs::metadata(common::model_path()).unwrap().len()
    );
    assert_eq!(info.size_bin, 5);
    assert_eq!(info.sample_rate, 16000);
    assert_eq!(info.max_samples, 30 * 16000);
    assert!(info.n_ctx > 0 && info.n_vocab > 0);
    assert!(
        (info.bits_per_weight - 32.0).abs() < 1e-9,
        "{}",
        info.bits_per_weight
    );
    // SAFETY: freed once.
    unsafe { kpk_model_free(model) };
}

#[test]
fn bad_translate_options() {
    let model = load(common::model_path());
    let sess = session(model);
    let mut text: *const c_char = ptr::null();
    let audio = pcm();
    let run = |p: &kpk_translate_params| translate(sess, p).0;

    let mut p = params();
    p.language = c"fr".as_ptr();
    let e = expect(run(&p), S::UnknownLanguage, "`fr`");
    assert!(e.contains("de, zh"), "{e}");
    p.language = c"\xff\xfe".as_ptr();
    expect(run(&p), S::InvalidArgument, "UTF-8");
    let mut p = params();
    p.language = ptr::null(); // the default, de
    assert_eq!(run(&p), S::Ok, "{}", last_error());

    for beams in [0, -1, 17] {
        let mut p = params();
        p.beams = beams;
        expect(run(&p), S::InvalidArgument, "beams");
    }
    for max in [0, -5] {
        let mut p = params();
        p.max_tokens = max;
        expect(run(&p), S::InvalidArgument, "max_tokens");
    }
    let mut p = params();
    p.max_tokens = i32::MAX;
    expect(run(&p), S::ContextOverflow, "context");

    let mut sp = kpk_session_default_params();
    sp.n_threads = -1;
    let mut s2 = ptr::null_mut();
    // SAFETY: valid arguments.
    expect(
        unsafe { kpk_session_new(model, &sp, &mut s2) },
        S::InvalidArgument,
        "n_threads",
    );

    let p = params();
    // SAFETY: valid pointers; bad audio.
    unsafe {
        let mut nan = audio.clone();
        nan[100] = f32::NAN;
        expect(
            kpk_translate_pcm(sess, nan.as_ptr(), nan.len(), &p, &mut text),
            S::Audio,
            "sample 100",
        );
        // Over 30 s is cut at pauses: 31 s of silence has no speech, so no
        // segment and an empty translation (not an error).
        let long = vec![0.0f32; 31 * 16000];
        let st = kpk_translate_pcm(sess, long.as_ptr(), long.len(), &p, &mut text);
        assert_eq!(st, S::Ok, "{}", last_error());
        assert_eq!(CStr::from_ptr(text).to_bytes(), b"");
        assert!(segments(sess).is_empty());
        let misaligned = audio.as_ptr().cast::<u8>().add(1).cast::<f32>();
        expect(
            kpk_translate_pcm(sess, misaligned, 100, &p, &mut text),
            S::InvalidArgument,
            "aligned",
        );
        expect(
            kpk_translate_pcm(sess, audio.as_ptr(), usize::MAX, &p, &mut text),
            S::InvalidArgument,
            "n_samples",
        );
        let missing = cpath(&common::tmp().join("missing.wav"));
        expect(
            kpk_translate_wav(sess, missing.as_ptr(), &p, &mut text),
            S::Io,
            "missing.wav",
        );
        let not_wav = common::tmp().join("not.wav");
        std::fs::write(&not_wav, b"definitely not a RIFF file").unwrap();
        expect(
            kpk_translate_wav(sess, cpath(&not_wav).as_ptr(), &p, &mut text),
            S::Audio,
            "not a WAV",
        );
        assert!(text.is_null());
        // A failure clears the last result.
        assert!(token_ids(sess).is_empty());
        kpk_session_free(sess);
        kpk_model_free(model);
    }
}

unsafe extern "C" fn stop_text(_piece: *const c_char, user_data: *mut c_void) -> bool {
    // SAFETY: user_data is a &mut usize in the test.
    let n = unsafe { &mut *user_data.cast::<usize>() };
    *n += 1;
    false
}

unsafe extern "C" fn stop_at_stage(stage: i32, done: f32, user_data: *mut c_void) -> bool {
    if !(0.0..=1.0).contains(&done) {
        return false; // fails the test: the status would not name on_progress's stage
    }
    // SAFETY: user_data is a &i32 in the test.
    stage != unsafe { *user_data.cast::<i32>() }
}

#[test]
fn callbacks_abort() {
    let model = load(common::model_path());
    let sess = session(model);

    let mut calls = 0usize;
    let mut p = params();
    p.on_text = Some(stop_text);
    p.user_data = (&mut calls as *mut usize).cast();
    let (st, text) = translate(sess, &p);
    expect(st, S::Aborted, "on_text");
    assert!(text.is_none());
    assert_eq!(calls, 1, "aborted after the first piece");

    for stage in 0..4 {
        let mut stop = stage;
        let mut p = params();
        p.on_progress = Some(stop_at_stage);
        p.user_data = (&mut stop as *mut i32).cast();
        let (st, _) = translate(sess, &p);
        expect(st, S::Aborted, "on_progress");
    }
    for beams in [1, 2] {
        let mut calls = 0usize;
        let mut p = params();
        p.beams = beams;
        p.on_text = Some(stop_text);
        p.user_data = (&mut calls as *mut usize).cast();
        expect(translate(sess, &p).0, S::Aborted, "on_text");
    }
    // The session still works after aborts.
    let (st, text) = translate(sess, &params());
    assert_eq!(st, S::Ok, "{}", last_error());
    assert_eq!(text.unwrap(), reference().0);
    // SAFETY: freed once.
    unsafe {
        kpk_session_free(sess);
        kpk_model_free(model);
    }
}

unsafe extern "C" fn collect(piece: *const c_char, user_data: *mut c_void) -> bool {
    // SAFETY: a NUL-terminated piece; user_data is a &mut String in the test.
    let (piece, out) = unsafe { (CStr::from_ptr(piece), &mut *user_data.cast::<String>()) };
    out.push_str(&piece.to_string_lossy());
    true
}

#[test]
fn streams_translates_and_matches_every_path() {
    let (text, ids) = reference();
    assert_eq!(
        ids.len(),
        MAX_TOKENS as usize,
        "the tiny model never stops early"
    );

    let model = load(common::model_path());
    let sess = session(model);
    let mut streamed = String::new();
    let mut p = params();
    p.on_text = Some(collect);
    p.user_data = (&mut streamed as *mut String).cast();
    let (st, t) = translate(sess, &p);
    assert_eq!(st, S::Ok, "{}", last_error());
    assert_eq!(t.as_deref(), Some(text.as_str()));
    assert!(text.starts_with(&streamed), "{streamed:?} vs {text:?}");
    assert_eq!(token_ids(sess), ids);

    // The WAV path and the in-memory model agree.
    let mut out: *const c_char = ptr::null();
    let wav = cpath(&common::wav());
    // SAFETY: valid arguments.
    let st = unsafe { kpk_translate_wav(sess, wav.as_ptr(), &params(), &mut out) };
    assert_eq!(st, S::Ok, "{}", last_error());
    // SAFETY: owned by the session until its next call.
    assert_eq!(unsafe { CStr::from_ptr(out) }.to_str().unwrap(), text);

    let bytes = std::fs::read(common::model_path()).unwrap();
    let mut mem = ptr::null_mut();
    // SAFETY: valid arguments; the buffer is dropped right after the call.
    let st =
        unsafe { kpk_model_load_from_memory(bytes.as_ptr(), bytes.len(), ptr::null(), &mut mem) };
    assert_eq!(st, S::Ok, "{}", last_error());
    drop(bytes);
    let s2 = session(mem);
    assert_eq!(translate(s2, &params()).1.as_deref(), Some(text.as_str()));
    assert_eq!(token_ids(s2), ids);

    // The huge-page copy (Linux) translates as the mapping does.
    #[cfg(target_os = "linux")]
    {
        let mut huge = ptr::null_mut();
        let path = cpath(common::model_path());
        // SAFETY: valid arguments.
        let st = unsafe { kpk_model_load_huge_pages(path.as_ptr(), ptr::null(), &mut huge) };
        assert_eq!(st, S::Ok, "{}", last_error());
        let s3 = session(huge);
        assert_eq!(translate(s3, &params()).1.as_deref(), Some(text.as_str()));
        assert_eq!(token_ids(s3), ids);
        // SAFETY: freed once.
        unsafe {
            kpk_session_free(s3);
            kpk_model_free(huge);
        }
    }
    // SAFETY: freed once.
    unsafe {
        kpk_session_free(s2);
        kpk_model_free(mem);
        kpk_session_free(sess);
        kpk_model_free(model);
    }
}

/// `kv_cache` and `prefill_chunk` are read and checked; a caller built
/// against the first header (a two-field `kpk_session_params`) still works,
/// and the bytes past its struct are not read.
#[test]
fn session_options_and_first_header_params() {
    let (text, ids) = reference();
    let model = load(common::model_path());
    let new_session = |p: *const kpk_session_params| {
        let mut s = ptr::null_mut();
        // SAFETY: valid model; p points to a params struct of its struct_size.
        let st = unsafe { kpk_session_new(model, p, &mut s) };
        (st, s)
    };
    let check_same = |s: *mut kpk_session| {
        let (st, t) = translate(s, &params());
        assert_eq!(st, S::Ok, "{}", last_error());
        assert_eq!(t.as_deref(), Some(text.as_str()));
        assert_eq!(token_ids(s), ids);
        // SAFETY: live session, freed once.
        unsafe { kpk_session_free(s) };
    };

    // f32 cache and 3-position prefill chunks: the same greedy translation.
    let mut p = kpk_session_default_params();
    assert_eq!(p.kv_cache, kpk_kv_type::F16 as i32);
    assert_eq!(p.prefill_chunk, 0);
    p.n_threads = 1;
    p.kv_cache = kpk_kv_type::F32 as i32;
    p.prefill_chunk = 3;
    let (st, s) = new_session(&p);
    assert_eq!(st, S::Ok, "{}", last_error());
    check_same(s);

    for kv in [2, -1] {
        let mut p = kpk_session_default_params();
        p.kv_cache = kv;
        let (st, s) = new_session(&p);
        expect(st, S::InvalidArgument, "kv_cache");
        assert!(s.is_null());
    }
    let mut p = kpk_session_default_params();
    p.prefill_chunk = -3;
    let (st, s) = new_session(&p);
    expect(st, S::InvalidArgument, "prefill_chunk");
    assert!(s.is_null());

    // The first header's struct: { size_t struct_size; int32_t n_threads; }.
    // Its padding and the bytes after it hold invalid values of the newer
    // fields, which must not be read.
    #[repr(C)]
    struct V1 {
        struct_size: usize,
        n_threads: i32,
    }
    let mut raw = [0u64; 4];
    let base = raw.as_mut_ptr().cast::<u8>();
    // SAFETY: raw is 32 bytes, 8-aligned; every write is in bounds and aligned.
    unsafe {
        base.cast::<usize>().write(std::mem::size_of::<V1>());
        base.add(std::mem::offset_of!(kpk_session_params, n_threads))
            .cast::<i32>()
            .write(1);
        base.add(std::mem::offset_of!(kpk_session_params, kv_cache))
            .cast::<i32>()
            .write(77);
        base.add(std::mem::offset_of!(kpk_session_params, prefill_chunk))
            .cast::<i32>()
            .write(-1);
    }
    let (st, s) = new_session(base.cast());
    assert_eq!(st, S::Ok, "{}", last_error());
    check_same(s);
    // SAFETY: freed once.
    unsafe { kpk_model_free(model) };
}

#[test]
fn session_outlives_its_model() {
    let (text, ids) = reference();
    let model = load(common::model_path());
    let sess = session(model);
    // SAFETY: the caller's reference is released; the session keeps its own.
    unsafe { kpk_model_free(model) };
    let (st, t) = translate(sess, &params());
    assert_eq!(st, S::Ok, "{}", last_error());
    assert_eq!(t.unwrap(), text);
    assert_eq!(token_ids(sess), ids);
    // SAFETY: freed once.
    unsafe { kpk_session_free(sess) };
}

struct Reentry {
    session: *mut kpk_session,
    inner: Option<kpk_status>,
    error: String,
    free: bool,
}

unsafe extern "C" fn reenter(_piece: *const c_char, user_data: *mut c_void) -> bool {
    // SAFETY: user_data is a &mut Reentry in the test.
    let r = unsafe { &mut *user_data.cast::<Reentry>() };
    if r.free {
        // SAFETY: the live session of the running call: the free is deferred.
        unsafe { kpk_session_free(r.session) };
        return true;
    }
    if r.inner.is_none() {
        let audio = [0.0f32; 1600];
        let mut text = ptr::null();
        let p = kpk_translate_default_params();
        // SAFETY: valid arguments; the session is busy.
        let st = unsafe { kpk_translate_pcm(r.session, audio.as_ptr(), 1600, &p, &mut text) };
        r.inner = Some(st);
        r.error = last_error();
    }
    true
}

#[test]
fn reentrant_use_is_busy_and_free_is_deferred() {
    let (text, _) = reference();
    let model = load(common::model_path());
    let sess = session(model);
    let mut r = Reentry {
        session: sess,
        inner: None,
        error: String::new(),
        free: false,
    };
    let mut p = params();
    p.on_text = Some(reenter);
    p.user_data = (&mut r as *mut Reentry).cast();
    let (st, t) = translate(sess, &p);
    assert_eq!(st, S::Ok, "{}", last_error());
    assert_eq!(t.unwrap(), text);
    assert_eq!(r.inner, Some(S::Busy));
    assert!(r.error.contains("in use"), "{}", r.error);

    // Freed from its own callback: the call completes, then frees it.
    r.free = true;
    let (st, t) = translate(sess, &p);
    assert_eq!(st, S::Ok, "{}", last_error());
    assert!(t.is_none(), "no text from a session freed during the call");
    // SAFETY: freed once (the session is gone).
    unsafe { kpk_model_free(model) };
}

#[test]
fn one_model_many_threads() {
    let (text, _) = reference();
    let model = load(common::model_path()) as usize;
    let threads: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                let sess = session(model as *const kpk_model);
                let out = translate(sess, &params());
                // SAFETY: freed once.
                unsafe { kpk_session_free(sess) };
                out
            })
        })
        .collect();
    for t in threads {
        let (st, t) = t.join().unwrap();
        assert_eq!(st, S::Ok);
        assert_eq!(t.unwrap(), text);
    }
    // SAFETY: freed once.
    unsafe { kpk_model_free(model as *mut kpk_model) };
}

#[test]
fn last_error_is_per_thread() {
    let mut m = ptr::null_mut();
    // SAFETY: NULL path is checked.
    let st = unsafe { kpk_model_load(ptr::null(), ptr::null(), &mut m) };
    expect(st, S::InvalidArgument, "`path` is NULL");
    let other = std::thread::spawn(last_error).join().unwrap();
    assert_eq!(other, "");
    assert!(last_error().contains("`path` is NULL"));
}

#[test]
fn prompts_and_one_off_instructions() {
    let model = load(common::model_path());
    let sess = session(model);
    let audio = pcm();
    let mut text: *const c_char = ptr::null();
    let str_of = |p: *const c_char| -> Option<String> {
        // SAFETY: NULL or a NUL-terminated string owned by the model.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    };
    // SAFETY: valid or NULL pointers, as each call documents.
    unsafe {
        let t = str_of(kpk_model_prompt_template(model)).expect("a template");
        assert!(t.contains("{audio}") && t.contains("{instruction}"), "{t}");
        assert_eq!(
            str_of(kpk_model_instruction(model, c("de").as_ptr())).as_deref(),
            Some("Translate the English speech into German:")
        );
        assert!(kpk_model_instruction(model, c("fr").as_ptr()).is_null());
        assert!(kpk_model_instruction(model, ptr::null()).is_null());
        assert!(kpk_model_instruction(ptr::null(), c("de").as_ptr()).is_null());
        assert!(kpk_model_prompt_template(ptr::null()).is_null());

        // The model's own instruction, given explicitly, changes nothing;
        // another one changes the output.
        let mut tp = params();
        let run = |tp: &kpk_translate_params, text: &mut *const c_char| {
            let st = kpk_translate_pcm(sess, audio.as_ptr(), audio.len(), tp, text);
            assert_eq!(st, S::Ok, "{}", last_error());
            CStr::from_ptr(*text).to_string_lossy().into_owned()
        };
        let own = run(&tp, &mut text);
        let de = c("Translate the English speech into German:");
        tp.instruction = de.as_ptr();
        let xx = c("xx");
        tp.language = xx.as_ptr(); // not used with an instruction
        assert_eq!(run(&tp, &mut text), own);
        let other = c("Please render this English recording in German.");
        tp.instruction = other.as_ptr();
        assert_ne!(run(&tp, &mut text), own);
        let bad = c("");
        tp.instruction = bad.as_ptr();
        expect(
            kpk_translate_pcm(sess, audio.as_ptr(), audio.len(), &tp, &mut text),
            S::InvalidArgument,
            "instruction is empty",
        );
        kpk_session_free(sess);
        kpk_model_free(model);
    }
}

/// Segments of the last translation through the C API.
fn segments(s: *const kpk_session) -> Vec<(f64, f64, String, Vec<u32>)> {
    let mut n = usize::MAX;
    // SAFETY: valid arguments.
    let st = unsafe { kpk_session_segment_count(s, &mut n) };
    assert_eq!(st, S::Ok, "{}", last_error());
    (0..n)
        .map(|i| {
            // SAFETY: zeroed is a valid kpk_segment; then struct_size is set.
            let mut g: kpk_segment = unsafe { std::mem::zeroed() };
            g.struct_size = std::mem::size_of::<kpk_segment>();
            // SAFETY: valid arguments.
            let st = unsafe { kpk_session_segment(s, i, &mut g) };
            assert_eq!(st, S::Ok, "{}", last_error());
            // SAFETY: owned by the session until its next call.
            let text = unsafe { CStr::from_ptr(g.text) }
                .to_string_lossy()
                .into_owned();
            let ids = if g.n_tokens == 0 {
                Vec::new()
            } else {
                // SAFETY: n_tokens ids owned by the session.
                unsafe { std::slice::from_raw_parts(g.token_ids, g.n_tokens) }.to_vec()
            };
            (g.start_s, g.end_s, text, ids)
        })
        .collect()
}

#[test]
fn long_audio_is_translated_in_segments() {
    let m = load(common::model_path());
    let s = session(m);
    // Short audio: one segment, the whole translation.
    let (st, text) = translate(s, &params());
    assert_eq!(st, S::Ok, "{}", last_error());
    let one = segments(s);
    assert_eq!(one.len(), 1);
    assert_eq!(Some(&one[0].2), text.as_ref());
    assert_eq!(one[0].3, token_ids(s));
    assert_eq!(one[0].0, 0.0);
    // A 41 s recording, as PCM and as a WAV file: several segments, each at
    // most 30 s, in order; the whole text is their lines.
    let long = common::root().join("tests/fixtures/longform/talk.wav");
    let pcm = kompakt_audio::load_16k_mono(&long).unwrap();
    let mut by_path = Vec::new();
    for from_file in [false, true] {
        let mut out: *const c_char = ptr::null();
        // SAFETY: valid arguments.
        let st = unsafe {
            if from_file {
                kpk_translate_wav(s, cpath(&long).as_ptr(), &params(), &mut out)
            } else {
                kpk_translate_pcm(s, pcm.as_ptr(), pcm.len(), &params(), &mut out)
            }
        };
        assert_eq!(st, S::Ok, "{}", last_error());
        // SAFETY: NUL-terminated, owned by the session.
        let text = unsafe { CStr::from_ptr(out) }
            .to_string_lossy()
            .into_owned();
        let segs = segments(s);
        assert!(segs.len() > 2, "{} segments", segs.len());
        for w in segs.windows(2) {
            assert!(w[0].1 <= w[1].0 + 1e-9, "{:?} then {:?}", w[0].0, w[1].0);
        }
        for g in &segs {
            assert!(g.1 > g.0 && g.1 - g.0 <= 30.0, "{} .. {}", g.0, g.1);
        }
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines.len(), segs.len());
        let ids: Vec<u32> = segs.iter().flat_map(|g| g.3.clone()).collect();
        assert_eq!(ids, token_ids(s));
        by_path.push(segs);
    }
    // A 16 kHz file is cut and read exactly as its samples are.
    assert_eq!(by_path[0], by_path[1]);
    // Misuse: index past the end, NULL, wrong size; a failed call leaves none.
    let mut g: kpk_segment = unsafe { std::mem::zeroed() };
    g.struct_size = std::mem::size_of::<kpk_segment>();
    // SAFETY: valid pointers, bad index.
    let st = unsafe { kpk_session_segment(s, 999, &mut g) };
    expect(st, S::InvalidArgument, "999");
    // SAFETY: NULL output.
    let st = unsafe { kpk_session_segment_count(s, ptr::null_mut()) };
    expect(st, S::InvalidArgument, "count_out");
    g.struct_size = 8;
    // SAFETY: valid pointers, wrong struct_size.
    let st = unsafe { kpk_session_segment(s, 0, &mut g) };
    expect(st, S::InvalidArgument, "kpk_segment");
    let mut p = params();
    p.beams = 0;
    let (st, _) = translate(s, &p);
    assert_eq!(st, S::InvalidArgument);
    assert!(segments(s).is_empty());
    // SAFETY: live handles, freed once.
    unsafe {
        kpk_session_free(s);
        kpk_model_free(m);
    }
}
