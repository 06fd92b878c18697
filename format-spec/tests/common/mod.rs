//! Test helpers: small valid files via the writer, and raw files assembled
//! byte by byte with a correct checksum for structural-fault tests.
#![allow(dead_code)]

use kompakt_format::layout::{self, DirEntry, Header};
use kompakt_format::{DType, KpkWriter, MetaValue};
use std::path::Path;

/// A small valid file: three tensors of different dtypes and a few keys.
pub fn write_sample(path: &Path) {
    let mut w = KpkWriter::create(path).unwrap();
    let m = w.metadata_mut();
    m.insert("general.architecture", "qwen2_audio").unwrap();
    m.insert("llm.hidden_size", 8u64).unwrap();
    m.insert("llm.rope_theta", 10000.0f64).unwrap();
    m.insert("prompt.languages", vec!["de", "zh"]).unwrap();
    m.insert("vocab.kept_ids", vec![1i64, -2, 3]).unwrap();
    m.insert("audio.mel_filters", vec![0.5f32, 0.25]).unwrap();
    m.insert("flags.enabled", true).unwrap();
    m.insert("blob.raw", vec![1u8, 2, 3]).unwrap();
    let w32: Vec<f32> = (0..24).map(|i| i as f32 * 0.5).collect();
    w.write_tensor(
        "llm.embed.weight",
        DType::F32,
        &[3, 8],
        bytemuck::cast_slice(&w32),
    )
    .unwrap();
    w.write_tensor("llm.norm.weight", DType::F16, &[8], &[0x3c; 16])
        .unwrap();
    w.write_tensor("audio.q.weight", DType::Q8_0, &[2, 32], &[7; 68])
        .unwrap();
    w.finish().unwrap();
}

/// The bytes of [`write_sample`].
pub fn sample_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.kpk");
    write_sample(&p);
    std::fs::read(p).unwrap()
}

/// A file assembled from parts; `build` fills offsets, sizes and checksum.
pub struct Raw {
    pub header: Header,
    pub data: Vec<u8>,
    pub meta: Vec<u8>,
    pub dir: Vec<u8>,
}

impl Raw {
    pub fn new() -> Raw {
        Raw {
            header: Header::new(),
            data: Vec::new(),
            meta: Vec::new(),
            dir: Vec::new(),
        }
    }

    pub fn meta(mut self, key: &str, value: impl Into<MetaValue>) -> Raw {
        layout::encode_meta_entry(&mut self.meta, key, &value.into());
        self.header.meta_count += 1;
        self
    }

    pub fn meta_raw(mut self, key: &str, tag: u32, payload: &[u8]) -> Raw {
        layout::encode_raw_meta_entry(&mut self.meta, key, tag, payload);
        self.header.meta_count += 1;
        self
    }

    /// A directory entry with the right length and checksum for `bytes`
    /// placed at `offset` (data grows to hold it).
    pub fn tensor(
        mut self,
        name: &str,
        dtype: DType,
        shape: &[u64],
        offset: u64,
        bytes: &[u8],
    ) -> Raw {
        let end = offset as usize + bytes.len();
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[offset as usize..end].copy_from_slice(bytes);
        let e = DirEntry::new(
            name,
            dtype,
            shape,
            offset,
            bytes.len() as u64,
            layout::tensor_checksum(bytes),
        );
        self.entry(e)
    }

    pub fn entry(mut self, e: DirEntry) -> Raw {
        e.encode(&mut self.dir);
        self.header.tensor_count += 1;
        self
    }

    pub fn build(self) -> Vec<u8> {
        layout::assemble(self.header, &self.data, &self.meta, &self.dir)
    }
}
