"""The demo model source: the demo model, its evaluation sets and the latency shape of its schedules."""

import pytest

from autoprune.cost.gpus import CPU, resolve
from autoprune.cost.shapes import NEMOTRON_H_8B
from autoprune.demo.source import DEMO_LATENCY_LAYOUT, DemoSource, build_evaluator, load_setup, measured_latency
from autoprune.errors import ConfigError
from autoprune.interfaces import SourceRequest
from autoprune.models import check_request, get_model_source
from autoprune.schedule import Schedule, ScorerConfig


@pytest.fixture(scope="module")
def setup():
    return load_setup(n=16)


@pytest.fixture(scope="module")
def ev(setup):
    return setup.evaluator


def test_the_demo_registers_itself_as_a_model_source():
    assert isinstance(get_model_source("demo"), DemoSource)


def test_the_setup_carries_the_latency_shape_and_layout(setup, ev):
    assert ev.metric == "accuracy" and ev.num_visual == 256 and len(ev.data) == 16
    assert setup.shape.layer_kinds == setup.net.config.layer_kinds
    assert setup.shape.same_widths(NEMOTRON_H_8B) and setup.shape.name != NEMOTRON_H_8B.name
    assert setup.layout == DEMO_LATENCY_LAYOUT


def test_the_source_predicts_latency_of_the_latency_shape_on_the_requested_gpu():
    inputs = DemoSource().build(SourceRequest(gpu=resolve("a100"), options={"n": 8}))
    assert inputs.shape.name == "demo@nemotron-h-8b" and inputs.layout == DEMO_LATENCY_LAYOUT
    est = inputs.latency.estimate(Schedule.identity(inputs.signature.num_layers))
    assert est.source == "roofline" and est.gpu == "a100-sxm4-80gb"
    assert inputs.latency_info["shape"] == "demo@nemotron-h-8b"


def test_a_study_evaluates_a_mix_of_lengths_and_validates_on_disjoint_videos():
    inputs = DemoSource().build(SourceRequest(gpu=resolve("a100"), options={"n": 14, "validation_n": 7}))
    assert inputs.evaluated_visual == (256, 512, 1024)  # 64, 128 and 256 frames
    ev = inputs.evaluator
    assert [len(g) for g in ev.data.groups] == [8, 4, 2]  # the same number of visual tokens per length
    val = inputs.validation()
    assert len(val.data) == 7 and val.data.visual_counts == (256, 512, 1024)
    assert not set(ev.data.ids) & set(val.data.ids)
    r = val.evaluate(Schedule.identity(val.signature.num_layers))
    assert set(r.per_length) == {"256", "512", "1024"}


def test_split_counts_give_each_length_the_same_visual_tokens():
    from autoprune.demo.source import split_counts

    assert split_counts(224, (64, 128, 256)) == {64: 128, 128: 64, 256: 32}
    assert sum(split_counts(1536, (64, 128, 256)).values()) == 1536


def test_the_all_ones_schedule_scores_the_baseline(ev):
    r = ev.evaluate(Schedule.identity(ev.signature.num_layers))
    assert r.score == ev.baseline.score and r.extra["delta"] == 0.0


def test_fidelity_task_needs_no_labels():
    ev = build_evaluator("fidelity", n=8)
    assert ev.metric == "fidelity"
    r = ev.evaluate(Schedule.identity(ev.signature.num_layers))
    assert r.score == 1.0 and r.extra["kl"] == 0.0
    red = ev.evaluate(Schedule(keep=(1.0, 1.0) + (0.05,) * 10, min_tokens=1, scorer=ScorerConfig(w_mamba=0.0)))
    assert red.extra["kl"] > 0.0


def test_a_jsonl_task_is_read_through_the_demo_vocabulary(tmp_path):
    from autoprune.demo import video as V
    from autoprune.demo.task import export_jsonl

    path = export_jsonl(V.make_split("test", 4, 8), tmp_path)
    ev = build_evaluator(str(path))
    assert ev.metric == "accuracy" and len(ev.data) == 4 and ev.num_visual == 32


@pytest.mark.parametrize("task, options, message", [
    (None, {"colour": 3}, "unknown option(s) ['colour'] for model 'demo'"),
    ("data.csv", {}, "a .jsonl file"),
    (None, {"prefix_cache_mb": -1}, "prefix_cache_mb must be >= 0"),
])
def test_bad_requests_are_refused_before_the_model_loads(task, options, message):
    request = SourceRequest(gpu=resolve("a100"), task=task, options=options)
    with pytest.raises(ConfigError) as e:
        check_request(DemoSource(), request)
    assert message in str(e.value)


def test_measuring_on_the_cpu_times_the_demo_itself_and_says_it_is_a_fallback(setup, ev):
    ml = measured_latency(setup, gpu=CPU.id)
    ml.timer_kw = {"min_reps": 2, "max_reps": 2, "rep_ms": 0.0, "warmup_ms": 0.0, "estimate_calls": 1}
    est = ml.estimate(Schedule(keep=(1.0, 1.0) + (0.1,) * 10, min_tokens=4, scorer=ScorerConfig(w_mamba=0.0),
                               model=ev.signature))
    assert est.source == "cpu-measured" and est.gpu == "cpu" and est.energy_j is None
    assert est.latency_ms > 0 and est.baseline_ms > 0
