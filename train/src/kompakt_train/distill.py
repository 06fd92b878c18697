"""Knowledge distillation of a pruned student from its teacher: one plain loop.

Recipe (all settings in the run's `distill_config.json`, saved beside its outputs):
  1. Teacher pass, once per example: on text windows, the teacher's next-token distribution at
     every position; on speech prompts, the teacher's own greedy translation (sequence-level
     distillation, Kim & Rush 2016) and its distribution at every translation position. Stored
     as the top-k log-probabilities at temperature T plus the log of the remaining mass, in
     safetensors files (one per process), so the teacher is never in memory while the student
     trains and runs once however many epochs follow. Held-out text windows keep the teacher's
     full-vocabulary log-probabilities, so evaluation uses exactly `kompakt eval`'s definitions.
  2. Student training: forward KL(teacher || student) at temperature T over the top-k ids plus
     one bucket for the tail mass, times T^2 (Hinton et al. 2015), averaged per example, then
     over the batch; AdamW, linear warm-up then cosine decay, gradient clipping.
  3. Every `eval_every` steps: held-out KL(teacher || student) (full vocabulary, mean over
     positions), top-1 agreement, and both perplexities.

Scale-out: `accelerate` (DDP, FSDP, DeepSpeed, mixed precision bf16 on GPUs), launched by
`accelerate launch` or `torchrun`; the same code runs as a single CPU process. Example order is
a seeded permutation of the whole set and every global batch is split across processes, so N
processes with batch b take the same steps as one process with batch N*b.

Resumable: the student, optimizer, scheduler and counters are saved every `save_every` steps
under OUT.work/; a rerun of the same command continues from the newest one.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from . import checkpoint as ckpt
from . import quant, vocab
from .data import (Clip, SpeechPrompt, clips_from_dir, clips_from_segments, load_tokenizer, read_text,
                   speech_prompts, text_prompts, text_windows)
from .errors import TrainError


@dataclass
class DistillConfig:
    teacher: str
    student: str
    out: str
    text: list[str] = field(default_factory=list)
    eval_text: list[str] = field(default_factory=list)
    segments: str | None = None
    wav_dir: str | None = None
    audio: str | None = None
    mt_src: str | None = None  # English lines translated by the teacher through the text prompt
    langs: list[str] = field(default_factory=lambda: ["de"])
    window: int = 256
    max_tokens_per_file: int | None = None
    eval_windows: int = 4
    eval_max_tokens: int | None = 512  # per held-out file, as `kompakt eval --max-tokens 512`
    teacher_cache: str | None = None   # where the teacher pass is stored (default OUT.work/)
    steps: int | None = None
    tokens: int | None = None
    batch_size: int = 2
    lr: float = 5e-5
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    temperature: float = 1.0
    hidden_loss: float = 0.0  # weight of the final-hidden-state loss (0: logits only; runs the teacher live)
    top_k: int = 64
    max_new_tokens: int = 64
    eval_every: int = 50
    save_every: int = 100
    log_every: int = 1
    seed: int = 0
    gradient_checkpointing: bool = False
    mixed_precision: str = "auto"  # auto: bf16 on GPUs, fp32 on CPU
    threads: int | None = None
    overwrite: bool = False
    stop_after_steps: int | None = None  # end this invocation early, leaving a checkpoint to resume
    codes: str | None = None  # quantization-aware training: the codes file of the matrices to train
    scale_lr: float | None = None  # peak lr of the log step sizes (default: lr)
    freeze_embeddings: bool = False  # keep the token embeddings and the lm_head fixed (saves their optimizer state)


# ---------------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------------

@dataclass
class Example:
    """One training sequence: ids, where the loss applies, optional audio inputs."""
    input_ids: torch.Tensor
    loss_from: int  # positions >= loss_from predict a target token (for text: 0)
    speech: SpeechPrompt | None = None

    @property
    def n_targets(self) -> int:
        return len(self.input_ids) - 1 - self.loss_from


def model_inputs(ex: Example, device) -> dict:
    d = {"input_ids": ex.input_ids[None].to(device), "use_cache": False}
    if ex.speech is not None:
        d["input_features"] = ex.speech.input_features[None].to(device)
        d["feature_attention_mask"] = ex.speech.feature_attention_mask[None].to(device)
    return d


def _hash(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Teacher pass
# ---------------------------------------------------------------------------------------------

def topk_targets(logits: torch.Tensor, k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids [T,k] int32, log-probs [T,k], log tail mass [T]) of softmax(logits / T)."""
    lp = F.log_softmax(logits.float() / temperature, dim=-1)
    top, ids = torch.topk(lp, min(k, lp.shape[-1]), dim=-1)
    mass = top.exp().sum(-1).clamp(max=1.0)
    tail = torch.log1p(-mass.clamp(max=1.0 - 1e-7))
    return ids.to(torch.int32), top, tail


@torch.no_grad()
def teacher_pass(teacher, examples: list[Example], indices: list[int], k: int, temperature: float,
                 device, log) -> dict[str, torch.Tensor]:
    out = {}
    t0 = time.time()
    for n, i in enumerate(indices):
        ex = examples[i]
        logits = teacher(**model_inputs(ex, device)).logits[0, ex.loss_from:-1]
        ids, lp, tail = topk_targets(logits, k, temperature)
        out[f"{i}.ids"], out[f"{i}.lp"], out[f"{i}.tail"] = ids.cpu(), lp.cpu(), tail.cpu()
        if (n + 1) % 10 == 0 or n + 1 == len(indices):
            log(f"teacher: {n + 1}/{len(indices)} examples, {time.time() - t0:.0f} s")
    return out


@torch.no_grad()
def teacher_translations(teacher, prompts: list[SpeechPrompt], eos: list[int], max_new: int, device,
                         log, batch: int = 16) -> list[Example]:
    """Sequence-level targets: the teacher's greedy translation of each speech or text prompt.
    Text prompts are generated `batch` at a time (left-padded): decoding one sequence at a time
    reads every weight once per token, a batch shares that read."""
    out: list[Example | None] = [None] * len(prompts)
    t0, done = time.time(), 0

    def finish(i: int, p, new: torch.Tensor) -> None:
        nonlocal done
        ex_speech = p if isinstance(p, SpeechPrompt) else None
        out[i] = Example(torch.cat([p.input_ids, new]), len(p.input_ids) - 1, ex_speech)
        done += 1
        log(f"teacher: translated {done}/{len(prompts)} prompts ({len(new)} tokens, {time.time() - t0:.0f} s)")

    texts = [i for i, p in enumerate(prompts) if not isinstance(p, SpeechPrompt)]
    for i, p in enumerate(prompts):
        if isinstance(p, SpeechPrompt):
            ex = Example(p.input_ids, 0, p)
            gen = teacher.generate(**{k: v for k, v in model_inputs(ex, device).items() if k != "use_cache"},
                                   max_new_tokens=max_new, do_sample=False, num_beams=1,
                                   repetition_penalty=1.0, eos_token_id=eos)
            finish(i, p, gen[0, len(p.input_ids):].cpu())
    pad = eos[0]
    for b0 in range(0, len(texts), batch):
        idx = texts[b0:b0 + batch]
        width = max(len(prompts[i].input_ids) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            n = len(prompts[i].input_ids)
            ids[r, width - n:] = prompts[i].input_ids
            mask[r, width - n:] = 1
        gen = teacher.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new,
                               do_sample=False, num_beams=1, repetition_penalty=1.0, eos_token_id=eos,
                               pad_token_id=pad)
        for r, i in enumerate(idx):
            new = gen[r, width:].cpu()
            stop = [k for k, t in enumerate(new.tolist()) if t in eos]
            finish(i, prompts[i], new[: stop[0] + 1] if stop else new)
    return out


def kd_loss(student_logits: torch.Tensor, ids: torch.Tensor, t_lp: torch.Tensor, t_tail: torch.Tensor,
            temperature: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over positions of KL(teacher || student) on the teacher's top-k ids + a tail bucket.
    `valid` marks the top-k entries that exist in the student's (kept) vocabulary; the others
    carry no probability (`remap_targets` moved it into the tail)."""
    s_lp_all = F.log_softmax(student_logits.float() / temperature, dim=-1)
    s_lp = s_lp_all.gather(-1, ids.long())
    s_p = s_lp.exp() if valid is None else s_lp.exp() * valid
    s_tail = torch.log1p(-s_p.sum(-1).clamp(max=1.0 - 1e-6))
    t_p, t_tail_p = t_lp.exp(), t_tail.exp()
    kl = (t_p * (t_lp - s_lp)).sum(-1) + t_tail_p * (t_tail - s_tail)
    return kl.mean() * temperature ** 2


def hidden_loss(student_h: torch.Tensor, teacher_h: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the final hidden states, relative to the teacher's mean square
    (scale-free, so one weight suits models of any width); the teacher's are restricted to the
    channels the student kept."""
    t = teacher_h.float()
    return ((student_h.float() - t) ** 2).mean() / (t ** 2).mean().clamp(min=1e-8)


def kept_hidden_channels(student_dir: Path, t_hidden: int, s_hidden: int) -> torch.Tensor:
    """The teacher's hidden channels the student kept, from its pruning record."""
    for st in ckpt.read_provenance(student_dir).get("steps_done", []):
        if st.get("stage") == "prune" and "hidden_kept" in st:
            idx = torch.tensor(st["hidden_kept"], dtype=torch.long)
            if len(idx) != s_hidden:
                raise TrainError(f"{student_dir}: the pruning record keeps {len(idx)} hidden channels but the "
                                 f"student has {s_hidden}")
            return idx
    if t_hidden == s_hidden:
        return torch.arange(t_hidden)
    raise TrainError(f"{student_dir}: --hidden-loss needs the hidden channels the student kept, and its "
                     f"kompakt_train.json has none (prune it with this version of kompakt-train prune)")


# ---------------------------------------------------------------------------------------------
# Evaluation (kompakt eval's definitions)
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model, windows: list[torch.Tensor], ref_lp: list[torch.Tensor], device,
             kept: torch.Tensor | None = None) -> dict:
    """With `kept` (the student computes logits over those ids only), as `kompakt eval` compares a
    vocabulary-trimmed candidate: the reference is renormalized over the kept ids for KL, top-1
    compares token ids, and perplexity counts the positions whose next token is kept."""
    model.eval()
    kl_sum = agree = n = 0.0
    nll_s = nll_t = 0.0
    n_next = 0
    for w, t_full in zip(windows, ref_lp):
        s_lp = F.log_softmax(model(input_ids=w[None].to(device), use_cache=False).logits[0].float(), -1).cpu()
        tgt = w[1:]
        if kept is None:
            t_lp, t_top, s_top, has = t_full, t_full.argmax(-1), s_lp.argmax(-1), torch.ones_like(tgt, dtype=torch.bool)
            rows = tgt
        else:
            t_lp = t_full[:, kept] - torch.logsumexp(t_full[:, kept], -1, keepdim=True)
            t_top, s_top = t_full.argmax(-1), kept[s_lp.argmax(-1)]
            pos = torch.full((t_full.shape[-1],), -1, dtype=torch.long)
            pos[kept] = torch.arange(len(kept))
            rows, has = pos[tgt].clamp(min=0), pos[tgt] >= 0
        kl_sum += (t_lp.exp() * (t_lp - s_lp)).sum(-1).clamp(min=0).sum().item()
        agree += (t_top == s_top).sum().item()
        n += len(w)
        nll_s -= (s_lp[:-1].gather(-1, rows[:, None])[:, 0] * has).sum().item()
        nll_t -= (t_full[:-1].gather(-1, tgt[:, None])[:, 0] * has).sum().item()
        n_next += int(has.sum())
    model.train()
    return {"kl": kl_sum / max(n, 1), "top1": agree / max(n, 1),
            "ppl": math.exp(nll_s / max(n_next, 1)), "ppl_teacher": math.exp(nll_t / max(n_next, 1)),
            "positions": int(n)}


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

def lr_at(step: int, total: int, cfg: DistillConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / max(cfg.warmup_steps, 1)
    frac = (step - cfg.warmup_steps) / max(total - cfg.warmup_steps, 1)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = ""
    if torch.cuda.is_available():
        gpu = f", {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"{cpu}, {os.cpu_count()} CPUs{gpu}"


def batch_order(n_examples: int, batch: int, step: int, seed: int) -> list[int]:
    """The global batch of `step`: consecutive slices of per-epoch seeded permutations."""
    out = []
    pos = step * batch
    while len(out) < batch:
        epoch, off = divmod(pos, n_examples)
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(n_examples, generator=g).tolist()
        take = perm[off: off + batch - len(out)]
        out += take
        pos += len(take)
    return out


def run(cfg: DistillConfig, log=print) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    teacher_dir, student_dir, out = Path(cfg.teacher), Path(cfg.student), Path(cfg.out)
    t_cfg, s_cfg = ckpt.read_config(teacher_dir), ckpt.read_config(student_dir)
    if t_cfg["text_config"].get("vocab_size") != s_cfg["text_config"].get("vocab_size"):
        raise TrainError("the teacher and the student have different vocabulary sizes")
    if not cfg.text and not cfg.segments and not cfg.audio and not cfg.mt_src:
        raise TrainError("no training data: give --text files, --mt-src and/or --segments/--wav-dir or --audio")
    mt_lines = [line.strip() for line in read_text(cfg.mt_src).splitlines() if line.strip()] if cfg.mt_src else []
    if cfg.mt_src and not mt_lines:
        raise TrainError(f"--mt-src {cfg.mt_src}: no lines")
    if cfg.segments and not cfg.wav_dir:
        raise TrainError("--segments needs --wav-dir")
    if cfg.steps is None and cfg.tokens is None:
        raise TrainError("give --steps or --tokens")
    if out.exists() and not cfg.overwrite:
        raise TrainError(f"{out}: already exists (choose another --out, or --overwrite)")
    codes = quant.read_codes(cfg.codes) if cfg.codes else {}
    if cfg.codes and not codes:
        raise TrainError(f"--codes {cfg.codes}: lists no matrices (an f32/f16 conversion has none: export "
                         "the codes of a quantized conversion)")

    mp = cfg.mixed_precision
    if mp == "auto":
        mp = "bf16" if torch.cuda.is_available() else "no"
    # Several processes without GPUs (torchrun on CPUs, the tests): accelerate's gloo path.
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    has_speech = bool(cfg.segments or cfg.audio)
    # With speech, a process whose examples are all text leaves the audio tower without gradients.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=has_speech)
    acc = Accelerator(mixed_precision=mp, cpu=multi_cpu, kwargs_handlers=[ddp])
    main = acc.is_main_process
    say = log if main else (lambda *_: None)
    set_seed(cfg.seed)
    work = out.parent / (out.name + ".work")
    if main:
        work.mkdir(parents=True, exist_ok=True)
    acc.wait_for_everyone()

    # --- data
    tok = load_tokenizer(teacher_dir)
    windows = text_windows(tok, cfg.text, cfg.window, cfg.max_tokens_per_file) if cfg.text else []
    if cfg.eval_text:
        eval_windows = text_windows(tok, cfg.eval_text, cfg.window, cfg.eval_max_tokens)
    else:  # hold out every k-th window
        k = max(2, len(windows) // max(cfg.eval_windows, 1))
        eval_windows = windows[k - 1::k][: cfg.eval_windows]
        windows = [w for i, w in enumerate(windows) if i % k != k - 1 or i // k >= cfg.eval_windows]
    if not eval_windows:
        raise TrainError("no held-out text windows (give --eval-text, or more --text)")
    clips: list[Clip] = []
    if cfg.audio:
        clips += clips_from_dir(cfg.audio)
    if cfg.segments:
        clips += clips_from_segments(cfg.segments, cfg.wav_dir)

    # The teacher pass depends on the teacher and the data only: students share it.
    key = {k: getattr(cfg, k) for k in (
        "text", "eval_text", "segments", "wav_dir", "audio", "mt_src", "langs", "window", "max_tokens_per_file",
        "eval_windows", "eval_max_tokens", "temperature", "top_k", "max_new_tokens")}
    if key["mt_src"] is None:  # caches made before --mt-src existed stay valid
        del key["mt_src"]
    data_key = _hash(key, ckpt.fingerprint(teacher_dir))
    # Example indices depend on how speech prompts were shared out, hence the process count.
    cache_root = Path(cfg.teacher_cache) if cfg.teacher_cache else work
    cache_dir = cache_root / f"teacher-{data_key}-p{acc.num_processes}"

    # --- teacher pass (once; reused by reruns and resumes)
    device = acc.device
    examples = [Example(w, 0) for w in windows]
    speech_file = cache_dir / "speech.pt"
    done = cache_dir / "DONE"
    if not done.exists():
        say(f"teacher pass: {len(windows)} text windows, {len(clips)} clips and {len(mt_lines)} text lines x "
            f"{len(cfg.langs)} languages, "
            f"{len(eval_windows)} held-out windows -> {cache_dir}")
        if main:
            cache_dir.mkdir(parents=True, exist_ok=True)
            (cache_dir / "teacher.json").write_text(json.dumps(
                {"teacher": str(teacher_dir), "text": cfg.text, "eval_text": cfg.eval_text, "top_k": cfg.top_k,
                 "temperature": cfg.temperature, "window": cfg.window}, indent=2))
        acc.wait_for_everyone()
        # bf16 where the student trains in bf16 (GPUs): the 7B teacher is 16.8 GB instead of 33.6.
        t_dtype = torch.bfloat16 if mp == "bf16" else torch.float32
        teacher = ckpt.load_model(teacher_dir, t_dtype).to(device).eval()
        speech = []
        prompts = speech_prompts(teacher_dir, clips, cfg.langs) if clips else []
        if mt_lines:
            prompts += text_prompts(teacher_dir, mt_lines, cfg.langs)
        if prompts:
            mine = prompts[acc.process_index::acc.num_processes]
            eos = teacher.generation_config.eos_token_id
            eos = eos if isinstance(eos, list) else [eos]
            speech = teacher_translations(teacher, mine, eos, cfg.max_new_tokens, device, say)
            torch.save(speech, cache_dir / f"speech-{acc.process_index}.pt")
        acc.wait_for_everyone()
        all_speech = []
        for r in range(acc.num_processes):
            p = cache_dir / f"speech-{r}.pt"
            if p.exists():
                all_speech += torch.load(p, weights_only=False)
        examples_all = examples + all_speech
        mine = list(range(acc.process_index, len(examples_all), acc.num_processes))
        targets = teacher_pass(teacher, examples_all, mine, cfg.top_k, cfg.temperature, device, say)
        save_file(targets, str(cache_dir / f"targets-{acc.process_index}.safetensors"))
        if main:
            with torch.no_grad():
                ref = {str(i): F.log_softmax(teacher(input_ids=w[None].to(device), use_cache=False)
                                             .logits[0].float(), -1).cpu()
                       for i, w in enumerate(eval_windows)}
            save_file(ref, str(cache_dir / "eval-reference.safetensors"))
            torch.save(all_speech, speech_file)
        del teacher
        acc.wait_for_everyone()
        if main:
            done.write_text("ok\n")
        acc.wait_for_everyone()
    examples += torch.load(speech_file, weights_only=False) if speech_file.exists() else []
    targets = {}
    for f in sorted(cache_dir.glob("targets-*.safetensors")):
        targets.update(load_file(str(f)))
    ref_lp_map = load_file(str(cache_dir / "eval-reference.safetensors"))
    ref_lp = [ref_lp_map[str(i)] for i in range(len(eval_windows))]
    if not examples:
        raise TrainError("the training data gave no examples")

    # --- steps
    tokens_per_example = sum(e.n_targets for e in examples) / len(examples)
    global_batch = cfg.batch_size * acc.num_processes
    total_steps = cfg.steps if cfg.steps is not None else max(
        1, math.ceil(cfg.tokens / (tokens_per_example * global_batch)))

    # --- student
    student = ckpt.load_model(student_dir)
    if cfg.gradient_checkpointing:
        student.gradient_checkpointing_enable()
    student.config.use_cache = False
    if not has_speech:  # text only: the audio tower and projector are not on the path
        for name, p in student.named_parameters():
            if "audio_tower" in name or "multi_modal_projector" in name:
                p.requires_grad_(False)
    attached: dict = {}
    if cfg.codes:
        from accelerate.utils import DistributedType
        if acc.distributed_type == DistributedType.FSDP:
            raise TrainError("qat does not run under FSDP yet (its export needs whole matrices): use DDP "
                             "(torchrun or accelerate's multi-GPU mode)")
        attached = quant.attach(student, codes)
        types: dict[str, int] = {}
        for fq in attached.values():
            types[fq.fmt.name] = types.get(fq.fmt.name, 0) + 1
        say(f"quantization-aware training: {len(attached)} matrices in kompakt's formats "
            f"({', '.join(f'{t}: {n}' for t, n in sorted(types.items()))}), codes from {cfg.codes}")
    if cfg.freeze_embeddings:
        for mod in (student.get_input_embeddings(), student.get_output_embeddings()):
            if mod is not None:
                mod.weight.requires_grad_(False)
    kept = vocab.read(student_dir)
    kept_pos = None
    if kept is not None:
        # Logits over the kept ids only: the lm_head's cost falls with the vocabulary.
        vocab.restrict_head(student.lm_head, kept)
        kept_pos = torch.full((int(s_cfg["text_config"]["vocab_size"]),), -1, dtype=torch.long)
        kept_pos[kept] = torch.arange(len(kept))
        say(f"vocabulary: {len(kept)} of {len(kept_pos)} ids kept ({vocab.FILE})")
    live_teacher, h_idx = None, None
    if cfg.hidden_loss > 0:
        # Hidden states are too large to cache: the teacher runs beside the student.
        h_idx = kept_hidden_channels(student_dir, int(t_cfg["text_config"]["hidden_size"]),
                                     int(s_cfg["text_config"]["hidden_size"])).to(device)
        live_teacher = ckpt.load_model(teacher_dir, torch.bfloat16 if mp == "bf16" else torch.float32)
        live_teacher = live_teacher.to(device).eval().requires_grad_(False)
        say(f"hidden-state loss: weight {cfg.hidden_loss}, on {len(h_idx)} of the teacher's "
            f"{t_cfg['text_config']['hidden_size']} channels (teacher runs live)")
    student.train()
    scale_params = [p for n, p in student.named_parameters() if p.requires_grad and n.endswith(("log_d", "log_dmin"))]
    ids = {id(p) for p in scale_params}
    groups = [{"params": [p for p in student.parameters() if p.requires_grad and id(p) not in ids]}]
    if scale_params:
        groups.append({"params": scale_params, "lr": cfg.scale_lr if cfg.scale_lr is not None else cfg.lr, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, total_steps, cfg))
    # The schedule counts optimizer steps (accelerate's prepared scheduler would advance once per
    # process and step, so N processes would decay N times faster).
    student, opt = acc.prepare(student, opt)
    acc.register_for_checkpointing(sched)

    state = {"step": 0, "tokens": 0, "wall_s": 0.0, "curve": []}
    ckpt_root = work / "checkpoints"
    resumed = None
    latest = sorted(ckpt_root.glob("step-*"), key=lambda p: int(p.name.split("-")[1])) if ckpt_root.exists() else []
    if latest:
        resumed = latest[-1]
        acc.load_state(str(resumed))
        state = json.loads((resumed / "kompakt_state.json").read_text())
        say(f"resuming from {resumed} (step {state['step']}, {state['tokens']} tokens)")

    def do_eval() -> dict:
        # Through the wrapped model: under FSDP the unwrapped one holds only this rank's shard.
        return evaluate(student, eval_windows, ref_lp, device, kept)

    if not state["curve"]:
        e0 = do_eval()
        state["curve"].append({"step": 0, "tokens": 0, "wall_s": 0.0, **e0})
        say(f"held-out before training: KL {e0['kl']:.4f}  top-1 {e0['top1']:.3f}  ppl {e0['ppl']:.2f} "
            f"(teacher {e0['ppl_teacher']:.2f})")

    def save_checkpoint() -> None:
        d = ckpt_root / f"step-{state['step']}"
        acc.save_state(str(d))
        if main:
            (d / "kompakt_state.json").write_text(json.dumps(state))
            for old in sorted(ckpt_root.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))[:-2]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    t_start = time.time() - state["wall_s"]
    t_run, first_step = time.time(), state["step"]
    while state["step"] < total_steps:
        step = state["step"]
        batch = batch_order(len(examples), global_batch, step, cfg.seed)
        mine = batch[acc.process_index * cfg.batch_size:(acc.process_index + 1) * cfg.batch_size]
        opt.zero_grad(set_to_none=True)
        # One backward per step: one gradient all-reduce, whatever mix of text and speech.
        loss = 0.0
        for i in mine:
            ex = examples[i]
            inputs = model_inputs(ex, device)
            with acc.autocast():
                s_out = student(**inputs, output_hidden_states=live_teacher is not None)
                logits = s_out.logits[0, ex.loss_from:-1]
            if live_teacher is not None:
                with torch.no_grad():
                    t_h = live_teacher(**inputs, output_hidden_states=True).hidden_states[-1][0, ex.loss_from:-1]
                s_h = s_out.hidden_states[-1][0, ex.loss_from:-1]
                loss = loss + cfg.hidden_loss * hidden_loss(s_h, t_h.index_select(-1, h_idx)) / len(mine)
            t_ids, t_lp, t_tail = targets[f"{i}.ids"], targets[f"{i}.lp"], targets[f"{i}.tail"]
            valid = None
            if kept_pos is not None:
                t_ids, t_lp, t_tail, valid = vocab.remap_targets(t_ids, t_lp, t_tail, kept_pos)
                valid = valid.to(device)
            loss = loss + kd_loss(logits, t_ids.to(device), t_lp.to(device), t_tail.to(device),
                                  cfg.temperature, valid) / len(mine)
        acc.backward(loss)
        loss_val = loss.item()
        if cfg.grad_clip > 0:
            acc.clip_grad_norm_([p for p in student.parameters() if p.requires_grad], cfg.grad_clip)
        opt.step()
        sched.step()
        step_tokens = sum(examples[i].n_targets for i in batch)
        state["step"] += 1
        state["tokens"] += step_tokens
        state["wall_s"] = time.time() - t_start
        loss_all = acc.reduce(torch.tensor([loss_val], device=device), reduction="mean").item()
        state.setdefault("losses", []).append(loss_all)
        if state["step"] % cfg.log_every == 0 or state["step"] == total_steps:
            rate = state["tokens"] / max(state["wall_s"], 1e-9)
            eta = (total_steps - state["step"]) * (time.time() - t_run) / (state["step"] - first_step)
            say(f"step {state['step']}/{total_steps}  loss {loss_all:.4f}  lr {sched.get_last_lr()[0]:.2e}  "
                f"tokens {state['tokens']}  {rate:.0f} tok/s  ETA {eta:.0f} s")
        if state["step"] % cfg.eval_every == 0 or state["step"] == total_steps:
            e = do_eval()
            state["curve"].append({"step": state["step"], "tokens": state["tokens"],
                                   "wall_s": round(state["wall_s"], 1), "train_loss": loss_all, **e})
            say(f"held-out at step {state['step']}: KL {e['kl']:.4f}  top-1 {e['top1']:.3f}  ppl {e['ppl']:.2f}")
        if state["step"] % cfg.save_every == 0 and state["step"] < total_steps:
            save_checkpoint()
        if cfg.stop_after_steps and state["step"] - first_step >= cfg.stop_after_steps and state["step"] < total_steps:
            if state["step"] % cfg.save_every:
                save_checkpoint()
            say(f"stopping after {cfg.stop_after_steps} steps as asked; rerun the same command to resume")
            acc.end_training()
            return {"stopped_at_step": state["step"], "tokens": state["tokens"], "losses": state["losses"]}

    # --- output
    result = {
        "kl_initial": state["curve"][0]["kl"], "kl_final": state["curve"][-1]["kl"],
        "top1_initial": state["curve"][0]["top1"], "top1_final": state["curve"][-1]["top1"],
        "ppl_initial": state["curve"][0]["ppl"], "ppl_final": state["curve"][-1]["ppl"],
        "ppl_teacher": state["curve"][0]["ppl_teacher"],
        "tokens": state["tokens"], "steps": state["step"], "wall_s": round(state["wall_s"], 1),
        "processes": acc.num_processes, "machine": machine(), "losses": state.get("losses", []),
    }
    sd = acc.get_state_dict(student)  # every rank takes part (FSDP gathers the shards)
    if main:
        with ckpt.OutputDir(out, overwrite=cfg.overwrite) as o:
            unwrapped = acc.unwrap_model(student)
            if attached:
                # The trained codes, and the weights replaced by their values (no parametrizations left).
                trained = quant.export(unwrapped, attached)
                sd = unwrapped.state_dict()
                quant.write_codes(o.path / quant.FILE, trained)
            unwrapped.save_pretrained(str(o.path), state_dict=sd, safe_serialization=True)
            ckpt.copy_side_files(student_dir, o.path)
            prov = ckpt.read_provenance(student_dir)
            prov["steps_done"] = prov.get("steps_done", []) + [{
                "stage": "qat" if attached else "distill", "teacher": str(teacher_dir), "teacher_hash": ckpt.fingerprint(teacher_dir),
                "student": str(student_dir), "data": {"text": cfg.text, "eval_text": cfg.eval_text,
                                                      "mt_src": cfg.mt_src,
                                                      "segments": cfg.segments, "audio": cfg.audio,
                                                      "langs": cfg.langs},
                "loss": f"forward KL at T={cfg.temperature} on teacher top-{cfg.top_k} + tail"
                        + (f" + {cfg.hidden_loss} x final hidden-state MSE" if cfg.hidden_loss else ""),
                **({"qat": {"codes": cfg.codes, "matrices": len(attached),
                            "method": "straight-through codes of latent f32 weights, learned f16 super-scales "
                                      "(log space), sub-scales fixed from the codes file"}} if attached else {}),
                "vocab_kept": None if kept is None else len(kept),
                **{k: result[k] for k in ("tokens", "steps", "wall_s", "kl_initial", "kl_final",
                                           "top1_initial", "top1_final", "machine", "processes")},
            }]
            prov["teacher_hash"] = ckpt.fingerprint(teacher_dir)
            ckpt.write_provenance(o.path, prov)
            (o.path / "distill_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
            (o.path / "learning_curve.json").write_text(json.dumps(state["curve"], indent=2) + "\n")
            plot_curve(state["curve"], o.path / "learning_curve.png", title=f"distill {out.name}")
            o.commit()
        say(f"wrote {out} ({state['step']} steps, {state['tokens']} tokens, {state['wall_s']:.0f} s)")
    acc.wait_for_everyone()
    acc.end_training()
    return result


def plot_curve(curve: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [c["tokens"] for c in curve]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    ax[0].plot(x, [c["kl"] for c in curve], marker="o")
    ax[0].set_xlabel("tokens seen")
    ax[0].set_ylabel("held-out KL(teacher || student)")
    ax[0].set_yscale("log")
    ax[1].plot(x, [c["top1"] for c in curve], marker="o", color="tab:green")
    ax[1].set_xlabel("tokens seen")
    ax[1].set_ylabel("top-1 agreement")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
