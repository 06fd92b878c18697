//! Energy-based voice activity detection: cuts long recordings into segments the model can take
//! (at most 30 s), at pauses.
//!
//! The signal is cut into non-overlapping frames of [`VadConfig::frame_s`] and each frame's
//! energy is measured in dB (`10 log10(mean(x²))`). A frame is speech when its energy is above a
//! threshold set relative to the recording itself:
//!
//! ```text
//! reference = the `ref_percentile` quantile of frame energies      (the loudest frames)
//! floor     = the `floor_percentile` quantile of frame energies    (adaptive noise floor)
//! threshold = max(min(max(reference - rel_threshold_db, floor + noise_margin_db),
//!                      reference - 6 dB),                  # the loudest frames are speech
//!                  abs_floor_db)                           # digital silence never is
//! ```
//!
//! Speech runs separated by less than `min_silence_s` of silence are joined, runs shorter than
//! `min_speech_s` are dropped as clicks, segments shorter than `min_segment_s` are merged into
//! the nearer neighbour (when the pause between them is under `max_merge_gap_s` and the result
//! fits), segments longer than `max_segment_s` are split recursively at the quietest point
//! (lowest energy smoothed over `smooth_s`) in the middle half, and each segment is padded by
//! `pad_s` on both sides without overlapping its neighbours.

use std::ops::Range;

/// Parameters of [`detect`]; see the module documentation for how they interact.
#[derive(Clone, Debug, PartialEq)]
pub struct VadConfig {
    /// Analysis frame length in seconds (default 0.01).
    pub frame_s: f64,
    /// Frames more than this many dB below the reference level are silence (default 35).
    pub rel_threshold_db: f32,
    /// Quantile of frame energies taken as the reference "loud speech" level (default 0.95).
    pub ref_percentile: f32,
    /// Quantile of frame energies taken as the noise floor (default 0.10).
    pub floor_percentile: f32,
    /// Frames less than this many dB above the noise floor are silence (default 10).
    pub noise_margin_db: f32,
    /// Frames below this level in dBFS are always silence (default -60).
    pub abs_floor_db: f32,
    /// Pauses shorter than this do not end a segment, in seconds (default 0.3).
    pub min_silence_s: f64,
    /// Speech runs shorter than this are dropped as clicks, in seconds (default 0.1).
    pub min_speech_s: f64,
    /// Segments shorter than this are merged into a neighbour when possible (default 1.0 s).
    pub min_segment_s: f64,
    /// Longest pause a short segment is merged across, in seconds (default 1.0).
    pub max_merge_gap_s: f64,
    /// Longest segment, in seconds; longer speech is split at its quietest point (default 28,
    /// under the model's 30 s window even after padding).
    pub max_segment_s: f64,
    /// Window over which energies are averaged when looking for the quietest split point, in
    /// seconds (default 0.05).
    pub smooth_s: f64,
    /// Silence kept before and after each segment, in seconds (default 0.15).
    pub pad_s: f64,
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig {
            frame_s: 0.01,
            rel_threshold_db: 35.0,
            ref_percentile: 0.95,
            floor_percentile: 0.10,
            noise_margin_db: 10.0,
            abs_floor_db: -60.0,
            min_silence_s: 0.3,
            min_speech_s: 0.1,
            min_segment_s: 1.0,
            max_merge_gap_s: 1.0,
            max_segment_s: 28.0,
            smooth_s: 0.05,
            pad_s: 0.15,
        }
    }
}

/// A detected segment, in seconds from the start of the signal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span {
    pub start_s: f64,
    pub end_s: f64,
}

impl Span {
    /// Length in seconds.
    pub fn duration_s(&self) -> f64 {
        self.end_s - self.start_s
    }
}

/// Energy of an all-zero frame, in dB.
const SILENT_DB: f32 = -120.0;

/// Frame length in samples for `frame_s` seconds at `sample_rate` (at least 1).
pub fn frame_len(sample_rate: u32, frame_s: f64) -> usize {
    ((f64::from(sample_rate) * frame_s).round() as usize).max(1)
}

/// Energy in dB of each non-overlapping frame of `frame_len` samples (the last, shorter frame
/// included). Feeding a long signal in chunks whose lengths are multiples of `frame_len` gives
/// the same energies as one call.
pub fn frame_energies_db(samples: &[f32], frame_len: usize) -> Vec<f32> {
    samples
        .chunks(frame_len.max(1))
        .map(|f| {
            let e = f.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>() / f.len() as f64;
            if e > 0.0 {
                ((10.0 * e.log10()) as f32).max(SILENT_DB)
            } else {
                SILENT_DB
            }
        })
        .collect()
}

fn quantile(sorted: &[f32], q: f32) -> f32 {
    if sorted.is_empty() {
        return SILENT_DB;
    }
    let i = ((sorted.len() - 1) as f32 * q.clamp(0.0, 1.0)).round() as usize;
    sorted[i]
}

/// The speech/silence threshold in dB for these frame energies.
pub fn threshold_db(energies_db: &[f32], cfg: &VadConfig) -> f32 {
    let mut sorted = energies_db.to_vec();
    sorted.sort_by(f32::total_cmp);
    let reference = quantile(&sorted, cfg.ref_percentile);
    let floor = quantile(&sorted, cfg.floor_percentile);
    (reference - cfg.rel_threshold_db)
        .max(floor + cfg.noise_margin_db)
        .min(reference - 6.0)
        .max(cfg.abs_floor_db)
}

/// Energies averaged over a centred window of `width` frames.
fn smooth(energies_db: &[f32], width: usize) -> Vec<f32> {
    let half = width / 2;
    let n = energies_db.len();
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0.0f64);
    for &e in energies_db {
        prefix.push(prefix.last().unwrap() + f64::from(e));
    }
    (0..n)
        .map(|i| {
            let lo = i.saturating_sub(half);
            let hi = (i + half + 1).min(n);
            ((prefix[hi] - prefix[lo]) / (hi - lo) as f64) as f32
        })
        .collect()
}

/// The frame in `range` with the lowest smoothed energy, searching the middle half of the
/// range; ties go to the frame nearest the middle.
pub fn quietest_frame(smoothed_db: &[f32], range: Range<usize>) -> usize {
    let len = range.end - range.start;
    let mid = range.start + len / 2;
    let lo = range.start + len / 4;
    let hi = (range.end - len / 4).max(lo + 1).min(range.end);
    let mut best = mid.clamp(lo, hi.saturating_sub(1).max(lo));
    for i in lo..hi {
        let (e, b) = (smoothed_db[i], smoothed_db[best]);
        if e < b || (e == b && i.abs_diff(mid) < best.abs_diff(mid)) {
            best = i;
        }
    }
    best
}

/// Splits the frame range recursively at the quietest frame until every piece has at most
/// `max_frames` frames.
fn split_range(
    smoothed_db: &[f32],
    range: Range<usize>,
    max_frames: usize,
    out: &mut Vec<Range<usize>>,
) {
    let len = range.end - range.start;
    if len <= max_frames.max(1) || len < 4 {
        out.push(range);
        return;
    }
    let cut = quietest_frame(smoothed_db, range.clone());
    split_range(smoothed_db, range.start..cut, max_frames, out);
    split_range(smoothed_db, cut..range.end, max_frames, out);
}

/// Splits a clip of 16 kHz (or any rate) samples into consecutive pieces of at most `max_s`
/// seconds, cutting at the quietest point near the middle, recursively. The pieces cover the
/// whole clip; a clip of at most `max_s` seconds is returned whole.
pub fn split_long(
    samples: &[f32],
    sample_rate: u32,
    max_s: f64,
    cfg: &VadConfig,
) -> Vec<Range<usize>> {
    let max_samples = (max_s * f64::from(sample_rate)).floor() as usize;
    if samples.len() <= max_samples {
        return std::iter::once(0..samples.len()).collect();
    }
    let flen = frame_len(sample_rate, cfg.frame_s);
    let energies = frame_energies_db(samples, flen);
    let smoothed = smooth(&energies, smooth_frames(cfg));
    let mut frames = Vec::new();
    split_range(
        &smoothed,
        0..energies.len(),
        max_samples / flen,
        &mut frames,
    );
    frames
        .into_iter()
        .map(|r| (r.start * flen).min(samples.len())..(r.end * flen).min(samples.len()))
        .filter(|r| !r.is_empty())
        .collect()
}

fn smooth_frames(cfg: &VadConfig) -> usize {
    ((cfg.smooth_s / cfg.frame_s).round() as usize).max(1)
}

/// Segments a signal; see the module documentation.
pub fn detect(samples: &[f32], sample_rate: u32, cfg: &VadConfig) -> Vec<Span> {
    let flen = frame_len(sample_rate, cfg.frame_s);
    let energies = frame_energies_db(samples, flen);
    let frame_s = flen as f64 / f64::from(sample_rate);
    let total_s = samples.len() as f64 / f64::from(sample_rate);
    detect_from_energies(&energies, frame_s, total_s, cfg)
}

/// Segments a signal given its frame energies ([`frame_energies_db`]), the exact frame length
/// in seconds and the signal's duration; lets a caller measure a long file chunk by chunk.
pub fn detect_from_energies(
    energies_db: &[f32],
    frame_s: f64,
    total_s: f64,
    cfg: &VadConfig,
) -> Vec<Span> {
    let n = energies_db.len();
    if n == 0 {
        return Vec::new();
    }
    let thr = threshold_db(energies_db, cfg);
    let frames = |s: f64| (s / frame_s).round() as usize;

    // Speech runs.
    let mut runs: Vec<Range<usize>> = Vec::new();
    let mut start = None;
    for (i, &e) in energies_db.iter().enumerate() {
        match (e > thr, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                runs.push(s..i);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push(s..n);
    }

    // Bridge short pauses.
    let min_gap = frames(cfg.min_silence_s);
    let mut joined: Vec<Range<usize>> = Vec::new();
    for r in runs {
        match joined.last_mut() {
            Some(last) if r.start - last.end < min_gap => last.end = r.end,
            _ => joined.push(r),
        }
    }

    // Drop clicks.
    let min_speech = frames(cfg.min_speech_s);
    joined.retain(|r| r.end - r.start >= min_speech.max(1));

    // Merge short segments into the nearer neighbour.
    let min_seg = frames(cfg.min_segment_s);
    let max_gap = frames(cfg.max_merge_gap_s);
    let max_seg = frames(cfg.max_segment_s - 2.0 * cfg.pad_s).max(1);
    let mut i = 0;
    while i < joined.len() {
        let r = joined[i].clone();
        if r.end - r.start >= min_seg {
            i += 1;
            continue;
        }
        let gap_before = (i > 0).then(|| r.start - joined[i - 1].end);
        let gap_after = (i + 1 < joined.len()).then(|| joined[i + 1].start - r.end);
        let fits = |a: &Range<usize>, b: &Range<usize>| b.end - a.start <= max_seg;
        let before_ok = gap_before.filter(|&g| g <= max_gap && fits(&joined[i - 1], &r));
        let after_ok = gap_after.filter(|&g| g <= max_gap && fits(&r, &joined[i + 1]));
        match (before_ok, after_ok) {
            (Some(b), Some(a)) if a < b => {
                joined[i + 1].start = r.start;
                joined.remove(i);
            }
            (Some(_), _) => {
                joined[i - 1].end = r.end;
                joined.remove(i);
                i -= 1;
            }
            (None, Some(_)) => {
                joined[i + 1].start = r.start;
                joined.remove(i);
            }
            (None, None) => i += 1,
        }
    }

    // Split long segments at their quietest frame.
    let smoothed = smooth(energies_db, smooth_frames(cfg));
    let mut pieces = Vec::new();
    for r in joined {
        split_range(&smoothed, r, max_seg, &mut pieces);
    }

    // Pad without overlapping neighbours (split points inside speech get no padding).
    let pad = cfg.pad_s;
    let mut spans: Vec<Span> = Vec::with_capacity(pieces.len());
    for (k, r) in pieces.iter().enumerate() {
        let start = r.start as f64 * frame_s;
        let end = (r.end as f64 * frame_s).min(total_s);
        let lo = if k == 0 {
            0.0
        } else {
            (pieces[k - 1].end as f64 * frame_s + start) / 2.0
        };
        let hi = match pieces.get(k + 1) {
            Some(next) => (end + next.start as f64 * frame_s) / 2.0,
            None => total_s,
        };
        spans.push(Span {
            start_s: (start - pad).max(lo).max(0.0),
            end_s: (end + pad).min(hi).min(total_s),
        });
    }
    spans.retain(|s| s.end_s > s.start_s);
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    const SR: u32 = 16_000;

    /// Concatenates (seconds, amplitude) pieces of a 440 Hz tone; amplitude 0 is silence.
    fn signal(parts: &[(f64, f32)], noise: f32) -> Vec<f32> {
        let mut out = Vec::new();
        let mut seed = 0x1234_5678u32;
        for &(secs, amp) in parts {
            let n = (secs * f64::from(SR)).round() as usize;
            for _ in 0..n {
                let t = out.len() as f32 / SR as f32;
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let r = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                out.push(amp * (2.0 * std::f32::consts::PI * 440.0 * t).sin() + noise * r);
            }
        }
        out
    }

    fn no_pad() -> VadConfig {
        VadConfig {
            pad_s: 0.0,
            ..VadConfig::default()
        }
    }

    fn assert_spans(got: &[Span], want: &[(f64, f64)]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g.start_s - w.0).abs() <= 0.02 && (g.end_s - w.1).abs() <= 0.02,
                "{got:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn tones_separated_by_silence() {
        let x = signal(
            &[
                (1.0, 0.0),
                (2.0, 0.5),
                (0.8, 0.0),
                (1.5, 0.3),
                (0.5, 0.0),
                (3.0, 0.5),
                (1.0, 0.0),
            ],
            0.0,
        );
        let spans = detect(&x, SR, &no_pad());
        assert_spans(&spans, &[(1.0, 3.0), (3.8, 5.3), (5.8, 8.8)]);
        // Default padding: 0.15 s on each side, within the signal.
        let padded = detect(&x, SR, &VadConfig::default());
        assert_spans(&padded, &[(0.85, 3.15), (3.65, 5.45), (5.65, 8.95)]);
    }

    #[test]
    fn adaptive_floor_with_background_noise() {
        // Noise at about -45 dBFS, tones at about -9 dBFS; also a quieter second tone.
        let x = signal(
            &[(0.7, 0.0), (1.2, 0.5), (0.6, 0.0), (1.4, 0.05), (0.9, 0.0)],
            0.02,
        );
        let spans = detect(&x, SR, &no_pad());
        assert_spans(&spans, &[(0.7, 1.9), (2.5, 3.9)]);
    }

    #[test]
    fn short_pauses_are_bridged_and_clicks_dropped() {
        let x = signal(
            &[
                (0.5, 0.0),
                (1.0, 0.5),
                (0.2, 0.0), // shorter than min_silence_s: bridged
                (1.0, 0.5),
                (1.0, 0.0),
                (0.05, 0.5), // a click, shorter than min_speech_s
                (2.0, 0.0),
                (1.2, 0.5),
                (0.5, 0.0),
            ],
            0.0,
        );
        let spans = detect(&x, SR, &no_pad());
        assert_spans(&spans, &[(0.5, 2.7), (5.75, 6.95)]);
    }

    #[test]
    fn short_segments_merge_into_the_nearer_neighbour() {
        let x = signal(
            &[
                (0.5, 0.0),
                (2.0, 0.5),
                (1.0, 0.0),
                (0.4, 0.5), // under min_segment_s; 0.5 s to the next, 1.0 s to the previous
                (0.5, 0.0),
                (2.0, 0.5),
                (0.5, 0.0),
            ],
            0.0,
        );
        let spans = detect(&x, SR, &no_pad());
        assert_spans(&spans, &[(0.5, 2.5), (3.5, 6.4)]);
    }

    #[test]
    fn long_speech_is_split_at_the_quietest_point() {
        // 47.7 s of speech with a 0.2 s dip (bridged as a pause) at 22 s.
        let x = signal(
            &[(0.5, 0.0), (21.5, 0.5), (0.2, 0.0), (26.0, 0.5), (0.5, 0.0)],
            0.0,
        );
        let spans = detect(&x, SR, &no_pad());
        assert_eq!(spans.len(), 2, "{spans:?}");
        assert!((spans[0].start_s - 0.5).abs() <= 0.02, "{spans:?}");
        assert!((spans[0].end_s - 22.1).abs() <= 0.12, "{spans:?}");
        assert!((spans[1].end_s - 48.2).abs() <= 0.02, "{spans:?}");
        for s in &spans {
            assert!(s.duration_s() <= 28.0, "{spans:?}");
        }
        let pieces = split_long(&x, SR, 30.0, &VadConfig::default());
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[0].start, 0);
        assert_eq!(pieces[1].end, x.len());
        assert_eq!(pieces[0].end, pieces[1].start);
        let cut_s = pieces[0].end as f64 / f64::from(SR);
        assert!((22.0..=22.2).contains(&cut_s), "cut at {cut_s}");
    }

    #[test]
    fn split_long_recurses_and_covers_everything() {
        let x = signal(&[(95.0, 0.5)], 0.0);
        let pieces = split_long(&x, SR, 30.0, &VadConfig::default());
        assert!(pieces.len() >= 4, "{pieces:?}");
        assert_eq!(pieces[0].start, 0);
        assert_eq!(pieces.last().unwrap().end, x.len());
        for w in pieces.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        for p in &pieces {
            assert!(p.len() <= 30 * SR as usize);
        }
        assert_eq!(
            split_long(&x[..1000], SR, 30.0, &VadConfig::default()),
            vec![0..1000]
        );
    }

    #[test]
    fn silence_and_empty_input_give_no_segments() {
        assert!(detect(&[], SR, &VadConfig::default()).is_empty());
        let x = vec![0.0f32; 32_000];
        assert!(detect(&x, SR, &VadConfig::default()).is_empty());
    }

    #[test]
    fn chunked_energies_match() {
        let x = signal(&[(1.0, 0.5), (0.5, 0.0), (1.0, 0.3)], 0.01);
        let flen = frame_len(SR, 0.01);
        let whole = frame_energies_db(&x, flen);
        let mut parts = frame_energies_db(&x[..flen * 70], flen);
        parts.extend(frame_energies_db(&x[flen * 70..], flen));
        assert_eq!(whole, parts);
    }
}
