//! Calibration statistics recorded during a forward pass (see
//! `kompakt calibrate`): per linear layer, the sum of squared inputs per
//! input channel and the number of input rows (llama.cpp's imatrix: the
//! importance of channel `j` is `sum x_j^2 / count`); per block, ShortGPT's
//! block influence `BI = 1 - mean over tokens of cos(h_in, h_out)`.
//!
//! Recording only reads activations, so numerics are unchanged; when no
//! collector is installed in [`crate::taps::Taps`] nothing is computed.
use std::collections::BTreeMap;

/// Per-input-channel sums of squares of one linear layer's input.
#[derive(Clone, Debug, Default)]
pub struct ChannelStats {
    /// `sum over rows of x[j]^2`, per input channel `j`.
    pub sum_sq: Vec<f64>,
    /// Rows (tokens or frames) accumulated.
    pub count: u64,
}

impl ChannelStats {
    /// Mean of squares per channel (`sum_sq / count`; zeros without rows).
    pub fn mean(&self) -> Vec<f32> {
        let n = self.count.max(1) as f64;
        self.sum_sq.iter().map(|&s| (s / n) as f32).collect()
    }
}

/// Block-influence accumulator of one block.
#[derive(Clone, Copy, Debug, Default)]
pub struct Influence {
    /// `sum over tokens of 1 - cos(h_in, h_out)`.
    pub sum: f64,
    pub count: u64,
}

impl Influence {
    /// `1 - mean cos` (0 without tokens).
    pub fn value(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// The statistics of one calibration run.
#[derive(Clone, Debug, Default)]
pub struct Calibration {
    /// Weight name (e.g. `llm.layers.3.attn.q.weight`) -> input statistics.
    pub inputs: BTreeMap<String, ChannelStats>,
    /// Block influence per decoder layer of the model (index = layer in the file).
    pub llm_blocks: Vec<Influence>,
    /// Block influence per audio encoder layer of the model.
    pub audio_blocks: Vec<Influence>,
}

/// Which stack a block belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    Llm,
    Audio,
}

impl Calibration {
    /// Adds `n` rows of `x` (`[n][cols]`) as the input of every weight in
    /// `names` (layers that share one input: q/k/v, gate/up). The squares
    /// are computed once.
    pub fn add_input(&mut self, names: &[&str], x: &[f32], n: usize) {
        if names.is_empty() || n == 0 {
            return;
        }
        let cols = x.len() / n;
        let mut sums = vec![0.0f64; cols];
        for row in x.chunks_exact(cols) {
            for (s, &v) in sums.iter_mut().zip(row) {
                *s += (v as f64) * (v as f64);
            }
        }
        for name in names {
            let e = self.inputs.entry((*name).to_string()).or_default();
            if e.sum_sq.len() != cols {
                e.sum_sq = vec![0.0; cols];
                e.count = 0;
            }
            for (a, b) in e.sum_sq.iter_mut().zip(&sums) {
                *a += b;
            }
            e.count += n as u64;
        }
    }

    /// Adds the tokens of one pass through block `layer` of `stack`:
    /// `h_in` and `h_out` are `[n][d]` hidden states before and after it.
    pub fn add_block(&mut self, stack: Stack, layer: usize, h_in: &[f32], h_out: &[f32], d: usize) {
        let blocks = match stack {
            Stack::Llm => &mut self.llm_blocks,
            Stack::Audio => &mut self.audio_blocks,
        };
        if blocks.len() <= layer {
            blocks.resize(layer + 1, Influence::default());
        }
        let b = &mut blocks[layer];
        for (a, c) in h_in.chunks_exact(d).zip(h_out.chunks_exact(d)) {
            let (mut ab, mut aa, mut cc) = (0.0f64, 0.0f64, 0.0f64);
            for (&x, &y) in a.iter().zip(c) {
                ab += x as f64 * y as f64;
                aa += x as f64 * x as f64;
                cc += y as f64 * y as f64;
            }
            let den = (aa * cc).sqrt();
            let cos = if den > 0.0 { ab / den } else { 1.0 };
            b.sum += 1.0 - cos;
            b.count += 1;
        }
    }

    /// Merges another run's statistics into this one.
    pub fn merge(&mut self, other: &Calibration) {
        for (name, s) in &other.inputs {
            let e = self.inputs.entry(name.clone()).or_default();
            if e.sum_sq.len() != s.sum_sq.len() {
                e.sum_sq = vec![0.0; s.sum_sq.len()];
                e.count = 0;
            }
            for (a, b) in e.sum_sq.iter_mut().zip(&s.sum_sq) {
                *a += b;
            }
            e.count += s.count;
        }
        for (mine, theirs) in [
            (&mut self.llm_blocks, &other.llm_blocks),
            (&mut self.audio_blocks, &other.audio_blocks),
        ] {
            if mine.len() < theirs.len() {
                mine.resize(theirs.len(), Influence::default());
            }
            for (a, b) in mine.iter_mut().zip(theirs) {
                a.sum += b.sum;
                a.count += b.count;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_inputs_and_influence() {
        let mut c = Calibration::default();
        c.add_input(&["a", "b"], &[1.0, 2.0, 3.0, 4.0], 2);
        assert_eq!(c.inputs["a"].mean(), vec![5.0, 10.0]);
        assert_eq!(c.inputs["b"].count, 2);
        c.add_block(
            Stack::Llm,
            1,
            &[1.0, 0.0, 1.0, 0.0],
            &[1.0, 0.0, 0.0, 1.0],
            2,
        );
        assert_eq!(c.llm_blocks.len(), 2);
        assert!((c.llm_blocks[1].value() - 0.5).abs() < 1e-12);
        assert_eq!(c.llm_blocks[0].count, 0);
    }
}
