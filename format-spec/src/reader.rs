//! [`KpkFile`]: an opened, validated `.kpk` file (memory-mapped or in an
//! aligned owned buffer) with zero-copy tensor views.

use crate::error::{FormatError, Result};
use crate::layout::{self, Header};
use crate::metadata::Metadata;
use crate::parse::{parse_labeled, TensorInfo, MEMORY_LABEL};
use crate::DType;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// 64 bytes aligned to 64, so an owned copy of a file keeps every tensor
/// (64-aligned in the file) aligned in memory.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
struct Line([u8; 64]);

enum Backing {
    Mmap(memmap2::Mmap),
    Owned {
        lines: Vec<Line>,
        len: usize,
    },
    /// A private anonymous copy of the file starting at a 2 MiB boundary
    /// (`offset` into `map`), advised for transparent huge pages.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    HugePages {
        map: memmap2::Mmap,
        offset: usize,
        len: usize,
    },
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned { lines, len } => &bytemuck::cast_slice::<Line, u8>(lines)[..*len],
            Backing::HugePages { map, offset, len } => &map[*offset..*offset + *len],
        }
    }

    fn owned(src: &[u8]) -> Backing {
        let mut lines = vec![Line([0; 64]); src.len().div_ceil(64)];
        bytemuck::cast_slice_mut::<Line, u8>(&mut lines)[..src.len()].copy_from_slice(src);
        Backing::Owned {
            lines,
            len: src.len(),
        }
    }
}

/// The file at `path` copied into an anonymous mapping advised for huge
/// pages (see [`KpkFile::open_in_huge_pages`]).
#[cfg(target_os = "linux")]
fn huge_page_copy(path: &Path, label: &str) -> Result<Backing> {
    use std::io::Read;
    const HUGE: usize = 2 << 20;
    let mut file = std::fs::File::open(path).map_err(|e| FormatError::io(label, "open", e))?;
    let len = file
        .metadata()
        .map_err(|e| FormatError::io(label, "stat", e))?
        .len();
    let len = usize::try_from(len).map_err(|_| {
        FormatError::io(
            label,
            "map",
            std::io::Error::new(std::io::ErrorKind::OutOfMemory, "file larger than memory"),
        )
    })?;
    // One huge page of slack, so the copy can start on a 2 MiB boundary.
    let mut map =
        memmap2::MmapMut::map_anon(len + HUGE).map_err(|e| FormatError::io(label, "map", e))?;
    let offset = (map.as_ptr() as usize).next_multiple_of(HUGE) - map.as_ptr() as usize;
    // Advice before the first touch, so the faults below take huge pages.
    // Refused only by kernels without THP: then 4 KiB pages, as documented.
    let _ = map.advise(memmap2::Advice::HugePage);
    file.read_exact(&mut map[offset..offset + len])
        .map_err(|e| FormatError::io(label, "read", e))?;
    let map = map
        .make_read_only()
        .map_err(|e| FormatError::io(label, "map", e))?;
    Ok(Backing::HugePages { map, offset, len })
}

#[cfg(not(target_os = "linux"))]
fn huge_page_copy(_path: &Path, label: &str) -> Result<Backing> {
    Err(FormatError::io(
        label,
        "map",
        std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "transparent huge pages are a Linux feature; open the file without them",
        ),
    ))
}

/// A validated `.kpk` file. Immutable, `Send + Sync`, shared across threads.
pub struct KpkFile {
    backing: Backing,
    label: String,
    path: Option<PathBuf>,
    header: Header,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
    skipped_keys: Vec<String>,
}

impl std::fmt::Debug for KpkFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KpkFile")
            .field("file", &self.label)
            .field("file_size", &self.header.file_size)
            .field("tensors", &self.tensors.len())
            .field("metadata", &self.metadata.len())
            .finish()
    }
}

impl KpkFile {
    /// Memory-maps and validates the file at `path` (header, layout,
    /// checksum of header/metadata/directory; not the tensor data: see
    /// [`KpkFile::verify`]).
    pub fn open(path: impl AsRef<Path>) -> Result<KpkFile> {
        let path = path.as_ref();
        let label = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| FormatError::io(&label, "open", e))?;
        check_regular(&file, &label)?;
        // SAFETY: the map is read-only. As with every mmap reader, the file
        // must not be truncated or rewritten by another process while mapped;
        // the writer never modifies a finished file in place (it renames a
        // new file over it).
        let map =
            unsafe { memmap2::Mmap::map(&file) }.map_err(|e| FormatError::io(&label, "mmap", e))?;
        KpkFile::build(Backing::Mmap(map), label, Some(path.to_path_buf()))
    }

    /// Reads the file at `path` into private memory backed by transparent
    /// huge pages (2 MiB, `MADV_HUGEPAGE`; Linux only), then validates it as
    /// [`KpkFile::open`] does.
    ///
    /// Mat-vec over weights streams them from DRAM, and with 4 KiB pages
    /// every 4 KiB costs a TLB miss, which under virtualisation is a
    /// two-level page walk. On the 2-vCPU EPYC VM, with a 2.0 GB model, this
    /// mode read the weights at 31-36 GB/s against 26-29 GB/s from the file
    /// mapping, and decoded 6-22 % faster at 1 thread (four alternating
    /// pairs of `kompakt bench` runs). The costs: the whole file is read up
    /// front (a cold load took 6.5 s against 1.2 s; from the page cache,
    /// 0.6 s against 0.4 s), and it is private memory (anonymous, not shared
    /// with other processes, swapped rather than dropped under memory
    /// pressure). Where the kernel gives no huge pages (THP `never`) it still
    /// works, on 4 KiB pages.
    pub fn open_in_huge_pages(path: impl AsRef<Path>) -> Result<KpkFile> {
        let path = path.as_ref();
        let label = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| FormatError::io(&label, "open", e))?;
        check_regular(&file, &label)?;
        drop(file);
        let backing = huge_page_copy(path, &label)?;
        KpkFile::build(backing, label, Some(path.to_path_buf()))
    }

    /// Validates a file held in memory. The bytes are moved into a 64-byte
    /// aligned buffer (one copy) so typed views stay aligned.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<KpkFile> {
        KpkFile::from_slice(&bytes)
    }

    /// Like [`KpkFile::from_bytes`], copying from a borrowed buffer.
    pub fn from_slice(bytes: &[u8]) -> Result<KpkFile> {
        KpkFile::build(Backing::owned(bytes), MEMORY_LABEL.to_string(), None)
    }

    fn build(backing: Backing, label: String, path: Option<PathBuf>) -> Result<KpkFile> {
        let parsed = parse_labeled(backing.bytes(), &label)?;
        let index = parsed
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(KpkFile {
            backing,
            label,
            path,
            header: parsed.header,
            metadata: parsed.metadata,
            tensors: parsed.tensors,
            index,
            skipped_keys: parsed.skipped_keys,
        })
    }

    /// The path given to [`KpkFile::open`]; `None` for in-memory files.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The path, or `<memory>`: how errors name this file.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Exact size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.header.file_size
    }

    /// `(major, minor)` format version of the file.
    pub fn version(&self) -> (u16, u16) {
        (self.header.major, self.header.minor)
    }

    /// The decoded header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        self.backing.bytes()
    }

    /// The metadata map.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Metadata keys skipped because their type tag is newer than this build.
    pub fn skipped_keys(&self) -> &[String] {
        &self.skipped_keys
    }

    /// Tensor descriptions in file (directory) order.
    pub fn tensors(&self) -> std::slice::Iter<'_, TensorInfo> {
        self.tensors.iter()
    }

    /// Number of tensors.
    pub fn n_tensors(&self) -> usize {
        self.tensors.len()
    }

    /// The tensor called `name`, or `TensorNotFound`.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        self.get_tensor(name)
            .ok_or_else(|| FormatError::TensorNotFound {
                file: self.label.clone(),
                name: name.to_string(),
            })
    }

    /// The tensor called `name`, if present.
    pub fn get_tensor(&self, name: &str) -> Option<TensorView<'_>> {
        let info = &self.tensors[*self.index.get(name)?];
        Some(self.view(info))
    }

    fn view<'a>(&'a self, info: &'a TensorInfo) -> TensorView<'a> {
        let start = info.offset as usize;
        TensorView {
            info,
            data: &self.backing.bytes()[start..start + info.nbytes as usize],
        }
    }

    /// Checks every tensor's bytes against its checksum, in file order;
    /// reports the first mismatch by name.
    pub fn verify(&self) -> Result<()> {
        for info in &self.tensors {
            let actual = layout::tensor_checksum(self.view(info).data);
            if actual != info.checksum {
                return Err(FormatError::TensorChecksumMismatch {
                    file: self.label.clone(),
                    name: info.name.clone(),
                    offset: info.offset,
                    expected: info.checksum,
                    actual,
                });
            }
        }
        Ok(())
    }
}

/// A borrowed tensor: its description and its stored bytes.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub info: &'a TensorInfo,
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    pub fn name(&self) -> &'a str {
        &self.info.name
    }

    pub fn dtype(&self) -> DType {
        self.info.dtype
    }

    pub fn shape(&self) -> &'a [u64] {
        &self.info.shape
    }

    /// Number of logical elements.
    pub fn numel(&self) -> u64 {
        self.info.numel()
    }

    fn cast<T: bytemuck::Pod>(&self, want: DType, requested: &'static str) -> Result<&'a [T]> {
        if self.info.dtype != want {
            return Err(FormatError::DTypeMismatch {
                name: self.info.name.clone(),
                requested,
                found: self.info.dtype,
            });
        }
        bytemuck::try_cast_slice(self.data).map_err(|e| FormatError::View {
            name: self.info.name.clone(),
            requested,
            reason: e.to_string(),
        })
    }

    /// The elements of an `f32` tensor, zero-copy.
    pub fn as_f32(&self) -> Result<&'a [f32]> {
        self.cast(DType::F32, "f32")
    }

    /// The elements of an `f16` tensor, zero-copy.
    pub fn as_f16(&self) -> Result<&'a [half::f16]> {
        self.cast(DType::F16, "f16")
    }

    /// The elements of a `bf16` tensor, zero-copy.
    pub fn as_bf16(&self) -> Result<&'a [half::bf16]> {
        self.cast(DType::BF16, "bf16")
    }

    /// The elements of an `i32` tensor, zero-copy.
    pub fn as_i32(&self) -> Result<&'a [i32]> {
        self.cast(DType::I32, "i32")
    }

    /// The elements of an `f32`, `f16` or `bf16` tensor as `f32`.
    /// Quantized tensors are dequantized by `kompakt-kernels`, not here.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        match self.info.dtype {
            DType::F32 => Ok(self.as_f32()?.to_vec()),
            DType::F16 => Ok(self.as_f16()?.iter().map(|x| x.to_f32()).collect()),
            DType::BF16 => Ok(self.as_bf16()?.iter().map(|x| x.to_f32()).collect()),
            d if d.is_quantized() => Err(FormatError::Quantized {
                name: self.info.name.clone(),
                dtype: d,
            }),
            d => Err(FormatError::DTypeMismatch {
                name: self.info.name.clone(),
                requested: "f32, f16 or bf16",
                found: d,
            }),
        }
    }
}

/// Fails with [`FormatError::NotAFile`] unless `file` is a regular file.
fn check_regular(file: &std::fs::File, label: &str) -> Result<()> {
    let t = file
        .metadata()
        .map_err(|e| FormatError::io(label, "stat", e))?
        .file_type();
    if t.is_file() {
        return Ok(());
    }
    let kind = if t.is_dir() {
        "a directory"
    } else {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if t.is_char_device() {
                "a character device"
            } else if t.is_block_device() {
                "a block device"
            } else if t.is_fifo() {
                "a pipe"
            } else if t.is_socket() {
                "a socket"
            } else {
                "not a regular file"
            }
        }
        #[cfg(not(unix))]
        {
            "not a regular file"
        }
    };
    Err(FormatError::NotAFile {
        file: label.to_string(),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn kpk_file_is_send_and_sync() {
        assert_send_sync::<KpkFile>();
    }

    #[test]
    fn owned_backing_is_64_aligned() {
        let b = Backing::owned(&[7u8; 100]);
        assert_eq!(b.bytes().as_ptr() as usize % 64, 0);
        assert_eq!(b.bytes(), &[7u8; 100][..]);
    }
}
