"""Hugging Face Qwen2-Audio checkpoints: validated reading, and writing that never leaves a
directory that looks complete but is not.

The student is a plain `Qwen2AudioForConditionalGeneration` directory (config, safetensors,
tokenizer and processor files) with one extra file, `kompakt_train.json`, that records how it was
made; `kompakt convert` reads that file into the `.kpk`'s provenance.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .errors import TrainError

PROVENANCE = "kompakt_train.json"
# Files a checkpoint carries besides its weights and config, copied from teacher to student.
SIDE_FILES = (
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "processor_config.json",
    "kompakt_vocab.json",
)


def read_config(directory: str | Path) -> dict:
    """`config.json` of a Qwen2-Audio checkpoint, or a TrainError that says what is wrong."""
    d = Path(directory)
    if not d.is_dir():
        raise TrainError(f"{d}: not a directory (expected a Hugging Face checkpoint directory)")
    path = d / "config.json"
    if not path.is_file():
        raise TrainError(f"{d}: config.json is missing (not a Hugging Face checkpoint)")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TrainError(f"{path}: not valid JSON ({e})") from None
    kind = cfg.get("model_type")
    if kind != "qwen2_audio":
        raise TrainError(f"{path}: model_type is {kind!r}, expected 'qwen2_audio' "
                         "(a Qwen2AudioForConditionalGeneration checkpoint)")
    for part in ("text_config", "audio_config"):
        if not isinstance(cfg.get(part), dict):
            raise TrainError(f"{path}: {part} is missing")
    return cfg


def shard_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise TrainError(f"{index}: not a safetensors index ({e})") from None
        files = sorted({directory / f for f in weight_map.values()})
    elif (directory / "model.safetensors").is_file():
        files = [directory / "model.safetensors"]
    else:
        raise TrainError(f"{directory}: no model.safetensors or model.safetensors.index.json")
    for f in files:
        if not f.is_file():
            raise TrainError(f"{f}: shard named in the index is missing")
    return files


def read_state_dict(directory: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint in their stored dtype, by their published names."""
    d = Path(directory)
    read_config(d)
    state: dict[str, torch.Tensor] = {}
    for f in shard_files(d):
        try:
            state.update(load_file(str(f)))
        except (SafetensorError, OSError) as e:
            raise TrainError(f"{f}: cannot read safetensors ({e})") from None
    return state


def fingerprint(directory: str | Path) -> str:
    """A short hash of a checkpoint's config and shard headers (names, shapes, sizes, mtimes are
    not used: two copies of one checkpoint hash the same)."""
    d = Path(directory)
    h = hashlib.sha256((d / "config.json").read_bytes())
    for f in shard_files(d):
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            h.update(fh.read(min(n, 1 << 24)))
            h.update(str(f.stat().st_size).encode())
    return h.hexdigest()[:16]


def load_model(directory: str | Path, dtype: torch.dtype = torch.float32):
    """The checkpoint as a transformers model (eager attention: the reference kompakt matches)."""
    from transformers import Qwen2AudioForConditionalGeneration

    read_config(directory)
    try:
        return Qwen2AudioForConditionalGeneration.from_pretrained(
            str(directory), dtype=dtype, attn_implementation="eager")
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise TrainError(f"{directory}: transformers cannot load it: {e}") from None


def read_provenance(directory: str | Path) -> dict:
    p = Path(directory) / PROVENANCE
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise TrainError(f"{p}: not valid JSON ({e})") from None


class OutputDir:
    """Writes a directory under a temporary name and renames it into place on `commit()`, so an
    interrupted or failed run leaves no directory at the final path."""

    def __init__(self, out: str | Path, overwrite: bool = False):
        self.final = Path(out)
        if self.final.exists() and not overwrite:
            raise TrainError(f"{self.final}: already exists (choose another --out or remove it)")
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.final.parent / f".{self.final.name}.partial-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir()
        self.overwrite = overwrite

    @property
    def path(self) -> Path:
        return self.tmp

    def commit(self) -> Path:
        if self.final.exists() and self.overwrite:
            shutil.rmtree(self.final)
        os.replace(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "OutputDir":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is not None:
            self.abort()


def copy_side_files(src: Path, dst: Path) -> None:
    for name in SIDE_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def write_checkpoint(dst: Path, state: dict[str, torch.Tensor], config: dict, side_files_from: Path,
                     provenance: dict, max_shard_bytes: int = 4 << 30) -> None:
    """Safetensors shards (+ index when more than one), config.json, the side files and
    kompakt_train.json into `dst` (an existing, empty directory)."""
    names = sorted(state)
    shards: list[list[str]] = [[]]
    size = 0
    for n in names:
        b = state[n].numel() * state[n].element_size()
        if shards[-1] and size + b > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(n)
        size += b
    if len(shards) == 1:
        save_file({n: state[n].contiguous() for n in shards[0]}, str(dst / "model.safetensors"),
                  metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, group in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file({n: state[n].contiguous() for n in group}, str(dst / fname), metadata={"format": "pt"})
            weight_map.update({n: fname for n in group})
        total = sum(t.numel() * t.element_size() for t in state.values())
        (dst / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    copy_side_files(side_files_from, dst)
    write_provenance(dst, provenance)


def write_provenance(dst: Path, provenance: dict) -> None:
    record = dict(provenance)
    record.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    record.setdefault("kompakt_train", __version__)
    (dst / PROVENANCE).write_text(json.dumps(record, indent=2) + "\n")
