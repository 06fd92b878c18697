//! Recordings longer than the model's 30 s window: where to cut them, the
//! same way for every caller (the `kompakt translate` CLI, the C API and
//! Python), so that they translate a long recording identically.
//!
//! A recording of at most [`MAX_CLIP_S`] is one segment. A longer one is
//! segmented at pauses by the energy VAD ([`crate::vad`]); each segment's
//! start and length are rounded to the millisecond (what a segment list
//! saved with `kompakt translate --segments-out` holds, so that it reads
//! back to the same samples), and its samples are frames
//! `round(offset * rate) .. + round(duration * rate)` of the recording.
//! A segment still over 30 s is cut again at its quietest points when it is
//! translated ([`crate::vad::split_long`]).

use std::path::Path;

use crate::vad::{self, Span, VadConfig};
use crate::AudioError;

/// Longest clip the model takes in one window, in seconds.
pub const MAX_CLIP_S: f64 = 30.0;

/// How far a segment may run past the end of its recording and be clamped
/// instead of rejected, in seconds.
pub const END_TOLERANCE_S: f64 = 0.05;

/// One segment: start and length in seconds (millisecond values).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cut {
    pub offset_s: f64,
    pub duration_s: f64,
}

/// Sample rate and length of a recording.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WavInfo {
    pub rate: u32,
    pub frames: u64,
}

impl WavInfo {
    pub fn duration_s(&self) -> f64 {
        self.frames as f64 / f64::from(self.rate)
    }
}

/// Reads only the header of a WAV file.
pub fn wav_info(path: &Path) -> Result<WavInfo, AudioError> {
    match hound::WavReader::open(path) {
        Ok(r) if r.spec().sample_rate > 0 => Ok(WavInfo {
            rate: r.spec().sample_rate,
            frames: u64::from(r.duration()),
        }),
        other => {
            // The crate's own reader names the problem better than hound.
            crate::read_wav_range(path, 0.0, 1e-3)?;
            let name = path.display().to_string();
            Err(match other {
                Err(e) => AudioError::Corrupt {
                    name,
                    reason: format!("cannot read the WAV header: {e}"),
                },
                _ => AudioError::ZeroSampleRate { name },
            })
        }
    }
}

/// Seconds as a segment list writes them: at most three decimals, no
/// trailing zeros (`1.5`, `0`, `12.346`).
pub fn seconds(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// Rounds seconds to the millisecond as [`seconds`] writes them.
pub fn to_ms(x: f64) -> f64 {
    seconds(x).parse().unwrap_or(x)
}

/// Checks a range against a recording; returns the duration to read
/// (clamped when the range ends at most [`END_TOLERANCE_S`] past the end).
pub fn check_range(info: &WavInfo, offset: f64, duration: f64) -> Result<f64, String> {
    if !(offset.is_finite() && duration.is_finite()) || offset < 0.0 || duration <= 0.0 {
        return Err(format!(
            "invalid range: offset {offset} s, duration {duration} s (need offset >= 0, \
             duration > 0)"
        ));
    }
    let rate = f64::from(info.rate);
    let first = (offset * rate).round();
    let count = (duration * rate).round();
    let total = info.frames as f64;
    if first + count <= total {
        if count < 1.0 {
            return Err(format!("duration {duration} s is shorter than one sample"));
        }
        return Ok(duration);
    }
    let end = offset + duration;
    if first < total && end - info.duration_s() <= END_TOLERANCE_S && total - first >= 1.0 {
        return Ok((total - first) / rate);
    }
    Err(format!(
        "the segment ends at {end:.3} s, past the end of the WAV ({:.3} s)",
        info.duration_s()
    ))
}

/// The millisecond cuts of VAD spans over a recording (empty ones dropped,
/// the last clamped to the end).
pub fn cuts(spans: &[Span], info: &WavInfo) -> Vec<Cut> {
    spans
        .iter()
        .filter_map(|span| {
            let offset = to_ms(span.start_s);
            let end = (span.end_s * 1000.0).floor() / 1000.0;
            let duration = to_ms(end - offset);
            (duration > 0.0).then(|| Cut {
                offset_s: offset,
                duration_s: check_range(info, offset, duration).unwrap_or(duration),
            })
        })
        .collect()
}

/// The segments of a recording held in memory (`samples` at `rate` Hz):
/// one for a recording of at most [`MAX_CLIP_S`], VAD cuts otherwise.
pub fn segment_samples(samples: &[f32], rate: u32, cfg: &VadConfig) -> Vec<Cut> {
    let info = WavInfo {
        rate,
        frames: samples.len() as u64,
    };
    if info.duration_s() <= MAX_CLIP_S {
        return vec![Cut {
            offset_s: 0.0,
            duration_s: info.duration_s(),
        }];
    }
    let flen = vad::frame_len(rate, cfg.frame_s);
    let energies = vad::frame_energies_db(samples, flen);
    let frame_s = flen as f64 / f64::from(rate);
    cuts(
        &vad::detect_from_energies(&energies, frame_s, info.duration_s(), cfg),
        &info,
    )
}

/// The samples of `cut` in a recording held in memory (frames
/// `round(offset * rate) ..`, as [`crate::read_wav_range`] reads them).
pub fn cut_samples<'a>(samples: &'a [f32], rate: u32, cut: &Cut) -> &'a [f32] {
    let rate = f64::from(rate);
    let first = ((cut.offset_s * rate).round() as usize).min(samples.len());
    let count = (cut.duration_s * rate).round() as usize;
    &samples[first..(first + count).min(samples.len())]
}

/// Frame energies (dB) of a whole WAV file, read a minute at a time, and
/// the frame length in seconds.
pub fn file_energies(
    path: &Path,
    info: &WavInfo,
    cfg: &VadConfig,
) -> Result<(Vec<f32>, f64), AudioError> {
    let flen = vad::frame_len(info.rate, cfg.frame_s);
    let chunk = flen as u64 * 6000;
    let rate = f64::from(info.rate);
    let mut energies = Vec::new();
    let mut first = 0u64;
    while first < info.frames {
        let n = chunk.min(info.frames - first);
        let audio = crate::read_wav_range(path, first as f64 / rate, n as f64 / rate)?;
        energies.extend(vad::frame_energies_db(&audio.samples, flen));
        first += n;
    }
    Ok((energies, flen as f64 / rate))
}

/// The VAD cuts of a WAV file, reading it a minute at a time (for a file
/// of any length; [`segment_samples`] gives the same cuts for its samples).
pub fn segment_file(path: &Path, info: &WavInfo, cfg: &VadConfig) -> Result<Vec<Cut>, AudioError> {
    let (energies, frame_s) = file_energies(path, info, cfg)?;
    Ok(cuts(
        &vad::detect_from_energies(&energies, frame_s, info.duration_s(), cfg),
        info,
    ))
}

/// The samples of `cut` of a WAV file as 16 kHz mono.
pub fn read_cut_16k(path: &Path, cut: &Cut) -> Result<Vec<f32>, AudioError> {
    let a = crate::read_wav_range(path, cut.offset_s, cut.duration_s)?;
    Ok(crate::resample(
        &a.samples,
        a.sample_rate,
        crate::TARGET_SAMPLE_RATE,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millisecond_values() {
        assert_eq!(seconds(1.5), "1.5");
        assert_eq!(seconds(0.0), "0");
        assert_eq!(seconds(12.3456), "12.346");
        assert_eq!(to_ms(0.12349), 0.123);
    }

    #[test]
    fn short_recordings_are_one_segment_and_long_ones_are_cut_at_pauses() {
        let rate = 16_000;
        let tone = |n: usize| (0..n).map(|i| 0.3 * (i as f32 * 0.05).sin());
        // 10 s of tone and 1 s of silence, four times: 44 s.
        let mut pcm = Vec::new();
        for _ in 0..4 {
            pcm.extend(tone(10 * rate));
            pcm.extend(std::iter::repeat_n(0.0f32, rate));
        }
        let short = segment_samples(&pcm[..20 * rate], rate as u32, &VadConfig::default());
        assert_eq!(short.len(), 1);
        assert_eq!(short[0].duration_s, 20.0);
        let cuts = segment_samples(&pcm, rate as u32, &VadConfig::default());
        assert!(cuts.len() >= 2, "{cuts:?}");
        for c in &cuts {
            assert!(c.duration_s <= MAX_CLIP_S && c.duration_s > 1.0, "{c:?}");
            assert_eq!(to_ms(c.offset_s), c.offset_s);
            let s = cut_samples(&pcm, rate as u32, c);
            assert_eq!(s.len(), (c.duration_s * rate as f64).round() as usize);
        }
        for w in cuts.windows(2) {
            assert!(w[0].offset_s + w[0].duration_s <= w[1].offset_s + 1e-9);
        }
    }
}
