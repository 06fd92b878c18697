//! Synthetic Qwen2-Audio checkpoints with seeded random weights: exact
//! tensor names, shapes and sharding of the published 7B checkpoint (or of
//! fewer layers), for scale tests and benchmarks where weight values do not
//! matter. Written tensor by tensor, never the whole model in memory.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::json;

use crate::error::{ConvertError, Result};
use crate::hparams::HParams;
use crate::mapping::{self, Role, TensorSpec};

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthOptions {
    pub out: PathBuf,
    /// Decoder layers (32 in the real model).
    pub llm_layers: usize,
    /// Encoder layers (32 in the real model).
    pub audio_layers: usize,
    /// Number of safetensors shards (5 in the real checkpoint).
    pub shards: usize,
    pub seed: u64,
    /// A real `tokenizer.json` to copy instead of the synthetic one (e.g.
    /// Qwen2's BPE, so that vocabulary trimming sees real tokens).
    pub tokenizer: Option<PathBuf>,
}

/// The real Qwen2-Audio-7B hyperparameters with the given depths.
pub fn qwen2_audio_7b(llm_layers: usize, audio_layers: usize) -> HParams {
    HParams {
        n_mels: 128,
        enc_layers: audio_layers,
        enc_heads: 20,
        enc_ffn: 5120,
        d_model: 1280,
        max_source_positions: 1500,
        hidden: 4096,
        layers: llm_layers,
        heads: 32,
        kv_heads: 32,
        head_dim: 128,
        ffn: 11008,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        max_positions: 8192,
        vocab: 156032,
        audio_token_id: Some(151646),
    }
}

fn config_json(hp: &HParams) -> serde_json::Value {
    json!({
        "architectures": ["Qwen2AudioForConditionalGeneration"],
        "model_type": "qwen2_audio",
        "audio_token_index": 151646,
        "audio_config": {
            "model_type": "qwen2_audio_encoder",
            "num_mel_bins": hp.n_mels, "encoder_layers": hp.enc_layers,
            "encoder_attention_heads": hp.enc_heads, "encoder_ffn_dim": hp.enc_ffn,
            "d_model": hp.d_model, "max_source_positions": hp.max_source_positions
        },
        "text_config": {
            "model_type": "qwen2", "hidden_size": hp.hidden, "num_hidden_layers": hp.layers,
            "num_attention_heads": hp.heads, "num_key_value_heads": hp.kv_heads,
            "intermediate_size": hp.ffn, "rms_norm_eps": hp.rms_norm_eps, "rope_theta": hp.rope_theta,
            "max_position_embeddings": hp.max_positions, "vocab_size": hp.vocab,
            "bos_token_id": 151643, "eos_token_id": 151645
        },
        "torch_dtype": "bfloat16",
        "kompakt_synthetic": true
    })
}

/// A byte-level BPE `tokenizer.json` with Qwen2's 151643 regular tokens
/// (256 byte tokens and placeholders) and Qwen2-Audio's special tokens at
/// their real ids. It encodes any text (byte by byte) and decodes any id.
pub fn tokenizer_json() -> serde_json::Value {
    let bytes = crate::vocab::byte_level_alphabet();
    let mut vocab = serde_json::Map::new();
    for (i, c) in bytes.iter().enumerate() {
        vocab.insert(c.to_string(), json!(i));
    }
    for i in bytes.len()..151643 {
        vocab.insert(format!("\u{0100}synthetic{i}"), json!(i));
    }
    let specials = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|AUDIO|>",
        "<|audio_bos|>",
        "<|audio_eos|>",
    ];
    let added: Vec<_> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": 151643 + i, "content": s, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null, "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": []}
    })
}

/// SplitMix64, for reproducible values without a dependency.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `out` with bf16 values: approximately normal with `std` (sum of
/// four uniforms), or the constant `std` when `constant`.
fn fill_bf16(out: &mut [u8], seed: u64, std: f32, constant: bool) {
    out.par_chunks_mut(1 << 16)
        .enumerate()
        .for_each(|(ci, chunk)| {
            let mut s = seed ^ (ci as u64).wrapping_mul(0xA24B_AED4_963E_E407);
            for pair in chunk.chunks_exact_mut(2) {
                let v = if constant {
                    std
                } else {
                    let r = splitmix(&mut s);
                    let u = |k: u32| ((r >> (16 * k)) & 0xFFFF) as f32 / 65536.0;
                    (u(0) + u(1) + u(2) + u(3) - 2.0) * 1.732 * std
                };
                pair.copy_from_slice(&half::bf16::from_f32(v).to_le_bytes());
            }
        });
}

fn std_for(spec: &TensorSpec) -> (f32, bool) {
    let is_norm_weight = spec.hf.ends_with("norm.weight") || spec.hf.ends_with("layer_norm.weight");
    match spec.role {
        Role::Vector if is_norm_weight => (1.0, true),
        Role::Vector => (0.01, false),
        _ => (0.02, false),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ConvertError + '_ {
    move |source| ConvertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the checkpoint; `progress(done_bytes, total_bytes)` after each tensor.
pub fn write(opts: &SynthOptions, progress: &mut dyn FnMut(u64, u64)) -> Result<u64> {
    if opts.shards == 0 {
        return Err(ConvertError::Option("--shards must be at least 1".into()));
    }
    let hp = qwen2_audio_7b(opts.llm_layers, opts.audio_layers);
    let enc: Vec<usize> = (0..hp.enc_layers).collect();
    let llm: Vec<usize> = (0..hp.layers).collect();
    let specs = mapping::tensors(&hp, &enc, &llm);
    let sizes: Vec<u64> = specs
        .iter()
        .map(|s| s.shape.iter().product::<usize>() as u64 * 2)
        .collect();
    let total: u64 = sizes.iter().sum();

    // Contiguous runs of tensors of about equal size per shard.
    let target = total.div_ceil(opts.shards as u64);
    let mut groups: Vec<Vec<usize>> = vec![Vec::new()];
    let mut acc = 0;
    for (i, &sz) in sizes.iter().enumerate() {
        if acc >= target && groups.len() < opts.shards {
            groups.push(Vec::new());
            acc = 0;
        }
        groups.last_mut().expect("non-empty").push(i);
        acc += sz;
    }
    std::fs::create_dir_all(&opts.out).map_err(io(&opts.out))?;
    let n = groups.len();
    let mut weight_map = BTreeMap::new();
    let mut done = 0;
    for (g, idx) in groups.iter().enumerate() {
        let name = format!("model-{:05}-of-{n:05}.safetensors", g + 1);
        let path = opts.out.join(&name);
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), json!({"format": "pt"}));
        let mut off = 0u64;
        for &i in idx {
            let s = &specs[i];
            header.insert(
                s.hf.clone(),
                json!({"dtype": "BF16", "shape": s.shape, "data_offsets": [off, off + sizes[i]]}),
            );
            off += sizes[i];
            weight_map.insert(s.hf.clone(), name.clone());
        }
        let mut hbytes =
            serde_json::to_vec(&header).map_err(|e| ConvertError::Option(e.to_string()))?;
        while (hbytes.len() + 8) % 8 != 0 {
            hbytes.push(b' ');
        }
        let tmp = path.with_extension("safetensors.partial");
        let mut f = BufWriter::with_capacity(1 << 22, File::create(&tmp).map_err(io(&tmp))?);
        f.write_all(&(hbytes.len() as u64).to_le_bytes())
            .map_err(io(&tmp))?;
        f.write_all(&hbytes).map_err(io(&tmp))?;
        for &i in idx {
            let s = &specs[i];
            let (std, constant) = std_for(s);
            let seed = opts.seed ^ xxhash_rust::xxh3::xxh3_64(s.hf.as_bytes());
            // Large tensors in slices of rows, to bound memory.
            let row = *s.shape.last().unwrap_or(&1) * 2;
            let rows = sizes[i] as usize / row;
            let per = (64 << 20) / row.max(1);
            let mut buf = vec![0u8; per.max(1).min(rows.max(1)) * row];
            let mut r = 0;
            while r < rows {
                let take = per.max(1).min(rows - r);
                let out = &mut buf[..take * row];
                fill_bf16(out, seed.wrapping_add(r as u64), std, constant);
                f.write_all(out).map_err(io(&tmp))?;
                r += take;
            }
            done += sizes[i];
            progress(done, total);
        }
        f.flush().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
    }
    let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    let write_json = |name: &str, v: &serde_json::Value| -> Result<()> {
        let p = opts.out.join(name);
        std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap_or_default()).map_err(io(&p))
    };
    write_json("model.safetensors.index.json", &index)?;
    write_json("config.json", &config_json(&hp))?;
    write_json(
        "generation_config.json",
        &json!({"eos_token_id": [151643, 151645], "do_sample": false}),
    )?;
    match &opts.tokenizer {
        Some(src) => {
            let dst = opts.out.join("tokenizer.json");
            std::fs::copy(src, &dst).map_err(io(src))?;
        }
        None => write_json("tokenizer.json", &tokenizer_json())?,
    }
    write_json(
        "tokenizer_config.json",
        &json!({"chat_template": "(Qwen2-Audio chat template; kompakt uses its built-in prompts)", "model_max_length": 8192}),
    )?;
    Ok(total)
}
