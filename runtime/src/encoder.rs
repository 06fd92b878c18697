//! The Qwen2-Audio audio tower: a Whisper encoder (two convolutions, sinusoid-
//! free learned positions, pre-LayerNorm blocks) followed by an average pool and
//! a final LayerNorm, then the projector into the decoder's width.
//!
//! Follows `modeling_qwen2_audio.py` (transformers 5.x). Padded frames are
//! masked as keys in every layer there, and only the pooled rows of real audio
//! reach the decoder; so only the first `feat_len = (L - 1) / 2 + 1` conv
//! positions are run through the layers here, which gives the same rows while
//! costing time in proportion to the audio, not to the 30 s window.
use kompakt_audio::LogMel;
use kompakt_format::KpkFile;

use crate::calib::Stack;
use crate::config::AudioConfig;
use crate::error::{Result, RuntimeError};
use crate::ops;
use crate::taps::Taps;
use crate::weights::{Linear, Matrix, Norm, Vector};

struct EncoderLayer {
    attn_norm: Norm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: Norm,
    fc1: Linear,
    fc2: Linear,
}

/// Weights of the audio tower and projector.
pub struct AudioEncoder {
    cfg: AudioConfig,
    conv1: Matrix,
    conv1_b: Vector,
    conv2: Matrix,
    conv2_b: Vector,
    pos_embed: Vector,
    layers: Vec<EncoderLayer>,
    norm: Norm,
    projector: Linear,
}

/// Lengths derived from the number of valid mel frames, as
/// `_get_feat_extract_output_lengths`.
pub fn output_lengths(valid_frames: usize) -> (usize, usize) {
    let l = valid_frames as i64;
    let feat = (l - 1).div_euclid(2) + 1;
    let out = (feat - 2).div_euclid(2) + 1;
    (feat.max(0) as usize, out.max(0) as usize)
}

impl AudioEncoder {
    pub fn load(file: &KpkFile, cfg: &AudioConfig, hidden: usize) -> Result<AudioEncoder> {
        let d = cfg.d_model;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = format!("audio.layers.{i}");
            layers.push(EncoderLayer {
                attn_norm: Norm::load(file, &format!("{p}.attn_norm"), d, true)?,
                q: Linear::load(file, &format!("{p}.attn.q"), d, d, true)?,
                k: Linear::load(file, &format!("{p}.attn.k"), d, d, false)?,
                v: Linear::load(file, &format!("{p}.attn.v"), d, d, true)?,
                o: Linear::load(file, &format!("{p}.attn.o"), d, d, true)?,
                ffn_norm: Norm::load(file, &format!("{p}.ffn_norm"), d, true)?,
                fc1: Linear::load(file, &format!("{p}.ffn.fc1"), cfg.ffn_dim, d, true)?,
                fc2: Linear::load(file, &format!("{p}.ffn.fc2"), d, cfg.ffn_dim, true)?,
            });
        }
        Ok(AudioEncoder {
            cfg: cfg.clone(),
            conv1: Matrix::load(file, "audio.conv1.weight", d, cfg.n_mels * 3)?,
            conv1_b: Vector::load(file, "audio.conv1.bias", &[d])?,
            conv2: Matrix::load(file, "audio.conv2.weight", d, d * 3)?,
            conv2_b: Vector::load(file, "audio.conv2.bias", &[d])?,
            pos_embed: Vector::load_f16_in_place(
                file,
                "audio.pos_embed",
                &[cfg.max_source_positions, d],
            )?,
            layers,
            norm: Norm::load(file, "audio.norm", d, true)?,
            projector: Linear::load(file, "projector", hidden, d, true)?,
        })
    }

    /// Runs the tower on one 30 s window of log-mel features; returns the
    /// pooled, normed encoder rows of real audio (`[n_out][d_model]`).
    pub fn encode(
        &self,
        file: &KpkFile,
        mel: &LogMel,
        taps: &mut Taps,
    ) -> Result<(Vec<f32>, usize)> {
        let cfg = &self.cfg;
        let (d, n_mels, n_frames) = (cfg.d_model, cfg.n_mels, cfg.n_frames());
        if mel.n_mels != n_mels || mel.n_frames != n_frames {
            return Err(RuntimeError::InvalidArgument(format!(
                "features are {} x {}, the encoder needs {n_mels} x {n_frames}",
                mel.n_mels, mel.n_frames
            )));
        }
        let (feat_len, n_out) = output_lengths(mel.valid_frames.min(n_frames));
        if n_out == 0 {
            return Err(RuntimeError::InvalidArgument(
                "the audio is too short: it yields no audio token (need at least 4 mel frames, 40 ms)".into(),
            ));
        }

        // conv1 (k=3, pad 1) on the frames conv2 needs, via im2col.
        let f1 = (2 * feat_len + 1).min(n_frames);
        let mut cols = vec![0.0f32; f1 * n_mels * 3];
        for (t, row) in cols.chunks_mut(n_mels * 3).enumerate() {
            for c in 0..n_mels {
                for k in 0..3 {
                    let src = t as i64 + k as i64 - 1;
                    if (0..n_frames as i64).contains(&src) {
                        row[c * 3 + k] = mel.data[c * n_frames + src as usize];
                    }
                }
            }
        }
        let mut h1 = vec![0.0f32; f1 * d];
        self.conv1.matmul(file, &cols, f1, &mut h1)?;
        ops::add_bias(&mut h1, self.conv1_b.get(file));
        ops::gelu(&mut h1);

        // conv2 (k=3, stride 2, pad 1).
        let mut cols = vec![0.0f32; feat_len * d * 3];
        for (t, row) in cols.chunks_mut(d * 3).enumerate() {
            for k in 0..3 {
                let src = 2 * t as i64 + k as i64 - 1;
                if src >= 0 && (src as usize) < f1 {
                    let s = &h1[src as usize * d..(src as usize + 1) * d];
                    for c in 0..d {
                        row[c * 3 + k] = s[c];
                    }
                }
            }
        }
        let mut x = vec![0.0f32; feat_len * d];
        self.conv2.matmul(file, &cols, feat_len, &mut x)?;
        ops::add_bias(&mut x, self.conv2_b.get(file));
        ops::gelu(&mut x);
        self.pos_embed.add_to(file, &mut x[..feat_len * d]);
        taps.record(|| "audio.embed".into(), &x, &[feat_len, d]);

        let t = feat_len;
        let hd = cfg.head_dim();
        let scale = (hd as f32).powf(-0.5);
        let mut h = vec![0.0f32; t * d];
        for (i, layer) in self.layers.iter().enumerate() {
            let h_in = taps.block_input(&x);
            ops::layer_norm_into(
                &x,
                &mut h,
                d,
                layer.attn_norm.w.get(file),
                layer.attn_norm.b.as_ref().map_or(&[][..], |b| b.get(file)),
                cfg.layer_norm_eps,
            );
            taps.record_input(&[&layer.q.w.name, &layer.k.w.name, &layer.v.w.name], &h, t);
            let mut q = layer.q.forward(file, &h, t)?;
            q.iter_mut().for_each(|v| *v *= scale);
            let k = layer.k.forward(file, &h, t)?;
            let v = layer.v.forward(file, &h, t)?;
            let mut a = vec![0.0f32; t * d];
            let seg = [ops::KvSegment {
                k: ops::KvRows::F32(&k),
                v: ops::KvRows::F32(&v),
            }];
            let heads = ops::Heads {
                n_heads: cfg.n_heads,
                n_kv_heads: cfg.n_heads,
                hd,
                scale: 1.0,
            };
            ops::attention(&q, &seg, heads, &|_| t, &mut a);
            taps.record_input(&[&layer.o.w.name], &a, t);
            let o = layer.o.forward(file, &a, t)?;
            ops::add_in_place(&mut x, &o);

            ops::layer_norm_into(
                &x,
                &mut h,
                d,
                layer.ffn_norm.w.get(file),
                layer.ffn_norm.b.as_ref().map_or(&[][..], |b| b.get(file)),
                cfg.layer_norm_eps,
            );
            taps.record_input(&[&layer.fc1.w.name], &h, t);
            let mut f = layer.fc1.forward(file, &h, t)?;
            ops::gelu(&mut f);
            taps.record_input(&[&layer.fc2.w.name], &f, t);
            let f = layer.fc2.forward(file, &f, t)?;
            ops::add_in_place(&mut x, &f);
            taps.record(|| format!("audio.layers.{i}"), &x, &[t, d]);
            taps.record_block(Stack::Audio, i, h_in, &x, d);
        }

        let mut pooled = vec![0.0f32; n_out * d];
        for (i, row) in pooled.chunks_mut(d).enumerate() {
            let (a, b) = (
                &x[2 * i * d..(2 * i + 1) * d],
                &x[(2 * i + 1) * d..(2 * i + 2) * d],
            );
            for c in 0..d {
                row[c] = (a[c] + b[c]) / 2.0;
            }
        }
        ops::layer_norm(
            &mut pooled,
            d,
            self.norm.w.get(file),
            self.norm.b.as_ref().map_or(&[][..], |b| b.get(file)),
            cfg.layer_norm_eps,
        );
        taps.record(|| "audio.out".into(), &pooled, &[n_out, d]);
        Ok((pooled, n_out))
    }

    /// Projects encoder rows into the decoder's embedding space.
    pub fn project(
        &self,
        file: &KpkFile,
        enc: &[f32],
        n: usize,
        taps: &mut Taps,
    ) -> Result<Vec<f32>> {
        taps.record_input(&[&self.projector.w.name], enc, n);
        let y = self.projector.forward(file, enc, n)?;
        taps.record(|| "projector.out".into(), &y, &[n, self.projector.w.rows]);
        Ok(y)
    }

    /// Logical parameters of the tower (excluding the projector).
    pub fn config(&self) -> &AudioConfig {
        &self.cfg
    }
}

#[cfg(test)]
mod tests {
    use super::output_lengths;

    #[test]
    fn output_lengths_match_transformers() {
        assert_eq!(output_lengths(3000), (1500, 750));
        assert_eq!(output_lengths(100), (50, 25));
        assert_eq!(output_lengths(1), (1, 0));
        assert_eq!(output_lengths(4), (2, 1));
        assert_eq!(output_lengths(0), (0, 0));
    }
}
