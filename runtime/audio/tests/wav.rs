//! WAV decoding: every supported width and format, ranges, and hostile input.

use std::io::Cursor;
use std::path::PathBuf;

use hound::{SampleFormat, WavSpec, WavSpecEx, WavWriter};
use kompakt_audio::{read_wav, read_wav_from, read_wav_range, read_wav_range_from, AudioError};

fn spec(channels: u16, rate: u32, bits: u16, float: bool) -> WavSpec {
    WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: if float {
            SampleFormat::Float
        } else {
            SampleFormat::Int
        },
    }
}

fn write_int(spec_ex: WavSpecEx, frames: &[Vec<i32>]) -> Vec<u8> {
    let mut cur = Cursor::new(Vec::new());
    let mut w = WavWriter::new_with_spec_ex(&mut cur, spec_ex).unwrap();
    for f in frames {
        for &v in f {
            w.write_sample(v).unwrap();
        }
    }
    w.finalize().unwrap();
    cur.into_inner()
}

fn int_wav(channels: u16, rate: u32, bits: u16, frames: &[Vec<i32>]) -> Vec<u8> {
    let spec_ex = WavSpecEx {
        spec: spec(channels, rate, bits, false),
        bytes_per_sample: bits.div_ceil(8),
    };
    write_int(spec_ex, frames)
}

fn tmp_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

#[test]
fn integer_widths_scale_and_downmix() {
    for bits in [8u16, 16, 24, 32] {
        let full = 1i64 << (bits - 1);
        let lo = -full as i32;
        let hi = (full - 1) as i32;
        let frames = vec![vec![lo, hi], vec![0, hi], vec![lo, lo], vec![hi / 2, 0]];
        let audio = read_wav_from(Cursor::new(int_wav(2, 8000, bits, &frames)), "mem").unwrap();
        assert_eq!(
            (audio.channels, audio.bits_per_sample, audio.is_float),
            (2, bits, false)
        );
        assert_eq!(audio.sample_rate, 8000);
        let want: Vec<f32> = frames
            .iter()
            .map(|f| ((f[0] as f64 + f[1] as f64) / 2.0 / full as f64) as f32)
            .collect();
        assert_eq!(audio.samples, want, "{bits}-bit");
        assert_eq!(audio.samples[2], -1.0);
    }
}

#[test]
fn eight_bit_is_centred() {
    let bytes = int_wav(1, 8000, 8, &[vec![-128], vec![0], vec![127], vec![64]]);
    assert_eq!(&bytes[44..48], &[0u8, 128, 255, 192]);
    let audio = read_wav_from(Cursor::new(bytes), "mem").unwrap();
    assert_eq!(audio.samples, [-1.0, 0.0, 127.0 / 128.0, 0.5]);
}

#[test]
fn mono_16_bit_is_exact() {
    let frames: Vec<Vec<i32>> = (-5..5).map(|v| vec![v * 3000]).collect();
    let audio = read_wav_from(Cursor::new(int_wav(1, 16000, 16, &frames)), "mem").unwrap();
    let want: Vec<f32> = frames.iter().map(|f| f[0] as f32 / 32768.0).collect();
    assert_eq!(audio.samples, want);
}

#[test]
fn float_three_channels() {
    let mut cur = Cursor::new(Vec::new());
    let mut w = WavWriter::new(&mut cur, spec(3, 48000, 32, true)).unwrap();
    for v in [0.5f32, -0.25, 1.5, 0.0, 0.0, 0.3] {
        w.write_sample(v).unwrap();
    }
    w.finalize().unwrap();
    let audio = read_wav_from(Cursor::new(cur.into_inner()), "mem").unwrap();
    assert!(audio.is_float);
    assert_eq!(audio.channels, 3);
    assert_eq!(audio.samples, [((0.5f64 - 0.25 + 1.5) / 3.0) as f32, 0.1]);
}

#[test]
fn twenty_four_bits_in_four_byte_containers() {
    let frames: Vec<Vec<i32>> = (0..100).map(|i| vec![i * 1000, -i * 1000]).collect();
    let spec_ex = WavSpecEx {
        spec: spec(2, 100, 24, false),
        bytes_per_sample: 4,
    };
    let bytes = write_int(spec_ex, &frames);
    let audio = read_wav_from(Cursor::new(bytes.clone()), "mem").unwrap();
    assert_eq!(audio.bits_per_sample, 24);
    assert!(audio.samples.iter().all(|&v| v == 0.0));
    let spec_ex = WavSpecEx {
        spec: spec(1, 100, 24, false),
        bytes_per_sample: 4,
    };
    let mono: Vec<Vec<i32>> = (0..100).map(|i| vec![i * 1000]).collect();
    let bytes = write_int(spec_ex, &mono);
    let part = read_wav_range_from(Cursor::new(bytes), "mem", 0.5, 0.1).unwrap();
    let want: Vec<f32> = (50..60).map(|i| (i * 1000) as f32 / 8388608.0).collect();
    assert_eq!(part.samples, want);
}

#[test]
fn file_reading_and_ranges() {
    let frames: Vec<Vec<i32>> = (0..16000).map(|i| vec![i - 8000, 8000 - i]).collect();
    let path = tmp_path("ramp_stereo.wav");
    std::fs::write(&path, int_wav(2, 16000, 16, &frames)).unwrap();
    let full = read_wav(&path).unwrap();
    assert_eq!(full.samples.len(), 16000);
    assert!(full.samples.iter().all(|&v| v == 0.0));

    let mono: Vec<Vec<i32>> = (0..16000).map(|i| vec![i - 8000]).collect();
    let path = tmp_path("ramp_mono.wav");
    std::fs::write(&path, int_wav(1, 16000, 16, &mono)).unwrap();
    let part = read_wav_range(&path, 0.5, 0.25).unwrap();
    let want: Vec<f32> = (8000..12000).map(|i| (i - 8000) as f32 / 32768.0).collect();
    assert_eq!(part.samples, want);
    let tail = read_wav_range(&path, 0.75, 0.25).unwrap();
    assert_eq!(tail.samples.len(), 4000);

    let err = read_wav_range(&path, 0.9, 0.2).unwrap_err();
    assert!(matches!(err, AudioError::RangePastEnd { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("0.9 s + 0.2 s") && msg.contains("ramp_mono.wav"),
        "{msg}"
    );
    for (o, d) in [
        (-1.0, 0.1),
        (0.1, 0.0),
        (f64::NAN, 0.1),
        (0.0, f64::INFINITY),
    ] {
        let err = read_wav_range(&path, o, d).unwrap_err();
        assert!(matches!(err, AudioError::InvalidRange { .. }), "{err:?}");
    }

    let err = read_wav(&tmp_path("does_not_exist.wav")).unwrap_err();
    assert!(matches!(err, AudioError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("does_not_exist.wav"));
}

/// A canonical RIFF/WAVE file with a hand-written fmt chunk (`fmt_extra` follows the 16 bytes).
fn hand_wav(
    tag: u16,
    channels: u16,
    rate: u32,
    bits: u16,
    block_align: u16,
    fmt_extra: &[u8],
    data: &[u8],
) -> Vec<u8> {
    let mut fmt = Vec::new();
    fmt.extend(tag.to_le_bytes());
    fmt.extend(channels.to_le_bytes());
    fmt.extend(rate.to_le_bytes());
    fmt.extend((u32::from(block_align) * rate).to_le_bytes());
    fmt.extend(block_align.to_le_bytes());
    fmt.extend(bits.to_le_bytes());
    fmt.extend(fmt_extra);
    let mut v = Vec::new();
    v.extend(b"RIFF");
    v.extend(((4 + 8 + fmt.len() + 8 + data.len()) as u32).to_le_bytes());
    v.extend(b"WAVE");
    v.extend(b"fmt ");
    v.extend((fmt.len() as u32).to_le_bytes());
    v.extend(&fmt);
    v.extend(b"data");
    v.extend((data.len() as u32).to_le_bytes());
    v.extend(data);
    v
}

fn decode_err(bytes: Vec<u8>) -> AudioError {
    read_wav_from(Cursor::new(bytes), "test.wav").unwrap_err()
}

#[test]
fn unsupported_encodings_are_named() {
    let mulaw = hand_wav(7, 1, 8000, 8, 1, &[0, 0], &[0xff; 100]);
    let err = decode_err(mulaw);
    let msg = err.to_string();
    assert!(
        matches!(err, AudioError::UnsupportedEncoding { format_tag: 7, .. }),
        "{err:?}"
    );
    assert!(msg.contains("test.wav") && msg.contains("0x0007") && msg.contains("mu-law"));
    assert!(msg.contains("sox in.wav -e signed -b 16 out.wav"), "{msg}");

    let alaw = hand_wav(6, 2, 8000, 8, 2, &[0, 0], &[0x55; 100]);
    assert!(matches!(
        decode_err(alaw),
        AudioError::UnsupportedEncoding { format_tag: 6, .. }
    ));

    let adpcm = hand_wav(2, 1, 8000, 4, 256, &[0, 0], &[0; 256]);
    assert!(matches!(
        decode_err(adpcm),
        AudioError::UnsupportedEncoding { format_tag: 2, .. }
    ));

    let f64_wav = hand_wav(3, 1, 8000, 64, 8, &[], &[0; 64]);
    let err = decode_err(f64_wav);
    assert!(err.to_string().contains("64-bit float"), "{err}");

    let mut ext = Vec::new();
    ext.extend(22u16.to_le_bytes());
    ext.extend(8u16.to_le_bytes());
    ext.extend(4u32.to_le_bytes());
    ext.extend([
        0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b,
        0x71,
    ]);
    let ext_mulaw = hand_wav(0xfffe, 1, 8000, 8, 1, &ext, &[0xff; 10]);
    let err = decode_err(ext_mulaw);
    assert!(err.to_string().contains("mu-law"), "{err}");
}

#[test]
fn header_errors() {
    assert!(matches!(
        decode_err(hand_wav(1, 0, 8000, 16, 2, &[], &[0; 8])),
        AudioError::ZeroChannels { .. }
    ));
    assert!(matches!(
        decode_err(hand_wav(1, 1, 0, 16, 2, &[], &[0; 8])),
        AudioError::ZeroSampleRate { .. }
    ));
    assert!(matches!(
        decode_err(hand_wav(1, 1, 8000, 16, 2, &[], &[])),
        AudioError::EmptyAudio { .. }
    ));
    assert!(matches!(decode_err(Vec::new()), AudioError::NotWav { .. }));
    assert!(matches!(
        decode_err(b"ID3\x04 this is an mp3".to_vec()),
        AudioError::NotWav { .. }
    ));
    assert!(matches!(
        decode_err(b"RIFF\x10\x00\x00\x00AVI LIST".to_vec()),
        AudioError::NotWav { .. }
    ));
    let err = decode_err(b"RIFF\x04\x00\x00\x00WAVE".to_vec());
    assert!(matches!(err, AudioError::Truncated { .. }), "{err:?}");
}

#[test]
fn truncated_data_is_reported() {
    let frames: Vec<Vec<i32>> = (0..1000).map(|i| vec![i, -i]).collect();
    let bytes = int_wav(2, 16000, 16, &frames);
    let cut = bytes[..bytes.len() - 10].to_vec();
    let err = decode_err(cut);
    assert!(matches!(err, AudioError::Truncated { .. }), "{err:?}");
    assert!(err.to_string().contains("1000 frames"), "{err}");
}

#[test]
fn garbage_and_truncation_never_panic() {
    let frames: Vec<Vec<i32>> = (0..64).map(|i| vec![i * 100, -i * 100]).collect();
    let mut samples = vec![
        int_wav(2, 16000, 16, &frames),
        int_wav(1, 44100, 24, &frames),
    ];
    let mut cur = Cursor::new(Vec::new());
    let mut w = WavWriter::new(&mut cur, spec(1, 48000, 32, true)).unwrap();
    for i in 0..64 {
        w.write_sample(i as f32 / 64.0).unwrap();
    }
    w.finalize().unwrap();
    samples.push(cur.into_inner());
    samples.push(write_int(
        WavSpecEx {
            spec: spec(1, 100, 24, false),
            bytes_per_sample: 4,
        },
        &frames,
    ));

    for bytes in &samples {
        for cut in 0..bytes.len() {
            let _ = read_wav_from(Cursor::new(&bytes[..cut]), "cut.wav");
            let _ = read_wav_range_from(Cursor::new(&bytes[..cut]), "cut.wav", 0.001, 0.001);
        }
    }

    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut rng = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..20_000 {
        let mut bytes = samples[round % samples.len()].clone();
        let header = bytes.len().min(72);
        for _ in 0..1 + rng() % 4 {
            let at = (rng() as usize) % header;
            bytes[at] = match rng() % 4 {
                0 => 0,
                1 => 0xff,
                _ => rng() as u8,
            };
        }
        let cut = bytes.len() - (rng() as usize % 16).min(bytes.len());
        let _ = read_wav_from(Cursor::new(&bytes[..cut]), "fuzz.wav");
        let _ = read_wav_range_from(Cursor::new(&bytes[..cut]), "fuzz.wav", 0.0001, 0.0002);
    }
    for len in [0usize, 1, 4, 11, 12, 13, 100, 4096] {
        let bytes: Vec<u8> = (0..len).map(|_| rng() as u8).collect();
        assert!(read_wav_from(Cursor::new(bytes), "random.wav").is_err());
    }
}
