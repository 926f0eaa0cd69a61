"""Training recipe of the demo model (``autoprune demo train``).

AdamW, linear warm-up then cosine decay, bf16 autocast on CUDA, a length curriculum
(short videos first), a constant token budget per step (short videos → bigger batches).
Progress — the learning-rate schedule and the curriculum — is measured in *time* when
a wall-clock budget is given (``time_budget_s``) and in steps otherwise, so one recipe
fits any GPU: it trains for the time it is given.

**Training under reduction** (the paper's light finetuning): the backbone runs inside
:func:`autoprune.reduce` during the training forward passes; the selection is made without
gradients, the gathers of the kept tokens keep them. Two modes: ``reduce_mean_keep`` trains
under one fixed schedule (the geometric low-to-high schedule at that mean keep, as in the
paper); ``reduce_random`` draws a random progressive schedule and scorer for each step
(:func:`random_schedule`, the distribution the search explores), with probability
``reduce_random`` per step, so the model learns to answer from whatever a schedule keeps.

Notes for the GPU: the model stays in ``eval()`` mode while it trains (it has no dropout).
In ``train()`` mode transformers' NemotronH mixer takes mamba-ssm's fused conv+scan path,
which needs causal-conv1d; in ``eval()`` mode it uses the Triton SSD scan (with autograd)
and a torch conv, which is what is installed there.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from . import video as V
from .model import DemoConfig, DemoVideoVLM

__all__ = ["TrainConfig", "train", "evaluate_accuracy", "schedule_at", "finetune_config", "random_schedule"]

# (progress from, video lengths, distractor tracks, family weights needle/count/order/where):
# short, sparse videos and the needle family first — the model learns to find the cell that
# matches the question's words — then the other families, then long, cluttered videos.
DEFAULT_CURRICULUM = (
    (0.0, (4, 8), 1, (1.0, 0.0, 0.0, 0.0)),
    (0.06, (8, 16), 2, (2.0, 1.0, 0.0, 1.0)),
    (0.14, (8, 16, 24), 3, (1.0, 1.0, 1.5, 1.0)),
    (0.25, (16, 24, 32), 3, (1.0, 1.0, 1.5, 1.0)),
    (0.4, (24, 32, 48, 64), 3, (1.0, 1.0, 1.0, 1.0)),
    (0.6, (32, 48, 64), 3, (1.0, 1.0, 1.0, 1.0)),
)


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Either ``steps`` or ``time_budget_s`` (wall seconds of the training loop) ends it."""

    steps: int | None = None
    time_budget_s: float | None = 270.0
    tokens_per_step: int = 128 * 269  # ≈ 128 videos of 64 frames
    max_batch: int = 512
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 150
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    curriculum: tuple = DEFAULT_CURRICULUM
    seed: int = 0
    eval_every: int = 300
    eval_samples: int = 256
    log_every: int = 50
    bf16: bool = True
    aux_weight: float = 0.3  # weight of the grounding loss (see alignment_loss)
    # light finetuning under reduction: the low-to-high schedule at this mean keep (None: off)
    reduce_mean_keep: float | None = None
    # probability that a step runs under a random progressive schedule (None: off)
    reduce_random: float | None = None
    init_from: str | None = None
    model: DemoConfig = field(default_factory=DemoConfig)

    def __post_init__(self):
        if self.steps is None and self.time_budget_s is None:
            raise ConfigError("TrainConfig: give steps or time_budget_s")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise ConfigError(f"TrainConfig.steps must be a positive integer, got {self.steps!r}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ConfigError(f"TrainConfig.time_budget_s must be > 0, got {self.time_budget_s!r}")
        if self.reduce_mean_keep is not None and not 0 < self.reduce_mean_keep < 1:
            raise ConfigError(f"TrainConfig.reduce_mean_keep must be in (0, 1), got {self.reduce_mean_keep!r}")
        if self.reduce_random is not None and not 0 < self.reduce_random <= 1:
            raise ConfigError(f"TrainConfig.reduce_random must be in (0, 1], got {self.reduce_random!r}")
        if self.reduce_random is not None and self.reduce_mean_keep is not None:
            raise ConfigError("TrainConfig: reduce_mean_keep and reduce_random exclude each other")
        prev = -1.0
        for entry in self.curriculum:
            if len(entry) != 4 or not entry[0] > prev or not entry[1]:
                raise ConfigError("TrainConfig.curriculum must be (progress, lengths, tracks, family weights) "
                                  "entries with increasing progress")
            for f in entry[1]:
                V._check_frames(f)
            if not 0 <= entry[2] <= V.NUM_TRACKS:
                raise ConfigError(f"TrainConfig.curriculum: tracks must be in [0, {V.NUM_TRACKS}]")
            w = entry[3]
            if len(w) != len(V.FAMILIES) or min(w) < 0 or sum(w) <= 0:
                raise ConfigError(f"TrainConfig.curriculum: family weights must be {len(V.FAMILIES)} numbers >= 0")
            prev = entry[0]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        return d


FINETUNE_MODES = ("fixed", "random", "control")


def finetune_config(init_from: str, mode: str, *, budget_s: float, lr: float = 3e-4, seed: int = 1,
                    reduce_prob: float = 0.75, **kw) -> TrainConfig:
    """Light finetuning from ``init_from`` on the last curriculum stage: ``fixed`` under the
    low-to-high schedule at mean keep 0.25, ``random`` under random schedules for ``reduce_prob``
    of the steps, ``control`` without reduction (same data, learning rate and time)."""
    if mode not in FINETUNE_MODES:
        raise ConfigError(f"finetune mode must be one of {FINETUNE_MODES}, got {mode!r}")
    red = {"fixed": {"reduce_mean_keep": 0.25}, "random": {"reduce_random": reduce_prob}, "control": {}}[mode]
    last_stage = ((0.0,) + tuple(DEFAULT_CURRICULUM[-1][1:]),)
    return TrainConfig(seed=seed, time_budget_s=budget_s, lr=lr, warmup_steps=20, min_lr_ratio=0.1,
                       curriculum=last_stage, eval_every=0, init_from=init_from, **red, **kw)


def _lr_factor(cfg: TrainConfig, step: int, progress: float) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    p = min(1.0, max(0.0, progress))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def _stage(cfg: TrainConfig, progress: float) -> tuple[tuple[int, ...], int, np.ndarray]:
    """(video lengths, distractor tracks, family probabilities) at ``progress``."""
    cur = cfg.curriculum[0]
    for entry in cfg.curriculum:
        if progress >= entry[0]:
            cur = entry
    w = np.asarray(cur[3], dtype=np.float64)
    return tuple(cur[1]), int(cur[2]), w / w.sum()


def schedule_at(mean_keep: float, layer_kinds: str, num_visual: int):
    """The low-to-high (geometric) schedule used for training under reduction."""
    from ..analysis import schedule_family
    from ..schedule import ModelSignature

    return schedule_family("low_to_high", mean_keep, ModelSignature("demo", layer_kinds), num_visual)


def random_schedule(rng: np.random.Generator, layer_kinds: str, *, min_tokens: int = 4):
    """A random progressive schedule with a random language-aware scorer: 1–3 stages at
    increasing layers ≥ 1, each keeping 5–60 % of the tokens before it. Without Mamba
    evidence (``w_mamba = 0``) the first stage comes after the first attention layer."""
    from ..schedule import Schedule, ScorerConfig

    L = len(layer_kinds)
    w_mamba = float(rng.choice([0.0, rng.uniform(0.0, 1.0)]))
    first = 1 if w_mamba > 0 or "*" not in layer_kinds[:-1] else layer_kinds.index("*") + 1
    if first >= L:
        first, w_mamba = 1, 1.0
    n = int(rng.integers(1, 4))
    cuts = sorted(int(c) for c in rng.choice(np.arange(first, L), size=min(n, L - first), replace=False))
    keep, cur = [1.0] * L, 1.0
    for c in cuts:
        cur *= float(rng.uniform(0.05, 0.6))
        keep[c:] = [cur] * (L - c)
    scorer = ScorerConfig(state_momentum=float(rng.uniform(0.0, 0.9)), w_attn=1.0,
                          w_mamba=w_mamba,
                          mamba_decay=bool(rng.integers(2)), head_agg=str(rng.choice(["mean", "max"])),
                          evidence_window=int(rng.integers(1, 5)))
    return Schedule(keep=tuple(keep), min_tokens=min_tokens, scorer=scorer)


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def _use_kernels():
    from ..tasks.evaluate import kernels_flag

    return kernels_flag()


def choice_loss(model: DemoVideoVLM, batch: V.VideoBatch, schedule=None, *,
                aux_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over the choice logits (plus ``aux_weight`` × :func:`alignment_loss`) and the
    per-sample correctness; with ``schedule``, the backbone runs under :func:`autoprune.reduce`."""
    dev = model.device
    x = model.embed_batch(batch)
    if schedule is None:
        logits = model.last_logits(x)
    else:
        from ..runtime import reduce

        vm = DemoVideoVLM.visual_mask(len(batch), batch.frames, dev)
        with reduce(model, schedule, visual_mask=vm, use_kernels=_use_kernels()):
            logits = model.last_logits(x)
    ch = torch.as_tensor(batch.choices, device=dev)
    cm = torch.as_tensor(batch.choice_mask, device=dev)
    cl = DemoVideoVLM.choice_logits(logits, ch, cm)
    ans = torch.as_tensor(batch.answer, device=dev)
    loss = F.cross_entropy(cl, ans)
    if aux_weight:
        p = len(V.PREFIX_IDS)
        loss = loss + aux_weight * alignment_loss(model, x[:, p: p + batch.frames * V.TOKENS_PER_FRAME], batch)
    return loss, (cl.argmax(1) == ans)


_SHAPE_WORDS = V.VOCAB.encode(("none",) + V.SHAPES)
_COLOUR_WORDS = V.VOCAB.encode(("none",) + V.COLOURS)


def alignment_loss(model: DemoVideoVLM, visual: torch.Tensor, batch: V.VideoBatch) -> torch.Tensor:
    """Grounding loss (LLaVA's projector alignment in miniature): each visual token, scored against
    the backbone's *text* embeddings of the shape words and of the colour words (``none`` for an
    empty cell), should name what its cell shows. It puts the question's words and the cells that
    match them in one space, which is what the query-conditioned retrieval needs to get started.
    ``visual (b, 4F, H)``."""
    E = model.backbone.embeddings.weight
    dev = visual.device
    scale = visual.shape[-1] ** -0.5
    sh = torch.as_tensor(batch.shape, device=dev).long().reshape(len(batch), -1) + 1
    co = torch.as_tensor(batch.colour, device=dev).long().reshape(len(batch), -1) + 1
    v = visual.float()
    ls = (v @ E[_SHAPE_WORDS].float().T) * scale
    lc = (v @ E[_COLOUR_WORDS].float().T) * scale
    return F.cross_entropy(ls.flatten(0, 1), sh.flatten()) + F.cross_entropy(lc.flatten(0, 1), co.flatten())


@torch.no_grad()
def evaluate_accuracy(model: DemoVideoVLM, batch: V.VideoBatch, *, batch_size: int = 256, schedule=None,
                      bf16: bool = True) -> dict[str, float]:
    """Per-family and mean accuracy of ``model`` on ``batch`` (optionally under ``schedule``)."""
    correct = []
    for s in range(0, len(batch), batch_size):
        sub = batch.select(np.arange(s, min(len(batch), s + batch_size)))
        with _autocast(model.device, bf16):
            _, ok = choice_loss(model, sub, schedule)
        correct.append(ok.cpu())
    ok = torch.cat(correct).float()
    out = {f: float(ok[torch.as_tensor(batch.family == i)].mean()) for i, f in enumerate(V.FAMILIES)
           if (batch.family == i).any()}
    out["mean"] = float(np.mean([out[f] for f in V.FAMILIES if f in out]))
    return out


def _warm_up(model: DemoVideoVLM, cfg: TrainConfig, dev: torch.device, schedule_for) -> float:
    """One forward+backward per curriculum length, gradients discarded: Triton compiles and
    autotunes here, before the training clock starts."""
    t = time.perf_counter()
    lengths = sorted({f for entry in cfg.curriculum for f in entry[1]})
    for f in lengths:
        batch = V.generate(V.split_seeds("val", 8, f, start=10**6), np.arange(8) % len(V.FAMILIES), f)
        with _autocast(dev, cfg.bf16):
            loss, _ = choice_loss(model, batch, schedule_for(f), aux_weight=cfg.aux_weight)
        loss.backward()
    model.zero_grad(set_to_none=True)
    torch.cuda.synchronize(dev)
    return time.perf_counter() - t


class _Clock:
    """Progress in [0, 1]: by wall time (excluding evaluations) or by steps."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.t0 = time.perf_counter()
        self.paused = 0.0

    def train_seconds(self) -> float:
        return time.perf_counter() - self.t0 - self.paused

    def progress(self, step: int) -> float:
        ps = []
        if self.cfg.steps is not None:
            ps.append(step / self.cfg.steps)
        if self.cfg.time_budget_s is not None:
            ps.append(self.train_seconds() / self.cfg.time_budget_s)
        return max(ps)


def train(cfg: TrainConfig, *, out_dir: str | None = None, device: str | None = None,
          log: Callable[[str], None] = print) -> tuple[DemoVideoVLM, dict]:
    """Train (or finetune, with ``init_from``) the demo model; returns it and a report dict.

    With ``out_dir``, writes ``demo.safetensors`` + ``demo.json`` (config, this report) there.
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)
    if cfg.init_from:
        from .model import load

        model = load(cfg.init_from, device=dev, chunk_size=cfg.model.chunk_size if dev.type == "cuda" else None)
        if model.config != cfg.model:
            log(f"init_from {cfg.init_from}: using its config {model.config}")
    else:
        model = DemoVideoVLM(cfg.model).to(dev)
        if dev.type == "cpu":
            from .model import CPU_CHUNK_SIZE

            model.set_chunk_size(CPU_CHUNK_SIZE)
    model.eval()  # see the module docstring: no dropout; keeps the mixer off the fused path
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.dim() < 2 or "embed" in n or n.endswith(("A_log", "D", "dt_bias")) else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas,
                            fused=dev.type == "cuda")
    val = V.make_split("val", cfg.eval_samples, V.DEFAULT_FRAMES)
    schedules = {}

    sched_rng = np.random.default_rng(cfg.seed + 7)

    def schedule_for(frames, training: bool = False):
        if cfg.reduce_random is not None:
            if training and sched_rng.random() < cfg.reduce_random:
                return random_schedule(sched_rng, model.config.layer_kinds)
            return None
        if cfg.reduce_mean_keep is None:
            return None
        if frames not in schedules:
            schedules[frames] = schedule_at(cfg.reduce_mean_keep, model.config.layer_kinds, frames * V.TOKENS_PER_FRAME)
        return schedules[frames]

    history, evals = [], []
    compile_s = _warm_up(model, cfg, dev, schedule_for) if dev.type == "cuda" else 0.0
    if compile_s:
        log(f"kernel warm-up (compile, autotune): {compile_s:.1f}s, not counted in the budget")
    clock = _Clock(cfg)
    step, seen = 0, 0
    rng = np.random.default_rng(cfg.seed)
    base = (cfg.seed % 4096) * (1 << 20)
    # running sums on the device (no host sync per step): loss, correct and seen per family
    run = torch.zeros(1 + 2 * len(V.FAMILIES), device=dev)
    n_run = 0
    log(f"training on {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}); "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; "
        f"{'steps=' + str(cfg.steps) if cfg.steps else ''} "
        f"{'budget=' + str(cfg.time_budget_s) + 's' if cfg.time_budget_s else ''}"
        f"{' under reduction, mean keep ' + str(cfg.reduce_mean_keep) if cfg.reduce_mean_keep else ''}"
        f"{' under random schedules, p=' + str(cfg.reduce_random) if cfg.reduce_random else ''}")
    while True:
        progress = clock.progress(step)
        if progress >= 1.0:
            break
        lengths, tracks, fam_p = _stage(cfg, progress)
        frames = int(rng.choice(lengths))
        bsz = int(min(cfg.max_batch, max(1, cfg.tokens_per_step // DemoVideoVLM.sequence_length(frames))))
        seeds = V.split_seeds("train", bsz, frames, start=base + seen)
        fams = rng.choice(len(V.FAMILIES), size=bsz, p=fam_p)
        batch = V.generate(seeds, fams, frames, tracks)
        seen += bsz
        for g in opt.param_groups:
            g["lr"] = cfg.lr * _lr_factor(cfg, step, progress)
        with _autocast(dev, cfg.bf16):
            loss, ok = choice_loss(model, batch, schedule_for(frames, training=True), aux_weight=cfg.aux_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        with torch.no_grad():
            fam_t = torch.as_tensor(batch.family, device=dev).long()
            nf = len(V.FAMILIES)
            run[0] += loss.detach().float()
            run[1: 1 + nf] += torch.bincount(fam_t, weights=ok.float(), minlength=nf)
            run[1 + nf:] += torch.bincount(fam_t, minlength=nf).float()
        n_run += 1
        if step % cfg.log_every == 0 or step == 1:
            r = run.tolist()
            nf = len(V.FAMILIES)
            fam_acc = {f: r[1 + i] / max(1.0, r[1 + nf + i]) for i, f in enumerate(V.FAMILIES)}
            lv = r[0] / n_run
            av = sum(r[1: 1 + nf]) / max(1.0, sum(r[1 + nf:]))
            run.zero_()
            n_run = 0
            rec = {"step": step, "progress": round(progress, 4), "seconds": round(clock.train_seconds(), 2),
                   "frames": frames, "tracks": tracks, "batch": bsz, "loss": lv, "train_acc": av,
                   "train_acc_per_family": fam_acc, "lr": opt.param_groups[0]["lr"], "grad_norm": float(gn)}
            history.append(rec)
            log(f"step {step:5d} {rec['seconds']:7.1f}s p={progress:.3f} F={frames:3d} T={tracks} b={bsz:3d} "
                f"loss {lv:.3f} acc {av:.3f} [" + " ".join(f"{f[:2]} {a:.2f}" for f, a in fam_acc.items())
                + f"] lr {rec['lr']:.1e} |g| {float(gn):.2f}")
        if cfg.eval_every and step % cfg.eval_every == 0:
            t = time.perf_counter()
            acc = evaluate_accuracy(model, val, bf16=cfg.bf16, schedule=schedule_for(V.DEFAULT_FRAMES))
            clock.paused += time.perf_counter() - t
            evals.append({"step": step, "seconds": round(clock.train_seconds(), 2), **acc})
            log(f"  val@{step}: " + "  ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    seconds = clock.train_seconds()
    report = {
        "train_config": cfg.to_dict(), "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__, "steps": step, "samples_seen": seen, "train_seconds": round(seconds, 1),
        "warm_up_seconds": round(compile_s, 1),
        "history": history, "val": evals,
    }
    log(f"done: {step} steps, {seen} videos, {seconds:.1f}s")
    if out_dir is not None:
        from .model import save

        save(model, out_dir, metadata=report)
    return model, report


def write_report(path, report: dict) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    return p


# --------------------------------------------------------------------- final report
def _row(r) -> dict:
    """A reduced-schedule result as stored in the training report."""
    return {"accuracy": r.score, "ci": [r.ci_low, r.ci_high], "delta": r.extra["delta"],
            "delta_ci": [r.extra["delta_ci_low"], r.extra["delta_ci_high"]], "mean_keep": r.extra["mean_keep"],
            "per_family": dict(r.per_family)}


def measure(model: DemoVideoVLM, *, test_samples: int = 1024, long_frames: int | None = 128,
            long_samples: int = 512, mean_keep: float = 0.25, batch_size: int = 256, log=print) -> dict:
    """Unreduced test accuracy (per family), longer-video accuracy, and accuracy at ``mean_keep``
    for the language-aware and the query-agnostic selectors (the "token choice matters" check)."""
    from ..analysis import schedule_family
    from ..schedule import Schedule, ScorerConfig
    from ..tasks.evaluate import AccuracyEvaluator
    from .task import DemoQA

    qa = DemoQA(model, embed_batch_size=batch_size)
    out: dict = {}
    t0 = time.perf_counter()
    ev = AccuracyEvaluator(qa, qa.prepare_videos(V.make_split("test", test_samples, V.DEFAULT_FRAMES)),
                           batch_size=batch_size)
    base = ev.baseline
    out["test"] = {"frames": V.DEFAULT_FRAMES, "n": base.n, "accuracy": base.score, "ci": [base.ci_low, base.ci_high],
                   "per_family": dict(base.per_family)}
    log(f"test ({V.DEFAULT_FRAMES} frames, n={base.n}): {base.score:.3f} "
        + "  ".join(f"{k} {v:.3f}" for k, v in base.per_family.items()))
    L, Vn = ev.signature.num_layers, ev.num_visual
    rows = {}
    # A two-stage schedule scored by attention alone (no Mamba evidence): layers 0–1 see every
    # token, layer 2 keeps 20 %, layer 6 keeps 5 % (mean keep ≈ 0.26 for 12 layers).
    if L >= 8:
        keep = [1.0, 1.0] + [0.2] * 4 + [0.05] * (L - 6)
        s = Schedule(keep=tuple(keep), min_tokens=4, scorer=ScorerConfig(w_mamba=0.0))
        r = ev.evaluate(s)
        rows["two_stage/attention"] = {**_row(r), "keep": keep}
        log(f"  keep {r.extra['mean_keep']:.3f} two_stage/attention      {r.score:.3f}  (Δ {r.extra['delta']:+.3f})")
    for shape in ("uniform", "low_to_high"):
        for sel in ("language", "uniform_stride", "random"):
            s = schedule_family(shape, mean_keep, ev.signature, Vn, scorer=ScorerConfig(selector=sel))
            r = ev.evaluate(s)
            rows[f"{shape}/{sel}"] = _row(r)
            log(f"  keep {mean_keep} {shape:<12} {sel:<15} {r.score:.3f}  (Δ {r.extra['delta']:+.3f})")
    out["at_mean_keep"] = {"mean_keep": mean_keep, "schedules": rows}
    rnd = rows["uniform/random"]
    out["random_drop_points"] = round(-100 * rnd["delta"], 2)
    out["random_drop_points_low_to_high"] = round(-100 * rows["low_to_high/random"]["delta"], 2)
    if long_frames:
        evl = AccuracyEvaluator(qa, qa.prepare_videos(V.make_split("test", long_samples, long_frames)),
                                batch_size=max(1, batch_size * V.DEFAULT_FRAMES // long_frames))
        bl = evl.baseline
        out["test_long"] = {"frames": long_frames, "n": bl.n, "accuracy": bl.score, "ci": [bl.ci_low, bl.ci_high],
                            "per_family": dict(bl.per_family)}
        log(f"test ({long_frames} frames, n={bl.n}): {bl.score:.3f} "
            + "  ".join(f"{k} {v:.3f}" for k, v in bl.per_family.items()))
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def train_and_report(cfg: TrainConfig, out_dir: str, *, device: str | None = None, test_samples: int = 1024,
                     long_frames: int | None = 128, log=print) -> dict:
    """Train, measure (:func:`measure`), and write weights + ``demo.json`` (with everything) to ``out_dir``."""
    from .model import save

    model, report = train(cfg, device=device, log=log)
    model.eval()
    report["measure"] = measure(model, test_samples=test_samples, long_frames=long_frames, log=log)
    save(model, out_dir, metadata=report)
    write_report(Path(out_dir) / "report.json", report)
    return report
