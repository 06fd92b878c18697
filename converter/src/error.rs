//! Errors of the converter.
use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong while converting a checkpoint.
#[derive(Debug, Error)]
pub enum ConvertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid JSON file: {msg}")]
    Json { path: PathBuf, msg: String },
    #[error("{path}: invalid safetensors file: {msg}")]
    Safetensors { path: PathBuf, msg: String },
    #[error("checkpoint {dir}: {msg}")]
    Checkpoint { dir: PathBuf, msg: String },
    #[error("tensor `{name}` is missing from the checkpoint (looked in {looked_in})")]
    MissingTensor { name: String, looked_in: String },
    #[error("tensor `{name}` in {shard}: shape {got:?} does not match the config, which implies {expected:?}")]
    Shape {
        name: String,
        shard: String,
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("tensor `{name}` in {shard}: dtype {dtype} is not supported (bf16, f16 and f32 are)")]
    UnsupportedDtype {
        name: String,
        shard: String,
        dtype: String,
    },
    #[error("config.json: {0}")]
    Config(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("invalid option: {0}")]
    Option(String),
    #[error("quantizing `{name}`: {msg}")]
    Quantize { name: String, msg: String },
    #[error(transparent)]
    Format(#[from] kompakt_format::FormatError),
    #[error(transparent)]
    Calibration(#[from] crate::calib::CalibError),
    #[error("conversion cancelled")]
    Cancelled,
}

pub type Result<T> = std::result::Result<T, ConvertError>;
