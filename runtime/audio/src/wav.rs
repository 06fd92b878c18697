//! WAV decoding with `hound`: integer PCM of 8/16/24/32 bits and 32-bit IEEE float, any channel
//! count, downmixed to mono by the arithmetic mean over channels.
//!
//! Integer samples are scaled by `1 / 2^(bits-1)` (8-bit files store unsigned bytes; hound
//! returns them already centred around zero), float samples are taken as they are. Every failure
//! is an [`AudioError`] naming the input; no input bytes make these functions panic.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::AudioError;

/// Decoded audio, downmixed to mono.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    /// Mono samples in [-1, 1) for integer sources (float sources are passed through).
    pub samples: Vec<f32>,
    /// Sample rate of the file in Hz.
    pub sample_rate: u32,
    /// Channel count of the file (before the downmix).
    pub channels: u16,
    /// Valid bits per sample of the file.
    pub bits_per_sample: u16,
    /// Whether the file stores IEEE float samples.
    pub is_float: bool,
}

impl Audio {
    /// Duration in seconds.
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate as f64
    }
}

/// Reads a whole WAV file.
pub fn read_wav(path: &Path) -> Result<Audio, AudioError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| AudioError::Io {
        name: name.clone(),
        source,
    })?;
    decode(BufReader::new(file), &name, None)
}

/// Reads a whole WAV stream from `reader` (positioned at the RIFF header); `name` labels errors.
pub fn read_wav_from<R: Read + Seek>(reader: R, name: &str) -> Result<Audio, AudioError> {
    decode(reader, name, None)
}

/// Reads `duration_s` seconds starting at `offset_s` from a WAV file, seeking past the rest.
///
/// The first frame is `round(offset_s * rate)` and the frame count `round(duration_s * rate)`;
/// a range that ends past the last frame is an [`AudioError::RangePastEnd`].
pub fn read_wav_range(path: &Path, offset_s: f64, duration_s: f64) -> Result<Audio, AudioError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| AudioError::Io {
        name: name.clone(),
        source,
    })?;
    decode(BufReader::new(file), &name, Some((offset_s, duration_s)))
}

/// Same as [`read_wav_range`] on an in-memory or other seekable stream.
pub fn read_wav_range_from<R: Read + Seek>(
    reader: R,
    name: &str,
    offset_s: f64,
    duration_s: f64,
) -> Result<Audio, AudioError> {
    decode(reader, name, Some((offset_s, duration_s)))
}

const TAG_PCM: u16 = 0x0001;
const TAG_FLOAT: u16 = 0x0003;
const TAG_EXTENSIBLE: u16 = 0xfffe;

/// The fields of the fmt chunk, read without hound so that errors can name the encoding.
#[derive(Debug, Clone, Copy)]
struct FmtInfo {
    tag: u16,
    /// For WAVE_FORMAT_EXTENSIBLE: the format tag in the first two bytes of the sub-format GUID.
    sub_tag: Option<u16>,
    channels: u16,
    block_align: u16,
    bits: u16,
}

impl FmtInfo {
    fn effective_tag(&self) -> u16 {
        match (self.tag, self.sub_tag) {
            (TAG_EXTENSIBLE, Some(sub)) => sub,
            (tag, _) => tag,
        }
    }

    fn container_bytes(&self) -> u16 {
        self.block_align.checked_div(self.channels).unwrap_or(0)
    }
}

enum Sniff {
    TooShort(u64),
    NotRiff([u8; 4]),
    NotWave([u8; 4]),
    NoFmt,
    Fmt(FmtInfo),
}

fn read_exact_or_none<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<bool> {
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Walks the RIFF chunks up to the fmt chunk; leaves the reader at an unspecified position.
fn sniff<R: Read + Seek>(r: &mut R, stream_len: u64) -> io::Result<Sniff> {
    let mut head = [0u8; 12];
    if !read_exact_or_none(r, &mut head)? {
        return Ok(Sniff::TooShort(stream_len));
    }
    if &head[0..4] != b"RIFF" {
        return Ok(Sniff::NotRiff([head[0], head[1], head[2], head[3]]));
    }
    if &head[8..12] != b"WAVE" {
        return Ok(Sniff::NotWave([head[8], head[9], head[10], head[11]]));
    }
    const MAX_CHUNKS: usize = 4096;
    for _ in 0..MAX_CHUNKS {
        let mut ch = [0u8; 8];
        if !read_exact_or_none(r, &mut ch)? {
            return Ok(Sniff::NoFmt);
        }
        let len = le32(&ch, 4);
        if &ch[0..4] == b"fmt " {
            let mut body = [0u8; 40];
            let want = (len as usize).min(body.len());
            if want < 16 || !read_exact_or_none(r, &mut body[..want])? {
                return Ok(Sniff::NoFmt);
            }
            let tag = le16(&body, 0);
            let sub_tag = (tag == TAG_EXTENSIBLE && want >= 40).then(|| le16(&body, 24));
            return Ok(Sniff::Fmt(FmtInfo {
                tag,
                sub_tag,
                channels: le16(&body, 2),
                block_align: le16(&body, 12),
                bits: le16(&body, 14),
            }));
        }
        if &ch[0..4] == b"data" {
            return Ok(Sniff::NoFmt);
        }
        r.seek(SeekFrom::Current(i64::from(len)))?;
    }
    Ok(Sniff::NoFmt)
}

fn tag_name(tag: u16) -> &'static str {
    match tag {
        0x0002 => "Microsoft ADPCM",
        0x0006 => "A-law",
        0x0007 => "mu-law",
        0x0011 => "IMA ADPCM",
        0x0031 => "GSM 6.10",
        0x0050 => "MPEG",
        0x0055 => "MPEG layer 3",
        0x0092 => "AC-3",
        _ => "",
    }
}

fn unsupported(name: &str, fmt: &FmtInfo, what: String) -> AudioError {
    let mut detail = String::new();
    if let Some(sub) = fmt.sub_tag.filter(|_| fmt.tag == TAG_EXTENSIBLE) {
        detail.push_str(&format!(", extensible sub-format {sub:#06x}"));
    }
    if !what.is_empty() {
        detail.push_str(", ");
        detail.push_str(&what);
    }
    AudioError::UnsupportedEncoding {
        name: name.to_string(),
        format_tag: fmt.tag,
        detail,
    }
}

/// Checks what hound cannot tell apart: encodings it does not decode, float widths, zero channels.
fn check_fmt(name: &str, fmt: &FmtInfo) -> Result<(), AudioError> {
    if fmt.channels == 0 {
        return Err(AudioError::ZeroChannels {
            name: name.to_string(),
        });
    }
    match fmt.effective_tag() {
        TAG_PCM => Ok(()),
        TAG_FLOAT if fmt.bits == 32 => Ok(()),
        TAG_FLOAT => Err(unsupported(name, fmt, format!("{}-bit float", fmt.bits))),
        TAG_EXTENSIBLE => Err(unsupported(name, fmt, "no sub-format".into())),
        other => Err(unsupported(name, fmt, tag_name(other).to_string())),
    }
}

/// hound reports a short read as `ErrorKind::Other` with this message.
fn is_eof(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::UnexpectedEof
        || (e.kind() == io::ErrorKind::Other && e.to_string() == "Failed to read enough bytes.")
}

fn io_err(name: &str, source: io::Error) -> AudioError {
    AudioError::Io {
        name: name.to_string(),
        source,
    }
}

fn map_open_error(name: &str, err: hound::Error, fmt: Option<&FmtInfo>) -> AudioError {
    let name_s = name.to_string();
    match err {
        hound::Error::IoError(e) if is_eof(&e) => AudioError::Truncated {
            name: name_s,
            reason: "the file ends inside the header, before the data chunk".into(),
        },
        hound::Error::IoError(e) => io_err(name, e),
        hound::Error::FormatError(reason) => AudioError::Corrupt {
            name: name_s,
            reason: reason.to_string(),
        },
        hound::Error::Unsupported | hound::Error::TooWide | hound::Error::InvalidSampleFormat => {
            match fmt {
                Some(f) => unsupported(name, f, format!("{} bits per sample", f.bits)),
                None => AudioError::Corrupt {
                    name: name_s,
                    reason: "unsupported or inconsistent fmt chunk".into(),
                },
            }
        }
        other => AudioError::Corrupt {
            name: name_s,
            reason: other.to_string(),
        },
    }
}

fn decode<R: Read + Seek>(
    mut reader: R,
    name: &str,
    range: Option<(f64, f64)>,
) -> Result<Audio, AudioError> {
    let start = reader.stream_position().map_err(|e| io_err(name, e))?;
    let end = reader.seek(SeekFrom::End(0)).map_err(|e| io_err(name, e))?;
    let stream_len = end.saturating_sub(start);
    reader
        .seek(SeekFrom::Start(start))
        .map_err(|e| io_err(name, e))?;

    let fmt = match sniff(&mut reader, stream_len).map_err(|e| io_err(name, e))? {
        Sniff::TooShort(n) => {
            return Err(AudioError::NotWav {
                name: name.to_string(),
                reason: format!("{n} bytes is too short for a RIFF/WAVE header"),
            })
        }
        Sniff::NotRiff(m) => {
            let reason = match &m {
                b"RIFX" => "big-endian RIFX files are not supported".to_string(),
                b"RF64" => "RF64 files are not supported".to_string(),
                _ => format!(
                    "no RIFF tag: it starts with the bytes {} (\"{}\") where a WAV file starts with \"RIFF\"",
                    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" "),
                    m.iter()
                        .map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' })
                        .collect::<String>()
                ),
            };
            return Err(AudioError::NotWav {
                name: name.to_string(),
                reason,
            });
        }
        Sniff::NotWave(m) => {
            return Err(AudioError::NotWav {
                name: name.to_string(),
                reason: format!("RIFF form type is \"{}\", not \"WAVE\"", m.escape_ascii()),
            })
        }
        Sniff::NoFmt => None,
        Sniff::Fmt(f) => {
            check_fmt(name, &f)?;
            Some(f)
        }
    };
    reader
        .seek(SeekFrom::Start(start))
        .map_err(|e| io_err(name, e))?;

    let mut wav =
        hound::WavReader::new(&mut reader).map_err(|e| map_open_error(name, e, fmt.as_ref()))?;
    let spec = wav.spec();
    if spec.channels == 0 {
        return Err(AudioError::ZeroChannels {
            name: name.to_string(),
        });
    }
    if spec.sample_rate == 0 {
        return Err(AudioError::ZeroSampleRate {
            name: name.to_string(),
        });
    }
    let channels = usize::from(spec.channels);
    let total_frames = u64::from(wav.duration());
    let rate = f64::from(spec.sample_rate);
    let container = fmt
        .map(|f| f.container_bytes())
        .filter(|&b| b > 0)
        .unwrap_or(spec.bits_per_sample.div_ceil(8));

    let (first, frames) = match range {
        None => (0u64, total_frames),
        Some((offset_s, duration_s)) => {
            let bad = !(offset_s.is_finite() && duration_s.is_finite())
                || offset_s < 0.0
                || duration_s <= 0.0;
            if bad {
                return Err(AudioError::InvalidRange {
                    name: name.to_string(),
                    offset_s,
                    duration_s,
                });
            }
            let first = (offset_s * rate).round();
            let count = (duration_s * rate).round();
            if first + count > total_frames as f64 {
                return Err(AudioError::RangePastEnd {
                    name: name.to_string(),
                    offset_s,
                    duration_s,
                    end_s: offset_s + duration_s,
                    file_s: total_frames as f64 / rate,
                });
            }
            if count < 1.0 {
                return Err(AudioError::InvalidRange {
                    name: name.to_string(),
                    offset_s,
                    duration_s,
                });
            }
            (first as u64, count as u64)
        }
    };
    if frames == 0 {
        return Err(AudioError::EmptyAudio {
            name: name.to_string(),
        });
    }

    let can_seek = spec.bits_per_sample % 8 == 0 && spec.bits_per_sample / 8 == container;
    let mut skip_frames = first;
    if first > 0 && can_seek {
        // `first` fits: first + frames <= total_frames <= u32::MAX.
        wav.seek(first as u32).map_err(|e| io_err(name, e))?;
        skip_frames = 0;
    }

    let budget = stream_len / u64::from(container.max(1)) / channels as u64;
    let capacity = frames.min(budget) as usize;
    let mut out = Vec::with_capacity(capacity);
    let ctx = ReadCtx {
        name,
        channels,
        declared: u64::from(wav.len()),
        first,
        fmt,
    };
    if spec.sample_format == hound::SampleFormat::Float {
        let it = wav.samples::<f32>();
        downmix(it, skip_frames, frames, &ctx, &mut out, f64::from)?;
    } else {
        let scale = 1.0 / f64::from(1u32 << (spec.bits_per_sample.clamp(1, 32) - 1));
        let it = wav.samples::<i32>();
        downmix(it, skip_frames, frames, &ctx, &mut out, |v| {
            f64::from(v) * scale
        })?;
    }

    Ok(Audio {
        samples: out,
        sample_rate: spec.sample_rate,
        channels: spec.channels,
        bits_per_sample: spec.bits_per_sample,
        is_float: spec.sample_format == hound::SampleFormat::Float,
    })
}

struct ReadCtx<'a> {
    name: &'a str,
    channels: usize,
    declared: u64,
    first: u64,
    fmt: Option<FmtInfo>,
}

impl ReadCtx<'_> {
    fn sample_error(&self, err: hound::Error, frames_read: u64) -> AudioError {
        match err {
            hound::Error::IoError(e) if is_eof(&e) => AudioError::Truncated {
                name: self.name.to_string(),
                reason: format!(
                    "the data chunk declares {} frames but the file ends after about {}",
                    self.declared / self.channels as u64,
                    frames_read,
                ),
            },
            hound::Error::IoError(e) => io_err(self.name, e),
            hound::Error::FormatError(reason) => AudioError::Corrupt {
                name: self.name.to_string(),
                reason: reason.to_string(),
            },
            other => match &self.fmt {
                Some(f) => unsupported(
                    self.name,
                    f,
                    format!(
                        "{}-bit samples in {}-byte containers",
                        f.bits,
                        f.container_bytes()
                    ),
                ),
                None => AudioError::Corrupt {
                    name: self.name.to_string(),
                    reason: other.to_string(),
                },
            },
        }
    }
}

fn downmix<S, I, F>(
    mut it: I,
    skip_frames: u64,
    frames: u64,
    ctx: &ReadCtx<'_>,
    out: &mut Vec<f32>,
    to_f64: F,
) -> Result<(), AudioError>
where
    I: Iterator<Item = hound::Result<S>>,
    F: Fn(S) -> f64,
{
    let ch = ctx.channels;
    let mut next = |frames_read: u64| -> Result<S, AudioError> {
        match it.next() {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(ctx.sample_error(e, frames_read)),
            None => Err(ctx.sample_error(
                hound::Error::IoError(io::ErrorKind::UnexpectedEof.into()),
                frames_read,
            )),
        }
    };
    for f in 0..skip_frames {
        for _ in 0..ch {
            next(f)?;
        }
    }
    if ch == 1 {
        for f in 0..frames {
            out.push(to_f64(next(ctx.first + f)?) as f32);
        }
    } else {
        let n = ch as f64;
        for f in 0..frames {
            let mut acc = 0.0f64;
            for _ in 0..ch {
                acc += to_f64(next(ctx.first + f)?);
            }
            out.push((acc / n) as f32);
        }
    }
    Ok(())
}
