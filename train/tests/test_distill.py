import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from conftest import run_cli
from kompakt_train.distill import batch_order, hidden_loss, kd_loss, topk_targets


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def student(soft_teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("student") / "s"
    r = run_cli("prune", "--teacher", str(soft_teacher), "--hidden", "40", "--ffn", "97", "--heads", "2",
                "--kv-heads", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


def distill_args(teacher, student, texts, out, *extra) -> list[str]:
    return ["distill", "--teacher", str(teacher), "--student", str(student), "--out", str(out),
            "--text", *texts["train"], "--eval-text", *texts["heldout"], "--window", "32", "--lr", "3e-3",
            "--warmup-steps", "3", "--eval-every", "10", "--save-every", "5", "--threads", "1", "--json", *extra]


def distill(teacher, student, texts, out, *extra):
    r = run_cli(*distill_args(teacher, student, texts, out, *extra))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_topk_loss_equals_full_kl_when_k_is_the_vocabulary():
    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(5, 50, generator=g) * 3, torch.randn(5, 50, generator=g) * 3
    ids, lp, tail = topk_targets(t, 50, 1.0)
    full = (t.log_softmax(-1).exp() * (t.log_softmax(-1) - s.log_softmax(-1))).sum(-1).mean()
    torch.testing.assert_close(kd_loss(s, ids, lp, tail, 1.0), full, rtol=1e-4, atol=1e-5)
    # With k < V the tail bucket keeps it a KL between two distributions: >= 0, and 0 for s == t.
    ids, lp, tail = topk_targets(t, 8, 2.0)
    assert kd_loss(s, ids, lp, tail, 2.0) > 0
    assert abs(kd_loss(t, ids, lp, tail, 2.0).item()) < 1e-5


def test_batch_order_covers_every_example_once_per_epoch():
    seen = [i for step in range(5) for i in batch_order(10, 2, step, seed=3)]
    assert sorted(seen) == list(range(10))
    assert batch_order(10, 4, 7, 3) == batch_order(10, 4, 7, 3)


def test_distillation_lowers_heldout_kl_and_writes_a_checkpoint(soft_teacher, student, texts, kompakt, tmp_path):
    out = tmp_path / "d"
    res = distill(soft_teacher, student, texts, out, "--steps", "30")
    assert res["steps"] == 30 and res["tokens"] > 0
    # Measured 3.53 -> 2.52 (0.71x) with this student and data; the bound leaves room for BLAS noise.
    assert res["kl_final"] < 0.8 * res["kl_initial"], res
    assert res["top1_final"] >= res["top1_initial"], res
    for f in ("config.json", "model.safetensors", "tokenizer.json", "kompakt_train.json", "learning_curve.png",
              "learning_curve.json", "distill_config.json"):
        assert (out / f).is_file(), f
    prov = json.loads((out / "kompakt_train.json").read_text())
    assert [s["stage"] for s in prov["steps_done"]] == ["prune", "distill"]
    assert prov["steps_done"][1]["tokens"] == res["tokens"]
    kpk = tmp_path / "d.kpk"
    c = subprocess.run([str(kompakt), "convert", "--checkpoint", str(out), "--out", str(kpk), "--dtype", "f16"],
                       capture_output=True, text=True)
    assert c.returncode == 0, c.stderr
    i = subprocess.run([str(kompakt), "inspect", "--json", str(kpk)], capture_output=True, text=True)
    techniques = json.loads(i.stdout)["techniques"]
    assert any("knowledge distillation" in t and f"{res['tokens']} tokens" in t for t in techniques), techniques


def test_resume_continues_with_the_same_next_step_loss(soft_teacher, student, texts, tmp_path):
    whole = distill(soft_teacher, student, texts, tmp_path / "a", "--steps", "12")
    first = run_cli(*distill_args(soft_teacher, student, texts, tmp_path / "b", "--steps", "12",
                                  "--stop-after-steps", "7"))
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["stopped_at_step"] == 7
    assert not (tmp_path / "b").exists()  # no output directory until the run is complete
    resumed = distill(soft_teacher, student, texts, tmp_path / "b", "--steps", "12")
    assert resumed["steps"] == 12
    # Step 8 (the first after the restart) and every later one: same loss as the uninterrupted run.
    torch.testing.assert_close(torch.tensor(resumed["losses"][7:]), torch.tensor(whole["losses"][7:]),
                               rtol=1e-5, atol=1e-6)
    assert resumed["kl_final"] == pytest.approx(whole["kl_final"], rel=1e-5)


def test_two_gloo_processes_match_one(soft_teacher, student, texts, tmp_path):
    one = distill(soft_teacher, student, texts, tmp_path / "one", "--steps", "6", "--batch-size", "2")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", str(free_port()), "-m", "kompakt_train",
                        *distill_args(soft_teacher, student, texts, tmp_path / "two", "--steps", "6",
                                      "--batch-size", "1")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    two = json.loads(r.stdout)
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["tokens"] == one["tokens"]
    torch.testing.assert_close(torch.tensor(two["losses"]), torch.tensor(one["losses"]), rtol=1e-4, atol=1e-5)
    assert two["kl_final"] == pytest.approx(one["kl_final"], rel=1e-4)


def test_speech_prompts_are_distilled_on_the_teachers_translation(soft_teacher, student, texts, clip_dir, tmp_path):
    res = distill(soft_teacher, student, texts, tmp_path / "sp", "--audio", str(clip_dir), "--langs", "de", "zh",
                  "--max-new-tokens", "6", "--steps", "3")
    assert res["steps"] == 3
    # The cache holds the two translations (6 new tokens each at most) beside the text windows.
    speech = torch.load(next((tmp_path / "sp.work").glob("teacher-*/speech.pt")), weights_only=False)
    assert len(speech) == 2 and {s.speech.lang for s in speech} == {"de", "zh"}
    assert all(0 < s.n_targets <= 6 for s in speech)


def test_bad_input(soft_teacher, student, texts, tmp_path):
    def fails(*args, match):
        r = run_cli("distill", "--teacher", str(soft_teacher), "--out", str(tmp_path / "x"), *args)
        assert r.returncode == 2, r.stderr
        assert match in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "x").exists()

    fails("--student", str(student), "--steps", "1", match="no training data")
    fails("--student", str(student), "--text", *texts["train"], match="give --steps or --tokens")
    fails("--student", str(tmp_path), "--text", *texts["train"], "--steps", "1", match="config.json is missing")
    fails("--student", str(student), "--segments", str(tmp_path / "s.yaml"), "--steps", "1", match="--wav-dir")


def test_hidden_state_loss_is_relative_and_zero_on_the_teacher():
    g = torch.Generator().manual_seed(2)
    h = torch.randn(7, 16, generator=g)
    assert hidden_loss(h, h).item() == 0.0
    assert abs(hidden_loss(torch.zeros_like(h), h).item() - 1.0) < 1e-6
    assert abs(hidden_loss(3 * h, 3 * h + 3).item() - hidden_loss(h, h + 1).item()) < 1e-5


def test_hidden_state_loss_trains_on_the_kept_channels(soft_teacher, student, texts, tmp_path):
    kept = json.loads((student / "kompakt_train.json").read_text())["steps_done"][0]["hidden_kept"]
    assert len(kept) == 40 and kept == sorted(kept)
    out = tmp_path / "h"
    r = run_cli(*distill_args(soft_teacher, student, texts, out, "--steps", "20", "--hidden-loss", "1"))
    assert r.returncode == 0, r.stderr
    assert "hidden-state loss: weight 1.0, on 40 of the teacher's 64 channels" in r.stderr
    res = json.loads(r.stdout)
    assert res["kl_final"] < 0.8 * res["kl_initial"], res
    loss = json.loads((out / "kompakt_train.json").read_text())["steps_done"][1]["loss"]
    assert loss.endswith("+ 1.0 x final hidden-state MSE"), loss


def test_text_translation_prompts_are_distilled_on_the_teachers_answers(soft_teacher, student, texts, tmp_path):
    out = tmp_path / "mt"
    r = run_cli(*distill_args(soft_teacher, student, texts, out, "--steps", "20", "--mt-src", texts["train"][0],
                              "--langs", "de", "zh", "--max-new-tokens", "8"))
    assert r.returncode == 0, r.stderr
    n_lines = sum(1 for line in open(texts["train"][0], encoding="utf-8") if line.strip())
    assert f"{n_lines} text lines x 2 languages" in r.stderr
    assert f"teacher: translated {2 * n_lines}/{2 * n_lines} prompts" in r.stderr
    res = json.loads(r.stdout)
    # Measured 3.53 -> 2.87 (0.81x): half the steps' examples are now translations, and the
    # held-out KL is on plain text.
    assert res["kl_final"] < 0.9 * res["kl_initial"], res
    data = json.loads((out / "kompakt_train.json").read_text())["steps_done"][1]["data"]
    assert data["mt_src"] == texts["train"][0]


def test_batched_teacher_translations_equal_one_at_a_time(soft_teacher, texts):
    from kompakt_train import checkpoint as ckpt
    from kompakt_train.data import text_prompts
    from kompakt_train.distill import teacher_translations
    lines = [x for x in open(texts["heldout"][0], encoding="utf-8").read().splitlines() if x.strip()][:5]
    prompts = text_prompts(soft_teacher, lines, ["de", "zh"])
    teacher = ckpt.load_model(soft_teacher).eval()
    eos = teacher.generation_config.eos_token_id
    eos = eos if isinstance(eos, list) else [eos]
    one = teacher_translations(teacher, prompts, eos, 12, "cpu", lambda *_: None, batch=1)
    many = teacher_translations(teacher, prompts, eos, 12, "cpu", lambda *_: None, batch=4)
    assert len(one) == len(many) == 10
    for a, b in zip(one, many):
        assert a.loss_from == b.loss_from
        assert a.input_ids.tolist() == b.input_ids.tolist()
    assert any(e.n_targets > 1 for e in one)  # the answers are not empty
