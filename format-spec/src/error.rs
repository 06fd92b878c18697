//! Every way reading, writing or querying a `.kpk` file can fail.
//!
//! Following the safetensors crate, each failure has its own documented
//! variant. Variants raised while parsing name the file (its path, or
//! `<memory>` for a buffer), the field and the byte offset where the problem
//! was found, so a corrupted model can be diagnosed from the message alone.

use crate::DType;

/// The one error type of `kompakt-format`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// An I/O operation (`op`: open, map, write, fsync, rename, ...) failed.
    #[error("{file}: I/O error during {op}: {source}")]
    Io {
        file: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// The path is a directory, a device or another non-regular file.
    #[error("{file}: is {kind}, not a .kpk file")]
    NotAFile { file: String, kind: &'static str },

    /// The disk (or quota) is full while writing.
    #[error("{file}: disk full during {op}: {source}")]
    DiskFull {
        file: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// The first 8 bytes are not `KOMPAKT\0`: not a `.kpk` file, or a file
    /// whose header was never finalized (interrupted write).
    #[error("{file}: not a .kpk file (or an unfinished write): field `magic` at offset 0 holds {} where a .kpk file has \"KOMPAKT\\0\"", bytes_text(found))]
    BadMagic { file: String, found: Vec<u8> },

    /// The endianness tag reads byte-swapped: the file was written big-endian.
    #[error("{file}: field `endian_tag` at offset 8: byte-swapped file (found {found:#010x}); .kpk files are little-endian")]
    ByteSwapped { file: String, found: u32 },

    /// The endianness tag is neither the expected value nor its byte swap.
    #[error("{file}: field `endian_tag` at offset 8: invalid value {found:#010x}")]
    BadEndianTag { file: String, found: u32 },

    /// The major version is not one this build reads.
    #[error("{file}: field `version` at offset 12: unsupported format version {major}.{minor} (this build reads {supported}.x)")]
    UnsupportedVersion {
        file: String,
        major: u16,
        minor: u16,
        supported: u16,
    },

    /// A read of `needed` bytes at `offset` runs past the end of the bytes
    /// available for `field`.
    #[error("{file}: field `{field}` at offset {offset}: truncated, needs {needed} bytes but only {available} remain")]
    Truncated {
        file: String,
        field: String,
        offset: u64,
        needed: u64,
        available: u64,
    },

    /// The file size recorded in the header differs from the actual size.
    #[error("{file}: field `file_size` at offset 24: header says {expected} bytes but the file has {actual} (truncated or appended to)")]
    FileSizeMismatch {
        file: String,
        expected: u64,
        actual: u64,
    },

    /// The xxh3-64 over header, metadata and directory does not match.
    #[error("{file}: field `checksum` at offset 120: header/metadata/directory checksum mismatch (stored {expected:#018x}, computed {actual:#018x})")]
    ChecksumMismatch {
        file: String,
        expected: u64,
        actual: u64,
    },

    /// A tensor's bytes do not match its directory checksum.
    #[error("{file}: tensor `{name}` at offset {offset}: data checksum mismatch (stored {expected:#018x}, computed {actual:#018x})")]
    TensorChecksumMismatch {
        file: String,
        name: String,
        offset: u64,
        expected: u64,
        actual: u64,
    },

    /// A section (header, data, metadata, directory) is placed inconsistently.
    #[error("{file}: field `{field}` at offset {offset}: invalid layout: {reason}")]
    BadLayout {
        file: String,
        field: String,
        offset: u64,
        reason: String,
    },

    /// A count, length or rank exceeds a format limit or the bytes available.
    #[error("{file}: field `{field}` at offset {offset}: value {value} exceeds the limit {limit}")]
    LimitExceeded {
        file: String,
        field: String,
        offset: u64,
        value: u64,
        limit: u64,
    },

    /// A string field is not valid UTF-8.
    #[error("{file}: field `{field}` at offset {offset}: invalid UTF-8")]
    InvalidUtf8 {
        file: String,
        field: String,
        offset: u64,
    },

    /// A metadata key is not dotted `lower_snake_case` (at most 1 KiB).
    #[error("{file}: metadata key {key:?} at offset {offset}: not dotted lower_snake_case")]
    InvalidKey {
        file: String,
        key: String,
        offset: u64,
    },

    /// A tensor name is empty or longer than 1 KiB.
    #[error("{file}: tensor name {name:?} at offset {offset}: {reason}")]
    InvalidTensorName {
        file: String,
        name: String,
        offset: u64,
        reason: &'static str,
    },

    /// A metadata key appears twice.
    #[error("{file}: metadata key `{key}` at offset {offset}: duplicate key")]
    DuplicateKey {
        file: String,
        key: String,
        offset: u64,
    },

    /// A tensor name appears twice.
    #[error("{file}: tensor `{name}` at offset {offset}: duplicate tensor name")]
    DuplicateTensor {
        file: String,
        name: String,
        offset: u64,
    },

    /// A metadata value is malformed for its type (bad bool byte, length not
    /// a multiple of the element size, ...).
    #[error("{file}: metadata key `{key}` at offset {offset}: bad value: {reason}")]
    BadValue {
        file: String,
        key: String,
        offset: u64,
        reason: String,
    },

    /// A tensor uses a dtype id this build does not know (written by a newer
    /// version of kompakt).
    #[error("{file}: tensor `{name}` field `dtype` at offset {offset}: unsupported dtype id {id} (written by a newer kompakt?)")]
    UnknownDType {
        file: String,
        name: String,
        offset: u64,
        id: u32,
    },

    /// A tensor's dtype id is one that an older format version used and
    /// this build no longer reads.
    #[error(
        "{file}: tensor `{name}` field `dtype` at offset {offset}: retired dtype id {id}: {what}"
    )]
    RetiredDType {
        file: String,
        name: String,
        offset: u64,
        id: u32,
        what: &'static str,
    },

    /// A tensor's data offset is not a multiple of the 64-byte alignment.
    #[error("{file}: tensor `{name}` field `offset` at offset {offset}: data offset {value} is not a multiple of {align}")]
    Misaligned {
        file: String,
        name: String,
        offset: u64,
        value: u64,
        align: u64,
    },

    /// Two tensors' byte ranges overlap.
    #[error("{file}: tensor `{name}` field `offset` at offset {offset}: bytes {start}..{end} of the data section overlap tensor `{other}`")]
    TensorOverlap {
        file: String,
        name: String,
        other: String,
        offset: u64,
        start: u64,
        end: u64,
    },

    /// A tensor's bytes extend past the end of the data section.
    #[error("{file}: tensor `{name}` field `nbytes` at offset {offset}: bytes {start}..{end} run past the end of the data section ({data_size} bytes)")]
    TensorOutOfBounds {
        file: String,
        name: String,
        offset: u64,
        start: u64,
        end: u64,
        data_size: u64,
    },

    /// A tensor's shape cannot be stored in its dtype (`DType::shape_error`).
    #[error("{file}: tensor `{name}` field `dims` at offset {offset}: {reason}")]
    BadShape {
        file: String,
        name: String,
        offset: u64,
        reason: String,
    },

    /// A tensor's byte length is not `DType::storage_bytes(shape)`.
    #[error("{file}: tensor `{name}` field `nbytes` at offset {offset}: {found} bytes, but {dtype} {shape:?} needs {}", match .expected { Some(n) => format!("{n} bytes"), None => "more than 2^64 bytes".to_string() })]
    ByteLengthMismatch {
        file: String,
        name: String,
        offset: u64,
        dtype: DType,
        shape: Vec<u64>,
        expected: Option<u64>,
        found: u64,
    },

    /// `KpkFile::tensor` was asked for a name the file does not hold.
    #[error("{file}: no tensor named `{name}`")]
    TensorNotFound { file: String, name: String },

    /// A typed view was asked for a tensor of another dtype.
    #[error("tensor `{name}`: is {found}, not {requested}")]
    DTypeMismatch {
        name: String,
        requested: &'static str,
        found: DType,
    },

    /// A quantized tensor cannot be dequantized by this crate.
    #[error("tensor `{name}`: {dtype} is block-quantized; dequantize it with kompakt-kernels")]
    Quantized { name: String, dtype: DType },

    /// The bytes could not be viewed as the requested element type.
    #[error("tensor `{name}`: cannot view as {requested}: {reason}")]
    View {
        name: String,
        requested: &'static str,
        reason: String,
    },

    /// A required metadata key is absent.
    #[error("{file}: metadata key `{key}` is missing")]
    MissingKey { file: String, key: String },

    /// A metadata key holds another type than the one asked for.
    #[error("{file}: metadata key `{key}` is {found}, not {expected}")]
    WrongType {
        file: String,
        key: String,
        expected: &'static str,
        found: &'static str,
    },

    /// zstd compression or decompression of a metadata value failed.
    #[error("{file}: metadata key `{key}`: zstd error: {reason}")]
    Zstd {
        file: String,
        key: String,
        reason: String,
    },

    /// A writer was given inconsistent input (rank too high, too many
    /// entries, ...).
    #[error("{file}: {reason}")]
    InvalidInput { file: String, reason: String },
}

/// Bytes for a message: hex, then the printable ASCII among them (others as
/// `.`), e.g. `4a 44 45 49 ("JDEI")`.
pub(crate) fn bytes_text(bytes: &[u8]) -> String {
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let text: String = bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    format!("the bytes {} (\"{text}\")", hex.join(" "))
}

impl FormatError {
    pub(crate) fn io(file: &str, op: &'static str, source: std::io::Error) -> FormatError {
        if source.kind() == std::io::ErrorKind::StorageFull {
            FormatError::DiskFull {
                file: file.to_string(),
                op,
                source,
            }
        } else {
            FormatError::Io {
                file: file.to_string(),
                op,
                source,
            }
        }
    }
}

/// `Result` with [`FormatError`].
pub type Result<T, E = FormatError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_full_maps_to_disk_full() {
        let e = FormatError::io(
            "/m.kpk",
            "write tensor",
            std::io::ErrorKind::StorageFull.into(),
        );
        assert!(matches!(e, FormatError::DiskFull { .. }));
        assert!(e.to_string().contains("/m.kpk"), "{e}");
        let e = FormatError::io("/m.kpk", "open", std::io::ErrorKind::NotFound.into());
        assert!(matches!(e, FormatError::Io { .. }));
    }
}
