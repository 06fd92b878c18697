//! A translation session: one stream's buffers, KV caches, threads and taps
//! over a shared [`Model`].
use std::sync::Arc;
use std::time::Instant;

use kompakt_audio::LogMel;

use crate::decoder::{Logits, PREFILL_CHUNK};
use crate::error::{Result, RuntimeError};
use crate::kv_cache::{KvCache, KvPrecision};
use crate::model::Model;
use crate::search::{self, SearchParams};
use crate::taps::Taps;

/// Options of one translation.
#[derive(Clone, Debug)]
pub struct TranslateOptions {
    /// Target language code with a prompt in the model (`de`, `zh`).
    pub lang: String,
    /// A one-off instruction in place of the model's instruction for
    /// `lang` (then `lang` is not used): the model's prompt template with
    /// this text as `{instruction}`.
    pub instruction: Option<String>,
    /// 1 = greedy; more = beam search.
    pub beams: usize,
    /// Upper limit of generated tokens.
    pub max_new_tokens: usize,
    /// End-of-sequence is suppressed before this many tokens (0 = never;
    /// benchmarks use it to decode a fixed length).
    pub min_new_tokens: usize,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            lang: "de".into(),
            instruction: None,
            beams: 1,
            max_new_tokens: 256,
            min_new_tokens: 0,
        }
    }
}

/// Stage of a translation, reported to [`Observer::on_progress`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Features,
    Encoder,
    Prefill,
    Decode,
}

/// Receives streamed text and progress; returning false aborts the call.
pub trait Observer {
    /// A new piece of UTF-8 text of the translation.
    fn on_text(&mut self, _piece: &str) -> bool {
        true
    }
    /// `done` in 0..=1 within `stage` (for decode: tokens / max tokens).
    fn on_progress(&mut self, _stage: Stage, _done: f32) -> bool {
        true
    }
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}

/// Wall-clock seconds per stage.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    pub features_s: f64,
    pub encoder_s: f64,
    pub prefill_s: f64,
    pub prefill_tokens: usize,
    pub decode_s: f64,
    pub decode_tokens: usize,
}

impl std::ops::AddAssign<&Timings> for Timings {
    /// Adds another run's seconds and token counts (pieces or segments of
    /// one recording).
    fn add_assign(&mut self, b: &Timings) {
        self.features_s += b.features_s;
        self.encoder_s += b.encoder_s;
        self.prefill_s += b.prefill_s;
        self.prefill_tokens += b.prefill_tokens;
        self.decode_s += b.decode_s;
        self.decode_tokens += b.decode_tokens;
    }
}

/// The result of one translation.
#[derive(Clone, Debug)]
pub struct Translation {
    pub text: String,
    /// Generated token ids (original id space), EOS included if emitted.
    pub token_ids: Vec<u32>,
    pub n_audio_tokens: usize,
    pub prompt_tokens: usize,
    pub timings: Timings,
}

/// One segment of a long recording and its translation
/// ([`Session::translate_segments`]).
#[derive(Clone, Debug)]
pub struct Segment {
    /// Start and end in seconds from the start of the recording.
    pub start_s: f64,
    pub end_s: f64,
    pub translation: Translation,
    /// Pieces of at most 30 s the segment was translated in.
    pub pieces: usize,
}

/// The result of [`Session::generate_text`].
#[derive(Clone, Debug)]
pub struct TextGeneration {
    /// Generated token ids (original id space), EOS included if emitted.
    pub token_ids: Vec<u32>,
    pub timings: Timings,
}

/// Encoder output of one clip.
#[derive(Clone, Debug)]
pub struct AudioEmbedding {
    /// Pooled encoder rows, `[n][d_model]`.
    pub encoder: Vec<f32>,
    /// Projected rows, `[n][hidden]`.
    pub projected: Vec<f32>,
    pub n: usize,
}

/// One stream's state over a shared model.
pub struct Session {
    model: Arc<Model>,
    pool: rayon::ThreadPool,
    taps: Taps,
    kv: KvPrecision,
    prefill_chunk: usize,
}

impl Session {
    /// A session with `threads` worker threads (0 = one per core).
    pub fn new(model: Arc<Model>, threads: usize) -> Result<Session> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| RuntimeError::ThreadPool(e.to_string()))?;
        Ok(Session {
            model,
            pool,
            taps: Taps::default(),
            kv: KvPrecision::default(),
            prefill_chunk: PREFILL_CHUNK,
        })
    }

    /// Positions per prefill micro-batch of later requests (default
    /// [`PREFILL_CHUNK`]; 0 counts as 1). Smaller chunks lower the peak
    /// memory of long prompts; the logits are the same up to rounding.
    pub fn set_prefill_chunk(&mut self, positions: usize) {
        self.prefill_chunk = positions.max(1);
    }

    /// Positions per prefill micro-batch (see [`Session::set_prefill_chunk`]).
    pub fn prefill_chunk(&self) -> usize {
        self.prefill_chunk
    }

    /// Storage precision of the KV cache of later requests (default f16:
    /// half the memory; f32 keeps exactly the computed keys and values).
    pub fn set_kv_precision(&mut self, p: KvPrecision) {
        self.kv = p;
    }

    pub fn kv_precision(&self) -> KvPrecision {
        self.kv
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Turns recording of intermediate tensors on or off (calibration
    /// collection, if on, continues).
    pub fn set_taps(&mut self, on: bool) {
        let calib = self.taps.take_calibration();
        self.taps = if on { Taps::enabled() } else { Taps::default() };
        if let Some(c) = calib {
            self.taps.set_calibration(true);
            if let Some(slot) = self.taps.calibration_mut() {
                *slot = c;
            }
        }
    }

    /// Starts (or stops and discards) collecting calibration statistics
    /// (per-input-channel mean squares of every linear layer's input, block
    /// influence of every block) in the passes that follow.
    pub fn set_calibration(&mut self, on: bool) {
        self.taps.set_calibration(on);
    }

    /// The calibration statistics collected so far (when collecting).
    pub fn calibration(&self) -> Option<&crate::calib::Calibration> {
        self.taps.calibration()
    }

    /// Takes the calibration statistics collected so far, leaving an empty
    /// collector.
    pub fn take_calibration(&mut self) -> Option<crate::calib::Calibration> {
        self.taps.take_calibration()
    }

    /// Intermediate tensors of the last call (when enabled).
    pub fn taps(&self) -> &Taps {
        &self.taps
    }

    /// Log-mel features of 16 kHz mono samples (at most 30 s).
    pub fn features(&self, samples: &[f32]) -> Result<LogMel> {
        let m = &self.model;
        self.pool.install(|| Ok(m.mel.compute(samples)?))
    }

    /// Encoder and projector outputs of one clip's features.
    pub fn encode(&mut self, mel: &LogMel) -> Result<AudioEmbedding> {
        let m = self.model.clone();
        let taps = &mut self.taps;
        self.pool.install(|| {
            let (encoder, n) = m.encoder.encode(&m.file, mel, taps)?;
            let projected = m.encoder.project(&m.file, &encoder, n, taps)?;
            Ok(AudioEmbedding {
                encoder,
                projected,
                n,
            })
        })
    }

    /// Prompt embeddings: token embeddings with the audio rows spliced in.
    fn prompt_embeddings(
        &self,
        ids: &[u32],
        audio_start: usize,
        audio: &AudioEmbedding,
    ) -> Result<Vec<f32>> {
        let m = &self.model;
        let rows = ids
            .iter()
            .map(|&id| {
                m.row_of(id).ok_or_else(|| {
                    RuntimeError::InvalidModel(format!(
                        "prompt token {id} was trimmed from the vocabulary"
                    ))
                })
            })
            .collect::<Result<Vec<u32>>>()?;
        let mut x = m.decoder.embed(&m.file, &rows)?;
        let h = m.config.llm.hidden_size;
        x[audio_start * h..(audio_start + audio.n) * h].copy_from_slice(&audio.projected);
        Ok(x)
    }

    /// Token ids of the prompt and the logits of every prompt position
    /// (`[len][vocab rows]`); for tests and evaluation.
    pub fn prompt_logits(
        &mut self,
        lang: &str,
        audio: &AudioEmbedding,
    ) -> Result<(Vec<u32>, Vec<f32>)> {
        let (ids, start) = self.model.prompt_ids(lang, audio.n)?;
        let x = self.prompt_embeddings(&ids, start, audio)?;
        let m = self.model.clone();
        let (taps, chunk) = (&mut self.taps, self.prefill_chunk);
        let n = ids.len();
        let logits = self.pool.install(|| {
            let mut cache = KvCache::new(m.config.llm.n_layers, m.config.llm.kv_dim(), n, self.kv);
            m.decoder
                .prefill(&m.file, x, n, &mut cache, Logits::All, taps, chunk)
        })?;
        Ok((ids, logits))
    }

    /// Vocabulary rows of text token ids (original id space).
    fn text_rows(&self, ids: &[u32]) -> Result<Vec<u32>> {
        ids.iter()
            .map(|&id| {
                self.model.row_of(id).ok_or_else(|| {
                    RuntimeError::InvalidArgument(format!("token {id} is not in the vocabulary"))
                })
            })
            .collect()
    }

    /// Logits of every position of a text-only token sequence (original id
    /// space), run through the decoder in windows of `window` tokens
    /// (chunked prefill); `[len][vocab rows]`. For evaluation.
    pub fn text_logits(&mut self, ids: &[u32], window: usize) -> Result<Vec<f32>> {
        let m = self.model.clone();
        let rows = self.text_rows(ids)?;
        let llm = &m.config.llm;
        let mut cache = KvCache::new(llm.n_layers, llm.kv_dim(), rows.len(), self.kv);
        let mut out = Vec::with_capacity(rows.len() * llm.vocab_size);
        let taps = &mut self.taps;
        for chunk in rows.chunks(window.max(1)) {
            let part = self.pool.install(|| -> Result<Vec<f32>> {
                let x = m.decoder.embed(&m.file, chunk)?;
                m.decoder
                    .forward(&m.file, x, chunk.len(), &mut cache, Logits::All, taps)
            })?;
            out.extend_from_slice(&part);
        }
        Ok(out)
    }

    /// Greedy continuation of a text-only prompt (original id space) with a
    /// KV cache: one prefill of the prompt, then one decoder step per token.
    /// With `ignore_eos` exactly `max_new_tokens` tokens are generated (for
    /// speed measurements). Timings cover prefill and decode.
    pub fn generate_text(
        &mut self,
        prompt: &[u32],
        max_new_tokens: usize,
        ignore_eos: bool,
    ) -> Result<TextGeneration> {
        self.search_text(prompt, 1, max_new_tokens, ignore_eos)
    }

    /// Continuation of a text-only prompt (original id space) by greedy
    /// search (`beams` 1) or beam search, as [`Session::generate`] searches
    /// after an audio prompt (the translation meter's text path).
    pub fn search_text(
        &mut self,
        prompt: &[u32],
        beams: usize,
        max_new_tokens: usize,
        ignore_eos: bool,
    ) -> Result<TextGeneration> {
        if beams == 0 {
            return Err(RuntimeError::InvalidArgument(
                "beams must be at least 1".into(),
            ));
        }
        if prompt.is_empty() || max_new_tokens == 0 {
            return Err(RuntimeError::InvalidArgument(
                "the prompt and max_new_tokens must not be empty".into(),
            ));
        }
        let m = self.model.clone();
        let needed = prompt.len() + max_new_tokens;
        if needed > m.config.llm.max_position_embeddings {
            return Err(RuntimeError::ContextOverflow {
                needed,
                limit: m.config.llm.max_position_embeddings,
            });
        }
        let rows = self.text_rows(prompt)?;
        let eos_rows: Vec<u32> = if ignore_eos {
            Vec::new()
        } else {
            let eos = &m.config.special.eos;
            eos.iter().filter_map(|&id| m.row_of(id)).collect()
        };
        let params = SearchParams {
            beams,
            max_new_tokens,
            min_new_tokens: 0,
            eos_rows,
            length_penalty: 1.0,
        };
        let (llm, file, pool) = (&m.config.llm, &m.file, &self.pool);
        let mut timings = Timings::default();
        let t0 = Instant::now();
        // Beam search copies the prompt's cache per beam; greedy grows one.
        let capacity = if beams == 1 { needed } else { rows.len() };
        let mut cache = KvCache::new(llm.n_layers, llm.kv_dim(), capacity, self.kv);
        let (taps, chunk) = (&mut self.taps, self.prefill_chunk);
        let logits = pool.install(|| -> Result<Vec<f32>> {
            let x = m.decoder.embed(file, &rows)?;
            m.decoder
                .prefill(file, x, rows.len(), &mut cache, Logits::Last, taps, chunk)
        })?;
        timings.prefill_s = t0.elapsed().as_secs_f64();
        timings.prefill_tokens = rows.len();
        let t1 = Instant::now();
        let mut step = |cache: &mut KvCache, row: u32| decode_step(&m, pool, cache, row);
        let out = if beams == 1 {
            search::greedy(logits, cache, &params, &mut step, &mut |_| true)?
        } else {
            search::beam(logits, cache.prefix(), &params, &mut step, &mut |_| true)?
        };
        timings.decode_s = t1.elapsed().as_secs_f64();
        timings.decode_tokens = out.len();
        Ok(TextGeneration {
            token_ids: out.iter().map(|&r| m.id_of(r)).collect(),
            timings,
        })
    }

    /// Translates one segment of 16 kHz mono samples of any length: a clip
    /// over 30 s is cut at its quietest points into pieces of at most 30 s
    /// ([`kompakt_audio::vad::split_long`]) translated one after the other.
    /// The text is the pieces' texts, trimmed, the non-empty ones joined by
    /// a space (streamed with a space between pieces); ids, token counts and
    /// timings add up. Also returns the number of pieces.
    pub fn translate_clip(
        &mut self,
        samples: &[f32],
        opts: &TranslateOptions,
        observer: &mut dyn Observer,
    ) -> Result<(Translation, usize)> {
        let pieces = kompakt_audio::vad::split_long(
            samples,
            kompakt_audio::TARGET_SAMPLE_RATE,
            kompakt_audio::longform::MAX_CLIP_S,
            &kompakt_audio::vad::VadConfig::default(),
        );
        let mut all = Translation {
            text: String::new(),
            token_ids: Vec::new(),
            n_audio_tokens: 0,
            prompt_tokens: 0,
            timings: Timings::default(),
        };
        let mut texts = Vec::with_capacity(pieces.len());
        for (k, piece) in pieces.iter().enumerate() {
            if k > 0 && !observer.on_text(" ") {
                return Err(RuntimeError::Aborted);
            }
            let out = self.translate(&samples[piece.clone()], opts, observer)?;
            let text = out.text.trim();
            if !text.is_empty() {
                texts.push(text.to_string());
            }
            all.token_ids.extend(&out.token_ids);
            all.n_audio_tokens += out.n_audio_tokens;
            all.prompt_tokens += out.prompt_tokens;
            all.timings += &out.timings;
        }
        all.text = texts.join(" ");
        Ok((all, pieces.len()))
    }

    /// Translates a recording of 16 kHz mono samples of any length, one
    /// [`Segment`] per stretch of speech: a recording of at most 30 s is one
    /// segment, a longer one is cut at pauses as `kompakt translate` cuts a
    /// long WAV file ([`kompakt_audio::longform`]), with identical results.
    /// A newline is streamed between segments.
    pub fn translate_segments(
        &mut self,
        samples: &[f32],
        opts: &TranslateOptions,
        observer: &mut dyn Observer,
    ) -> Result<Vec<Segment>> {
        use kompakt_audio::longform;
        let rate = kompakt_audio::TARGET_SAMPLE_RATE;
        let cuts =
            longform::segment_samples(samples, rate, &kompakt_audio::vad::VadConfig::default());
        let mut out = Vec::with_capacity(cuts.len());
        for (k, cut) in cuts.iter().enumerate() {
            if k > 0 && !observer.on_text("\n") {
                return Err(RuntimeError::Aborted);
            }
            let (translation, pieces) =
                self.translate_clip(longform::cut_samples(samples, rate, cut), opts, observer)?;
            out.push(Segment {
                start_s: cut.offset_s,
                end_s: cut.offset_s + cut.duration_s,
                translation,
                pieces,
            });
        }
        Ok(out)
    }

    /// Translates 16 kHz mono samples (at most 30 s; see
    /// [`Session::translate_segments`] for longer recordings).
    pub fn translate(
        &mut self,
        samples: &[f32],
        opts: &TranslateOptions,
        observer: &mut dyn Observer,
    ) -> Result<Translation> {
        if opts.beams == 0 || opts.max_new_tokens == 0 {
            return Err(RuntimeError::InvalidArgument(
                "beams and max_new_tokens must be at least 1".into(),
            ));
        }
        if opts.min_new_tokens > opts.max_new_tokens {
            return Err(RuntimeError::InvalidArgument(format!(
                "min_new_tokens ({}) exceeds max_new_tokens ({})",
                opts.min_new_tokens, opts.max_new_tokens
            )));
        }
        // Fails before any audio work when the prompt cannot be made.
        match &opts.instruction {
            Some(i) => {
                self.model.instruction_prompt(i)?;
                // A build without the tokenizer says so before the audio work.
                self.model.encode("")?;
            }
            None => {
                self.model.template(&opts.lang)?;
            }
        }
        if let Some(i) = samples.iter().position(|v| !v.is_finite()) {
            return Err(RuntimeError::InvalidArgument(format!(
                "sample {i} is not a finite number"
            )));
        }
        let mut timings = Timings::default();
        let t0 = Instant::now();
        if !observer.on_progress(Stage::Features, 0.0) {
            return Err(RuntimeError::Aborted);
        }
        let mel = self.features(samples)?;
        timings.features_s = t0.elapsed().as_secs_f64();
        if !observer.on_progress(Stage::Encoder, 0.0) {
            return Err(RuntimeError::Aborted);
        }
        let t1 = Instant::now();
        let audio = self.encode(&mel)?;
        timings.encoder_s = t1.elapsed().as_secs_f64();
        self.generate(&audio, opts, observer, timings)
    }

    /// Generates the translation of an encoded clip.
    pub fn generate(
        &mut self,
        audio: &AudioEmbedding,
        opts: &TranslateOptions,
        observer: &mut dyn Observer,
        mut timings: Timings,
    ) -> Result<Translation> {
        let m = self.model.clone();
        let (ids, start) = match &opts.instruction {
            Some(i) => m.prompt_text_ids(&m.instruction_prompt(i)?, audio.n)?,
            None => m.prompt_ids(&opts.lang, audio.n)?,
        };
        let n = ids.len();
        let needed = n + opts.max_new_tokens;
        if needed > m.config.llm.max_position_embeddings {
            return Err(RuntimeError::ContextOverflow {
                needed,
                limit: m.config.llm.max_position_embeddings,
            });
        }
        if !observer.on_progress(Stage::Prefill, 0.0) {
            return Err(RuntimeError::Aborted);
        }
        let x = self.prompt_embeddings(&ids, start, audio)?;
        let eos_rows: Vec<u32> = m
            .config
            .special
            .eos
            .iter()
            .filter_map(|&id| m.row_of(id))
            .collect();
        let params = SearchParams {
            beams: opts.beams,
            max_new_tokens: opts.max_new_tokens,
            min_new_tokens: opts.min_new_tokens,
            eos_rows,
            length_penalty: 1.0,
        };
        let t2 = Instant::now();
        let (llm, file, pool) = (&m.config.llm, &m.file, &self.pool);
        let capacity = if opts.beams == 1 { needed } else { n };
        let mut cache = KvCache::new(llm.n_layers, llm.kv_dim(), capacity, self.kv);
        let (taps, chunk) = (&mut self.taps, self.prefill_chunk);
        let logits = pool.install(|| {
            m.decoder
                .prefill(file, x, n, &mut cache, Logits::Last, taps, chunk)
        })?;
        timings.prefill_s = t2.elapsed().as_secs_f64();
        timings.prefill_tokens = n;
        let t3 = Instant::now();
        let mut step = |cache: &mut KvCache, row: u32| decode_step(&m, pool, cache, row);
        let max = opts.max_new_tokens as f32;
        // Bytes of text streamed so far (to flush what the stream held back).
        let mut sent = 0usize;
        let rows = if opts.beams == 1 {
            let mut stream = TextStream::default();
            let mut on_token = |row: u32| -> bool {
                let piece = stream.push(m.id_of(row), |ids| m.decode(ids));
                if !observer.on_progress(Stage::Decode, stream.len() as f32 / max) {
                    return false;
                }
                piece.is_none_or(|p| {
                    sent += p.len();
                    observer.on_text(&p)
                })
            };
            search::greedy(logits, cache, &params, &mut step, &mut on_token)?
        } else {
            let mut on_step = |t: usize| observer.on_progress(Stage::Decode, t as f32 / max);
            let rows = search::beam(logits, cache.prefix(), &params, &mut step, &mut on_step)?;
            let mut stream = TextStream::default();
            for &r in &rows {
                if let Some(p) = stream.push(m.id_of(r), |ids| m.decode(ids)) {
                    sent += p.len();
                    if !observer.on_text(&p) {
                        return Err(RuntimeError::Aborted);
                    }
                }
            }
            rows
        };
        timings.decode_s = t3.elapsed().as_secs_f64();
        timings.decode_tokens = rows.len();
        let token_ids: Vec<u32> = rows.iter().map(|&r| m.id_of(r)).collect();
        let text = m.decode(&token_ids)?;
        // The stream holds back a character cut off by the last token (it
        // decodes to U+FFFD); send it now, so that the pieces add up to the
        // text.
        if let Some(rest) = text.get(sent..).filter(|r| !r.is_empty()) {
            if !observer.on_text(rest) {
                return Err(RuntimeError::Aborted);
            }
        }
        Ok(Translation {
            text,
            token_ids,
            n_audio_tokens: audio.n,
            prompt_tokens: n,
            timings,
        })
    }
}

/// One decoder step: the logits after appending vocabulary row `row` to the
/// cache (greedy and beam search both drive the model through this).
fn decode_step(
    m: &Model,
    pool: &rayon::ThreadPool,
    cache: &mut KvCache,
    row: u32,
) -> Result<Vec<f32>> {
    pool.install(|| {
        let x = m.decoder.embed(&m.file, &[row])?;
        m.decoder
            .forward(&m.file, x, 1, cache, Logits::Last, &mut Taps::default())
    })
}

/// Incremental detokenizer: the text that each new token id adds, from
/// decoding only the last few ids rather than the whole output again.
///
/// It keeps two offsets into the ids (the scheme of text-generation-
/// inference's `decode_token`): `read`, where the text already sent ends, and
/// `prefix`, a few ids before it that give the decoder its context (a
/// byte-level BPE token may be half of a character; a SentencePiece one may
/// drop its leading space at the start of a decode). A new piece is the
/// decode of `ids[prefix..]` beyond that of `ids[prefix..read]`; it is held
/// back while it ends in an incomplete UTF-8 sequence (U+FFFD), so the pieces
/// always concatenate to whole characters. Each step decodes at most the ids
/// since the last piece sent, so streaming costs time linear in the output.
#[derive(Default)]
struct TextStream {
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl TextStream {
    /// Ids pushed so far.
    fn len(&self) -> usize {
        self.ids.len()
    }

    /// Appends `id` and returns the text it completes, if any. A decode
    /// error holds the text back, as an incomplete character does.
    fn push(&mut self, id: u32, decode: impl Fn(&[u32]) -> Result<String>) -> Option<String> {
        self.ids.push(id);
        let before = decode(&self.ids[self.prefix..self.read]).ok()?;
        let after = decode(&self.ids[self.prefix..]).ok()?;
        if after.len() <= before.len()
            || after.ends_with('\u{FFFD}')
            || !after.starts_with(before.as_str())
        {
            return None;
        }
        self.prefix = self.read;
        self.read = self.ids.len();
        Some(after[before.len()..].to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::TextStream;
    use crate::error::{Result, RuntimeError};

    fn tokenizer() -> tokenizers::Tokenizer {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/tokenizer/tokenizer.json"
        );
        tokenizers::Tokenizer::from_file(path).expect("tokenizer fixture")
    }

    /// Streams `ids` and returns the pieces and the number of ids decoded
    /// in all (the work).
    fn stream(tok: &tokenizers::Tokenizer, ids: &[u32]) -> (Vec<String>, usize) {
        let work = std::cell::Cell::new(0);
        let decode = |ids: &[u32]| -> Result<String> {
            work.set(work.get() + ids.len());
            tok.decode(ids, true)
                .map_err(|e| RuntimeError::Tokenizer(e.to_string()))
        };
        let mut s = TextStream::default();
        let pieces = ids.iter().filter_map(|&id| s.push(id, decode)).collect();
        (pieces, work.get())
    }

    #[test]
    fn pieces_are_whole_characters_and_concatenate_to_the_decode() {
        let tok = tokenizer();
        // Multi-byte characters span several byte-level tokens here.
        let text = "Guten Tag, schöne Grüße! 你好，世界。 Straße 😀 done.";
        let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert!(ids.len() > 20, "{} ids", ids.len());
        let whole = tok.decode(&ids, true).unwrap();
        assert!(whole.contains("你好") && whole.contains('😀'), "{whole:?}");
        let (pieces, _) = stream(&tok, &ids);
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
        assert!(pieces.len() > 5, "{pieces:?}");
        assert_eq!(pieces.concat(), whole);
    }

    #[test]
    fn special_tokens_add_no_text() {
        let tok = tokenizer();
        let mut ids = tok.encode("hello there", false).unwrap().get_ids().to_vec();
        let special = tok
            .get_added_tokens_decoder()
            .into_iter()
            .find(|(_, t)| t.special)
            .map(|(id, _)| id)
            .expect("a special token in the fixture");
        ids.insert(1, special);
        ids.push(special);
        let (pieces, _) = stream(&tok, &ids);
        assert_eq!(pieces.concat(), tok.decode(&ids, true).unwrap());
    }

    #[test]
    fn streaming_work_is_linear_in_the_output() {
        let tok = tokenizer();
        let ids = tok
            .encode(
                "the quick brown fox jumps over the lazy dog ".repeat(40),
                false,
            )
            .unwrap()
            .get_ids()
            .to_vec();
        let n = ids.len();
        let (pieces, work) = stream(&tok, &ids);
        assert_eq!(pieces.concat(), tok.decode(&ids, true).unwrap());
        // Re-decoding everything each step would cost n(n+1)/2 ids.
        assert!(work <= 8 * n, "{work} ids decoded for {n} tokens");
    }
}
