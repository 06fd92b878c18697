#!/usr/bin/env python3
"""Writes the golden files for the kompakt-audio tests into tests/data/.

Pinned: transformers 5.24.0, numpy 2.4.6, safetensors 0.8.0. The features come
from WhisperFeatureExtractor's numpy path, `_np_extract_fbank_features` (float64
STFT), called explicitly: when torch is installed `__call__` takes the torch path
instead (float32 `torch.stft`), which differs from the numpy path by up to ~6e-5
on speech; the attention mask is the same on both paths.

Run from anywhere: `python3 runtime/audio/tests/make_golden.py`.

Outputs
- `chirp_16k.wav`: 16 kHz mono s16, 24037 samples (chirp + noise + silence).
- `chirp_44k.wav`: 44.1 kHz mono s16, 33100 samples.
- `tone_48k.wav`: 48 kHz mono s16, 24000 samples.
- `golden.safetensors`:
  - `filters_128`, `filters_80` [201, n_mels] f32: transformers' `mel_filter_bank`
    (slaney norm and scale, 0..8000 Hz, 16 kHz).
  - `resampled_44k`, `resampled_48k` f32: the numpy twin of torchaudio's
    `sinc_interp_hann` resampler below, in f64, cast to f32.
  - `logmel_<case>` [n_mels, K] f32: the first K frames of
    `WhisperFeatureExtractor(feature_size=n_mels)._np_extract_fbank_features` of the
    clip zero-padded to 30 s;
    every later frame equals `logmel_<case>_tail` exactly (asserted here).
  - `valid_<case>` i64: the sum of the returned attention mask.
  Cases: `16k_128` and `16k_80` (chirp_16k.wav), `44k_128` (chirp_44k.wav
  resampled by the reference below).
"""

import math
import os
import wave

import numpy as np
import transformers
from safetensors.numpy import save_file
from transformers import WhisperFeatureExtractor
from transformers.audio_utils import mel_filter_bank

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def resample_ref(x, orig, new):
    """torchaudio.functional.resample, resampling_method="sinc_interp_hann",
    lowpass_filter_width=6, rolloff=0.99, in float64."""
    if orig == new:
        return x.astype(np.float64)
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    base = min(o, n) * 0.99
    width = math.ceil(6 * o / base)
    idx = np.arange(-width, width + o, dtype=np.float64) / o
    t = (np.arange(0, -n, -1, dtype=np.float64)[:, None] / n + idx[None, :]) * base
    t = np.clip(t, -6, 6)
    window = np.cos(t * math.pi / 6 / 2) ** 2
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = np.where(t == 0, 1.0, np.sin(t) / t) * window * (base / o)
    xpad = np.concatenate([np.zeros(width), x.astype(np.float64), np.zeros(width + o)])
    frames = (len(xpad) - kernel.shape[1]) // o + 1
    cols = np.arange(frames)[:, None] * o + np.arange(kernel.shape[1])[None, :]
    y = (xpad[cols] @ kernel.T).reshape(-1)
    return y[: math.ceil(n * len(x) / o)]


def write_wav(path, rate, pcm):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())


def make_signal(rate, n, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    dur = n / rate
    f0, f1 = 100.0, 7000.0
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * dur))
    env = 0.2 + 0.6 * np.abs(np.sin(np.pi * t / dur))
    x = env * 0.5 * np.sin(phase) + 0.03 * rng.standard_normal(n)
    x[int(0.4 * n) : int(0.5 * n)] = 0.0
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def logmel(x16k, n_mels):
    fe = WhisperFeatureExtractor(feature_size=n_mels)
    out = fe(x16k, sampling_rate=16000, return_attention_mask=True, return_tensors="np")
    padded = np.zeros(fe.n_samples, np.float32)
    padded[: len(x16k)] = x16k
    feat = fe._np_extract_fbank_features(padded[None], "cpu")[0].astype(np.float32)
    valid = int(out["attention_mask"][0].sum())
    assert feat.shape == (n_mels, 3000)
    k = valid + 4
    tail = feat[:, k:]
    assert np.all(tail == tail.flat[0]), "frames after valid+4 are not constant"
    return feat[:, :k].copy(), np.float32(tail.flat[0]), valid


def main():
    assert transformers.__version__ == "5.24.0", transformers.__version__
    os.makedirs(HERE, exist_ok=True)
    tensors = {}
    for n_mels in (128, 80):
        fb = mel_filter_bank(201, n_mels, 0.0, 8000.0, 16000, norm="slaney", mel_scale="slaney")
        tensors[f"filters_{n_mels}"] = fb.astype(np.float32)

    pcm16 = make_signal(16000, 24037, 1)
    write_wav(os.path.join(HERE, "chirp_16k.wav"), 16000, pcm16)
    x16 = pcm16.astype(np.float32) / 32768.0
    for n_mels in (128, 80):
        feat, tail, valid = logmel(x16, n_mels)
        tensors[f"logmel_16k_{n_mels}"] = feat
        tensors[f"logmel_16k_{n_mels}_tail"] = np.array([tail], np.float32)
        tensors[f"valid_16k_{n_mels}"] = np.array([valid], np.int64)

    pcm44 = make_signal(44100, 33100, 2)
    write_wav(os.path.join(HERE, "chirp_44k.wav"), 44100, pcm44)
    y44 = resample_ref(pcm44.astype(np.float32) / 32768.0, 44100, 16000).astype(np.float32)
    tensors["resampled_44k"] = y44
    feat, tail, valid = logmel(y44, 128)
    tensors["logmel_44k_128"] = feat
    tensors["logmel_44k_128_tail"] = np.array([tail], np.float32)
    tensors["valid_44k_128"] = np.array([valid], np.int64)

    t = np.arange(24000) / 48000
    x48 = 0.4 * np.sin(2 * np.pi * 1000 * t) + 0.2 * np.sin(2 * np.pi * 10000 * t)
    pcm48 = np.round(x48 * 32767).astype(np.int16)
    write_wav(os.path.join(HERE, "tone_48k.wav"), 48000, pcm48)
    tensors["resampled_48k"] = resample_ref(pcm48.astype(np.float32) / 32768.0, 48000, 16000).astype(
        np.float32
    )

    save_file(tensors, os.path.join(HERE, "golden.safetensors"))
    for k, v in sorted(tensors.items()):
        print(k, v.shape, v.dtype)


if __name__ == "__main__":
    main()
