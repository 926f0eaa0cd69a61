"""The typed seams between subsystems: results, latency estimates, and what a model source gives
the search.

The search talks to an :class:`Evaluator` (the quality of a schedule) and a
:class:`LatencySource` (its predicted or measured latency) only through these Protocols; a
:class:`ModelSource` turns a :class:`SourceRequest` into the :class:`StudyInputs` of a study.
Tests pass fakes that satisfy the same Protocols.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import AutopruneError, ConfigError
from .schedule import ModelSignature, Schedule

if TYPE_CHECKING:  # annotations only: the cost model is not needed to describe these types
    from .cost.gpus import GpuSpec
    from .cost.shapes import ModelShape, TokenLayout

__all__ = ["LATENCY_SOURCES", "TaskResult", "LatencyEstimate", "Evaluator", "RacingEvaluator", "PairedEvaluator", "LatencySource",
           "StudyInputs",
           "SourceRequest", "ModelSource"]

LATENCY_SOURCES = ("measured", "table", "few-shot", "roofline", "roofline-uncalibrated", "cpu-measured")


@dataclass(frozen=True)
class TaskResult:
    """Quality of one schedule on one evaluation set (higher ``score`` is better, in [0, 1]).

    ``metric`` is ``accuracy`` (labelled multiple choice) or ``fidelity`` (top-1 agreement
    with the unreduced model); ``ci_low``/``ci_high`` a bootstrap 95% interval; ``per_family``
    the score per question family, ``per_length`` per visual-token count of the samples.
    """

    metric: str
    score: float
    ci_low: float
    ci_high: float
    n: int
    per_family: Mapping[str, float] = field(default_factory=dict)
    per_length: Mapping[str, float] = field(default_factory=dict)
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
    clock — a fallback), a measured per-layer table (``table``), another GPU's table carried
    to this one by a few layer timings measured here (``few-shot``), or a roofline model
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
    # The prediction's interval at ``interval_level`` (from its source's validation residuals,
    # :mod:`autoprune.cost.uncertainty`); None where the source gives none.
    low_ms: float | None = None
    high_ms: float | None = None
    interval_level: float | None = None
    # A measurement repeated on a loaded machine: how far its repeats' medians lie apart
    # ((max - min) / median, :func:`autoprune.profiler.timing.time_fn`); None when not repeated.
    repeat_spread: float | None = None

    def __post_init__(self):
        if self.source not in LATENCY_SOURCES:
            raise AutopruneError(f"LatencyEstimate.source must be one of {LATENCY_SOURCES}, got {self.source!r}")
        for name in ("latency_ms", "baseline_ms"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise AutopruneError(f"LatencyEstimate.{name} must be a positive finite number, got {v!r}")
        if (self.low_ms is None) != (self.high_ms is None):
            raise AutopruneError("LatencyEstimate: give both low_ms and high_ms, or neither")
        if self.low_ms is not None and not (0 < self.low_ms <= self.latency_ms <= self.high_ms < math.inf):
            raise AutopruneError(f"LatencyEstimate: need 0 < low_ms <= latency_ms <= high_ms, got {self.low_ms!r}, "
                                 f"{self.latency_ms!r}, {self.high_ms!r}")

    @property
    def measured(self) -> bool:
        """Timed here (CUDA events or the CPU's wall clock), not predicted."""
        return self.source in ("measured", "cpu-measured")

    @property
    def speedup(self) -> float:
        return self.baseline_ms / self.latency_ms

    def to_dict(self) -> dict:
        d = {"latency_ms": self.latency_ms, "baseline_ms": self.baseline_ms, "source": self.source,
             "gpu": self.gpu, "energy_j": self.energy_j, "baseline_energy_j": self.baseline_energy_j,
             "spread": self.spread, "flags": list(self.flags)}
        if self.low_ms is not None:  # absent rather than null: records of sources without one stay as they were
            d.update(low_ms=self.low_ms, high_ms=self.high_ms, interval_level=self.interval_level)
        if self.repeat_spread is not None:
            d["repeat_spread"] = self.repeat_spread
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyEstimate:
        return cls(**{**d, "flags": tuple(d.get("flags") or ())})


@runtime_checkable
class Evaluator(Protocol):
    """The quality of a schedule on one evaluation set (``evaluate`` is called once per trial)."""

    signature: ModelSignature
    num_visual: int
    metric: str

    def evaluate(self, schedule: Schedule) -> TaskResult: ...


@runtime_checkable
class RacingEvaluator(Evaluator, Protocol):
    """An evaluator that can stop early: ``race(schedule, keep_going)`` evaluates batch by batch and
    returns a :class:`TaskResult` when it finished, anything else when ``keep_going(index, scores)``
    stopped it; ``sample_scores(schedule)`` gives the per-sample scores ``(N,)`` of a finished one."""

    def race(self, schedule: Schedule, keep_going: Callable[[Any, Any], bool]) -> Any: ...

    def sample_scores(self, schedule: Schedule) -> Any: ...


@runtime_checkable
class PairedEvaluator(Evaluator, Protocol):
    """An evaluator that compares two schedules on the same samples: ``paired_delta(a, b)`` is the
    mean score of ``a`` minus ``b`` with its paired 95 % interval ``(delta, low, high)``."""

    def paired_delta(self, a: Schedule, b: Schedule) -> tuple[float, float, float]: ...


@runtime_checkable
class LatencySource(Protocol):
    """The prefill latency of a schedule on one GPU (``gpu`` is its registry id)."""

    gpu: str

    def estimate(self, schedule: Schedule) -> LatencyEstimate: ...


@dataclass(frozen=True)
class StudyInputs:
    """What a study evaluates, built once per process by a :class:`ModelSource`.

    - ``evaluator``: the score of a schedule; it loads its model and data once and reuses them.
    - ``latency``: the objective's latency (predicted, or measured when the study measures); it
      computes the unreduced latency once and returns it as ``baseline_ms`` with every estimate.
    - ``predictor``: a cheap source that projects candidates onto the budget (default:
      ``latency``); when ``latency`` measures, the latency *model* of the same GPU, so that
      projecting a candidate does not time a dozen schedules.
    - ``model``, ``task``: the source's name and the task evaluated (for the settings);
    - ``shape``, ``layout``: the :class:`~autoprune.cost.shapes.ModelShape` and
      :class:`~autoprune.cost.shapes.TokenLayout` whose latency is predicted or measured, where
      that is a model shape (None for sources without one);
    - ``latency_info``: what the latency is *of*, as plain data for provenance (shape, token
      layout, source, calibration, proxy notes);
    - ``evaluated_visual``: the visual-token counts of the evaluated samples (default: the
      evaluator's ``num_visual``), for the study's token accounting
      (:class:`~autoprune.accounting.TokenAccounting`);
    - ``validation``: builds the evaluator of a disjoint validation set (called once, after the
      search, to validate the candidates before export), or None;
    - ``evaluation_info``: what is evaluated, as plain data for provenance (``search`` and
      ``validation``: data set, split, sample count, lengths, seeds or files).
    """

    evaluator: Evaluator
    latency: LatencySource
    predictor: LatencySource | None = None
    model: str = ""
    task: str = ""
    shape: ModelShape | None = None
    layout: TokenLayout | None = None
    latency_info: Mapping[str, Any] = field(default_factory=dict)
    evaluated_visual: tuple[int, ...] = ()
    validation: Callable[[], Evaluator] | None = None
    evaluation_info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.validation is not None and not callable(self.validation):
            raise ConfigError("StudyInputs.validation must be a function returning an Evaluator, or None")
        if self.predictor is None:
            object.__setattr__(self, "predictor", self.latency)
        if not isinstance(self.evaluator, Evaluator):
            raise ConfigError(f"{type(self.evaluator).__name__} is not an Evaluator (needs signature, num_visual, "
                              "metric and evaluate(schedule))")
        for name in ("latency", "predictor"):
            obj = getattr(self, name)
            if not isinstance(obj, LatencySource):
                raise ConfigError(f"StudyInputs.{name}: {type(obj).__name__} is not a LatencySource (needs gpu and "
                                  "estimate(schedule))")
        object.__setattr__(self, "latency_info", MappingProxyType(dict(self.latency_info)))
        object.__setattr__(self, "evaluation_info", MappingProxyType(dict(self.evaluation_info)))
        if not self.evaluated_visual:
            object.__setattr__(self, "evaluated_visual", (self.evaluator.num_visual,))
        object.__setattr__(self, "evaluated_visual", tuple(sorted(set(int(v) for v in self.evaluated_visual))))

    @property
    def signature(self) -> ModelSignature:
        return self.evaluator.signature


@dataclass(frozen=True)
class SourceRequest:
    """What the search asks a model source for: the resolved GPU, the task, whether latency is
    measured on the present device, and the source's options (validated against its
    ``options`` before anything loads)."""

    gpu: GpuSpec
    task: str | None = None
    measure: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.measure, bool):
            raise ConfigError(f"measure must be true or false, got {self.measure!r}")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))


@runtime_checkable
class ModelSource(Protocol):
    """Turns a :class:`SourceRequest` into :class:`StudyInputs` (see :mod:`autoprune.models`).

    ``options`` names every option the source takes (name → one-line help); ``check`` validates a
    request cheaply (no model is loaded) and raises :class:`~autoprune.errors.ConfigError`;
    ``build`` loads what the study needs. Both run in every worker process.
    """

    name: str
    options: Mapping[str, str]

    def check(self, request: SourceRequest) -> None: ...

    def build(self, request: SourceRequest) -> StudyInputs: ...
