//! Checkpoint to `.kpk`: reads tensors one window at a time, converts them in
//! parallel, streams them into the writer in file order, and records the
//! hyperparameters, tokenizer, mel filterbank, prompts and provenance.
use std::path::{Path, PathBuf};

use kompakt_format::{DType, KpkWriter, MetaValue, Metadata};
use rayon::prelude::*;
use serde_json::Value;

use crate::calib::Calibration;
use crate::checkpoint::{read_json, Checkpoint};
use crate::error::{ConvertError, Result};
use crate::hparams::HParams;
use crate::mapping::{self, Component, Role, TensorSpec};

/// Prompt format stored in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptStyle {
    /// Qwen2-Audio-Instruct chat template.
    Chat,
    /// Base model: audio then the instruction.
    Base,
}

/// What to convert and how.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    pub checkpoint: PathBuf,
    pub out: PathBuf,
    /// Dtype of linear layers, embeddings and lm_head.
    pub dtype: DType,
    /// `None` = chat if the tokenizer has a chat template, else base.
    pub prompt_style: Option<PromptStyle>,
    /// A prompt template with `{audio}` and `{instruction}` (see
    /// `kompakt_format::prompt`) used instead of the style's.
    pub prompt_template: Option<String>,
    /// Instructions by target language: replace the built-in ones of `de`
    /// and `zh`, or add languages.
    pub instructions: Vec<(String, String)>,
    pub name: Option<String>,
    /// Fit the file under this many bytes with a mixed-precision allocation
    /// (then `dtype` is ignored for the allocated tensors).
    pub budget: Option<u64>,
    /// Size-bin target recorded in provenance (1-5), when `budget` came from one.
    pub bin: Option<u8>,
    /// Vocabulary trimming.
    pub keep_vocab: Option<crate::vocab::KeepVocab>,
    /// Source decoder layers to drop.
    pub drop_llm_layers: Vec<usize>,
    /// Source encoder layers to drop.
    pub drop_audio_layers: Vec<usize>,
    /// Also drop this many decoder layers: those of lowest block influence
    /// in the calibration (never the first or the last layer).
    pub drop_llm_auto: Option<usize>,
    /// Also drop this many encoder layers of lowest block influence.
    pub drop_audio_auto: Option<usize>,
    /// Recipe whose `[[types]]` rules restrict the types of matching weight
    /// matrices (its other settings are applied by the caller).
    pub recipe: Option<crate::recipe::Recipe>,
    /// Calibration file (`kompakt calibrate`): importance-weighted
    /// quantization, importance- and sensitivity-weighted allocation, and the
    /// block influences for automatic depth pruning.
    pub calibration: Option<PathBuf>,
    /// With a calibration and a budget: weigh each tensor's loss by its
    /// layer's block-influence sensitivity (`plan::sensitivity`). Off by
    /// default: on the real-weight proxy it made the plans worse (KL 2.62
    /// against 1.25 without it at 2.98 bits per weight), so only the
    /// importance weighting of the errors is used unless asked for.
    pub layer_sensitivity: bool,
    /// Store the decoder's Q4K matrices (LLM layers and lm_head, rows a
    /// multiple of 4) as Q4KX4: the same blocks, rows interleaved by four
    /// for the interleaved mat-vec kernel. On by default.
    pub interleave_q4k: bool,
    /// Also write the quantized blocks of the decoder's weight matrices
    /// (row-major, as quantized for this file) to this codes file
    /// (`crate::codes`): the starting point of `kompakt-train qat`.
    pub export_codes: Option<PathBuf>,
}

impl ConvertOptions {
    /// Options for a plain conversion to `dtype`.
    pub fn new(
        checkpoint: impl Into<PathBuf>,
        out: impl Into<PathBuf>,
        dtype: DType,
    ) -> ConvertOptions {
        ConvertOptions {
            checkpoint: checkpoint.into(),
            out: out.into(),
            dtype,
            prompt_style: None,
            prompt_template: None,
            instructions: Vec::new(),
            name: None,
            budget: None,
            bin: None,
            keep_vocab: None,
            drop_llm_layers: Vec::new(),
            drop_audio_layers: Vec::new(),
            drop_llm_auto: None,
            drop_audio_auto: None,
            recipe: None,
            calibration: None,
            layer_sensitivity: false,
            interleave_q4k: true,
            export_codes: None,
        }
    }
}

/// Upper storage limit of IWSLT 2025 size bin `bin` in bytes (MB = 10^6).
pub fn bin_limit(bin: u8) -> Option<u64> {
    match bin {
        1 => Some(4_000_000_000),
        2 => Some(2_000_000_000),
        3 => Some(1_000_000_000),
        4 => Some(500_000_000),
        5 => Some(200_000_000),
        _ => None,
    }
}

/// The byte budget used for bin `bin`: its upper limit less a 0.5 % margin.
pub fn bin_budget(bin: u8) -> Option<u64> {
    bin_limit(bin).map(|l| l - l / 200)
}

/// Progress of a conversion.
#[derive(Clone, Debug)]
pub struct Progress<'a> {
    pub stage: Stage,
    pub done: usize,
    pub total: usize,
    pub tensor: &'a str,
}

/// Phase of a conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Measuring quantization errors for the mixed-precision plan.
    Planning,
    /// Converting and writing tensors.
    Writing,
}

/// What a finished conversion wrote.
#[derive(Clone, Debug)]
pub struct ConvertSummary {
    pub path: PathBuf,
    pub file_size: u64,
    pub tensors: usize,
    pub params: u64,
    /// Rows kept when the vocabulary was trimmed.
    pub kept_vocab: Option<usize>,
    /// The mixed-precision plan, when a budget was given.
    pub plan: Option<crate::plan::Plan>,
    /// Source decoder layers dropped (explicit and automatic).
    pub dropped_llm_layers: Vec<usize>,
    /// Source encoder layers dropped (explicit and automatic).
    pub dropped_audio_layers: Vec<usize>,
    /// Weight matrices stored with the trained codes of the checkpoint's
    /// `kompakt_codes.safetensors` (quantization-aware training).
    pub trained_codes: usize,
    /// Matrices written to `ConvertOptions::export_codes`.
    pub exported_codes: usize,
}

/// Structure decisions that the metadata records.
struct Layout<'a> {
    hp: &'a HParams,
    enc_layers: &'a [usize],
    llm_layers: &'a [usize],
    kept: Option<&'a [u32]>,
    prompts: &'a Prompts,
    plan: Option<&'a crate::plan::Plan>,
    /// `tokenizer.json` as read, and the compressed metadata value of it.
    tokenizer_json: &'a [u8],
    tokenizer_zstd: &'a MetaValue,
    /// The vocabulary table and tokenized prompts.
    table: &'a crate::vocab::DecodingTable,
    calib: Option<&'a Calibration>,
    /// Layers chosen by block influence: (stack, source layer, influence).
    auto_dropped: &'a [(&'static str, usize, f32)],
    /// Matrices stored from trained codes.
    trained: usize,
}

fn prompt_style(opts: &ConvertOptions) -> Result<PromptStyle> {
    if let Some(s) = opts.prompt_style {
        return Ok(s);
    }
    let dir = &opts.checkpoint;
    let cfg_path = dir.join("tokenizer_config.json");
    let has_template = cfg_path.exists()
        && read_json(&cfg_path)
            .map(|(v, _)| v.get("chat_template").is_some())
            .unwrap_or(false);
    Ok(
        if has_template
            || dir.join("chat_template.json").exists()
            || dir.join("chat_template.jinja").exists()
        {
            PromptStyle::Chat
        } else {
            PromptStyle::Base
        },
    )
}

/// Instruction per target language (the built-in ones).
pub const INSTRUCTIONS: [(&str, &str); 2] = kompakt_format::prompt::DEFAULT_INSTRUCTIONS;

/// The full prompt for `instruction` in `style`.
pub fn prompt_template(style: PromptStyle, instruction: &str) -> String {
    let template = match style {
        PromptStyle::Chat => kompakt_format::prompt::CHAT_TEMPLATE,
        PromptStyle::Base => kompakt_format::prompt::BASE_TEMPLATE,
    };
    kompakt_format::prompt::expand(template, instruction).expect("built-in template")
}

/// The prompts a file stores: the template, its style name and the
/// instruction of every target language.
#[derive(Clone, Debug)]
pub struct Prompts {
    /// `chat`, `base` or `custom`.
    pub style: &'static str,
    /// With `{audio}` and `{instruction}`.
    pub template: String,
    /// Target language -> instruction, sorted by language.
    pub instructions: std::collections::BTreeMap<String, String>,
}

impl Prompts {
    /// Checks the options' template and instructions and merges them with
    /// the built-in ones.
    pub fn new(
        style: PromptStyle,
        template: Option<&str>,
        instructions: &[(String, String)],
    ) -> Result<Prompts> {
        let bad = |m: String| ConvertError::Option(m);
        let (style, template) = match template {
            Some(t) => {
                kompakt_format::prompt::check_template(t)
                    .map_err(|e| bad(format!("--prompt-template: {e}")))?;
                ("custom", t.to_string())
            }
            None => match style {
                PromptStyle::Chat => ("chat", kompakt_format::prompt::CHAT_TEMPLATE.to_string()),
                PromptStyle::Base => ("base", kompakt_format::prompt::BASE_TEMPLATE.to_string()),
            },
        };
        let mut map: std::collections::BTreeMap<String, String> = INSTRUCTIONS
            .iter()
            .map(|(l, i)| (l.to_string(), i.to_string()))
            .collect();
        let mut given = std::collections::BTreeSet::new();
        for (lang, text) in instructions {
            let valid = !lang.is_empty()
                && lang.len() <= 16
                && lang
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                return Err(bad(format!(
                    "--instruction `{lang}=...`: the language code must be 1-16 letters, digits, `-` or `_` (e.g. de, zh, pt-BR)"
                )));
            }
            if !given.insert(lang.clone()) {
                return Err(bad(format!(
                    "--instruction: language `{lang}` is given twice"
                )));
            }
            kompakt_format::prompt::expand(&template, text)
                .map_err(|e| bad(format!("--instruction {lang}: {e}")))?;
            map.insert(lang.clone(), text.clone());
        }
        Ok(Prompts {
            style,
            template,
            instructions: map,
        })
    }

    /// The full prompt of every language, in language order.
    pub fn full(&self) -> Vec<(String, String)> {
        self.instructions
            .iter()
            .map(|(l, i)| {
                let text = kompakt_format::prompt::expand(&self.template, i).expect("checked");
                (l.clone(), text)
            })
            .collect()
    }
}

fn put(meta: &mut Metadata, key: &str, v: MetaValue) -> Result<()> {
    meta.insert(key, v)?;
    Ok(())
}

/// Special token ids found in `tokenizer.json`'s added tokens.
fn special_ids(tokenizer: &Value) -> Result<std::collections::HashMap<String, u64>> {
    let added = tokenizer
        .get("added_tokens")
        .and_then(Value::as_array)
        .ok_or_else(|| ConvertError::Tokenizer("tokenizer.json has no `added_tokens`".into()))?;
    Ok(added
        .iter()
        .filter_map(|t| {
            Some((
                t.get("content")?.as_str()?.to_string(),
                t.get("id")?.as_u64()?,
            ))
        })
        .collect())
}

fn to_bytes(
    dtype: DType,
    data: &[f32],
    shape: &[usize],
    name: &str,
    importance: Option<&[f32]>,
) -> Result<Vec<u8>> {
    Ok(match dtype {
        DType::F32 => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => data
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        DType::BF16 => data
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        q if q.is_quantized() => {
            let cols = *shape.last().unwrap_or(&1);
            let rows = data.len() / cols.max(1);
            kompakt_kernels::quantize(q, data, rows, cols, importance).map_err(|e| {
                ConvertError::Quantize {
                    name: name.to_string(),
                    msg: e.to_string(),
                }
            })?
        }
        other => {
            return Err(ConvertError::Option(format!(
                "dtype {other} cannot hold weights"
            )))
        }
    })
}

/// Elements converted per slice of a tensor: bounds memory for the largest
/// tensors (the 156032 x 4096 embeddings) to a few hundred MB.
const SLICE_ELEMS: usize = 1 << 24;

/// Streams one tensor into the writer, slice by slice of rows, each slice
/// converted in parallel. With `export`, also returns the quantized blocks
/// row-major (Q4K for a Q4KX4 tensor: the interleaving is only a layout).
#[allow(clippy::too_many_arguments)]
fn write_converted(
    w: &mut KpkWriter,
    ckpt: &Checkpoint,
    s: &TensorSpec,
    dtype: DType,
    keep_rows: Option<&[usize]>,
    importance: Option<&[f32]>,
    slice_elems: usize,
    export: bool,
) -> Result<Option<crate::codes::Coded>> {
    let (src, bytes) = ckpt.view(&s.hf, &s.shape)?;
    let cols = (*s.shape.last().unwrap_or(&1)).max(1);
    let row_bytes = cols * src.width();
    let gathered: Vec<u8>;
    let mut shape: Vec<u64> = s.shape.iter().map(|&d| d as u64).collect();
    let (bytes, rows) = match keep_rows {
        None => (bytes, s.shape.iter().product::<usize>() / cols),
        Some(keep) => {
            gathered = keep
                .iter()
                .flat_map(|&r| &bytes[r * row_bytes..(r + 1) * row_bytes])
                .copied()
                .collect();
            shape[0] = keep.len() as u64;
            (&gathered[..], keep.len())
        }
    };
    w.begin_tensor(&s.kpk, dtype, &shape)?;
    // Interleaved types are written in whole panels of rows.
    let unit = if dtype.group_rows() > 1 {
        kompakt_kernels::interleave::PANEL_ROWS
    } else {
        1
    };
    let slice_rows = (slice_elems / cols).max(1).next_multiple_of(unit);
    let task_rows = (slice_rows / (4 * rayon::current_num_threads()))
        .max(1)
        .next_multiple_of(unit);
    let row_major = if dtype == DType::Q4KX4 && export {
        DType::Q4K
    } else {
        dtype
    };
    let mut exported = Vec::new();
    for r0 in (0..rows).step_by(slice_rows) {
        let r1 = (r0 + slice_rows).min(rows);
        let parts: Vec<Result<Vec<u8>>> = bytes[r0 * row_bytes..r1 * row_bytes]
            .par_chunks(task_rows * row_bytes)
            .map(|chunk| {
                let data = src.decode(chunk);
                to_bytes(
                    row_major,
                    &data,
                    &[data.len() / cols, cols],
                    &s.hf,
                    importance,
                )
            })
            .collect();
        for p in parts {
            let p = p?;
            if row_major == dtype {
                w.write_chunk(&p)?;
            } else {
                w.write_chunk(&interleave_rows(&p, cols))?;
            }
            if export {
                exported.extend_from_slice(&p);
            }
        }
    }
    w.end_tensor()?;
    Ok(export.then_some(crate::codes::Coded {
        dtype: row_major,
        rows,
        cols,
        bytes: exported,
    }))
}

/// Row-major Q4K blocks of whole panels of rows (or the last rows of a
/// tensor) as Q4KX4.
fn interleave_rows(q4k: &[u8], cols: usize) -> Vec<u8> {
    let nb = cols.div_ceil(DType::Q4K.block_elems() as usize);
    let rows = q4k.len() / (nb * DType::Q4K.block_bytes() as usize);
    kompakt_kernels::interleave::interleave(q4k, rows, nb)
}

/// Writes trained codes unchanged (rows picked by `keep_rows`; Q4K codes
/// interleaved when the tensor is stored as Q4KX4).
fn write_coded(
    w: &mut KpkWriter,
    s: &TensorSpec,
    c: &crate::codes::Coded,
    dtype: DType,
    keep_rows: Option<&[usize]>,
) -> Result<()> {
    let rb = c.row_bytes();
    let gathered: Vec<u8>;
    let (bytes, rows) = match keep_rows {
        None => (&c.bytes[..], c.rows),
        Some(keep) => {
            gathered = keep
                .iter()
                .flat_map(|&r| &c.bytes[r * rb..(r + 1) * rb])
                .copied()
                .collect();
            (&gathered[..], keep.len())
        }
    };
    let mut shape: Vec<u64> = s.shape.iter().map(|&d| d as u64).collect();
    if keep_rows.is_some() {
        shape[0] = rows as u64;
    }
    w.begin_tensor(&s.kpk, dtype, &shape)?;
    if dtype == c.dtype {
        w.write_chunk(bytes)?;
    } else if dtype == DType::Q4KX4 && c.dtype == DType::Q4K {
        let panel = kompakt_kernels::interleave::PANEL_ROWS * rb;
        for chunk in bytes.chunks(panel) {
            w.write_chunk(&interleave_rows(chunk, c.cols))?;
        }
    } else {
        return Err(ConvertError::Option(format!(
            "`{}`: trained codes of type {} cannot be stored as {dtype}",
            s.hf, c.dtype
        )));
    }
    w.end_tensor()?;
    Ok(())
}

/// The stored form of `s` chosen as `dtype` with `shape`: Q4K matrices that
/// decoding multiplies one token at a time (LLM layers, lm_head) become
/// Q4KX4 when `interleave` is set and the row count allows; the audio
/// encoder and projector multiply whole clips (row-major Q4K serves them).
pub fn storage_dtype(s: &TensorSpec, dtype: DType, shape: &[usize], interleave: bool) -> DType {
    let decoder = matches!(s.component, Component::LlmLayers | Component::LmHead)
        && matches!(s.role, Role::Linear | Role::LmHead);
    let rows: usize = shape[..shape.len().saturating_sub(1)].iter().product();
    if interleave
        && dtype == DType::Q4K
        && decoder
        && shape.len() == 2
        && rows.is_multiple_of(DType::Q4KX4.group_rows() as usize)
    {
        DType::Q4KX4
    } else {
        dtype
    }
}

/// The dtype a tensor of `role` is stored in when weights go to `target`.
pub fn dtype_for(role: Role, target: DType) -> DType {
    match role {
        Role::Vector => DType::F32,
        Role::Float if target.is_quantized() => DType::F16,
        _ => target,
    }
}

/// Converts a checkpoint. `progress` may return false to cancel (the partial
/// output is removed).
pub fn convert(
    opts: &ConvertOptions,
    progress: &mut dyn FnMut(Progress<'_>) -> bool,
) -> Result<ConvertSummary> {
    if matches!(opts.dtype, DType::U8 | DType::I32) {
        return Err(ConvertError::Option(format!(
            "--dtype {} cannot hold weights",
            opts.dtype
        )));
    }
    let ckpt = Checkpoint::open(&opts.checkpoint)?;
    let hp = HParams::from_config(&ckpt.config)?;
    let keep_layers = |n: usize, drop: &[usize], what: &str| -> Result<Vec<usize>> {
        if let Some(&bad) = drop.iter().find(|&&l| l >= n) {
            return Err(ConvertError::Option(format!(
                "cannot drop {what} layer {bad}: the model has {n}"
            )));
        }
        let kept: Vec<usize> = (0..n).filter(|l| !drop.contains(l)).collect();
        if kept.is_empty() {
            return Err(ConvertError::Option(format!(
                "dropping every {what} layer leaves no model"
            )));
        }
        Ok(kept)
    };
    let calib = match &opts.calibration {
        Some(p) => Some(crate::calib::read(p)?),
        None => None,
    };
    let mut drop_audio = opts.drop_audio_layers.clone();
    let mut drop_llm = opts.drop_llm_layers.clone();
    let mut auto_dropped: Vec<(&'static str, usize, f32)> = Vec::new();
    for (stack, n_auto, n, drop) in [
        ("llm", opts.drop_llm_auto, hp.layers, &mut drop_llm),
        (
            "audio",
            opts.drop_audio_auto,
            hp.enc_layers,
            &mut drop_audio,
        ),
    ] {
        let Some(k) = n_auto else { continue };
        let c = calib.as_ref().ok_or_else(|| {
            ConvertError::Option(format!(
                "--drop-{stack}-layers auto:{k} needs --calibration (block influences)"
            ))
        })?;
        for (src, bi) in lowest_influence(c, stack, n, drop, k)? {
            drop.push(src);
            auto_dropped.push((stack, src, bi));
        }
    }
    drop_llm.sort_unstable();
    drop_llm.dedup();
    drop_audio.sort_unstable();
    drop_audio.dedup();
    let enc_layers = keep_layers(hp.enc_layers, &drop_audio, "audio")?;
    let llm_layers = keep_layers(hp.layers, &drop_llm, "LLM")?;
    let specs = mapping::tensors(&hp, &enc_layers, &llm_layers);
    if let Some(c) = &calib {
        c.check(&hp, &specs)?;
    }
    let importance_of = |s: &TensorSpec| -> Option<&[f32]> {
        calib.as_ref().and_then(|c| c.importance(s).ok().flatten())
    };
    for s in &specs {
        if !ckpt.has(&s.hf) {
            return Err(ConvertError::MissingTensor {
                name: s.hf.clone(),
                looked_in: ckpt.shards().keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
    }

    // Codes trained by `kompakt-train qat` are stored as they are.
    let trained = crate::codes::in_checkpoint(&opts.checkpoint)?.unwrap_or_default();
    check_trained(&ckpt, &specs, &trained)?;
    let is_trained = |s: &TensorSpec| trained.contains_key(&s.hf);
    let n_trained = specs.iter().filter(|s| is_trained(s)).count();

    let tok_path = opts.checkpoint.join("tokenizer.json");
    let tok_bytes = std::fs::read(&tok_path).map_err(|source| ConvertError::Io {
        path: tok_path.clone(),
        source,
    })?;
    // Compressed once: its size enters the budget, its bytes the file.
    let tok_zstd = {
        let mut m = Metadata::new();
        kompakt_format::set_tokenizer_json(&mut m, &tok_bytes)?;
        m.remove("tokenizer.json_zstd")
            .ok_or_else(|| ConvertError::Tokenizer("tokenizer could not be compressed".into()))?
    };
    let tok_zstd_len = match &tok_zstd {
        MetaValue::Bytes(b) => b.len() as u64,
        _ => tok_bytes.len() as u64,
    };
    let prompt_set = Prompts::new(
        prompt_style(opts)?,
        opts.prompt_template.as_deref(),
        &opts.instructions,
    )?;
    let prompts: Vec<String> = prompt_set.full().into_iter().map(|(_, p)| p).collect();
    // A student trained on a trimmed vocabulary keeps it unless told otherwise.
    let keep = match &opts.keep_vocab {
        Some(k) => Some(k.clone()),
        None => crate::training::kept_vocab(&opts.checkpoint)?.map(crate::vocab::KeepVocab::Ids),
    };
    let kept: Option<Vec<u32>> = match &keep {
        None => None,
        Some(k) => Some(crate::vocab::select(&tok_bytes, hp.vocab, k, &prompts)?),
    };
    // The vocabulary table and tokenized prompts (FORMAT.md 1.4): what the
    // runtime decodes and prompts with, instead of parsing tokenizer.json.
    let table = {
        let tok: Value = serde_json::from_slice(&tok_bytes).map_err(|e| ConvertError::Json {
            path: tok_path.clone(),
            msg: e.to_string(),
        })?;
        let audio_id = special_ids(&tok)?
            .get("<|AUDIO|>")
            .copied()
            .ok_or_else(|| {
                ConvertError::Tokenizer("special token <|AUDIO|> is not in tokenizer.json".into())
            })?;
        let audio_id = u32::try_from(audio_id)
            .map_err(|_| ConvertError::Tokenizer(format!("<|AUDIO|> has id {audio_id}")))?;
        crate::vocab::decoding_table(&tok_bytes, kept.as_deref(), &prompt_set.full(), audio_id)?
    };
    let rows_of = |s: &TensorSpec| -> Option<Vec<usize>> {
        match (&kept, s.role) {
            (Some(k), Role::Embedding | Role::LmHead) => {
                Some(k.iter().map(|&i| i as usize).collect())
            }
            _ => None,
        }
    };
    let stored_shape = |s: &TensorSpec| -> Vec<usize> {
        let mut shape = s.shape.clone();
        if let Some(r) = rows_of(s) {
            shape[0] = r.len();
        }
        shape
    };

    // Recipe type rules: only weight matrices (norms stay f32, convolutions
    // float) take them; a pattern that matches none of them is a typo.
    let recipe_types = |s: &TensorSpec| -> Option<Vec<DType>> {
        if !crate::plan::allocatable(s.role) {
            return None;
        }
        opts.recipe.as_ref().and_then(|r| r.types_for(&s.kpk))
    };
    if let Some(r) = &opts.recipe {
        let names: Vec<&str> = specs
            .iter()
            .filter(|s| crate::plan::allocatable(s.role))
            .map(|s| s.kpk.as_str())
            .collect();
        let unmatched = r.unmatched_patterns(&names);
        if !unmatched.is_empty() {
            return Err(ConvertError::Option(format!(
                "recipe patterns match no weight matrix: {} (names as in FORMAT.md, e.g. \
                 llm.layers.0.mlp.up.weight)",
                unmatched.join(", ")
            )));
        }
        if opts.budget.is_none() {
            if let Some(s) = specs
                .iter()
                .find(|s| recipe_types(s).is_some_and(|t| t.len() > 1))
            {
                return Err(ConvertError::Option(format!(
                    "the recipe allows several types for {}: choosing among them needs a \
                     size target (size.bin / size.max_bytes, --bin or --max-size)",
                    s.kpk
                )));
            }
        }
    }
    let plan = match opts.budget {
        None => None,
        Some(budget) => {
            // Everything not allocated (trained codes included), plus
            // metadata and alignment.
            let fixed: u64 = specs
                .iter()
                .filter(|s| !crate::plan::allocatable(s.role) || is_trained(s))
                .map(|s| {
                    let shape: Vec<u64> = stored_shape(s).iter().map(|&d| d as u64).collect();
                    trained
                        .get(&s.hf)
                        .map_or(dtype_for(s.role, DType::Q4K), |c| c.dtype)
                        .storage_bytes(&shape)
                        .unwrap_or(0)
                })
                .sum::<u64>()
                // Alignment padding, directory entry and plan record per tensor.
                + specs
                    .iter()
                    .map(|s| 64 + 48 + 8 * s.shape.len() as u64 + 2 * (s.kpk.len() as u64 + 16))
                    .sum::<u64>()
                + tok_zstd_len
                + table.stored_bytes()
                + kept.as_ref().map_or(0, |k| k.len() as u64 * 8)
                + 201 * hp.n_mels as u64 * 4
                + (16 << 10);
            let open: Vec<TensorSpec> = specs.iter().filter(|s| !is_trained(s)).cloned().collect();
            Some(crate::plan::allocate(
                &ckpt,
                calib.as_ref(),
                opts.layer_sensitivity,
                &open,
                &stored_shape,
                &rows_of,
                &|s: &TensorSpec| {
                    recipe_types(s).unwrap_or_else(|| crate::plan::default_candidates(s))
                },
                budget,
                fixed,
                &mut |done, total| {
                    progress(Progress {
                        stage: Stage::Planning,
                        done,
                        total,
                        tensor: "",
                    })
                },
            )?)
        }
    };
    let dtype_of = |s: &TensorSpec| -> DType {
        if let Some(c) = trained.get(&s.hf) {
            return c.dtype;
        }
        match plan.as_ref().and_then(|p| p.dtype_of(&s.kpk)) {
            Some(d) => d,
            None if plan.is_some() => dtype_for(s.role, DType::Q4K),
            None => match recipe_types(s).as_deref() {
                Some([d]) => *d,
                _ => dtype_for(s.role, opts.dtype),
            },
        }
    };

    let mut w = KpkWriter::create(&opts.out)?;
    let meta = w.metadata_mut();
    let layout = Layout {
        hp: &hp,
        enc_layers: &enc_layers,
        llm_layers: &llm_layers,
        kept: kept.as_deref(),
        prompts: &prompt_set,
        plan: plan.as_ref(),
        tokenizer_json: &tok_bytes,
        tokenizer_zstd: &tok_zstd,
        table: &table,
        calib: calib.as_ref(),
        auto_dropped: &auto_dropped,
        trained: n_trained,
    };
    write_metadata(meta, opts, &ckpt, &layout, &specs, &stored_shape)?;

    let total = specs.len();
    let mut exported = crate::codes::Codes::new();
    for (done, s) in specs.iter().enumerate() {
        let dtype = storage_dtype(s, dtype_of(s), &stored_shape(s), opts.interleave_q4k);
        let export = opts.export_codes.is_some() && exportable(s) && dtype.is_quantized();
        let coded = match trained.get(&s.hf) {
            Some(c) => {
                write_coded(&mut w, s, c, dtype, rows_of(s).as_deref())?;
                export.then(|| c.clone())
            }
            None => write_converted(
                &mut w,
                &ckpt,
                s,
                dtype,
                rows_of(s).as_deref(),
                importance_of(s),
                SLICE_ELEMS,
                export,
            )?,
        };
        if let Some(c) = coded {
            exported.insert(s.hf.clone(), c);
        }
        ckpt.release(&s.hf);
        if !progress(Progress {
            stage: Stage::Writing,
            done: done + 1,
            total,
            tensor: &s.kpk,
        }) {
            return Err(ConvertError::Cancelled);
        }
    }
    write_table(&mut w, &table)?;
    // The codes file first: a failure leaves no `.kpk` (the writer removes
    // its partial output when dropped unfinished).
    if let Some(p) = &opts.export_codes {
        crate::codes::write(p, &exported)?;
    }
    let summary = w.finish()?;
    Ok(ConvertSummary {
        path: opts.out.clone(),
        file_size: summary.file_size,
        tensors: total,
        params: specs
            .iter()
            .map(|s| stored_shape(s).iter().product::<usize>() as u64)
            .sum(),
        kept_vocab: kept.map(|k| k.len()),
        plan,
        dropped_llm_layers: drop_llm,
        dropped_audio_layers: drop_audio,
        trained_codes: n_trained,
        exported_codes: exported.len(),
    })
}

/// Writes the vocabulary table's two tensors.
fn write_table(w: &mut KpkWriter, t: &crate::vocab::DecodingTable) -> Result<()> {
    use kompakt_format::vocab::{PIECES, PIECE_ENDS};
    w.write_tensor(PIECES, DType::U8, &[t.pieces.len() as u64], &t.pieces)?;
    w.write_tensor(
        PIECE_ENDS,
        DType::I32,
        &[t.ends.len() as u64],
        bytemuck::cast_slice(&t.ends),
    )?;
    Ok(())
}

/// The matrices `--export-codes` writes: the decoder layers' weight
/// matrices, which `kompakt-train qat` trains.
pub fn exportable(s: &TensorSpec) -> bool {
    s.component == Component::LlmLayers && s.role == Role::Linear
}

/// Trained codes must name checkpoint tensors, with their shapes, and hold
/// the values the checkpoint holds: a checkpoint trained further after its
/// codes were written would otherwise be converted from stale codes.
fn check_trained(
    ckpt: &Checkpoint,
    specs: &[TensorSpec],
    trained: &crate::codes::Codes,
) -> Result<()> {
    let path = ckpt.dir.join(crate::codes::FILE);
    let bad = |msg: String| ConvertError::Safetensors {
        path: path.clone(),
        msg,
    };
    for (name, c) in trained {
        let Some(s) = specs.iter().find(|s| &s.hf == name) else {
            if ckpt.has(name) {
                continue; // a dropped layer
            }
            return Err(bad(format!(
                "codes for `{name}`, which is not a tensor of the checkpoint"
            )));
        };
        if !crate::plan::allocatable(s.role) {
            return Err(bad(format!(
                "codes for `{name}`, which kompakt stores as floats ({:?})",
                s.role
            )));
        }
        let cols = *s.shape.last().unwrap_or(&1);
        let rows = s.shape.iter().product::<usize>() / cols.max(1);
        if (c.rows, c.cols) != (rows, cols) {
            return Err(bad(format!(
                "codes for `{name}` have shape [{}, {}], the checkpoint's tensor [{rows}, {cols}]",
                c.rows, c.cols
            )));
        }
        // The first and last rows, dequantized, against the checkpoint's values.
        let (src, bytes) = ckpt.view(&s.hf, &s.shape)?;
        let row_bytes = cols * src.width();
        let mut deq = vec![0f32; cols];
        for r in [0, rows - 1] {
            let want = src.decode(&bytes[r * row_bytes..(r + 1) * row_bytes]);
            let rb = c.row_bytes();
            kompakt_kernels::scalar::dequantize_row(
                c.dtype,
                &c.bytes[r * rb..(r + 1) * rb],
                &mut deq,
            );
            // Equal for f32 checkpoints; bf16 storage rounds by at most 2^-9.
            let bad_at = deq
                .iter()
                .zip(&want)
                .position(|(a, b)| (a - b).abs() > a.abs() / 256.0);
            if let Some(i) = bad_at {
                return Err(bad(format!(
                    "the codes of `{name}` differ from the checkpoint's weights (row {r}, column \
                     {i}: {} in the codes, {} in the checkpoint): the weights were changed after \
                     the codes were written; remove {} to quantize them again",
                    deq[i],
                    want[i],
                    crate::codes::FILE
                )));
            }
        }
        ckpt.release(&s.hf);
    }
    Ok(())
}

/// The `k` source layers of `stack` (of `n`) with the lowest block influence
/// in `calib`, excluding the first and the last layer and those in
/// `already`; ties go to the earlier layer. Returns (layer, influence).
pub fn lowest_influence(
    calib: &Calibration,
    stack: &str,
    n: usize,
    already: &[usize],
    k: usize,
) -> Result<Vec<(usize, f32)>> {
    let what = if stack == "llm" { "LLM" } else { "audio" };
    if k > 0 && !calib.covers(stack) {
        return Err(ConvertError::Option(format!(
            "--drop-{stack}-layers auto:{k}: the calibration file ran no {what} inputs{}",
            if stack == "audio" {
                " (calibrate with --audio DIR)"
            } else {
                ""
            }
        )));
    }
    let mut cands: Vec<(usize, f32)> = Vec::new();
    for l in 1..n.saturating_sub(1) {
        if already.contains(&l) {
            continue;
        }
        let bi = calib.influence(stack, l).ok_or_else(|| {
            ConvertError::Option(format!(
                "--drop-{stack}-layers auto:{k}: the calibration has no block influence for source {what} layer {l}"
            ))
        })?;
        cands.push((l, bi));
    }
    if k > cands.len() {
        return Err(ConvertError::Option(format!(
            "--drop-{stack}-layers auto:{k}: only {} of the {n} {what} layers may be dropped (never the first or the last)",
            cands.len()
        )));
    }
    cands.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    cands.truncate(k);
    cands.sort_by_key(|c| c.0);
    Ok(cands)
}

/// `; layers 5, 9 dropped by lowest block influence` when some were.
fn auto_note(auto: &[(&str, usize, f32)], stack: &str) -> String {
    let l: Vec<String> = auto
        .iter()
        .filter(|d| d.0 == stack)
        .map(|d| d.1.to_string())
        .collect();
    if l.is_empty() {
        String::new()
    } else {
        format!(
            "; source layer(s) {} dropped by lowest calibration block influence",
            l.join(", ")
        )
    }
}

fn write_metadata(
    meta: &mut Metadata,
    opts: &ConvertOptions,
    ckpt: &Checkpoint,
    layout: &Layout<'_>,
    specs: &[TensorSpec],
    stored_shape: &dyn Fn(&TensorSpec) -> Vec<usize>,
) -> Result<()> {
    use MetaValue::*;
    let hp = layout.hp;
    let dir: &Path = &ckpt.dir;
    let dir_name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    put(meta, "general.architecture", Str("qwen2_audio".into()))?;
    put(
        meta,
        "general.name",
        Str(opts.name.clone().unwrap_or_else(|| dir_name.clone())),
    )?;

    put(meta, "audio.sample_rate", U64(16000))?;
    put(meta, "audio.n_fft", U64(400))?;
    put(meta, "audio.hop_length", U64(160))?;
    put(meta, "audio.chunk_length", U64(30))?;
    put(meta, "audio.n_mels", U64(hp.n_mels as u64))?;
    put(
        meta,
        "audio.mel_filters",
        F32s(kompakt_audio::mel_filter_bank(
            400, hp.n_mels, 16000, 0.0, 8000.0,
        )),
    )?;
    put(meta, "audio.d_model", U64(hp.d_model as u64))?;
    put(meta, "audio.n_layers", U64(layout.enc_layers.len() as u64))?;
    if layout.enc_layers.len() != hp.enc_layers {
        put(
            meta,
            "audio.layer_ids",
            I64s(layout.enc_layers.iter().map(|&l| l as i64).collect()),
        )?;
    }
    put(meta, "audio.n_heads", U64(hp.enc_heads as u64))?;
    put(meta, "audio.ffn_dim", U64(hp.enc_ffn as u64))?;
    put(
        meta,
        "audio.max_source_positions",
        U64(hp.max_source_positions as u64),
    )?;
    put(meta, "audio.layer_norm_eps", F64(1e-5))?;

    put(meta, "llm.hidden_size", U64(hp.hidden as u64))?;
    put(meta, "llm.n_layers", U64(layout.llm_layers.len() as u64))?;
    if layout.llm_layers.len() != hp.layers {
        put(
            meta,
            "llm.layer_ids",
            I64s(layout.llm_layers.iter().map(|&l| l as i64).collect()),
        )?;
    }
    put(meta, "llm.n_heads", U64(hp.heads as u64))?;
    put(meta, "llm.n_kv_heads", U64(hp.kv_heads as u64))?;
    put(meta, "llm.head_dim", U64(hp.head_dim as u64))?;
    put(meta, "llm.ffn_dim", U64(hp.ffn as u64))?;
    put(meta, "llm.rms_norm_eps", F64(hp.rms_norm_eps))?;
    put(meta, "llm.rope_theta", F64(hp.rope_theta))?;
    put(
        meta,
        "llm.max_position_embeddings",
        U64(hp.max_positions as u64),
    )?;
    put(
        meta,
        "llm.vocab_size",
        U64(layout.kept.map_or(hp.vocab, |k| k.len()) as u64),
    )?;
    if let Some(k) = layout.kept {
        put(
            meta,
            "vocab.kept_ids",
            I64s(k.iter().map(|&i| i as i64).collect()),
        )?;
    }

    // Tokenizer and special tokens.
    let tok: Value =
        serde_json::from_slice(layout.tokenizer_json).map_err(|e| ConvertError::Json {
            path: dir.join("tokenizer.json"),
            msg: e.to_string(),
        })?;
    let ids = special_ids(&tok)?;
    let need = |t: &str| -> Result<u64> {
        ids.get(t).copied().ok_or_else(|| {
            ConvertError::Tokenizer(format!("special token {t} is not in tokenizer.json"))
        })
    };
    let audio_id = need("<|AUDIO|>")?;
    if let Some(cfg_id) = hp.audio_token_id {
        if cfg_id != audio_id {
            return Err(ConvertError::Tokenizer(format!(
                "config.json says the audio token is {cfg_id} but the tokenizer has <|AUDIO|> = {audio_id}"
            )));
        }
    }
    put(meta, "tokenizer.json_zstd", layout.tokenizer_zstd.clone())?;
    put(meta, "tokenizer.audio_token_id", U64(audio_id))?;
    put(meta, "tokenizer.audio_bos_id", U64(need("<|audio_bos|>")?))?;
    put(meta, "tokenizer.audio_eos_id", U64(need("<|audio_eos|>")?))?;
    put(meta, "tokenizer.im_start_id", U64(need("<|im_start|>")?))?;
    put(meta, "tokenizer.im_end_id", U64(need("<|im_end|>")?))?;
    let gen_path = dir.join("generation_config.json");
    let mut eos: Vec<i64> = Vec::new();
    if gen_path.exists() {
        let (g, _) = read_json(&gen_path)?;
        match g.get("eos_token_id") {
            Some(Value::Number(n)) => eos.extend(n.as_i64()),
            Some(Value::Array(a)) => eos.extend(a.iter().filter_map(Value::as_i64)),
            _ => {}
        }
    }
    if eos.is_empty() {
        eos = vec![need("<|im_end|>")? as i64, need("<|endoftext|>")? as i64];
    }
    put(meta, "tokenizer.eos_ids", I64s(eos))?;
    put(
        meta,
        kompakt_format::vocab::SPECIAL_IDS,
        I64s(layout.table.special.clone()),
    )?;

    // Prompts.
    let p = layout.prompts;
    put(meta, "prompt.style", Str(p.style.into()))?;
    put(
        meta,
        "prompt.languages",
        Strs(p.instructions.keys().cloned().collect()),
    )?;
    put(meta, "prompt.template", Str(p.template.clone()))?;
    for (lang, instruction) in &p.instructions {
        put(
            meta,
            &format!("prompt.instruction.{lang}"),
            Str(instruction.clone()),
        )?;
    }
    for (lang, text) in p.full() {
        put(meta, &format!("prompt.template.{lang}"), Str(text))?;
    }
    for (lang, ids) in &layout.table.prompts {
        put(
            meta,
            &kompakt_format::vocab::prompt_ids_key(lang),
            I64s(ids.clone()),
        )?;
    }

    // Provenance and parameter counts.
    let source = serde_json::json!({
        "directory": dir_name,
        "config_xxh3": format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&ckpt.config_bytes)),
        "shards": ckpt.shards(),
    });
    put(meta, "provenance.source", Str(source.to_string()))?;
    put(
        meta,
        "provenance.converter",
        Str(format!("kompakt-converter {}", env!("CARGO_PKG_VERSION"))),
    )?;
    let mut techniques = vec![];
    let recipe = match layout.plan {
        Some(plan) => {
            let mut types: Vec<String> = plan
                .choices
                .iter()
                .map(|c| c.dtype.name().to_string())
                .collect();
            types.sort();
            types.dedup();
            techniques.push(format!(
                "mixed-precision weight quantization ({}) chosen per tensor to fit {} bytes{}",
                types.join(", "),
                plan.budget,
                opts.bin
                    .map(|b| format!(" (IWSLT 2025 Bin{b})"))
                    .unwrap_or_default()
            ));
            serde_json::json!({ "bin": opts.bin, "plan": plan.to_json(), "vectors": "f32", "conv_and_positions": "f16",
                                "loss": match (layout.calib.is_some(), opts.layer_sensitivity) {
                                    (true, true) => "importance-weighted relative error x layer sensitivity (block influence / stack mean, clamped to [0.25, 4])",
                                    (true, false) => "importance-weighted relative error",
                                    _ => "relative error" } })
        }
        None => {
            if opts.dtype.is_quantized() {
                techniques.push(format!(
                    "uniform {} weight quantization ({} bits per weight)",
                    opts.dtype,
                    opts.dtype.bits_per_weight()
                ));
            } else if opts.dtype != DType::F32 {
                techniques.push(format!("{} weight storage", opts.dtype));
            } else {
                techniques.push("none (f32 weights, as computed by the source model)".to_string());
            }
            serde_json::json!({ "weights": opts.dtype.name(), "vectors": "f32" })
        }
    };
    let mut recipe = recipe;
    if let Some(r) = &opts.recipe {
        recipe["recipe"] = r.to_json();
        if let Some(name) = &r.name {
            techniques.push(format!("conversion recipe `{name}`"));
        }
    }
    if let Some(c) = layout.calib {
        let quantized = layout
            .plan
            .map(|p| p.choices.iter().any(|c| c.dtype.is_quantized()))
            .unwrap_or(opts.dtype.is_quantized());
        if quantized {
            let stacks = match (c.covers("llm"), c.covers("audio")) {
                (true, true) => "decoder, lm_head, audio encoder and projector",
                (true, false) => {
                    "decoder and lm_head (audio encoder uniform: no audio calibration)"
                }
                (false, true) => {
                    "audio encoder and projector (decoder uniform: no text calibration)"
                }
                (false, false) => "no tensor (the calibration is empty)",
            };
            techniques.push(format!(
                "importance-weighted quantization (per-input-channel mean squared activation from calibration; {stacks})"
            ));
        }
        recipe["calibration"] = c.summary();
    }
    let dropped = |stack: &str, kept: &[usize], n: usize| -> serde_json::Value {
        let auto: Vec<serde_json::Value> = layout
            .auto_dropped
            .iter()
            .filter(|d| d.0 == stack)
            .map(|d| serde_json::json!({"layer": d.1, "block_influence": d.2}))
            .collect();
        serde_json::json!({
            "dropped": (0..n).filter(|l| !kept.contains(l)).collect::<Vec<_>>(),
            "by_block_influence": auto,
        })
    };
    if layout.llm_layers.len() != hp.layers {
        recipe["llm_layers"] = dropped("llm", layout.llm_layers, hp.layers);
    }
    if layout.enc_layers.len() != hp.enc_layers {
        recipe["audio_layers"] = dropped("audio", layout.enc_layers, hp.enc_layers);
    }
    if let Some(k) = layout.kept {
        techniques.push(format!(
            "vocabulary trimming ({} of {} token rows kept)",
            k.len(),
            hp.vocab
        ));
    }
    if layout.llm_layers.len() != hp.layers {
        techniques.push(format!(
            "decoder depth pruning ({} of {} layers kept{})",
            layout.llm_layers.len(),
            hp.layers,
            auto_note(layout.auto_dropped, "llm")
        ));
    }
    if layout.enc_layers.len() != hp.enc_layers {
        techniques.push(format!(
            "audio encoder depth pruning ({} of {} layers kept{})",
            layout.enc_layers.len(),
            hp.enc_layers,
            auto_note(layout.auto_dropped, "audio")
        ));
    }
    if layout.trained > 0 {
        techniques.push(format!(
            "quantization-aware training: {} weight matrices stored with the codes they were \
             trained in ({}), not quantized again",
            layout.trained,
            crate::codes::FILE
        ));
        recipe["trained_codes"] = serde_json::json!(layout.trained);
    }
    let mut training_data = vec![];
    if let Some(training) = crate::training::read(&ckpt.dir)? {
        techniques.extend(crate::training::techniques(&training));
        training_data = crate::training::datasets(&training);
        recipe["training"] = training;
    }
    put(meta, "provenance.recipe", Str(recipe.to_string()))?;
    put(meta, "provenance.techniques", Strs(techniques))?;
    let datasets: Vec<String> = layout
        .calib
        .map(|c| {
            c.inputs
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| format!("calibration: {i}"))
                .collect()
        })
        .unwrap_or_default();
    let datasets = [datasets, training_data].concat();
    put(meta, "provenance.datasets", Strs(datasets))?;
    let count = |c: Component| -> u64 {
        specs
            .iter()
            .filter(|s| s.component == c)
            .map(|s| stored_shape(s).iter().product::<usize>() as u64)
            .sum()
    };
    let parts = [
        ("params.audio_encoder", Component::AudioEncoder),
        ("params.projector", Component::Projector),
        ("params.llm_layers", Component::LlmLayers),
        ("params.embeddings", Component::Embeddings),
        ("params.lm_head", Component::LmHead),
    ];
    let mut total = 0;
    for (key, c) in parts {
        let n = count(c);
        total += n;
        put(meta, key, U64(n))?;
    }
    put(meta, "params.total", U64(total))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kompakt_format::KpkFile;

    /// A Q4KX4 tensor written in several slices (a slice size that is not a
    /// whole panel, so the writer must round it) holds exactly the
    /// interleaving of the same tensor written row-major. 136 x 4352: three
    /// panels (the last short), two column chunks (the second one block),
    /// so the layout differs from plain group order.
    #[test]
    fn interleaved_tensor_written_in_slices_matches_row_major() {
        let dir = tempfile::tempdir().unwrap();
        let (rows, cols) = (136usize, 4352usize);
        let vals: Vec<u8> = (0..rows * cols)
            .flat_map(|i| (((i * 7919) % 2001) as f32 / 1000.0 - 1.0).to_le_bytes())
            .collect();
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![rows, cols], &vals)
                .unwrap();
        let st = safetensors::tensor::serialize([("w", view)], None).unwrap();
        std::fs::write(dir.path().join("model.safetensors"), st).unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let ckpt = Checkpoint::open(dir.path()).unwrap();
        let s = TensorSpec {
            hf: "w".into(),
            kpk: "w".into(),
            shape: vec![rows, cols],
            role: Role::LmHead,
            component: Component::LmHead,
            layer: None,
        };
        let mut data = Vec::new();
        for (dtype, name) in [(DType::Q4K, "rows.kpk"), (DType::Q4KX4, "x4.kpk")] {
            let path = dir.path().join(name);
            let mut w = KpkWriter::create(&path).unwrap();
            // 10 rows per slice before rounding.
            write_converted(&mut w, &ckpt, &s, dtype, None, None, 10 * cols, false).unwrap();
            w.finish().unwrap();
            let f = KpkFile::open(&path).unwrap();
            let t = f.tensor("w").unwrap();
            assert_eq!(t.dtype(), dtype);
            data.push(t.data.to_vec());
        }
        assert_eq!(
            kompakt_kernels::interleave::interleave(&data[0], rows, cols / 256),
            data[1]
        );
    }
}
