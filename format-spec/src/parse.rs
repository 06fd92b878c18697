//! The pure `&[u8]` parser of format v1: validates the header, the section
//! layout, the checksum, the metadata and the tensor directory.
//!
//! Follows the safetensors reader: every size computation is checked, every
//! read goes through a bounds-checked cursor, every count is bounded by the
//! bytes that could hold it, and every failure is a [`FormatError`] naming
//! the file, the field and the byte offset. No input makes it panic.

use crate::error::{FormatError, Result};
use crate::layout::{self, tag, Header, ALIGNMENT, HEADER_SIZE, MAX_NAME_LEN, MAX_RANK};
use crate::metadata::{is_valid_key, MetaValue, Metadata};
use crate::DType;
use std::collections::{HashMap, HashSet};

/// Label used in errors for files parsed from memory.
pub const MEMORY_LABEL: &str = "<memory>";

/// Smallest possible metadata entry: key_len, a 1-byte key, tag, value_len.
const MIN_META_ENTRY: u64 = 4 + 1 + 4 + 8;
/// Smallest possible directory entry: name_len, a 1-byte name, dtype, rank,
/// offset, nbytes, checksum.
const MIN_DIR_ENTRY: u64 = 4 + 1 + 4 + 4 + 8 + 8 + 8;

/// Description of one stored tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    /// Absolute byte offset in the file (a multiple of 64).
    pub offset: u64,
    /// Stored bytes, equal to `dtype.storage_bytes(&shape)`.
    pub nbytes: u64,
    /// xxh3-64 of the stored bytes.
    pub checksum: u64,
}

impl TensorInfo {
    /// Number of logical elements (1 for a scalar). Bounded at parse time.
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// Everything the parser extracts from a file's bytes.
#[derive(Clone, Debug)]
pub struct ParsedFile {
    pub header: Header,
    pub metadata: Metadata,
    /// In directory (file) order.
    pub tensors: Vec<TensorInfo>,
    /// Metadata entries skipped because their type tag is unknown.
    pub skipped_keys: Vec<String>,
}

/// Parses and validates `bytes` as a `.kpk` file; errors name `<memory>`.
pub fn parse(bytes: &[u8]) -> Result<ParsedFile> {
    parse_labeled(bytes, MEMORY_LABEL)
}

/// Bounds-checked little-endian reader over one section.
struct Cursor<'a> {
    file: &'a str,
    bytes: &'a [u8],
    base: u64,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(file: &'a str, bytes: &'a [u8], base: u64) -> Cursor<'a> {
        Cursor {
            file,
            bytes,
            base,
            pos: 0,
        }
    }

    fn at(&self) -> u64 {
        self.base.saturating_add(self.pos as u64)
    }

    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, field: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let available = self.remaining();
        if n > available {
            return Err(FormatError::Truncated {
                file: self.file.to_string(),
                field: field(),
                offset: self.at(),
                needed: n,
                available,
            });
        }
        let n = n as usize;
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn u32(&mut self, field: &dyn Fn() -> String) -> Result<u32> {
        let b = self.take(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, field: &dyn Fn() -> String) -> Result<u64> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn limit(&self, field: String, offset: u64, value: u64, limit: u64) -> Result<()> {
        if value > limit {
            return Err(FormatError::LimitExceeded {
                file: self.file.to_string(),
                field,
                offset,
                value,
                limit,
            });
        }
        Ok(())
    }

    fn string(&mut self, len: u64, field: &dyn Fn() -> String) -> Result<String> {
        let offset = self.at();
        let b = self.take(len, field)?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| FormatError::InvalidUtf8 {
                file: self.file.to_string(),
                field: field(),
                offset,
            })
    }
}

fn layout_err(file: &str, field: &str, offset: u64, reason: String) -> FormatError {
    FormatError::BadLayout {
        file: file.to_string(),
        field: field.to_string(),
        offset,
        reason,
    }
}

/// Parses and validates `bytes`; errors name `file`.
pub fn parse_labeled(bytes: &[u8], file: &str) -> Result<ParsedFile> {
    let header = parse_header(bytes, file)?;
    let (meta, dir) = check_sections(bytes, file, &header)?;
    let mut parsed = ParsedFile {
        metadata: Metadata::with_origin(file),
        tensors: Vec::new(),
        skipped_keys: Vec::new(),
        header,
    };
    parse_metadata(&mut parsed, meta, file)?;
    parse_directory(&mut parsed, dir, file)?;
    check_overlaps(&parsed, file)?;
    Ok(parsed)
}

fn parse_header(bytes: &[u8], file: &str) -> Result<Header> {
    if bytes.len() >= 8 && bytes[..8] != layout::MAGIC {
        return Err(FormatError::BadMagic {
            file: file.to_string(),
            found: bytes[..8].to_vec(),
        });
    }
    let Some(head) = bytes.first_chunk::<{ HEADER_SIZE as usize }>() else {
        return Err(FormatError::Truncated {
            file: file.to_string(),
            field: "header".to_string(),
            offset: 0,
            needed: HEADER_SIZE,
            available: bytes.len() as u64,
        });
    };
    let h = Header::decode(head);
    if h.endian_tag != layout::ENDIAN_TAG {
        return Err(if h.endian_tag == layout::ENDIAN_TAG.swap_bytes() {
            FormatError::ByteSwapped {
                file: file.to_string(),
                found: h.endian_tag,
            }
        } else {
            FormatError::BadEndianTag {
                file: file.to_string(),
                found: h.endian_tag,
            }
        });
    }
    if h.major != layout::VERSION_MAJOR {
        return Err(FormatError::UnsupportedVersion {
            file: file.to_string(),
            major: h.major,
            minor: h.minor,
            supported: layout::VERSION_MAJOR,
        });
    }
    if h.file_size != bytes.len() as u64 {
        return Err(FormatError::FileSizeMismatch {
            file: file.to_string(),
            expected: h.file_size,
            actual: bytes.len() as u64,
        });
    }
    Ok(h)
}

/// Checks that header, data, metadata and directory follow each other
/// inside the file, verifies the checksum, and returns the metadata and
/// directory bytes.
fn check_sections<'a>(bytes: &'a [u8], file: &str, h: &Header) -> Result<(&'a [u8], &'a [u8])> {
    let size = bytes.len() as u64;
    if h.header_size < HEADER_SIZE || h.header_size > size {
        return Err(layout_err(
            file,
            "header_size",
            16,
            format!(
                "{} is below {HEADER_SIZE} or past the end of the file ({size} bytes)",
                h.header_size
            ),
        ));
    }
    if h.data_offset < h.header_size || !h.data_offset.is_multiple_of(ALIGNMENT) {
        return Err(layout_err(
            file,
            "data_offset",
            32,
            format!(
                "data section at {} must start after the header ({} bytes) at a multiple of {ALIGNMENT}",
                h.data_offset, h.header_size
            ),
        ));
    }
    let end = |field: &str, hoff: u64, off: u64, len: u64, min_start: u64| -> Result<u64> {
        if off < min_start {
            return Err(layout_err(
                file,
                field,
                hoff,
                format!(
                    "section starts at {off}, before the end of the previous section ({min_start})"
                ),
            ));
        }
        match off.checked_add(len) {
            Some(e) if e <= size => Ok(e),
            _ => Err(layout_err(
                file,
                field,
                hoff,
                format!("section {off}+{len} runs past the end of the file ({size} bytes)"),
            )),
        }
    };
    let data_end = end("data_size", 40, h.data_offset, h.data_size, h.data_offset)?;
    let meta_end = end("meta_offset", 48, h.meta_offset, h.meta_size, data_end)?;
    let dir_end = end("dir_offset", 64, h.dir_offset, h.dir_size, meta_end)?;
    let meta = &bytes[h.meta_offset as usize..meta_end as usize];
    let dir = &bytes[h.dir_offset as usize..dir_end as usize];
    let actual = layout::checksum(&bytes[..h.header_size as usize], meta, dir);
    if actual != h.checksum {
        return Err(FormatError::ChecksumMismatch {
            file: file.to_string(),
            expected: h.checksum,
            actual,
        });
    }
    Ok((meta, dir))
}

fn parse_metadata(parsed: &mut ParsedFile, meta: &[u8], file: &str) -> Result<()> {
    let h = &parsed.header;
    let mut c = Cursor::new(file, meta, h.meta_offset);
    c.limit(
        "meta_count".into(),
        80,
        h.meta_count,
        h.meta_size / MIN_META_ENTRY,
    )?;
    let mut skipped = HashSet::new();
    let mut skipped_in_order = Vec::new();
    for i in 0..h.meta_count {
        let entry_offset = c.at();
        let key_len = c.u32(&|| format!("metadata[{i}].key_len"))? as u64;
        c.limit(
            format!("metadata[{i}].key_len"),
            entry_offset,
            key_len,
            MAX_NAME_LEN,
        )?;
        let key = c.string(key_len, &|| format!("metadata[{i}].key"))?;
        if !is_valid_key(&key) {
            return Err(FormatError::InvalidKey {
                file: file.to_string(),
                key,
                offset: entry_offset + 4,
            });
        }
        let tag = c.u32(&|| format!("metadata `{key}` type tag"))?;
        let len = c.u64(&|| format!("metadata `{key}` value_len"))?;
        let value_offset = c.at();
        let payload = c.take(len, &|| format!("metadata `{key}` value"))?;
        let value = decode_value(file, &key, tag, payload, value_offset)?;
        let duplicate = match value {
            Some(v) => skipped.contains(&key) || !parsed.metadata.push_unique(key.clone(), v),
            None => {
                skipped_in_order.push(key.clone());
                parsed.metadata.contains_key(&key) || !skipped.insert(key.clone())
            }
        };
        if duplicate {
            return Err(FormatError::DuplicateKey {
                file: file.to_string(),
                key,
                offset: entry_offset,
            });
        }
    }
    if c.remaining() != 0 {
        return Err(layout_err(
            file,
            "meta_size",
            c.at(),
            format!(
                "{} bytes left after {} metadata entries",
                c.remaining(),
                h.meta_count
            ),
        ));
    }
    parsed.skipped_keys = skipped_in_order;
    Ok(())
}

/// Decodes one payload; `None` for a type tag this build does not know.
fn decode_value(
    file: &str,
    key: &str,
    tag: u32,
    p: &[u8],
    offset: u64,
) -> Result<Option<MetaValue>> {
    let bad = |reason: String| FormatError::BadValue {
        file: file.to_string(),
        key: key.to_string(),
        offset,
        reason,
    };
    let fixed8 = |p: &[u8]| -> Result<[u8; 8]> {
        p.try_into()
            .map_err(|_| bad(format!("scalar of {} bytes, expected 8", p.len())))
    };
    let utf8 = |b: &[u8], at: u64| -> Result<String> {
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| FormatError::InvalidUtf8 {
                file: file.to_string(),
                field: format!("metadata `{key}` value"),
                offset: at,
            })
    };
    Ok(Some(match tag {
        tag::U64 => MetaValue::U64(u64::from_le_bytes(fixed8(p)?)),
        tag::I64 => MetaValue::I64(i64::from_le_bytes(fixed8(p)?)),
        tag::F64 => MetaValue::F64(f64::from_le_bytes(fixed8(p)?)),
        tag::BOOL => match p {
            [0] => MetaValue::Bool(false),
            [1] => MetaValue::Bool(true),
            _ => return Err(bad(format!("bool must be one byte 0 or 1, found {p:02x?}"))),
        },
        tag::STR => MetaValue::Str(utf8(p, offset)?),
        tag::BYTES => MetaValue::Bytes(p.to_vec()),
        tag::F32_ARRAY => {
            if !p.len().is_multiple_of(4) {
                return Err(bad(format!(
                    "f32[] of {} bytes is not a multiple of 4",
                    p.len()
                )));
            }
            MetaValue::F32s(
                p.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            )
        }
        tag::I64_ARRAY => {
            if !p.len().is_multiple_of(8) {
                return Err(bad(format!(
                    "i64[] of {} bytes is not a multiple of 8",
                    p.len()
                )));
            }
            MetaValue::I64s(
                p.chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                    .collect(),
            )
        }
        tag::STR_ARRAY => {
            let mut c = Cursor::new(file, p, offset);
            let count = c.u64(&|| format!("metadata `{key}` str[] count"))?;
            c.limit(
                format!("metadata `{key}` str[] count"),
                offset,
                count,
                c.remaining() / 8,
            )?;
            let mut v = Vec::with_capacity(count as usize);
            for j in 0..count {
                let len = c.u64(&|| format!("metadata `{key}`[{j}] length"))?;
                let at = c.at();
                let s = c.take(len, &|| format!("metadata `{key}`[{j}]"))?;
                v.push(utf8(s, at)?);
            }
            if c.remaining() != 0 {
                return Err(bad(format!(
                    "{} bytes left after {count} strings",
                    c.remaining()
                )));
            }
            MetaValue::Strs(v)
        }
        0 => return Err(bad("type tag 0 is invalid".to_string())),
        _ => return Ok(None),
    }))
}

fn parse_directory(parsed: &mut ParsedFile, dir: &[u8], file: &str) -> Result<()> {
    let h = &parsed.header;
    let mut c = Cursor::new(file, dir, h.dir_offset);
    c.limit(
        "tensor_count".into(),
        88,
        h.tensor_count,
        h.dir_size / MIN_DIR_ENTRY,
    )?;
    let mut names: HashSet<String> = HashSet::with_capacity(h.tensor_count as usize);
    let mut tensors = Vec::with_capacity(h.tensor_count as usize);
    for i in 0..h.tensor_count {
        let entry_offset = c.at();
        let name_len = c.u32(&|| format!("directory[{i}].name_len"))? as u64;
        c.limit(
            format!("directory[{i}].name_len"),
            entry_offset,
            name_len,
            MAX_NAME_LEN,
        )?;
        let name = c.string(name_len, &|| format!("directory[{i}].name"))?;
        if name.is_empty() {
            return Err(FormatError::InvalidTensorName {
                file: file.to_string(),
                name,
                offset: entry_offset,
                reason: "empty name",
            });
        }
        if !names.insert(name.clone()) {
            return Err(FormatError::DuplicateTensor {
                file: file.to_string(),
                name,
                offset: entry_offset,
            });
        }
        let dtype_offset = c.at();
        let dtype_id = c.u32(&|| format!("tensor `{name}` dtype"))?;
        let rank_offset = c.at();
        let rank = c.u32(&|| format!("tensor `{name}` rank"))? as u64;
        c.limit(format!("tensor `{name}` rank"), rank_offset, rank, MAX_RANK)?;
        let dims_at = c.at();
        let mut shape = Vec::with_capacity(rank as usize);
        for d in 0..rank {
            shape.push(c.u64(&|| format!("tensor `{name}` dims[{d}]"))?);
        }
        let offset_at = c.at();
        let rel = c.u64(&|| format!("tensor `{name}` offset"))?;
        let nbytes_at = c.at();
        let nbytes = c.u64(&|| format!("tensor `{name}` nbytes"))?;
        let checksum = c.u64(&|| format!("tensor `{name}` checksum"))?;
        if let Some(what) = DType::retired(dtype_id) {
            return Err(FormatError::RetiredDType {
                file: file.to_string(),
                name,
                offset: dtype_offset,
                id: dtype_id,
                what,
            });
        }
        let Some(dtype) = DType::from_id(dtype_id) else {
            return Err(FormatError::UnknownDType {
                file: file.to_string(),
                name,
                offset: dtype_offset,
                id: dtype_id,
            });
        };
        if !rel.is_multiple_of(ALIGNMENT) {
            return Err(FormatError::Misaligned {
                file: file.to_string(),
                name,
                offset: offset_at,
                value: rel,
                align: ALIGNMENT,
            });
        }
        if let Some(reason) = dtype.shape_error(&shape) {
            return Err(FormatError::BadShape {
                file: file.to_string(),
                name,
                offset: dims_at,
                reason,
            });
        }
        let expected = dtype.storage_bytes(&shape);
        let numel_ok = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .is_some();
        if expected != Some(nbytes) || !numel_ok {
            return Err(FormatError::ByteLengthMismatch {
                file: file.to_string(),
                name,
                offset: nbytes_at,
                dtype,
                shape,
                expected: if numel_ok { expected } else { None },
                found: nbytes,
            });
        }
        match rel.checked_add(nbytes) {
            Some(end) if end <= h.data_size => {}
            end => {
                return Err(FormatError::TensorOutOfBounds {
                    file: file.to_string(),
                    name,
                    offset: nbytes_at,
                    start: rel,
                    end: end.unwrap_or(u64::MAX),
                    data_size: h.data_size,
                })
            }
        }
        tensors.push(TensorInfo {
            name,
            dtype,
            shape,
            offset: h.data_offset + rel,
            nbytes,
            checksum,
        });
    }
    if c.remaining() != 0 {
        return Err(layout_err(
            file,
            "dir_size",
            c.at(),
            format!(
                "{} bytes left after {} directory entries",
                c.remaining(),
                h.tensor_count
            ),
        ));
    }
    parsed.tensors = tensors;
    Ok(())
}

fn check_overlaps(parsed: &ParsedFile, file: &str) -> Result<()> {
    let t = &parsed.tensors;
    let mut order: Vec<usize> = (0..t.len()).collect();
    order.sort_by_key(|&i| (t[i].offset, t[i].nbytes));
    let mut entry_at: HashMap<usize, u64> = HashMap::new();
    for pair in order.windows(2) {
        let (a, b) = (&t[pair[0]], &t[pair[1]]);
        if b.offset < a.offset + a.nbytes {
            if entry_at.is_empty() {
                entry_at = directory_offsets(parsed);
            }
            let data = parsed.header.data_offset;
            return Err(FormatError::TensorOverlap {
                file: file.to_string(),
                name: b.name.clone(),
                other: a.name.clone(),
                offset: entry_at
                    .get(&pair[1])
                    .copied()
                    .unwrap_or(parsed.header.dir_offset),
                start: b.offset - data,
                end: b.offset - data + b.nbytes,
            });
        }
    }
    Ok(())
}

/// Absolute offset of each directory entry's `offset` field (error path only).
fn directory_offsets(parsed: &ParsedFile) -> HashMap<usize, u64> {
    let mut at = parsed.header.dir_offset;
    let mut out = HashMap::new();
    for (i, t) in parsed.tensors.iter().enumerate() {
        at += 4 + t.name.len() as u64 + 8 + 8 * t.shape.len() as u64;
        out.insert(i, at);
        at += 24;
    }
    out
}
