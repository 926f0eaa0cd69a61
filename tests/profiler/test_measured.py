"""Measured latency: a LatencySource that times each schedule on the present device."""

import torch

from autoprune.profiler.measured import MeasuredLatency
from autoprune.schedule import Schedule

QUICK = {"rep_ms": 1.0, "warmup_ms": 0.0, "min_reps": 2, "max_reps": 3, "retries": 0, "estimate_calls": 1}


def test_measured_latency_on_the_cpu_is_a_cpu_measurement():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from tiny_models import tiny_nemotron_h

    model = tiny_nemotron_h()
    L, V = 40, 24
    x = torch.randn(1, L, model.config.hidden_size)
    mask = torch.zeros(1, L, dtype=torch.bool)
    mask[:, 4:4 + V] = True
    ml = MeasuredLatency(model, x, mask, timer_kw=QUICK)
    est = ml.estimate(Schedule(keep=(1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25)))
    assert est.source == "cpu-measured" and est.gpu == "cpu"
    assert est.latency_ms > 0 and est.energy_j is None


def test_the_compiled_stack_times_the_serving_runner_and_a_bad_stack_is_refused(monkeypatch):
    import sys
    from pathlib import Path

    import pytest

    from autoprune import ConfigError
    from autoprune.serving import ReducedPrefill

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from tiny_models import tiny_nemotron_h

    model = tiny_nemotron_h()
    L, V = 40, 24
    x = torch.randn(2, L, model.config.hidden_size)
    mask = torch.zeros(1, L, dtype=torch.bool)
    mask[:, 4:4 + V] = True
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
