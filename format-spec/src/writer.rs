//! [`KpkWriter`]: streams tensors to a temporary file, then appends the
//! metadata and directory, patches the header and renames into place.
//!
//! The header is written as zeros first and only filled in by
//! [`KpkWriter::finish`], so an interrupted write never leaves a file that
//! parses (bad magic), and the final name only appears at the rename.

use crate::error::{FormatError, Result};
use crate::layout::{self, DirEntry, Header, ALIGNMENT, HEADER_SIZE, MAX_NAME_LEN, MAX_RANK};
use crate::metadata::Metadata;
use crate::DType;
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// What [`KpkWriter::finish`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteSummary {
    pub path: PathBuf,
    pub file_size: u64,
    pub n_tensors: usize,
}

/// Streaming `.kpk` writer.
pub struct KpkWriter {
    out: Option<BufWriter<File>>,
    tmp_path: PathBuf,
    final_path: PathBuf,
    label: String,
    data_len: u64,
    entries: Vec<DirEntry>,
    names: HashSet<String>,
    metadata: Metadata,
    pending: Option<Pending>,
}

/// A tensor being streamed with [`KpkWriter::begin_tensor`].
struct Pending {
    name: String,
    dtype: DType,
    shape: Vec<u64>,
    offset: u64,
    expected: u64,
    written: u64,
    hasher: xxhash_rust::xxh3::Xxh3,
}

impl std::fmt::Debug for KpkWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KpkWriter")
            .field("path", &self.final_path)
            .field("tmp_path", &self.tmp_path)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

impl KpkWriter {
    /// Starts writing `path`, via `<path>.tmp-<pid>-<n>` in the same directory.
    pub fn create(path: impl AsRef<Path>) -> Result<KpkWriter> {
        let final_path = path.as_ref().to_path_buf();
        let label = final_path.display().to_string();
        let Some(file_name) = final_path.file_name() else {
            return Err(FormatError::InvalidInput {
                file: label,
                reason: "the output path has no file name".to_string(),
            });
        };
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut tmp_name = file_name.to_os_string();
        tmp_name.push(format!(".tmp-{}-{n}", std::process::id()));
        let tmp_path = final_path.with_file_name(tmp_name);
        // Errors name the user's path, not the temporary one.
        let dir = match final_path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            let reason = if dir.exists() {
                format!("cannot write here: `{}` is not a directory", dir.display())
            } else {
                format!(
                    "cannot write here: the directory `{}` does not exist",
                    dir.display()
                )
            };
            return Err(FormatError::InvalidInput {
                file: label,
                reason,
            });
        }
        if final_path.is_dir() {
            return Err(FormatError::InvalidInput {
                file: label,
                reason: "is a directory; give the path of the file to write".to_string(),
            });
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp_path)
            .map_err(|e| FormatError::io(&label, "create", e))?;
        let mut w = KpkWriter {
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            tmp_path,
            final_path,
            label,
            data_len: 0,
            entries: Vec::new(),
            names: HashSet::new(),
            metadata: Metadata::new(),
            pending: None,
        };
        w.write_all(&[0u8; HEADER_SIZE as usize], "write header placeholder")?;
        Ok(w)
    }

    /// The path the file will have after [`KpkWriter::finish`].
    pub fn path(&self) -> &Path {
        &self.final_path
    }

    /// The metadata to be written; editable until `finish`.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// Number of tensors written so far.
    pub fn n_tensors(&self) -> usize {
        self.entries.len()
    }

    fn write_all(&mut self, bytes: &[u8], op: &'static str) -> Result<()> {
        let label = &self.label;
        match self.out.as_mut() {
            Some(out) => out
                .write_all(bytes)
                .map_err(|e| FormatError::io(label, op, e)),
            None => Err(FormatError::InvalidInput {
                file: self.label.clone(),
                reason: "writer already failed".to_string(),
            }),
        }
    }

    fn pad_data(&mut self) -> Result<()> {
        let aligned = layout::align_up(self.data_len).ok_or_else(|| self.too_large())?;
        let pad = (aligned - self.data_len) as usize;
        self.write_all(&[0u8; ALIGNMENT as usize][..pad], "write padding")?;
        self.data_len = aligned;
        Ok(())
    }

    fn too_large(&self) -> FormatError {
        FormatError::InvalidInput {
            file: self.label.clone(),
            reason: "file larger than 2^64 bytes".to_string(),
        }
    }

    /// Appends one tensor; its bytes go to disk now. `bytes.len()` must be
    /// `dtype.storage_bytes(shape)`; names must be unique, non-empty and at
    /// most 1 KiB; rank at most 8.
    pub fn write_tensor(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[u64],
        bytes: &[u8],
    ) -> Result<()> {
        self.check_tensor(name, dtype, shape, Some(bytes.len() as u64))?;
        self.begin_tensor(name, dtype, shape)?;
        self.write_chunk(bytes)?;
        self.end_tensor()
    }

    fn check_tensor(
        &self,
        name: &str,
        dtype: DType,
        shape: &[u64],
        found: Option<u64>,
    ) -> Result<u64> {
        let invalid_name = |reason| FormatError::InvalidTensorName {
            file: self.label.clone(),
            name: name.to_string(),
            offset: 0,
            reason,
        };
        if name.is_empty() {
            return Err(invalid_name("empty name"));
        }
        if name.len() as u64 > MAX_NAME_LEN {
            return Err(invalid_name("longer than 1024 bytes"));
        }
        if self.names.contains(name) {
            return Err(FormatError::DuplicateTensor {
                file: self.label.clone(),
                name: name.to_string(),
                offset: 0,
            });
        }
        if shape.len() as u64 > MAX_RANK {
            return Err(FormatError::InvalidInput {
                file: self.label.clone(),
                reason: format!(
                    "tensor `{name}` has rank {}, the limit is {MAX_RANK}",
                    shape.len()
                ),
            });
        }
        if let Some(reason) = dtype.shape_error(shape) {
            return Err(FormatError::BadShape {
                file: self.label.clone(),
                name: name.to_string(),
                offset: 0,
                reason,
            });
        }
        let expected = dtype.storage_bytes(shape);
        let numel_ok = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .is_some();
        match (expected, numel_ok) {
            (Some(e), true) if found.is_none_or(|f| f == e) => Ok(e),
            _ => Err(FormatError::ByteLengthMismatch {
                file: self.label.clone(),
                name: name.to_string(),
                offset: 0,
                dtype,
                shape: shape.to_vec(),
                expected: if numel_ok { expected } else { None },
                found: found.unwrap_or(0),
            }),
        }
    }

    /// Starts streaming one tensor whose bytes will arrive in pieces through
    /// [`KpkWriter::write_chunk`], for tensors too large to hold in memory;
    /// [`KpkWriter::end_tensor`] checks that exactly
    /// `dtype.storage_bytes(shape)` bytes arrived.
    pub fn begin_tensor(&mut self, name: &str, dtype: DType, shape: &[u64]) -> Result<()> {
        if let Some(p) = &self.pending {
            return Err(FormatError::InvalidInput {
                file: self.label.clone(),
                reason: format!("tensor `{}` is still being written", p.name),
            });
        }
        let expected = self.check_tensor(name, dtype, shape, None)?;
        self.pad_data()?;
        self.pending = Some(Pending {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
            offset: self.data_len,
            expected,
            written: 0,
            hasher: xxhash_rust::xxh3::Xxh3::new(),
        });
        Ok(())
    }

    /// Appends bytes to the tensor begun with [`KpkWriter::begin_tensor`].
    pub fn write_chunk(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(p) = self.pending.as_mut() else {
            return Err(FormatError::InvalidInput {
                file: self.label.clone(),
                reason: "write_chunk without begin_tensor".to_string(),
            });
        };
        let written = p.written + bytes.len() as u64;
        if written > p.expected {
            let (name, dtype, shape, expected) =
                (p.name.clone(), p.dtype, p.shape.clone(), p.expected);
            self.pending = None;
            return Err(FormatError::ByteLengthMismatch {
                file: self.label.clone(),
                name,
                offset: 0,
                dtype,
                shape,
                expected: Some(expected),
                found: written,
            });
        }
        p.written = written;
        p.hasher.update(bytes);
        self.write_all(bytes, "write tensor")?;
        self.data_len = self
            .data_len
            .checked_add(bytes.len() as u64)
            .ok_or_else(|| self.too_large())?;
        Ok(())
    }

    /// Completes the tensor begun with [`KpkWriter::begin_tensor`].
    pub fn end_tensor(&mut self) -> Result<()> {
        let Some(p) = self.pending.take() else {
            return Err(FormatError::InvalidInput {
                file: self.label.clone(),
                reason: "end_tensor without begin_tensor".to_string(),
            });
        };
        if p.written != p.expected {
            return Err(FormatError::ByteLengthMismatch {
                file: self.label.clone(),
                name: p.name,
                offset: 0,
                dtype: p.dtype,
                shape: p.shape,
                expected: Some(p.expected),
                found: p.written,
            });
        }
        self.entries.push(DirEntry::new(
            &p.name,
            p.dtype,
            &p.shape,
            p.offset,
            p.written,
            p.hasher.digest(),
        ));
        self.names.insert(p.name);
        Ok(())
    }

    /// Writes metadata and directory, patches the header, fsyncs and renames
    /// the temporary file to the final path.
    pub fn finish(mut self) -> Result<WriteSummary> {
        if let Some(p) = &self.pending {
            return Err(FormatError::InvalidInput {
                file: self.label.clone(),
                reason: format!("tensor `{}` was begun but not ended", p.name),
            });
        }
        self.pad_data()?;
        let meta = layout::encode_metadata(&self.metadata);
        let mut dir = Vec::new();
        for e in &self.entries {
            e.encode(&mut dir);
        }
        let mut h = Header::new();
        h.data_offset = HEADER_SIZE;
        h.data_size = self.data_len;
        h.meta_offset = HEADER_SIZE + self.data_len;
        h.meta_size = meta.len() as u64;
        h.dir_offset = h.meta_offset + h.meta_size;
        h.dir_size = dir.len() as u64;
        h.file_size = h.dir_offset + h.dir_size;
        h.meta_count = self.metadata.len() as u64;
        h.tensor_count = self.entries.len() as u64;
        h.checksum = layout::checksum(&h.encode(), &meta, &dir);
        self.write_all(&meta, "write metadata")?;
        self.write_all(&dir, "write directory")?;

        let label = self.label.clone();
        let io = |op, e| FormatError::io(&label, op, e);
        let out = self.out.take().ok_or_else(|| FormatError::InvalidInput {
            file: self.label.clone(),
            reason: "writer already failed".to_string(),
        })?;
        let mut file = out.into_inner().map_err(|e| io("flush", e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(|e| io("seek", e))?;
        file.write_all(&h.encode())
            .map_err(|e| io("write header", e))?;
        file.sync_all().map_err(|e| io("fsync", e))?;
        drop(file);
        std::fs::rename(&self.tmp_path, &self.final_path).map_err(|e| io("rename", e))?;
        if let Some(dir) = self.final_path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.tmp_path = PathBuf::new();
        Ok(WriteSummary {
            path: self.final_path.clone(),
            file_size: h.file_size,
            n_tensors: self.entries.len(),
        })
    }
}

impl Drop for KpkWriter {
    fn drop(&mut self) {
        if let Some(out) = self.out.take() {
            drop(out.into_parts());
        }
        if !self.tmp_path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}
