"""A schedule's plan for one sample: counts, prune points, evidence layers (pure Python)."""

import subprocess
import sys

import pytest

from autoprune.errors import ReductionInputError
from autoprune.plan import plan_reduction
from autoprune.schedule import Schedule, ScorerConfig


def test_importing_the_plan_does_not_import_torch():
    code = "import autoprune.plan, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_evidence_comes_from_the_window_of_mixer_layers_before_each_prune_point():
    sched = Schedule(keep=(1.0, 1.0, 1.0, 1.0, 0.5, 0.5), scorer=ScorerConfig(evidence_window=2))
    plan = plan_reduction(sched, "M-*M-M", num_visual=64)
    assert plan.counts == (64, 64, 64, 64, 32, 32) and plan.prune_layers == (4,)
    assert plan.evidence_layers == {2: "attention", 3: "mamba"}
    assert plan.mean_keep == pytest.approx(320 / 384)


def test_a_prune_point_without_an_evidence_layer_before_it_is_refused():
    sched = Schedule(keep=(1.0, 0.5, 0.5), scorer=ScorerConfig(w_mamba=0.0))
    with pytest.raises(ReductionInputError, match="no layer before it gives evidence"):
        plan_reduction(sched, "M-*", num_visual=64)
