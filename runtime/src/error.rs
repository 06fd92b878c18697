//! Errors of the runtime.
use thiserror::Error;

/// Everything that can go wrong while loading a model or translating.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The model file could not be read or is malformed.
    #[error(transparent)]
    Format(#[from] kompakt_format::FormatError),
    /// The audio could not be decoded or is out of range.
    #[error(transparent)]
    Audio(#[from] kompakt_audio::AudioError),
    /// The model file parses but its contents are inconsistent.
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// The file is valid but describes something this runtime cannot run.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// A tensor is missing or has the wrong shape or type.
    #[error("invalid model: tensor `{name}`: {msg}")]
    Tensor { name: String, msg: String },
    /// The tokenizer stored in the file failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The requested target language has no prompt in this model.
    #[error("target language `{lang}` is not available in this model (available: {available})")]
    UnknownLanguage { lang: String, available: String },
    /// The prompt plus the requested tokens do not fit the context.
    #[error("{needed} positions needed but the model's context is {limit}")]
    ContextOverflow { needed: usize, limit: usize },
    /// An argument is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A callback asked to stop.
    #[error("aborted by callback")]
    Aborted,
    /// The worker thread pool could not be created.
    #[error("thread pool: {0}")]
    ThreadPool(String),
}

/// Result alias of the runtime.
pub type Result<T> = std::result::Result<T, RuntimeError>;
