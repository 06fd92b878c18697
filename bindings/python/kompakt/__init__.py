"""Python binding of the kompakt runtime (ctypes over libkompakt.so).

    import kompakt
    model = kompakt.Model("model.kpk")
    print(model.info)                      # languages, parameters, size bin, ...
    session = kompakt.Session(model)
    text = session.translate("talk.wav", lang="de",
                             on_text=lambda piece: print(piece, end="", flush=True))

Install with ``pip install ./bindings/python`` (builds libkompakt with cargo
and puts it inside the package). The library is found through the
environment variable ``KOMPAKT_LIB`` (a path to libkompakt.so), then inside
this package, then in the repository's ``target/release`` (or
``$CARGO_TARGET_DIR/release``) when the package is used from a checkout,
then on the system library path. A ``Model`` is immutable and may be shared by threads; a ``Session``
serves one call at a time (``KompaktError`` with status ``BUSY`` otherwise)
and keeps its model alive on its own, so closing the model first is fine.
Failures raise ``KompaktError`` carrying the C status and message.
"""

import array
import ctypes
import ctypes.util
import os
import sys

__all__ = ["Model", "Session", "KompaktError", "STATUS_NAMES", "STAGES", "KV_TYPES", "library"]

ABI_VERSION = 1

STATUS_NAMES = {
    0: "OK",
    1: "INVALID_ARGUMENT",
    2: "IO",
    3: "CORRUPT_MODEL",
    4: "UNSUPPORTED",
    5: "AUDIO",
    6: "ABORTED",
    7: "CONTEXT_OVERFLOW",
    8: "UNKNOWN_LANGUAGE",
    9: "BUSY",
    10: "INTERNAL",
}
STAGES = {0: "features", 1: "encoder", 2: "prefill", 3: "decode"}
KV_TYPES = {"f16": 0, "f32": 1}


class KompaktError(Exception):
    """A failed kompakt call: ``status`` (int), ``status_name`` and ``message``."""

    def __init__(self, status, message):
        self.status = status
        self.status_name = STATUS_NAMES.get(status, "UNKNOWN")
        self.message = message
        super().__init__(f"{self.status_name}: {message}")


class ModelParams(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("verify_checksums", ctypes.c_bool)]


class ModelInfo(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("name", ctypes.c_char_p),
        ("architecture", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("n_params", ctypes.c_uint64),
        ("storage_bytes", ctypes.c_uint64),
        ("size_bin", ctypes.c_int32),
        ("sample_rate", ctypes.c_uint32),
        ("max_samples", ctypes.c_uint64),
        ("n_ctx", ctypes.c_uint32),
        ("n_vocab", ctypes.c_uint32),
        ("bits_per_weight", ctypes.c_double),
    ]


class SessionParams(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("n_threads", ctypes.c_int32),
        ("kv_cache", ctypes.c_int32),
        ("prefill_chunk", ctypes.c_int32),
    ]


TEXT_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_char_p, ctypes.c_void_p)
PROGRESS_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_int32, ctypes.c_float, ctypes.c_void_p)


class TranslateParams(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("language", ctypes.c_char_p),
        ("beams", ctypes.c_int32),
        ("max_tokens", ctypes.c_int32),
        ("on_text", TEXT_CALLBACK),
        ("on_progress", PROGRESS_CALLBACK),
        ("user_data", ctypes.c_void_p),
        ("instruction", ctypes.c_char_p),
    ]


class Result(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("text", ctypes.c_char_p),
        ("token_ids", ctypes.POINTER(ctypes.c_uint32)),
        ("n_tokens", ctypes.c_size_t),
        ("n_audio_tokens", ctypes.c_size_t),
        ("n_prompt_tokens", ctypes.c_size_t),
        ("features_s", ctypes.c_double),
        ("encoder_s", ctypes.c_double),
        ("prefill_s", ctypes.c_double),
        ("decode_s", ctypes.c_double),
    ]


class Segment(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("start_s", ctypes.c_double),
        ("end_s", ctypes.c_double),
        ("text", ctypes.c_char_p),
        ("token_ids", ctypes.POINTER(ctypes.c_uint32)),
        ("n_tokens", ctypes.c_size_t),
    ]


_LIB_NAMES = ("libkompakt.so", "libkompakt.dylib", "kompakt.dll")


def _library_path():
    env = os.environ.get("KOMPAKT_LIB")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    # Installed: inside the package. From a checkout (bindings/python/kompakt):
    # the repository's cargo target directory.
    repo = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(repo, "target")
    if not os.path.isabs(target):
        target = os.path.join(repo, target)
    for d in (here, os.path.join(target, "release")):
        for name in _LIB_NAMES:
            p = os.path.join(d, name)
            if os.path.exists(p):
                return p
    found = ctypes.util.find_library("kompakt")
    if found:
        return found
    raise OSError(
        "libkompakt not found: install the package with `pip install ./bindings/python`, "
        "or build the library (cargo build --release -p kompakt-capi) and set KOMPAKT_LIB "
        "to the path of libkompakt.so"
    )


def _load():
    lib = ctypes.CDLL(_library_path())
    P = ctypes.POINTER
    vp, sz, st = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
    sigs = {
        "kpk_abi_version": (ctypes.c_uint32, []),
        "kpk_version": (ctypes.c_char_p, []),
        "kpk_last_error": (ctypes.c_char_p, []),
        "kpk_status_name": (ctypes.c_char_p, [ctypes.c_int32]),
        "kpk_model_default_params": (ModelParams, []),
        "kpk_model_load": (st, [ctypes.c_char_p, P(ModelParams), P(vp)]),
        "kpk_model_load_from_memory": (st, [ctypes.c_char_p, sz, P(ModelParams), P(vp)]),
        "kpk_model_load_huge_pages": (st, [ctypes.c_char_p, P(ModelParams), P(vp)]),
        "kpk_model_free": (None, [vp]),
        "kpk_model_get_info": (st, [vp, P(ModelInfo)]),
        "kpk_model_prompt_template": (ctypes.c_char_p, [vp]),
        "kpk_model_instruction": (ctypes.c_char_p, [vp, ctypes.c_char_p]),
        "kpk_session_default_params": (SessionParams, []),
        "kpk_translate_default_params": (TranslateParams, []),
        "kpk_session_new": (st, [vp, P(SessionParams), P(vp)]),
        "kpk_session_free": (None, [vp]),
        "kpk_translate_pcm": (st, [vp, P(ctypes.c_float), sz, P(TranslateParams), P(ctypes.c_char_p)]),
        "kpk_translate_wav": (st, [vp, ctypes.c_char_p, P(TranslateParams), P(ctypes.c_char_p)]),
        "kpk_session_last_result": (st, [vp, P(Result)]),
        "kpk_session_segment_count": (st, [vp, P(sz)]),
        "kpk_session_segment": (st, [vp, sz, P(Segment)]),
    }
    for name, (res, args) in sigs.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    if lib.kpk_abi_version() != ABI_VERSION:
        raise OSError(f"libkompakt ABI {lib.kpk_abi_version()}, kompakt.py expects {ABI_VERSION}")
    return lib


_lib = None


def library():
    """The loaded ctypes library (loaded on first use)."""
    global _lib
    if _lib is None:
        _lib = _load()
    return _lib


def _check(status):
    if status != 0:
        msg = library().kpk_last_error()
        raise KompaktError(status, msg.decode("utf-8", "replace") if msg else "")


def _path_bytes(path):
    return os.fsencode(os.fspath(path))


class Model:
    """A loaded ``.kpk`` model: ``Model(path)`` or ``Model.from_bytes(data)``.

    ``huge_pages=True`` (Linux) reads the file into memory backed by 2 MiB
    transparent huge pages instead of mapping it: faster decoding, a slower
    cold load, private memory the size of the file.
    """

    def __init__(self, path=None, *, verify_checksums=False, huge_pages=False, _data=None):
        lib = library()
        params = lib.kpk_model_default_params()
        params.verify_checksums = bool(verify_checksums)
        handle = ctypes.c_void_p()
        if _data is not None:
            data = bytes(_data)
            _check(lib.kpk_model_load_from_memory(data, len(data), ctypes.byref(params), ctypes.byref(handle)))
        else:
            if path is None:
                raise TypeError("Model() needs a path (or use Model.from_bytes)")
            load = lib.kpk_model_load_huge_pages if huge_pages else lib.kpk_model_load
            _check(load(_path_bytes(path), ctypes.byref(params), ctypes.byref(handle)))
        self._handle = handle
        self.info = self._info()

    @classmethod
    def from_bytes(cls, data, *, verify_checksums=False):
        """Loads a model from the bytes of a ``.kpk`` file (copied)."""
        return cls(verify_checksums=verify_checksums, _data=data)

    def _info(self):
        info = ModelInfo()
        info.struct_size = ctypes.sizeof(ModelInfo)
        _check(library().kpk_model_get_info(self._handle, ctypes.byref(info)))
        langs = info.languages.decode()
        lib = library()
        template = lib.kpk_model_prompt_template(self._handle)
        instructions = {}
        for lang in (langs.split(",") if langs else []):
            i = lib.kpk_model_instruction(self._handle, lang.encode())
            if i is not None:
                instructions[lang] = i.decode()
        return {
            "name": info.name.decode(),
            "architecture": info.architecture.decode(),
            "languages": langs.split(",") if langs else [],
            "n_params": info.n_params,
            "storage_bytes": info.storage_bytes,
            "size_bin": info.size_bin,
            "sample_rate": info.sample_rate,
            "max_samples": info.max_samples,
            "n_ctx": info.n_ctx,
            "n_vocab": info.n_vocab,
            "bits_per_weight": info.bits_per_weight,
            "prompt_template": template.decode() if template is not None else None,
            "instructions": instructions,
        }

    @property
    def handle(self):
        if not self._handle:
            raise ValueError("the model is closed")
        return self._handle

    def close(self):
        """Releases this reference; sessions keep the model alive."""
        if getattr(self, "_handle", None):
            library().kpk_model_free(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Session:
    """One translation stream over a model; one call at a time."""

    def __init__(self, model, n_threads=0, kv_cache="f16", prefill_chunk=0):
        """A session over ``model`` with ``n_threads`` workers (0: one per
        core). ``kv_cache`` is the KV cache storage, "f16" (half the memory)
        or "f32"; ``prefill_chunk`` the prompt positions per prefill
        micro-batch (smaller: less peak memory on long clips; 0: the
        library's default, 512)."""
        if kv_cache not in KV_TYPES:
            raise ValueError(f"kv_cache is {kv_cache!r}; use one of {sorted(KV_TYPES)}")
        lib = library()
        params = lib.kpk_session_default_params()
        params.n_threads = n_threads
        params.kv_cache = KV_TYPES[kv_cache]
        params.prefill_chunk = prefill_chunk
        handle = ctypes.c_void_p()
        _check(lib.kpk_session_new(model.handle, ctypes.byref(params), ctypes.byref(handle)))
        self._handle = handle
        self.sample_rate = model.info["sample_rate"]

    def translate(self, audio, lang="de", beams=1, max_tokens=256, on_text=None, on_progress=None,
                  instruction=None):
        """Translates ``audio`` and returns the text.

        ``audio`` is a WAV path (str or os.PathLike; any PCM or float format,
        rate and channel count) or 16 kHz mono samples in [-1, 1] (a sequence
        of floats, an ``array.array('f')`` or a numpy array), of any length:
        audio over 30 s is cut at pauses into segments as ``kompakt
        translate`` cuts it, and the text is one line per segment (see
        ``last_segments()``). ``on_text(piece)``
        receives the text as it is decoded, ``on_progress(stage, done)`` the
        progress (stage in ``STAGES``); either may return False to abort
        (``KompaktError`` with status ``ABORTED``). An exception raised by a
        callback aborts the call and is re-raised. ``instruction`` replaces the
        model's instruction for ``lang`` for this call (it goes into the model's
        prompt template, ``model.info["prompt_template"]``).
        """
        if not self._handle:
            raise ValueError("the session is closed")
        lib = library()
        params = lib.kpk_translate_default_params()
        lang_b = lang.encode() if isinstance(lang, str) else lang
        params.language = lang_b
        instruction_b = instruction.encode() if isinstance(instruction, str) else instruction
        params.instruction = instruction_b
        params.beams = beams
        params.max_tokens = max_tokens
        raised = []

        def wrap(fn, convert):
            def cb(*args):
                if raised:
                    return False
                try:
                    return fn(*convert(*args)) is not False
                except BaseException as e:  # re-raised after the call
                    raised.append(e)
                    return False

            return cb

        if on_text is not None:
            params.on_text = TEXT_CALLBACK(wrap(on_text, lambda p, _u: (p.decode("utf-8", "replace"),)))
        if on_progress is not None:
            params.on_progress = PROGRESS_CALLBACK(
                wrap(on_progress, lambda s, d, _u: (STAGES.get(s, s), d))
            )
        text = ctypes.c_char_p()
        if isinstance(audio, (str, bytes, os.PathLike)):
            status = lib.kpk_translate_wav(self._handle, _path_bytes(audio), ctypes.byref(params), ctypes.byref(text))
        else:
            samples = _as_float32(audio)
            n = len(samples)
            ptr = (ctypes.c_float * n).from_buffer(samples) if n else None
            status = lib.kpk_translate_pcm(self._handle, ptr, n, ctypes.byref(params), ctypes.byref(text))
        if raised:
            raise raised[0]
        _check(status)
        return text.value.decode("utf-8", "replace") if text.value is not None else ""

    def last_result(self):
        """The last successful translation: text, token ids, counts, timings."""
        if not self._handle:
            raise ValueError("the session is closed")
        r = Result()
        r.struct_size = ctypes.sizeof(Result)
        _check(library().kpk_session_last_result(self._handle, ctypes.byref(r)))
        return {
            "text": r.text.decode("utf-8", "replace") if r.text else "",
            "token_ids": [r.token_ids[i] for i in range(r.n_tokens)],
            "n_audio_tokens": r.n_audio_tokens,
            "n_prompt_tokens": r.n_prompt_tokens,
            "timings": {
                "features_s": r.features_s,
                "encoder_s": r.encoder_s,
                "prefill_s": r.prefill_s,
                "decode_s": r.decode_s,
            },
        }

    def last_segments(self):
        """The segments of the last successful translation (one for audio of
        at most 30 s): start and end in seconds, text and token ids."""
        if not self._handle:
            raise ValueError("the session is closed")
        lib = library()
        n = ctypes.c_size_t()
        _check(lib.kpk_session_segment_count(self._handle, ctypes.byref(n)))
        out = []
        for i in range(n.value):
            s = Segment()
            s.struct_size = ctypes.sizeof(Segment)
            _check(lib.kpk_session_segment(self._handle, i, ctypes.byref(s)))
            out.append({
                "start_s": s.start_s,
                "end_s": s.end_s,
                "text": s.text.decode("utf-8", "replace") if s.text else "",
                "token_ids": [s.token_ids[k] for k in range(s.n_tokens)],
            })
        return out

    @property
    def last_token_ids(self):
        return self.last_result()["token_ids"]

    def close(self):
        if getattr(self, "_handle", None):
            library().kpk_session_free(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _as_float32(audio):
    """A writable, contiguous float32 buffer of the samples."""
    if hasattr(audio, "astype") and hasattr(audio, "tobytes"):
        import numpy as np  # only when a numpy array is passed

        buf = array.array("f")
        buf.frombytes(np.ascontiguousarray(audio, dtype=np.float32).tobytes())
        return buf
    if isinstance(audio, array.array) and audio.typecode == "f":
        return audio
    return array.array("f", audio)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python3 kompakt.py MODEL.kpk FILE.wav [LANG]")
    m = Model(sys.argv[1])
    s = Session(m)
    out = s.translate(sys.argv[2], lang=sys.argv[3] if len(sys.argv) > 3 else "de",
                      on_text=lambda p: print(p, end="", flush=True))
    print()
    print(out)
