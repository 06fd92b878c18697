//! Reading a Hugging Face checkpoint: `config.json`, the tokenizer files and
//! single or sharded safetensors (with `model.safetensors.index.json`),
//! memory-mapped, one tensor at a time.
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde_json::Value;

use crate::error::{ConvertError, Result};

/// Element type of a checkpoint tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceDtype {
    F32,
    F16,
    BF16,
}

/// Location of one tensor inside a shard.
#[derive(Clone, Debug)]
struct Entry {
    shard: usize,
    dtype: Result2<SourceDtype>,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

type Result2<T> = std::result::Result<T, String>;

struct Shard {
    path: PathBuf,
    map: Mmap,
}

/// An opened checkpoint directory.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: Value,
    pub config_bytes: Vec<u8>,
    shards: Vec<Shard>,
    entries: HashMap<String, Entry>,
}

/// A tensor read from the checkpoint, as f32.
pub struct SourceTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ConvertError + '_ {
    move |source| ConvertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads and parses a JSON file.
pub fn read_json(path: &Path) -> Result<(Value, Vec<u8>)> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let v = serde_json::from_slice(&bytes).map_err(|e| ConvertError::Json {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    Ok((v, bytes))
}

impl Checkpoint {
    /// Opens `dir`: reads the config and maps every shard.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let err = |msg: String| ConvertError::Checkpoint {
            dir: dir.to_path_buf(),
            msg,
        };
        if !dir.is_dir() {
            return Err(err("not a directory".into()));
        }
        let config_path = dir.join("config.json");
        if !config_path.exists() {
            return Err(err("config.json is missing".into()));
        }
        let (config, config_bytes) = read_json(&config_path)?;
        let index = dir.join("model.safetensors.index.json");
        let shard_names: Vec<String> = if index.exists() {
            let (v, _) = read_json(&index)?;
            let map = v
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| ConvertError::Json {
                    path: index.clone(),
                    msg: "no `weight_map` object".into(),
                })?;
            let mut names: Vec<String> = map
                .values()
                .filter_map(|s| s.as_str().map(String::from))
                .collect();
            names.sort();
            names.dedup();
            names
        } else if dir.join("model.safetensors").exists() {
            vec!["model.safetensors".into()]
        } else {
            return Err(err(
                "no model.safetensors and no model.safetensors.index.json".into(),
            ));
        };
        let mut shards = Vec::new();
        let mut entries = HashMap::new();
        for name in &shard_names {
            let path = dir.join(name);
            if !path.exists() {
                return Err(err(format!("shard {name} named by the index is missing")));
            }
            let file = File::open(&path).map_err(io(&path))?;
            // SAFETY: the shard is opened read-only; kompakt never writes to
            // it. A concurrent writer could change the bytes under us, which
            // the per-tensor bounds checks below keep from being unsound.
            let map = unsafe { Mmap::map(&file) }.map_err(io(&path))?;
            let bad = |msg: String| ConvertError::Safetensors {
                path: path.clone(),
                msg,
            };
            let (n, meta) =
                safetensors::SafeTensors::read_metadata(&map).map_err(|e| bad(e.to_string()))?;
            let base = 8usize
                .checked_add(n)
                .ok_or_else(|| bad("header size overflows".into()))?;
            for (tname, info) in meta.tensors() {
                let (s, e) = info.data_offsets;
                let (start, end) = (base.checked_add(s), base.checked_add(e));
                let (Some(start), Some(end)) = (start, end) else {
                    return Err(bad(format!("tensor {tname}: offsets overflow")));
                };
                if start > end || end > map.len() {
                    return Err(bad(format!(
                        "tensor {tname}: data {start}..{end} is outside the file"
                    )));
                }
                let dtype = match info.dtype {
                    safetensors::Dtype::F32 => Ok(SourceDtype::F32),
                    safetensors::Dtype::F16 => Ok(SourceDtype::F16),
                    safetensors::Dtype::BF16 => Ok(SourceDtype::BF16),
                    other => Err(format!("{other:?}")),
                };
                entries.insert(
                    tname.clone(),
                    Entry {
                        shard: shards.len(),
                        dtype,
                        shape: info.shape.clone(),
                        start,
                        end,
                    },
                );
            }
            shards.push(Shard { path, map });
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            config,
            config_bytes,
            shards,
            entries,
        })
    }

    /// Shard file names and sizes.
    pub fn shards(&self) -> BTreeMap<String, u64> {
        self.shards
            .iter()
            .map(|s| {
                let name = s
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (name, s.map.len() as u64)
            })
            .collect()
    }

    /// Total bytes of tensor data.
    pub fn data_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|e| (e.end - e.start) as u64)
            .sum()
    }

    pub fn has(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    fn shard_name(&self, e: &Entry) -> String {
        self.shards[e.shard]
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The raw bytes of tensor `name`, after checking its shape against
    /// `expected` and its dtype.
    pub fn view(&self, name: &str, expected: &[usize]) -> Result<(SourceDtype, &[u8])> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| ConvertError::MissingTensor {
                name: name.to_string(),
                looked_in: self.shards().keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
        if e.shape != expected {
            return Err(ConvertError::Shape {
                name: name.to_string(),
                shard: self.shard_name(e),
                got: e.shape.clone(),
                expected: expected.to_vec(),
            });
        }
        let dtype = e
            .dtype
            .clone()
            .map_err(|dtype| ConvertError::UnsupportedDtype {
                name: name.to_string(),
                shard: self.shard_name(e),
                dtype,
            })?;
        let bytes = &self.shards[e.shard].map[e.start..e.end];
        let numel: usize = expected.iter().product();
        if bytes.len() != numel * dtype.width() {
            return Err(ConvertError::Safetensors {
                path: self.shards[e.shard].path.clone(),
                msg: format!("tensor {name}: {} bytes for {numel} elements", bytes.len()),
            });
        }
        Ok((dtype, bytes))
    }

    /// Tells the kernel that the pages of tensor `name` are no longer needed,
    /// so that converting a model larger than memory does not keep the
    /// source resident (the page cache still holds them if memory allows).
    pub fn release(&self, name: &str) {
        let Some(e) = self.entries.get(name) else {
            return;
        };
        const PAGE: usize = 4096;
        let start = e.start.div_ceil(PAGE) * PAGE;
        let end = e.end / PAGE * PAGE;
        if end > start {
            // SAFETY: the mapping is private and read-only; MADV_DONTNEED
            // only drops this process's page-table entries, and a later read
            // of the range faults the same file bytes back in, so no memory
            // that Rust code may still read changes its contents.
            let _ = unsafe {
                self.shards[e.shard].map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    end - start,
                )
            };
        }
    }

    /// Reads tensor `name` as f32 and checks its shape against `expected`.
    pub fn read(&self, name: &str, expected: &[usize]) -> Result<SourceTensor> {
        let (dtype, bytes) = self.view(name, expected)?;
        Ok(SourceTensor {
            shape: expected.to_vec(),
            data: dtype.decode(bytes),
        })
    }
}

impl SourceDtype {
    /// Bytes per element.
    pub fn width(self) -> usize {
        match self {
            SourceDtype::F32 => 4,
            SourceDtype::F16 | SourceDtype::BF16 => 2,
        }
    }

    /// Little-endian bytes to f32.
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            SourceDtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            SourceDtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            SourceDtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        }
    }
}
