//! The Qwen2 decoder (`modeling_qwen2.py`): token embeddings, pre-RMSNorm
//! blocks with rotary attention (q/k/v biases, grouped or plain KV heads) and a
//! SwiGLU MLP, a final RMSNorm and an untied lm_head.
use kompakt_format::KpkFile;

use crate::calib::Stack;
use crate::config::LlmConfig;
use crate::error::{Result, RuntimeError};
use crate::kv_cache::KvCache;
use crate::ops::{self, Rope};
use crate::taps::Taps;
use crate::weights::{Linear, Matrix, Norm};

struct DecoderLayer {
    attn_norm: Norm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: Norm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// Weights of the language model.
pub struct Decoder {
    cfg: LlmConfig,
    embed: Matrix,
    layers: Vec<DecoderLayer>,
    norm: Norm,
    lm_head: Matrix,
    rope: Rope,
}

/// Positions per micro-batch of [`Decoder::prefill`] (llama.cpp's default
/// `n_ubatch`): 512 rows are still a large mat-mat (the weights are
/// streamed once per 512 positions), and bound a 7B decoder layer's
/// activations to a few tens of MB. Measured against 256 and one pass in
/// `docs/notes/2026-11-29-full-size-bins.md`.
pub const PREFILL_CHUNK: usize = 512;

/// Which rows of a forward pass need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    None,
    Last,
    All,
}

impl Decoder {
    pub fn load(file: &KpkFile, cfg: &LlmConfig) -> Result<Decoder> {
        let (h, q, kv, f) = (cfg.hidden_size, cfg.q_dim(), cfg.kv_dim(), cfg.ffn_dim);
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = format!("llm.layers.{i}");
            layers.push(DecoderLayer {
                attn_norm: Norm::load(file, &format!("{p}.attn_norm"), h, false)?,
                q: Linear::load(file, &format!("{p}.attn.q"), q, h, true)?,
                k: Linear::load(file, &format!("{p}.attn.k"), kv, h, true)?,
                v: Linear::load(file, &format!("{p}.attn.v"), kv, h, true)?,
                o: Linear::load(file, &format!("{p}.attn.o"), h, q, false)?,
                ffn_norm: Norm::load(file, &format!("{p}.ffn_norm"), h, false)?,
                gate: Linear::load(file, &format!("{p}.mlp.gate"), f, h, false)?,
                up: Linear::load(file, &format!("{p}.mlp.up"), f, h, false)?,
                down: Linear::load(file, &format!("{p}.mlp.down"), h, f, false)?,
            });
        }
        Ok(Decoder {
            cfg: cfg.clone(),
            embed: Matrix::load(file, "llm.embed.weight", cfg.vocab_size, h)?,
            layers,
            norm: Norm::load(file, "llm.norm", h, false)?,
            lm_head: Matrix::load(file, "llm.lm_head.weight", cfg.vocab_size, h)?,
            rope: Rope::new(cfg.head_dim, cfg.rope_theta),
        })
    }

    pub fn config(&self) -> &LlmConfig {
        &self.cfg
    }

    /// Embeddings of vocabulary rows `rows` (`[n][hidden]`).
    pub fn embed(&self, file: &KpkFile, rows: &[u32]) -> Result<Vec<f32>> {
        let h = self.cfg.hidden_size;
        let w = self.embed.view(file)?;
        let mut out = vec![0.0f32; rows.len() * h];
        for (&r, o) in rows.iter().zip(out.chunks_mut(h)) {
            if r as usize >= self.cfg.vocab_size {
                return Err(RuntimeError::InvalidArgument(format!(
                    "token row {r} is outside the vocabulary of {}",
                    self.cfg.vocab_size
                )));
            }
            kompakt_kernels::dequantize_row(&w, r as usize, o);
        }
        Ok(out)
    }

    /// [`Decoder::forward`] over a prompt of `n` positions in micro-batches
    /// of at most `chunk` positions (llama.cpp's `n_ubatch`; the sessions
    /// use [`PREFILL_CHUNK`]): a layer's activations then scale with the
    /// chunk, not with the prompt (a 30 s clip is ~790 positions), while
    /// each chunk is still a wide mat-mat. The result equals one pass up to
    /// summation order. When `taps` record whole tensors (parity tests) the
    /// prompt runs in one pass, so that each record covers every position.
    #[allow(clippy::too_many_arguments)]
    pub fn prefill(
        &self,
        file: &KpkFile,
        x: Vec<f32>,
        n: usize,
        cache: &mut KvCache,
        logits: Logits,
        taps: &mut Taps,
        chunk: usize,
    ) -> Result<Vec<f32>> {
        let chunk = chunk.max(1);
        if n <= chunk || taps.is_enabled() {
            return self.forward(file, x, n, cache, logits, taps);
        }
        let h = self.cfg.hidden_size;
        let mut out = Vec::new();
        for start in (0..n).step_by(chunk) {
            let len = chunk.min(n - start);
            let want = match logits {
                Logits::All => Logits::All,
                Logits::Last if start + len == n => Logits::Last,
                _ => Logits::None,
            };
            let part = x[start * h..(start + len) * h].to_vec();
            out.extend(self.forward(file, part, len, cache, want, taps)?);
        }
        Ok(out)
    }

    /// Runs `n` new positions (embeddings `x`, `[n][hidden]`) after the
    /// tokens already in `cache`, appending their keys and values. Returns
    /// the logits asked for (`[rows][vocab]`).
    pub fn forward(
        &self,
        file: &KpkFile,
        mut x: Vec<f32>,
        n: usize,
        cache: &mut KvCache,
        logits: Logits,
        taps: &mut Taps,
    ) -> Result<Vec<f32>> {
        let cfg = &self.cfg;
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let p0 = cache.len();
        if p0 + n > cfg.max_position_embeddings {
            return Err(RuntimeError::ContextOverflow {
                needed: p0 + n,
                limit: cfg.max_position_embeddings,
            });
        }
        let positions: Vec<usize> = (p0..p0 + n).collect();
        let heads = ops::Heads {
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            hd,
            scale: (hd as f32).powf(-0.5),
        };
        let mut hbuf = vec![0.0f32; n * h];
        for (i, layer) in self.layers.iter().enumerate() {
            let h_in = taps.block_input(&x);
            ops::rms_norm_into(
                &x,
                &mut hbuf,
                h,
                layer.attn_norm.w.get(file),
                cfg.rms_norm_eps,
            );
            taps.record_input(
                &[&layer.q.w.name, &layer.k.w.name, &layer.v.w.name],
                &hbuf,
                n,
            );
            let mut q = layer.q.forward(file, &hbuf, n)?;
            let mut k = layer.k.forward(file, &hbuf, n)?;
            let v = layer.v.forward(file, &hbuf, n)?;
            self.rope.apply(&mut q, cfg.n_heads, &positions);
            self.rope.apply(&mut k, cfg.n_kv_heads, &positions);
            cache.append(i, &k, &v);
            let mut a = vec![0.0f32; n * cfg.q_dim()];
            {
                let segs = cache.segments(i);
                ops::attention(&q, &segs, heads, &|qi| p0 + qi + 1, &mut a);
            }
            taps.record_input(&[&layer.o.w.name], &a, n);
            let o = layer.o.forward(file, &a, n)?;
            ops::add_in_place(&mut x, &o);

            ops::rms_norm_into(
                &x,
                &mut hbuf,
                h,
                layer.ffn_norm.w.get(file),
                cfg.rms_norm_eps,
            );
            taps.record_input(&[&layer.gate.w.name, &layer.up.w.name], &hbuf, n);
            let mut g = layer.gate.forward(file, &hbuf, n)?;
            let u = layer.up.forward(file, &hbuf, n)?;
            ops::silu_mul(&mut g, &u);
            taps.record_input(&[&layer.down.w.name], &g, n);
            let d = layer.down.forward(file, &g, n)?;
            ops::add_in_place(&mut x, &d);
            taps.record(|| format!("llm.layers.{i}"), &x, &[n, h]);
            taps.record_block(Stack::Llm, i, h_in, &x, h);
        }
        cache.commit(n);

        let rows = match logits {
            Logits::None => return Ok(Vec::new()),
            Logits::Last => n - 1..n,
            Logits::All => 0..n,
        };
        let m = rows.len();
        let mut normed = vec![0.0f32; m * h];
        ops::rms_norm_into(
            &x[rows.start * h..rows.end * h],
            &mut normed,
            h,
            self.norm.w.get(file),
            cfg.rms_norm_eps,
        );
        taps.record_input(&[&self.lm_head.name], &normed, m);
        let mut out = vec![0.0f32; m * cfg.vocab_size];
        self.lm_head.matmul(file, &normed, m, &mut out)?;
        Ok(out)
    }
}
