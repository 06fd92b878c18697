//! Element-wise and row-wise operations of the forward pass: norms,
//! activations, rotary embeddings and attention. Matrix products go through
//! `kompakt-kernels`.
use rayon::prelude::*;

/// `x[r] = (x[r] - mean) / sqrt(var + eps) * w + b` for every row of width `d`
/// (PyTorch `nn.LayerNorm`, biased variance).
pub fn layer_norm(x: &mut [f32], d: usize, w: &[f32], b: &[f32], eps: f32) {
    x.par_chunks_mut(d).for_each(|row| {
        let mean = row.iter().sum::<f32>() / d as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(w).zip(b) {
            *v = (*v - mean) * inv * w + b;
        }
    });
}

/// Same as [`layer_norm`] but writes into `out`, leaving `x` intact.
pub fn layer_norm_into(x: &[f32], out: &mut [f32], d: usize, w: &[f32], b: &[f32], eps: f32) {
    out.copy_from_slice(x);
    layer_norm(out, d, w, b, eps);
}

/// `out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w` (Qwen2 `RMSNorm`).
pub fn rms_norm_into(x: &[f32], out: &mut [f32], d: usize, w: &[f32], eps: f32) {
    out.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .for_each(|(o, row)| {
            let ms = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
            let inv = 1.0 / (ms + eps).sqrt();
            for ((o, v), w) in o.iter_mut().zip(row).zip(w) {
                *o = w * (v * inv);
            }
        });
}

/// Exact GELU, `x * 0.5 * (1 + erf(x / sqrt 2))`, as PyTorch's default.
pub fn gelu(x: &mut [f32]) {
    x.par_chunks_mut(4096).for_each(|c| {
        for v in c {
            *v = *v * 0.5 * (1.0 + libm::erff(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    });
}

/// `gate = silu(gate) * up`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    gate.par_chunks_mut(4096)
        .zip(up.par_chunks(4096))
        .for_each(|(g, u)| {
            for (g, u) in g.iter_mut().zip(u) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
        });
}

/// Adds `b` to every row of `x`.
pub fn add_bias(x: &mut [f32], b: &[f32]) {
    let d = b.len();
    x.par_chunks_mut(d).for_each(|row| {
        for (v, b) in row.iter_mut().zip(b) {
            *v += b;
        }
    });
}

/// `x += y`.
pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(4096)
        .zip(y.par_chunks(4096))
        .for_each(|(x, y)| {
            for (x, y) in x.iter_mut().zip(y) {
                *x += y;
            }
        });
}

/// In-place softmax of one row.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Rotary position embedding tables (Qwen2 / Llama "rotate half" layout).
pub struct Rope {
    inv_freq: Vec<f32>,
    head_dim: usize,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f64) -> Rope {
        // As transformers: inv_freq = 1 / theta^(arange(0, d, 2) / d), in f32.
        let inv_freq = (0..head_dim / 2)
            .map(|i| {
                let exponent = (2 * i) as f32 / head_dim as f32;
                1.0f32 / (theta as f32).powf(exponent)
            })
            .collect();
        Rope { inv_freq, head_dim }
    }

    /// Rotates every head of each row of `x` (`[n][n_heads * head_dim]`);
    /// row `i` is at position `positions[i]`.
    pub fn apply(&self, x: &mut [f32], n_heads: usize, positions: &[usize]) {
        let hd = self.head_dim;
        let half = hd / 2;
        x.par_chunks_mut(n_heads * hd)
            .zip(positions.par_iter())
            .for_each(|(row, &pos)| {
                let (cos, sin): (Vec<f32>, Vec<f32>) = self
                    .inv_freq
                    .iter()
                    .map(|f| {
                        let a = pos as f32 * f;
                        (a.cos(), a.sin())
                    })
                    .unzip();
                for head in row.chunks_mut(hd) {
                    for i in 0..half {
                        let (a, b) = (head[i], head[i + half]);
                        head[i] = a * cos[i] - b * sin[i];
                        head[i + half] = b * cos[i] + a * sin[i];
                    }
                }
            });
    }
}

/// Keys and values of one attention context segment, token-major
/// (`[len][n_kv_heads * head_dim]`).
#[derive(Clone, Copy)]
pub struct KvSegment<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
}

/// Scaled dot-product attention.
///
/// `q` is `[n_q][n_heads * hd]`; the context is the concatenation of
/// `segments`. Query `i` sees context positions `0..visible(i)`. Grouped KV
/// heads: query head `h` reads KV head `h / (n_heads / n_kv_heads)`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    segments: &[KvSegment<'_>],
    n_heads: usize,
    n_kv_heads: usize,
    hd: usize,
    scale: f32,
    visible: &(dyn Fn(usize) -> usize + Sync),
    out: &mut [f32],
) {
    let kv_dim = n_kv_heads * hd;
    let group = n_heads / n_kv_heads;
    let q_dim = n_heads * hd;
    out.par_chunks_mut(hd).enumerate().for_each_init(
        Vec::new,
        |scores: &mut Vec<f32>, (idx, o)| {
            let (qi, h) = (idx / n_heads, idx % n_heads);
            let kvh = h / group;
            let qv = &q[qi * q_dim + h * hd..qi * q_dim + (h + 1) * hd];
            let n_vis = visible(qi);
            scores.clear();
            let mut remaining = n_vis;
            for seg in segments {
                let len = (seg.k.len() / kv_dim).min(remaining);
                for j in 0..len {
                    let k = &seg.k[j * kv_dim + kvh * hd..j * kv_dim + (kvh + 1) * hd];
                    scores.push(kompakt_kernels::dot(qv, k) * scale);
                }
                remaining -= len;
            }
            softmax(scores);
            o.fill(0.0);
            let mut j0 = 0;
            for seg in segments {
                let len = (seg.v.len() / kv_dim).min(scores.len() - j0);
                for j in 0..len {
                    let v = &seg.v[j * kv_dim + kvh * hd..j * kv_dim + (kvh + 1) * hd];
                    kompakt_kernels::axpy(scores[j0 + j], v, o);
                }
                j0 += len;
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_is_shift_invariant() {
        let mut a = vec![1.0, 2.0, 3.0];
        let mut b = vec![101.0, 102.0, 103.0];
        softmax(&mut a);
        softmax(&mut b);
        assert!((a.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-6);
        }
    }

    #[test]
    fn attention_with_one_key_returns_its_value() {
        let q = vec![0.3f32; 4];
        let k = vec![1.0f32; 4];
        let v = vec![1.0, 2.0, 3.0, 4.0];
        let mut out = vec![0.0; 4];
        let seg = [KvSegment { k: &k, v: &v }];
        attention(&q, &seg, 2, 1, 2, 1.0, &|_| 1, &mut out);
        assert_eq!(out, vec![1.0, 2.0, 1.0, 2.0]);
    }

    #[test]
    fn gelu_matches_known_values() {
        let mut x = vec![0.0, 1.0, -1.0];
        gelu(&mut x);
        assert!(x[0].abs() < 1e-7);
        assert!((x[1] - 0.841_344_7).abs() < 1e-6);
        assert!((x[2] + 0.158_655_3).abs() < 1e-6);
    }

    #[test]
    fn rope_at_position_zero_is_identity() {
        let rope = Rope::new(4, 10000.0);
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        rope.apply(&mut x, 1, &[0]);
        assert_eq!(x, vec![1.0, 2.0, 3.0, 4.0]);
    }
}
