//! A loaded model: the mapped file, its configuration, vocabulary, mel
//! front end and weight handles. Immutable and shared by sessions.
//!
//! Token ids become text through the file's vocabulary table and prompts
//! come pre-tokenized (FORMAT.md 1.4), both read from the memory map: no
//! `tokenizer.json` is parsed to translate. Tokenizing arbitrary text (a
//! one-off instruction, the translation and fidelity meters) needs the
//! Hugging Face tokenizer, which builds with the `tokenizer` feature and is
//! parsed on first use.
use std::collections::BTreeMap;
use std::path::Path;

use kompakt_audio::{MelConfig, MelExtractor};
use kompakt_format::vocab::{self, Vocab};
use kompakt_format::KpkFile;
#[cfg(feature = "tokenizer")]
use tokenizers::Tokenizer;

use crate::config::ModelConfig;
use crate::decoder::Decoder;
use crate::encoder::AudioEncoder;
use crate::error::{Result, RuntimeError};

/// An immutable, thread-shareable model.
pub struct Model {
    pub(crate) file: KpkFile,
    pub(crate) config: ModelConfig,
    pub(crate) mel: MelExtractor,
    pub(crate) encoder: AudioEncoder,
    pub(crate) decoder: Decoder,
    /// Ids that decoding leaves out (sorted).
    special_ids: Vec<u32>,
    /// Target language -> its prompt's ids with the one audio token, and
    /// that token's index.
    prompt_ids: BTreeMap<String, (Vec<u32>, usize)>,
    /// The Hugging Face tokenizer, parsed on first use.
    #[cfg(feature = "tokenizer")]
    tokenizer: std::sync::OnceLock<std::result::Result<Tokenizer, String>>,
}

impl Model {
    /// Maps and loads a `.kpk` file.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Model::from_file(KpkFile::open(path.as_ref())?)
    }

    /// Reads a `.kpk` file into memory backed by transparent huge pages
    /// (Linux): decode streams the weights faster, at the cost of reading
    /// the whole file up front into private memory. See
    /// [`KpkFile::open_in_huge_pages`] for measurements and trade-offs.
    pub fn load_in_huge_pages(path: impl AsRef<Path>) -> Result<Model> {
        Model::from_file(KpkFile::open_in_huge_pages(path.as_ref())?)
    }

    /// Loads a model from bytes held in memory (copied once).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Model> {
        Model::from_file(KpkFile::from_bytes(bytes)?)
    }

    /// Loads a model from an opened file.
    pub fn from_file(file: KpkFile) -> Result<Model> {
        let meta = file.metadata();
        let config = ModelConfig::from_metadata(meta)?;
        let has_table = Vocab::open(&file)?.is_some();
        if !has_table && !cfg!(feature = "tokenizer") {
            return Err(RuntimeError::InvalidModel(format!(
                "{} has no vocabulary table (written before format 1.4, it decodes only with \
                 the Hugging Face tokenizer, which this build leaves out): re-convert it with \
                 `kompakt convert`, or build kompakt with the `tokenizer` feature",
                file.label()
            )));
        }
        let special_ids = match meta.opt_i64s(vocab::SPECIAL_IDS) {
            Some(v) => ids_of(vocab::SPECIAL_IDS, v, true)?,
            None if has_table => {
                return Err(RuntimeError::InvalidModel(format!(
                    "metadata `{}` is missing beside the vocabulary table",
                    vocab::SPECIAL_IDS
                )))
            }
            None => Vec::new(),
        };
        let mut prompt_ids = BTreeMap::new();
        for lang in config.templates.keys() {
            let key = vocab::prompt_ids_key(lang);
            if let Some(v) = meta.opt_i64s(&key) {
                let ids = ids_of(&key, v, false)?;
                let audio = ids.iter().filter(|&&i| i == config.special.audio).count();
                let at = ids.iter().position(|&i| i == config.special.audio);
                let Some(at) = at.filter(|_| audio == 1) else {
                    return Err(RuntimeError::InvalidModel(format!(
                        "metadata `{key}` holds the audio token {audio} times, not once"
                    )));
                };
                prompt_ids.insert(lang.clone(), (ids, at));
            } else if has_table {
                return Err(RuntimeError::InvalidModel(format!(
                    "metadata `{key}` (the tokenized prompt of `{lang}`) is missing"
                )));
            }
        }
        if let Some(k) = &config.kept_ids {
            if let Some(i) = k.windows(2).position(|w| w[0] >= w[1]) {
                return Err(RuntimeError::InvalidModel(format!(
                    "`vocab.kept_ids` is not strictly ascending at row {}",
                    i + 1
                )));
            }
        }
        let a = &config.audio;
        let filters = meta.get_f32s("audio.mel_filters")?.to_vec();
        let n_freq = a.n_fft / 2 + 1;
        if filters.len() != n_freq * a.n_mels {
            return Err(RuntimeError::InvalidModel(format!(
                "`audio.mel_filters` has {} values, expected {n_freq} x {}",
                filters.len(),
                a.n_mels
            )));
        }
        let mel_cfg = MelConfig {
            n_fft: a.n_fft,
            hop_length: a.hop_length,
            n_mels: a.n_mels,
            sample_rate: a.sample_rate,
            chunk_samples: a.chunk_samples(),
        };
        let mel = MelExtractor::new(mel_cfg, filters)?;
        let encoder = AudioEncoder::load(&file, a, config.llm.hidden_size)?;
        let decoder = Decoder::load(&file, &config.llm)?;
        release_freed_heap();
        Ok(Model {
            file,
            config,
            mel,
            encoder,
            decoder,
            special_ids,
            prompt_ids,
            #[cfg(feature = "tokenizer")]
            tokenizer: std::sync::OnceLock::new(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn file(&self) -> &KpkFile {
        &self.file
    }

    /// The Hugging Face tokenizer stored in the file, parsed on the first
    /// call (11 MB of JSON for Qwen2's vocabulary: a fraction of a second
    /// and tens of MB of heap).
    #[cfg(feature = "tokenizer")]
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer
            .get_or_init(|| {
                let json = kompakt_format::tokenizer_json(self.file.metadata())
                    .map_err(|e| e.to_string())?;
                let t = Tokenizer::from_bytes(&json).map_err(|e| e.to_string());
                drop(json);
                release_freed_heap();
                t
            })
            .as_ref()
            .map_err(|e| RuntimeError::Tokenizer(e.clone()))
    }

    /// Token ids (original id space) of `text`, no special tokens added.
    /// Needs the `tokenizer` feature; without it, an error that says so.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        #[cfg(feature = "tokenizer")]
        {
            Ok(self
                .tokenizer()?
                .encode(text, false)
                .map_err(|e| RuntimeError::Tokenizer(e.to_string()))?
                .get_ids()
                .to_vec())
        }
        #[cfg(not(feature = "tokenizer"))]
        {
            let _ = text;
            Err(RuntimeError::Unsupported(
                "tokenizing text (a custom instruction or a text prompt) needs the Hugging Face \
                 tokenizer, which this build of kompakt leaves out (cargo feature `tokenizer`); \
                 translations with the model's stored languages need none"
                    .into(),
            ))
        }
    }

    /// Vocabulary row of an original token id.
    pub fn row_of(&self, id: u32) -> Option<u32> {
        match &self.config.kept_ids {
            None => ((id as usize) < self.config.llm.vocab_size).then_some(id),
            Some(k) => k.binary_search(&id).ok().map(|r| r as u32),
        }
    }

    /// Original token id of a vocabulary row.
    pub fn id_of(&self, row: u32) -> u32 {
        match &self.config.kept_ids {
            None => row,
            Some(k) => k[row as usize],
        }
    }

    /// The prompt text for target language `lang`.
    pub fn template(&self, lang: &str) -> Result<&str> {
        self.config
            .templates
            .get(lang)
            .map(String::as_str)
            .ok_or_else(|| RuntimeError::UnknownLanguage {
                lang: lang.to_string(),
                available: self.config.languages().join(", "),
            })
    }

    /// The prompt text for a one-off `instruction`: the file's template
    /// (FORMAT.md, `prompt.template`) with the instruction in place.
    pub fn instruction_prompt(&self, instruction: &str) -> Result<String> {
        let template = self.config.prompt_template.as_deref().ok_or_else(|| {
            RuntimeError::InvalidArgument(format!(
                "this model's prompt style `{}` has no template for a custom instruction; \
                 re-convert it with `kompakt convert --prompt-template FILE`",
                self.config.prompt_style
            ))
        })?;
        kompakt_format::prompt::expand(template, instruction)
            .map_err(|e| RuntimeError::InvalidArgument(format!("--instruction: {e}")))
    }

    /// Token ids (original id space) of the text-translation prompt for
    /// `lang`: the model's template and its instruction for `lang`, with the
    /// source `text` where the audio goes (the translation meter's prompt).
    pub fn text_prompt_ids(&self, lang: &str, text: &str) -> Result<Vec<u32>> {
        self.template(lang)?;
        let instruction = self.config.instructions.get(lang).ok_or_else(|| {
            RuntimeError::InvalidArgument(format!(
                "the instruction for `{lang}` cannot be told from this model's prompt (a custom \
                 prompt in a file older than format 1.3): re-convert it to translate text"
            ))
        })?;
        let template = self.config.prompt_template.as_deref().ok_or_else(|| {
            RuntimeError::InvalidArgument("this model stores no prompt template".into())
        })?;
        let prompt = kompakt_format::prompt::expand_text(template, instruction, text)
            .map_err(|e| RuntimeError::InvalidArgument(e.to_string()))?;
        self.encode(&prompt)
    }

    /// Token ids (original id space) of the prompt for `lang` with
    /// `n_audio` audio tokens; also the index of the first audio token.
    /// Read from the file's tokenized prompts (format 1.4); older files are
    /// tokenized (feature `tokenizer`).
    pub fn prompt_ids(&self, lang: &str, n_audio: usize) -> Result<(Vec<u32>, usize)> {
        let template = self.template(lang)?;
        let Some((stored, start)) = self.prompt_ids.get(lang) else {
            return self.prompt_text_ids(template, n_audio);
        };
        let (audio, start) = (self.config.special.audio, *start);
        let mut ids = Vec::with_capacity(stored.len() + n_audio);
        ids.extend_from_slice(&stored[..start]);
        ids.extend(std::iter::repeat_n(audio, n_audio));
        ids.extend_from_slice(&stored[start + 1..]);
        Ok((ids, start))
    }

    /// Token ids of a full prompt text with its single `<|AUDIO|>` expanded
    /// to `n_audio` audio tokens; also the index of the first audio token.
    pub fn prompt_text_ids(&self, text: &str, n_audio: usize) -> Result<(Vec<u32>, usize)> {
        let (before, after) = text.split_once("<|AUDIO|>").ok_or_else(|| {
            RuntimeError::InvalidArgument("the prompt has no <|AUDIO|> placeholder".into())
        })?;
        let mut ids = self.encode(before)?;
        let start = ids.len();
        ids.extend(std::iter::repeat_n(self.config.special.audio, n_audio));
        ids.extend(self.encode(after)?);
        Ok((ids, start))
    }

    /// Text of original token ids, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        // Checked by `Vocab::open` at load when present.
        if let Some(v) = Vocab::open_unchecked(&self.file) {
            return Ok(v.decode(ids, &self.special_ids));
        }
        #[cfg(feature = "tokenizer")]
        {
            self.tokenizer()?
                .decode(ids, true)
                .map_err(|e| RuntimeError::Tokenizer(e.to_string()))
        }
        #[cfg(not(feature = "tokenizer"))]
        Err(RuntimeError::InvalidModel(
            "the vocabulary table is missing".into(),
        ))
    }
}

/// Token ids of an `i64[]` metadata value, checked to fit u32 (and sorted
/// when `sorted`).
fn ids_of(key: &str, v: &[i64], sorted: bool) -> Result<Vec<u32>> {
    let ids = v
        .iter()
        .map(|&i| u32::try_from(i))
        .collect::<std::result::Result<Vec<u32>, _>>()
        .map_err(|_| {
            RuntimeError::InvalidModel(format!("metadata `{key}` holds an id out of range"))
        })?;
    if sorted && ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err(RuntimeError::InvalidModel(format!(
            "metadata `{key}` is not strictly ascending"
        )));
    }
    Ok(ids)
}

/// Returns the heap that loading freed to the operating system. Parsing the
/// tokenizer JSON (workstation builds, on first use; 11 MB for Qwen2's 151k
/// tokens and merges) leaves ~40 MB
/// of freed but still resident heap in glibc's arenas, a third of the
/// process's anonymous memory after loading; `malloc_trim` gives it back.
/// Other allocators and platforms return memory on their own terms.
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; no pointer is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}
