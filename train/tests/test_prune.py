import json
import shutil
import subprocess

import pytest
import torch

from conftest import run_cli
from kompakt_train import checkpoint as ckpt
from kompakt_train.arch import BIN_LIMITS, Dims
from kompakt_train.errors import TrainError
from kompakt_train.prune import estimate_bytes, plan_for_bin

# Qwen2-Audio-7B's published dimensions.
QWEN2_AUDIO_7B = Dims(hidden=4096, layers=32, heads=32, kv_heads=32, head_dim=128, ffn=11008, vocab=156032,
                      d_model=1280, audio_layers=32, audio_heads=20, audio_ffn=5120, n_mels=128,
                      audio_positions=1500)


def logits(model_dir, ids):
    m = ckpt.load_model(model_dir)
    with torch.no_grad():
        return m(input_ids=ids).logits


def test_param_count_matches_the_checkpoint(tiny_gqa, tiny_mha):
    for d in (tiny_gqa, tiny_mha):
        n = sum(t.numel() for t in ckpt.read_state_dict(d).values())
        assert Dims.from_config(ckpt.read_config(d)).params()["total"] == n


def test_7b_param_count_is_the_published_one():
    p = QWEN2_AUDIO_7B.params()
    assert abs(p["total"] - 8.397e9) < 0.005e9, p
    assert abs(p["llm_layers"] - 6.477e9) < 0.005e9, p


@pytest.mark.parametrize("name", ["tiny_gqa", "tiny_mha"])
def test_keeping_every_dimension_reproduces_the_teacher_exactly(name, request, tmp_path):
    teacher = request.getfixturevalue(name)
    r = run_cli("prune", "--teacher", str(teacher), "--out", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr
    ids = torch.randint(0, 450, (1, 33), generator=torch.Generator().manual_seed(1))
    assert torch.equal(logits(teacher, ids), logits(tmp_path / "s", ids))
    prov = json.loads((tmp_path / "s" / ckpt.PROVENANCE).read_text())
    assert prov["teacher_dims"] == prov["student_dims"]


def test_pruning_drops_the_least_important_structures(tiny_gqa, tmp_path):
    """Zero one FFN neuron and one KV group's query heads in the teacher: activation importance must
    rank them last, so a student one neuron / one group smaller is the teacher minus exactly
    those (same logits)."""
    from safetensors.torch import load_file, save_file
    t = tmp_path / "t"
    shutil.copytree(tiny_gqa, t)
    sd = load_file(str(t / "model.safetensors"))
    for layer in (0, 1):
        p = f"language_model.model.layers.{layer}."
        sd[p + "mlp.down_proj.weight"][:, 7] = 0  # neuron 7 contributes nothing
        sd[p + "mlp.up_proj.weight"][7] = 0       # and has zero activation
        sd[p + "self_attn.o_proj.weight"][:, 32:64] = 0  # KV group 1 (query heads 2, 3): no output
        sd[p + "self_attn.v_proj.weight"][16:32] = 0
        sd[p + "self_attn.v_proj.bias"][16:32] = 0
    save_file(sd, str(t / "model.safetensors"), metadata={"format": "pt"})
    text = tmp_path / "t.txt"
    text.write_text("The weather is nice today, so we will walk to the station.\n" * 4)
    r = run_cli("importance", "--teacher", str(t), "--text", str(text), "--window", "16", "--out",
                str(tmp_path / "imp.safetensors"))
    assert r.returncode == 0, r.stderr
    r = run_cli("prune", "--teacher", str(t), "--importance", str(tmp_path / "imp.safetensors"),
                "--ffn", "159", "--heads", "2", "--kv-heads", "1", "--out", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr
    ids = torch.randint(0, 450, (1, 20), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(logits(t, ids), logits(tmp_path / "s", ids), rtol=1e-5, atol=1e-4)


def test_odd_student_loads_converts_and_matches_transformers(tiny_gqa, clip_dir, kompakt, tmp_path):
    """A student with odd dimensions is a valid checkpoint: transformers loads it, `kompakt convert`
    converts it, and kompakt's greedy translation equals transformers' (f32 both)."""
    from kompakt_train.data import clips_from_dir, speech_prompts
    imp = tmp_path / "imp.safetensors"
    r = run_cli("importance", "--teacher", str(tiny_gqa), "--text", str(clip_dir.parent / "none.txt"), "--out", str(imp))
    assert r.returncode == 2 and "none.txt: no such text file" in r.stderr, r.stderr
    r = run_cli("importance", "--teacher", str(tiny_gqa), "--audio", str(clip_dir), "--out", str(imp))
    assert r.returncode == 0, r.stderr
    student = tmp_path / "student"
    r = run_cli("prune", "--teacher", str(tiny_gqa), "--importance", str(imp), "--hidden", "40", "--ffn", "97",
                "--heads", "2", "--kv-heads", "1", "--audio-layers", "1", "--audio-ffn", "77", "--out", str(student))
    assert r.returncode == 0, r.stderr
    cfg = json.loads((student / "config.json").read_text())
    assert cfg["text_config"]["hidden_size"] == 40 and cfg["text_config"]["head_dim"] == 16
    assert cfg["audio_config"]["encoder_layers"] == 1

    model = ckpt.load_model(student)
    p = speech_prompts(student, clips_from_dir(clip_dir), ["de"])[0]
    with torch.no_grad():
        gen = model.generate(input_ids=p.input_ids[None], input_features=p.input_features[None],
                             feature_attention_mask=p.feature_attention_mask[None], max_new_tokens=12,
                             do_sample=False, num_beams=1, repetition_penalty=1.0, eos_token_id=[456, 458])
    want = gen[0, len(p.input_ids):].tolist()

    kpk = tmp_path / "student.kpk"
    c = subprocess.run([str(kompakt), "convert", "--checkpoint", str(student), "--out", str(kpk), "--dtype", "f32"],
                       capture_output=True, text=True)
    assert c.returncode == 0, c.stderr
    t = subprocess.run([str(kompakt), "translate", "--model", str(kpk), "--lang", "de", "--max-tokens", "12",
                        "--json", str(clip_dir / "short.wav")], capture_output=True, text=True)
    assert t.returncode == 0, t.stderr
    got = json.loads(t.stdout.splitlines()[0])["token_ids"]
    assert got == want
    # Prompt logits within tests/parity.rs's tolerance (max |d| / max |logit| < 1e-3, f32).
    dump = tmp_path / "dump"
    e = subprocess.run([str(kompakt), "eval", "--model", str(kpk), "--dump", str(dump), "--audio", str(clip_dir),
                        "--prompt-lang", "de", "--threads", "1"], capture_output=True, text=True)
    assert e.returncode == 0, e.stderr
    audio = json.loads((dump / "dump.json").read_text())["audio"][0]
    assert audio["ids"] == p.input_ids.tolist()
    ours = torch.from_file(str(dump / audio["logits"]), size=audio["rows"] * audio["vocab"], dtype=torch.float32)
    with torch.no_grad():
        ref = model(input_ids=p.input_ids[None], input_features=p.input_features[None],
                    feature_attention_mask=p.feature_attention_mask[None]).logits[0]
    rel = (ours.reshape(audio["rows"], audio["vocab"]) - ref).abs().max() / ref.abs().max()
    assert rel < 1e-3, rel
    print(f"relative logit difference {rel:.2e}")
    i = subprocess.run([str(kompakt), "inspect", "--json", str(kpk)], capture_output=True, text=True)
    assert i.returncode == 0, i.stderr
    techniques = json.loads(i.stdout)["techniques"]
    assert any("structured pruning" in x and "hidden 64 -> 40" in x for x in techniques), techniques


def test_bin_plans_fit_and_shrink(tmp_path):
    sizes = []
    for b, bits in ((1, 3.5), (2, 2.5), (3, 2.5)):
        s, size = plan_for_bin(QWEN2_AUDIO_7B, b, bits)
        assert size < BIN_LIMITS[b]
        assert size == estimate_bytes(s, bits)
        s.check(QWEN2_AUDIO_7B)
        sizes.append(s.params()["total"])
    assert sizes[0] > sizes[1] > sizes[2]
    # Width goes first: Bin2 and Bin3 keep every layer.
    assert plan_for_bin(QWEN2_AUDIO_7B, 3, 2.5)[0].layers == 32
    # Bin5 in f16 with the full 156k vocabulary: the narrowest embeddings searched (512 wide) are
    # 160 M parameters, 320 MB; a trimmed vocabulary fits.
    with pytest.raises(TrainError, match="no student shape fits Bin5"):
        plan_for_bin(QWEN2_AUDIO_7B, 5, 16.0)
    s, size = plan_for_bin(QWEN2_AUDIO_7B, 5, 16.0, vocab=16000)
    assert size < 200e6 and s.hidden < 4096 and s.layers < 32


def test_dry_run_prints_the_plan(tiny_gqa, tmp_path):
    r = run_cli("prune", "--teacher", str(tiny_gqa), "--hidden", "32", "--dry-run")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["student"]["hidden"] == 32 and plan["teacher"]["hidden"] == 64
    assert not list(tmp_path.iterdir())


def test_bad_input_is_named_and_leaves_nothing(tiny_gqa, tmp_path):
    out = tmp_path / "out"

    def fails(*args, match):
        r = run_cli(*args)
        assert r.returncode == 2, (r.returncode, r.stderr)
        assert match in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert not out.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], list(tmp_path.iterdir())

    not_audio = tmp_path / "qwen2"
    not_audio.mkdir()
    (not_audio / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    fails("prune", "--teacher", str(not_audio), "--out", str(out), match="model_type is 'qwen2'")
    fails("prune", "--teacher", str(tmp_path / "nowhere"), "--out", str(out), match="not a directory")
    fails("prune", "--teacher", str(tiny_gqa), "--heads", "3", "--kv-heads", "2", "--out", str(out),
          match="not a multiple of --kv-heads")
    fails("prune", "--teacher", str(tiny_gqa), "--heads", "4", "--kv-heads", "1", "--out", str(out),
          match="query heads per KV head")
    fails("prune", "--teacher", str(tiny_gqa), "--ffn", "999", "--out", str(out), match="the teacher has only 160")
    fails("prune", "--teacher", str(tiny_gqa), "--bin", "5", "--bits", "900", "--out", str(out), match="--bits 900")
    # A corrupt checkpoint: the shard is cut short.
    bad = tmp_path / "corrupt"
    shutil.copytree(tiny_gqa, bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    fails("prune", "--teacher", str(bad), "--hidden", "32", "--out", str(out), match="cannot read safetensors")
    # An existing output is refused, not overwritten.
    out.mkdir()
    r = run_cli("prune", "--teacher", str(tiny_gqa), "--out", str(out))
    assert r.returncode == 2 and "already exists" in r.stderr
    assert list(out.iterdir()) == []
