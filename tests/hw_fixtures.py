"""Shared helpers for the hardware-awareness tests: a tiny shape, fakes for NVML and clocks."""

from __future__ import annotations

import dataclasses

from autoprune.cost.profile_table import ProfileTable, Series
from autoprune.cost.shapes import ModelShape
from autoprune.profiler.timing import METHOD_CUDA_EVENTS

# A NemotronH-family shape small enough to build and time on a 2-core CPU in milliseconds.
TINY = ModelShape(
    name="tiny-hw", family="nemotron_h", layer_kinds="M-M*-M-", hidden_size=32, num_attention_heads=4,
    num_kv_heads=2, head_dim=8, mamba_num_heads=4, mamba_head_dim=8, n_groups=2, ssm_state_size=8,
    conv_kernel=4, mlp_intermediate_size=48, vocab_size=64, chunk_size=16, dtype="float32",
)
TINY_BF16 = dataclasses.replace(TINY, dtype="bfloat16")


def linear_table(shape, gpu="h100-sxm5-80gb", per_token=None, tokens=(64, 128, 256, 512, 1024, 2048),
                 scoring=0.001, gather=0.0005, head=0.25, method=METHOD_CUDA_EVENTS, query_tokens=64):
    """A table whose every series is ``c · n`` (head: constant), so sums can be checked by hand."""
    per_token = per_token or {"mamba": 0.01, "attention": 0.02, "mlp": 0.005, "moe": 0.03}
    names = {"M": "mamba", "*": "attention", "-": "mlp", "E": "moe"}
    layers = {names[k]: Series(tokens, [per_token[names[k]] * n for n in tokens]) for k in set(shape.layer_kinds)}
    sc = {k: Series(tokens, [scoring * n for n in tokens]) for k in ("attention", "mamba", "mamba_decay")}
    return ProfileTable(gpu=gpu, shape=shape, method=method, layers=layers, scoring=sc,
                        gather=Series(tokens, [gather * n for n in tokens]),
                        head=Series(tokens, [head] * len(tokens)), prefix_tokens=32, query_tokens=query_tokens)


class FakeNvmlError(Exception):
    pass


class FakeNvml:
    """Stands in for ``pynvml``: a scripted energy counter (mJ) and clock-event reason masks."""

    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2

    def __init__(self, name="NVIDIA H100 80GB HBM3", energy_step_mj=1000, reasons=(0,), fail_init=False):
        self.name = name
        self.energy_mj = 0
        self.energy_step_mj = energy_step_mj
        self.reasons = list(reasons)
        self.fail_init = fail_init
        self.inits = 0
        self.shutdowns = 0

    def nvmlInit(self):
        if self.fail_init:
            raise FakeNvmlError("Driver Not Loaded")
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("handle", i)

    def nvmlDeviceGetName(self, h):
        return self.name

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self.energy_mj += self.energy_step_mj
        return self.energy_mj

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return self.reasons.pop(0) if len(self.reasons) > 1 else self.reasons[0]

    def nvmlDeviceGetClockInfo(self, h, which):
        return 1980 if which == self.NVML_CLOCK_SM else 2619


class ScriptedClock:
    """A clock that runs ``fn`` and returns scripted durations: ``script(call_index) -> ms``."""

    method = METHOD_CUDA_EVENTS

    def __init__(self, script):
        self.script = script
        self.calls = 0
        self.seen: list[int] = []

    def time_calls(self, fn, indices):
        out = []
        for i in indices:
            fn(i)
            self.seen.append(i)
            out.append(self.script(self.calls))
            self.calls += 1
        return out
