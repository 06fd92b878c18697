"""Vocabulary trimming in the training stage: the same kept ids as `kompakt convert --keep-vocab`,
a loss over the kept rows that is the KL of the trimmed distributions, and a distilled student
whose `.kpk` keeps exactly the rows it was trained on."""
from __future__ import annotations

import json
import subprocess

import torch
from safetensors.torch import load_file

from conftest import run_cli
from kompakt_train.distill import kd_loss, topk_targets
from kompakt_train.vocab import remap_targets


def inspect(kompakt, kpk) -> dict:
    r = subprocess.run([str(kompakt), "inspect", "--json", str(kpk)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def convert(kompakt, ckpt, kpk, *extra) -> dict:
    r = subprocess.run([str(kompakt), "convert", "--checkpoint", str(ckpt), "--out", str(kpk), "--dtype", "f32",
                        *extra], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return inspect(kompakt, kpk)


def test_kept_ids_are_the_converters(tiny_gqa, texts, kompakt, tmp_path):
    for rule in (["auto"], [texts["train"][0]]):
        student = tmp_path / f"s-{len(rule[0])}"
        r = run_cli("prune", "--teacher", str(tiny_gqa), "--keep-vocab", *rule, "--out", str(student))
        assert r.returncode == 0, r.stderr
        kept = json.loads((student / "kompakt_vocab.json").read_text())["kept_ids"]
        assert 0 < len(kept) < 512
        # The student converts to the kept rows by itself, and they are the rows the converter's
        # own rule keeps from the teacher.
        own = convert(kompakt, student, tmp_path / "own.kpk")
        ref = convert(kompakt, tiny_gqa, tmp_path / "ref.kpk", "--keep-vocab", *rule)
        assert own["llm"]["vocab"] == ref["llm"]["vocab"] == len(kept), (rule, len(kept))
        prov = json.loads((student / "kompakt_train.json").read_text())
        assert prov["steps_done"][0]["vocab"] == {"rule": rule, "kept": len(kept)}
    # The English corpus keeps fewer ids than the script rule.
    assert len(json.loads((tmp_path / f"s-{len('auto')}" / "kompakt_vocab.json").read_text())["kept_ids"]) > \
        len(kept)


def test_loss_over_kept_rows_is_the_kl_of_the_trimmed_distributions():
    g = torch.Generator().manual_seed(1)
    V, k = 40, 40
    t, s_full = torch.randn(6, V, generator=g) * 2, torch.randn(6, V, generator=g) * 2
    kept = torch.tensor(sorted(torch.randperm(V, generator=g)[:25].tolist()))
    pos = torch.full((V,), -1, dtype=torch.long)
    pos[kept] = torch.arange(len(kept))
    ids, lp, tail = topk_targets(t, k, 1.0)
    p_ids, p_lp, p_tail, valid = remap_targets(ids, lp, tail, pos)
    s = s_full[:, kept]
    got = kd_loss(s, p_ids, p_lp, p_tail, 1.0, valid)
    # Dense reference: teacher probabilities on the kept ids, the rest in one bucket (which the
    # student, having no such ids, gives only what its kept top-k misses: here nothing).
    tp = t.softmax(-1)
    sp = s.log_softmax(-1)
    kl_kept = (tp[:, kept] * (tp[:, kept].log() - sp)).sum(-1)
    rest = 1 - tp[:, kept].sum(-1)
    s_rest = torch.full_like(rest, 1e-6)  # kd_loss clamps the student's tail mass at 1e-6
    ref = (kl_kept + rest * (rest.log() - s_rest.log())).mean()
    torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-4)


def test_distilled_student_keeps_its_vocabulary(soft_teacher, texts, kompakt, tmp_path):
    student = tmp_path / "s"
    r = run_cli("prune", "--teacher", str(soft_teacher), "--hidden", "40", "--ffn", "97", "--heads", "2",
                "--kv-heads", "1", "--keep-vocab", *texts["train"], "--out", str(student))
    assert r.returncode == 0, r.stderr
    kept = json.loads((student / "kompakt_vocab.json").read_text())["kept_ids"]
    out = tmp_path / "d"
    r = run_cli("distill", "--teacher", str(soft_teacher), "--student", str(student), "--out", str(out),
                "--text", *texts["train"], "--eval-text", *texts["heldout"], "--window", "32", "--lr", "3e-3",
                "--warmup-steps", "3", "--eval-every", "10", "--steps", "20", "--threads", "1", "--json")
    assert r.returncode == 0, r.stderr
    assert f"vocabulary: {len(kept)} of 512 ids kept" in r.stderr
    res = json.loads(r.stdout)
    assert res["kl_final"] < 0.8 * res["kl_initial"], res
    # Every row is still in the checkpoint; the rows outside the kept ids were never trained.
    before = load_file(str(student / "model.safetensors"))["language_model.lm_head.weight"]
    after = load_file(str(out / "model.safetensors"))["language_model.lm_head.weight"]
    assert after.shape == before.shape
    dropped = torch.ones(before.shape[0], dtype=torch.bool)
    dropped[kept] = False
    assert torch.equal(after[dropped], before[dropped])
    assert not torch.equal(after[~dropped], before[~dropped])
    assert (out / "kompakt_vocab.json").is_file()
    assert convert(kompakt, out, tmp_path / "d.kpk")["llm"]["vocab"] == len(kept)
