//! Calibration files (`kompakt calibrate` writes them, `kompakt convert
//! --calibration` reads them).
//!
//! A calibration file is a safetensors file:
//!
//! - `<weight>.imatrix`, f32 `[in_features]`, for every linear layer of the
//!   calibrated model (`<weight>` is its `.kpk` name, e.g.
//!   `llm.layers.3.attn.q.weight`, `audio.layers.0.ffn.fc1.weight`,
//!   `projector.weight`, `llm.lm_head.weight`): the mean over all calibration
//!   tokens (frames, for the audio encoder) of the squared input of each input
//!   channel, llama.cpp's imatrix definition;
//! - `llm.block_influence` and `audio.block_influence`, f32 `[n_layers]`:
//!   ShortGPT's block influence `1 - mean cos(h_in, h_out)` of each layer
//!   present in the model (index = layer in the calibrated file);
//! - `__metadata__`: `format` = `kompakt-calibration`, `version` = `1`,
//!   `model` (the calibrated model's name), `llm_tokens` and `audio_frames`
//!   (rows seen by the decoder and by the encoder layers), `inputs` (JSON list
//!   of the text files and audio clips used), `llm.layer_ids` and
//!   `audio.layer_ids` (JSON lists: the source layer index of each entry of
//!   the block-influence vectors and of each `layers.N` name, for models that
//!   were already pruned), `counts` (JSON object: rows accumulated per
//!   `.imatrix` tensor).
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::hparams::HParams;
use crate::mapping::{Component, Role, TensorSpec};

/// Value of the `format` metadata key.
pub const FORMAT: &str = "kompakt-calibration";
/// Value of the `version` metadata key.
pub const VERSION: &str = "1";

/// What can be wrong with a calibration file.
#[derive(Debug, Error)]
pub enum CalibError {
    #[error("calibration file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("calibration file {path}: not a safetensors file ({msg})")]
    Corrupt { path: PathBuf, msg: String },
    #[error("calibration file {path}: {msg}")]
    Format { path: PathBuf, msg: String },
    #[error("calibration file {path}: tensor `{name}`: {msg}")]
    Tensor {
        path: PathBuf,
        name: String,
        msg: String,
    },
    #[error("calibration file {path} does not fit this model: {msg}")]
    Mismatch { path: PathBuf, msg: String },
}

/// The contents of a calibration file.
#[derive(Clone, Debug, Default)]
pub struct Calibration {
    /// Weight name -> mean squared input per input channel.
    pub imatrix: BTreeMap<String, Vec<f32>>,
    /// Rows accumulated per weight name.
    pub counts: BTreeMap<String, u64>,
    /// Block influence per decoder layer present in the calibrated model.
    pub llm_influence: Vec<f32>,
    /// Source layer index of each decoder layer of the calibrated model.
    pub llm_layer_ids: Vec<usize>,
    /// Block influence per audio encoder layer present in the calibrated model.
    pub audio_influence: Vec<f32>,
    /// Source layer index of each encoder layer of the calibrated model.
    pub audio_layer_ids: Vec<usize>,
    /// Name of the calibrated model.
    pub model: String,
    /// Token rows run through the decoder.
    pub llm_tokens: u64,
    /// Frames run through the audio encoder layers.
    pub audio_frames: u64,
    /// The inputs used (JSON list of objects).
    pub inputs: serde_json::Value,
    /// xxh3 of the file's bytes (set by [`read`]).
    pub file_xxh3: u64,
    /// The file read (set by [`read`]).
    pub path: PathBuf,
}

/// The hash recorded for calibration inputs and files (xxh3-64).
pub fn hash_bytes(b: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(b)
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Serializes `c` to safetensors bytes.
pub fn to_bytes(c: &Calibration) -> Result<Vec<u8>, CalibError> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = c
        .imatrix
        .iter()
        .map(|(n, v)| (format!("{n}.imatrix"), vec![v.len()], f32_bytes(v)))
        .collect();
    tensors.push((
        "llm.block_influence".into(),
        vec![c.llm_influence.len()],
        f32_bytes(&c.llm_influence),
    ));
    tensors.push((
        "audio.block_influence".into(),
        vec![c.audio_influence.len()],
        f32_bytes(&c.audio_influence),
    ));
    let views = tensors
        .iter()
        .map(|(n, shape, data)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .map(|v| (n.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CalibError::Format {
            path: c.path.clone(),
            msg: e.to_string(),
        })?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), FORMAT.to_string());
    meta.insert("version".to_string(), VERSION.to_string());
    meta.insert("model".to_string(), c.model.clone());
    meta.insert("llm_tokens".to_string(), c.llm_tokens.to_string());
    meta.insert("audio_frames".to_string(), c.audio_frames.to_string());
    meta.insert("inputs".to_string(), c.inputs.to_string());
    meta.insert(
        "llm.layer_ids".to_string(),
        serde_json::json!(c.llm_layer_ids).to_string(),
    );
    meta.insert(
        "audio.layer_ids".to_string(),
        serde_json::json!(c.audio_layer_ids).to_string(),
    );
    meta.insert(
        "counts".to_string(),
        serde_json::json!(c.counts).to_string(),
    );
    safetensors::serialize(views, Some(meta)).map_err(|e| CalibError::Format {
        path: c.path.clone(),
        msg: e.to_string(),
    })
}

/// Writes `c` to `path` (through a temporary file, so an interrupted write
/// leaves no file that looks valid).
pub fn write(path: &Path, c: &Calibration) -> Result<(), CalibError> {
    let bytes = to_bytes(c)?;
    let io = |source| CalibError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, &bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Reads and checks a calibration file: format and version, every tensor
/// f32 and 1-D, every value finite and non-negative, block-influence lengths
/// matching the layer-id lists.
pub fn read(path: &Path) -> Result<Calibration, CalibError> {
    let bytes = std::fs::read(path).map_err(|source| CalibError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    from_bytes(&bytes, path)
}

/// [`read`] on bytes already in memory; `path` names them in errors.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Calibration, CalibError> {
    let p = || path.to_path_buf();
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| CalibError::Corrupt {
        path: p(),
        msg: e.to_string(),
    })?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(bytes).map_err(|e| CalibError::Corrupt {
            path: p(),
            msg: e.to_string(),
        })?;
    let meta = header.metadata().clone().unwrap_or_default();
    let fmt_err = |msg: String| CalibError::Format { path: p(), msg };
    match meta.get("format").map(String::as_str) {
        Some(FORMAT) => {}
        Some(other) => {
            return Err(fmt_err(format!(
                "not a {FORMAT} file (its metadata format is `{other}`; write one with `kompakt calibrate`)"
            )))
        }
        None => {
            return Err(fmt_err(format!(
                "no `format` metadata: not a {FORMAT} file (write one with `kompakt calibrate`)"
            )))
        }
    }
    if meta.get("version").map(String::as_str) != Some(VERSION) {
        return Err(fmt_err(format!(
            "version {:?} is not supported (this converter reads version {VERSION})",
            meta.get("version")
        )));
    }
    let num = |key: &str| -> Result<u64, CalibError> {
        meta.get(key)
            .ok_or_else(|| fmt_err(format!("metadata `{key}` is missing")))?
            .parse()
            .map_err(|_| fmt_err(format!("metadata `{key}` is not a number")))
    };
    let json = |key: &str| -> Result<serde_json::Value, CalibError> {
        serde_json::from_str(
            meta.get(key)
                .ok_or_else(|| fmt_err(format!("metadata `{key}` is missing")))?,
        )
        .map_err(|e| fmt_err(format!("metadata `{key}` is not JSON: {e}")))
    };
    let ids = |key: &str| -> Result<Vec<usize>, CalibError> {
        serde_json::from_value(json(key)?)
            .map_err(|_| fmt_err(format!("metadata `{key}` is not a list of layer indices")))
    };
    let mut c = Calibration {
        model: meta.get("model").cloned().unwrap_or_default(),
        llm_tokens: num("llm_tokens")?,
        audio_frames: num("audio_frames")?,
        inputs: json("inputs")?,
        llm_layer_ids: ids("llm.layer_ids")?,
        audio_layer_ids: ids("audio.layer_ids")?,
        counts: serde_json::from_value(json("counts")?)
            .map_err(|_| fmt_err("metadata `counts` is not an object of row counts".into()))?,
        file_xxh3: xxhash_rust::xxh3::xxh3_64(bytes),
        path: p(),
        ..Default::default()
    };
    let mut have_llm = false;
    let mut have_audio = false;
    for (name, view) in st.iter() {
        let terr = |msg: String| CalibError::Tensor {
            path: p(),
            name: name.to_string(),
            msg,
        };
        if view.dtype() != safetensors::Dtype::F32 || view.shape().len() != 1 {
            return Err(terr(format!(
                "expected a 1-D f32 tensor, found {:?} {:?}",
                view.dtype(),
                view.shape()
            )));
        }
        let v = floats(view.data());
        if let Some(i) = v.iter().position(|x| !x.is_finite() || *x < 0.0) {
            return Err(terr(format!(
                "value {} at {i} is not a finite non-negative number",
                v[i]
            )));
        }
        match name {
            "llm.block_influence" => {
                have_llm = true;
                c.llm_influence = v
            }
            "audio.block_influence" => {
                have_audio = true;
                c.audio_influence = v
            }
            n => match n.strip_suffix(".imatrix") {
                Some(w) => {
                    c.imatrix.insert(w.to_string(), v);
                }
                None => return Err(terr("unexpected tensor".into())),
            },
        }
    }
    if !have_llm || !have_audio {
        return Err(fmt_err(
            "`llm.block_influence` or `audio.block_influence` is missing".into(),
        ));
    }
    for (what, inf, ids) in [
        ("llm", &c.llm_influence, &c.llm_layer_ids),
        ("audio", &c.audio_influence, &c.audio_layer_ids),
    ] {
        if inf.len() != ids.len() {
            return Err(CalibError::Tensor {
                path: p(),
                name: format!("{what}.block_influence"),
                msg: format!(
                    "{} values for the {} layers of `{what}.layer_ids`",
                    inf.len(),
                    ids.len()
                ),
            });
        }
    }
    Ok(c)
}

/// The stack a tensor's layer belongs to.
fn stack(spec: &TensorSpec) -> Option<&'static str> {
    match (spec.component, spec.layer) {
        (Component::AudioEncoder, Some(_)) => Some("audio"),
        (Component::LlmLayers, Some(_)) => Some("llm"),
        _ => None,
    }
}

impl Calibration {
    /// Source layer ids and block influences of `stack` (`llm` or `audio`).
    fn layers(&self, stack: &str) -> (&[usize], &[f32]) {
        if stack == "llm" {
            (&self.llm_layer_ids, &self.llm_influence)
        } else {
            (&self.audio_layer_ids, &self.audio_influence)
        }
    }

    /// Whether `stack` saw any calibration rows.
    pub fn covers(&self, stack: &str) -> bool {
        if stack == "llm" {
            self.llm_tokens > 0
        } else {
            self.audio_frames > 0
        }
    }

    /// Block influence of source layer `src` of `stack`, if calibrated.
    pub fn influence(&self, stack: &str, src: usize) -> Option<f32> {
        let (ids, inf) = self.layers(stack);
        ids.iter().position(|&l| l == src).map(|p| inf[p])
    }

    /// The name under which `spec`'s importance is stored: its `.kpk` name
    /// with the layer number of the calibrated model (which may differ when
    /// either model is depth-pruned). `None` when the calibrated model lacks
    /// the source layer.
    fn calib_name(&self, spec: &TensorSpec) -> Option<String> {
        let (Some(stack), Some(src)) = (stack(spec), spec.layer) else {
            return Some(spec.kpk.clone());
        };
        let (ids, _) = self.layers(stack);
        let p = ids.iter().position(|&l| l == src)?;
        let rest = spec.kpk.splitn(4, '.').nth(3)?;
        Some(format!("{stack}.layers.{p}.{rest}"))
    }

    /// The importance vector (per input channel) for weight `spec`: `None`
    /// for tensors that have none (embeddings, norms, convolutions) and for
    /// tensors of a stack the calibration did not run (e.g. the audio
    /// encoder after text-only calibration).
    pub fn importance(&self, spec: &TensorSpec) -> Result<Option<&[f32]>, CalibError> {
        if !matches!(spec.role, Role::Linear | Role::LmHead) {
            return Ok(None);
        }
        let st = match spec.component {
            Component::AudioEncoder | Component::Projector => "audio",
            _ => "llm",
        };
        if !self.covers(st) {
            return Ok(None);
        }
        let mismatch = |msg: String| CalibError::Mismatch {
            path: self.path.clone(),
            msg,
        };
        let name = self.calib_name(spec).ok_or_else(|| {
            mismatch(format!(
                "`{}` comes from source {} layer {}, which the calibrated model `{}` does not have (its layers: {:?})",
                spec.kpk,
                stack(spec).unwrap_or(""),
                spec.layer.unwrap_or(0),
                self.model,
                self.layers(stack(spec).unwrap_or("llm")).0
            ))
        })?;
        let v = self.imatrix.get(&name).ok_or_else(|| {
            mismatch(format!(
                "no `{name}.imatrix` for `{}` (calibrated model `{}`)",
                spec.kpk, self.model
            ))
        })?;
        let cols = *spec.shape.last().unwrap_or(&0);
        if v.len() != cols {
            return Err(mismatch(format!(
                "`{name}.imatrix` has {} values but `{}` has {cols} input features",
                v.len(),
                spec.kpk
            )));
        }
        Ok(Some(v))
    }

    /// Checks that the file fits a checkpoint of `hp` whose kept tensors are
    /// `specs`: layer ids within the model and an importance vector of the
    /// right length for every linear layer of a calibrated stack.
    pub fn check(&self, hp: &HParams, specs: &[TensorSpec]) -> Result<(), CalibError> {
        let mismatch = |msg: String| CalibError::Mismatch {
            path: self.path.clone(),
            msg,
        };
        for (what, ids, n) in [
            ("LLM", &self.llm_layer_ids, hp.layers),
            ("audio", &self.audio_layer_ids, hp.enc_layers),
        ] {
            if let Some(&bad) = ids.iter().find(|&&l| l >= n) {
                return Err(mismatch(format!(
                    "it has {what} layer {bad}, the checkpoint has {n} (calibrated model `{}`)",
                    self.model
                )));
            }
        }
        for s in specs {
            self.importance(s)?;
        }
        Ok(())
    }

    /// A one-line summary for provenance and messages.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "file": self.path.file_name().map(|n| n.to_string_lossy().into_owned()),
            "xxh3": format!("{:016x}", self.file_xxh3),
            "format": format!("{FORMAT} v{VERSION}"),
            "model": self.model,
            "llm_tokens": self.llm_tokens,
            "audio_frames": self.audio_frames,
            "inputs": self.inputs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Calibration {
        let mut c = Calibration {
            model: "m".into(),
            llm_tokens: 10,
            audio_frames: 0,
            inputs: serde_json::json!([{"text": "a.txt"}]),
            llm_influence: vec![0.5, 0.25],
            llm_layer_ids: vec![0, 3],
            ..Default::default()
        };
        c.imatrix
            .insert("llm.layers.1.attn.q.weight".into(), vec![1.0, 2.0]);
        c.counts.insert("llm.layers.1.attn.q.weight".into(), 10);
        c
    }

    #[test]
    fn round_trip_and_errors() {
        let c = sample();
        let bytes = to_bytes(&c).unwrap();
        let r = from_bytes(&bytes, Path::new("x.safetensors")).unwrap();
        assert_eq!(r.imatrix, c.imatrix);
        assert_eq!(r.llm_layer_ids, vec![0, 3]);
        assert_eq!(r.influence("llm", 3), Some(0.25));
        assert_eq!(r.counts, c.counts);
        let err = from_bytes(&bytes[..bytes.len() / 2], Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("not a safetensors file"), "{err}");
        let mut bad = c.clone();
        bad.llm_influence.pop();
        let err = from_bytes(&to_bytes(&bad).unwrap(), Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("llm.block_influence"), "{err}");
        bad = c;
        bad.imatrix.insert("w".into(), vec![f32::NAN]);
        let err = from_bytes(&to_bytes(&bad).unwrap(), Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("`w.imatrix`"), "{err}");
    }
}
