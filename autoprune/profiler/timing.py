"""Timing a callable: per-call milliseconds that can be trusted.

A **clock** turns "run ``fn`` for these input indices" into per-call durations in ms:
:class:`CudaEventClock` (one CUDA event pair per call, one synchronisation after the loop)
or :class:`WallClock` (``time.perf_counter``; the CPU fallback). Clocks and monitors
(:mod:`autoprune.profiler.monitor`) are injectable, so that tests (and the search) can
pass fakes.

:func:`time_fn` is the timer (triton's ``do_bench`` pattern): one first call (compilation,
autotuning, allocator warm-up), a quick estimate, warm-up and repeat counts derived from
it, then the timed calls; a measurement whose spread is too large or during which the GPU
slowed down (thermal or hardware slowdown, as the monitor reports it) is measured again a
bounded number of times and otherwise flagged. With ``repeats`` > 1 the timed calls are
always run that many times and must also agree with each other (a loaded machine drifts
over seconds, which one batch of calls cannot see). With a monitor and ``energy=True`` an NVML
energy window follows. It returns a :class:`TimingStats`.

Nothing here imports ``pynvml`` or touches CUDA at import time.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from ..errors import AutopruneError
from .monitor import Monitor, MonitorSample

__all__ = [
    "METHOD_CUDA_EVENTS",
    "METHOD_WALL_CLOCK",
    "METHODS",
    "NOISE_FLAGS",
    "DEFAULT_MAX_SPREAD",
    "TimingStats",
    "Clock",
    "CudaEventClock",
    "WallClock",
    "default_clock",
    "time_fn",
    "summarize",
    "rotation_count",
]

METHOD_CUDA_EVENTS = "cuda-events"
METHOD_WALL_CLOCK = "wall-clock (CPU fallback)"
METHODS = (METHOD_CUDA_EVENTS, METHOD_WALL_CLOCK)
# Flags that say a measurement is noisy (its median is uncertain by more than ``max_spread``).
NOISE_FLAGS = ("high-spread", "noisy-repeats")
DEFAULT_MAX_SPREAD = 0.10


# ----------------------------------------------------------------------- results
@dataclass(frozen=True)
class TimingStats:
    """Per-call time of a callable, in ms.

    ``spread = (p80 − p20) / median``. ``method`` is ``cuda-events`` or
    ``wall-clock (CPU fallback)``. ``attempts`` counts measurements (1 + re-measurements);
    ``flags`` says what was still wrong after the last one (``high-spread``, ``noisy-repeats``,
    ``clock-slowdown``, ``power-capped``, ``monitor-unavailable``). ``repeat_spread`` (with
    ``repeats`` > 1) is ``(max − min) / median`` of the medians of the agreeing repeats (the
    best window of ``repeats`` consecutive measurements); None for a single measurement.
    ``monitor`` holds the monitor's view (reasons, clocks; energy when an energy window was run).
    """

    median: float
    p20: float
    p80: float
    mean: float
    n: int
    spread: float
    method: str
    unit: str = "ms"
    attempts: int = 1
    flags: tuple[str, ...] = ()
    monitor: MonitorSample | None = None
    notes: tuple[str, ...] = ()
    repeat_spread: float | None = None

    @property
    def noisy(self) -> bool:
        """True when a flag says the median is uncertain by more than the timer's ``max_spread``."""
        return any(f in NOISE_FLAGS for f in self.flags)

    def __post_init__(self):
        for name in ("median", "p20", "p80", "mean"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise AutopruneError(f"TimingStats.{name} must be a finite number >= 0, got {v!r}")
        if not isinstance(self.n, int) or self.n < 1:
            raise AutopruneError(f"TimingStats.n must be an integer >= 1, got {self.n!r}")
        if self.method not in METHODS:
            raise AutopruneError(f"TimingStats.method must be one of {METHODS}, got {self.method!r}")
        if self.unit != "ms":
            raise AutopruneError(f"TimingStats.unit must be 'ms', got {self.unit!r}")

    @property
    def is_fallback(self) -> bool:
        return self.method == METHOD_WALL_CLOCK

    @property
    def energy_per_call_j(self) -> float | None:
        return None if self.monitor is None else self.monitor.energy_per_call_j

    def to_dict(self) -> dict:
        return {
            "median_ms": self.median, "p20_ms": self.p20, "p80_ms": self.p80, "mean_ms": self.mean,
            "n": self.n, "spread": self.spread, "unit": self.unit, "method": self.method,
            "attempts": self.attempts, "flags": list(self.flags), "notes": list(self.notes),
            "repeat_spread": self.repeat_spread,
            "monitor": None if self.monitor is None else self.monitor.to_dict(),
        }


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    # numpy's default ("linear") definition, without importing numpy.
    n = len(sorted_values)
    if n == 1:
        return float(sorted_values[0])
    pos = q * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def summarize(durations_ms: Sequence[float], method: str, **kw) -> TimingStats:
    """Stats of raw per-call durations (ms)."""
    if not durations_ms:
        raise AutopruneError("no durations to summarize")
    for d in durations_ms:
        if not math.isfinite(d) or d < 0:
            raise AutopruneError(f"a measured duration is not a finite non-negative number: {d!r}")
    s = sorted(float(d) for d in durations_ms)
    med = statistics.median(s)
    p20, p80 = _quantile(s, 0.2), _quantile(s, 0.8)
    spread = (p80 - p20) / med if med > 0 else 0.0
    return TimingStats(median=med, p20=p20, p80=p80, mean=statistics.fmean(s), n=len(s), spread=spread,
                       method=method, **kw)


# ------------------------------------------------------------------------ clocks
@runtime_checkable
class Clock(Protocol):
    """Times calls: ``time_calls(fn, indices)`` runs ``fn(i)`` for each index, returns ms per call."""

    method: str

    def time_calls(self, fn: Callable[[int], Any], indices: Sequence[int]) -> list[float]: ...


class CudaEventClock:
    """One CUDA event pair per call; one synchronisation after the loop (no per-call host sync)."""

    method = METHOD_CUDA_EVENTS

    def __init__(self, device=None):
        import torch

        if not torch.cuda.is_available():
            raise AutopruneError("CudaEventClock needs a CUDA device; use WallClock (the CPU fallback)")
        self._torch = torch
        self.device = device

    def time_calls(self, fn, indices):
        torch = self._torch
        with torch.cuda.device(self.device) if self.device is not None else _nullcontext():
            starts = [torch.cuda.Event(enable_timing=True) for _ in indices]
            ends = [torch.cuda.Event(enable_timing=True) for _ in indices]
            for s, e, i in zip(starts, ends, indices):
                s.record()
                fn(i)
                e.record()
            torch.cuda.synchronize()
            return [s.elapsed_time(e) for s, e in zip(starts, ends)]


class WallClock:
    """``time.perf_counter`` around each call. ``sync`` (e.g. ``torch.cuda.synchronize``) runs
    before the start and after each call when work is asynchronous; on the CPU it is not needed."""

    def __init__(self, sync: Callable[[], None] | None = None, method: str = METHOD_WALL_CLOCK,
                 timer: Callable[[], float] = time.perf_counter):
        self.sync = sync
        self.method = method
        self._timer = timer

    def time_calls(self, fn, indices):
        out = []
        for i in indices:
            if self.sync is not None:
                self.sync()
            t0 = self._timer()
            fn(i)
            if self.sync is not None:
                self.sync()
            out.append((self._timer() - t0) * 1e3)
        return out


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def default_clock(device=None) -> Clock:
    """CUDA events when ``device`` is (or defaults to) a CUDA device, else the wall clock."""
    import torch

    dev = None if device is None else torch.device(device)
    if torch.cuda.is_available() and (dev is None or dev.type == "cuda"):
        return CudaEventClock(dev)
    return WallClock()


def rotation_count(bytes_per_set: int, l2_bytes: int | None = None, max_sets: int = 16) -> int:
    """How many input sets to rotate among so that consecutive calls do not hit the L2 cache.

    Inputs twice the L2 size or larger need no rotation; smaller ones rotate among enough
    sets to cover twice the L2 (at most ``max_sets``). ``l2_bytes`` defaults to the present
    CUDA device's L2 (50 MB on an H100), or 50 MB without one.
    """
    if l2_bytes is None:
        l2_bytes = 50 * 2**20
        try:
            import torch

            if torch.cuda.is_available():
                l2_bytes = int(getattr(torch.cuda.get_device_properties(torch.cuda.current_device()),
                                       "L2_cache_size", l2_bytes)) or l2_bytes
        except Exception:  # pragma: no cover - a broken driver leaves the default
            pass
    if bytes_per_set <= 0:
        return 1
    return int(max(1, min(max_sets, math.ceil(2 * l2_bytes / bytes_per_set))))


# ------------------------------------------------------------------------- timer
def time_fn(
    fn: Callable[..., Any],
    *,
    rotations: int | None = None,
    clock: Clock | None = None,
    monitor: Monitor | None = None,
    energy: bool = False,
    warmup_ms: float = 25.0,
    rep_ms: float = 100.0,
    min_reps: int = 5,
    max_reps: int = 1000,
    estimate_calls: int = 3,
    max_spread: float = DEFAULT_MAX_SPREAD,
    retries: int = 2,
    repeats: int = 1,
    device=None,
) -> TimingStats:
    """Time ``fn`` and return :class:`TimingStats` (ms per call).

    ``rotations``: ``None`` calls ``fn()``; ``k`` calls ``fn(i)`` with ``i`` cycling over
    ``0..k-1`` (rotate among ``k`` input sets so that inputs smaller than the L2 cache are
    not served from it; see :func:`rotation_count`).

    Counts are derived as in triton's ``do_bench``: after one first call (compilation,
    autotuning) ``estimate_calls`` calls give an estimate ``t``; then
    ``ceil(warmup_ms / t)`` warm-up calls and ``clamp(ceil(rep_ms / t), min_reps, max_reps)``
    timed calls. If the spread exceeds ``max_spread`` or the monitor reports a thermal or
    hardware slowdown, the timed calls are repeated up to ``retries`` more times; the
    attempt with the smallest spread is kept and what is still wrong is in ``flags``.
    ``repeats`` > 1 runs the timed calls at least that many times; the medians of the last
    ``repeats`` attempts must then lie within ``max_spread`` of each other too (else up to
    ``retries`` more attempts, then the flag ``noisy-repeats``); see ``repeat_spread``.
    With ``energy=True`` and a monitor, an energy window follows the timing.

    ``clock`` defaults to CUDA events on a CUDA device and the wall clock otherwise (the
    result's ``method`` says which).
    """
    for name, v in (("warmup_ms", warmup_ms), ("rep_ms", rep_ms), ("max_spread", max_spread)):
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise AutopruneError(f"time_fn: {name} must be a finite number >= 0, got {v!r}")
    for name, v in (("min_reps", min_reps), ("max_reps", max_reps), ("estimate_calls", estimate_calls)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise AutopruneError(f"time_fn: {name} must be an integer >= 1, got {v!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise AutopruneError(f"time_fn: repeats must be an integer >= 1, got {repeats!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise AutopruneError(f"time_fn: retries must be an integer >= 0, got {retries!r}")
    if min_reps > max_reps:
        raise AutopruneError(f"time_fn: min_reps ({min_reps}) > max_reps ({max_reps})")
    if rotations is not None and (isinstance(rotations, bool) or not isinstance(rotations, int) or rotations < 1):
        raise AutopruneError(f"time_fn: rotations must be None or an integer >= 1, got {rotations!r}")

    clock = clock if clock is not None else default_clock(device)
    call = (lambda i: fn()) if rotations is None else (lambda i: fn(i % rotations))
    counter = [0]

    def indices(k: int) -> list[int]:
        start = counter[0]
        counter[0] += k
        return list(range(start, start + k))

    clock.time_calls(call, indices(1))  # first call: compilation, autotuning, allocations
    est = statistics.median(clock.time_calls(call, indices(estimate_calls)))
    est = max(est, 1e-6)
    n_warm = max(1, math.ceil(warmup_ms / est)) if warmup_ms > 0 else 0
    n_rep = min(max_reps, max(min_reps, math.ceil(rep_ms / est)))
    if n_warm:
        clock.time_calls(call, indices(min(n_warm, max_reps)))

    # Rank attempts by (slowdown seen, spread): a clean attempt beats a slowed-down one.
    tried = []
    repeat_spread = None  # the best window of `repeats` consecutive attempts
    for attempt in range(repeats + retries):
        stats = summarize(clock.time_calls(call, indices(n_rep)), clock.method)
        sample = monitor.snapshot() if monitor is not None else None
        slowdown = sample is not None and sample.slowdown
        tried.append((slowdown, stats.spread, attempt, stats, sample))
        if repeats > 1 and len(tried) >= repeats:
            window = _relative_range([t[3].median for t in tried[-repeats:]])
            repeat_spread = window if repeat_spread is None else min(repeat_spread, window)
        agree = repeat_spread is None or repeat_spread <= max_spread
        if len(tried) >= repeats and stats.spread <= max_spread and not slowdown and agree:
            break
    attempts = len(tried)
    _, _, _, best, best_sample = min(tried, key=lambda t: t[:3])

    flags: list[str] = []
    notes: list[str] = []
    if best.spread > max_spread:
        flags.append("high-spread")
    if repeat_spread is not None and repeat_spread > max_spread:
        flags.append("noisy-repeats")
    if best_sample is not None:
        if best_sample.slowdown:
            flags.append("clock-slowdown")
        if best_sample.power_capped:
            flags.append("power-capped")
        if not best_sample.available:
            flags.append("monitor-unavailable")
            if best_sample.note:
                notes.append(best_sample.note)
    if clock.method == METHOD_WALL_CLOCK:
        notes.append("timed with the wall clock (CPU fallback), not CUDA events")

    final_sample = best_sample
    if energy and monitor is not None:
        def run(k: int) -> None:
            clock.time_calls(call, indices(k))

        window = monitor.energy_window(run, best.median)
        if window.available and best_sample is not None:
            reasons = tuple(sorted(set(window.clock_event_reasons) | set(best_sample.clock_event_reasons)))
            window = replace(window, clock_event_reasons=reasons)
        final_sample = window
        if window.note and window.note not in notes:
            notes.append(window.note)
    return replace(best, attempts=attempts, flags=tuple(flags), monitor=final_sample, notes=tuple(notes),
                   repeat_spread=repeat_spread)


def _relative_range(values: Sequence[float]) -> float:
    """``(max − min) / median``: how far apart repeated medians lie (0 for a zero median)."""
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med > 0 else 0.0
