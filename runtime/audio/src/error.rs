//! The one error type of the crate: every variant names the input and what is wrong with it.

use std::io;

/// Everything that can go wrong while decoding a WAV file or computing features.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The file could not be opened or read.
    #[error("{name}: cannot read: {source}")]
    Io {
        name: String,
        #[source]
        source: io::Error,
    },
    /// The bytes do not start with a RIFF/WAVE header.
    #[error("{name}: not a WAV file ({reason})")]
    NotWav { name: String, reason: String },
    /// The header is malformed (bad fmt chunk, inconsistent sizes, missing chunks).
    #[error("{name}: corrupt WAV header: {reason}")]
    Corrupt { name: String, reason: String },
    /// The data chunk ends before the length its header declares.
    #[error("{name}: truncated WAV data: {reason}")]
    Truncated { name: String, reason: String },
    /// A valid WAV file in an encoding other than integer PCM or 32-bit float.
    #[error(
        "{name}: unsupported WAV encoding (format tag {format_tag:#06x}{detail}): convert to PCM, \
         e.g. `sox in.wav -e signed -b 16 out.wav`"
    )]
    UnsupportedEncoding {
        name: String,
        format_tag: u16,
        /// Extra description, e.g. ", mu-law" or ", 64-bit float"; may be empty.
        detail: String,
    },
    /// The fmt chunk declares zero channels.
    #[error("{name}: the WAV header declares zero channels")]
    ZeroChannels { name: String },
    /// The fmt chunk declares a sample rate of zero.
    #[error("{name}: the WAV header declares a sample rate of 0 Hz")]
    ZeroSampleRate { name: String },
    /// The data chunk holds no samples.
    #[error("{name}: the WAV file contains no audio samples")]
    EmptyAudio { name: String },
    /// `read_wav_range` was given a negative, non-finite or zero-length range.
    #[error("{name}: invalid range: offset {offset_s} s, duration {duration_s} s")]
    InvalidRange {
        name: String,
        offset_s: f64,
        duration_s: f64,
    },
    /// `read_wav_range` was asked for audio past the end of the file.
    #[error(
        "{name}: range {offset_s} s + {duration_s} s ends at {end_s:.3} s, past the end of \
         the audio ({file_s:.3} s)"
    )]
    RangePastEnd {
        name: String,
        offset_s: f64,
        duration_s: f64,
        end_s: f64,
        file_s: f64,
    },
    /// The clip is longer than the feature extractor's window.
    #[error(
        "the clip is {seconds:.2} s long ({samples} samples) but the limit is {limit_s:.0} s \
         ({limit_samples} samples): segment it first"
    )]
    TooLong {
        samples: usize,
        seconds: f64,
        limit_samples: usize,
        limit_s: f64,
    },
    /// `MelExtractor::compute` was given no samples.
    #[error("no audio samples to compute features from")]
    EmptyInput,
    /// A `MelConfig` or filterbank that cannot work.
    #[error("invalid mel configuration: {0}")]
    InvalidConfig(String),
}
