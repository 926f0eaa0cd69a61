"""Watching the GPU while work runs: NVML energy, power, clocks and clock-event reasons.

A **monitor** reports what the card did during a measurement: :class:`GpuMonitor` (NVML
through nvidia-ml-py, module ``pynvml``) or :class:`NullMonitor`. Use one as a context
manager around your own work, or pass it to :func:`autoprune.profiler.timing.time_fn`,
which samples clock-event reasons after each attempt (a thermal or hardware slowdown
triggers a re-measurement) and runs an energy window. Energy comes from NVML's energy
counter over a window of at least ``min_window_s`` (the counter updates every 20–100 ms,
so shorter windows are noise).

Nothing here imports ``pynvml`` or touches CUDA at import time; without NVML nothing raises,
every sample says why it is empty (``note``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..errors import AutopruneError

__all__ = [
    "POWER_CAP_REASONS",
    "SLOWDOWN_REASONS",
    "GpuMonitor",
    "Monitor",
    "MonitorSample",
    "NullMonitor",
    "decode_clock_event_reasons",
]

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



# ----------------------------------------------------------------------- samples
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


# ---------------------------------------------------------------------- monitors
@runtime_checkable
class Monitor(Protocol):
    """What :func:`~autoprune.profiler.timing.time_fn` asks of a monitor."""

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

    or pass it to :func:`~autoprune.profiler.timing.time_fn` (``monitor=``), which samples reasons after each attempt
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
