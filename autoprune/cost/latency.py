"""Latency model: prefill time of a reduction schedule on a target GPU, with its source.

For a model shape, a token layout ``[prefix][visual V][query]`` and a schedule::

    per layer i (k_i visual tokens enter it; evidence and gather where the plan has them):
        G_i = t_kind(i)(text + k_i) + s_kind(i)(text + k_i) + g(text + k_{i-1})   GPU time
        H_i = host time to queue that work (Python, kernel launches)
    latency = max_k ( Σ_{i≤k} H_i + Σ_{i≥k} G_i ) + head
    baseline = the same with nothing removed

The host queues layer after layer while the GPU executes: a two-stage pipeline, whose
time is the longest path through it. On an 8B model the expensive early layers let the
host run far ahead, so the sum of GPU times decides — but a per-layer table measured by
timing one layer alone records ``max(GPU, host)``, and at small token counts a layer's
host time (≈1.3 ms for a transformers Mamba2 layer on an H100) exceeds its GPU time.
Each measured series is therefore split: its host floor ``H`` (the plateau at small
token counts) and its GPU part (the measurement above the plateau; below it, scaled
linearly from the first point that is clearly GPU-bound, at ``PLATEAU`` × the floor).
Measured on an H100 (NemotronH-8B shape, 60 random schedules at 16k and 64k visual
tokens) this composition predicts within 0.6–1.8% (median) and 0.9–3.3% (p90), where
the plain sum of per-layer times was off by up to 18% at low keep. CPU tables are
summed (on a CPU, host and compute are the same thread).

(``k_i`` from :meth:`Schedule.tokens_per_layer`, evidence and prune layers from
:func:`autoprune.plan.plan_reduction`.) Each term comes from one of three sources,
named in the returned :class:`~autoprune.interfaces.LatencyEstimate`:

``table``
    a table measured on this GPU for this shape (:mod:`autoprune.cost.profile_table`),
    interpolated log-log between grid points.
``roofline``
    ``t(n) = o + max(F(n) / (P·e_c), B(n) / (W·e_m))`` with the target's spec peaks
    ``P`` (dense bf16/fp16 TFLOP/s) and ``W`` (GB/s), FLOPs ``F`` from
    :func:`autoprune.cost.shapes.layer_flops`, bytes ``B`` from :func:`layer_bytes`, and
    per-kind factors ``(e_c, e_m, o)`` fitted on a table measured on *another* GPU
    (:func:`calibrate`). Scoring, gather and head times are that GPU's measurements
    scaled by the bandwidth ratio (they are small, memory-bound kernels).
``roofline-uncalibrated``
    the same formula with :data:`DEFAULT_EFFICIENCY` (documented guesses) when no
    measured table of this shape exists anywhere.

The CPU pseudo-GPU has measured tables only (``autoprune profile`` on the CPU).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelMismatchError
from .gpus import CPU, GpuSpec, Registry, load_registry, resolve
from ..interfaces import LatencyEstimate
from .profile_table import KIND_NAMES, ProfileTable, Series, find_table, list_tables
from ..schedule import Schedule
from .shapes import ModelShape, TokenLayout, layer_flops

__all__ = [
    "KindEfficiency",
    "Calibration",
    "DEFAULT_EFFICIENCY",
    "LatencyBreakdown",
    "LatencyModel",
    "MeasuredLatency",
    "calibrate",
    "layer_bytes",
    "overhead_bytes",
    "roofline_ms",
]


# ------------------------------------------------------------------ roofline
def layer_bytes(shape: ModelShape, kind: str, tokens: int) -> float:
    """Fewest bytes one layer of ``kind`` must move through device memory for ``tokens`` tokens.

    Weights read once; every activation the layer's kernels hand to each other written
    once and read once; the block's pre-norm and residual (``5·n·h``). Re-reads inside a
    kernel (flash attention's K/V per query block, cache misses) are not counted: the
    fitted memory factor absorbs them.
    """
    n, h, b = tokens, shape.hidden_size, shape.dtype_bytes
    block = 5 * n * h * b
    if kind == "M":
        I, G, N, H, P = (shape.mamba_intermediate, shape.n_groups, shape.ssm_state_size, shape.mamba_num_heads,
                         shape.mamba_head_dim)
        proj = 2 * I + 2 * G * N + H
        conv = I + 2 * G * N
        weights = (h * proj + I * h + conv * shape.conv_kernel + 3 * H + I) * b
        chunks = math.ceil(n / max(1, shape.chunk_size))
        states = 2 * chunks * H * P * N * 4  # fp32 chunk states, written then read
        acts = 2 * n * proj * b + 2 * n * conv * b + 2 * n * I * b + 3 * n * I * b + n * h * b
        return float(weights + states + acts + block)
    if kind == "*":
        Hq, Hk, d = shape.num_attention_heads, shape.num_kv_heads, shape.head_dim
        weights = (h * (Hq + 2 * Hk) * d + Hq * d * h) * b
        acts = 2 * n * (Hq + 2 * Hk) * d * b + 2 * n * Hq * d * b + n * h * b
        return float(weights + acts + block)
    if kind == "-":
        Im = shape.mlp_intermediate_size
        return float(2 * h * Im * b + 4 * n * Im * b + n * h * b + block)
    if kind == "E":
        active = shape.moe_top_k * shape.moe_intermediate_size + shape.moe_shared_intermediate_size
        return float(2 * h * active * b + 4 * n * active * b + n * h * b + block)
    raise ConfigError(f"unknown layer kind {kind!r}")


def overhead_bytes(shape: ModelShape, what: str, tokens: int, query: int = 64) -> float:
    """Rough bytes of the reduction's own work at ``tokens`` tokens (for the uncalibrated roofline).

    ``what``: ``attention``/``mamba``/``mamba_decay`` scoring (query rows over all keys,
    fp32 intermediates), ``gather`` (index sorts over the sequence and the hidden-state
    gather), ``head`` (final norm over all tokens, LM head on the last one).
    """
    n, h, b = tokens, shape.hidden_size, shape.dtype_bytes
    if what == "attention":
        H, Hk, d = shape.num_attention_heads, shape.num_kv_heads, shape.head_dim
        return float(n * Hk * d * b + 6 * query * n * H * 4)
    if what in ("mamba", "mamba_decay"):
        G, N, H = shape.n_groups, shape.ssm_state_size, shape.mamba_num_heads
        base = n * 2 * G * N * (b + 3 * 4) + 3 * n * H * 4 + 3 * G * query * n * 4
        return float(base * (2 if what == "mamba_decay" else 1))
    if what == "gather":
        return float(12 * n * 8 + 2 * n * h * b)
    if what == "head":
        return float(2 * n * h * b + h * shape.vocab_size * b)
    raise ConfigError(f"unknown overhead {what!r}")


COMBINES = ("max", "sum")


def roofline_ms(flops: float, nbytes: float, peak_tflops: float, bandwidth_gbs: float, eff: KindEfficiency,
                combine: str = "max") -> float:
    """``o + max(F / (P·e_c), B / (W·e_m))`` in ms (P in TFLOP/s, W in GB/s).

    ``combine="sum"`` adds the two terms instead: a layer is several kernels, some bound by
    arithmetic (GEMMs, scans), some by memory (norms, convs, activations), and their
    times add up; ``max`` is the classic roofline of one kernel. The benchmark compares both.
    """
    t_c = flops / (peak_tflops * 1e12 * eff.compute) if flops > 0 else 0.0
    t_m = nbytes / (bandwidth_gbs * 1e9 * eff.memory) if nbytes > 0 else 0.0
    if combine == "max":
        return eff.overhead_ms + 1e3 * max(t_c, t_m)
    if combine == "sum":
        return eff.overhead_ms + 1e3 * (t_c + t_m)
    raise ConfigError(f"combine must be one of {COMBINES}, got {combine!r}")


@dataclass(frozen=True)
class KindEfficiency:
    """Roofline factors of one layer kind: fraction of the compute peak and of the bandwidth
    reached, and a fixed per-call overhead (launches) in ms.

    Fitted factors also absorb errors of the FLOP and byte counts, so they may exceed 1
    a little (bounded by ``MAX_FACTOR``).
    """

    compute: float
    memory: float
    overhead_ms: float = 0.0

    MAX_FACTOR = 1.5

    def __post_init__(self):
        for name in ("compute", "memory"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not (
                0 < v <= self.MAX_FACTOR
            ):
                raise ConfigError(f"KindEfficiency.{name} must be in (0, {self.MAX_FACTOR}], got {v!r}")
        v = self.overhead_ms
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ConfigError(f"KindEfficiency.overhead_ms must be a finite number >= 0, got {v!r}")

    def to_dict(self) -> dict:
        return {"compute": self.compute, "memory": self.memory, "overhead_ms": self.overhead_ms}


# Used only when no table of the shape was measured anywhere ("roofline-uncalibrated").
# Guesses, not measurements: cuBLAS bf16 GEMMs at prefill sizes typically reach 60-75% of
# the dense spec peak (MLP: two large GEMMs); SDPA/flash attention 40-55%; a Mamba2 layer
# mixes GEMMs with a Triton SSD scan, a depthwise conv and a gated norm, so lower. The
# overhead is ~5 µs per kernel launch times the kernels of the layer.
DEFAULT_EFFICIENCY: Mapping[str, KindEfficiency] = {
    "M": KindEfficiency(compute=0.35, memory=0.6, overhead_ms=0.05),
    "*": KindEfficiency(compute=0.45, memory=0.6, overhead_ms=0.03),
    "-": KindEfficiency(compute=0.65, memory=0.7, overhead_ms=0.015),
    "E": KindEfficiency(compute=0.35, memory=0.5, overhead_ms=0.1),
}
DEFAULT_OVERHEAD_EFFICIENCY = KindEfficiency(compute=1.0, memory=0.5, overhead_ms=0.05)


@dataclass(frozen=True)
class Calibration:
    """Roofline factors fitted on a table measured on ``source_gpu`` (see :func:`calibrate`).

    ``fit_error[kind]`` is the median |pred − meas| / meas of the fit on the source GPU's
    own points: how well the roofline form describes that GPU (its floor for transfer).
    ``overheads`` keeps the source's scoring/gather/head series for bandwidth scaling.
    """

    source_gpu: str
    source_bandwidth_gbs: float
    shape: str
    kinds: Mapping[str, KindEfficiency]
    fit_error: Mapping[str, float] = field(default_factory=dict)
    overheads: Mapping[str, Series] = field(default_factory=dict)
    combine: str = "max"
    # Host floor of each layer kind on the source machine (see the module docstring);
    # the target is assumed to have a host of the same speed.
    host_ms: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if self.combine not in COMBINES:
            raise ConfigError(f"Calibration.combine must be one of {COMBINES}, got {self.combine!r}")
        bad = sorted(set(self.kinds) - set(KIND_NAMES))
        if bad:
            raise ConfigError(f"Calibration.kinds has unknown layer kind letter(s) {bad}")
        if not (isinstance(self.source_bandwidth_gbs, (int, float)) and self.source_bandwidth_gbs > 0):
            raise ConfigError(f"Calibration.source_bandwidth_gbs must be > 0, got {self.source_bandwidth_gbs!r}")
        object.__setattr__(self, "kinds", dict(self.kinds))
        object.__setattr__(self, "fit_error", dict(self.fit_error))
        object.__setattr__(self, "overheads", dict(self.overheads))
        object.__setattr__(self, "host_ms", dict(self.host_ms))

    def to_dict(self) -> dict:
        return {"source_gpu": self.source_gpu, "source_bandwidth_gbs": self.source_bandwidth_gbs,
                "shape": self.shape, "combine": self.combine, "kinds": {k: v.to_dict() for k, v in self.kinds.items()},
                "fit_error": dict(self.fit_error), "host_ms": dict(self.host_ms)}


def _fit_kind(flops, nbytes, times, peak_tflops, bw_gbs, prior: KindEfficiency, combine: str = "max"):
    """Least squares in log time over (e_c, e_m, o) on a coarse-to-fine grid (numpy).

    A small pull towards ``prior`` breaks ties where the data do not identify a factor
    (e.g. a kind that is memory-bound on every measured point leaves e_c free).
    """
    import numpy as np

    F = np.asarray(flops, dtype=np.float64) / (peak_tflops * 1e12) * 1e3  # ms at 100% of peak
    B = np.asarray(nbytes, dtype=np.float64) / (bw_gbs * 1e9) * 1e3
    T = np.asarray(times, dtype=np.float64)
    logT = np.log(T)
    lo_e, hi_e = 0.005, KindEfficiency.MAX_FACTOR
    ec = np.geomspace(lo_e, hi_e, 72)
    em = np.geomspace(lo_e, hi_e, 72)
    o = np.concatenate([[0.0], np.geomspace(1e-4, 0.95 * T.min(), 31)])
    lam = 1e-3
    join = np.maximum if combine == "max" else np.add

    def search(ec, em, o):
        pred = o[None, None, :, None] + join(F[None, None, None, :] / ec[:, None, None, None],
                                             B[None, None, None, :] / em[None, :, None, None])
        loss = ((np.log(pred) - logT) ** 2).sum(axis=-1)
        loss = loss + lam * ((np.log(ec / prior.compute)[:, None, None]) ** 2
                             + (np.log(em / prior.memory)[None, :, None]) ** 2)
        i, j, k = np.unravel_index(np.argmin(loss), loss.shape)
        return ec[i], em[j], o[k]

    c, m, oo = search(ec, em, o)
    # Refine around the coarse optimum (factor 1.15 either side, finer overhead grid).
    c, m, oo = search(np.clip(np.geomspace(c / 1.15, c * 1.15, 31), lo_e, hi_e),
                      np.clip(np.geomspace(m / 1.15, m * 1.15, 31), lo_e, hi_e),
                      np.unique(np.clip(np.linspace(oo * 0.5, oo * 1.5 + 1e-4, 31), 0, 0.95 * T.min())))
    eff = KindEfficiency(compute=float(c), memory=float(m), overhead_ms=float(oo))
    pred = oo + join(F / c, B / m)
    err = float(np.median(np.abs(pred - T) / T))
    return eff, err


def calibrate(table: ProfileTable, source: GpuSpec | str | None = None, *,
              registry: Registry | None = None, combine: str = "max") -> Calibration:
    """Fit per-kind roofline factors ``(e_c, e_m, o)`` to ``table`` using its GPU's spec peaks.

    The fit minimises ``Σ_n (log t_pred(n) − log t_meas(n))²`` (relative error at every
    size counts the same, small and large). ``source`` defaults to the table's GPU;
    ``combine`` is how the two roofline terms join (see :func:`roofline_ms`).
    """
    if combine not in COMBINES:
        raise ConfigError(f"combine must be one of {COMBINES}, got {combine!r}")
    if table.is_cpu:
        raise ConfigError(f"{table.origin}: a CPU table cannot calibrate a GPU roofline")
    spec = source if isinstance(source, GpuSpec) else resolve(source or table.gpu, registry)
    if spec.is_cpu:
        raise ConfigError("calibration needs a GPU spec, not the CPU pseudo-GPU")
    peak = spec.peak_tflops(table.shape.dtype)
    missing = table.missing_kinds()
    if missing:
        raise ConfigError(f"{table.origin}: cannot calibrate without measurements of {missing}")
    kinds, errs, host = {}, {}, {}
    for letter in sorted(set(table.shape.layer_kinds)):
        s = table.layer(letter)
        # Fit the roofline to GPU time only: the points above the host plateau.
        floor = host_floor(s)
        pts = [(n, v) for n, v in zip(s.tokens, s.ms) if v >= PLATEAU * floor] or list(zip(s.tokens, s.ms))
        toks, times = [n for n, _ in pts], [v for _, v in pts]
        fl = [layer_flops(table.shape, letter, n) for n in toks]
        by = [layer_bytes(table.shape, letter, n) for n in toks]
        kinds[letter], errs[letter] = _fit_kind(fl, by, times, peak, spec.memory_bandwidth_gbs,
                                                DEFAULT_EFFICIENCY[letter], combine)
        host[letter] = floor
    overheads = dict(table.scoring)
    if table.gather is not None:
        overheads["gather"] = table.gather
    if table.head is not None:
        overheads["head"] = table.head
    return Calibration(source_gpu=spec.id, source_bandwidth_gbs=spec.memory_bandwidth_gbs, shape=table.shape.name,
                       kinds=kinds, fit_error=errs, overheads=overheads, combine=combine, host_ms=host)


# --------------------------------------------------------- host / GPU split
PLATEAU = 1.5  # a point is GPU-bound when its time is at least this multiple of the floor


def host_floor(series: Series) -> float:
    """The series' host floor: its smallest time (the plateau of small token counts)."""
    return float(min(series.ms))


def gpu_part(series: Series, tokens: float) -> tuple[float, bool]:
    """``(ms, extrapolated)`` of GPU time at ``tokens``: the measurement where the series is
    GPU-bound, scaled linearly below that; a series that never leaves its floor (small
    kernels whose launch dominates) contributes its excess over the floor."""
    ms, toks = list(series.ms), list(series.tokens)
    floor = min(ms)
    start = ms.index(floor)
    nstar = next((n for n, v in zip(toks[start:], ms[start:]) if v >= PLATEAU * floor), None)
    if nstar is None:
        v, ex = series.at(tokens)
        return max(0.0, v - floor), ex
    if tokens >= nstar:
        return series.at(tokens)
    v, _ = series.at(nstar)
    return v * tokens / nstar, False


def pipeline_ms(gpu: Sequence[float], host: Sequence[float]) -> float:
    """``max_k (Σ_{i≤k} host_i + Σ_{i≥k} gpu_i)``: a host queuing work for a GPU, in order."""
    best, h_prefix, g_suffix = 0.0, 0.0, float(sum(gpu))
    for g, h in zip(gpu, host):
        h_prefix += h
        best = max(best, h_prefix + g_suffix)
        g_suffix -= g
    return best


# ----------------------------------------------------------------- the model
@dataclass(frozen=True)
class LatencyBreakdown:
    """Where a predicted prefill's time goes (ms); ``tokens[i]`` = tokens entering layer ``i``."""

    tokens: tuple[int, ...]
    layers_ms: tuple[float, ...]
    scoring_ms: float
    gather_ms: float
    head_ms: float
    extrapolated: bool
    # Pipelined (GPU) predictions: per-layer GPU time (layer + its scoring and gather) and
    # host time, the head as a last stage; ``None`` where times simply add up (CPU tables,
    # uncalibrated roofline).
    layer_gpu_ms: tuple[float, ...] | None = None
    layer_host_ms: tuple[float, ...] | None = None

    @property
    def total_ms(self) -> float:
        if self.layer_gpu_ms is not None:
            return pipeline_ms(self.layer_gpu_ms, self.layer_host_ms)
        return sum(self.layers_ms) + self.scoring_ms + self.gather_ms + self.head_ms


class LatencyModel:
    """Predicted prefill latency of schedules for one (shape, layout, GPU); a ``LatencySource``.

    ``gpu`` is a :class:`GpuSpec` or a name for :func:`autoprune.cost.gpus.resolve`. The source is
    chosen in this order: ``table`` (argument, or found by
    :func:`autoprune.cost.profile_table.find_table` for this GPU and shape); ``calibration``
    (argument, or fitted on a table of this shape measured on another GPU of the
    registry) → ``roofline``; else ``roofline-uncalibrated``. The CPU pseudo-GPU needs a table.

    Raises :class:`ConfigError` when a given table is for another GPU or shape, and
    :class:`ModelMismatchError` for schedules of another layer count or layer kinds.
    """

    def __init__(self, shape: ModelShape, layout: TokenLayout, gpu: GpuSpec | str, *,
                 table: ProfileTable | str | Path | None = None, calibration: Calibration | None = None,
                 search_dirs: Sequence[str | Path] | None = None, registry: Registry | None = None):
        if not isinstance(shape, ModelShape):
            raise ConfigError(f"shape must be a ModelShape, got {type(shape).__name__}")
        if not isinstance(layout, TokenLayout):
            raise ConfigError(f"layout must be a TokenLayout, got {type(layout).__name__}")
        self.shape, self.layout = shape, layout
        self.spec = gpu if isinstance(gpu, GpuSpec) else resolve(gpu, registry)
        self.gpu = self.spec.id
        self.table: ProfileTable | None = None
        self.calibration: Calibration | None = None
        self._notes: list[str] = []
        self._estimated: set[str] = set()  # overheads taken from the byte count, not a measurement
        if isinstance(table, (str, Path)):
            table = ProfileTable.load(table)
        if table is None and calibration is None:
            path = find_table(self.spec.id, shape.name, search_dirs)
            if path is not None:
                table = ProfileTable.load(path)
            else:  # a table of this GPU for a shape of the same widths (another layer pattern)
                for gpu_id, _, p in list_tables(search_dirs):
                    if gpu_id != self.spec.id:
                        continue
                    t = ProfileTable.load(p)
                    if t.shape.same_widths(shape) and not set(shape.layer_kinds) - set(t.shape.layer_kinds):
                        table = t
                        break
        if table is not None:
            self._check_table(table)
            self.table, self.source = table, "table"
            self._notes.append(f"table:{table.origin}")
            if table.is_cpu:
                self._notes.append("cpu-wall-clock-table")
        else:
            if self.spec.is_cpu:
                raise ConfigError(
                    f"no measured CPU table for shape {shape.name!r}: the CPU has no roofline; run "
                    f"`autoprune profile --gpu cpu` for this shape first"
                )
            if calibration is None:
                calibration = self._auto_calibration(search_dirs, registry)
            if calibration is not None:
                if calibration.shape != shape.name:
                    raise ConfigError(f"calibration was fitted on shape {calibration.shape!r}, not {shape.name!r}")
                self.calibration, self.source = calibration, "roofline"
                self._notes.append(f"calibrated-on:{calibration.source_gpu}")
            else:
                self.source = "roofline-uncalibrated"
                self._notes.append("default-efficiencies")
        self._baseline = None

    # -- setup ---------------------------------------------------------------
    def _check_table(self, table: ProfileTable) -> None:
        if table.gpu != self.spec.id:
            raise ConfigError(
                f"{table.origin} was measured on {table.gpu!r}, not {self.spec.id!r}; to predict another GPU from it "
                "pass calibration=calibrate(table)"
            )
        missing = table.missing_kinds()
        if missing:
            raise ConfigError(f"{table.origin} has no measurements for layer kind(s) {missing} "
                              f"(skipped: {[dict(x) for x in table.skipped][:4]}); "
                              "measure them with `autoprune profile`")
        if table.shape != self.shape:
            if not table.shape.same_widths(self.shape):
                raise ConfigError(
                    f"{table.origin} was measured for shape {table.shape.name!r} with other dimensions than shape "
                    f"{self.shape.name!r}; measure this shape with `autoprune profile`"
                )
            missing = sorted(set(self.shape.layer_kinds) - set(table.shape.layer_kinds))
            if missing:
                raise ConfigError(f"{table.origin} has no layers of kind(s) {missing} that shape "
                                  f"{self.shape.name!r} needs")
            # Same widths, other layer pattern: per-layer costs are the same per kind.
            self._notes.append(f"layers-of:{table.shape.name}")
        if table.query_tokens and table.query_tokens != self.layout.query:
            self._notes.append(f"scoring-measured-with-{table.query_tokens}-query-tokens")

    def _auto_calibration(self, search_dirs, registry) -> Calibration | None:
        """A calibration from a table of this shape on another GPU — or, failing that, of a
        shape with the same widths (another layer pattern) that has every kind needed."""
        reg = registry or load_registry()
        fallback = None
        for gpu_id, shape_name, path in list_tables(search_dirs):
            if gpu_id in ("cpu", self.spec.id) or gpu_id not in reg:
                continue
            if shape_name != self.shape.name and fallback is not None:
                continue
            t = ProfileTable.load(path)
            if t.is_cpu or not t.shape.same_widths(self.shape):
                continue
            if set(self.shape.layer_kinds) - set(t.shape.layer_kinds):
                continue
            if t.shape == self.shape:
                return calibrate(t, reg.get(gpu_id))
            fallback = (t, gpu_id)
        if fallback is not None:
            t, gpu_id = fallback
            self._notes.append(f"layers-of:{t.shape.name}")
            return dataclasses.replace(calibrate(t, reg.get(gpu_id)), shape=self.shape.name)
        return None

    # -- per-term times ------------------------------------------------------
    def layer_ms(self, kind: str, tokens: int) -> tuple[float, bool]:
        """``(ms, extrapolated)`` of one layer of ``kind`` (letter) over ``tokens`` tokens."""
        if self.table is not None:
            return self.table.layer(kind).at(tokens)
        cal = self.calibration
        eff = cal.kinds[kind] if cal is not None else DEFAULT_EFFICIENCY[kind]
        return roofline_ms(layer_flops(self.shape, kind, tokens), layer_bytes(self.shape, kind, tokens),
                           self.spec.peak_tflops(self.shape.dtype), self.spec.memory_bandwidth_gbs, eff,
                           cal.combine if cal is not None else "max"), False

    def overhead_ms(self, what: str, tokens: int) -> tuple[float, bool]:
        """``(ms, extrapolated)`` of ``attention``/``mamba``/``mamba_decay`` scoring, ``gather`` or ``head``."""
        series = None
        scale = 1.0
        if self.table is not None:
            series = self.table.scoring.get(what) if what not in ("gather", "head") else getattr(self.table, what)
        elif self.calibration is not None:
            series = self.calibration.overheads.get(what)
            # Small memory-bound kernels: the source GPU's time scaled by its bandwidth over ours.
            scale = self.calibration.source_bandwidth_gbs / self.spec.memory_bandwidth_gbs
        if series is not None:
            ms, ex = series.at(tokens)
            return ms * scale, ex
        if self.spec.is_cpu:
            raise ConfigError(f"{self.table.origin if self.table else 'CPU'}: no measurement of {what!r} overhead")
        self._estimated.add(what)
        nbytes = overhead_bytes(self.shape, what, tokens, self.layout.query)
        return roofline_ms(0.0, nbytes, 1.0, self.spec.memory_bandwidth_gbs, DEFAULT_OVERHEAD_EFFICIENCY), False

    @property
    def pipelined(self) -> bool:
        """Whether host and GPU times are composed as a pipeline (GPU predictions) or summed."""
        if self.table is not None:
            return not self.table.is_cpu
        return self.calibration is not None

    def term_ms(self, what: str, tokens: int) -> tuple[float, float, bool]:
        """``(gpu_ms, host_ms, extrapolated)`` of a layer kind (letter) or an overhead
        (``attention``/``mamba``/``mamba_decay`` scoring, ``gather``, ``head``) at ``tokens``."""
        is_layer = what in KIND_NAMES
        if not self.pipelined:
            ms, ex = self.layer_ms(what, tokens) if is_layer else self.overhead_ms(what, tokens)
            return ms, 0.0, ex
        if is_layer and self.table is None:  # calibrated roofline of the GPU part
            ms, ex = self.layer_ms(what, tokens)
            return ms, self.calibration.host_ms.get(what, 0.0), ex
        if is_layer:
            series, scale = self.table.layer(what), 1.0
        elif self.table is not None:
            series = self.table.scoring.get(what) if what not in ("gather", "head") else getattr(self.table, what)
            scale = 1.0
        else:
            series = self.calibration.overheads.get(what)
            scale = self.calibration.source_bandwidth_gbs / self.spec.memory_bandwidth_gbs
        if series is None:
            ms, ex = self.overhead_ms(what, tokens)
            return ms, 0.0, ex
        g, ex = gpu_part(series, tokens)
        return g * scale, host_floor(series), ex

    # -- schedules -----------------------------------------------------------
    def _check_schedule(self, schedule: Schedule) -> None:
        if not isinstance(schedule, Schedule):
            raise ConfigError(f"expected a Schedule, got {type(schedule).__name__}")
        if schedule.num_layers != self.shape.num_layers:
            raise ModelMismatchError(
                f"schedule has {schedule.num_layers} layers but shape {self.shape.name!r} has {self.shape.num_layers}"
            )
        if schedule.model is not None and schedule.model.layer_kinds != self.shape.layer_kinds:
            raise ModelMismatchError(
                f"schedule is for layer kinds {schedule.model.layer_kinds!r}; shape {self.shape.name!r} has "
                f"{self.shape.layer_kinds!r}"
            )

    def breakdown(self, schedule: Schedule) -> LatencyBreakdown:
        """Per-term prediction for ``schedule`` at this layout's visual-token count."""
        from ..plan import plan_reduction

        self._check_schedule(schedule)
        V, text = self.layout.visual, self.layout.text
        plan = plan_reduction(schedule, self.shape.layer_kinds, V)
        tokens = tuple(text + k for k in plan.counts)
        extrap = False
        decay = schedule.scorer.mamba_decay
        layers, gpu, host = [], [], []
        scoring = gather = 0.0
        for i, (kind, n) in enumerate(zip(self.shape.layer_kinds, tokens)):
            g, h, ex = self.term_ms(kind, n)
            layers.append(g)
            extrap |= ex
            if i in plan.prune_layers:
                gg, hh, ex = self.term_ms("gather", text + (V if i == 0 else plan.counts[i - 1]))
                g, h, gather, extrap = g + gg, h + hh, gather + gg, extrap or ex
            if i in plan.evidence_layers:
                what = "attention" if plan.evidence_layers[i] == "attention" else ("mamba_decay" if decay else "mamba")
                gg, hh, ex = self.term_ms(what, n)
                g, h, scoring, extrap = g + gg, h + hh, scoring + gg, extrap or ex
            gpu.append(g)
            host.append(h)
        head, head_host, ex = self.term_ms("head", tokens[-1])
        if self.pipelined:
            gpu.append(head)
            host.append(head_host)
        return LatencyBreakdown(tokens=tokens, layers_ms=tuple(layers), scoring_ms=scoring, gather_ms=gather,
                                head_ms=0.0 if self.pipelined else head, extrapolated=extrap or ex,
                                layer_gpu_ms=tuple(gpu) if self.pipelined else None,
                                layer_host_ms=tuple(host) if self.pipelined else None)

    def baseline_breakdown(self) -> LatencyBreakdown:
        return self.breakdown(Schedule.identity(self.shape.num_layers))

    def baseline_ms(self) -> float:
        if self._baseline is None:
            self._baseline = self.baseline_breakdown().total_ms
        return self._baseline

    def estimate(self, schedule: Schedule) -> LatencyEstimate:
        """:class:`LatencyEstimate` of ``schedule`` and of the unreduced model (``speedup`` = ratio)."""
        b = self.breakdown(schedule)
        base = self.baseline_breakdown()
        flags = list(self._notes)
        if b.extrapolated or base.extrapolated:
            flags.append("extrapolated")
        if self.source != "roofline-uncalibrated":
            flags.extend(f"unmeasured-{what}" for what in sorted(self._estimated))
        return LatencyEstimate(latency_ms=b.total_ms, baseline_ms=base.total_ms, source=self.source, gpu=self.gpu,
                               flags=tuple(flags))

    def describe(self) -> dict:
        d: dict[str, Any] = {"gpu": self.gpu, "shape": self.shape.name, "source": self.source,
                             "layout": {"prefix": self.layout.prefix, "visual": self.layout.visual,
                                        "query": self.layout.query}, "notes": list(self._notes)}
        if self.calibration is not None:
            d["calibration"] = self.calibration.to_dict()
        return d


# --------------------------------------------------------------- measurement
class MeasuredLatency:
    """``LatencySource`` that runs each schedule on the present device (``--measure``).

    Times ``model(inputs_embeds=..., **forward_kwargs)`` under :func:`autoprune.reduce`
    with :func:`autoprune.profiler.timing.time_fn` (CUDA events on a GPU, the wall clock on the
    CPU — the estimate's ``source`` is then ``cpu-measured``) and, with a monitor, NVML
    energy per prefill. The unreduced baseline is measured once and cached.
    """

    def __init__(self, model, inputs_embeds, visual_mask, *, gpu: str | None = None, query_mask=None,
                 clock=None, monitor=None, energy: bool = True, timer_kw: Mapping[str, Any] | None = None,
                 use_kernels: bool | None = None, forward_kwargs: Mapping[str, Any] | None = None):
        import torch

        self.model = model
        self.inputs_embeds = inputs_embeds
        self.visual_mask = visual_mask
        self.query_mask = query_mask
        self.on_cuda = inputs_embeds.is_cuda
        if gpu is None:
            gpu = CPU.id
            if self.on_cuda:
                try:
                    from .gpus import detect

                    gpu = detect().id
                except Exception:
                    gpu = torch.cuda.get_device_name(inputs_embeds.device)
        self.gpu = gpu
        self.clock = clock
        self.monitor = monitor
        self.energy = energy and monitor is not None
        self.timer_kw = dict(timer_kw or {})
        self.use_kernels = use_kernels
        self.forward_kwargs = {"use_cache": False, "logits_to_keep": 1} if forward_kwargs is None else dict(
            forward_kwargs)
        self._baseline = None

    def _forward(self):
        import torch

        with torch.inference_mode():
            return self.model(inputs_embeds=self.inputs_embeds, **self.forward_kwargs)

    def _time(self):
        from ..profiler.timing import time_fn

        return time_fn(lambda: self._forward(), clock=self.clock, monitor=self.monitor, energy=self.energy,
                       device=self.inputs_embeds.device, **self.timer_kw)

    def baseline(self):
        """:class:`~autoprune.profiler.timing.TimingStats` of the unreduced model (cached)."""
        if self._baseline is None:
            self._baseline = self._time()
        return self._baseline

    def measure(self, schedule: Schedule):
        """:class:`~autoprune.profiler.timing.TimingStats` of the model reduced by ``schedule``."""
        from ..runtime import reduce

        with reduce(self.model, schedule, visual_mask=self.visual_mask, query_mask=self.query_mask,
                    use_kernels=self.use_kernels):
            return self._time()

    def estimate(self, schedule: Schedule) -> LatencyEstimate:
        base = self.baseline()
        stats = self.measure(schedule)
        source = "cpu-measured" if stats.is_fallback else "measured"
        return LatencyEstimate(
            latency_ms=max(stats.median, 1e-9), baseline_ms=max(base.median, 1e-9), source=source, gpu=self.gpu,
            energy_j=stats.energy_per_call_j, baseline_energy_j=base.energy_per_call_j, spread=stats.spread,
            flags=tuple(stats.flags),
        )
