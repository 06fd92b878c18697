//! kompakt's converter: Hugging Face Qwen2-Audio checkpoints to `.kpk`.
pub mod checkpoint;
pub mod convert;
pub mod error;
pub mod hparams;
pub mod mapping;
pub mod synth;

pub use convert::{convert, ConvertOptions, ConvertSummary, Progress, PromptStyle};
pub use error::{ConvertError, Result};
