"""The ``synthetic`` model source: an evaluator and a latency source that need no network
weights and no GPU.

``autoprune search --model synthetic`` runs the whole pipeline (study, budget, references,
export) in seconds; the tests and ``benchmarks/search_speed.py`` use it. Nothing here is a claim
about real models: the numbers are shaped after the paper's findings so that the search has a
realistic landscape to climb:

- *latency*: per layer, Mamba/MLP/MoE cost is linear in the tokens present, attention has a
  quadratic term; scoring costs a little per evidence layer (much more with the Mamba decay
  term), gathering a little per prune point; a per-GPU speed factor; the unreduced latency is
  computed once.
- *accuracy*: layerwise sparsity (keeping a fraction ``r`` of the tokens keeps ``r ** alpha``
  of the importance, ``alpha < 1``) and importance instability (``alpha`` is larger early:
  pruning hard early is unreliable), so low-to-high schedules beat uniform ones at equal
  latency; the scorer knobs change ``alpha`` with an optimum near β = 0.6,
  ``w_mamba / w_attn`` ≈ 0.7, no decay, mean heads, evidence window 2.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path

from ..cost.gpus import GpuSpec
from ..cost.shapes import NEMOTRON_H_8B, TokenLayout
from ..errors import ConfigError
from ..interfaces import LatencyEstimate, SourceRequest, StudyInputs, TaskResult
from ..schedule import ModelSignature, Schedule
from . import register_model_source

__all__ = ["SyntheticEvaluator", "SyntheticLatency", "SyntheticSource", "speed_factor"]

# Relative time per unit of work on the GPUs the tests name; any other GPU is scaled by its
# memory bandwidth against the A100's (the synthetic layers are bandwidth-shaped).
_FACTORS = {"a100-sxm4-80gb": 1.0, "h100-sxm5-80gb": 0.55, "h200-sxm-141gb": 0.5, "l40s": 1.6, "cpu": 25.0}
_A100_BANDWIDTH_GBS = 2039.0


def speed_factor(gpu: GpuSpec) -> float:
    """Relative time per unit of synthetic work on ``gpu`` (the A100 is 1)."""
    if gpu.id in _FACTORS:
        return _FACTORS[gpu.id]
    return _A100_BANDWIDTH_GBS / gpu.memory_bandwidth_gbs


def _signature(layer_kinds: str) -> ModelSignature:
    return ModelSignature(family="synthetic", layer_kinds=layer_kinds, fingerprint=None)


class SyntheticLatency:
    """Deterministic latency of a schedule on a named GPU (see the module docstring).

    ``measured=True`` stands for timing on the present GPU: source ``measured`` (or
    ``cpu-measured`` for the CPU), a ±0.5% spread derived from the schedule, and
    energy (``250 W × latency``).
    """

    def __init__(self, signature: ModelSignature, layout: TokenLayout, gpu: GpuSpec, *, measured: bool = False):
        self.signature = signature
        self.layout = layout
        self.gpu, self._factor = gpu.id, speed_factor(gpu)
        self.measured = measured
        if measured:
            self.source = "cpu-measured" if self.gpu == "cpu" else "measured"
        else:
            self.source = "roofline"
        self.calls = 0
        self.baseline_ms = self._latency(Schedule.identity(signature.num_layers, model=signature), noise=False)

    def _latency(self, schedule: Schedule, *, noise: bool = True) -> float:
        V, text = self.layout.visual, self.layout.text
        counts = schedule.tokens_per_layer(V)
        total = 2.0  # embedding, LM head on the last token, launch overheads
        for kind, v in zip(self.signature.layer_kinds, counts):
            n = text + v
            if kind == "M":
                total += 1.0e-3 * n
            elif kind == "*":
                total += 0.6e-3 * n + 2.0e-8 * n * n
            elif kind == "-":
                total += 1.2e-3 * n
            else:
                total += 0.8e-3 * n
        prunes = schedule.prune_layers(V)
        if prunes and schedule.scorer.selector == "language":
            sc = schedule.scorer
            per_evidence = 0.02 + (0.5 if sc.mamba_decay and sc.w_mamba > 0 else 0.0) + (0.01 if sc.head_agg == "max" else 0)
            total += len(prunes) * (sc.evidence_window * per_evidence + 0.05)
        elif prunes:
            total += len(prunes) * 0.05
        ms = total * self._factor
        if noise and self.measured:
            ms *= 1.0 + 0.005 * (_unit_hash(schedule) * 2 - 1)
        return ms

    def estimate(self, schedule: Schedule) -> LatencyEstimate:
        self.calls += 1
        ms = self._latency(schedule)
        energy = base_energy = None
        if self.measured:
            energy, base_energy = 0.25 * ms, 0.25 * self.baseline_ms
        return LatencyEstimate(latency_ms=ms, baseline_ms=self.baseline_ms, source=self.source, gpu=self.gpu,
                               energy_j=energy, baseline_energy_j=base_energy,
                               spread=0.005 if self.measured else None)


def _unit_hash(schedule: Schedule, salt: int = 0) -> float:
    h = hashlib.sha256(repr((schedule.keep, schedule.scorer, salt)).encode()).digest()
    return int.from_bytes(h[:8], "little") / 2**64


class SyntheticEvaluator:
    """Deterministic score of a schedule (see the module docstring).

    ``metric`` ``accuracy`` (4-way multiple choice, baseline 0.72) or ``fidelity``
    (agreement with the unreduced model, baseline 1.0). Hooks for tests:
    ``delay_s`` sleeps per evaluation (to mimic the real cost); ``fail_at``,
    ``nan_at`` and ``hang_at`` make the n-th evaluation of this process (1-based)
    raise, return NaN, or hang for an hour after touching ``hang_marker``. ``noise`` adds a
    deterministic per-schedule offset of that standard deviation (a sample set's luck), drawn
    with ``salt``: two evaluators with other salts disagree like two sample sets do.
    """

    def __init__(self, signature: ModelSignature, num_visual: int, *, metric: str = "accuracy", n: int = 500,
                 delay_s: float = 0.0, fail_at: int | None = None, nan_at: int | None = None,
                 hang_at: int | None = None, hang_marker: str | None = None, noise: float = 0.0, salt: int = 0):
        if metric not in ("accuracy", "fidelity"):
            raise ConfigError(f"synthetic metric must be accuracy or fidelity, got {metric!r}")
        self.signature = signature
        self.num_visual = num_visual
        self.metric = metric
        self.n = n
        self.delay_s = delay_s
        self.fail_at, self.nan_at, self.hang_at, self.hang_marker = fail_at, nan_at, hang_at, hang_marker
        self.noise, self.salt = float(noise), int(salt)
        self.evaluations = 0
        self._base, self._chance = (0.72, 0.25) if metric == "accuracy" else (1.0, 0.0)

    def _quality(self, schedule: Schedule) -> float:
        sc = schedule.scorer
        penalty = 1.0 + 0.8 * (sc.state_momentum - 0.6) ** 2
        if sc.selector == "language":
            ratio = math.log((sc.w_mamba + 1e-3) / (sc.w_attn + 1e-3))
            penalty += 0.06 * (ratio - math.log(0.7)) ** 2
            penalty += 0.08 if sc.mamba_decay else 0.0
            penalty += 0.05 if sc.head_agg == "max" else 0.0
            penalty += 0.04 * abs(sc.evidence_window - 2)
        else:
            penalty *= 2.5 if sc.selector == "uniform_stride" else 3.0
        V, L = self.num_visual, schedule.num_layers
        counts = schedule.tokens_per_layer(V)
        info, prev = 1.0, V
        for i, c in enumerate(counts):
            if c < prev:
                depth = i / L
                alpha = (0.12 + 0.6 * math.exp(-depth / 0.25)) * penalty
                info *= (c / prev) ** (alpha * (1.0 - 0.6 * depth))
            prev = c
        return info

    def evaluate(self, schedule: Schedule) -> TaskResult:
        self.evaluations += 1
        k = self.evaluations
        if self.hang_at == k:
            if self.hang_marker:
                Path(self.hang_marker).write_text(str(os.getpid()))
            time.sleep(3600)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_at == k:
            raise MemoryError(f"synthetic out-of-memory at evaluation {k}")
        score = self._chance + (self._base - self._chance) * self._quality(schedule)
        if self.noise:
            u = _unit_hash(schedule, self.salt)
            score = min(1.0, max(0.0, score + self.noise * math.sqrt(12) * (u - 0.5)))
        if self.nan_at == k:
            score = float("nan")  # TaskResult refuses it: the trial fails with that reason
        half = 1.96 * math.sqrt(max(score * (1 - score), 1e-6) / self.n) if math.isfinite(score) else 0.0
        return TaskResult(metric=self.metric, score=score, ci_low=max(0.0, score - half) if half else score,
                          ci_high=min(1.0, score + half) if half else score, n=self.n)


@register_model_source("synthetic")
class SyntheticSource:
    """Options: ``layer_kinds`` (default NemotronH-8B's 52-layer pattern), ``visual`` (8192),
    ``prefix`` (64), ``query`` (32), and the evaluator's test hooks. Tasks: ``accuracy``
    (default) and ``fidelity``."""

    name = "synthetic"
    options = {
        "layer_kinds": "layer-kind letters, one per layer (default: NemotronH-8B's pattern)",
        "visual": "visual tokens (8192)", "prefix": "prefix tokens (64)", "query": "query tokens (32)",
        "n": "evaluation samples (500)", "delay_s": "seconds slept per evaluation",
        "fail_at": "the n-th evaluation raises", "nan_at": "the n-th evaluation returns NaN",
        "hang_at": "the n-th evaluation hangs", "hang_marker": "file touched when hanging",
        "noise": "standard deviation of a per-schedule offset of the score (0)",
        "validation_n": "samples of a validation set with its own noise (0: no validation)",
    }
    _TASKS = {None: "accuracy", "accuracy": "accuracy", "fidelity": "fidelity"}

    def check(self, request: SourceRequest) -> None:
        if request.task not in self._TASKS:
            raise ConfigError(f"the synthetic model has tasks 'accuracy' and 'fidelity', not {request.task!r}")

    def build(self, request: SourceRequest) -> StudyInputs:
        opts = dict(request.options)
        kinds = opts.pop("layer_kinds", NEMOTRON_H_8B.layer_kinds)
        layout = TokenLayout(prefix=opts.pop("prefix", 64), visual=opts.pop("visual", 8192),
                             query=opts.pop("query", 32))
        metric = self._TASKS[request.task]
        sig = _signature(kinds)
        latency = SyntheticLatency(sig, layout, request.gpu, measured=request.measure)
        predictor = SyntheticLatency(sig, layout, request.gpu, measured=False) if request.measure else latency
        val_n = int(opts.pop("validation_n", 0) or 0)
        evaluator = SyntheticEvaluator(sig, layout.visual, metric=metric, **opts)
        validation = None
        if val_n > 0:
            noise = float(opts.get("noise", 0.0)) * math.sqrt(evaluator.n / val_n)

            def validation():
                return SyntheticEvaluator(sig, layout.visual, metric=metric, n=val_n, noise=noise, salt=1)
        return StudyInputs(evaluator=evaluator, latency=latency, predictor=predictor, model="synthetic", task=metric,
                           layout=layout, latency_info={"model": "synthetic latency (no real model)",
                                                        "layout": {"prefix": layout.prefix, "visual": layout.visual,
                                                                   "query": layout.query},
                                                        "source": latency.source, "gpu": latency.gpu},
                           validation=validation,
                           evaluation_info={"search": {"data": "synthetic scores (no real model)", "n": evaluator.n},
                                            "validation": {"data": "synthetic scores, another salt", "n": val_n}
                                            if val_n > 0 else None})
