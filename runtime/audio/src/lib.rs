//! Audio front end of the kompakt runtime: WAV decoding ([`read_wav`]), resampling to 16 kHz
//! ([`resample`], torchaudio's `sinc_interp_hann`) and Whisper log-mel features
//! ([`MelExtractor`], transformers' `WhisperFeatureExtractor`), matching the Python reference
//! to 1e-4 in log-mel.

mod error;
pub mod longform;
mod mel;
mod resample;
pub mod vad;
mod wav;

use std::path::Path;

pub use error::AudioError;
pub use mel::{mel_filter_bank, LogMel, MelConfig, MelExtractor};
pub use resample::{resample, Resampler};
pub use wav::{read_wav, read_wav_from, read_wav_range, read_wav_range_from, Audio};

/// Sample rate of every model input, in Hz.
pub const TARGET_SAMPLE_RATE: u32 = 16_000;

/// Reads a WAV file, downmixes it to mono and resamples it to 16 kHz.
pub fn load_16k_mono(path: &Path) -> Result<Vec<f32>, AudioError> {
    let audio = read_wav(path)?;
    Ok(resample(
        &audio.samples,
        audio.sample_rate,
        TARGET_SAMPLE_RATE,
    ))
}
