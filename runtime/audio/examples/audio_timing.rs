//! Times `load_16k_mono` + `MelExtractor::compute` on a synthetic 30 s 48 kHz clip, or on the
//! WAV files given as arguments: `cargo run --release -p kompakt-audio --example audio_timing`.

use std::path::PathBuf;
use std::time::Instant;

use kompakt_audio::{load_16k_mono, read_wav, MelExtractor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut paths: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if paths.is_empty() {
        let path = std::env::temp_dir().join("kompakt_audio_timing_48k.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 48000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec)?;
        let mut state = 12345u32;
        for i in 0..48000 * 30 {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (state >> 16) as f64 / 65536.0 - 0.5;
            let t = i as f64 / 48000.0;
            let v = 0.3 * (2.0 * std::f64::consts::PI * 440.0 * t * (1.0 + t / 10.0)).sin()
                + 0.1 * noise;
            w.write_sample((v * 32767.0) as i16)?;
        }
        w.finalize()?;
        paths.push(path);
    }
    let extractor = MelExtractor::whisper(128);
    for path in &paths {
        let t0 = Instant::now();
        let audio = read_wav(path)?;
        let t_read = t0.elapsed();
        let t1 = Instant::now();
        let x = load_16k_mono(path)?;
        let t_load = t1.elapsed();
        let t2 = Instant::now();
        let mel = extractor.compute(&x)?;
        let t_mel = t2.elapsed();
        println!(
            "{}: {:.1} s at {} Hz, read {:.1} ms, load_16k_mono (read + resample) {:.1} ms, \
             log-mel {:.1} ms ({} valid frames)",
            path.display(),
            audio.duration_s(),
            audio.sample_rate,
            t_read.as_secs_f64() * 1e3,
            t_load.as_secs_f64() * 1e3,
            t_mel.as_secs_f64() * 1e3,
            mel.valid_frames
        );
    }
    Ok(())
}
