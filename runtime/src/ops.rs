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

/// Token-major rows (`[len][n_kv_heads * head_dim]`) of keys or values.
#[derive(Clone, Copy, Debug)]
pub enum KvRows<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
}

impl KvRows<'_> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            KvRows::F32(x) => x.len(),
            KvRows::F16(x) => x.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value `i` as f32.
    pub fn at(&self, i: usize) -> f32 {
        match self {
            KvRows::F32(x) => x[i],
            KvRows::F16(x) => x[i].to_f32(),
        }
    }

    /// `dot(q, self[at..at + q.len()])`.
    fn dot(&self, q: &[f32], at: usize) -> f32 {
        match self {
            KvRows::F32(x) => kompakt_kernels::dot(q, &x[at..at + q.len()]),
            KvRows::F16(x) => kompakt_kernels::dot_f16(q, &x[at..at + q.len()]),
        }
    }

    /// `out += a * self[at..at + out.len()]`.
    fn axpy(&self, a: f32, at: usize, out: &mut [f32]) {
        match self {
            KvRows::F32(x) => kompakt_kernels::axpy(a, &x[at..at + out.len()], out),
            KvRows::F16(x) => kompakt_kernels::axpy_f16(a, &x[at..at + out.len()], out),
        }
    }
}

/// Head layout of one attention call: `n_heads` query heads of width `hd`
/// over `n_kv_heads` key/value heads, scores scaled by `scale`.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub hd: usize,
    pub scale: f32,
}

impl Heads {
    /// Width of a query row (`[n_heads * hd]`).
    fn q_dim(&self) -> usize {
        self.n_heads * self.hd
    }

    /// Width of a key/value row (`[n_kv_heads * hd]`).
    fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.hd
    }

    /// KV head read by query head `h` (grouped heads).
    fn kv_head(&self, h: usize) -> usize {
        h / (self.n_heads / self.n_kv_heads)
    }

    /// Head `h` of query row `qi`.
    fn query<'a>(&self, q: &'a [f32], qi: usize, h: usize) -> &'a [f32] {
        let at = qi * self.q_dim() + h * self.hd;
        &q[at..at + self.hd]
    }
}

/// Keys and values of one attention context segment.
#[derive(Clone, Copy, Debug)]
pub struct KvSegment<'a> {
    pub k: KvRows<'a>,
    pub v: KvRows<'a>,
}

/// Scaled dot-product attention.
///
/// `q` is `[n_q][n_heads * hd]`; the context is the concatenation of
/// `segments`. Query `i` sees context positions `0..visible(i)`. Grouped KV
/// heads: query head `h` reads KV head `h / (n_heads / n_kv_heads)`.
///
/// Many queries (prefill, the audio encoder) go through
/// [`attention_transposed`]; a few (decoding) read the token-major context
/// directly, which needs no copy of it.
pub fn attention(
    q: &[f32],
    segments: &[KvSegment<'_>],
    heads: Heads,
    visible: &(dyn Fn(usize) -> usize + Sync),
    out: &mut [f32],
) {
    let n_q = out.len() / heads.q_dim().max(1);
    if n_q >= TRANSPOSED_MIN_QUERIES {
        attention_transposed(q, segments, heads, visible, out);
    } else {
        attention_rows(q, segments, heads, visible, out);
    }
}

/// Queries from which copying the context into head-major, dimension-major
/// form pays for itself.
const TRANSPOSED_MIN_QUERIES: usize = 8;

/// Few queries (decoding): per query, the context is split into ranges of
/// positions run in parallel, each read in token order (a position's keys or
/// values of all heads are one contiguous row). Pass 1 computes the scores of
/// every head at the range's positions and the range's maximum per head;
/// pass 2 takes `exp(score - max)` with the global maximum and accumulates
/// the values into the range's unnormalized output and sum per head; the
/// ranges' outputs are then added and divided by the total sum (the softmax
/// of [`softmax`], reassociated).
fn attention_rows(
    q: &[f32],
    segments: &[KvSegment<'_>],
    heads: Heads,
    visible: &(dyn Fn(usize) -> usize + Sync),
    out: &mut [f32],
) {
    let Heads {
        n_heads, hd, scale, ..
    } = heads;
    let (kv_dim, q_dim) = (heads.kv_dim(), heads.q_dim());
    let threads = rayon::current_num_threads().max(1);
    for (qi, o) in out.chunks_mut(q_dim).enumerate() {
        let n_vis = visible(qi);
        if n_vis == 0 {
            o.fill(0.0);
            continue;
        }
        let ranges = context_ranges(segments, kv_dim, n_vis, n_vis.div_ceil(4 * threads).max(32));
        // Pass 1: scores [position][head] and each range's maximum per head.
        let mut scores = vec![0f32; n_vis * n_heads];
        let mut maxes = vec![f32::NEG_INFINITY; ranges.len() * n_heads];
        let mut tasks = Vec::with_capacity(ranges.len());
        let mut rest = &mut scores[..];
        for r in &ranges {
            let (sc, tail) = rest.split_at_mut(r.len * n_heads);
            tasks.push((r, sc));
            rest = tail;
        }
        tasks
            .into_par_iter()
            .zip(maxes.par_chunks_mut(n_heads))
            .for_each(|((r, sc), mx)| {
                let k = segments[r.seg].k;
                for (j, row) in sc.chunks_mut(n_heads).enumerate() {
                    let at = (r.start + j) * kv_dim;
                    for (h, s) in row.iter_mut().enumerate() {
                        *s = k.dot(heads.query(q, qi, h), at + heads.kv_head(h) * hd) * scale;
                        mx[h] = mx[h].max(*s);
                    }
                }
            });
        let mut max = vec![f32::NEG_INFINITY; n_heads];
        for mx in maxes.chunks(n_heads) {
            for (m, &v) in max.iter_mut().zip(mx) {
                *m = m.max(v);
            }
        }
        // Pass 2: unnormalized outputs and sums per range.
        let mut parts = vec![0f32; ranges.len() * (q_dim + n_heads)];
        let scores = &scores;
        parts
            .par_chunks_mut(q_dim + n_heads)
            .zip(&ranges)
            .for_each(|(part, r)| {
                let v = segments[r.seg].v;
                let (acc, sums) = part.split_at_mut(q_dim);
                let sc = &scores[r.pos * n_heads..(r.pos + r.len) * n_heads];
                for (j, row) in sc.chunks(n_heads).enumerate() {
                    let at = (r.start + j) * kv_dim;
                    for (h, &s) in row.iter().enumerate() {
                        let e = (s - max[h]).exp();
                        sums[h] += e;
                        v.axpy(
                            e,
                            at + heads.kv_head(h) * hd,
                            &mut acc[h * hd..(h + 1) * hd],
                        );
                    }
                }
            });
        o.fill(0.0);
        let mut sum = vec![0f32; n_heads];
        for part in parts.chunks(q_dim + n_heads) {
            let (acc, sums) = part.split_at(q_dim);
            for (a, b) in o.iter_mut().zip(acc) {
                *a += b;
            }
            for (a, b) in sum.iter_mut().zip(sums) {
                *a += b;
            }
        }
        for (oh, s) in o.chunks_mut(hd).zip(&sum) {
            let inv = 1.0 / s;
            oh.iter_mut().for_each(|v| *v *= inv);
        }
    }
}

/// Positions `start..start + len` of segment `seg`, which are positions
/// `pos..pos + len` of the whole context.
#[derive(Clone, Copy, Debug)]
struct ContextRange {
    seg: usize,
    start: usize,
    pos: usize,
    len: usize,
}

/// The first `n_vis` context positions over `segments` in ranges of at most
/// `max_len` positions, none crossing a segment boundary.
fn context_ranges(
    segments: &[KvSegment<'_>],
    kv_dim: usize,
    n_vis: usize,
    max_len: usize,
) -> Vec<ContextRange> {
    let mut out = Vec::new();
    let mut remaining = n_vis;
    for (seg, s) in segments.iter().enumerate() {
        let len = (s.k.len() / kv_dim).min(remaining);
        let mut start = 0;
        while start < len {
            let n = max_len.min(len - start);
            let pos = n_vis - remaining + start;
            out.push(ContextRange {
                seg,
                start,
                pos,
                len: n,
            });
            start += n;
        }
        remaining -= len;
    }
    out
}

/// The context copied once per KV head into dimension-major rows
/// (`kt[d][token]`, `vt[d][token]`), then per (head, query) `hd` long
/// `axpy`s build the scores and `hd` long dots the output: vectors as long
/// as the context instead of `hd`, and a head's keys stay in cache while
/// all of its queries pass (work is split head-major).
fn attention_transposed(
    q: &[f32],
    segments: &[KvSegment<'_>],
    heads: Heads,
    visible: &(dyn Fn(usize) -> usize + Sync),
    out: &mut [f32],
) {
    let Heads {
        n_heads,
        n_kv_heads,
        hd,
        scale,
    } = heads;
    let kv_dim = heads.kv_dim();
    let q_dim = heads.q_dim();
    let n_q = out.len() / q_dim;
    let total: usize = segments.iter().map(|s| s.k.len() / kv_dim).sum();
    // [kv head][d][token] for keys and values.
    let mut kt = vec![0.0f32; n_kv_heads * hd * total];
    let mut vt = vec![0.0f32; n_kv_heads * hd * total];
    kt.par_chunks_mut(total.max(1))
        .zip(vt.par_chunks_mut(total.max(1)))
        .enumerate()
        .for_each(|(row, (kr, vr))| {
            let (kvh, d) = (row / hd, row % hd);
            let col = kvh * hd + d;
            let mut j0 = 0;
            for seg in segments {
                let len = seg.k.len() / kv_dim;
                for j in 0..len {
                    kr[j0 + j] = seg.k.at(j * kv_dim + col);
                    vr[j0 + j] = seg.v.at(j * kv_dim + col);
                }
                j0 += len;
            }
        });
    // Head-major results, scattered into `out` afterwards.
    let mut tmp = vec![0.0f32; n_heads * n_q * hd];
    tmp.par_chunks_mut(hd).enumerate().for_each_init(
        Vec::new,
        |scores: &mut Vec<f32>, (idx, o)| {
            let (h, qi) = (idx / n_q, idx % n_q);
            let (kvh, qv) = (heads.kv_head(h), heads.query(q, qi, h));
            let n_vis = visible(qi).min(total);
            let base = kvh * hd * total;
            scores.clear();
            scores.resize(n_vis, 0.0);
            for (d, &qd) in qv.iter().enumerate() {
                let k = &kt[base + d * total..base + d * total + n_vis];
                kompakt_kernels::axpy(qd * scale, k, scores);
            }
            softmax(scores);
            for (d, od) in o.iter_mut().enumerate() {
                let v = &vt[base + d * total..base + d * total + n_vis];
                *od = kompakt_kernels::dot(scores, v);
            }
        },
    );
    out.par_chunks_mut(q_dim).enumerate().for_each(|(qi, row)| {
        for (h, oh) in row.chunks_mut(hd).enumerate() {
            let src = (h * n_q + qi) * hd;
            oh.copy_from_slice(&tmp[src..src + hd]);
        }
    });
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
        let seg = [KvSegment {
            k: KvRows::F32(&k),
            v: KvRows::F32(&v),
        }];
        let heads = Heads {
            n_heads: 2,
            n_kv_heads: 1,
            hd: 2,
            scale: 1.0,
        };
        attention(&q, &seg, heads, &|_| 1, &mut out);
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

    #[test]
    fn transposed_attention_matches_row_attention() {
        // Two segments (prefix + own tokens), grouped heads, causal masks;
        // the second segment long enough that `attention_rows` splits it into
        // several position ranges (of at least 32).
        let (n_heads, n_kv, hd) = (4, 2, 8);
        let kv_dim = n_kv * hd;
        let mut seed = 7u32;
        let mut rnd = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                })
                .collect()
        };
        let (len_a, len_b, n_q) = (5, 130, 11);
        let (ka, va) = (rnd(len_a * kv_dim), rnd(len_a * kv_dim));
        let (kb, vb) = (rnd(len_b * kv_dim), rnd(len_b * kv_dim));
        let q = rnd(n_q * n_heads * hd);
        let hb: Vec<half::f16> = kb.iter().map(|&x| half::f16::from_f32(x)).collect();
        let hv: Vec<half::f16> = vb.iter().map(|&x| half::f16::from_f32(x)).collect();
        let segs = [
            KvSegment {
                k: KvRows::F32(&ka),
                v: KvRows::F32(&va),
            },
            KvSegment {
                k: KvRows::F16(&hb),
                v: KvRows::F16(&hv),
            },
        ];
        let visible = |i: usize| len_a + len_b - n_q + i + 1;
        let mut a = vec![0.0; n_q * n_heads * hd];
        let mut b = vec![0.0; n_q * n_heads * hd];
        let heads = Heads {
            n_heads,
            n_kv_heads: n_kv,
            hd,
            scale: 0.35,
        };
        attention_rows(&q, &segs, heads, &visible, &mut a);
        attention_transposed(&q, &segs, heads, &visible, &mut b);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
        // The first query sees 125 positions: its output differs from the last's.
        assert!(a[..hd] != a[(n_q - 1) * n_heads * hd..][..hd]);
    }
}
