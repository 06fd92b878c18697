//! kompakt's converter: Hugging Face Qwen2-Audio checkpoints to `.kpk`.
pub mod calib;
pub mod checkpoint;
pub mod codes;
pub mod convert;
pub mod error;
pub mod hparams;
pub mod mapping;
pub mod plan;
pub mod recipe;
pub mod synth;
pub mod training;
pub mod vocab;

pub use convert::{convert, ConvertOptions, ConvertSummary, Progress, PromptStyle, Stage};
pub use error::{ConvertError, Result};
