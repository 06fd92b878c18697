//! Model hyperparameters, special tokens and prompts, read from `.kpk` metadata
//! (keys in `format-spec/FORMAT.md`).
use std::collections::BTreeMap;

use kompakt_format::Metadata;

use crate::error::{Result, RuntimeError};

/// Whisper-style audio encoder and its front end.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioConfig {
    pub sample_rate: u32,
    pub n_fft: usize,
    pub hop_length: usize,
    pub chunk_length: usize,
    pub n_mels: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub ffn_dim: usize,
    pub max_source_positions: usize,
    pub layer_norm_eps: f32,
}

impl AudioConfig {
    /// Samples in one encoder window (30 s at 16 kHz).
    pub fn chunk_samples(&self) -> usize {
        self.chunk_length * self.sample_rate as usize
    }
    /// Mel frames in one encoder window (3000).
    pub fn n_frames(&self) -> usize {
        self.max_source_positions * 2
    }
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }
}

/// Qwen2 decoder.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmConfig {
    pub hidden_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub ffn_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
}

impl LlmConfig {
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

/// Token ids with a role in prompting and stopping (original id space).
#[derive(Clone, Debug, PartialEq)]
pub struct SpecialTokens {
    pub audio: u32,
    pub audio_bos: u32,
    pub audio_eos: u32,
    pub im_start: u32,
    pub im_end: u32,
    pub eos: Vec<u32>,
}

/// Everything the runtime needs to know about a model besides its tensors.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub name: String,
    pub audio: AudioConfig,
    pub llm: LlmConfig,
    pub special: SpecialTokens,
    pub prompt_style: String,
    /// Target language code -> full prompt text with one `<|AUDIO|>`.
    pub templates: BTreeMap<String, String>,
    /// The template with `{audio}` and `{instruction}` (FORMAT.md 1.3), for
    /// one-off instructions; `None` when the file has none and its style is
    /// not `chat` or `base`.
    pub prompt_template: Option<String>,
    /// Target language code -> instruction (files of format 1.3 and later).
    pub instructions: BTreeMap<String, String>,
    /// Row -> original token id, when the vocabulary was trimmed.
    pub kept_ids: Option<Vec<u32>>,
}

fn usize_key(meta: &Metadata, key: &str) -> Result<usize> {
    let v = meta.get_u64(key)?;
    usize::try_from(v).ok().filter(|&v| v > 0).ok_or_else(|| {
        RuntimeError::InvalidModel(format!("metadata `{key}` = {v} is out of range"))
    })
}

fn id_key(meta: &Metadata, key: &str) -> Result<u32> {
    let v = meta.get_u64(key)?;
    u32::try_from(v).map_err(|_| {
        RuntimeError::InvalidModel(format!("metadata `{key}` = {v} is not a token id"))
    })
}

fn ids(key: &str, values: &[i64]) -> Result<Vec<u32>> {
    values
        .iter()
        .map(|&v| {
            u32::try_from(v).map_err(|_| {
                RuntimeError::InvalidModel(format!("metadata `{key}` holds {v}, not a token id"))
            })
        })
        .collect()
}

impl ModelConfig {
    /// Reads and validates the configuration.
    pub fn from_metadata(meta: &Metadata) -> Result<ModelConfig> {
        let arch = meta.get_str("general.architecture")?;
        if arch != "qwen2_audio" {
            return Err(RuntimeError::Unsupported(format!(
                "architecture `{arch}` is not supported (expected `qwen2_audio`)"
            )));
        }
        let audio = AudioConfig {
            sample_rate: u32::try_from(meta.get_u64("audio.sample_rate")?).unwrap_or(0),
            n_fft: usize_key(meta, "audio.n_fft")?,
            hop_length: usize_key(meta, "audio.hop_length")?,
            chunk_length: usize_key(meta, "audio.chunk_length")?,
            n_mels: usize_key(meta, "audio.n_mels")?,
            d_model: usize_key(meta, "audio.d_model")?,
            n_layers: usize_key(meta, "audio.n_layers")?,
            n_heads: usize_key(meta, "audio.n_heads")?,
            ffn_dim: usize_key(meta, "audio.ffn_dim")?,
            max_source_positions: usize_key(meta, "audio.max_source_positions")?,
            layer_norm_eps: meta.get_f64("audio.layer_norm_eps")? as f32,
        };
        if audio.sample_rate != 16000 || !audio.d_model.is_multiple_of(audio.n_heads) {
            return Err(RuntimeError::Unsupported(format!(
                "audio front end with sample rate {} Hz, d_model {} with {} heads",
                audio.sample_rate, audio.d_model, audio.n_heads
            )));
        }
        let llm = LlmConfig {
            hidden_size: usize_key(meta, "llm.hidden_size")?,
            n_layers: usize_key(meta, "llm.n_layers")?,
            n_heads: usize_key(meta, "llm.n_heads")?,
            n_kv_heads: usize_key(meta, "llm.n_kv_heads")?,
            head_dim: usize_key(meta, "llm.head_dim")?,
            ffn_dim: usize_key(meta, "llm.ffn_dim")?,
            rms_norm_eps: meta.get_f64("llm.rms_norm_eps")? as f32,
            rope_theta: meta.get_f64("llm.rope_theta")?,
            max_position_embeddings: usize_key(meta, "llm.max_position_embeddings")?,
            vocab_size: usize_key(meta, "llm.vocab_size")?,
        };
        if !llm.n_heads.is_multiple_of(llm.n_kv_heads) || !llm.head_dim.is_multiple_of(2) {
            return Err(RuntimeError::InvalidModel(format!(
                "{} query heads cannot share {} KV heads (head dim {})",
                llm.n_heads, llm.n_kv_heads, llm.head_dim
            )));
        }
        let special = SpecialTokens {
            audio: id_key(meta, "tokenizer.audio_token_id")?,
            audio_bos: id_key(meta, "tokenizer.audio_bos_id")?,
            audio_eos: id_key(meta, "tokenizer.audio_eos_id")?,
            im_start: id_key(meta, "tokenizer.im_start_id")?,
            im_end: id_key(meta, "tokenizer.im_end_id")?,
            eos: ids("tokenizer.eos_ids", meta.get_i64s("tokenizer.eos_ids")?)?,
        };
        let languages = meta.get_strs("prompt.languages")?;
        let mut templates = BTreeMap::new();
        for lang in languages {
            let key = format!("prompt.template.{lang}");
            let text = meta.get_str(&key)?;
            if text.matches("<|AUDIO|>").count() != 1 {
                return Err(RuntimeError::InvalidModel(format!(
                    "metadata `{key}` must contain `<|AUDIO|>` exactly once"
                )));
            }
            templates.insert(lang.clone(), text.to_string());
        }
        let prompt_style = meta.opt_str("prompt.style").unwrap_or("chat").to_string();
        let prompt_template = match meta.opt_str("prompt.template") {
            Some(t) => {
                kompakt_format::prompt::check_template(t).map_err(|e| {
                    RuntimeError::InvalidModel(format!("metadata `prompt.template`: {e}"))
                })?;
                Some(t.to_string())
            }
            None => match prompt_style.as_str() {
                "chat" => Some(kompakt_format::prompt::CHAT_TEMPLATE.to_string()),
                "base" => Some(kompakt_format::prompt::BASE_TEMPLATE.to_string()),
                _ => None,
            },
        };
        let mut instructions = BTreeMap::new();
        for (lang, full) in &templates {
            if let Some(i) = meta.opt_str(&format!("prompt.instruction.{lang}")) {
                instructions.insert(lang.clone(), i.to_string());
            } else if let Some(i) = prompt_template
                .as_deref()
                .and_then(|t| instruction_of(t, full))
            {
                // Files before format 1.3: the instruction is what the full
                // prompt has where the style's template has `{instruction}`.
                instructions.insert(lang.clone(), i);
            }
        }
        let kept_ids = match meta.opt_i64s("vocab.kept_ids") {
            Some(v) => Some(ids("vocab.kept_ids", v)?),
            None => None,
        };
        if let Some(k) = &kept_ids {
            if k.len() != llm.vocab_size {
                return Err(RuntimeError::InvalidModel(format!(
                    "`vocab.kept_ids` has {} entries but the vocabulary has {} rows",
                    k.len(),
                    llm.vocab_size
                )));
            }
        }
        Ok(ModelConfig {
            name: meta
                .opt_str("general.name")
                .unwrap_or("unnamed")
                .to_string(),
            audio,
            llm,
            special,
            prompt_style,
            templates,
            prompt_template,
            instructions,
            kept_ids,
        })
    }

    /// Target languages with a prompt, sorted.
    pub fn languages(&self) -> Vec<String> {
        self.templates.keys().cloned().collect()
    }
}

/// The instruction inside `full`, a prompt made from `template`: the text
/// between the expanded parts before and after `{instruction}`; `None` when
/// `full` was not made from `template`.
fn instruction_of(template: &str, full: &str) -> Option<String> {
    use kompakt_format::prompt::{AUDIO_SLOT, AUDIO_SPAN, INSTRUCTION_SLOT};
    let (before, after) = template.split_once(INSTRUCTION_SLOT)?;
    let (before, after) = (
        before.replace(AUDIO_SLOT, AUDIO_SPAN),
        after.replace(AUDIO_SLOT, AUDIO_SPAN),
    );
    let inner = full
        .strip_prefix(before.as_str())?
        .strip_suffix(after.as_str())?;
    (!inner.trim().is_empty()).then(|| inner.to_string())
}

#[cfg(test)]
mod prompt_tests {
    use super::instruction_of;
    use kompakt_format::prompt::{expand, BASE_TEMPLATE, CHAT_TEMPLATE};

    #[test]
    fn older_files_give_back_their_instruction() {
        for t in [CHAT_TEMPLATE, BASE_TEMPLATE] {
            let full = expand(t, "Translate the English speech into German:").unwrap();
            assert_eq!(
                instruction_of(t, &full).as_deref(),
                Some("Translate the English speech into German:")
            );
        }
        assert_eq!(instruction_of(CHAT_TEMPLATE, "something else"), None);
    }
}
