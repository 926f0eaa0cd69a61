"""The ``demo`` model source: the shipped demo model, its evaluation sets, and the latency of its
schedules.

The demo model is tiny, so its own prefill says nothing about a served VLM. Its latency is
therefore predicted for **its layer pattern at NemotronH-8B widths** (shape
``demo@nemotron-h-8b``) and a long-video token layout (32 prefix + 16,384 visual + 64 query
tokens): the keep ratios of a schedule, which transfer between the two, are what the search
optimises. A measuring study times that latency shape on the present GPU (random bf16 weights,
the real runtime), or, on a CPU, the demo model itself (labelled ``cpu-measured``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cost.latency import LatencyModel
from ..cost.shapes import NEMOTRON_H_8B, ModelShape, TokenLayout
from ..errors import ConfigError
from ..interfaces import SourceRequest, StudyInputs
from ..models import register_model_source
from ..profiler.measured import MeasuredLatency
from ..tasks.prefix_cache import DEFAULT_MAX_BYTES, PrefixCache

__all__ = ["DemoSource", "DemoSetup", "build_evaluator", "load_setup", "measured_latency", "DEMO_LATENCY_LAYOUT",
           "demo_latency_shape", "DEMO_OPTIONS"]

DEMO_LATENCY_LAYOUT = TokenLayout(prefix=32, visual=16384, query=64)
DEMO_OPTIONS = {
    "weights": "folder of other demo weights (default: the shipped ones)",
    "n": "evaluation videos (256; a study: 224)",
    "frames": "frames per video, or a list of lengths mixed with equal visual tokens per length "
              "(64; a study: [64, 128, 256])",
    "split": "video split (test; a study: val)",
    "start": "first video seed of the split (0)", "batch_size": "videos per forward (64)",
    "validation_n": "videos of a study's validation set (1536; 0: none)",
    "validation_start": "first seed of the validation set in the split (1,000,000: disjoint from the search set)",
    "seed": "bootstrap seed (0)", "n_boot": "bootstrap resamples (1000)",
    "latency_visual": "visual tokens of the latency layout (16384)",
    "measure_batch": "videos per timed prefill when measuring on the CPU (8)",
    "device": "device of the demo model (cpu; cuda when measuring on a GPU)",
    "prefix_cache_mb": "MiB of the prefix activation cache (1024; 0 turns it off)",
}


# What a study evaluates when the user does not say: a mix of video lengths with the same number
# of visual tokens per length, from the validation split (the test split stays unseen), and a
# disjoint validation set of the same mix large enough for a ±1.5-point interval near 90 %.
STUDY_DEFAULTS = {"frames": (64, 128, 256), "n": 224, "split": "val", "validation_n": 1536,
                  "validation_start": 1_000_000}


def _lengths(frames) -> tuple[int, ...]:
    values = frames if isinstance(frames, (list, tuple)) else [frames]
    try:
        out = tuple(int(f) for f in values)
    except (TypeError, ValueError):
        raise ConfigError(f"frames must be a number of frames or a list of them, got {frames!r}") from None
    if not out or any(f < 1 for f in out) or len(set(out)) != len(out):
        raise ConfigError(f"frames must be distinct positive numbers of frames, got {frames!r}")
    return out


def split_counts(n: int, lengths: tuple[int, ...]) -> dict[int, int]:
    """``n`` videos over ``lengths`` with the same number of visual tokens per length (counts ∝ 1/frames)."""
    w = [1.0 / f for f in lengths]
    raw = [n * x / sum(w) for x in w]
    counts = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    return dict(zip(lengths, counts))


def demo_latency_shape(layer_kinds: str) -> ModelShape:
    """The demo model's layer pattern at NemotronH-8B widths (the cost model of demo schedules)."""
    return NEMOTRON_H_8B.with_layer_kinds(layer_kinds, name=f"demo@{NEMOTRON_H_8B.name}")


def _cache_mb(options) -> float:
    raw = options.get("prefix_cache_mb", DEFAULT_MAX_BYTES >> 20)
    try:
        mb = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"prefix_cache_mb must be a number of MiB (0 turns the cache off), got {raw!r}") from None
    if not mb >= 0:  # also NaN
        raise ConfigError(f"prefix_cache_mb must be >= 0 (0 turns the cache off), got {mb!r}")
    return mb


def _check_task(task: str | None) -> None:
    if task not in (None, "accuracy", "fidelity") and Path(task).suffix != ".jsonl":
        raise ConfigError(f"task must be 'accuracy', 'fidelity' or a .jsonl file, got {task!r}")


def _check_options(options) -> None:
    unknown = sorted(set(options) - set(DEMO_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown demo option(s) {unknown}; known: {sorted(DEMO_OPTIONS)}")
    _cache_mb(options)
    _lengths(options.get("frames", 64))


@dataclass(frozen=True)
class DemoSetup:
    """The demo model loaded with one evaluation set: the evaluator, the model it runs, the
    latency shape and layout of its schedules, and the batch size of a CPU measurement."""

    evaluator: Any  # AccuracyEvaluator | FidelityEvaluator
    net: Any  # DemoVideoVLM
    shape: ModelShape
    layout: TokenLayout
    measure_batch: int


def load_setup(task: str | None = None, **options: Any) -> DemoSetup:
    """Load the demo model and the evaluation set of ``task`` (see :data:`DEMO_OPTIONS`).

    ``task``: ``None`` or ``"accuracy"`` (labelled test videos), ``"fidelity"`` (agreement with the
    unreduced model, no labels), or a JSONL file of records in the demo vocabulary (accuracy when
    every record has an answer, fidelity otherwise; format in :mod:`autoprune.tasks.records`).
    """
    _check_task(task)
    _check_options(options)
    import torch

    from ..tasks.evaluate import AccuracyEvaluator, FidelityEvaluator
    from ..tasks.records import load_jsonl
    from . import video as V
    from .model import load
    from .task import DEFAULT_EVAL_SAMPLES, DemoQA

    cache_mb = _cache_mb(options)
    net = load(options.get("weights"), device=options.get("device") or "cpu")
    qa = DemoQA(net)
    kw = {"batch_size": int(options.get("batch_size", 64)), "seed": int(options.get("seed", 0)),
          "n_boot": int(options.get("n_boot", 1000))}
    if cache_mb > 0:
        kw["prefix_cache"] = PrefixCache(net, max_bytes=int(cache_mb * 2**20))
    with torch.inference_mode():
        if task in (None, "accuracy", "fidelity"):
            data = _videos(qa, options.get("split", "test"), int(options.get("n", DEFAULT_EVAL_SAMPLES)),
                           _lengths(options.get("frames", V.DEFAULT_FRAMES)), int(options.get("start", 0)))
            cls = FidelityEvaluator if task == "fidelity" else AccuracyEvaluator
        else:
            data = qa.prepare(load_jsonl(Path(task)))
            cls = AccuracyEvaluator if data.labelled else FidelityEvaluator
    layout = dataclasses.replace(DEMO_LATENCY_LAYOUT,
                                 visual=int(options.get("latency_visual", DEMO_LATENCY_LAYOUT.visual)))
    return DemoSetup(evaluator=cls(qa, data, **kw), net=net, shape=demo_latency_shape(net.config.layer_kinds),
                     layout=layout, measure_batch=int(options.get("measure_batch", 8)))


def _videos(qa, split: str, n: int, lengths: tuple[int, ...], start: int):
    from ..tasks.prepared import PreparedSet
    from . import video as V

    sets = [qa.prepare_videos(V.make_split(split, k, f, start)) for f, k in split_counts(n, lengths).items() if k]
    if not sets:
        raise ConfigError(f"no videos to evaluate (n={n})")
    return sets[0] if len(sets) == 1 else PreparedSet.concat(sets)


def validation_evaluator(setup: DemoSetup, task: str | None, **options: Any):
    """An evaluator of the same kind as ``setup``'s on the validation videos (``validation_n`` of
    them from ``validation_start`` on, the same length mix), sharing its model."""
    import torch

    from ..tasks.evaluate import AccuracyEvaluator, FidelityEvaluator
    from . import video as V
    from .task import DemoQA

    qa = DemoQA(setup.net)
    kw = {"batch_size": int(options.get("batch_size", 64)), "seed": int(options.get("seed", 0)),
          "n_boot": int(options.get("n_boot", 1000))}
    cache_mb = _cache_mb(options)
    if cache_mb > 0:
        kw["prefix_cache"] = PrefixCache(setup.net, max_bytes=int(cache_mb * 2**20))
    with torch.inference_mode():
        data = _videos(qa, options.get("split", "test"), int(options["validation_n"]),
                       _lengths(options.get("frames", V.DEFAULT_FRAMES)), int(options["validation_start"]))
    cls = FidelityEvaluator if task == "fidelity" else AccuracyEvaluator
    return cls(qa, data, **kw)


def build_evaluator(task: str | None = None, **options: Any):
    """The evaluator of :func:`load_setup` alone (for analysis and tests)."""
    return load_setup(task, **options).evaluator


class ProxyLatency(MeasuredLatency):
    """Times schedules of the demo model on its latency shape: same layer kinds, other widths,
    so the schedule's model fingerprint (the demo's) is dropped before applying it."""

    def measure(self, schedule):
        return super().measure(dataclasses.replace(schedule, model=None))


def measured_latency(setup: DemoSetup, gpu: str) -> MeasuredLatency:
    """The latency source of a measuring study, labelled with where it ran.

    On a CUDA device: the latency *shape* (the demo's layer pattern at NemotronH-8B widths,
    random bf16 weights) prefilling the long-video layout through the real runtime, timed with
    CUDA events (and NVML energy): the measurement the latency model predicts, so budget,
    projection and objective agree. (Timing the 0.7M-parameter demo itself on a GPU would
    measure kernel launches, not tokens.) On the CPU: the demo model itself on a batch of
    ``measure_batch`` evaluation samples, wall clock (``cpu-measured``, a fallback).
    """
    import torch

    ev = setup.evaluator
    if ev.device.type == "cuda":
        from ..profiler.random_model import build_random_model
        from ..profiler.monitor import GpuMonitor

        proxy = build_random_model(setup.shape, ev.device, torch.bfloat16)
        lay = setup.layout
        x = torch.randn(1, lay.total, setup.shape.hidden_size, device=ev.device, dtype=torch.bfloat16)
        vm = torch.zeros(1, lay.total, dtype=torch.bool, device=ev.device)
        vm[:, lay.prefix: lay.prefix + lay.visual] = True
        try:
            monitor = GpuMonitor(energy=True)
        except Exception:  # noqa: BLE001 — no NVML: latency only, and the estimate says so (no energy)
            monitor = None
        return ProxyLatency(proxy, x, vm, gpu=gpu, monitor=monitor)
    g = max(ev.data.groups, key=len)
    n = min(len(g), setup.measure_batch)
    x = g.inputs_embeds[:n]
    vm = g.visual_mask[None].expand(n, -1)
    return MeasuredLatency(setup.net.backbone, x, vm, gpu=gpu, forward_kwargs={"use_cache": False})


def _evaluation_info(task, opts, val_n: int, val_start: int, n: int) -> dict:
    from . import video as V

    if task not in (None, "accuracy", "fidelity"):
        return {"search": {"data": str(task), "n": n}, "validation": None}
    lengths = _lengths(opts.get("frames", V.DEFAULT_FRAMES))
    split = opts.get("split", "test")
    start = int(opts.get("start", 0))

    def part(first: int, total: int) -> dict:
        counts = split_counts(total, lengths)
        return {"data": "procedural demo videos", "split": split, "n": total,
                "frames": {str(f): k for f, k in counts.items()},
                "seeds": f"samples {first}..{first + max(counts.values()) - 1} of split {split!r} at each length"}

    return {"search": part(start, n), "validation": part(val_start, val_n) if val_n > 0 else None}


@register_model_source("demo")
class DemoSource:
    """The embedded default (see the module docstring)."""

    name = "demo"
    options = DEMO_OPTIONS

    def check(self, request: SourceRequest) -> None:
        _check_task(request.task)
        _check_options(request.options)

    def build(self, request: SourceRequest) -> StudyInputs:
        import torch

        opts = {**(STUDY_DEFAULTS if request.task in (None, "accuracy", "fidelity") else {}), **request.options}
        if request.measure and "device" not in opts:
            opts["device"] = "cuda" if not request.gpu.is_cpu and torch.cuda.is_available() else "cpu"
        val_n = int(opts.pop("validation_n", 0) or 0)
        val_start = int(opts.pop("validation_start", STUDY_DEFAULTS["validation_start"]))
        setup = load_setup(request.task, **opts)
        validation = None
        if val_n > 0 and request.task in (None, "accuracy", "fidelity"):
            def validation(setup=setup, task=request.task, opts=opts):
                return validation_evaluator(setup, task, **opts, validation_n=val_n, validation_start=val_start)
        ev = setup.evaluator
        lay = setup.layout
        info: dict[str, Any] = {"model": "demo video VLM (NemotronH backbone, 12 layers)",
                                "layout": {"prefix": lay.prefix, "visual": lay.visual, "query": lay.query},
                                "evaluated_visual_tokens": list(ev.data.visual_counts)}
        if request.measure:
            try:
                model = LatencyModel(setup.shape, lay, request.gpu)
            except ConfigError:  # no table or calibration for this device (the CPU)
                model = None
            latency = measured_latency(setup, gpu=request.gpu.id)
            # The CPU has no latency model of this shape: project with the measurement, timed once
            # (the objective's measurement, repeated, decides feasibility and is flagged when noisy).
            predictor = model or latency.with_timer(repeats=1)
            if ev.device.type == "cuda":
                info["shape"] = setup.shape.name
                info["measured"] = "the latency shape, random bf16 weights, CUDA events"
            else:
                info["measured"] = "the demo model itself on the CPU, wall clock (a fallback)"
        else:
            latency = predictor = model = LatencyModel(setup.shape, lay, request.gpu)
            info["shape"] = setup.shape.name
            info.update(model.describe())
        return StudyInputs(evaluator=ev, latency=latency, predictor=predictor, model="demo",
                           task=request.task or ev.metric, shape=setup.shape, layout=lay, latency_info=info,
                           evaluated_visual=ev.data.visual_counts, validation=validation,
                           evaluation_info=_evaluation_info(request.task, opts, val_n, val_start, len(ev.data)))
