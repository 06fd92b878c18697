//! Mixed-precision allocation: choose each weight matrix's dtype so that the
//! file fits a byte budget while the estimated loss is smallest.
//!
//! The loss of storing tensor `t` as type `q` is estimated as
//! `numel(t) * e(t, q) * s(t)`: `e` is the importance-weighted relative
//! squared error of quantizing a sample of the tensor's rows (measured, not
//! assumed; the importance is the calibration's per-input-channel mean
//! squared activation, uniform without calibration), `s` the sensitivity of
//! the tensor's layer ([`sensitivity`]; 1 unless asked for, since on the
//! real-weight proxy it made plans worse). The candidates per tensor are
//! [`default_candidates`] unless a recipe rule says otherwise. The
//! allocation starts every tensor at the cheapest candidate and repeatedly
//! applies the upgrade with the best loss reduction per added byte that
//! still fits (a greedy multiple-choice knapsack).
use kompakt_format::DType;
use rayon::prelude::*;

use crate::calib::Calibration;
use crate::checkpoint::Checkpoint;
use crate::error::{ConvertError, Result};
use crate::mapping::{Role, TensorSpec};

/// Rows sampled per tensor to estimate quantization error (evenly spaced;
/// 8 gave estimates that varied by tens of percent between row sets on the
/// proxy's embeddings, whose rows differ much more than a linear layer's).
pub const SAMPLE_ROWS: usize = 32;

/// Default candidate types for allocation, cheapest first.
pub const CANDIDATES: [DType; 6] = [
    DType::IQ2,
    DType::Q2K,
    DType::Q3K,
    DType::Q4K,
    DType::Q8_0,
    DType::F16,
];

/// Candidate types of `spec` when no recipe rule matches it: [`CANDIDATES`]
/// with floors for the tensors whose error the loss estimate misjudges.
///
/// - Token embeddings and lm_head never get `iq2`: at `iq2` they made the
///   proxy collapse (uniform `iq2` KL 7.5 against 1.6 for `q2_k`), while the
///   per-row error estimate ranks `iq2` as a fair trade there. Every token
///   passes through both, and the lm_head error lands on the logits
///   unattenuated.
/// - The audio projector stays at `q8_0` or more: it is small and every
///   audio token passes through it.
/// - Audio encoder weights get at least `q4_k`: the text-side loss the
///   allocator estimates does not see how encoder error reaches the
///   translation; on the proxy (Whisper-tiny encoder) its output fell to
///   cosine 0.76 at `q2_k` (0.93 at `q3_k`). This costs more in the real
///   model, whose encoder is 7.6 % of the parameters (1.5 % in the proxy):
///   the Bin2/Bin3 presets set their own encoder types by recipe rules.
pub fn default_candidates(spec: &TensorSpec) -> Vec<DType> {
    use crate::mapping::Component;
    let floor = match (spec.role, spec.component) {
        (Role::Embedding | Role::LmHead, _) => DType::Q2K,
        (_, Component::Projector) => DType::Q8_0,
        (_, Component::AudioEncoder) => DType::Q4K,
        _ => DType::IQ2,
    };
    let from = CANDIDATES.iter().position(|&d| d == floor).unwrap_or(0);
    CANDIDATES[from..].to_vec()
}

/// One tensor's decision.
#[derive(Clone, Debug)]
pub struct Choice {
    pub kpk: String,
    pub dtype: DType,
    pub bytes: u64,
    /// Estimated (importance-weighted) relative error of the chosen type.
    pub rel_err: f64,
    /// The loss weight of the tensor ([`sensitivity`]).
    pub sensitivity: f64,
}

/// The result of an allocation.
#[derive(Clone, Debug)]
pub struct Plan {
    pub choices: Vec<Choice>,
    pub budget: u64,
    pub fixed_bytes: u64,
    pub weight_bytes: u64,
}

impl Plan {
    /// The dtype chosen for `kpk`, if it is an allocated tensor.
    pub fn dtype_of(&self, kpk: &str) -> Option<DType> {
        self.choices.iter().find(|c| c.kpk == kpk).map(|c| c.dtype)
    }

    /// A JSON record of the plan for provenance.
    pub fn to_json(&self) -> serde_json::Value {
        let mut hist = std::collections::BTreeMap::<String, u64>::new();
        for c in &self.choices {
            *hist.entry(c.dtype.name().to_string()).or_default() += 1;
        }
        serde_json::json!({
            "budget_bytes": self.budget,
            "fixed_bytes": self.fixed_bytes,
            "weight_bytes": self.weight_bytes,
            "types": hist,
            "tensors": self.choices.iter().map(|c| serde_json::json!([c.kpk, c.dtype.name()])).collect::<Vec<_>>(),
        })
    }
}

/// Relative squared error of `dtype` on evenly spaced sample rows of `spec`,
/// weighted per input column by `importance` when given.
pub fn sample_error(
    ckpt: &Checkpoint,
    spec: &TensorSpec,
    rows_of: Option<&[usize]>,
    dtype: DType,
    importance: Option<&[f32]>,
) -> Result<f64> {
    let (src, bytes) = ckpt.view(&spec.hf, &spec.shape)?;
    let cols = *spec.shape.last().unwrap_or(&1);
    let all_rows = spec.shape.iter().product::<usize>() / cols.max(1);
    let n = rows_of.map_or(all_rows, |r| r.len());
    let take = SAMPLE_ROWS.min(n);
    let row_bytes = cols * src.width();
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for k in 0..take {
        let i = k * n / take;
        let r = rows_of.map_or(i, |rows| rows[i]);
        let x = src.decode(&bytes[r * row_bytes..(r + 1) * row_bytes]);
        let q = kompakt_kernels::quantize(dtype, &x, 1, cols, importance).map_err(|e| {
            ConvertError::Quantize {
                name: spec.hf.clone(),
                msg: e.to_string(),
            }
        })?;
        let w = kompakt_kernels::WeightRef::new(dtype, &q, 1, cols).map_err(|e| {
            ConvertError::Quantize {
                name: spec.hf.clone(),
                msg: e.to_string(),
            }
        })?;
        let mut y = vec![0.0f32; cols];
        kompakt_kernels::dequantize(&w, &mut y);
        for c in 0..cols {
            let imp = importance.map_or(1.0, |v| v[c] as f64);
            num += imp * ((x[c] - y[c]) as f64).powi(2);
            den += imp * (x[c] as f64).powi(2);
        }
    }
    Ok(if den > 0.0 { num / den } else { 0.0 })
}

/// Bounds of [`sensitivity`], relative to the stack's mean.
pub const SENSITIVITY_RANGE: (f64, f64) = (0.25, 4.0);

/// Sensitivity of `spec`'s loss: its layer's block influence divided by the
/// mean block influence of the layers of its stack (decoder or audio
/// encoder) in the calibration, clamped to [`SENSITIVITY_RANGE`]; 1 for
/// tensors outside the layers (embeddings, lm_head, projector) and without
/// calibration.
///
/// Why block influence: `e` is a relative error of one matrix's output, so
/// it perturbs the block's update `h_out - h_in` by a fraction of that
/// update; what the rest of the network sees is the perturbation relative
/// to the residual stream, which is `e` times the size of the update
/// relative to the stream. ShortGPT's `BI = 1 - cos(h_in, h_out)` measures
/// exactly that size (for small updates, `1 - cos ~ |update_perp|^2 / (2 |h|^2)`,
/// squared like `e`), averaged over real calibration tokens: a block that
/// barely changes its input passes a given relative weight error on as a
/// proportionally smaller change of the hidden state. Dividing by the stack
/// mean keeps the decoder's and encoder's losses on the scale of the
/// unweighted ones (and of the non-layer tensors, which get 1), and the clamp
/// keeps a near-identity block from being starved (its BI only measures its
/// effect with exact weights) and the first block (typically BI ~ 10x the
/// mean) from taking every spare byte.
pub fn sensitivity(calib: Option<&Calibration>, spec: &TensorSpec) -> f64 {
    let (Some(c), Some(src)) = (calib, spec.layer) else {
        return 1.0;
    };
    let stack = match spec.component {
        crate::mapping::Component::AudioEncoder => "audio",
        _ => "llm",
    };
    let all = if stack == "llm" {
        &c.llm_influence
    } else {
        &c.audio_influence
    };
    if !c.covers(stack) || all.is_empty() {
        return 1.0;
    }
    let mean = all.iter().map(|&v| v as f64).sum::<f64>() / all.len() as f64;
    match c.influence(stack, src) {
        Some(bi) if mean > 0.0 => {
            (bi as f64 / mean).clamp(SENSITIVITY_RANGE.0, SENSITIVITY_RANGE.1)
        }
        _ => 1.0,
    }
}

/// Whether the allocator decides this tensor's dtype.
pub fn allocatable(role: Role) -> bool {
    matches!(role, Role::Linear | Role::Embedding | Role::LmHead)
}

/// Per tensor: loss, bytes and type of each candidate.
type Estimate = (Vec<f64>, Vec<u64>, Vec<DType>);

/// Chooses dtypes for the allocatable tensors of `specs` so that
/// `fixed_bytes` plus their storage stays within `budget`.
/// `rows` gives the number of stored rows of each spec (after trimming).
/// With `calib`, errors are importance-weighted and, when
/// `layer_sensitivity`, losses scaled by [`sensitivity`].
#[allow(clippy::too_many_arguments)]
pub fn allocate(
    ckpt: &Checkpoint,
    calib: Option<&Calibration>,
    layer_sensitivity: bool,
    specs: &[TensorSpec],
    stored_shape: &(dyn Fn(&TensorSpec) -> Vec<usize> + Sync),
    rows_of: &(dyn Fn(&TensorSpec) -> Option<Vec<usize>> + Sync),
    candidates: &(dyn Fn(&TensorSpec) -> Vec<DType> + Sync),
    budget: u64,
    fixed_bytes: u64,
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Plan> {
    let targets: Vec<&TensorSpec> = specs.iter().filter(|s| allocatable(s.role)).collect();
    // errors[t][c], bytes[t][c]
    let estimate = |s: &&TensorSpec| -> Result<Estimate> {
        let cands = candidates(s);
        if cands.is_empty() {
            return Err(ConvertError::Option(format!(
                "no candidate types for {}",
                s.kpk
            )));
        }
        let shape: Vec<u64> = stored_shape(s).iter().map(|&d| d as u64).collect();
        let numel: f64 = shape.iter().product::<u64>() as f64;
        let rows = rows_of(s);
        let importance = match calib {
            Some(c) => c.importance(s)?,
            None => None,
        };
        let sens = if layer_sensitivity {
            sensitivity(calib, s)
        } else {
            1.0
        };
        let mut errs = Vec::new();
        let mut sizes = Vec::new();
        for &d in &cands {
            let e = if d.is_quantized() {
                sample_error(ckpt, s, rows.as_deref(), d, importance)?
            } else {
                0.0
            };
            errs.push(e * numel * sens);
            sizes.push(d.storage_bytes(&shape).unwrap_or(u64::MAX));
        }
        ckpt.release(&s.hf);
        Ok((errs, sizes, cands))
    };
    let mut table: Vec<Result<Estimate>> = Vec::with_capacity(targets.len());
    for chunk in targets.chunks(4 * rayon::current_num_threads()) {
        table.extend(chunk.par_iter().map(estimate).collect::<Vec<_>>());
        if !progress(table.len(), targets.len()) {
            return Err(ConvertError::Cancelled);
        }
    }
    // Per tensor, the candidates in order of size, keeping only those that
    // are smaller or more accurate than every cheaper one.
    let table: Vec<Vec<(u64, f64, DType)>> = table
        .into_iter()
        .map(|r| {
            r.map(|(errs, sizes, cands)| {
                let mut opts: Vec<(u64, f64, DType)> = sizes
                    .into_iter()
                    .zip(errs)
                    .zip(cands)
                    .map(|((b, e), d)| (b, e, d))
                    .collect();
                opts.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
                let mut kept: Vec<(u64, f64, DType)> = Vec::new();
                for o in opts {
                    if kept.last().is_none_or(|k| o.1 < k.1) {
                        kept.push(o);
                    }
                }
                kept
            })
        })
        .collect::<Result<_>>()?;
    let mut pick = vec![0usize; targets.len()];
    let mut used: u64 = fixed_bytes + table.iter().map(|o| o[0].0).sum::<u64>();
    if used > budget {
        return Err(ConvertError::Option(format!(
            "even the smallest types give {used} bytes, over the budget of {budget}: \
             trim the vocabulary (--keep-vocab) or drop layers (--drop-llm-layers)"
        )));
    }
    loop {
        let mut best: Option<(f64, usize, usize)> = None;
        for (t, opts) in table.iter().enumerate() {
            let (b0, e0, _) = opts[pick[t]];
            for (c, &(b, e, _)) in opts.iter().enumerate().skip(pick[t] + 1) {
                let extra = b - b0;
                if used + extra > budget {
                    continue;
                }
                let ratio = (e0 - e) / extra.max(1) as f64;
                if best.is_none_or(|x| ratio > x.0) {
                    best = Some((ratio, t, c));
                }
            }
        }
        let Some((_, t, c)) = best else { break };
        used += table[t][c].0 - table[t][pick[t]].0;
        pick[t] = c;
    }
    let choices = targets
        .iter()
        .zip(&pick)
        .zip(&table)
        .map(|((s, &c), opts)| {
            let numel: f64 = stored_shape(s).iter().product::<usize>() as f64;
            let (bytes, err, dtype) = opts[c];
            let sens = if layer_sensitivity {
                sensitivity(calib, s)
            } else {
                1.0
            };
            Choice {
                kpk: s.kpk.clone(),
                dtype,
                bytes,
                rel_err: err / (numel.max(1.0) * sens),
                sensitivity: sens,
            }
        })
        .collect();
    Ok(Plan {
        choices,
        budget,
        fixed_bytes,
        weight_bytes: used - fixed_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Component;

    #[test]
    fn default_candidates_keep_floors() {
        let hp = crate::synth::qwen2_audio_7b(2, 2);
        let specs = crate::mapping::tensors(&hp, &[0, 1], &[0, 1]);
        let mut seen = [false; 4];
        for s in specs.iter().filter(|s| allocatable(s.role)) {
            let c = default_candidates(s);
            assert!(!c.is_empty(), "{}", s.kpk);
            // Cheapest first, as in CANDIDATES.
            assert!(CANDIDATES.ends_with(&c), "{}: {c:?}", s.kpk);
            match (s.role, s.component) {
                (Role::Embedding | Role::LmHead, _) => {
                    assert_eq!(c[0], DType::Q2K, "{}", s.kpk);
                    seen[0] = true;
                }
                (_, Component::Projector) => {
                    assert_eq!(c[0], DType::Q8_0, "{}", s.kpk);
                    seen[1] = true;
                }
                (_, Component::AudioEncoder) => {
                    assert_eq!(c[0], DType::Q4K, "{}", s.kpk);
                    seen[2] = true;
                }
                _ => {
                    assert_eq!(c, CANDIDATES.to_vec(), "{}", s.kpk);
                    seen[3] = true;
                }
            }
        }
        assert_eq!(seen, [true; 4]);
    }
}
