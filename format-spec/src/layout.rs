//! Byte layout of format v1: the fixed header, the metadata and directory
//! encodings and the checksum (FORMAT.md, "Binary layout").
//!
//! These are the low-level building blocks shared by the reader and the
//! writer. They are public so tests and tools can build files byte by byte,
//! including deliberately broken ones with a correct checksum.

use crate::metadata::{MetaValue, Metadata};
use crate::DType;
use xxhash_rust::xxh3::Xxh3;

/// The 8 magic bytes at offset 0.
pub const MAGIC: [u8; 8] = *b"KOMPAKT\0";
/// The endianness tag at offset 8, stored little-endian.
pub const ENDIAN_TAG: u32 = 0x0102_0304;
/// Major version written and read by this build.
pub const VERSION_MAJOR: u16 = 1;
/// Minor version written by this build.
pub const VERSION_MINOR: u16 = 4;
/// Size of the v1.0 header; newer minor versions may grow it.
pub const HEADER_SIZE: u64 = 128;
/// Byte offset of the header checksum field.
pub const CHECKSUM_OFFSET: usize = 120;
/// Alignment of the data section and of every tensor in it.
pub const ALIGNMENT: u64 = 64;
/// Longest metadata key or tensor name, in bytes.
pub const MAX_NAME_LEN: u64 = 1024;
/// Highest tensor rank.
pub const MAX_RANK: u64 = 8;

/// Metadata type tags. Tags are never reused; 0 is invalid.
pub mod tag {
    pub const U64: u32 = 1;
    pub const I64: u32 = 2;
    pub const F64: u32 = 3;
    pub const BOOL: u32 = 4;
    pub const STR: u32 = 5;
    pub const BYTES: u32 = 6;
    pub const F32_ARRAY: u32 = 7;
    pub const I64_ARRAY: u32 = 8;
    pub const STR_ARRAY: u32 = 9;
}

/// The fixed header at offset 0. All offsets are absolute file offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub magic: [u8; 8],
    pub endian_tag: u32,
    pub major: u16,
    pub minor: u16,
    pub header_size: u64,
    pub file_size: u64,
    pub data_offset: u64,
    pub data_size: u64,
    pub meta_offset: u64,
    pub meta_size: u64,
    pub dir_offset: u64,
    pub dir_size: u64,
    pub meta_count: u64,
    pub tensor_count: u64,
    pub checksum: u64,
}

impl Header {
    /// A v1.0 header with every section empty and placed right after it.
    pub fn new() -> Header {
        Header {
            magic: MAGIC,
            endian_tag: ENDIAN_TAG,
            major: VERSION_MAJOR,
            minor: VERSION_MINOR,
            header_size: HEADER_SIZE,
            file_size: HEADER_SIZE,
            data_offset: HEADER_SIZE,
            data_size: 0,
            meta_offset: HEADER_SIZE,
            meta_size: 0,
            dir_offset: HEADER_SIZE,
            dir_size: 0,
            meta_count: 0,
            tensor_count: 0,
            checksum: 0,
        }
    }

    /// The 128 header bytes (bytes 96..120 reserved, zero).
    pub fn encode(&self) -> [u8; HEADER_SIZE as usize] {
        let mut b = [0u8; HEADER_SIZE as usize];
        b[0..8].copy_from_slice(&self.magic);
        b[8..12].copy_from_slice(&self.endian_tag.to_le_bytes());
        b[12..14].copy_from_slice(&self.major.to_le_bytes());
        b[14..16].copy_from_slice(&self.minor.to_le_bytes());
        let fields = [
            self.header_size,
            self.file_size,
            self.data_offset,
            self.data_size,
            self.meta_offset,
            self.meta_size,
            self.dir_offset,
            self.dir_size,
            self.meta_count,
            self.tensor_count,
        ];
        for (i, v) in fields.iter().enumerate() {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        b[CHECKSUM_OFFSET..].copy_from_slice(&self.checksum.to_le_bytes());
        b
    }

    /// Decodes the first 128 bytes without validating anything.
    pub fn decode(b: &[u8; HEADER_SIZE as usize]) -> Header {
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&b[0..8]);
        Header {
            magic,
            endian_tag: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            major: u16::from_le_bytes([b[12], b[13]]),
            minor: u16::from_le_bytes([b[14], b[15]]),
            header_size: u64_at(16),
            file_size: u64_at(24),
            data_offset: u64_at(32),
            data_size: u64_at(40),
            meta_offset: u64_at(48),
            meta_size: u64_at(56),
            dir_offset: u64_at(64),
            dir_size: u64_at(72),
            meta_count: u64_at(80),
            tensor_count: u64_at(88),
            checksum: u64_at(CHECKSUM_OFFSET),
        }
    }
}

impl Default for Header {
    fn default() -> Self {
        Header::new()
    }
}

/// xxh3-64 over the header bytes without the checksum field (all of
/// `header_bytes` except bytes 120..128), then the metadata section, then
/// the directory section.
pub fn checksum(header_bytes: &[u8], meta: &[u8], dir: &[u8]) -> u64 {
    let mut h = Xxh3::new();
    let split = CHECKSUM_OFFSET.min(header_bytes.len());
    h.update(&header_bytes[..split]);
    if header_bytes.len() > CHECKSUM_OFFSET + 8 {
        h.update(&header_bytes[CHECKSUM_OFFSET + 8..]);
    }
    h.update(meta);
    h.update(dir);
    h.digest()
}

/// xxh3-64 of a tensor's bytes.
pub fn tensor_checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Rounds `n` up to a multiple of [`ALIGNMENT`]; `None` on overflow.
pub fn align_up(n: u64) -> Option<u64> {
    n.checked_add(ALIGNMENT - 1)
        .map(|v| v / ALIGNMENT * ALIGNMENT)
}

/// Appends one metadata entry: `u32 key_len, key, u32 tag, u64 value_len,
/// value`.
pub fn encode_meta_entry(out: &mut Vec<u8>, key: &str, value: &MetaValue) {
    let (tag, payload) = encode_value(value);
    encode_raw_meta_entry(out, key, tag, &payload);
}

/// Appends a metadata entry with an arbitrary tag and payload.
pub fn encode_raw_meta_entry(out: &mut Vec<u8>, key: &str, tag: u32, payload: &[u8]) {
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The whole metadata section for `meta`, in its insertion order.
pub fn encode_metadata(meta: &Metadata) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in meta.iter() {
        encode_meta_entry(&mut out, k, v);
    }
    out
}

/// The type tag and the payload bytes of a value.
pub fn encode_value(value: &MetaValue) -> (u32, Vec<u8>) {
    match value {
        MetaValue::U64(v) => (tag::U64, v.to_le_bytes().to_vec()),
        MetaValue::I64(v) => (tag::I64, v.to_le_bytes().to_vec()),
        MetaValue::F64(v) => (tag::F64, v.to_le_bytes().to_vec()),
        MetaValue::Bool(v) => (tag::BOOL, vec![u8::from(*v)]),
        MetaValue::Str(s) => (tag::STR, s.as_bytes().to_vec()),
        MetaValue::Bytes(b) => (tag::BYTES, b.clone()),
        MetaValue::F32s(v) => (
            tag::F32_ARRAY,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        MetaValue::I64s(v) => (
            tag::I64_ARRAY,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        MetaValue::Strs(v) => {
            let mut p = (v.len() as u64).to_le_bytes().to_vec();
            for s in v {
                p.extend_from_slice(&(s.len() as u64).to_le_bytes());
                p.extend_from_slice(s.as_bytes());
            }
            (tag::STR_ARRAY, p)
        }
    }
}

/// One directory entry as stored: `offset` is relative to the data section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub dtype_id: u32,
    pub shape: Vec<u64>,
    pub offset: u64,
    pub nbytes: u64,
    pub checksum: u64,
}

impl DirEntry {
    /// An entry for a tensor of a known dtype.
    pub fn new(
        name: &str,
        dtype: DType,
        shape: &[u64],
        offset: u64,
        nbytes: u64,
        checksum: u64,
    ) -> DirEntry {
        DirEntry {
            name: name.to_string(),
            dtype_id: dtype.id(),
            shape: shape.to_vec(),
            offset,
            nbytes,
            checksum,
        }
    }

    /// Appends `u32 name_len, name, u32 dtype, u32 rank, u64 dims[rank],
    /// u64 offset, u64 nbytes, u64 checksum`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.name.len() as u32).to_le_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&self.dtype_id.to_le_bytes());
        out.extend_from_slice(&(self.shape.len() as u32).to_le_bytes());
        for d in &self.shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.nbytes.to_le_bytes());
        out.extend_from_slice(&self.checksum.to_le_bytes());
    }
}

/// Assembles a complete file from a header template, the data section and
/// already-encoded metadata and directory sections: fills in every offset,
/// size and the checksum, leaving `magic`, `endian_tag`, versions, counts and
/// `header_size` as given. Used by tests to build files with structural
/// faults but a correct checksum.
pub fn assemble(mut header: Header, data: &[u8], meta: &[u8], dir: &[u8]) -> Vec<u8> {
    let hs = header.header_size.max(HEADER_SIZE);
    let data_offset = align_up(hs).unwrap_or(hs);
    header.data_offset = data_offset;
    header.data_size = data.len() as u64;
    header.meta_offset = data_offset + data.len() as u64;
    header.meta_size = meta.len() as u64;
    header.dir_offset = header.meta_offset + meta.len() as u64;
    header.dir_size = dir.len() as u64;
    header.file_size = header.dir_offset + dir.len() as u64;
    let mut out = vec![0u8; data_offset as usize];
    out.extend_from_slice(data);
    out.extend_from_slice(meta);
    out.extend_from_slice(dir);
    seal(&mut out, header);
    out
}

/// Writes `header` at the start of `file` (keeping any header bytes past
/// 128) and recomputes the checksum from the sections `header` points to.
/// Sections out of range hash as empty.
pub fn seal(file: &mut [u8], mut header: Header) {
    header.checksum = 0;
    let enc = header.encode();
    let n = enc.len().min(file.len());
    file[..n].copy_from_slice(&enc[..n]);
    let section = |off: u64, len: u64| -> &[u8] {
        let start = usize::try_from(off).unwrap_or(usize::MAX);
        let end = off
            .checked_add(len)
            .and_then(|e| usize::try_from(e).ok())
            .unwrap_or(usize::MAX);
        file.get(start..end).unwrap_or(&[])
    };
    let hs = usize::try_from(header.header_size)
        .unwrap_or(usize::MAX)
        .max(HEADER_SIZE as usize);
    let head = file.get(..hs).unwrap_or(&file[..n]);
    let sum = checksum(
        head,
        section(header.meta_offset, header.meta_size),
        section(header.dir_offset, header.dir_size),
    );
    if n == enc.len() {
        file[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 8].copy_from_slice(&sum.to_le_bytes());
    }
}
