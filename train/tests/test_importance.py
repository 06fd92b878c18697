
import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli
from kompakt_train import checkpoint as ckpt
from kompakt_train import importance
from kompakt_train.arch import Dims
from kompakt_train.data import load_tokenizer, text_windows
from kompakt_train.errors import TrainError


def test_every_structure_gets_a_score(tiny_gqa, texts, clip_dir, tmp_path):
    out = tmp_path / "imp.safetensors"
    r = run_cli("importance", "--teacher", str(tiny_gqa), "--text", *texts["train"], "--audio", str(clip_dir),
                "--lang", "de", "zh", "--window", "32", "--out", str(out))
    assert r.returncode == 0, r.stderr
    imp = load_file(str(out))
    d = Dims.from_config(ckpt.read_config(tiny_gqa))
    assert imp["llm.hidden"].shape == (d.hidden,)
    assert imp["llm.block_influence"].shape == (d.layers,)
    assert imp["audio.block_influence"].shape == (d.audio_layers,)
    for i in range(d.layers):
        assert imp[f"llm.layers.{i}.ffn"].shape == (d.ffn,)
        assert imp[f"llm.layers.{i}.heads"].shape == (d.heads,)
        torch.testing.assert_close(imp[f"llm.layers.{i}.kv_groups"],
                                   imp[f"llm.layers.{i}.heads"].reshape(d.kv_heads, -1).sum(-1))
    for i in range(d.audio_layers):
        assert imp[f"audio.layers.{i}.ffn"].shape == (d.audio_ffn,)
        assert imp[f"audio.layers.{i}.heads"].shape == (d.audio_heads,)
    for k, v in imp.items():
        assert torch.isfinite(v).all() and (v >= 0).all(), k
        assert v.sum() > 0, k
    assert (imp["llm.block_influence"] <= 2).all()


def test_scores_are_the_mean_square_activation(tiny_gqa, texts):
    """Against an independent computation: the FFN score of layer 0 is the mean over tokens of
    (silu(gate x) * up x)^2, x being the post-attention RMSNorm output."""
    model = ckpt.load_model(tiny_gqa)
    d = Dims.from_config(ckpt.read_config(tiny_gqa))
    windows = text_windows(load_tokenizer(tiny_gqa), texts["heldout"][:1], 24)
    imp, counts = importance.measure(model, d, windows, [], log=lambda *_: None)
    layer = model.model.language_model.layers[0]
    captured = []
    h = layer.post_attention_layernorm.register_forward_hook(lambda m, i, o: captured.append(o.detach()))
    with torch.no_grad():
        for w in windows:
            model(input_ids=w[None])
    h.remove()
    x = torch.cat([c.reshape(-1, d.hidden) for c in captured])
    act = torch.nn.functional.silu(layer.mlp.gate_proj(x)) * layer.mlp.up_proj(x)
    torch.testing.assert_close(imp["llm.layers.0.ffn"], act.pow(2).mean(0).detach(), rtol=1e-4, atol=1e-6)
    assert counts["tokens"] == sum(len(w) for w in windows)


def test_a_file_from_another_model_is_refused(tiny_gqa, tiny_mha, texts, tmp_path):
    out = tmp_path / "imp.safetensors"
    assert run_cli("importance", "--teacher", str(tiny_gqa), "--text", texts["train"][0], "--out", str(out)).returncode == 0
    with pytest.raises(TrainError, match="other dimensions"):
        importance.load(out, Dims.from_config(ckpt.read_config(tiny_mha)))
    r = run_cli("prune", "--teacher", str(tiny_mha), "--importance", str(out), "--hidden", "32",
                "--out", str(tmp_path / "s"))
    assert r.returncode == 2 and "other dimensions" in r.stderr
    not_imp = tmp_path / "x.safetensors"
    not_imp.write_bytes(b"garbage")
    with pytest.raises(TrainError, match="not a safetensors importance file"):
        importance.load(not_imp, Dims.from_config(ckpt.read_config(tiny_gqa)))


def test_no_input_and_bad_wavs_are_named(tiny_gqa, tmp_path):
    r = run_cli("importance", "--teacher", str(tiny_gqa), "--out", str(tmp_path / "i.safetensors"))
    assert r.returncode == 2 and "give calibration data" in r.stderr
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "noise.wav").write_bytes(b"RIFF\x00\x00\x00\x00not a wav at all")
    r = run_cli("importance", "--teacher", str(tiny_gqa), "--audio", str(tmp_path / "clips"),
                "--out", str(tmp_path / "i.safetensors"))
    assert r.returncode == 2 and "noise.wav: not a PCM WAV file" in r.stderr, r.stderr
    assert not (tmp_path / "i.safetensors").exists()
