//! Quantized weight matrices kept as they are: the side file of codes.
//!
//! `kompakt convert --export-codes FILE` writes the blocks it quantized for
//! the decoder's weight matrices (the plan's types, row-major) into a
//! safetensors file; `kompakt-train qat` starts from them, trains the model
//! with those blocks' formats in the loop and writes its trained blocks into
//! the student checkpoint as [`FILE`]. `kompakt convert` then stores those
//! blocks unchanged: no second rounding, so the `.kpk` holds exactly what
//! was trained.
//!
//! Layout: one `U8` tensor per weight matrix, named as in the checkpoint,
//! of shape `[rows, row_bytes]` (each row `ceil(cols / block_elems)` blocks
//! as FORMAT.md specifies them); the metadata key [`META_KEY`] holds JSON
//! `{"<name>": {"dtype": "q4_k", "shape": [rows, cols]}, ...}` and
//! `format` = [`FORMAT`].
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use kompakt_format::DType;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::error::{ConvertError, Result};

/// File name of the trained codes inside a checkpoint directory.
pub const FILE: &str = "kompakt_codes.safetensors";
/// Value of the `format` metadata key.
pub const FORMAT: &str = "kompakt-codes/1";
/// Metadata key of the per-tensor types and shapes.
pub const META_KEY: &str = "kompakt.codes";

/// One quantized matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Coded {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    /// `rows` rows of `ceil(cols / block_elems)` blocks.
    pub bytes: Vec<u8>,
}

impl Coded {
    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.cols.div_ceil(self.dtype.block_elems() as usize) * self.dtype.block_bytes() as usize
    }
}

/// The types that can be stored as codes: row-major block types (the
/// interleaved Q4KX4 is made from Q4K codes by the converter).
pub fn codable(d: DType) -> bool {
    d.is_quantized() && d.group_rows() == 1
}

/// Quantized matrices by checkpoint tensor name.
pub type Codes = BTreeMap<String, Coded>;

/// Reads a codes file, checking every entry's type, shape and size.
pub fn read(path: &Path) -> Result<Codes> {
    let bytes = std::fs::read(path).map_err(|source| ConvertError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |msg: String| ConvertError::Safetensors {
        path: path.to_path_buf(),
        msg,
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad(format!(
            "not a kompakt codes file (metadata `format` is {:?}, expected {FORMAT:?})",
            meta.get("format")
        )));
    }
    let info: Value = meta
        .get(META_KEY)
        .ok_or_else(|| bad(format!("metadata `{META_KEY}` is missing")))
        .and_then(|s| serde_json::from_str(s).map_err(|e| bad(format!("`{META_KEY}`: {e}"))))?;
    let info = info
        .as_object()
        .ok_or_else(|| bad(format!("`{META_KEY}` must be a JSON object")))?;
    let mut out = Codes::new();
    for (name, view) in st.tensors() {
        let entry = info
            .get(&name)
            .ok_or_else(|| bad(format!("tensor `{name}` has no entry in `{META_KEY}`")))?;
        let dtype = entry
            .get("dtype")
            .and_then(Value::as_str)
            .and_then(DType::from_name)
            .filter(|d| codable(*d))
            .ok_or_else(|| {
                bad(format!(
                    "`{name}`: dtype {} is not a block type kompakt stores as codes \
                     (q8_0, q4_k, q3_k, q2_k, iq2)",
                    entry.get("dtype").unwrap_or(&Value::Null)
                ))
            })?;
        let shape: Vec<usize> = entry
            .get("shape")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_u64().map(|v| v as usize))
                    .collect()
            })
            .filter(|s: &Vec<usize>| s.len() == 2 && s[1] > 0)
            .ok_or_else(|| bad(format!("`{name}`: `shape` must be [rows, cols]")))?;
        let c = Coded {
            dtype,
            rows: shape[0],
            cols: shape[1],
            bytes: view.data().to_vec(),
        };
        if view.dtype() != Dtype::U8 || view.shape() != [c.rows, c.row_bytes()] {
            return Err(bad(format!(
                "`{name}`: expected a U8 tensor of shape [{}, {}] ({} rows of {} {} values), \
                 found {:?} {:?}",
                c.rows,
                c.row_bytes(),
                c.rows,
                c.cols,
                dtype,
                view.dtype(),
                view.shape()
            )));
        }
        out.insert(name, c);
    }
    if let Some(extra) = info.keys().find(|k| !out.contains_key(*k)) {
        return Err(bad(format!(
            "`{META_KEY}` names `{extra}`, which has no tensor"
        )));
    }
    Ok(out)
}

/// The trained codes of a checkpoint directory, if it has them.
pub fn in_checkpoint(dir: &Path) -> Result<Option<Codes>> {
    let p = dir.join(FILE);
    if p.is_file() {
        read(&p).map(Some)
    } else {
        Ok(None)
    }
}

/// Writes `codes` to `path` (through a temporary file: an interrupted write
/// leaves nothing at `path`).
pub fn write(path: &Path, codes: &Codes) -> Result<()> {
    let info: serde_json::Map<String, Value> = codes
        .iter()
        .map(|(n, c)| {
            (
                n.clone(),
                serde_json::json!({"dtype": c.dtype.name(), "shape": [c.rows, c.cols]}),
            )
        })
        .collect();
    let meta = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        (META_KEY.to_string(), Value::Object(info).to_string()),
    ]);
    let views = codes
        .iter()
        .map(|(n, c)| {
            safetensors::tensor::TensorView::new(Dtype::U8, vec![c.rows, c.row_bytes()], &c.bytes)
                .map(|v| (n.as_str(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| ConvertError::Safetensors {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
    let tmp = partial_path(path);
    let written = safetensors::tensor::serialize_to_file(views, Some(meta), &tmp)
        .map_err(|e| ConvertError::Safetensors {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })
        .and_then(|()| {
            std::fs::rename(&tmp, path).map_err(|source| ConvertError::Io {
                path: path.to_path_buf(),
                source,
            })
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    // The safetensors writer goes through a private temporary file (mode 0600);
    // a codes file is an ordinary output, readable like the `.kpk`.
    #[cfg(unix)]
    if written.is_ok() {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
    }
    written
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_bad_entries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.safetensors");
        let mut codes = Codes::new();
        let c = Coded {
            dtype: DType::Q2K,
            rows: 3,
            cols: 300,
            bytes: (0..3 * 2 * 84).map(|i| i as u8).collect(),
        };
        codes.insert("a.weight".into(), c.clone());
        write(&p, &codes).unwrap();
        assert_eq!(read(&p).unwrap(), codes);
        assert!(!dir.path().join("c.safetensors.partial").exists());

        // A shape that does not match the byte count is named.
        let mut wrong = codes.clone();
        wrong.get_mut("a.weight").unwrap().cols = 600;
        let views = [(
            "a.weight",
            safetensors::tensor::TensorView::new(Dtype::U8, vec![3, 168], &c.bytes).unwrap(),
        )];
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            (
                META_KEY.to_string(),
                r#"{"a.weight": {"dtype": "q2_k", "shape": [3, 600]}}"#.to_string(),
            ),
        ]);
        safetensors::tensor::serialize_to_file(views, Some(meta), &p).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(
            e.contains("`a.weight`: expected a U8 tensor of shape [3, 252]"),
            "{e}"
        );

        // A plain safetensors file is not a codes file.
        let views = [(
            "a.weight",
            safetensors::tensor::TensorView::new(Dtype::U8, vec![3, 168], &c.bytes).unwrap(),
        )];
        safetensors::tensor::serialize_to_file(views, None, &p).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("not a kompakt codes file"), "{e}");
    }
}
