//! Whisper log-mel features, the numpy path of transformers' `WhisperFeatureExtractor`
//! (`_np_extract_fbank_features` with `audio_utils.spectrogram` and `audio_utils.mel_filter_bank`,
//! transformers 5.24).
//!
//! The clip is zero-padded to `chunk_samples`, reflect-padded by `n_fft / 2` on both sides,
//! framed every `hop_length` samples under a periodic Hann window, transformed with a real FFT;
//! the power spectrum goes through the mel filterbank, then `log10(max(mel, 1e-10))`, a floor at
//! the global maximum minus 8 and `(x + 4) / 4`. The last STFT frame is dropped (3001 -> 3000).
//!
//! Precision: like the reference, the STFT runs in f64, its bins are rounded to f32 (numpy stores
//! them as complex64) before the power is taken in f64, the mel projection and the logarithm are
//! f64 and the result is rounded to f32 before the clamp and the affine map. This matches the
//! numpy path to one f32 ulp. When torch is installed, transformers takes its torch path instead
//! (float32 `torch.stft`), which differs from the numpy path, and so from this module, by up to
//! about 6e-5 in low-energy bins.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

use crate::AudioError;

/// Parameters of the log-mel front end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MelConfig {
    /// FFT size and window length in samples.
    pub n_fft: usize,
    /// Stride between frames in samples.
    pub hop_length: usize,
    /// Number of mel bins.
    pub n_mels: usize,
    /// Sample rate of the input in Hz.
    pub sample_rate: u32,
    /// Every clip is zero-padded to this many samples; longer clips are rejected.
    pub chunk_samples: usize,
}

impl MelConfig {
    /// Whisper's front end: n_fft 400, hop 160, 16 kHz, 30 s chunks (128 mels for
    /// Qwen2-Audio / Whisper-large-v3, 80 for the smaller Whispers).
    pub fn whisper(n_mels: usize) -> Self {
        Self {
            n_fft: 400,
            hop_length: 160,
            n_mels,
            sample_rate: 16000,
            chunk_samples: 480_000,
        }
    }

    /// Number of frequency bins, `n_fft / 2 + 1`.
    pub fn n_freq(&self) -> usize {
        self.n_fft / 2 + 1
    }

    /// Number of output frames: the STFT frames of a padded chunk minus the dropped last one.
    pub fn n_frames(&self) -> usize {
        let pad = self.n_fft / 2;
        match (self.chunk_samples + 2 * pad).checked_sub(self.n_fft) {
            Some(span) if self.hop_length > 0 => span / self.hop_length,
            _ => 0,
        }
    }
}

fn hz_to_mel_slaney(f: f64) -> f64 {
    let logstep = 27.0 / 6.4f64.ln();
    if f >= 1000.0 {
        15.0 + (f / 1000.0).ln() * logstep
    } else {
        3.0 * f / 200.0
    }
}

fn mel_to_hz_slaney(m: f64) -> f64 {
    let logstep = 6.4f64.ln() / 27.0;
    if m >= 15.0 {
        1000.0 * (logstep * (m - 15.0)).exp()
    } else {
        200.0 * m / 3.0
    }
}

/// `numpy.linspace(start, stop, num)` with its rounding: `i * step + start`, last = `stop`.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let div = num.saturating_sub(1).max(1) as f64;
    let step = (stop - start) / div;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if num > 1 {
        v[num - 1] = stop;
    }
    v
}

/// The Slaney-style mel filterbank of transformers' `mel_filter_bank(num_frequency_bins =
/// n_fft / 2 + 1, num_mel_filters = n_mels, min_frequency = fmin, max_frequency = fmax,
/// sampling_rate, norm = "slaney", mel_scale = "slaney")`, computed in f64 and rounded to f32.
///
/// Layout: `[n_fft / 2 + 1][n_mels]`, row-major.
pub fn mel_filter_bank(
    n_fft: usize,
    n_mels: usize,
    sample_rate: u32,
    fmin: f32,
    fmax: f32,
) -> Vec<f32> {
    let n_freq = n_fft / 2 + 1;
    let mel_freqs = linspace(
        hz_to_mel_slaney(f64::from(fmin)),
        hz_to_mel_slaney(f64::from(fmax)),
        n_mels + 2,
    );
    let filter_freqs: Vec<f64> = mel_freqs.into_iter().map(mel_to_hz_slaney).collect();
    let fft_freqs = linspace(0.0, f64::from(sample_rate / 2), n_freq);
    let mut out = vec![0.0f32; n_freq * n_mels];
    for (b, &ff) in fft_freqs.iter().enumerate() {
        for m in 0..n_mels {
            let down = -(filter_freqs[m] - ff) / (filter_freqs[m + 1] - filter_freqs[m]);
            let up = (filter_freqs[m + 2] - ff) / (filter_freqs[m + 2] - filter_freqs[m + 1]);
            let tri = 0.0f64.max(down.min(up));
            let enorm = 2.0 / (filter_freqs[m + 2] - filter_freqs[m]);
            out[b * n_mels + m] = (tri * enorm) as f32;
        }
    }
    out
}

/// Log-mel features of one clip.
#[derive(Debug, Clone, PartialEq)]
pub struct LogMel {
    /// `[n_mels][n_frames]`, row-major.
    pub data: Vec<f32>,
    pub n_mels: usize,
    /// Always `MelConfig::n_frames()` (3000 for Whisper).
    pub n_frames: usize,
    /// Frames covering real samples: the sum of transformers' `attention_mask`
    /// (`min(ceil(len / hop_length), n_frames)`).
    pub valid_frames: usize,
}

impl LogMel {
    /// The values of mel bin `m` over time.
    pub fn mel_row(&self, m: usize) -> &[f32] {
        &self.data[m * self.n_frames..(m + 1) * self.n_frames]
    }
}

/// One mel filter: its nonzero weights start at frequency bin `start`.
#[derive(Debug, Clone)]
struct SparseFilter {
    start: usize,
    weights: Vec<f64>,
}

/// Computes log-mel features; holds the filterbank, the window and the FFT plan.
/// Immutable after construction, so one instance can serve many threads.
#[derive(Clone)]
pub struct MelExtractor {
    cfg: MelConfig,
    filters: Vec<SparseFilter>,
    window: Vec<f64>,
    fft: Arc<dyn RealToComplex<f64>>,
}

impl std::fmt::Debug for MelExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelExtractor")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl MelExtractor {
    /// `filters` is laid out `[n_fft / 2 + 1][n_mels]` as [`mel_filter_bank`] returns it.
    pub fn new(cfg: MelConfig, filters: Vec<f32>) -> Result<Self, AudioError> {
        let bad = |msg: String| Err(AudioError::InvalidConfig(msg));
        if cfg.n_fft < 2 || cfg.hop_length == 0 || cfg.n_mels == 0 || cfg.sample_rate == 0 {
            return bad(format!(
                "{cfg:?}: n_fft >= 2 and a nonzero hop, n_mels and rate needed"
            ));
        }
        if cfg.chunk_samples <= cfg.n_fft / 2 {
            return bad(format!(
                "chunk_samples {} must exceed n_fft / 2 = {} for reflect padding",
                cfg.chunk_samples,
                cfg.n_fft / 2
            ));
        }
        if cfg.n_frames() == 0 {
            return bad(format!("{cfg:?} yields no frames"));
        }
        let n_freq = cfg.n_freq();
        if filters.len() != n_freq * cfg.n_mels {
            return bad(format!(
                "filterbank has {} values, expected {n_freq} x {} = {}",
                filters.len(),
                cfg.n_mels,
                n_freq * cfg.n_mels
            ));
        }
        if let Some(i) = filters.iter().position(|v| !v.is_finite()) {
            return bad(format!("filterbank value {i} is not finite"));
        }
        let sparse = (0..cfg.n_mels)
            .map(|m| {
                let col: Vec<f64> = (0..n_freq)
                    .map(|b| f64::from(filters[b * cfg.n_mels + m]))
                    .collect();
                let start = col.iter().position(|&w| w != 0.0).unwrap_or(0);
                let end = col.iter().rposition(|&w| w != 0.0).map_or(0, |e| e + 1);
                SparseFilter {
                    start,
                    weights: col[start..end.max(start)].to_vec(),
                }
            })
            .collect();
        let n = cfg.n_fft as f64;
        let window = (0..cfg.n_fft)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n).cos())
            .collect();
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(cfg.n_fft);
        Ok(Self {
            cfg,
            filters: sparse,
            window,
            fft,
        })
    }

    /// Convenience: Whisper's configuration with the filterbank computed by [`mel_filter_bank`].
    pub fn whisper(n_mels: usize) -> Self {
        let cfg = MelConfig::whisper(n_mels);
        let filters = mel_filter_bank(cfg.n_fft, n_mels, cfg.sample_rate, 0.0, 8000.0);
        match Self::new(cfg, filters) {
            Ok(m) => m,
            Err(e) => unreachable!("the Whisper configuration is valid: {e}"),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MelConfig {
        &self.cfg
    }

    /// Features of one clip of at most `chunk_samples` samples at `sample_rate`.
    pub fn compute(&self, samples_16k: &[f32]) -> Result<LogMel, AudioError> {
        let cfg = &self.cfg;
        let len = samples_16k.len();
        if len == 0 {
            return Err(AudioError::EmptyInput);
        }
        if len > cfg.chunk_samples {
            let rate = f64::from(cfg.sample_rate);
            return Err(AudioError::TooLong {
                samples: len,
                seconds: len as f64 / rate,
                limit_samples: cfg.chunk_samples,
                limit_s: cfg.chunk_samples as f64 / rate,
            });
        }
        let pad = cfg.n_fft / 2;
        let chunk = cfg.chunk_samples;
        let sample = |i: usize| samples_16k.get(i).map_or(0.0, |&v| f64::from(v));
        let padded: Vec<f64> = (0..chunk + 2 * pad)
            .map(|j| {
                if j < pad {
                    sample(pad - j)
                } else if j < pad + chunk {
                    sample(j - pad)
                } else {
                    sample(2 * chunk + pad - 2 - j)
                }
            })
            .collect();

        let n_frames = cfg.n_frames();
        let n_mels = cfg.n_mels;
        let mut data = vec![0.0f32; n_mels * n_frames];
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0.0f64; cfg.n_freq()];
        for t in 0..n_frames {
            let at = t * cfg.hop_length;
            let silent = padded[at..at + cfg.n_fft].iter().all(|&v| v == 0.0);
            if silent {
                power.fill(0.0);
            } else {
                for ((dst, &x), &w) in input
                    .iter_mut()
                    .zip(&padded[at..at + cfg.n_fft])
                    .zip(&self.window)
                {
                    *dst = x * w;
                }
                if let Err(e) =
                    self.fft
                        .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
                {
                    unreachable!("buffers come from the plan: {e}");
                }
                for (p, c) in power.iter_mut().zip(&spectrum) {
                    let re = f64::from(c.re as f32);
                    let im = f64::from(c.im as f32);
                    *p = re * re + im * im;
                }
            }
            for (m, filt) in self.filters.iter().enumerate() {
                let bins = &power[filt.start..filt.start + filt.weights.len()];
                let mel: f64 = filt.weights.iter().zip(bins).map(|(w, p)| w * p).sum();
                data[m * n_frames + t] = mel.max(1e-10).log10() as f32;
            }
        }
        let max = data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let floor = max - 8.0;
        for v in &mut data {
            *v = (v.max(floor) + 4.0) / 4.0;
        }
        Ok(LogMel {
            data,
            n_mels,
            n_frames,
            valid_frames: len.div_ceil(cfg.hop_length).min(n_frames),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whisper_shapes() {
        let cfg = MelConfig::whisper(128);
        assert_eq!(cfg.n_frames(), 3000);
        assert_eq!(cfg.n_freq(), 201);
        let fb = mel_filter_bank(400, 128, 16000, 0.0, 8000.0);
        assert_eq!(fb.len(), 201 * 128);
    }

    #[test]
    fn rejects_bad_filters_and_lengths() {
        let cfg = MelConfig::whisper(80);
        assert!(MelExtractor::new(cfg, vec![0.0; 10]).is_err());
        let mut fb = mel_filter_bank(400, 80, 16000, 0.0, 8000.0);
        fb[3] = f32::NAN;
        assert!(MelExtractor::new(cfg, fb).is_err());
        let ex = MelExtractor::whisper(80);
        assert!(matches!(ex.compute(&[]), Err(AudioError::EmptyInput)));
        let err = ex.compute(&vec![0.1; 480_001]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("30.00 s") && msg.contains("limit is 30 s"),
            "{msg}"
        );
    }

    #[test]
    fn silence_is_constant_and_valid_frames_round_up() {
        let ex = MelExtractor::whisper(80);
        let out = ex.compute(&[0.0; 161]).unwrap();
        assert_eq!(out.valid_frames, 2);
        assert!(out.data.iter().all(|&v| v == -1.5));
        let out = ex.compute(&vec![0.0; 480_000]).unwrap();
        assert_eq!(out.valid_frames, 3000);
    }

    #[test]
    fn extractor_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<MelExtractor>();
    }
}
