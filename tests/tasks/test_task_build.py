"""build_evaluator: the search's way to the demo model, its data and its latency shape."""

import pytest

from autoprune.errors import ConfigError
from autoprune.schedule import Schedule, ScorerConfig
from autoprune.cost.shapes import NEMOTRON_H_8B
from autoprune.tasks import build_evaluator
from autoprune.tasks.build import DEMO_LATENCY_LAYOUT


@pytest.fixture(scope="module")
def ev():
    return build_evaluator(model="demo", n=16)


def test_demo_evaluator_carries_the_latency_shape_and_layout(ev):
    assert ev.metric == "accuracy" and ev.num_visual == 256 and len(ev.data) == 16
    assert ev.shape.layer_kinds == ev.model.config.layer_kinds
    assert ev.shape.same_widths(NEMOTRON_H_8B) and ev.shape.name != NEMOTRON_H_8B.name
    assert ev.layout == DEMO_LATENCY_LAYOUT


def test_the_all_ones_schedule_scores_the_baseline(ev):
    r = ev.evaluate(Schedule.identity(ev.signature.num_layers))
    assert r.score == ev.baseline.score and r.extra["delta"] == 0.0


def test_fidelity_task_needs_no_labels():
    ev = build_evaluator(model="demo", task="fidelity", n=8)
    assert ev.metric == "fidelity"
    r = ev.evaluate(Schedule.identity(ev.signature.num_layers))
    assert r.score == 1.0 and r.extra["kl"] == 0.0
    red = ev.evaluate(Schedule(keep=(1.0, 1.0) + (0.05,) * 10, min_tokens=1, scorer=ScorerConfig(w_mamba=0.0)))
    assert red.extra["kl"] > 0.0


def test_a_jsonl_task_is_read_through_the_demo_vocabulary(tmp_path):
    from autoprune.demo import video as V
    from autoprune.demo.task import export_jsonl

    path = export_jsonl(V.make_split("test", 4, 8), tmp_path)
    ev = build_evaluator(model="demo", task=str(path))
    assert ev.metric == "accuracy" and len(ev.data) == 4 and ev.num_visual == 32


@pytest.mark.parametrize("kw, message", [
    ({"model": "llama"}, "unknown model 'llama'"),
    ({"model": "demo", "colour": 3}, "unknown demo option(s) ['colour']"),
    ({"model": "demo", "task": "data.csv"}, "a .jsonl file"),
])
def test_bad_arguments_name_what_is_wrong(kw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]").replace(".", r"\.")):
        build_evaluator(**kw)


def test_measuring_on_the_cpu_times_the_demo_itself_and_says_it_is_a_fallback(ev):
    from autoprune.tasks.build import measured_latency

    ml = measured_latency(ev, gpu="cpu")
    ml.timer_kw = {"min_reps": 2, "max_reps": 2, "rep_ms": 0.0, "warmup_ms": 0.0, "estimate_calls": 1}
    est = ml.estimate(Schedule(keep=(1.0, 1.0) + (0.1,) * 10, min_tokens=4, scorer=ScorerConfig(w_mamba=0.0),
                               model=ev.signature))
    assert est.source == "cpu-measured" and est.gpu == "cpu" and est.energy_j is None
    assert est.latency_ms > 0 and est.baseline_ms > 0
