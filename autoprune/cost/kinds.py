"""Per-layer-kind cost forms: a floor plus a throughput term, with a fitted transition.

One :class:`KindSpec` per layer-kind letter is registered here (:func:`register_kind`); the
latency model, the calibration and the few-shot transfer find a kind's FLOPs, bytes and
prior through :func:`kind_spec` only, so a new family's kinds are added by registering
them (one call, nothing else edited)::

    register_kind(KindSpec(letter="S", name="sliding_attention", flops=my_flops, nbytes=my_bytes,
                           prior=KindCost(host_ms=0.5, gpu_floor_ms=0.05, compute=0.4, memory=0.6)))

The form (:class:`KindCost`) of one kind on one GPU, at ``n`` tokens::

    gpu(n)  = F + x_c · FLOPs(n) / P + x_m · bytes(n) / W        GPU time of one call (ms)
    call(n) = (H^β + gpu(n)^β)^(1/β)                              one call timed alone

``F`` the GPU-side floor (launch latency of the layer's kernels), ``x_c = 1/e_c`` and
``x_m = 1/e_m`` the inverse fractions of the dense peak ``P`` and the bandwidth ``W``
reached (a layer is several kernels, some bound by arithmetic, some by memory: their times
add), ``H`` the host floor (Python and kernel launches: a call cannot return faster than the
host can queue it), ``β ≥ 1`` how sharply a call passes from the floor to the throughput
regime (β = 1: the two add; β → ∞: the larger one wins). A whole prefill pipelines host and
GPU (:func:`autoprune.cost.latency.pipeline_ms`): there ``H`` is the host stage, ``gpu(n)``
the GPU stage of the layer.

Across GPUs (:meth:`KindCost.transfer`) the throughput term follows the target's spec peaks
through the formula; the GPU floor scales with the clock ratio (launch latency is clock
bound; the clock is the per-SM peak ratio ``(P/SMs)_src / (P/SMs)_dst``, equal for one
architecture); the host floor stays (the same host is assumed; measure it with
``autoprune profile --quick``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = [
    "KindCost",
    "KindSpec",
    "fit_kind_cost",
    "kind_spec",
    "register_kind",
    "registered_kinds",
    "softmax_ms",
    "unregister_kind",
]

_BETA_MAX = 32.0


def softmax_ms(a: float, b: float, beta: float) -> float:
    """``(a^β + b^β)^(1/β)`` for ``a, b ≥ 0``, computed without overflow."""
    m = max(a, b)
    if m <= 0:
        return 0.0
    return m * ((a / m) ** beta + (b / m) ** beta) ** (1.0 / beta)


def _check_num(owner: str, name: str, v, lo: float = 0.0, hi: float = math.inf, lo_open: bool = False) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{owner}.{name} must be a finite number, got {v!r}")
    if v < lo or (lo_open and v == lo) or v > hi:
        raise ConfigError(f"{owner}.{name} must be in {'(' if lo_open else '['}{lo}, {hi}], got {v!r}")


@dataclass(frozen=True)
class KindCost:
    """The cost form of one layer kind on one GPU (see the module docstring; times in ms).

    ``compute``/``memory`` are the fractions ``e_c``/``e_m`` of the spec peaks (fitted values
    absorb errors of the FLOP and byte counts, so they may exceed 1 a little); a kind whose
    points never identify one of the two terms gets ``inf`` for it (the term is absent).
    """

    host_ms: float
    gpu_floor_ms: float
    compute: float
    memory: float
    beta: float = 4.0

    def __post_init__(self):
        _check_num("KindCost", "host_ms", self.host_ms)
        _check_num("KindCost", "gpu_floor_ms", self.gpu_floor_ms)
        for name in ("compute", "memory"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and (v == math.inf or math.isfinite(v))):
                raise ConfigError(f"KindCost.{name} must be a number > 0 (or inf: term absent), got {v!r}")
            if v <= 0:
                raise ConfigError(f"KindCost.{name} must be > 0, got {v!r}")
        _check_num("KindCost", "beta", self.beta, 1.0, _BETA_MAX)

    def throughput_ms(self, flops: float, nbytes: float, peak_tflops: float, bandwidth_gbs: float) -> float:
        """``x_c·F/P + x_m·B/W`` in ms (P in TFLOP/s, W in GB/s)."""
        t = 0.0
        if flops > 0 and self.compute != math.inf:
            t += flops / (peak_tflops * 1e12 * self.compute) * 1e3
        if nbytes > 0 and self.memory != math.inf:
            t += nbytes / (bandwidth_gbs * 1e9 * self.memory) * 1e3
        return t

    def gpu_ms(self, flops: float, nbytes: float, peak_tflops: float, bandwidth_gbs: float) -> float:
        """GPU time of one call: the floor plus the throughput term."""
        return self.gpu_floor_ms + self.throughput_ms(flops, nbytes, peak_tflops, bandwidth_gbs)

    def call_ms(self, flops: float, nbytes: float, peak_tflops: float, bandwidth_gbs: float) -> float:
        """One call timed alone: the soft maximum of the host floor and the GPU time."""
        return softmax_ms(self.host_ms, self.gpu_ms(flops, nbytes, peak_tflops, bandwidth_gbs), self.beta)

    def transfer(self, *, clock_ratio: float = 1.0, host_ratio: float = 1.0) -> KindCost:
        """This form on another GPU: the throughput term follows the spec peaks by itself (they
        are arguments of :meth:`gpu_ms`); the GPU floor is divided by ``clock_ratio`` (target
        clock over source clock), the host floor multiplied by ``host_ratio``."""
        _check_num("transfer", "clock_ratio", clock_ratio, 0.0, lo_open=True)
        _check_num("transfer", "host_ratio", host_ratio, 0.0, lo_open=True)
        return KindCost(host_ms=self.host_ms * host_ratio, gpu_floor_ms=self.gpu_floor_ms / clock_ratio,
                        compute=self.compute, memory=self.memory, beta=self.beta)

    def to_dict(self) -> dict:
        def num(v):
            return None if v == math.inf else v

        return {"host_ms": self.host_ms, "gpu_floor_ms": self.gpu_floor_ms, "compute": num(self.compute),
                "memory": num(self.memory), "beta": self.beta}

    @classmethod
    def from_dict(cls, d: Mapping) -> KindCost:
        unknown = sorted(set(d) - {"host_ms", "gpu_floor_ms", "compute", "memory", "beta"})
        if unknown:
            raise ConfigError(f"KindCost: unknown key(s) {unknown}")
        return cls(host_ms=d["host_ms"], gpu_floor_ms=d["gpu_floor_ms"],
                   compute=math.inf if d.get("compute") is None else d["compute"],
                   memory=math.inf if d.get("memory") is None else d["memory"], beta=d.get("beta", 4.0))


@dataclass(frozen=True)
class KindSpec:
    """A layer kind: its letter (``ModelShape.layer_kinds``), table name, FLOP and byte counts
    ``(shape, tokens) -> float``, and the prior form used when no table of it was measured."""

    letter: str
    name: str
    flops: Callable[..., float]
    nbytes: Callable[..., float]
    prior: KindCost

    def __post_init__(self):
        if not isinstance(self.letter, str) or len(self.letter) != 1:
            raise ConfigError(f"KindSpec.letter must be one character, got {self.letter!r}")
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ConfigError(f"KindSpec.name must be an identifier, got {self.name!r}")
        if not callable(self.flops) or not callable(self.nbytes):
            raise ConfigError(f"KindSpec {self.letter!r}: flops and nbytes must be callables (shape, tokens)")
        if not isinstance(self.prior, KindCost):
            raise ConfigError(f"KindSpec {self.letter!r}: prior must be a KindCost")


_KINDS: dict[str, KindSpec] = {}


def register_kind(spec: KindSpec, *, replace: bool = False) -> KindSpec:
    """Add a layer kind (a letter already registered is an error unless ``replace``). Its name
    joins :data:`autoprune.cost.profile_table.KIND_NAMES`, the names measured tables use."""
    from .profile_table import KIND_NAMES

    if not isinstance(spec, KindSpec):
        raise ConfigError(f"register_kind needs a KindSpec, got {type(spec).__name__}")
    if not replace and spec.letter in _KINDS:
        raise ConfigError(f"layer kind {spec.letter!r} is registered already ({_KINDS[spec.letter].name})")
    clash = [k for k, v in KIND_NAMES.items() if v == spec.name and k != spec.letter]
    if clash:
        raise ConfigError(f"layer kind name {spec.name!r} is taken by letter {clash[0]!r}")
    _KINDS[spec.letter] = spec
    KIND_NAMES[spec.letter] = spec.name
    return spec


def unregister_kind(letter: str) -> None:
    """Remove a registered kind (a plugin's teardown, tests); unknown letters are ignored."""
    from .profile_table import KIND_NAMES

    if _KINDS.pop(letter, None) is not None:
        KIND_NAMES.pop(letter, None)


def kind_spec(letter: str) -> KindSpec:
    try:
        return _KINDS[letter]
    except KeyError:
        raise ConfigError(f"unknown layer kind {letter!r}; registered: {sorted(_KINDS)} "
                          "(autoprune.cost.kinds.register_kind adds one)") from None


def registered_kinds() -> dict[str, KindSpec]:
    return dict(_KINDS)


# ------------------------------------------------------------------ fitting
def _nnls_rel(A, t):
    """Least squares of ``A x ≈ t`` in relative error (rows divided by ``t``), ``x ≥ 0``, by
    enumerating the active sets (A has at most a few columns)."""
    import itertools

    import numpy as np

    A = np.asarray(A, dtype=np.float64) / np.asarray(t, dtype=np.float64)[:, None]
    y = np.ones(A.shape[0])
    best, best_x = math.inf, np.zeros(A.shape[1])
    for r in range(1, A.shape[1] + 1):
        for cols in itertools.combinations(range(A.shape[1]), r):
            sub = A[:, cols]
            x, *_ = np.linalg.lstsq(sub, y, rcond=None)
            if (x < 0).any():
                continue
            loss = float(((sub @ x - y) ** 2).sum())
            if loss < best - 1e-15:
                full = np.zeros(A.shape[1])
                full[list(cols)] = x
                best, best_x = loss, full
    return best_x


def fit_kind_cost(tokens: Sequence[float], ms: Sequence[float], flops: Sequence[float], nbytes: Sequence[float],
                  peak_tflops: float, bandwidth_gbs: float, *, plateau: float = 1.5,
                  prior: KindCost | None = None) -> tuple[KindCost, float]:
    """Fit :class:`KindCost` to one kind's calls timed alone; returns ``(form, median rel. error)``.

    Points left of the series' minimum are dropped (below the plateau a call can be slower
    for reasons of its own: other code paths, autotuning keys). The GPU part is fitted by
    non-negative least squares in relative error on the points at least ``plateau`` × the
    floor (there the call is GPU-bound); then ``H`` and ``β`` on every point kept, by a grid.
    When no point leaves the floor, the GPU part is the prior's shape scaled to sit under it.
    """
    import numpy as np

    n = np.asarray(tokens, dtype=np.float64)
    T = np.asarray(ms, dtype=np.float64)
    Fl = np.asarray(flops, dtype=np.float64) / (peak_tflops * 1e12) * 1e3
    By = np.asarray(nbytes, dtype=np.float64) / (bandwidth_gbs * 1e9) * 1e3
    if not (len(n) == len(T) == len(Fl) == len(By)) or len(n) == 0:
        raise ConfigError("fit_kind_cost needs as many token counts, times, FLOPs and bytes, at least one")
    start = int(np.argmin(T))
    n, T, Fl, By = n[start:], T[start:], Fl[start:], By[start:]
    floor = float(T.min())
    bound = T >= plateau * floor
    if bound.sum() >= 2:
        A = np.stack([np.ones_like(Fl[bound]), Fl[bound], By[bound]], axis=1)
        F, xc, xm = _nnls_rel(A, T[bound])
    else:  # never GPU-bound on the grid: the prior's throughput, put under the last point
        p = prior or KindCost(host_ms=floor, gpu_floor_ms=0.0, compute=0.5, memory=0.5)
        xc, xm = 1 / p.compute, 1 / p.memory
        top = xc * Fl[-1] + xm * By[-1]
        s = min(1.0, 0.5 * T[-1] / top) if top > 0 else 1.0
        F, xc, xm = 0.0, xc * s, xm * s
    G = F + xc * Fl + xm * By
    logT = np.log(T)
    best = (math.inf, floor, 4.0)
    for H in floor * np.linspace(0.7, 1.02, 33):
        for beta in (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0):
            m = np.maximum(H, G)
            pred = m * ((H / m) ** beta + (G / m) ** beta) ** (1 / beta)
            loss = float(((np.log(pred) - logT) ** 2).sum())
            if loss < best[0]:
                best = (loss, float(H), beta)
    _, H, beta = best
    cost = KindCost(host_ms=float(H), gpu_floor_ms=float(F), compute=float(1 / xc) if xc > 0 else math.inf,
                    memory=float(1 / xm) if xm > 0 else math.inf, beta=float(beta))
    pred = np.array([softmax_ms(H, g, beta) for g in G])
    return cost, float(np.median(np.abs(pred - T) / T))


# --------------------------------------------------------- the built-in kinds
def _register_builtins() -> None:
    """Every layer kind the shapes know (``profile_table.KIND_NAMES``, ``roofline.DEFAULT_EFFICIENCY``),
    with the shapes' FLOP and byte counts; their priors from the roofline's default efficiencies."""
    from .profile_table import KIND_NAMES
    from .roofline import DEFAULT_EFFICIENCY, layer_bytes
    from .shapes import layer_flops

    # Host floors: transformers' NemotronH blocks timed alone on the H100/H200 hosts (the
    # committed tables' plateaus, rounded); other kinds: a guess between attention and Mamba2.
    # GPU floors: the default efficiencies' per-call overheads (~5 µs per kernel launch).
    host = {"M": 1.3, "*": 0.5, "-": 0.2, "E": 0.5}
    for letter, eff in DEFAULT_EFFICIENCY.items():
        register_kind(KindSpec(
            letter=letter, name=KIND_NAMES[letter],
            flops=lambda shape, n, k=letter: layer_flops(shape, k, n),
            nbytes=lambda shape, n, k=letter: layer_bytes(shape, k, n),
            prior=KindCost(host_ms=host.get(letter, 0.8), gpu_floor_ms=eff.overhead_ms, compute=eff.compute,
                           memory=eff.memory, beta=4.0),
        ), replace=True)


_register_builtins()
