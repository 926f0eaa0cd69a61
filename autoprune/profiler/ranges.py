"""Where a reduced prefill spends its time on autoprune's own work, read off ``torch.profiler``.

The runtime marks its work with ``torch.profiler.record_function`` ranges (no cost beyond a
dispatcher call when no profiler runs):

- :data:`EVIDENCE` — the language-aware score: recomputing what a mixer's evidence reads (q/k,
  the Mamba2 ``B, C, Δ``, the DeltaNet ``q, k, β, g``), the evidence kernel, the state update;
- :data:`SELECT` — choosing the kept tokens at a prune point (top-k / sort of the state);
- :data:`GATHER` — compacting the hidden states and the per-token bookkeeping to them.

:func:`range_breakdown` runs a callable under the profiler and sums, per range, the device time
of the kernels launched inside it (CPU time on a CPU run) — the profiler's own attribution of
kernels to the ops that launched them, not a difference of two noisy timings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["EVIDENCE", "GATHER", "RANGES", "SELECT", "RangeBreakdown", "range_breakdown"]

EVIDENCE = "autoprune::evidence"
SELECT = "autoprune::select"
GATHER = "autoprune::gather"
RANGES = (EVIDENCE, SELECT, GATHER)


@dataclass(frozen=True)
class RangeBreakdown:
    """Milliseconds per range over one call, and the call's total (``device``: cuda or cpu).

    ``total_ms`` is the device time of every kernel of the call (CPU: the profiled wall time of
    the outermost ops), so ``share(name)`` is that range's fraction of the call.
    """

    ms: dict
    calls: dict
    total_ms: float
    device: str

    def share(self, *names: str) -> float:
        return sum(self.ms.get(n, 0.0) for n in names) / self.total_ms if self.total_ms > 0 else float("nan")

    def to_dict(self) -> dict:
        return {"ms": dict(self.ms), "calls": dict(self.calls), "total_ms": self.total_ms, "device": self.device}


def range_breakdown(fn: Callable[[], object], *, cuda: bool | None = None) -> RangeBreakdown:
    """Run ``fn`` once under ``torch.profiler`` and attribute its time to :data:`RANGES`.

    On CUDA (default: when available) a range's time is the device time of the kernels its ops
    launched (``FunctionEvent.device_time_total``, children included) and the total is the
    device time of every kernel in the call; on the CPU both are CPU time. Nested ranges of
    the same name are counted once (the outermost).
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available() if cuda is None else cuda
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if cuda:
        torch.cuda.synchronize()
    with profile(activities=acts) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    events = prof.events()
    ms = {n: 0.0 for n in RANGES}
    calls = {n: 0 for n in RANGES}

    def own(e) -> float:
        return e.device_time_total if cuda else e.cpu_time_total

    for e in events:
        if e.name not in ms or e.device_type != DeviceType.CPU:
            continue
        parent, nested = e.cpu_parent, False
        while parent is not None:
            if parent.name == e.name:
                nested = True
                break
            parent = parent.cpu_parent
        if nested:
            continue
        ms[e.name] += own(e) / 1000.0
        calls[e.name] += 1
    if cuda:
        total = sum(k.duration for e in events for k in e.kernels) / 1000.0
    else:
        total = sum(e.cpu_time_total for e in events if e.cpu_parent is None) / 1000.0
    return RangeBreakdown(ms=ms, calls=calls, total_ms=total, device="cuda" if cuda else "cpu")
