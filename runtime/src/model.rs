//! A loaded model: the mapped file, its configuration, tokenizer, mel
//! front end and weight handles. Immutable and shared by sessions.
use std::collections::HashMap;
use std::path::Path;

use kompakt_audio::{MelConfig, MelExtractor};
use kompakt_format::KpkFile;
use tokenizers::Tokenizer;

use crate::config::ModelConfig;
use crate::decoder::Decoder;
use crate::encoder::AudioEncoder;
use crate::error::{Result, RuntimeError};

/// An immutable, thread-shareable model.
pub struct Model {
    pub(crate) file: KpkFile,
    pub(crate) config: ModelConfig,
    pub(crate) tokenizer: Tokenizer,
    pub(crate) mel: MelExtractor,
    pub(crate) encoder: AudioEncoder,
    pub(crate) decoder: Decoder,
    /// Original token id -> vocabulary row (identity unless trimmed).
    row_of: Option<HashMap<u32, u32>>,
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
        let json = kompakt_format::tokenizer_json(meta)?;
        let tokenizer =
            Tokenizer::from_bytes(&json).map_err(|e| RuntimeError::Tokenizer(e.to_string()))?;
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
        let row_of = config.kept_ids.as_ref().map(|k| {
            k.iter()
                .enumerate()
                .map(|(r, &id)| (id, r as u32))
                .collect()
        });
        drop(json);
        release_freed_heap();
        Ok(Model {
            file,
            config,
            tokenizer,
            mel,
            encoder,
            decoder,
            row_of,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn file(&self) -> &KpkFile {
        &self.file
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Vocabulary row of an original token id.
    pub fn row_of(&self, id: u32) -> Option<u32> {
        match &self.row_of {
            None => ((id as usize) < self.config.llm.vocab_size).then_some(id),
            Some(m) => m.get(&id).copied(),
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
        Ok(self
            .tokenizer
            .encode(prompt.as_str(), false)
            .map_err(|e| RuntimeError::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
    }

    /// Token ids (original id space) of the prompt for `lang` with
    /// `n_audio` audio tokens; also the index of the first audio token.
    pub fn prompt_ids(&self, lang: &str, n_audio: usize) -> Result<(Vec<u32>, usize)> {
        let template = self.template(lang)?;
        self.prompt_text_ids(template, n_audio)
    }

    /// Token ids of a full prompt text with its single `<|AUDIO|>` expanded
    /// to `n_audio` audio tokens; also the index of the first audio token.
    pub fn prompt_text_ids(&self, text: &str, n_audio: usize) -> Result<(Vec<u32>, usize)> {
        let (before, after) = text.split_once("<|AUDIO|>").ok_or_else(|| {
            RuntimeError::InvalidArgument("the prompt has no <|AUDIO|> placeholder".into())
        })?;
        let enc = |s: &str| -> Result<Vec<u32>> {
            Ok(self
                .tokenizer
                .encode(s, false)
                .map_err(|e| RuntimeError::Tokenizer(e.to_string()))?
                .get_ids()
                .to_vec())
        };
        let mut ids = enc(before)?;
        let start = ids.len();
        ids.extend(std::iter::repeat_n(self.config.special.audio, n_audio));
        ids.extend(enc(after)?);
        Ok((ids, start))
    }

    /// Text of original token ids, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| RuntimeError::Tokenizer(e.to_string()))
    }
}

/// Returns the heap that loading freed to the operating system. Parsing the
/// tokenizer JSON (11 MB for Qwen2's 151k tokens and merges) leaves ~40 MB
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
