//! The fidelity meter: how far a candidate (compressed) model moves from a
//! reference model on held-out text and speech.
//!
//! Text: the text is tokenized with the reference's tokenizer, cut into
//! independent windows of `window` tokens, and both models' next-token
//! distributions are compared at every position (KL(ref || cand), top-1
//! agreement) and scored against the actual next token (perplexity of each
//! model). Speech: cosine similarity of the pooled encoder rows.
//!
//! Vocabularies: the comparison runs in the original token-id space. Rows
//! are mapped with [`Model::row_of`] / [`Model::id_of`], so a
//! vocabulary-trimmed candidate is compared on the ids both models have (the
//! reference distribution is renormalized over them, and the reference mass
//! outside them is reported). Models whose tokenizers differ are refused.
use std::path::Path;

use rayon::prelude::*;

use crate::error::{Result, RuntimeError};
use crate::model::Model;
use crate::session::Session;
use kompakt_format::summary::{Component, SizeBin, Summary};

/// How the vocabulary rows of two models correspond.
#[derive(Clone, Debug)]
pub struct VocabMap {
    /// Same vocabulary rows in both (no mapping needed).
    pub identity: bool,
    /// `(reference row, candidate row)` of every id both models have.
    pub pairs: Vec<(u32, u32)>,
    /// Reference rows whose id the candidate lacks.
    pub ref_only: usize,
}

impl VocabMap {
    /// Maps the candidate's vocabulary onto the reference's. Fails when the
    /// tokenizers differ or the models share no ids.
    pub fn new(reference: &Model, candidate: &Model) -> Result<VocabMap> {
        let (rt, ct) = (reference.tokenizer()?, candidate.tokenizer()?);
        if rt.get_vocab_size(true) != ct.get_vocab_size(true)
            || rt.get_vocab(true) != ct.get_vocab(true)
        {
            return Err(RuntimeError::InvalidArgument(format!(
                "the models have different tokenizers ({} vs {} tokens): text would be tokenized differently, \
                 so their distributions cannot be compared",
                rt.get_vocab_size(true),
                ct.get_vocab_size(true)
            )));
        }
        let rv = reference.config().llm.vocab_size;
        let cv = candidate.config().llm.vocab_size;
        let trimmed =
            reference.config().kept_ids.is_some() || candidate.config().kept_ids.is_some();
        if !trimmed && rv == cv {
            return Ok(VocabMap {
                identity: true,
                pairs: Vec::new(),
                ref_only: 0,
            });
        }
        let mut pairs = Vec::with_capacity(rv.min(cv));
        let mut ref_only = 0;
        for r in 0..rv as u32 {
            match candidate.row_of(reference.id_of(r)) {
                Some(c) => pairs.push((r, c)),
                None => ref_only += 1,
            }
        }
        if pairs.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "the reference and the candidate have no vocabulary ids in common".into(),
            ));
        }
        Ok(VocabMap {
            identity: false,
            pairs,
            ref_only,
        })
    }
}

/// Token ids (original id space) of a text, without special tokens added.
pub fn tokenize(model: &Model, text: &str) -> Result<Vec<u32>> {
    model.encode(text)
}

/// The language of an evaluation file from its name: the first of `en`,
/// `de`, `zh` among the parts of the file name split at `.`, `-`, `_`
/// (then of the parent directory's name).
pub fn lang_of_path(path: &Path) -> Option<String> {
    let find = |s: &str| {
        s.split(['.', '-', '_', ' '])
            .map(str::to_ascii_lowercase)
            .find(|p| matches!(p.as_str(), "en" | "de" | "zh"))
    };
    path.file_name()
        .and_then(|n| find(&n.to_string_lossy()))
        .or_else(|| {
            path.parent()?
                .file_name()
                .and_then(|n| find(&n.to_string_lossy()))
        })
}

/// Log-softmax of one row in f64.
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    row.iter().map(|&x| x as f64 - lse).collect()
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

/// Per-position comparison result.
#[derive(Clone, Copy, Debug)]
struct Position {
    kl: f64,
    agree: bool,
    nll_ref: Option<f64>,
    nll_cand: Option<f64>,
    ref_outside: f64,
}

fn compare_row(
    map: &VocabMap,
    reference: &Model,
    candidate: &Model,
    r: &[f32],
    c: &[f32],
    next: Option<u32>,
) -> Result<Position> {
    let lr = log_softmax(r);
    let lc = log_softmax(c);
    let (kl, ref_outside): (f64, f64) = if map.identity {
        let kl: f64 = lr
            .iter()
            .zip(&lc)
            .map(|(&a, &b)| if a > -700.0 { a.exp() * (a - b) } else { 0.0 })
            .sum();
        (kl, 0.0)
    } else {
        // Renormalize both distributions over the common ids.
        let mr: f64 = map.pairs.iter().map(|&(a, _)| lr[a as usize].exp()).sum();
        let mc: f64 = map.pairs.iter().map(|&(_, b)| lc[b as usize].exp()).sum();
        let (lmr, lmc) = (mr.ln(), mc.ln());
        let kl: f64 = map
            .pairs
            .iter()
            .map(|&(a, b)| {
                let la = lr[a as usize] - lmr;
                let lb = lc[b as usize] - lmc;
                if la > -700.0 {
                    la.exp() * (la - lb)
                } else {
                    0.0
                }
            })
            .sum();
        (kl, 1.0 - mr)
    };
    let top_r = reference.id_of(argmax(r) as u32);
    let top_c = candidate.id_of(argmax(c) as u32);
    let (nll_ref, nll_cand) = match next {
        None => (None, None),
        Some(id) => {
            let rr = reference.row_of(id).ok_or_else(|| {
                RuntimeError::InvalidArgument(format!(
                    "token {id} is not in the reference's vocabulary"
                ))
            })?;
            let cr = candidate.row_of(id).ok_or_else(|| {
                RuntimeError::InvalidArgument(format!(
                    "token {id} is not in the candidate's vocabulary"
                ))
            })?;
            (Some(-lr[rr as usize]), Some(-lc[cr as usize]))
        }
    };
    Ok(Position {
        kl: kl.max(0.0),
        agree: top_r == top_c,
        nll_ref,
        nll_cand,
        ref_outside,
    })
}

/// Accumulated text statistics (one file, or several merged).
#[derive(Clone, Debug, Default)]
pub struct TextStats {
    /// KL(ref || cand) in nats at every compared position.
    pub kl: Vec<f32>,
    pub agree: u64,
    pub nll_ref: f64,
    pub nll_cand: f64,
    /// Positions with a known next token (perplexity denominators).
    pub predictions: u64,
    pub ref_outside: f64,
    pub tokens: u64,
}

/// Summary of [`TextStats`].
#[derive(Clone, Debug, PartialEq)]
pub struct TextScore {
    /// Compared positions (every token of every window).
    pub positions: u64,
    pub tokens: u64,
    pub kl_mean: f64,
    pub kl_p99: f64,
    pub kl_max: f64,
    pub top1: f64,
    pub ppl_ref: f64,
    pub ppl_cand: f64,
    /// Mean reference probability on ids the candidate lacks (0 unless trimmed).
    pub ref_mass_outside: f64,
}

impl TextStats {
    /// Compares the logits of one window: `ids` are the window's tokens
    /// (original ids), `next` the token after the window if any;
    /// `ref_logits` is `[ids.len()][ref vocab rows]`, `cand_logits` likewise.
    #[allow(clippy::too_many_arguments)]
    pub fn add_window(
        &mut self,
        map: &VocabMap,
        reference: &Model,
        candidate: &Model,
        ids: &[u32],
        ref_logits: &[f32],
        cand_logits: &[f32],
    ) -> Result<()> {
        let (rv, cv) = (
            reference.config().llm.vocab_size,
            candidate.config().llm.vocab_size,
        );
        let n = ids.len();
        if ref_logits.len() != n * rv || cand_logits.len() != n * cv {
            return Err(RuntimeError::InvalidArgument(format!(
                "logits of {} / {} values for {n} positions of {rv} / {cv} rows",
                ref_logits.len(),
                cand_logits.len()
            )));
        }
        let rows: Vec<Position> = (0..n)
            .into_par_iter()
            .map(|t| {
                let next = ids.get(t + 1).copied();
                compare_row(
                    map,
                    reference,
                    candidate,
                    &ref_logits[t * rv..(t + 1) * rv],
                    &cand_logits[t * cv..(t + 1) * cv],
                    next,
                )
            })
            .collect::<Result<_>>()?;
        self.tokens += n as u64;
        for p in rows {
            self.kl.push(p.kl as f32);
            self.agree += p.agree as u64;
            self.ref_outside += p.ref_outside;
            if let (Some(a), Some(b)) = (p.nll_ref, p.nll_cand) {
                self.nll_ref += a;
                self.nll_cand += b;
                self.predictions += 1;
            }
        }
        Ok(())
    }

    /// [`TextStats::add_window`] for a candidate that is not a kompakt model
    /// (e.g. another engine's logits): `cand_logits` is `[ids.len()][rows]`
    /// in the reference's vocabulary rows, compared with the same code.
    pub fn add_window_rows(
        &mut self,
        reference: &Model,
        ids: &[u32],
        ref_logits: &[f32],
        cand_logits: &[f32],
    ) -> Result<()> {
        if reference.config().kept_ids.is_some() {
            return Err(RuntimeError::InvalidArgument(
                "the reference's vocabulary is trimmed: its rows are not token ids".into(),
            ));
        }
        let map = VocabMap {
            identity: true,
            pairs: Vec::new(),
            ref_only: 0,
        };
        self.add_window(&map, reference, reference, ids, ref_logits, cand_logits)
    }

    /// Merges another file's statistics.
    pub fn merge(&mut self, other: &TextStats) {
        self.kl.extend_from_slice(&other.kl);
        self.agree += other.agree;
        self.nll_ref += other.nll_ref;
        self.nll_cand += other.nll_cand;
        self.predictions += other.predictions;
        self.ref_outside += other.ref_outside;
        self.tokens += other.tokens;
    }

    pub fn score(&self) -> TextScore {
        let n = self.kl.len();
        let mut sorted: Vec<f32> = self.kl.clone();
        sorted.sort_by(f32::total_cmp);
        let p99 = if n == 0 {
            0.0
        } else {
            sorted[((n as f64 * 0.99).ceil() as usize).clamp(1, n) - 1] as f64
        };
        let nf = n.max(1) as f64;
        let pf = self.predictions.max(1) as f64;
        TextScore {
            positions: n as u64,
            tokens: self.tokens,
            kl_mean: self.kl.iter().map(|&x| x as f64).sum::<f64>() / nf,
            kl_p99: p99,
            kl_max: sorted.last().copied().unwrap_or(0.0) as f64,
            top1: self.agree as f64 / nf,
            ppl_ref: (self.nll_ref / pf).exp(),
            ppl_cand: (self.nll_cand / pf).exp(),
            ref_mass_outside: self.ref_outside / nf,
        }
    }
}

/// Windows of at most `window` tokens covering `ids` (the last may be shorter;
/// a final window of a single token is merged away since it predicts nothing
/// scored).
pub fn windows(ids: &[u32], window: usize) -> Vec<&[u32]> {
    ids.chunks(window.max(2)).filter(|w| w.len() >= 2).collect()
}

/// Compares the two sessions' models on a token sequence, window by window.
/// `progress(done, total)` is called after each window; returning `false`
/// aborts.
pub fn score_text(
    reference: &mut Session,
    candidate: &mut Session,
    map: &VocabMap,
    ids: &[u32],
    window: usize,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<TextStats> {
    if window < 2 {
        return Err(RuntimeError::InvalidArgument(
            "window must be at least 2 tokens".into(),
        ));
    }
    let ws = windows(ids, window);
    let mut stats = TextStats::default();
    let (rm, cm) = (reference.model().clone(), candidate.model().clone());
    for (k, w) in ws.iter().enumerate() {
        let r = reference.text_logits(w, window)?;
        let c = candidate.text_logits(w, window)?;
        stats.add_window(map, &rm, &cm, w, &r, &c)?;
        if !progress(k + 1, ws.len()) {
            return Err(RuntimeError::Aborted);
        }
    }
    Ok(stats)
}

/// Cosine similarity of matching rows of two `[n][d]` matrices: (mean, min).
pub fn row_cosines(a: &[f32], b: &[f32], d: usize) -> (f64, f64) {
    let mut sum = 0.0;
    let mut min = f64::INFINITY;
    let mut n = 0;
    for (x, y) in a.chunks_exact(d).zip(b.chunks_exact(d)) {
        let dot: f64 = x.iter().zip(y).map(|(&p, &q)| p as f64 * q as f64).sum();
        let nx: f64 = x.iter().map(|&p| p as f64 * p as f64).sum::<f64>().sqrt();
        let ny: f64 = y.iter().map(|&q| q as f64 * q as f64).sum::<f64>().sqrt();
        let c = if nx > 0.0 && ny > 0.0 {
            dot / (nx * ny)
        } else {
            (nx == ny) as u8 as f64
        };
        sum += c;
        min = min.min(c);
        n += 1;
    }
    if n == 0 {
        (1.0, 1.0)
    } else {
        (sum / n as f64, min)
    }
}

/// Encoder fidelity on one clip.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioScore {
    /// Audio tokens (pooled encoder rows) of the clip.
    pub rows: usize,
    /// Mean and minimum cosine of the encoder output rows.
    pub cos_mean: f64,
    pub cos_min: f64,
    /// Mean cosine of the projected rows (the LLM's audio inputs).
    pub proj_cos_mean: f64,
}

/// Compares the encoders (and projectors) of two models on 16 kHz samples.
pub fn score_audio(
    reference: &mut Session,
    candidate: &mut Session,
    samples: &[f32],
) -> Result<AudioScore> {
    let a = reference.encode(&reference.features(samples)?)?;
    let b = candidate.encode(&candidate.features(samples)?)?;
    if a.n != b.n || a.encoder.len() != b.encoder.len() || a.projected.len() != b.projected.len() {
        return Err(RuntimeError::InvalidArgument(format!(
            "encoder outputs differ in shape: {} x {} vs {} x {}",
            a.n,
            a.encoder.len() / a.n.max(1),
            b.n,
            b.encoder.len() / b.n.max(1)
        )));
    }
    let d = a.encoder.len() / a.n.max(1);
    let h = a.projected.len() / a.n.max(1);
    let (cos_mean, cos_min) = row_cosines(&a.encoder, &b.encoder, d.max(1));
    let (proj_cos_mean, _) = row_cosines(&a.projected, &b.projected, h.max(1));
    Ok(AudioScore {
        rows: a.n,
        cos_mean,
        cos_min,
        proj_cos_mean,
    })
}

/// Size facts of a model file.
#[derive(Clone, Debug, PartialEq)]
pub struct SizeReport {
    pub file_bytes: u64,
    pub params: u64,
    /// Stored weight bytes * 8 / params, whole model.
    pub bits_per_weight: f64,
    /// The LLM part: layers, embeddings and lm_head.
    pub llm_bytes: u64,
    pub llm_params: u64,
    pub llm_bits_per_weight: f64,
    pub bin: SizeBin,
}

pub fn size_report(model: &Model) -> SizeReport {
    let s = Summary::of(model.file());
    let t = &s.params.total;
    let llm = [
        Component::LlmLayers,
        Component::Embeddings,
        Component::LmHead,
    ];
    let llm_bytes: u64 = llm.iter().map(|&c| s.params.get(c).bytes).sum();
    let llm_params: u64 = llm.iter().map(|&c| s.params.get(c).params).sum();
    let bpw = |b: u64, p: u64| {
        if p == 0 {
            0.0
        } else {
            b as f64 * 8.0 / p as f64
        }
    };
    SizeReport {
        file_bytes: s.file_size,
        params: t.params,
        bits_per_weight: bpw(t.bytes, t.params),
        llm_bytes,
        llm_params,
        llm_bits_per_weight: bpw(llm_bytes, llm_params),
        bin: s.bin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lang_from_names() {
        assert_eq!(
            lang_of_path(Path::new("/x/heldout/de.txt")).as_deref(),
            Some("de")
        );
        assert_eq!(
            lang_of_path(Path::new("/x/zh/heldout.txt")).as_deref(),
            Some("zh")
        );
        assert_eq!(
            lang_of_path(Path::new("held-en_v2.txt")).as_deref(),
            Some("en")
        );
        assert_eq!(lang_of_path(Path::new("/x/text.txt")), None);
    }

    #[test]
    fn cosines() {
        let a = [1.0, 0.0, 0.0, 1.0];
        let b = [2.0, 0.0, 1.0, 1.0];
        let (mean, min) = row_cosines(&a, &b, 2);
        assert!((min - 0.5f64.sqrt()).abs() < 1e-12);
        assert!((mean - (1.0 + 0.5f64.sqrt()) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn p99_and_means() {
        let s = TextStats {
            kl: (1..=200).map(|x| x as f32).collect(),
            agree: 100,
            ..Default::default()
        };
        let sc = s.score();
        assert_eq!(sc.kl_p99, 198.0);
        assert_eq!(sc.kl_max, 200.0);
        assert!((sc.kl_mean - 100.5).abs() < 1e-9);
        assert!((sc.top1 - 0.5).abs() < 1e-12);
    }

    #[test]
    fn windows_cover() {
        let ids: Vec<u32> = (0..11).collect();
        let w = windows(&ids, 5);
        assert_eq!(w.len(), 2); // the trailing single token predicts nothing
        assert_eq!(w[1], &[5, 6, 7, 8, 9]);
    }
}
