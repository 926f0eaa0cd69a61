"""``build_evaluator``: (model, task, options) → an evaluator the search can use.

The evaluator also carries what the latency side needs: ``shape`` (the
:class:`~autoprune.cost.shapes.ModelShape` whose cost is predicted) and ``layout`` (the
:class:`~autoprune.cost.shapes.TokenLayout` of the prefill being sped up).

The demo model is tiny, so its own prefill says nothing about a served VLM. Its latency is
therefore predicted for **its layer pattern at NemotronH-8B widths** (``demo@nemotron-h-8b``)
and a long-video layout (32 prefix + 16,384 visual + 64 query tokens): the schedule's keep
ratios, which transfer between the two, are what the search optimises. With ``--measure``
the demo model itself is timed on the present device instead (``MeasuredLatency``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..cost.shapes import NEMOTRON_H_8B, TokenLayout
from ..errors import ConfigError
from ..profiler.measured import MeasuredLatency
from .prefix_cache import DEFAULT_MAX_BYTES, PrefixCache

__all__ = ["build_evaluator", "DEMO_LATENCY_LAYOUT", "demo_latency_shape", "DEMO_OPTIONS"]

DEMO_LATENCY_LAYOUT = TokenLayout(prefix=32, visual=16384, query=64)
DEMO_OPTIONS = ("weights", "n", "frames", "split", "start", "batch_size", "seed", "n_boot", "latency_visual",
                "measure_batch", "device", "prefix_cache_mb")


def demo_latency_shape(layer_kinds: str):
    """The demo model's layer pattern at NemotronH-8B widths (the cost model of demo schedules)."""
    return NEMOTRON_H_8B.with_layer_kinds(layer_kinds, name=f"demo@{NEMOTRON_H_8B.name}")


def build_evaluator(*, model: str = "demo", task: str | None = None, **options: Any):
    """An :class:`~autoprune.interfaces.Evaluator` with ``shape`` and ``layout`` attributes.

    ``model="demo"``: the shipped demo model (or ``weights=DIR``). ``task``: ``None`` or
    ``"accuracy"`` (labelled test videos), ``"fidelity"`` (agreement with the unreduced model,
    no labels), or a path to a JSONL file of records in the demo vocabulary (accuracy when
    every record has an answer, fidelity otherwise; format in :mod:`autoprune.tasks.records`).
    Options: ``n`` (256 videos), ``frames`` (64), ``split`` (test), ``start``, ``batch_size``,
    ``seed``, ``n_boot``, ``latency_visual`` (16,384), ``device``, ``prefix_cache_mb``
    (1024: the prefix activation cache's limit, :mod:`autoprune.tasks.prefix_cache`; 0 turns
    it off — results are the same either way, only slower).
    """
    if model != "demo":
        raise ConfigError(f"unknown model {model!r}: built in are 'demo' and 'synthetic'; for your own model use "
                          "a study inputs factory (--inputs module:function, see README)")
    unknown = sorted(set(options) - set(DEMO_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown demo option(s) {unknown}; known: {sorted(DEMO_OPTIONS)}")
    import torch

    from ..demo import video as V
    from ..demo.model import load
    from ..demo.task import DEFAULT_EVAL_SAMPLES, DemoQA
    from .evaluate import AccuracyEvaluator, FidelityEvaluator
    from .records import load_jsonl

    raw = options.get("prefix_cache_mb", DEFAULT_MAX_BYTES >> 20)
    try:
        cache_mb = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"prefix_cache_mb must be a number of MiB (0 turns the cache off), got {raw!r}") from None
    if not cache_mb >= 0:  # also NaN
        raise ConfigError(f"prefix_cache_mb must be >= 0 (0 turns the cache off), got {cache_mb!r}")
    device = options.get("device") or "cpu"
    net = load(options.get("weights"), device=device)
    qa = DemoQA(net)
    kw = {"batch_size": int(options.get("batch_size", 64)), "seed": int(options.get("seed", 0)),
          "n_boot": int(options.get("n_boot", 1000))}
    if cache_mb > 0:
        kw["prefix_cache"] = PrefixCache(net, max_bytes=int(cache_mb * 2**20))
    with torch.inference_mode():
        if task in (None, "accuracy", "fidelity"):
            data = qa.prepare_videos(V.make_split(options.get("split", "test"), int(options.get("n", DEFAULT_EVAL_SAMPLES)),
                                                  int(options.get("frames", V.DEFAULT_FRAMES)),
                                                  int(options.get("start", 0))))
            cls = FidelityEvaluator if task == "fidelity" else AccuracyEvaluator
        else:
            path = Path(task)
            if path.suffix != ".jsonl":
                raise ConfigError(f"task must be 'accuracy', 'fidelity' or a .jsonl file, got {task!r}")
            data = qa.prepare(load_jsonl(path))
            cls = AccuracyEvaluator if data.labelled else FidelityEvaluator
    ev = cls(qa, data, **kw)
    ev.shape = demo_latency_shape(net.config.layer_kinds)
    visual = int(options.get("latency_visual", DEMO_LATENCY_LAYOUT.visual))
    ev.layout = TokenLayout(prefix=DEMO_LATENCY_LAYOUT.prefix, visual=visual, query=DEMO_LATENCY_LAYOUT.query)
    ev.model = net
    ev.measure_batch = int(options.get("measure_batch", 8))
    return ev


class ProxyLatency(MeasuredLatency):
    """Times schedules of the demo model on its latency shape: same layer kinds, other widths,
    so the schedule's model fingerprint (the demo's) is dropped before applying it."""

    def measure(self, schedule):
        return super().measure(dataclasses.replace(schedule, model=None))


def measured_latency(evaluator, gpu: str | None = None):
    """``MeasuredLatency`` for ``--measure``, labelled with where it ran.

    On a CUDA device: the latency *shape* (the demo's layer pattern at NemotronH-8B widths,
    random bf16 weights) prefilling the long-video layout through the real runtime, timed with
    CUDA events (and NVML energy): the measurement the latency model predicts, so budget,
    projection and objective agree. (Timing the 0.7M-parameter demo itself on a GPU would
    measure kernel launches, not tokens.) On the CPU: the demo model itself on a batch of
    ``measure_batch`` evaluation samples, wall clock (``cpu-measured``, a fallback).
    """
    import torch

    if evaluator.device.type == "cuda":
        from ..profiler.monitor import GpuMonitor
        from ..profiler.random_model import build_random_model

        dev = evaluator.device
        proxy = build_random_model(evaluator.shape, dev, torch.bfloat16)
        lay = evaluator.layout
        x = torch.randn(1, lay.total, evaluator.shape.hidden_size, device=dev, dtype=torch.bfloat16)
        vm = torch.zeros(1, lay.total, dtype=torch.bool, device=dev)
        vm[:, lay.prefix: lay.prefix + lay.visual] = True
        try:
            monitor = GpuMonitor(energy=True)
        except Exception:  # noqa: BLE001 — no NVML: latency only, and the estimate says so (no energy)
            monitor = None
        return ProxyLatency(proxy, x, vm, gpu=gpu, monitor=monitor)
    g = max(evaluator.data.groups, key=len)
    n = min(len(g), getattr(evaluator, "measure_batch", 8))
    x = g.inputs_embeds[:n]
    vm = g.visual_mask[None].expand(n, -1)
    return MeasuredLatency(evaluator.model.backbone, x, vm, gpu=gpu, forward_kwargs={"use_cache": False})

