//! Band-limited resampling, the algorithm of torchaudio's `torchaudio.functional.resample` with
//! `resampling_method="sinc_interp_hann"`, `lowpass_filter_width=6`, `rolloff=0.99`.
//!
//! With `g = gcd(from, to)`, `o = from / g` and `n = to / g`, the kernel has `n` phases of
//! `2 * width + o` taps, `width = ceil(6 * o / base)`, `base = 0.99 * min(o, n)`; output sample
//! `f * n + p` is the dot product of phase `p` with the zero-padded input starting at `f * o`,
//! and the first `ceil(n * len / o)` outputs are kept.
//!
//! Precision: the kernel is computed in f64 with the reference's operation order and the dot
//! products accumulate in f64; the result is rounded to f32 once. Each phase stores only the taps
//! whose time argument lies inside the window (`|t| < 6`, plus one clipped tap at each end);
//! every dropped tap of the reference is `sinc(6π) · cos²(π/2) · base/o ≈ 1e-49`.

use std::f64::consts::PI;

const LOWPASS_FILTER_WIDTH: f64 = 6.0;
const ROLLOFF: f64 = 0.99;
const FRAMES_PER_BLOCK: usize = 2048;

/// A precomputed polyphase kernel for one rational ratio; reusable across signals.
#[derive(Debug, Clone)]
pub struct Resampler {
    from_hz: u32,
    to_hz: u32,
    /// Input samples consumed per frame (`from / gcd`).
    o: usize,
    /// Output samples produced per frame (`to / gcd`).
    n: usize,
    /// Zero padding before the signal, in samples.
    width: usize,
    /// Per phase: first tap index `k` within the reference's `2 * width + o` taps.
    starts: Vec<usize>,
    /// Per phase: `offsets[p]..offsets[p + 1]` indexes `taps`.
    offsets: Vec<usize>,
    taps: Vec<f64>,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Resampler {
    /// Builds the kernel for `from_hz -> to_hz`.
    ///
    /// # Panics
    /// If either rate is zero.
    pub fn new(from_hz: u32, to_hz: u32) -> Self {
        assert!(
            from_hz > 0 && to_hz > 0,
            "resample: sample rates must be positive (got {from_hz} -> {to_hz})"
        );
        let g = gcd(u64::from(from_hz), u64::from(to_hz));
        let o = (u64::from(from_hz) / g) as usize;
        let n = (u64::from(to_hz) / g) as usize;
        let base = o.min(n) as f64 * ROLLOFF;
        let width = (LOWPASS_FILTER_WIDTH * o as f64 / base).ceil() as usize;
        let n_taps = 2 * width + o;
        let (of, nf, wf) = (o as f64, n as f64, width as f64);
        let radius = LOWPASS_FILTER_WIDTH * of / base;
        let scale = base / of;

        let mut starts = Vec::with_capacity(n);
        let mut offsets = Vec::with_capacity(n + 1);
        let mut taps = Vec::new();
        offsets.push(0);
        for p in 0..n {
            let center = wf + p as f64 * of / nf;
            let lo = ((center - radius).floor() - 1.0).max(0.0) as usize;
            let hi = (((center + radius).ceil() + 1.0) as usize).min(n_taps - 1);
            starts.push(lo);
            for k in lo..=hi {
                let t = (-(p as f64) / nf + (k as f64 - wf) / of) * base;
                let t = t.clamp(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH);
                let c = (t * PI / LOWPASS_FILTER_WIDTH / 2.0).cos();
                let window = c * c;
                let t = t * PI;
                let sinc = if t == 0.0 { 1.0 } else { t.sin() / t };
                taps.push(sinc * window * scale);
            }
            offsets.push(taps.len());
        }
        Self {
            from_hz,
            to_hz,
            o,
            n,
            width,
            starts,
            offsets,
            taps,
        }
    }

    /// Input rate in Hz.
    pub fn from_hz(&self) -> u32 {
        self.from_hz
    }

    /// Output rate in Hz.
    pub fn to_hz(&self) -> u32 {
        self.to_hz
    }

    /// Number of output samples for `input_len` input samples: `ceil(n * len / o)`.
    pub fn output_len(&self, input_len: usize) -> usize {
        (self.n as u128 * input_len as u128).div_ceil(self.o as u128) as usize
    }

    /// Resamples `x`; the identity ratio returns a copy.
    pub fn process(&self, x: &[f32]) -> Vec<f32> {
        if self.from_hz == self.to_hz {
            return x.to_vec();
        }
        let out_len = self.output_len(x.len());
        let mut out = Vec::with_capacity(out_len);
        let n_frames = out_len.div_ceil(self.n);
        let n_taps = 2 * self.width + self.o;
        let mut buf = Vec::new();
        let mut f0 = 0;
        while f0 < n_frames {
            let f1 = (f0 + FRAMES_PER_BLOCK).min(n_frames);
            let pad_lo = f0 * self.o;
            let pad_hi = (f1 - 1) * self.o + n_taps;
            buf.clear();
            buf.extend((pad_lo..pad_hi).map(|i| {
                i.checked_sub(self.width)
                    .and_then(|j| x.get(j))
                    .map_or(0.0, |&v| f64::from(v))
            }));
            for f in f0..f1 {
                let frame = &buf[(f - f0) * self.o..];
                for p in 0..self.n {
                    if out.len() == out_len {
                        break;
                    }
                    let taps = &self.taps[self.offsets[p]..self.offsets[p + 1]];
                    let start = self.starts[p];
                    out.push(dot(taps, &frame[start..start + taps.len()]) as f32);
                }
            }
            f0 = f1;
        }
        out
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (a4, a_rest) = a.split_at(a.len() / 4 * 4);
    let (b4, b_rest) = b.split_at(a4.len());
    for (ca, cb) in a4.chunks_exact(4).zip(b4.chunks_exact(4)) {
        for i in 0..4 {
            acc[i] += ca[i] * cb[i];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (x, y) in a_rest.iter().zip(b_rest) {
        s += x * y;
    }
    s
}

/// Resamples `x` from `from_hz` to `to_hz` (see the module docs); the identity ratio is a copy.
///
/// # Panics
/// If either rate is zero.
pub fn resample(x: &[f32], from_hz: u32, to_hz: u32) -> Vec<f32> {
    if from_hz == to_hz {
        return x.to_vec();
    }
    Resampler::new(from_hz, to_hz).process(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snr_db(y: &[f32], freq: f64, rate: f64, margin: usize) -> f64 {
        let (mut sig, mut err) = (0.0, 0.0);
        for (i, &v) in y.iter().enumerate().take(y.len() - margin).skip(margin) {
            let r = (2.0 * PI * freq * i as f64 / rate).sin();
            sig += r * r;
            err += (f64::from(v) - r).powi(2);
        }
        10.0 * (sig / err).log10()
    }

    fn sine(freq: f64, rate: u32, len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (2.0 * PI * freq * i as f64 / f64::from(rate)).sin() as f32)
            .collect()
    }

    #[test]
    fn sine_1k_snr_above_60_db() {
        for rate in [44100u32, 48000, 22050, 8000] {
            let y = resample(&sine(1000.0, rate, rate as usize), rate, 16000);
            assert_eq!(y.len(), 16000);
            let snr = snr_db(&y, 1000.0, 16000.0, 200);
            assert!(snr > 60.0, "{rate} Hz: SNR {snr:.1} dB");
        }
    }

    #[test]
    fn tone_10k_at_48k_is_attenuated_40_db() {
        let y = resample(&sine(10000.0, 48000, 48000), 48000, 16000);
        let inner = &y[200..y.len() - 200];
        let power = inner.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / inner.len() as f64;
        let atten = 10.0 * (power / 0.5).log10();
        assert!(atten < -40.0, "attenuation {atten:.1} dB");
    }

    #[test]
    fn identity_and_lengths() {
        let x = sine(440.0, 16000, 1234);
        assert_eq!(resample(&x, 16000, 16000), x);
        assert!(resample(&[], 44100, 16000).is_empty());
        assert_eq!(resample(&[0.5], 44100, 16000).len(), 1);
        assert_eq!(resample(&x, 16000, 48000).len(), 3 * 1234);
        let r = Resampler::new(44100, 16000);
        assert_eq!(r.output_len(44101), 16001);
    }

    #[test]
    fn coprime_rates_build_a_small_kernel() {
        let r = Resampler::new(44101, 16000);
        assert!(r.taps.len() < 16000 * 40);
        let y = r.process(&sine(1000.0, 44101, 44101));
        assert_eq!(y.len(), 16000);
        assert!(snr_db(&y, 1000.0, 16000.0, 200) > 60.0);
    }
}
