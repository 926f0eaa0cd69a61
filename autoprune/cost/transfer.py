"""Cost forms fitted per GPU, their transfer across GPUs, and few-shot calibration.

Three ways to a layer's cost on a target GPU, each named as the prediction's source:

``table``
    a table measured on the target (:mod:`autoprune.cost.profile_table`); its forms
    (:func:`fit_forms`) split each call into its host floor and its GPU part.
``few-shot``
    a full table measured on *another* GPU plus ≤ 12 layer timings (and ≤ 3 whole prefills)
    measured on the target (``autoprune profile --quick``, :func:`fit_few_shot`): the source
    table's GPU part times the ratio of the two GPUs' forms, the target's form calibrated
    on the quick points; host floors from the quick points.
``roofline``
    the source's forms carried to the target by its spec sheet alone (:func:`spec_transfer`:
    the throughput term through the target's peaks, the GPU floor through the clock ratio).

A :class:`FormSet` states one GPU's parameters (what ``autoprune profile`` prints and the
benchmarks export).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError
from .gpus import GpuSpec
from .kinds import KindCost, fit_kind_cost, kind_spec, softmax_ms
from .profile_table import KIND_NAMES, ProfileTable, Series
from .shapes import ModelShape

PLATEAU = 1.5  # a call at least this multiple of its host floor is GPU-bound

__all__ = [
    "FormSet",
    "FewShot",
    "QuickPoint",
    "QuickPrefill",
    "QUICK_TOKENS",
    "clock_ratio",
    "fit_few_shot",
    "fit_forms",
    "lower_envelope",
    "prior_forms",
    "quick_plan",
    "spec_transfer",
]

FORM_HOWS = ("table-fit", "spec-transfer", "few-shot", "prior")
# The token counts ``profile --quick`` times per layer kind: one on the host floor, three
# GPU-bound ones spread over the range prefills visit (3 kinds × 4 = 12 timings).
QUICK_TOKENS = (512, 4096, 16384, 65536)


def lower_envelope(series: Series) -> list[float]:
    """``min_{m ≥ n} ms(m)`` at every point: the series without its spikes. A call over more
    tokens cannot be faster than one over fewer, so a point above a later one measured noise
    (another process, a clock dip) — the small overhead kernels' series are full of those."""
    out, low = [], math.inf
    for v in reversed(series.ms):
        low = min(low, v)
        out.append(low)
    return out[::-1]


def clock_ratio(source: GpuSpec, target: GpuSpec) -> float:
    """Target clock over source clock as the spec sheets give it: the dense peak per SM
    (equal per-clock throughput per SM within one architecture); 1 across architectures,
    where the per-SM rate per clock differs and the ratio would not be a clock."""
    if source.architecture != target.architecture:
        return 1.0
    return (target.bf16_tflops / target.sm_count) / (source.bf16_tflops / source.sm_count)


@dataclass(frozen=True)
class FormSet:
    """The per-kind cost forms of one shape on one GPU (``kinds``: letter → :class:`KindCost`).

    ``how``: ``table-fit`` (fitted on a table of ``gpu``), ``spec-transfer`` (carried from
    ``source_gpu`` by spec ratios), ``few-shot`` (calibrated on quick points of ``gpu``) or
    ``prior`` (the registered kinds' priors: nothing measured);
    ``fit_error[letter]`` the median relative error on the points it was fitted to.
    """

    gpu: str
    shape: str
    kinds: Mapping[str, KindCost]
    how: str = "table-fit"
    source_gpu: str | None = None
    fit_error: Mapping[str, float] = field(default_factory=dict)
    peak_tflops: float = 0.0
    bandwidth_gbs: float = 0.0

    def __post_init__(self):
        if self.how not in FORM_HOWS:
            raise ConfigError(f"FormSet.how must be one of {FORM_HOWS}, got {self.how!r}")
        for k, v in self.kinds.items():
            kind_spec(k)
            if not isinstance(v, KindCost):
                raise ConfigError(f"FormSet.kinds[{k!r}] must be a KindCost")
        if not (self.peak_tflops > 0 and self.bandwidth_gbs > 0):
            raise ConfigError(f"FormSet of {self.gpu!r} needs the GPU's peak and bandwidth (> 0)")
        object.__setattr__(self, "kinds", dict(self.kinds))
        object.__setattr__(self, "fit_error", {k: float(v) for k, v in self.fit_error.items()})

    def gpu_ms(self, shape: ModelShape, letter: str, tokens: float) -> float:
        ks = kind_spec(letter)
        return self.kinds[letter].gpu_ms(ks.flops(shape, tokens), ks.nbytes(shape, tokens), self.peak_tflops,
                                         self.bandwidth_gbs)

    def call_ms(self, shape: ModelShape, letter: str, tokens: float) -> float:
        c = self.kinds[letter]
        return softmax_ms(c.host_ms, self.gpu_ms(shape, letter, tokens), c.beta)

    def to_dict(self) -> dict:
        return {"gpu": self.gpu, "shape": self.shape, "how": self.how, "source_gpu": self.source_gpu,
                "peak_tflops": self.peak_tflops, "bandwidth_gbs": self.bandwidth_gbs,
                "kinds": {KIND_NAMES.get(k, k): {"letter": k, **v.to_dict()} for k, v in sorted(self.kinds.items())},
                "fit_error": {KIND_NAMES.get(k, k): v for k, v in sorted(self.fit_error.items())}}


def prior_forms(shape: ModelShape, spec: GpuSpec) -> FormSet:
    """The registered kinds' prior forms on ``spec`` (no table of the shape measured anywhere)."""
    if spec.is_cpu:
        raise ConfigError("prior cost forms describe GPUs; the CPU has measured tables only")
    kinds = {k: kind_spec(k).prior for k in sorted(set(shape.layer_kinds))}
    return FormSet(gpu=spec.id, shape=shape.name, kinds=kinds, how="prior", peak_tflops=spec.peak_tflops(shape.dtype),
                   bandwidth_gbs=spec.memory_bandwidth_gbs)


def fit_forms(table: ProfileTable, spec: GpuSpec) -> FormSet:
    """Fit every layer kind's form to ``table`` (measured on ``spec``)."""
    if spec.is_cpu or table.is_cpu:
        raise ConfigError(f"{table.origin}: cost forms describe GPU tables; this one is a CPU table")
    peak, bw = spec.peak_tflops(table.shape.dtype), spec.memory_bandwidth_gbs
    kinds, errs = {}, {}
    for letter in sorted(set(table.shape.layer_kinds)):
        if KIND_NAMES[letter] not in table.layers:
            continue
        s, ks = table.layer(letter), kind_spec(letter)
        kinds[letter], errs[letter] = fit_kind_cost(
            s.tokens, s.ms, [ks.flops(table.shape, n) for n in s.tokens], [ks.nbytes(table.shape, n) for n in s.tokens],
            peak, bw, prior=ks.prior)
    return FormSet(gpu=spec.id, shape=table.shape.name, kinds=kinds, how="table-fit", fit_error=errs,
                   peak_tflops=peak, bandwidth_gbs=bw)


def spec_transfer(forms: FormSet, source: GpuSpec, target: GpuSpec, dtype: str = "bfloat16") -> FormSet:
    """``forms`` (fitted on ``source``) carried to ``target`` by its spec sheet alone."""
    r = clock_ratio(source, target)
    return FormSet(gpu=target.id, shape=forms.shape, kinds={k: c.transfer(clock_ratio=r) for k, c in forms.kinds.items()},
                   how="spec-transfer", source_gpu=source.id, fit_error=forms.fit_error,
                   peak_tflops=target.peak_tflops(dtype), bandwidth_gbs=target.memory_bandwidth_gbs)


# ------------------------------------------------------------------ few-shot
@dataclass(frozen=True)
class QuickPoint:
    """One layer call timed alone on the target: ``kind`` (letter) at ``tokens`` tokens, ``ms``."""

    kind: str
    tokens: int
    ms: float

    def __post_init__(self):
        kind_spec(self.kind)
        if isinstance(self.tokens, bool) or not isinstance(self.tokens, int) or self.tokens < 1:
            raise ConfigError(f"QuickPoint.tokens must be an integer >= 1, got {self.tokens!r}")
        if not (isinstance(self.ms, (int, float)) and math.isfinite(self.ms) and self.ms > 0):
            raise ConfigError(f"QuickPoint.ms must be a finite number > 0, got {self.ms!r}")


@dataclass(frozen=True)
class QuickPrefill:
    """One whole prefill measured on the target: the schedule's keep vector, the visual-token
    count, and the measured ms (``keep`` all ones: the unreduced model)."""

    keep: tuple[float, ...]
    visual: int
    ms: float

    def __post_init__(self):
        object.__setattr__(self, "keep", tuple(float(k) for k in self.keep))
        if not self.keep or isinstance(self.visual, bool) or not isinstance(self.visual, int) or self.visual < 1:
            raise ConfigError("QuickPrefill needs a keep vector and visual >= 1")
        if not (isinstance(self.ms, (int, float)) and math.isfinite(self.ms) and self.ms > 0):
            raise ConfigError(f"QuickPrefill.ms must be a finite number > 0, got {self.ms!r}")


def quick_plan(shape: ModelShape, tokens: Sequence[int] = QUICK_TOKENS, max_points: int = 12) -> list[tuple[str, int]]:
    """The ``(kind, tokens)`` pairs ``profile --quick`` times: every kind of ``shape`` at
    ``tokens``, at most ``max_points`` in all (fewer token counts per kind when there are
    many kinds: the smallest and the largest are kept first)."""
    kinds = list(dict.fromkeys(shape.layer_kinds))
    per = max(2, max_points // max(1, len(kinds)))
    toks = sorted(set(int(t) for t in tokens))
    if len(toks) > per:  # evenly spread over the list, both ends kept
        toks = sorted({toks[round(i * (len(toks) - 1) / (per - 1))] for i in range(per)})
    plan = [(k, n) for k in kinds for n in toks]
    return plan[:max_points]


@dataclass(frozen=True)
class FewShot:
    """A source table carried to the target by its quick points (see :func:`fit_few_shot`).

    ``gpu_scale[letter]``: the target's measured GPU-bound times over the spec-transferred
    form's, fitted per kind; ``host_ms[letter]``: the target's host floor per kind (its
    quick point on the floor, else the source's); ``host_ratio``: the median ratio, applied
    to the overheads' floors; ``prefill_scale`` and ``prune_point_ms``: the whole-prefill
    correction, a scale and the host time of a prune point, fitted on the quick prefills
    (:func:`autoprune.cost.latency.calibrate_prefills`).
    """

    source: ProfileTable
    source_forms: FormSet
    target_forms: FormSet
    gpu_scale: Mapping[str, float]
    host_ratio: float
    bandwidth_ratio: float
    points: tuple[QuickPoint, ...] = ()
    prefill_scale: float = 1.0
    prefills: tuple[QuickPrefill, ...] = ()
    prefill_predicted_ms: tuple[float, ...] = ()  # the unscaled prediction of each prefill
    prune_point_ms: float = 0.0
    prefill_prune_points: tuple[int, ...] = ()  # prune points of each quick prefill
    prefill_corrected_ms: tuple[float, ...] = ()  # each quick prefill's prediction after the correction

    def __post_init__(self):
        if not (isinstance(self.prefill_scale, (int, float)) and 0 < self.prefill_scale < math.inf):
            raise ConfigError(f"FewShot.prefill_scale must be > 0, got {self.prefill_scale!r}")
        if not (isinstance(self.prune_point_ms, (int, float)) and 0 <= self.prune_point_ms < math.inf):
            raise ConfigError(f"FewShot.prune_point_ms must be >= 0, got {self.prune_point_ms!r}")
        if self.prefills and len(self.prefill_predicted_ms) != len(self.prefills):
            raise ConfigError("FewShot: one unscaled prediction per quick prefill")
        if self.prefill_prune_points and len(self.prefill_prune_points) != len(self.prefills):
            raise ConfigError("FewShot: one prune-point count per quick prefill")
        object.__setattr__(self, "gpu_scale", dict(self.gpu_scale))
        object.__setattr__(self, "points", tuple(self.points))
        object.__setattr__(self, "prefills", tuple(self.prefills))

    @property
    def gpu(self) -> str:
        return self.target_forms.gpu

    def prefill_residuals(self) -> list[float]:
        """``log(measured / corrected prediction)`` of the quick prefills."""
        corrected = self.prefill_corrected_ms or tuple(self.prefill_scale * q for q in self.prefill_predicted_ms)
        return [math.log(p.ms / c) for p, c in zip(self.prefills, corrected)]

    def ratio(self, letter: str, tokens: float) -> float:
        """Target GPU time over source GPU time of one ``letter`` layer at ``tokens``."""
        shape = self.source.shape
        return self.target_forms.gpu_ms(shape, letter, tokens) / self.source_forms.gpu_ms(shape, letter, tokens)

    def table(self) -> ProfileTable:
        """The source table as the target would have measured it: per point, the soft maximum of
        the target's host floor and the source's GPU part times :meth:`ratio` (layers); the
        overheads' host floors times ``host_ratio``, their GPU part times the bandwidth ratio."""
        from .roofline import gpu_part, host_floor

        src = self.source
        layers = {}
        for name, s in src.layers.items():
            letter = next(k for k, v in KIND_NAMES.items() if v == name)
            c = self.target_forms.kinds[letter]
            ms = [softmax_ms(c.host_ms, gpu_part(s, n)[0] * self.ratio(letter, n), c.beta) for n in s.tokens]
            layers[name] = Series(tokens=s.tokens, ms=tuple(ms), where=f"few-shot {name}")

        def overhead(s: Series | None) -> Series | None:
            if s is None:
                return None
            env = lower_envelope(s)
            h = min(env) * self.host_ratio
            ms = [h + (v - min(env)) / self.bandwidth_ratio for v in env]
            return Series(tokens=s.tokens, ms=tuple(ms), where="few-shot overhead")

        return dataclasses.replace(
            src, gpu=self.gpu, layers=layers, scoring={k: overhead(v) for k, v in src.scoring.items()},
            gather=overhead(src.gather), head=overhead(src.head), device_name=None,
            environment={"few_shot": self.describe()}, origin=f"few-shot({src.origin} -> {self.gpu})")

    def describe(self) -> dict:
        return {"source_gpu": self.source.gpu, "target_gpu": self.gpu, "source_table": self.source.origin,
                "gpu_scale": {KIND_NAMES[k]: v for k, v in sorted(self.gpu_scale.items())},
                "host_ratio": self.host_ratio, "bandwidth_ratio": self.bandwidth_ratio,
                "prefill_scale": self.prefill_scale, "prune_point_ms": self.prune_point_ms,
                "target_forms": self.target_forms.to_dict(),
                "points": [dataclasses.asdict(p) for p in self.points],
                "prefills": [{"visual": p.visual, "mean_keep": sum(p.keep) / len(p.keep), "ms": p.ms,
                              "predicted_ms": q, "prune_points": n}
                             for p, q, n in zip(self.prefills, self.prefill_predicted_ms,
                                                self.prefill_prune_points or (None,) * len(self.prefills))]}


def fit_few_shot(source: ProfileTable, source_spec: GpuSpec, target_spec: GpuSpec, points: Sequence[QuickPoint], *,
                 source_forms: FormSet | None = None) -> FewShot:
    """Calibrate the transfer of ``source`` (measured on ``source_spec``) to ``target_spec``
    from ``points`` measured there (at most 12: more is a full profile).

    Per kind: the points at least 1.5× the smallest one are GPU-bound and fix ``gpu_scale``
    (geometric mean of measured over spec-transferred GPU time); the smallest point gives the
    host floor (the soft maximum inverted with the scaled GPU time there). A kind with no
    point keeps the spec transfer (scale 1, the source's host floor).
    """
    points = tuple(points)
    if len(points) > 12:
        raise ConfigError(f"few-shot calibration takes at most 12 layer timings, got {len(points)}")
    if target_spec.is_cpu:
        raise ConfigError("few-shot calibration needs a GPU target")
    src_forms = source_forms or fit_forms(source, source_spec)
    moved = spec_transfer(src_forms, source_spec, target_spec, source.shape.dtype)
    shape = source.shape
    kinds, scales, ratios = {}, {}, []
    for letter, c in moved.kinds.items():
        pts = sorted((p for p in points if p.kind == letter), key=lambda p: p.tokens)
        # GPU-bound points (1.5x the smallest point or more) fix the scale of the GPU part; the
        # smallest point then gives the host floor: the soft maximum inverted, H^β = m^β − g^β,
        # since a point on the floor still carries some GPU time in the transition.
        gpu_pts = [p for p in pts if pts and p.ms >= PLATEAU * pts[0].ms]
        scale = 1.0
        if gpu_pts:
            scale = math.exp(sum(math.log(p.ms / moved.gpu_ms(shape, letter, p.tokens)) for p in gpu_pts)
                             / len(gpu_pts))
        host = c.host_ms
        if pts and pts[0] not in gpu_pts:
            m, g = pts[0].ms, scale * moved.gpu_ms(shape, letter, pts[0].tokens)
            if g < m:
                host = (m ** c.beta - g ** c.beta) ** (1 / c.beta)
                ratios.append(host / src_forms.kinds[letter].host_ms)
        scales[letter] = scale
        kinds[letter] = KindCost(host_ms=host, gpu_floor_ms=c.gpu_floor_ms * scale,
                                 compute=c.compute / scale if c.compute != math.inf else math.inf,
                                 memory=c.memory / scale if c.memory != math.inf else math.inf, beta=c.beta)
    target = dataclasses.replace(moved, kinds=kinds, how="few-shot", fit_error={})
    ratios.sort()
    host_ratio = ratios[len(ratios) // 2] if ratios else 1.0
    return FewShot(source=source, source_forms=src_forms, target_forms=target, gpu_scale=scales,
                   host_ratio=host_ratio, bandwidth_ratio=target_spec.memory_bandwidth_gbs / source_spec.memory_bandwidth_gbs,
                   points=points)
