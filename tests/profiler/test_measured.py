"""Measured latency: a LatencySource that times each schedule on the present device."""

import torch

from autoprune.profiler.measured import MeasuredLatency
from autoprune.schedule import Schedule

QUICK = {"rep_ms": 1.0, "warmup_ms": 0.0, "min_reps": 2, "max_reps": 3, "retries": 0, "estimate_calls": 1}


def test_measured_latency_on_the_cpu_is_a_cpu_measurement():
    ml = _tiny_measured(None)
    est = ml.estimate(Schedule(keep=(1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25)))
    assert est.source == "cpu-measured" and est.gpu == "cpu"
    assert est.latency_ms > 0 and est.energy_j is None


def test_the_compiled_stack_times_the_serving_runner_and_a_bad_stack_is_refused(monkeypatch):
    import pytest

    from autoprune import ConfigError
    from autoprune.serving import ReducedPrefill

    model, x, mask = _tiny_inputs(batch=2)
    calls = []
    real_call = ReducedPrefill.__call__

    def spy(self, batch):
        calls.append((self.schedule is None, batch.batch_size))
        return real_call(self, batch)

    monkeypatch.setattr(ReducedPrefill, "__call__", spy)
    ml = MeasuredLatency(model, x, mask, timer_kw=QUICK, stack="compiled")
    est = ml.estimate(Schedule(keep=(1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25)))
    assert est.latency_ms > 0 and est.source == "cpu-measured"
    assert (True, 2) in calls and (False, 2) in calls  # the baseline and the schedule, both through the runner
    with pytest.raises(ConfigError, match="--stack"):
        MeasuredLatency(model, x, mask, stack="fast")


class DriftingWallClock:
    """A wall clock on a machine whose load grows: every batch of calls is 30% slower than the last."""

    from autoprune.profiler.timing import METHOD_WALL_CLOCK as method

    def __init__(self):
        self.batches = 0

    def time_calls(self, fn, indices):
        self.batches += 1
        for i in indices:
            fn(i)
        return [1.3 ** self.batches] * len(indices)


def _tiny_inputs(batch: int = 1):
    """A tiny NemotronH, ``batch`` sequences of 40 embeddings, 24 of them visual."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from tiny_models import tiny_nemotron_h

    model = tiny_nemotron_h()
    L, V = 40, 24
    x = torch.randn(batch, L, model.config.hidden_size)
    mask = torch.zeros(1, L, dtype=torch.bool)
    mask[:, 4:4 + V] = True
    return model, x, mask


def _tiny_measured(clock, **timer_kw):
    return MeasuredLatency(*_tiny_inputs(), clock=clock, timer_kw={**QUICK, **timer_kw})


def test_cpu_measurements_are_repeated_and_a_drifting_one_is_flagged_noisy():
    from autoprune.profiler.measured import WALL_CLOCK_REPEATS

    est = _tiny_measured(DriftingWallClock(), retries=1).estimate(Schedule(keep=(1.0,) * 4 + (0.5,) * 4))
    assert WALL_CLOCK_REPEATS > 1
    assert "noisy-repeats" in est.flags and est.repeat_spread > 0.5
    assert est.to_dict()["repeat_spread"] == est.repeat_spread


def test_repeats_can_be_set_by_the_timer_options():
    clock = DriftingWallClock()
    est = _tiny_measured(clock, repeats=1).estimate(Schedule(keep=(1.0,) * 4 + (0.5,) * 4))
    assert est.repeat_spread is None and "noisy-repeats" not in est.flags


def test_with_timer_gives_the_same_measurement_with_other_timer_options():
    ml = _tiny_measured(DriftingWallClock())
    once = ml.with_timer(repeats=1)
    assert once.model is ml.model and once.inputs_embeds is ml.inputs_embeds
    assert once.timer_kw["repeats"] == 1 and ml.timer_kw["repeats"] > 1
    assert once.estimate(Schedule(keep=(1.0,) * 4 + (0.5,) * 4)).repeat_spread is None
