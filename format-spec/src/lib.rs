//! The `.kpk` single-file model format (see `FORMAT.md`).
pub mod dtype;
pub use dtype::DType;
