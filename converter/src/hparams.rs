//! Hyperparameters from a Qwen2-Audio `config.json`, with the defaults of
//! transformers' `Qwen2AudioEncoderConfig` and `Qwen2Config` for the fields
//! the published checkpoints leave out.
use serde_json::Value;

use crate::error::{ConvertError, Result};

/// Architecture of the checkpoint being converted.
#[derive(Clone, Debug, PartialEq)]
pub struct HParams {
    pub n_mels: usize,
    pub enc_layers: usize,
    pub enc_heads: usize,
    pub enc_ffn: usize,
    pub d_model: usize,
    pub max_source_positions: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_positions: usize,
    pub vocab: usize,
    pub audio_token_id: Option<u64>,
}

fn get_usize(obj: &Value, key: &str, default: usize) -> Result<usize> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .filter(|&v| v > 0)
            .ok_or_else(|| {
                ConvertError::Config(format!("`{key}` = {v} is not a positive integer"))
            }),
    }
}

fn get_f64(obj: &Value, key: &str, default: f64) -> Result<f64> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .filter(|v| v.is_finite() && *v > 0.0)
            .ok_or_else(|| ConvertError::Config(format!("`{key}` = {v} is not a positive number"))),
    }
}

impl HParams {
    pub fn from_config(config: &Value) -> Result<HParams> {
        let arch = config
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("");
        if arch != "qwen2_audio" {
            return Err(ConvertError::Config(format!(
                "model_type is `{arch}`, expected `qwen2_audio` (a Qwen2AudioForConditionalGeneration checkpoint)"
            )));
        }
        let empty = Value::Object(Default::default());
        let a = config.get("audio_config").unwrap_or(&empty);
        let t = config.get("text_config").unwrap_or(&empty);
        let hidden = get_usize(t, "hidden_size", 4096)?;
        let heads = get_usize(t, "num_attention_heads", 32)?;
        let kv_heads = get_usize(t, "num_key_value_heads", heads)?;
        let default_head_dim = hidden / heads;
        let rope_default = t
            .get("rope_parameters")
            .and_then(|r| r.get("rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or(10000.0);
        if let Some(kind) = t
            .get("rope_parameters")
            .and_then(|r| r.get("rope_type"))
            .and_then(Value::as_str)
        {
            if kind != "default" {
                return Err(ConvertError::Config(format!(
                    "rope_type `{kind}` is not supported (only `default`)"
                )));
            }
        }
        let hp = HParams {
            n_mels: get_usize(a, "num_mel_bins", 128)?,
            enc_layers: get_usize(a, "encoder_layers", 32)?,
            enc_heads: get_usize(a, "encoder_attention_heads", 20)?,
            enc_ffn: get_usize(a, "encoder_ffn_dim", 5120)?,
            d_model: get_usize(a, "d_model", 1280)?,
            max_source_positions: get_usize(a, "max_source_positions", 1500)?,
            hidden,
            layers: get_usize(t, "num_hidden_layers", 32)?,
            heads,
            kv_heads,
            head_dim: get_usize(t, "head_dim", default_head_dim)?,
            ffn: get_usize(t, "intermediate_size", 22016)?,
            rms_norm_eps: get_f64(t, "rms_norm_eps", 1e-6)?,
            rope_theta: get_f64(t, "rope_theta", rope_default)?,
            max_positions: get_usize(t, "max_position_embeddings", 32768)?,
            vocab: get_usize(t, "vocab_size", 151936)?,
            audio_token_id: config
                .get("audio_token_id")
                .or_else(|| config.get("audio_token_index"))
                .and_then(Value::as_u64),
        };
        if !hp.heads.is_multiple_of(hp.kv_heads) {
            return Err(ConvertError::Config(format!(
                "{} attention heads are not a multiple of {} KV heads",
                hp.heads, hp.kv_heads
            )));
        }
        if !hp.d_model.is_multiple_of(hp.enc_heads) {
            return Err(ConvertError::Config(format!(
                "encoder d_model {} is not a multiple of {} heads",
                hp.d_model, hp.enc_heads
            )));
        }
        Ok(hp)
    }
}
