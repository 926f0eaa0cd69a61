"""The shipped demo weights: what the package promises about them, checked on fresh test videos."""

import pytest
import torch

from autoprune.analysis import schedule_family
from autoprune.demo import video as V
from autoprune.demo.model import load, read_metadata
from autoprune.demo.task import default_evaluator
from autoprune.schedule import ScorerConfig


@pytest.fixture(scope="module")
def ev():
    torch.manual_seed(0)
    return default_evaluator(load(), n=128, start=5000)


def test_unreduced_accuracy_is_high_on_every_family(ev):
    base = ev.baseline
    assert base.score >= 0.9
    assert set(base.per_family) == set(V.FAMILIES)
    assert min(base.per_family.values()) >= 0.8


def test_a_query_agnostic_selection_at_quarter_keep_loses_at_least_20_points(ev):
    s = schedule_family("uniform", 0.25, ev.signature, ev.num_visual, scorer=ScorerConfig(selector="random"))
    assert ev.evaluate(s).extra["delta"] <= -0.20


def test_the_metadata_says_how_the_weights_were_made():
    meta = read_metadata()["metadata"]
    assert meta["steps"] > 0 and meta["train_seconds"] > 0 and "recipe" in meta and "base" in meta
    assert meta["measure"]["test"]["accuracy"] >= 0.9
