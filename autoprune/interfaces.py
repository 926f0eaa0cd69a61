"""Small result types and protocols shared across subsystems.

The search talks to an :class:`Evaluator` (accuracy or fidelity of a schedule) and a
:class:`LatencySource` (predicted or measured latency of a schedule) only through
these; tests pass fakes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from .errors import AutopruneError
from .schedule import ModelSignature, Schedule

LATENCY_SOURCES = ("measured", "table", "roofline", "roofline-uncalibrated", "cpu-measured")


@dataclass(frozen=True)
class TaskResult:
    """Quality of one schedule on one evaluation set (higher ``score`` is better, in [0, 1]).

    ``metric`` is ``accuracy`` (labelled multiple choice) or ``fidelity`` (top-1 agreement
    with the unreduced model); ``ci_low``/``ci_high`` a bootstrap 95% interval.
    """

    metric: str
    score: float
    ci_low: float
    ci_high: float
    n: int
    per_family: Mapping[str, float] = field(default_factory=dict)
    extra: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("score", "ci_low", "ci_high"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise AutopruneError(f"TaskResult.{name} must be a finite number, got {v!r}")


@dataclass(frozen=True)
class LatencyEstimate:
    """Prefill latency of a schedule and of the unreduced model, same inputs, same GPU.

    ``source`` says where the number comes from (one of :data:`LATENCY_SOURCES`): a
    measurement on the present GPU (``measured``, CUDA events; ``cpu-measured``, wall
    clock — a fallback), a measured per-layer table (``table``), or a roofline model
    (``roofline``: calibrated on a measured GPU; ``roofline-uncalibrated``: documented
    default efficiencies).
    """

    latency_ms: float
    baseline_ms: float
    source: str
    gpu: str
    energy_j: float | None = None
    baseline_energy_j: float | None = None
    spread: float | None = None
    flags: tuple[str, ...] = ()

    def __post_init__(self):
        if self.source not in LATENCY_SOURCES:
            raise AutopruneError(f"LatencyEstimate.source must be one of {LATENCY_SOURCES}, got {self.source!r}")
        for name in ("latency_ms", "baseline_ms"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise AutopruneError(f"LatencyEstimate.{name} must be a positive finite number, got {v!r}")

    @property
    def speedup(self) -> float:
        return self.baseline_ms / self.latency_ms


@runtime_checkable
class Evaluator(Protocol):
    signature: ModelSignature
    num_visual: int
    metric: str

    def evaluate(self, schedule: Schedule) -> TaskResult: ...


@runtime_checkable
class LatencySource(Protocol):
    gpu: str

    def estimate(self, schedule: Schedule) -> LatencyEstimate: ...
