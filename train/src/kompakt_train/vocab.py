"""Vocabulary trimming for students: the same rules as `kompakt convert --keep-vocab`
(converter/src/vocab.rs), so the rows a student is trained on are the rows its `.kpk` keeps.

Always kept: every added/special token, the 256 byte-level tokens (any text still encodes, byte by
byte at worst) and the tokens of kompakt's translation prompts. `auto` adds every token whose text
is made only of Latin and Han script, digits, punctuation and whitespace (or is a fragment of a
multi-byte UTF-8 character); corpus files add the tokens that occur when tokenizing them.

`kompakt-train prune --keep-vocab` writes the kept ids to `kompakt_vocab.json` in the student;
`distill` then computes the student's lm_head on those rows only (cheaper, and the distribution
the `.kpk` will have), and `kompakt convert` trims the file to them unless told otherwise. The
checkpoint keeps every row, so it still loads in `transformers` with the original tokenizer.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .data import INSTRUCTIONS, has_chat_template, load_tokenizer, prompt_text, read_text
from .errors import TrainError

FILE = "kompakt_vocab.json"


def byte_level_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode table: the character of each byte."""
    def printable(b: int) -> bool:
        return 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255
    out, n = [], 0
    for b in range(256):
        if printable(b):
            out.append(chr(b))
        else:
            n += 1
            out.append(chr(255 + n))
    return out


def _wanted(c: str) -> bool:
    u = ord(c)
    return (u < 128 or 0x00A0 <= u <= 0x024F or 0x1E00 <= u <= 0x1EFF or 0x2000 <= u <= 0x206F
            or 0x20A0 <= u <= 0x20CF or 0x3000 <= u <= 0x303F or 0x3400 <= u <= 0x4DBF
            or 0x4E00 <= u <= 0x9FFF or 0xFF00 <= u <= 0xFFEF)


def select(checkpoint: Path, vocab_rows: int, keep: list[str]) -> list[int]:
    """Sorted kept ids below `vocab_rows`; `keep` is `["auto"]` or corpus file paths."""
    tok = load_tokenizer(checkpoint)
    alphabet = byte_level_alphabet()
    index = {c: b for b, c in enumerate(alphabet)}
    kept: set[int] = set(tok.get_added_tokens_decoder().keys())
    for c in alphabet:
        i = tok.token_to_id(c)
        if i is not None:
            kept.add(i)
    chat = has_chat_template(checkpoint)
    for instruction in INSTRUCTIONS.values():
        kept.update(tok.encode(prompt_text(chat, instruction), add_special_tokens=False).ids)
    if keep == ["auto"]:
        for i in range(vocab_rows):
            t = tok.id_to_token(i)
            if t is None or any(c not in index for c in t):
                continue  # an added token (decided above) or no token
            raw = bytes(index[c] for c in t)
            try:
                ok = all(_wanted(c) for c in raw.decode("utf-8"))
            except UnicodeDecodeError:
                ok = all(b < 0xF0 for b in raw)  # a fragment of a 2- or 3-byte character
            if ok:
                kept.add(i)
    else:
        if "auto" in keep:
            raise TrainError("--keep-vocab auto cannot be combined with corpus files")
        for f in keep:
            for line in read_text(f).splitlines():
                kept.update(tok.encode(line, add_special_tokens=False).ids)
    return sorted(i for i in kept if i < vocab_rows)


def write(student: Path, ids: list[int], rule: list[str]) -> None:
    (student / FILE).write_text(json.dumps({"rule": rule, "n_kept": len(ids), "kept_ids": ids}) + "\n")


def read(checkpoint: Path) -> torch.Tensor | None:
    """The kept ids of a student (int64 tensor), or None when it keeps its whole vocabulary."""
    p = Path(checkpoint) / FILE
    if not p.is_file():
        return None
    try:
        ids = json.loads(p.read_text())["kept_ids"]
        t = torch.tensor(ids, dtype=torch.long)
    except (ValueError, KeyError, TypeError) as e:
        raise TrainError(f"{p}: not a kept-vocabulary file ({e})") from None
    if t.ndim != 1 or len(t) == 0 or bool((t[1:] <= t[:-1]).any()) or int(t[0]) < 0:
        raise TrainError(f"{p}: `kept_ids` must be a non-empty, sorted list of distinct token ids")
    return t


def restrict_head(head: torch.nn.Linear, kept: torch.Tensor) -> None:
    """Makes `head` compute logits over the kept ids only, in their order. The weight is the same
    parameter (its name, its saving, its sharding unchanged); gradients reach the kept rows only."""
    if int(kept[-1]) >= head.weight.shape[0]:
        raise TrainError(f"the kept vocabulary holds id {int(kept[-1])} but the lm_head has "
                         f"{head.weight.shape[0]} rows")
    head.register_buffer("kompakt_kept", kept.clone(), persistent=False)

    def forward(x: torch.Tensor) -> torch.Tensor:
        w = head.weight.index_select(0, head.kompakt_kept)
        b = head.bias.index_select(0, head.kompakt_kept) if head.bias is not None else None
        return torch.nn.functional.linear(x, w, b)

    head.forward = forward


def remap_targets(ids: torch.Tensor, lp: torch.Tensor, tail: torch.Tensor, pos: torch.Tensor):
    """Teacher top-k targets (full-vocabulary ids) onto kept-row positions: entries whose id is
    not kept join the tail; returns (positions, log-probs, log tail, valid mask)."""
    p = pos[ids.long()]
    valid = p >= 0
    dropped = torch.where(valid, torch.zeros_like(lp), lp.exp()).sum(-1)
    tail = torch.log(tail.exp() + dropped).clamp(max=0.0)
    lp = torch.where(valid, lp, torch.full_like(lp, -1e4))
    return p.clamp(min=0), lp, tail, valid
