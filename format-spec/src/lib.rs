//! The `.kpk` single-file model format (see `FORMAT.md`): the dtype table,
//! the byte layout, a validating zero-copy reader, a streaming writer and the
//! size/parameter summary used by `kompakt inspect`.
//!
//! ```no_run
//! use kompakt_format::{DType, KpkFile, KpkWriter};
//! # fn main() -> Result<(), kompakt_format::FormatError> {
//! let mut w = KpkWriter::create("model.kpk")?;
//! w.metadata_mut().insert("general.architecture", "qwen2_audio")?;
//! w.write_tensor("llm.norm.weight", DType::F32, &[2], bytemuck::cast_slice(&[1.0f32, 2.0]))?;
//! w.finish()?;
//!
//! let f = KpkFile::open("model.kpk")?;
//! f.verify()?;
//! let norm: &[f32] = f.tensor("llm.norm.weight")?.as_f32()?;
//! # Ok(()) }
//! ```
pub mod dtype;
pub mod error;
pub mod layout;
pub mod metadata;
pub mod parse;
pub mod prompt;
pub mod reader;
pub mod summary;
pub mod vocab;
pub mod writer;

pub use dtype::DType;
pub use error::{FormatError, Result};
pub use metadata::{is_valid_key, MetaValue, Metadata};
#[cfg(feature = "tokenizer-json")]
pub use metadata::{set_tokenizer_json, tokenizer_json};
pub use parse::{parse, parse_labeled, ParsedFile, TensorInfo};
pub use reader::{KpkFile, TensorView};
pub use writer::{KpkWriter, WriteSummary};
