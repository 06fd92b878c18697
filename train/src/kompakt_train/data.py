"""Training and calibration inputs: text windows and speech prompts.

Text: UTF-8 files (one sentence or paragraph per line), tokenized whole with the checkpoint's own
`tokenizer.json` (the `tokenizers` library, as the kompakt runtime does) and cut into independent
windows of `window` tokens, the same windows `kompakt eval` and `kompakt calibrate` use.

Speech: WAV files (16 kHz; any PCM width and channel count, averaged to mono), given as a
directory or in the IWSLT/MuST-C layout (a segment YAML of `{wav, offset, duration}` entries and a
WAV directory). Each becomes a translation prompt: the same chat or base template and instruction
that `kompakt convert` stores in the `.kpk`.
"""
from __future__ import annotations

import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import TrainError

SAMPLE_RATE = 16000
MAX_SECONDS = 30.0
INSTRUCTIONS = {
    "de": "Translate the English speech into German:",
    "zh": "Translate the English speech into Chinese:",
}


def prompt_text(chat: bool, instruction: str) -> str:
    """kompakt's translation prompt (converter `prompt_template`), before `<|AUDIO|>` expansion."""
    if chat:
        return ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nAudio 1: "
                f"<|audio_bos|><|AUDIO|><|audio_eos|>\n{instruction}<|im_end|>\n<|im_start|>assistant\n")
    return f"<|audio_bos|><|AUDIO|><|audio_eos|>{instruction}"


def translation_prompt(chat: bool, lang: str) -> str:
    """kompakt's translation prompt for target `lang` (before `<|AUDIO|>` expansion)."""
    if lang not in INSTRUCTIONS:
        raise TrainError(f"target language {lang}: expected one of {', '.join(INSTRUCTIONS)}")
    return prompt_text(chat, INSTRUCTIONS[lang])


def has_chat_template(checkpoint: Path) -> bool:
    import json
    cfg = checkpoint / "tokenizer_config.json"
    in_config = cfg.is_file() and "chat_template" in json.loads(cfg.read_text())
    return in_config or (checkpoint / "chat_template.jinja").is_file() or (checkpoint / "chat_template.json").is_file()


def load_tokenizer(checkpoint: Path):
    from tokenizers import Tokenizer
    path = Path(checkpoint) / "tokenizer.json"
    if not path.is_file():
        raise TrainError(f"{checkpoint}: tokenizer.json is missing")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on malformed files
        raise TrainError(f"{path}: cannot load the tokenizer ({e})") from None


def read_text(path: str | Path) -> str:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrainError(f"{p}: no such text file") from None
    except UnicodeDecodeError as e:
        raise TrainError(f"{p}: not UTF-8 text ({e})") from None
    if not text.strip():
        raise TrainError(f"{p}: the text file is empty")
    return text


def text_windows(tokenizer, files: list[str | Path], window: int, max_tokens: int | None = None,
                 min_len: int = 16) -> list[torch.Tensor]:
    """Independent windows of `window` token ids from each file (the last, shorter window of a
    file is kept when it has at least `min_len` tokens); `max_tokens` caps each file."""
    if window < 2:
        raise TrainError(f"--window {window}: must be at least 2 tokens")
    out = []
    for f in files:
        ids = tokenizer.encode(read_text(f), add_special_tokens=False).ids
        if max_tokens:
            ids = ids[:max_tokens]
        for start in range(0, len(ids), window):
            chunk = ids[start:start + window]
            if len(chunk) >= min(min_len, window):
                out.append(torch.tensor(chunk, dtype=torch.long))
    return out


def read_wav(path: str | Path, offset: float = 0.0, duration: float | None = None) -> np.ndarray:
    """Mono float32 samples at 16 kHz from a PCM WAV (8/16/24/32-bit integer)."""
    p = Path(path)
    try:
        with wave.open(str(p), "rb") as w:
            rate, channels, width, n = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
            start = int(round(offset * rate))
            count = n - start if duration is None else int(round(duration * rate))
            if start > n:
                raise TrainError(f"{p}: offset {offset} s is past the end ({n / rate:.2f} s)")
            w.setpos(start)
            raw = w.readframes(max(0, min(count, n - start)))
    except FileNotFoundError:
        raise TrainError(f"{p}: no such WAV file") from None
    except (wave.Error, EOFError) as e:
        raise TrainError(f"{p}: not a PCM WAV file ({e}); convert it with `sox IN -b 16 -r 16000 OUT.wav`") from None
    if rate != SAMPLE_RATE:
        raise TrainError(f"{p}: sample rate {rate} Hz, expected {SAMPLE_RATE}; "
                         f"resample it with `sox {p.name} -r 16000 out.wav`")
    if width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        x = (b[:, 0].astype(np.int32) | (b[:, 1].astype(np.int32) << 8) | (b[:, 2].astype(np.int8).astype(np.int32) << 16))
        x = x.astype(np.float32) / float(1 << 23)
    elif width in (1, 2, 4):
        dt = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
        x = np.frombuffer(raw, dtype=dt).astype(np.float32)
        x = (x - 128.0) / 128.0 if width == 1 else x / float(1 << (8 * width - 1))
    else:
        raise TrainError(f"{p}: {8 * width}-bit samples are not supported")
    x = x.reshape(-1, channels).mean(axis=1)
    if len(x) == 0:
        raise TrainError(f"{p}: no audio samples")
    if len(x) > MAX_SECONDS * SAMPLE_RATE:
        raise TrainError(f"{p}: {len(x) / SAMPLE_RATE:.1f} s is longer than 30 s; segment it first")
    return x


@dataclass
class Clip:
    name: str
    samples: np.ndarray
    reference: dict = field(default_factory=dict)


def clips_from_dir(directory: str | Path) -> list[Clip]:
    d = Path(directory)
    if not d.is_dir():
        raise TrainError(f"{d}: not a directory of WAV files")
    files = sorted(d.glob("*.wav"))
    if not files:
        raise TrainError(f"{d}: no .wav files")
    return [Clip(f.stem, read_wav(f)) for f in files]


def clips_from_segments(segments: str | Path, wav_dir: str | Path) -> list[Clip]:
    """IWSLT/MuST-C layout: a YAML list of {wav, offset, duration}; text files with the same stem
    as the YAML and a language suffix (`talk.en`, `talk.de`) are attached as references."""
    import yaml
    path = Path(segments)
    try:
        entries = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise TrainError(f"{path}: no such segment list") from None
    except yaml.YAMLError as e:
        raise TrainError(f"{path}: not YAML ({e})") from None
    if not isinstance(entries, list) or not entries:
        raise TrainError(f"{path}: expected a non-empty YAML list of segments")
    refs = {p.suffix[1:]: p.read_text(encoding="utf-8").splitlines()
            for p in path.parent.glob(path.stem + ".*") if p.suffix not in (".yaml", ".yml")}
    clips = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "wav" not in e:
            raise TrainError(f"{path}: segment {i} has no `wav` key")
        try:
            offset, duration = float(e.get("offset", 0.0)), e.get("duration")
            duration = None if duration is None else float(duration)
        except (TypeError, ValueError):
            raise TrainError(f"{path}: segment {i}: offset/duration are not numbers") from None
        samples = read_wav(Path(wav_dir) / str(e["wav"]), offset, duration)
        ref = {lang: lines[i] for lang, lines in refs.items() if i < len(lines)}
        clips.append(Clip(f"{Path(str(e['wav'])).stem}:{i}", samples, ref))
    return clips


@dataclass
class SpeechPrompt:
    """A speech translation prompt as model inputs (audio tokens expanded by the processor)."""
    name: str
    lang: str
    input_ids: torch.Tensor          # [T]
    input_features: torch.Tensor     # [n_mels, 3000]
    feature_attention_mask: torch.Tensor  # [3000]


def speech_prompts(checkpoint: Path, clips: list[Clip], langs: list[str]) -> list[SpeechPrompt]:
    from transformers import Qwen2AudioProcessor
    try:
        processor = Qwen2AudioProcessor.from_pretrained(str(checkpoint))
    except (OSError, ValueError, TypeError) as e:
        raise TrainError(f"{checkpoint}: cannot load the Qwen2-Audio processor ({e})") from None
    chat = has_chat_template(Path(checkpoint))
    out = []
    for lang in langs:
        text = translation_prompt(chat, lang)
        for c in clips:
            enc = processor(text=text, audio=[c.samples], sampling_rate=SAMPLE_RATE, return_tensors="pt")
            out.append(SpeechPrompt(c.name, lang, enc["input_ids"][0], enc["input_features"][0],
                                    enc["feature_attention_mask"][0]))
    return out


@dataclass
class TextPrompt:
    """A text translation prompt: kompakt's prompt with the English text where the audio goes
    (the translation meter's text prompt, `kompakt eval --mt-src`)."""
    name: str
    lang: str
    input_ids: torch.Tensor          # [T]


def text_prompts(checkpoint: Path, lines: list[str], langs: list[str]) -> list[TextPrompt]:
    tok = load_tokenizer(Path(checkpoint))
    chat = has_chat_template(Path(checkpoint))
    out = []
    for lang in langs:
        template = translation_prompt(chat, lang)
        for i, line in enumerate(lines):
            text = template.replace("<|audio_bos|><|AUDIO|><|audio_eos|>", line, 1)
            ids = tok.encode(text, add_special_tokens=False).ids
            out.append(TextPrompt(f"line{i + 1}", lang, torch.tensor(ids, dtype=torch.long)))
    return out
