//! Token selection: greedy and beam search, with the semantics of
//! transformers' `generate` (5.x) so that outputs match token for token.
//!
//! Beam search follows `GenerationMixin._beam_search`: each step keeps the
//! top `max(2, 1 + n_eos) * beams` continuations over all beams; among them a
//! finished one (EOS, or the length limit) enters the finished set only when
//! it ranks within the first `beams`, scored `sum_logprob / generated_len ^
//! length_penalty`; the next running beams are the best unfinished ones; the
//! search stops when every candidate has finished, or (`early_stopping =
//! False` heuristic) when all finished slots are taken and the best running
//! beam cannot beat the worst of them.
use std::sync::Arc;

use crate::error::{Result, RuntimeError};
use crate::kv_cache::KvCache;

/// What to search for.
#[derive(Clone, Debug)]
pub struct SearchParams {
    pub beams: usize,
    pub max_new_tokens: usize,
    /// EOS is suppressed until this many tokens were generated
    /// (transformers' `min_new_tokens`).
    pub min_new_tokens: usize,
    pub eos_rows: Vec<u32>,
    pub length_penalty: f32,
}

/// One decoding step: feed `row` after the tokens in the cache, get logits.
pub type Step<'a> = dyn FnMut(&mut KvCache, u32) -> Result<Vec<f32>> + 'a;

/// Index of the first maximum (as `torch.argmax`).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// Sets the EOS logits to -inf while fewer than `min_new_tokens` tokens
/// were generated (as `MinNewTokensLengthLogitsProcessor`).
fn suppress_eos(logits: &mut [f32], params: &SearchParams, generated: usize) {
    if generated < params.min_new_tokens {
        for &r in &params.eos_rows {
            if let Some(v) = logits.get_mut(r as usize) {
                *v = f32::NEG_INFINITY;
            }
        }
    }
}

fn log_softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = x.iter().map(|v| (v - max).exp()).sum();
    let lse = max + sum.ln();
    x.iter().map(|v| v - lse).collect()
}

/// Greedy decoding from the prompt's last logits. `on_token` sees each new
/// row and may return false to abort. Returns the new rows, EOS included.
pub fn greedy(
    first_logits: Vec<f32>,
    mut cache: KvCache,
    params: &SearchParams,
    step: &mut Step<'_>,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Vec<u32>> {
    let mut logits = first_logits;
    let mut out = Vec::new();
    loop {
        suppress_eos(&mut logits, params, out.len());
        let tok = argmax(&logits) as u32;
        out.push(tok);
        if !on_token(tok) {
            return Err(RuntimeError::Aborted);
        }
        if params.eos_rows.contains(&tok) || out.len() >= params.max_new_tokens {
            return Ok(out);
        }
        logits = step(&mut cache, tok)?;
    }
}

struct Beam {
    rows: Vec<u32>,
    score: f32,
    cache: KvCache,
    logits: Vec<f32>,
}

struct Candidate {
    score: f32,
    parent: usize,
    row: u32,
    hit: bool,
}

/// Beam search from the prompt's last logits and its frozen cache.
/// `on_step` is called once per step and may return false to abort.
pub fn beam(
    first_logits: Vec<f32>,
    prefix: Arc<KvCache>,
    params: &SearchParams,
    step: &mut Step<'_>,
    on_step: &mut dyn FnMut(usize) -> bool,
) -> Result<Vec<u32>> {
    const NEG: f32 = -1.0e9;
    let nb = params.beams.max(1);
    let keep = 2usize.max(1 + params.eos_rows.len()) * nb;
    let vocab = first_logits.len();
    let mut running = vec![Beam {
        rows: Vec::new(),
        score: 0.0,
        cache: KvCache::after(prefix.clone(), params.max_new_tokens),
        logits: first_logits,
    }];
    let mut finished: Vec<(f32, Vec<u32>)> = Vec::new();
    let mut improvable = true;

    for t in 0..params.max_new_tokens {
        if !on_step(t) {
            return Err(RuntimeError::Aborted);
        }
        // Top-`keep` continuations over all running beams.
        let mut cands: Vec<Candidate> = Vec::with_capacity(running.len() * vocab);
        for (b, beam) in running.iter_mut().enumerate() {
            suppress_eos(&mut beam.logits, params, t);
            for (row, lp) in log_softmax(&beam.logits).into_iter().enumerate() {
                cands.push(Candidate {
                    score: beam.score + lp,
                    parent: b,
                    row: row as u32,
                    hit: false,
                });
            }
        }
        let k = keep.min(cands.len());
        cands.select_nth_unstable_by(k - 1, |a, b| b.score.total_cmp(&a.score));
        cands.truncate(k);
        cands.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then((a.parent * vocab + a.row as usize).cmp(&(b.parent * vocab + b.row as usize)))
        });
        let at_limit = t + 1 >= params.max_new_tokens;
        for c in cands.iter_mut() {
            c.hit = at_limit || params.eos_rows.contains(&c.row);
        }

        // Finished hypotheses: only those ranked within the first `nb`.
        if improvable {
            let norm = ((t + 1) as f32).powf(params.length_penalty);
            for c in cands.iter().take(nb).filter(|c| c.hit) {
                let mut rows = running[c.parent].rows.clone();
                rows.push(c.row);
                finished.push((c.score / norm, rows));
            }
            finished.sort_by(|a, b| b.0.total_cmp(&a.0));
            finished.truncate(nb);
        }

        // Next running beams: the best unfinished continuations.
        let mut order: Vec<(f32, usize)> = cands
            .iter()
            .enumerate()
            .map(|(i, c)| (c.score + if c.hit { NEG } else { 0.0 }, i))
            .collect();
        order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        order.truncate(nb);

        // Stopping conditions, evaluated as transformers does after the step.
        let best_running = order[0].0 / ((t + 1) as f32).powf(params.length_penalty);
        if finished.len() == nb {
            let worst = finished.iter().map(|f| f.0).fold(f32::INFINITY, f32::min);
            improvable &= best_running > worst;
        }
        if !improvable || cands.iter().all(|c| c.hit) {
            break;
        }

        let mut next = Vec::with_capacity(nb);
        for &(score, i) in &order {
            let c = &cands[i];
            let parent = &running[c.parent];
            let mut rows = parent.rows.clone();
            rows.push(c.row);
            let mut cache = parent.cache.clone();
            let logits = step(&mut cache, c.row)?;
            next.push(Beam {
                rows,
                score,
                cache,
                logits,
            });
        }
        running = next;
    }
    Ok(finished.into_iter().next().map(|f| f.1).unwrap_or_else(|| {
        running
            .into_iter()
            .next()
            .map(|b| b.rows)
            .unwrap_or_default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_cache::KvPrecision;

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    }

    #[test]
    fn log_softmax_normalises() {
        let lp = log_softmax(&[0.5, 1.5, -2.0]);
        let s: f32 = lp.iter().map(|v| v.exp()).sum();
        assert!((s - 1.0).abs() < 1e-6);
    }

    fn params(min: usize) -> SearchParams {
        SearchParams {
            beams: 1,
            max_new_tokens: 5,
            min_new_tokens: min,
            eos_rows: vec![0],
            length_penalty: 1.0,
        }
    }

    /// A model whose favourite token is always EOS (row 0), row 2 second.
    fn eos_loving_step(_: &mut KvCache, _: u32) -> Result<Vec<f32>> {
        Ok(vec![5.0, 1.0, 3.0])
    }

    #[test]
    fn greedy_suppresses_eos_until_min_new_tokens() {
        let cache = KvCache::new(1, 2, 8, KvPrecision::F32);
        let first = vec![5.0, 1.0, 3.0];
        let mut step = eos_loving_step;
        let out = greedy(
            first.clone(),
            cache.clone(),
            &params(0),
            &mut step,
            &mut |_| true,
        );
        assert_eq!(out.unwrap(), vec![0]);
        let out = greedy(first, cache, &params(3), &mut step, &mut |_| true);
        assert_eq!(out.unwrap(), vec![2, 2, 2, 0]);
    }

    #[test]
    fn beam_suppresses_eos_until_min_new_tokens() {
        let prefix = KvCache::new(1, 2, 8, KvPrecision::F32).prefix();
        let first = vec![5.0, 1.0, 3.0];
        let mut step = eos_loving_step;
        let mut p = params(3);
        p.beams = 2;
        let out = beam(first, prefix, &p, &mut step, &mut |_| true).unwrap();
        assert!(out.len() >= 4, "{out:?}");
        assert!(!out[..3].contains(&0), "{out:?}");
    }
}
