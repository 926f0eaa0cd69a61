"""Timing a callable and watching the GPU while it runs.

Two pieces, both injectable so that tests (and the search) can pass fakes:

- a **clock** turns "run ``fn`` for these input indices" into per-call durations in ms:
  :class:`CudaEventClock` (one CUDA event pair per call, one synchronisation after the
  loop) or :class:`WallClock` (``time.perf_counter``; the CPU fallback);
- a **monitor** reports clocks, clock-event reasons and energy: :class:`GpuMonitor`
  (NVML through nvidia-ml-py, module ``pynvml``) or :class:`NullMonitor`.

:func:`time_fn` is the timer (triton's ``do_bench`` pattern): one first call (compilation,
autotuning, allocator warm-up), a quick estimate, warm-up and repeat counts derived from
it, then the timed calls; a measurement whose spread is too large or during which the GPU
slowed down (thermal or hardware slowdown) is measured again a bounded number of times and
otherwise flagged. Energy comes from NVML's energy counter over a window of at least
``min_window_s`` (the counter updates every 20–100 ms, so shorter windows are noise).

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

__all__ = [
    "METHOD_CUDA_EVENTS",
    "METHOD_WALL_CLOCK",
    "TimingStats",
    "MonitorSample",
    "Clock",
    "CudaEventClock",
    "WallClock",
    "default_clock",
    "Monitor",
    "GpuMonitor",
    "NullMonitor",
    "time_fn",
    "summarize",
    "rotation_count",
    "decode_clock_event_reasons",
]

METHOD_CUDA_EVENTS = "cuda-events"
METHOD_WALL_CLOCK = "wall-clock (CPU fallback)"
METHODS = (METHOD_CUDA_EVENTS, METHOD_WALL_CLOCK)

# NVML clock-event reason bits (nvml.h, ``nvmlClocksEventReason*``); used when the
# installed bindings lack a constant.
_REASON_BITS = {
    "gpu_idle": 0x1,
    "applications_clocks_setting": 0x2,
    "sw_power_cap": 0x4,
    "hw_slowdown": 0x8,
    "sync_boost": 0x10,
    "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40,
    "hw_power_brake_slowdown": 0x80,
    "display_clock_setting": 0x100,
}
# Reasons that mean the card ran slower than it normally would: re-measure, then flag.
SLOWDOWN_REASONS = frozenset({"hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
                              "hw_power_brake_slowdown"})
# The software power cap is the card running at its power limit: for large GEMMs on
# an H100 that is the steady state, so measuring again does not remove it and the time
# measured under it *is* the card's sustained speed. Recorded and flagged, not retried.
POWER_CAP_REASONS = frozenset({"sw_power_cap"})


def decode_clock_event_reasons(mask: int) -> tuple[str, ...]:
    """Names of the NVML clock-event reason bits set in ``mask`` (unknown bits as hex)."""
    names = [name for name, bit in _REASON_BITS.items() if mask & bit]
    rest = mask & ~sum(_REASON_BITS.values())
    if rest:
        names.append(f"unknown_0x{rest:x}")
    return tuple(names)


# ----------------------------------------------------------------------- results
@dataclass(frozen=True)
class MonitorSample:
    """What a monitor saw. ``available=False`` ⇒ ``note`` says why (no NVML, no driver, ...).

    ``energy_j`` is the counter delta over the whole window (``window_s``, ``calls``
    calls); ``energy_per_call_j`` divides it. ``clock_event_reasons`` is the union of the
    reasons sampled during the window.
    """

    available: bool
    note: str | None = None
    device_name: str | None = None
    window_s: float | None = None
    calls: int = 0
    energy_j: float | None = None
    avg_power_w: float | None = None
    peak_memory_bytes: int | None = None
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    clock_event_reasons: tuple[str, ...] = ()

    def __post_init__(self):
        if self.calls < 0:
            raise AutopruneError(f"MonitorSample.calls must be >= 0, got {self.calls!r}")
        if self.energy_j is not None and not (math.isfinite(self.energy_j) and self.energy_j >= 0):
            raise AutopruneError(f"MonitorSample.energy_j must be a finite number >= 0, got {self.energy_j!r}")

    @property
    def slowdown(self) -> bool:
        return bool(SLOWDOWN_REASONS & set(self.clock_event_reasons))

    @property
    def power_capped(self) -> bool:
        return bool(POWER_CAP_REASONS & set(self.clock_event_reasons))

    @property
    def energy_per_call_j(self) -> float | None:
        if self.energy_j is None or self.calls <= 0:
            return None
        return self.energy_j / self.calls

    def to_dict(self) -> dict:
        return {
            "available": self.available, "note": self.note, "device_name": self.device_name,
            "window_s": self.window_s, "calls": self.calls, "energy_j": self.energy_j,
            "energy_per_call_j": self.energy_per_call_j, "avg_power_w": self.avg_power_w,
            "peak_memory_bytes": self.peak_memory_bytes, "sm_clock_mhz": self.sm_clock_mhz,
            "mem_clock_mhz": self.mem_clock_mhz, "clock_event_reasons": list(self.clock_event_reasons),
        }


@dataclass(frozen=True)
class TimingStats:
    """Per-call time of a callable, in ms.

    ``spread = (p80 − p20) / median``. ``method`` is ``cuda-events`` or
    ``wall-clock (CPU fallback)``. ``attempts`` counts measurements (1 + re-measurements);
    ``flags`` says what was still wrong after the last one (``high-spread``,
    ``clock-slowdown``, ``power-capped``, ``monitor-unavailable``). ``monitor`` holds the
    monitor's view (reasons, clocks; energy when an energy window was run).
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


# ---------------------------------------------------------------------- monitors
@runtime_checkable
class Monitor(Protocol):
    """What :func:`time_fn` asks of a monitor."""

    def snapshot(self) -> MonitorSample:
        """Clocks and clock-event reasons now (no energy)."""
        ...

    def energy_window(self, run: Callable[[int], None], per_call_ms: float) -> MonitorSample:
        """Call ``run(k)`` (k calls) until at least the minimum window has passed; report energy."""
        ...


class NullMonitor:
    """Monitor that sees nothing; every sample says why (``note``)."""

    def __init__(self, note: str = "no monitor"):
        self.note = note

    def snapshot(self) -> MonitorSample:
        return MonitorSample(available=False, note=self.note)

    def energy_window(self, run, per_call_ms) -> MonitorSample:
        return MonitorSample(available=False, note=self.note)


class GpuMonitor:
    """NVML view of one GPU: energy counter, power, peak memory, clocks, clock-event reasons.

    Use as a context manager around work you run yourself::

        with GpuMonitor() as mon:
            for _ in range(k):
                step()
            mon.add_calls(k)
        mon.result.energy_per_call_j

    or pass it to :func:`time_fn` (``monitor=``), which samples reasons after each attempt
    and, with ``energy=True``, runs an energy window of at least ``min_window_s``.

    Without NVML (module missing, no driver, unsupported query) nothing raises: the
    sample has ``available=False`` (or ``None`` fields) and a ``note`` saying why.
    ``nvml`` may be a stand-in module for tests; ``device`` is a CUDA device index.
    """

    def __init__(self, device: int | None = None, *, energy: bool = True, min_window_s: float = 1.0,
                 nvml: Any = None, max_window_calls: int = 100_000):
        if not (isinstance(min_window_s, (int, float)) and min_window_s >= 0):
            raise AutopruneError(f"GpuMonitor.min_window_s must be a number >= 0, got {min_window_s!r}")
        self.device = device
        self.energy = energy
        self.min_window_s = float(min_window_s)
        self.max_window_calls = max_window_calls
        self._nvml = nvml
        self._handle = None
        self._note: str | None = None
        self._initialised = False
        self.result: MonitorSample | None = None
        self._calls = 0
        self._reasons: set[str] = set()

    # -- NVML plumbing ------------------------------------------------------
    def _open(self) -> bool:
        if self._handle is not None:
            return True
        if self._note is not None:
            return False
        nvml = self._nvml
        if nvml is None:
            try:
                import pynvml as nvml  # nvidia-ml-py
            except ImportError as e:
                self._note = f"NVML unavailable: cannot import pynvml ({e}); install nvidia-ml-py"
                return False
            self._nvml = nvml
        try:
            nvml.nvmlInit()
            self._initialised = True
            self._handle = self._device_handle(nvml)
        except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self._note = f"NVML unavailable: {type(e).__name__}: {e}"
            self._close()
            return False
        return True

    def _device_handle(self, nvml):
        index = self.device
        uuid = None
        try:
            import torch

            if torch.cuda.is_available():
                if index is None:
                    index = torch.cuda.current_device()
                # CUDA_VISIBLE_DEVICES reorders devices: match by UUID where torch has it.
                u = getattr(torch.cuda.get_device_properties(index), "uuid", None)
                uuid = None if u is None else f"GPU-{u}"
        except Exception:
            pass
        if uuid is not None and hasattr(nvml, "nvmlDeviceGetHandleByUUID"):
            try:
                return nvml.nvmlDeviceGetHandleByUUID(uuid)
            except Exception:
                pass
        return nvml.nvmlDeviceGetHandleByIndex(index or 0)

    def close(self) -> None:
        """Release NVML (the handle stays open between samples: nvmlInit is not free)."""
        self._close()

    def __del__(self):
        try:
            self._close()
        except Exception:
            pass

    def _close(self):
        if self._initialised:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
        self._initialised = False
        self._handle = None

    def _query(self, name: str, *args):
        fn = getattr(self._nvml, name, None)
        if fn is None:
            return None
        try:
            return fn(self._handle, *args)
        except Exception:
            return None

    def _reasons_now(self) -> set[str]:
        mask = self._query("nvmlDeviceGetCurrentClocksEventReasons")
        if mask is None:  # older bindings: the deprecated "throttle" name
            mask = self._query("nvmlDeviceGetCurrentClocksThrottleReasons")
        return set() if mask is None else set(decode_clock_event_reasons(int(mask)))

    def _clocks(self) -> tuple[int | None, int | None]:
        sm = mem = None
        nvml = self._nvml
        if hasattr(nvml, "NVML_CLOCK_SM"):
            sm = self._query("nvmlDeviceGetClockInfo", nvml.NVML_CLOCK_SM)
            mem = self._query("nvmlDeviceGetClockInfo", nvml.NVML_CLOCK_MEM)
        return sm, mem

    def _name(self) -> str | None:
        n = self._query("nvmlDeviceGetName")
        return n.decode() if isinstance(n, bytes) else n

    @staticmethod
    def _peak_memory(reset: bool) -> int | None:
        try:
            import torch

            if not torch.cuda.is_available():
                return None
            if reset:
                torch.cuda.reset_peak_memory_stats()
                return None
            return int(torch.cuda.max_memory_allocated())
        except Exception:
            return None

    # -- context manager ----------------------------------------------------
    def __enter__(self) -> GpuMonitor:
        self.result = None
        self._calls = 0
        self._reasons = set()
        self._ok = self._open()
        self._peak_memory(reset=True)
        self._e0 = self._query("nvmlDeviceGetTotalEnergyConsumption") if self._ok and self.energy else None
        if self._ok:
            self._reasons |= self._reasons_now()
        self._t0 = time.perf_counter()
        return self

    def add_calls(self, k: int) -> None:
        """Tell the monitor how many calls ran inside the window (energy per call = delta / calls)."""
        self._calls += int(k)

    def sample(self) -> None:
        """Sample the clock-event reasons now (they are OR-ed over the window)."""
        if getattr(self, "_ok", False):
            self._reasons |= self._reasons_now()

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self._t0

    def __exit__(self, *exc) -> bool:
        window = time.perf_counter() - self._t0
        peak = self._peak_memory(reset=False)
        if not self._ok:
            self.result = MonitorSample(available=False, note=self._note, window_s=window, calls=self._calls,
                                        peak_memory_bytes=peak)
            return False
        self._reasons |= self._reasons_now()
        sm, mem = self._clocks()
        energy = power = None
        note = None
        if self.energy:
            e1 = self._query("nvmlDeviceGetTotalEnergyConsumption")
            if self._e0 is None or e1 is None:
                note = "energy counter not supported on this GPU/driver"
            else:
                energy = max(0.0, (int(e1) - int(self._e0)) / 1e3)  # mJ -> J
                power = energy / window if window > 0 else None
                if window < self.min_window_s:
                    note = (f"energy window {window:.3f}s is shorter than {self.min_window_s:.1f}s: the counter "
                            "updates every 20-100 ms, so this energy is imprecise")
        self.result = MonitorSample(
            available=True, note=note, device_name=self._name(), window_s=window, calls=self._calls,
            energy_j=energy, avg_power_w=power, peak_memory_bytes=peak, sm_clock_mhz=sm, mem_clock_mhz=mem,
            clock_event_reasons=tuple(sorted(self._reasons)),
        )
        return False

    # -- Monitor protocol (used by time_fn) ---------------------------------
    def snapshot(self) -> MonitorSample:
        if not self._open():
            return MonitorSample(available=False, note=self._note)
        sm, mem = self._clocks()
        return MonitorSample(available=True, device_name=self._name(), sm_clock_mhz=sm, mem_clock_mhz=mem,
                             clock_event_reasons=tuple(sorted(self._reasons_now())))

    def energy_window(self, run: Callable[[int], None], per_call_ms: float) -> MonitorSample:
        """Run ``run(k)`` in chunks until ``min_window_s`` has passed (at least one call).

        Without NVML nothing is run (there would be nothing to read): the sample says why.
        """
        if not self._open():
            return MonitorSample(available=False, note=self._note)
        per_call_s = max(per_call_ms, 1e-6) / 1e3
        with self as mon:
            while True:
                remaining = self.min_window_s - mon.elapsed_s
                k = max(1, min(self.max_window_calls - mon._calls, math.ceil(remaining / per_call_s)))
                run(k)
                mon.add_calls(k)
                mon.sample()
                if mon.elapsed_s >= self.min_window_s or mon._calls >= self.max_window_calls:
                    break
        return self.result


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
    max_spread: float = 0.10,
    retries: int = 2,
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
    for attempt in range(1 + retries):
        stats = summarize(clock.time_calls(call, indices(n_rep)), clock.method)
        sample = monitor.snapshot() if monitor is not None else None
        slowdown = sample is not None and sample.slowdown
        tried.append((slowdown, stats.spread, attempt, stats, sample))
        if stats.spread <= max_spread and not slowdown:
            break
    attempts = len(tried)
    _, _, _, best, best_sample = min(tried, key=lambda t: t[:3])

    flags: list[str] = []
    notes: list[str] = []
    if best.spread > max_spread:
        flags.append("high-spread")
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
    return replace(best, attempts=attempts, flags=tuple(flags), monitor=final_sample, notes=tuple(notes))
