"""Tests of the Python binding against the `kompakt` CLI on the fixture model.

Run with ``python3 -m pytest bindings/python`` or ``python3
bindings/python/test_kompakt.py`` (no pytest needed). Environment:
``KOMPAKT_LIB`` (libkompakt.so), ``KOMPAKT_BIN`` (the CLI), ``KOMPAKT_MODEL``
(a converted fixture); whatever is missing is taken from
``$CARGO_TARGET_DIR`` (or ``target/``), release then debug, and built with
cargo when absent.
"""

import array
import json
import os
import subprocess
import sys
import tempfile
import threading
import wave

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WAV = os.path.join(ROOT, "tests", "fixtures", "audio", "short_16k_mono_s16.wav")
LONG_WAV = os.path.join(ROOT, "tests", "fixtures", "longform", "talk.wav")  # 41 s
# Whether the library under test has the Hugging Face tokenizer (cargo
# feature `tokenizer`): the shipped build leaves it out and refuses one-off
# instructions with UNSUPPORTED; bindings/c/test.sh says which it built.
LIB_TOKENIZER = os.environ.get("KOMPAKT_LIB_TOKENIZER", "1") == "1"
MAX_TOKENS = 16
_TMP = tempfile.TemporaryDirectory(prefix="kompakt-py-")


def _target_dirs():
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    if not os.path.isabs(target):
        target = os.path.join(ROOT, target)
    return [os.path.join(target, "release"), os.path.join(target, "debug")]


def _built(name):
    for d in _target_dirs():
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    subprocess.run(
        ["cargo", "build", "--release", "-p", "kompakt-capi", "-p", "kompakt-cli"], cwd=ROOT, check=True
    )
    return os.path.join(_target_dirs()[0], name)


if not os.environ.get("KOMPAKT_LIB"):
    os.environ["KOMPAKT_LIB"] = _built("libkompakt.so")
sys.path.insert(0, HERE)
import kompakt  # noqa: E402

_cache = {}


def kompakt_bin():
    if "bin" not in _cache:
        _cache["bin"] = os.environ.get("KOMPAKT_BIN") or _built("kompakt")
    return _cache["bin"]


def model_path():
    if "model" not in _cache:
        path = os.environ.get("KOMPAKT_MODEL")
        if not path:
            path = os.path.join(_TMP.name, "m.kpk")
            subprocess.run(
                [kompakt_bin(), "convert", "--checkpoint",
                 os.path.join(ROOT, "tests", "fixtures", "models", "tiny-mha"),
                 "--out", path, "--dtype", "f32"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        _cache["model"] = path
    return _cache["model"]


def cli(lang="de", beams=1, max_tokens=MAX_TOKENS, instruction=None):
    """The CLI's text (it replaces control characters by spaces and collapses
    whitespace, to keep one line per input) and its token ids."""
    key = ("cli", lang, beams, max_tokens, instruction)
    if key not in _cache:
        args = [kompakt_bin(), "translate", "--model", model_path(), "--lang", lang,
                "--beams", str(beams), "--max-tokens", str(max_tokens), "--json", WAV]
        if instruction is not None:
            args[2:2] = ["--instruction", instruction]
        js = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
        _cache[key] = (js["text"], js["token_ids"])
    return _cache[key]


def shared_model():
    if "m" not in _cache:
        _cache["m"] = kompakt.Model(model_path())
    return _cache["m"]


def raises(status_name, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except kompakt.KompaktError as e:
        assert e.status_name == status_name, f"expected {status_name}, got {e}"
        assert e.message, "empty error message"
        return e
    raise AssertionError(f"expected KompaktError {status_name}, nothing raised")


def read_wav_16k_mono_s16(path):
    with wave.open(path, "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        raw = array.array("h", w.readframes(w.getnframes()))
    if sys.byteorder != "little":
        raw.byteswap()
    return [s / 32768.0 for s in raw]


# ---------------------------------------------------------------- tests


def test_model_info():
    info = shared_model().info
    assert info["architecture"] == "qwen2_audio"
    assert info["languages"] == ["de", "zh"]
    assert info["storage_bytes"] == os.path.getsize(model_path())
    assert info["size_bin"] == 5
    assert info["sample_rate"] == 16000 and info["max_samples"] == 480000
    assert info["n_params"] > 0 and abs(info["bits_per_weight"] - 32.0) < 1e-9
    assert info["instructions"] == {"de": "Translate the English speech into German:",
                                    "zh": "Translate the English speech into Chinese:"}
    assert "{audio}" in info["prompt_template"] and "{instruction}" in info["prompt_template"]


def test_one_off_instruction_equals_cli():
    instr = "Please render this English recording in German."
    if not LIB_TOKENIZER:
        with kompakt.Session(shared_model(), n_threads=1) as s:
            e = raises("UNSUPPORTED", s.translate, WAV, instruction=instr)
            assert "tokenizer" in e.message, e.message
            # The stored prompts need no tokenizer.
            assert flat(s.translate(WAV, max_tokens=MAX_TOKENS)) == cli()[0]
        return
    text, ids = cli(instruction=instr)
    with kompakt.Session(shared_model(), n_threads=1) as s:
        out = s.translate(WAV, instruction=instr, max_tokens=MAX_TOKENS)
        assert flat(out) == text and s.last_token_ids == ids
        assert s.last_token_ids != cli()[1]  # another prompt than the model's own
        raises("INVALID_ARGUMENT", s.translate, WAV, instruction="  ")


def flat(text):
    """The CLI's one-line form of a translation."""
    return " ".join("".join(" " if ord(c) < 32 or 127 <= ord(c) < 160 else c for c in text).split())


def test_translate_equals_cli():
    s = kompakt.Session(shared_model())
    for lang, beams in [("de", 1), ("zh", 1), ("de", 2)]:
        text, ids = cli(lang, beams)
        out = s.translate(WAV, lang=lang, beams=beams, max_tokens=MAX_TOKENS)
        assert flat(out) == text, (lang, beams, out, text)
        assert s.last_token_ids == ids, (lang, beams)
        assert s.last_result()["text"] == out
    s.close()


def test_pcm_and_streaming():
    text, ids = cli()
    s = kompakt.Session(shared_model(), n_threads=1)
    pieces, stages = [], []
    out = s.translate(read_wav_16k_mono_s16(WAV), max_tokens=MAX_TOKENS, on_text=pieces.append,
                      on_progress=lambda stage, done: stages.append(stage))
    assert flat(out) == text
    assert s.last_token_ids == ids
    assert pieces and out.startswith("".join(pieces))
    assert stages[:3] == ["features", "encoder", "prefill"] and stages[-1] == "decode"


def cli_segments(lang="de", max_tokens=8):
    """The CLI's lines for the long recording: (offset, text, ids) each."""
    args = [kompakt_bin(), "translate", "--model", model_path(), "--lang", lang,
            "--max-tokens", str(max_tokens), "--json", LONG_WAV]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return [(j["offset"], j["text"], j["token_ids"]) for j in map(json.loads, out.splitlines())]


def test_long_audio_is_segmented_as_the_cli_does():
    want = cli_segments()
    assert len(want) > 2, want
    with kompakt.Session(shared_model(), n_threads=1) as s:
        for audio in (LONG_WAV, read_wav_16k_mono_s16(LONG_WAV)):
            pieces = []
            text = s.translate(audio, max_tokens=8, on_text=pieces.append)
            segs = s.last_segments()
            assert len(segs) == len(want)
            for seg, (offset, t, ids) in zip(segs, want):
                assert abs(seg["start_s"] - offset) < 1e-9, (seg, offset)
                assert seg["end_s"] > seg["start_s"]
                assert flat(seg["text"]) == t and seg["token_ids"] == ids
            assert text.split("\n") == [seg["text"] for seg in segs]
            assert s.last_token_ids == [i for _, _, ids in want for i in ids]
            assert "".join(pieces).count("\n") == len(want) - 1
        s.translate(WAV, max_tokens=4)
        assert len(s.last_segments()) == 1


def test_session_options():
    text, ids = cli()
    with kompakt.Session(shared_model(), n_threads=1, kv_cache="f32", prefill_chunk=3) as s:
        assert flat(s.translate(WAV, max_tokens=MAX_TOKENS)) == text
        assert s.last_token_ids == ids
    raises("INVALID_ARGUMENT", kompakt.Session, shared_model(), prefill_chunk=-1)
    try:
        kompakt.Session(shared_model(), kv_cache="q8")
        raise AssertionError("kv_cache='q8' was accepted")
    except ValueError as e:
        assert "kv_cache" in str(e)


def test_model_from_bytes_and_session_outlives_model():
    text, _ = cli()
    with open(model_path(), "rb") as f:
        m = kompakt.Model.from_bytes(f.read(), verify_checksums=True)
    s = kompakt.Session(m)
    m.close()
    m.close()  # idempotent
    assert flat(s.translate(WAV, max_tokens=MAX_TOKENS)) == text
    s.close()
    s.close()


def test_huge_pages_model_translates_like_the_mapping():
    if not sys.platform.startswith("linux"):
        return
    text, ids = cli()
    m = kompakt.Model(model_path(), huge_pages=True)
    s = kompakt.Session(m)
    assert flat(s.translate(WAV, max_tokens=MAX_TOKENS)) == text
    assert s.last_token_ids == ids
    s.close()
    m.close()


def test_threads_share_a_model():
    text, _ = cli()
    results = []

    def work():
        with kompakt.Session(shared_model(), n_threads=1) as s:
            results.append(flat(s.translate(WAV, max_tokens=MAX_TOKENS)))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [text] * 3


def test_misuse():
    s = kompakt.Session(shared_model())
    e = raises("UNKNOWN_LANGUAGE", s.translate, WAV, lang="fr")
    assert "de, zh" in e.message
    raises("INVALID_ARGUMENT", s.translate, WAV, beams=0)
    raises("INVALID_ARGUMENT", s.translate, WAV, max_tokens=0)
    raises("CONTEXT_OVERFLOW", s.translate, WAV, max_tokens=2**31 - 1)
    raises("IO", s.translate, os.path.join(_TMP.name, "missing.wav"))
    # Over 30 s is cut at pauses: 31 s of silence is no segment, no text.
    assert s.translate([0.0] * (31 * 16000)) == "" and s.last_segments() == []
    raises("AUDIO", s.translate, [0.0, float("nan")])
    raises("ABORTED", s.translate, WAV, on_text=lambda piece: False)
    raises("ABORTED", s.translate, WAV, on_progress=lambda stage, done: stage != "decode")

    class Boom(Exception):
        pass

    def boom(piece):
        raise Boom(piece)

    try:
        s.translate(WAV, on_text=boom)
        raise AssertionError("the callback's exception was swallowed")
    except Boom:
        pass

    raises("IO", kompakt.Model, os.path.join(_TMP.name, "missing.kpk"))
    with open(model_path(), "rb") as f:
        good = f.read()
    bad = os.path.join(_TMP.name, "truncated.kpk")
    with open(bad, "wb") as f:
        f.write(good[: len(good) // 3])
    raises("CORRUPT_MODEL", kompakt.Model, bad)
    raises("CORRUPT_MODEL", kompakt.Model.from_bytes, b"KOMPAKT\0 not really")
    raises("INVALID_ARGUMENT", kompakt.Session, shared_model(), n_threads=-2)

    # The raw C API: NULL handles and a wrong struct_size.
    lib = kompakt.library()
    p = lib.kpk_translate_default_params()
    p.struct_size -= 4
    text = kompakt.ctypes.c_char_p()
    st = lib.kpk_translate_wav(s._handle, WAV.encode(), kompakt.ctypes.byref(p), kompakt.ctypes.byref(text))
    assert kompakt.STATUS_NAMES[st] == "INVALID_ARGUMENT" and b"struct_size" in lib.kpk_last_error()
    # A caller built against the first header (no `instruction` field) is served.
    p = lib.kpk_translate_default_params()
    p.struct_size -= kompakt.ctypes.sizeof(kompakt.ctypes.c_char_p)
    p.instruction = b"ignored: past the first version's size"
    p.max_tokens = MAX_TOKENS
    st = lib.kpk_translate_wav(s._handle, WAV.encode(), kompakt.ctypes.byref(p), kompakt.ctypes.byref(text))
    assert kompakt.STATUS_NAMES[st] == "OK" and flat(text.value.decode()) == cli()[0]
    st = lib.kpk_translate_wav(None, WAV.encode(), None, None)
    assert kompakt.STATUS_NAMES[st] == "INVALID_ARGUMENT" and b"NULL" in lib.kpk_last_error()
    lib.kpk_session_free(None)
    lib.kpk_model_free(None)

    # Still usable after all of that; closed objects refuse politely.
    assert flat(s.translate(WAV, max_tokens=MAX_TOKENS)) == cli()[0]
    s.close()
    try:
        s.translate(WAV)
        raise AssertionError("a closed session translated")
    except ValueError:
        pass


def main():
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_") and callable(f)]
    passed = failed = 0
    for name, fn in tests:
        try:
            fn()
        except Exception as e:  # report and go on
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
        else:
            passed += 1
            print(f"ok   {name}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
