"""Roofline prediction of a layer's time, and its calibration on a table measured elsewhere.

``t(n) = o + max(F(n) / (P·e_c), B(n) / (W·e_m))`` (or the sum of the two terms, see
:func:`roofline_ms`): ``P`` the GPU's dense peak (TFLOP/s) and ``W`` its bandwidth (GB/s)
from its spec sheet (:mod:`autoprune.cost.gpus`), FLOPs ``F`` from
:func:`autoprune.cost.shapes.layer_flops`, bytes ``B`` from :func:`layer_bytes`, and per-kind
factors ``(e_c, e_m, o)`` (:class:`KindEfficiency`): fitted by :func:`calibrate` on a table
measured on *another* GPU (:class:`Calibration`), or :data:`DEFAULT_EFFICIENCY` (documented
guesses) when no table of the shape exists anywhere.

A table measured by timing one layer alone records ``max(GPU, host)`` per point, and at small
token counts a layer's host time (Python, kernel launches) exceeds its GPU time. Each measured
series is therefore split into its host floor (:func:`host_floor`, the plateau at small token
counts) and its GPU part (:func:`gpu_part`: the measurement above the plateau; below it, scaled
linearly from the first point that is clearly GPU-bound, at :data:`PLATEAU` × the floor); the
calibration fits the roofline to the GPU part only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import ConfigError
from .gpus import GpuSpec, Registry, resolve
from .profile_table import KIND_NAMES, ProfileTable, Series
from .shapes import ModelShape, layer_flops

__all__ = [
    "COMBINES",
    "DEFAULT_EFFICIENCY",
    "DEFAULT_OVERHEAD_EFFICIENCY",
    "PLATEAU",
    "Calibration",
    "KindEfficiency",
    "calibrate",
    "gpu_part",
    "host_floor",
    "layer_bytes",
    "overhead_bytes",
    "roofline_ms",
]


def layer_bytes(shape: ModelShape, kind: str, tokens: int) -> float:
    """Fewest bytes one layer of ``kind`` must move through device memory for ``tokens`` tokens.

    Weights read once; every activation the layer's kernels hand to each other written
    once and read once; the block's pre-norm and residual (``5·n·h``). Re-reads inside a
    kernel (flash attention's K/V per query block, cache misses) are not counted: the
    fitted memory factor absorbs them.
    """
    n, h, b = tokens, shape.hidden_size, shape.dtype_bytes
    block = 5 * n * h * b
    if shape.mixer_mlp and kind in ("L", "*", "C"):  # the layer's FFN, then its mixer
        width = (shape.moe_top_k * shape.moe_intermediate_size + shape.moe_shared_intermediate_size
                 if shape.moe_top_k else shape.mlp_intermediate_size)
        block += 3 * h * width * b + 6 * n * width * b + 5 * n * h * b
    if kind == "L":
        Hk, Hv, dk, dv = (shape.linear_num_key_heads, shape.linear_num_value_heads, shape.linear_key_head_dim,
                          shape.linear_value_head_dim)
        proj = 2 * Hk * dk + 2 * Hv * dv + 2 * Hv
        conv = 2 * Hk * dk + Hv * dv
        weights = (h * proj + Hv * dv * h + conv * shape.conv_kernel) * b
        chunks = math.ceil(n / max(1, shape.chunk_size))
        states = 2 * chunks * Hv * dk * dv * 4  # fp32 chunk states
        acts = 2 * n * proj * b + 2 * n * conv * 4 + 3 * n * Hv * dv * 4 + n * h * b  # the delta rule runs in fp32
        return float(weights + states + acts + block)
    if kind == "C":
        weights = (4 * h * h + h * shape.conv_kernel) * b
        acts = 2 * n * 3 * h * b + 4 * n * h * b + n * h * b
        return float(weights + acts + block)
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
        if shape.attn_output_gate:
            Hq2 = 2 * Hq
            weights = (h * (Hq2 + 2 * Hk) * d + Hq * d * h) * b
            acts = 2 * n * (Hq2 + 2 * Hk) * d * b + 2 * n * Hq * d * b + n * h * b
            return float(weights + acts + block)
        weights = (h * (Hq + 2 * Hk) * d + Hq * d * h) * b
        acts = 2 * n * (Hq + 2 * Hk) * d * b + 2 * n * Hq * d * b + n * h * b
        return float(weights + acts + block)
    if kind == "-":
        Im = shape.mlp_intermediate_size
        return float(2 * h * Im * b + 4 * n * Im * b + n * h * b + block)
    if kind == "E":
        active = shape.moe_top_k * shape.moe_intermediate_size + shape.moe_shared_intermediate_size
        return float(2 * h * active * b + 4 * n * active * b + n * h * b + block)
    if kind == "P":  # the two mixers share the block's norm and residual
        return layer_bytes(shape, "M", tokens) + layer_bytes(shape, "*", tokens) - block
    if kind == "S":  # Mamba2 + shared block (attention read at 2h, gated MLP, output linear; adapters ignored)
        Hq, Hk, d, Im = shape.num_attention_heads, shape.num_kv_heads, shape.head_dim, shape.mlp_intermediate_size
        attn = (2 * h * (Hq + 2 * Hk) * d + Hq * d * h) * b + 2 * n * (Hq + 2 * Hk) * d * b + 2 * n * Hq * d * b
        shared = attn + 3 * h * Im * b + 6 * n * Im * b + h * h * b + 4 * n * 2 * h * b + block
        return layer_bytes(shape, "M", tokens) + float(shared)
    if kind == "A":  # Mamba1: weights, in_proj/conv/x_proj/dt/scan activations, fp32 dt
        D, N, R, K = shape.mamba_intermediate, shape.ssm_state_size, shape.mamba_dt_rank, shape.conv_kernel
        weights = (h * 2 * D + D * (R + 2 * N) + R * D + D * h + D * K + 2 * D * N + 2 * D) * b
        acts = 2 * n * 2 * D * b + 2 * n * D * b + 2 * n * (R + 2 * N) * b + 2 * n * D * 4 + 3 * n * D * b + n * h * b
        return float(weights + acts + block)
    raise ConfigError(f"unknown layer kind {kind!r}")


def overhead_bytes(shape: ModelShape, what: str, tokens: int, query: int = 64) -> float:
    """Rough bytes of the reduction's own work at ``tokens`` tokens (for the uncalibrated roofline).

    ``what``: ``attention``/``mamba``/``mamba_decay``/``linear``/``linear_decay``/``linear_exact`` scoring (query rows over all keys,
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
    if what in ("linear", "linear_decay", "linear_exact"):
        # q/k conv + L2 norm over the key channels, β and g per value head; the exact form's
        # chunked scan rereads the keys once per chunk step and moves per-chunk query blocks
        Hk, Hv, dk = shape.linear_num_key_heads, shape.linear_num_value_heads, shape.linear_key_head_dim
        base = n * 2 * Hk * dk * (b + 3 * 4) + 4 * n * Hv * 4 + 2 * Hk * query * n * 4
        return float(base * {"linear": 1, "linear_decay": 2, "linear_exact": 8}[what])
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
    # Gated DeltaNet: projections (GEMMs) plus a chunked delta rule (FLA's Triton kernels, or
    # transformers' torch loop over chunks where FLA is absent: lower); short conv: GEMMs + a conv.
    "L": KindEfficiency(compute=0.3, memory=0.5, overhead_ms=0.08),
    "C": KindEfficiency(compute=0.55, memory=0.6, overhead_ms=0.03),
    # two mixers per layer: between a Mamba2 and an attention layer, launches of both
    "P": KindEfficiency(compute=0.4, memory=0.6, overhead_ms=0.08),
    "S": KindEfficiency(compute=0.4, memory=0.6, overhead_ms=0.1),
    # Mamba1's selective scan is memory-bound and sequential over tokens in chunks
    "A": KindEfficiency(compute=0.25, memory=0.5, overhead_ms=0.06),
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
