"""Measured latency: a ``LatencySource`` that times each schedule on the present device (``--measure``).

The counterpart of the prediction in :mod:`autoprune.cost.latency`: same
:class:`~autoprune.interfaces.LatencyEstimate`, ``source`` ``measured`` (CUDA events) or
``cpu-measured`` (the wall clock, a fallback).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..cost.gpus import CPU
from ..errors import ConfigError
from ..interfaces import LatencyEstimate
from ..schedule import Schedule
from .timing import time_fn

__all__ = ["MeasuredLatency", "STACKS", "WALL_CLOCK_REPEATS"]

# What runs the timed prefills: the eager runtime (``autoprune.reduce`` around the model), or the
# serving runner (``autoprune.ReducedPrefill``: compiled hook-free blocks, Triton conv, CUDA graphs),
# so that a search picks schedules for the stack they will be served on.
STACKS = ("eager", "compiled")
# A wall clock on a shared CPU drifts over seconds (other processes come and go): each schedule is
# timed this many times and the repeats must agree (``time_fn(repeats=...)``), else it is flagged.
WALL_CLOCK_REPEATS = 3


class MeasuredLatency:
    """``LatencySource`` that runs each schedule on the present device (``--measure``).

    Times ``model(inputs_embeds=..., **forward_kwargs)`` under :func:`autoprune.reduce`
    with :func:`autoprune.profiler.timing.time_fn` (CUDA events on a GPU, the wall clock on the
    CPU — the estimate's ``source`` is then ``cpu-measured``) and, with a monitor, NVML
    energy per prefill. The unreduced baseline is measured once and cached. On the CPU every
    measurement is repeated :data:`WALL_CLOCK_REPEATS` times (unless ``timer_kw`` sets
    ``repeats``); the estimate's ``repeat_spread`` and flags (``noisy-repeats``) say how well the
    repeats agreed.

    ``stack="compiled"`` times :class:`autoprune.ReducedPrefill` instead (the same runner a server
    uses: compiled hook-free blocks, the Triton causal conv and a CUDA graph per schedule on a GPU),
    for the baseline (unreduced) and for every schedule.
    """

    def __init__(self, model, inputs_embeds, visual_mask, *, gpu: str | None = None, query_mask=None,
                 clock=None, monitor=None, energy: bool = True, timer_kw: Mapping[str, Any] | None = None,
                 use_kernels: bool | None = None, forward_kwargs: Mapping[str, Any] | None = None,
                 stack: str = "eager"):
        import torch

        if stack not in STACKS:
            raise ConfigError(f"--stack must be one of {', '.join(STACKS)}, got {stack!r}")
        self.stack = stack

        self.model = model
        self.inputs_embeds = inputs_embeds
        self.visual_mask = visual_mask
        self.query_mask = query_mask
        self.on_cuda = inputs_embeds.is_cuda
        if gpu is None:
            gpu = CPU.id
            if self.on_cuda:
                try:
                    from ..cost.gpus import detect

                    gpu = detect().id
                except Exception:
                    gpu = torch.cuda.get_device_name(inputs_embeds.device)
        self.gpu = gpu
        self.clock = clock
        self.monitor = monitor
        self.energy = energy and monitor is not None
        self.timer_kw = dict(timer_kw or {})
        if not self.on_cuda:
            self.timer_kw.setdefault("repeats", WALL_CLOCK_REPEATS)
        self.use_kernels = use_kernels
        self.forward_kwargs = {"use_cache": False, "logits_to_keep": 1} if forward_kwargs is None else dict(
            forward_kwargs)
        self._baseline = None

    def with_timer(self, **timer_kw) -> MeasuredLatency:
        """The same measurement (model, inputs, clock, cached baseline) with other timer options — e.g.
        ``repeats=1``: a cheaper source to project candidates with, the repeated one deciding."""
        import copy

        other = copy.copy(self)
        other.timer_kw = {**self.timer_kw, **timer_kw}
        return other

    def _forward(self):
        import torch

        with torch.inference_mode():
            return self.model(inputs_embeds=self.inputs_embeds, **self.forward_kwargs)

    def _time(self, fn=None):
        return time_fn(fn or (lambda: self._forward()), clock=self.clock, monitor=self.monitor, energy=self.energy,
                       device=self.inputs_embeds.device, **self.timer_kw)

    def _time_runner(self, schedule: Schedule | None):
        """Time :class:`autoprune.ReducedPrefill` (``stack="compiled"``); its graphs are dropped after."""
        from ..serving import RaggedBatch, ReducedPrefill

        vm = self.visual_mask if self.visual_mask.dim() == 2 else self.visual_mask[None]
        x = self.inputs_embeds
        batch = RaggedBatch.from_rows(list(x), list(vm.expand(x.shape[0], -1)))
        if self.query_mask is not None:
            qm = self.query_mask if self.query_mask.dim() == 2 else self.query_mask[None]
            batch = RaggedBatch(inputs=batch.inputs, token_valid=batch.token_valid, visual_mask=batch.visual_mask,
                                query_mask=qm.expand(x.shape[0], -1).bool().cpu(), position_ids=batch.position_ids)
        runner = ReducedPrefill(self.model, schedule, use_cache=bool(self.forward_kwargs.get("use_cache", False)),
                                use_kernels=self.use_kernels)
        try:
            return self._time(lambda: runner(batch))
        finally:
            runner.clear()

    def baseline(self):
        """:class:`~autoprune.profiler.timing.TimingStats` of the unreduced model (cached)."""
        if self._baseline is None:
            self._baseline = self._time() if self.stack == "eager" else self._time_runner(None)
        return self._baseline

    def measure(self, schedule: Schedule):
        """:class:`~autoprune.profiler.timing.TimingStats` of the model reduced by ``schedule``."""
        from ..runtime import reduce

        if self.stack == "compiled":
            return self._time_runner(schedule)
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
            flags=tuple(stats.flags), repeat_spread=stats.repeat_spread,
        )
