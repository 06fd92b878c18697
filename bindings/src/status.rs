//! Status codes, the thread-local last error, and the guard every entry point
//! runs its body in (no panic crosses the C boundary).
use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use kompakt_audio::AudioError;
use kompakt_format::FormatError;
use kompakt_runtime::RuntimeError;

/// Result of every fallible call. On anything but `KPK_STATUS_OK`,
/// `kpk_last_error()` describes the failure.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum kpk_status {
    /// Success.
    Ok = 0,
    /// A NULL pointer, wrong `struct_size`, out-of-range value or non-UTF-8 string.
    InvalidArgument = 1,
    /// A file could not be opened, mapped or read.
    Io = 2,
    /// The model file is not a valid `.kpk` file, or its contents are inconsistent.
    CorruptModel = 3,
    /// The file is valid but uses a format version, data type or architecture this build does not support.
    Unsupported = 4,
    /// The audio could not be decoded, is longer than 30 s or holds non-finite samples.
    Audio = 5,
    /// A callback returned false.
    Aborted = 6,
    /// The prompt plus `max_tokens` do not fit the model's context.
    ContextOverflow = 7,
    /// The model has no prompt for the requested target language.
    UnknownLanguage = 8,
    /// The session is in use by another call (concurrent or re-entrant use from a callback).
    Busy = 9,
    /// A bug in kompakt (a caught panic or an unexpected runtime failure).
    Internal = 10,
}

/// Every status, in code order.
pub(crate) static ALL_STATUSES: [kpk_status; 11] = [
    kpk_status::Ok,
    kpk_status::InvalidArgument,
    kpk_status::Io,
    kpk_status::CorruptModel,
    kpk_status::Unsupported,
    kpk_status::Audio,
    kpk_status::Aborted,
    kpk_status::ContextOverflow,
    kpk_status::UnknownLanguage,
    kpk_status::Busy,
    kpk_status::Internal,
];

impl kpk_status {
    /// The C name without its prefix (`INVALID_ARGUMENT`), NUL-terminated.
    pub(crate) fn name(self) -> &'static CStr {
        match self {
            kpk_status::Ok => c"OK",
            kpk_status::InvalidArgument => c"INVALID_ARGUMENT",
            kpk_status::Io => c"IO",
            kpk_status::CorruptModel => c"CORRUPT_MODEL",
            kpk_status::Unsupported => c"UNSUPPORTED",
            kpk_status::Audio => c"AUDIO",
            kpk_status::Aborted => c"ABORTED",
            kpk_status::ContextOverflow => c"CONTEXT_OVERFLOW",
            kpk_status::UnknownLanguage => c"UNKNOWN_LANGUAGE",
            kpk_status::Busy => c"BUSY",
            kpk_status::Internal => c"INTERNAL",
        }
    }
}

/// A failure on its way to the caller: a status and a message.
#[derive(Debug)]
pub(crate) struct Error {
    pub status: kpk_status,
    pub msg: String,
}

impl Error {
    pub fn new(status: kpk_status, msg: impl Into<String>) -> Error {
        Error {
            status,
            msg: msg.into(),
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Error {
        Error::new(kpk_status::InvalidArgument, msg)
    }
}

fn format_status(e: &FormatError) -> kpk_status {
    match e {
        FormatError::Io { .. } | FormatError::DiskFull { .. } | FormatError::NotAFile { .. } => {
            kpk_status::Io
        }
        FormatError::UnsupportedVersion { .. } | FormatError::UnknownDType { .. } => {
            kpk_status::Unsupported
        }
        _ => kpk_status::CorruptModel,
    }
}

impl From<RuntimeError> for Error {
    fn from(e: RuntimeError) -> Error {
        let status = match &e {
            RuntimeError::Format(f) => format_status(f),
            RuntimeError::Audio(AudioError::Io { .. }) => kpk_status::Io,
            RuntimeError::Audio(_) => kpk_status::Audio,
            RuntimeError::Unsupported(_) => kpk_status::Unsupported,
            RuntimeError::InvalidModel(_)
            | RuntimeError::Tensor { .. }
            | RuntimeError::Tokenizer(_) => kpk_status::CorruptModel,
            RuntimeError::UnknownLanguage { .. } => kpk_status::UnknownLanguage,
            RuntimeError::ContextOverflow { .. } => kpk_status::ContextOverflow,
            RuntimeError::InvalidArgument(_) => kpk_status::InvalidArgument,
            RuntimeError::Aborted => kpk_status::Aborted,
            RuntimeError::ThreadPool(_) => kpk_status::Internal,
        };
        Error::new(status, e.to_string())
    }
}

impl From<FormatError> for Error {
    fn from(e: FormatError) -> Error {
        Error::new(format_status(&e), e.to_string())
    }
}

impl From<AudioError> for Error {
    fn from(e: AudioError) -> Error {
        RuntimeError::from(e).into()
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Stores `msg` as this thread's last error (interior NULs dropped).
pub(crate) fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', "")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = c);
}

/// This thread's last error message ("" when none).
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR
        .try_with(|e| e.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

fn panic_message(p: &(dyn Any + Send)) -> &str {
    if let Some(s) = p.downcast_ref::<&str>() {
        s
    } else if let Some(s) = p.downcast_ref::<String>() {
        s
    } else {
        "unknown panic payload"
    }
}

/// Runs `f`, turning its error or panic into a status and the last error.
pub(crate) fn guard(f: impl FnOnce() -> Result<(), Error>) -> kpk_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => kpk_status::Ok,
        Ok(Err(e)) => {
            set_last_error(&e.msg);
            e.status
        }
        Err(p) => {
            set_last_error(&format!(
                "internal error (please report): panic: {}",
                panic_message(p.as_ref())
            ));
            kpk_status::Internal
        }
    }
}

/// Runs a function that cannot report a status (`*_free`, getters) and
/// swallows a panic, recording it as the last error.
pub(crate) fn guard_void(f: impl FnOnce()) {
    let _ = guard(|| {
        f();
        Ok(())
    });
}

/// Fails unless `p` is non-NULL.
pub(crate) fn non_null<T>(p: *const T, what: &str) -> Result<(), Error> {
    if p.is_null() {
        Err(Error::invalid(format!("`{what}` is NULL")))
    } else {
        Ok(())
    }
}

/// Reads a NUL-terminated UTF-8 argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, Error> {
    non_null(p, what)?;
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str()
        .map_err(|_| Error::invalid(format!("`{what}` is not valid UTF-8")))
}

/// Types whose first field is `size_t struct_size`.
pub(crate) trait CStruct {
    /// The C type name, for messages.
    const NAME: &'static str;
}

/// Checks an out-struct's pointer, alignment and `struct_size` (the only
/// field read).
///
/// # Safety
/// `p` is NULL or points to a `T` whose first field is an initialized `usize`.
pub(crate) unsafe fn check_struct<T: CStruct>(p: *const T, what: &str) -> Result<(), Error> {
    non_null(p, what)?;
    if !p.is_aligned() {
        return Err(Error::invalid(format!("`{what}` is misaligned")));
    }
    // SAFETY: non-NULL, aligned, and every version of T starts with a usize.
    let size = unsafe { p.cast::<usize>().read() };
    check_size::<T>(size, what)
}

/// Copies a caller's struct after checking its pointer and `struct_size`.
///
/// # Safety
/// `p` is NULL or points to an initialized `T`.
pub(crate) unsafe fn read_struct<T: CStruct + Copy>(p: *const T, what: &str) -> Result<T, Error> {
    // SAFETY: per the caller's contract.
    unsafe { check_struct(p, what)? };
    // SAFETY: the caller's struct is as large as ours.
    Ok(unsafe { p.read() })
}

/// Fails unless `size` is this build's `sizeof(T)`.
pub(crate) fn check_size<T: CStruct>(size: usize, what: &str) -> Result<(), Error> {
    let expected = std::mem::size_of::<T>();
    if size != expected {
        return Err(Error::invalid(format!(
            "`{what}->struct_size` is {size} but this library's sizeof({}) is {expected}: \
             initialize it with the matching kpk_*_default_params() or sizeof, and use the \
             header that came with the library",
            T::NAME
        )));
    }
    Ok(())
}
