"""Shared fixtures: the repository's tiny random-weight Qwen2-Audio checkpoints (tests/fixtures),
a softer teacher made from one of them, text files, and the `kompakt` binary."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
DATA = Path(__file__).resolve().parent / "data"

torch.set_num_threads(1)


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`kompakt-train ARGS` in a subprocess (as a user runs it)."""
    e = dict(os.environ, **(env or {}))
    e.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run([sys.executable, "-m", "kompakt_train", *args], capture_output=True, text=True,
                          env=e, cwd=cwd)


@pytest.fixture(scope="session")
def tiny_gqa() -> Path:
    return FIXTURES / "models" / "tiny-gqa"


@pytest.fixture(scope="session")
def tiny_mha() -> Path:
    return FIXTURES / "models" / "tiny-mha"


@pytest.fixture(scope="session")
def soft_teacher(tmp_path_factory, tiny_gqa) -> Path:
    """tiny-gqa with its lm_head divided by 8: the fixture's logits are spread over tens of units
    (for clear greedy decisions), which makes every KL huge; this teacher's are not."""
    from safetensors.torch import load_file, save_file
    d = tmp_path_factory.mktemp("soft") / "teacher"
    shutil.copytree(tiny_gqa, d)
    sd = load_file(str(d / "model.safetensors"))
    sd["language_model.lm_head.weight"] = sd["language_model.lm_head.weight"] / 8
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


@pytest.fixture(scope="session")
def texts() -> dict[str, list[str]]:
    return {"train": [str(DATA / f"train.{lang}") for lang in ("en", "de", "zh")],
            "heldout": [str(DATA / f"heldout.{lang}") for lang in ("en", "de", "zh")]}


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("clips")
    shutil.copy(FIXTURES / "audio" / "short_16k_mono_s16.wav", d / "short.wav")
    return d


@pytest.fixture(scope="session")
def kompakt() -> Path:
    """The kompakt CLI: $KOMPAKT_BIN, else the newer of target/release and target/debug
    (scripts/test.sh builds it before the Python tests run)."""
    env = os.environ.get("KOMPAKT_BIN")
    candidates = [Path(env)] if env else [ROOT / "target" / "release" / "kompakt", ROOT / "target" / "debug" / "kompakt"]
    found = [c for c in candidates if c.is_file()]
    if found:
        return max(found, key=lambda c: c.stat().st_mtime)  # the most recently built
    pytest.fail("the kompakt binary is missing: run `cargo build -p kompakt-cli` or set KOMPAKT_BIN")
