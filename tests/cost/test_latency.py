"""The latency model: host/GPU pipeline of per-layer terms, its sources, what it refuses."""

import dataclasses

import pytest

from autoprune.cost.latency import LatencyModel, pipeline_ms
from autoprune.cost.profile_table import Series, table_path
from autoprune.cost.roofline import calibrate
from autoprune.cost.shapes import NEMOTRON_H_8B, TokenLayout
from autoprune.errors import ConfigError, ModelMismatchError
from autoprune.interfaces import LatencyEstimate, LatencySource
from autoprune.plan import plan_reduction
from autoprune.profiler.timing import METHOD_WALL_CLOCK
from autoprune.schedule import Schedule, ScorerConfig
from hw_fixtures import TINY, TINY_BF16, linear_table

LAYOUT = TokenLayout(prefix=32, visual=1024, query=64)


def expected_linear_latency(shape, layout, schedule, table):
    """Hand computation for a linear_table (every series c·n from n = 64; head constant).

    GPU part of a series = c·n; host floor = its smallest time c·64 (the head: 0.25 host,
    0 GPU). The host queues stage after stage while the GPU runs them:
    latency = max over k of (host of stages 0..k + GPU of stages k..end)."""
    per = {"M": 0.01, "*": 0.02, "-": 0.005}
    plan = plan_reduction(schedule, shape.layer_kinds, layout.visual)
    toks = [layout.text + k for k in plan.counts]
    gpu, host = [], []
    for i, (k, n) in enumerate(zip(shape.layer_kinds, toks)):
        g, h = per[k] * n, per[k] * 64
        if i in plan.evidence_layers:
            g, h = g + 0.001 * n, h + 0.001 * 64
        if i in plan.prune_layers:
            g += 0.0005 * (layout.text + (layout.visual if i == 0 else plan.counts[i - 1]))
            h += 0.0005 * 64
        gpu.append(g)
        host.append(h)
    gpu.append(0.0)
    host.append(0.25)
    return max(sum(host[: k + 1]) + sum(gpu[k:]) for k in range(len(gpu)))


def test_gpu_prediction_is_a_host_gpu_pipeline_of_layers_scoring_gather_and_head():
    table = linear_table(TINY_BF16)
    m = LatencyModel(TINY_BF16, LAYOUT, "h100", table=table)
    s = Schedule(keep=(1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25), scorer=ScorerConfig(evidence_window=2))
    est = m.estimate(s)
    assert isinstance(est, LatencyEstimate) and est.source == "table" and est.gpu == "h100-sxm5-80gb"
    assert est.latency_ms == pytest.approx(expected_linear_latency(TINY_BF16, LAYOUT, s, table))
    base = Schedule.identity(TINY_BF16.num_layers)
    assert est.baseline_ms == pytest.approx(expected_linear_latency(TINY_BF16, LAYOUT, base, table))
    assert est.speedup == pytest.approx(est.baseline_ms / est.latency_ms)


def test_pipeline_time_is_the_longest_host_then_gpu_path():
    assert pipeline_ms([10, 1, 1], [1, 1, 1]) == 13  # GPU-bound: host 1 then all GPU work
    assert pipeline_ms([1, 1, 1], [3, 3, 3]) == 10  # host-bound: all host work, then the last GPU stage
    assert pipeline_ms([5, 1, 1, 1], [1, 4, 4, 4]) == 14  # the host catches up: 1+4+4+4 + 1


def test_cpu_tables_add_their_times_up():
    table = linear_table(TINY_BF16, gpu="cpu", method=METHOD_WALL_CLOCK)
    m = LatencyModel(TINY_BF16, LAYOUT, "cpu", table=table)
    s = Schedule(keep=(1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25))
    b = m.breakdown(s)
    assert not m.pipelined and b.layer_gpu_ms is None
    assert b.total_ms == pytest.approx(sum(b.layers_ms) + b.scoring_ms + b.gather_ms + b.head_ms)


def test_identity_schedule_predicts_the_baseline():
    m = LatencyModel(TINY_BF16, LAYOUT, "h100", table=linear_table(TINY_BF16))
    assert m.estimate(Schedule.identity(TINY_BF16.num_layers)).speedup == pytest.approx(1.0)


def test_mamba_decay_uses_its_own_scoring_series():
    t = linear_table(TINY_BF16)
    t = dataclasses.replace(t, scoring={**t.scoring, "mamba_decay": Series((64, 2048), (1.0, 32.0))})
    m = LatencyModel(TINY_BF16, LAYOUT, "h100", table=t)
    keep = (1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5)
    fast = m.breakdown(Schedule(keep=keep, scorer=ScorerConfig(mamba_decay=False, w_attn=0.0)))
    slow = m.breakdown(Schedule(keep=keep, scorer=ScorerConfig(mamba_decay=True, w_attn=0.0)))
    assert slow.scoring_ms > fast.scoring_ms


def test_latency_model_is_a_latency_source():
    m = LatencyModel(TINY_BF16, LAYOUT, "h100", table=linear_table(TINY_BF16))
    assert isinstance(m, LatencySource)
    assert m.gpu == "h100-sxm5-80gb"


def test_source_falls_back_to_the_uncalibrated_roofline(tmp_path):
    m = LatencyModel(NEMOTRON_H_8B, TokenLayout(32, 16384, 64), "a100", search_dirs=[tmp_path])
    est = m.estimate(Schedule(keep=(1.0,) + (0.5,) * (NEMOTRON_H_8B.num_layers - 1)))
    assert est.source == "roofline-uncalibrated" and "default-efficiencies" in est.flags
    assert 1.0 < est.speedup < 2.5


def test_uncalibrated_roofline_of_the_8b_shape_is_in_the_measured_range():
    # DESIGN.md: ~490-605 ms for a 16.5k-token prefill of this shape on an H100
    m = LatencyModel(NEMOTRON_H_8B, TokenLayout(32, 16384, 64), "h100", search_dirs=[])
    assert 300 < m.baseline_ms() < 900


def test_tables_of_other_gpus_calibrate_automatically(tmp_path):
    t = linear_table(TINY_BF16, gpu="h100-sxm5-80gb")
    t.save(table_path(tmp_path, "h100-sxm5-80gb", TINY_BF16.name))
    m = LatencyModel(TINY_BF16, LAYOUT, "h200", search_dirs=[tmp_path])
    assert m.source == "roofline" and m.calibration.source_gpu == "h100-sxm5-80gb"
    assert "calibrated-on:h100-sxm5-80gb" in m.estimate(Schedule.identity(7)).flags
    # ... and the table itself is used on its own GPU
    assert LatencyModel(TINY_BF16, LAYOUT, "h100", search_dirs=[tmp_path]).source == "table"


def test_cpu_without_a_table_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="autoprune profile --gpu cpu"):
        LatencyModel(TINY, LAYOUT, "cpu", search_dirs=[tmp_path])


def test_table_of_another_gpu_or_shape_is_refused():
    with pytest.raises(ConfigError, match="calibration=calibrate"):
        LatencyModel(TINY_BF16, LAYOUT, "a100", table=linear_table(TINY_BF16, gpu="h100-sxm5-80gb"))
    other = dataclasses.replace(TINY_BF16, hidden_size=64)
    with pytest.raises(ConfigError, match="other dimensions"):
        LatencyModel(other, LAYOUT, "h100", table=linear_table(TINY_BF16))


def test_schedules_for_other_models_are_refused():
    m = LatencyModel(TINY_BF16, LAYOUT, "h100", table=linear_table(TINY_BF16))
    with pytest.raises(ModelMismatchError, match="8 layers"):
        m.estimate(Schedule.identity(8))


def test_overheads_missing_from_a_gpu_table_are_estimated_and_flagged():
    t = dataclasses.replace(linear_table(TINY_BF16), scoring={}, gather=None)
    m = LatencyModel(TINY_BF16, LAYOUT, "h100", table=t)
    flags = m.estimate(Schedule(keep=(1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25))).flags
    assert "unmeasured-gather" in flags and "unmeasured-mamba" in flags


def test_extrapolation_is_flagged():
    m = LatencyModel(TINY_BF16, TokenLayout(32, 10000, 64), "h100", table=linear_table(TINY_BF16))
    assert "extrapolated" in m.estimate(Schedule.identity(7)).flags


def test_a_table_missing_a_layer_kind_is_refused_by_the_model():
    t = linear_table(TINY_BF16)
    t = dataclasses.replace(t, layers={k: v for k, v in t.layers.items() if k != "attention"})
    assert t.missing_kinds() == ["attention"]
    with pytest.raises(ConfigError, match="attention"):
        LatencyModel(TINY_BF16, LAYOUT, "h100", table=t)
    with pytest.raises(ConfigError, match="attention"):
        calibrate(t)


def test_a_table_of_the_same_widths_predicts_another_layer_pattern(tmp_path):
    from autoprune.cost.shapes import NEMOTRON_H_8B

    table = linear_table(NEMOTRON_H_8B)
    table.save(tmp_path / "h100-sxm5-80gb" / "nemotron-h-8b.json")
    proxy = NEMOTRON_H_8B.with_layer_kinds("M-*M-M*", "demo@8b")
    layout = TokenLayout(prefix=8, visual=1024, query=16)
    here = LatencyModel(proxy, layout, "h100", search_dirs=[tmp_path])
    assert here.source == "table"
    s = Schedule.identity(7)
    n = layout.total
    per = {"M": 0.01, "*": 0.02, "-": 0.005}
    assert here.estimate(s).baseline_ms == pytest.approx(expected_linear_latency(proxy, layout, s, table))
    assert here.breakdown(s).layers_ms == pytest.approx(tuple(per[k] * n for k in proxy.layer_kinds))
    other = LatencyModel(proxy, layout, "a100", search_dirs=[tmp_path])
    assert other.source == "roofline" and other.calibration.source_gpu == "h100-sxm5-80gb"


def test_a_table_of_other_widths_is_refused():
    from autoprune.cost.shapes import NEMOTRON_H_8B

    other = dataclasses.replace(NEMOTRON_H_8B, name="narrower", hidden_size=2048)
    with pytest.raises(ConfigError, match="other dimensions"):
        LatencyModel(other, TokenLayout(8, 1024, 16), "h100", table=linear_table(NEMOTRON_H_8B))


# ------------------------------------------------ measured range, provenance
def cut_short(table, at=128):
    """A table as ``profile --time-budget`` leaves it: attention and MLP measured at ``at`` tokens only."""
    layers = {k: (Series((at,), (v.at(at)[0],)) if k in ("attention", "mlp") else v) for k, v in table.layers.items()}
    return dataclasses.replace(table, layers=layers)


def test_a_table_cut_short_says_the_unreduced_prefill_is_extrapolated_and_over_what_range():
    m = LatencyModel(TINY_BF16, LAYOUT, "h100", table=cut_short(linear_table(TINY_BF16)))
    d = m.describe()
    assert d["extrapolated"] is True
    assert d["table"]["measured_tokens"]["attention"] == [128, 128]
    assert d["table"]["measured_tokens"]["mamba"] == [64, 2048]
    assert sorted(d["beyond_measured"]) == [f"{name} at {LAYOUT.total} tokens (measured 128..128)"
                                            for name in ("attention", "mlp")]
    assert "extrapolated" in m.estimate(Schedule.identity(7)).flags


def test_a_table_that_covers_the_prefill_is_not_extrapolated_and_a_given_one_is_not_found():
    d = LatencyModel(TINY_BF16, LAYOUT, "h100", table=linear_table(TINY_BF16)).describe()
    assert d["extrapolated"] is False and "beyond_measured" not in d
    assert d["table"]["found"] is False


def test_a_table_found_in_the_search_dirs_is_recorded_with_its_path(tmp_path):
    path = linear_table(TINY_BF16).save(table_path(tmp_path, "h100-sxm5-80gb", TINY_BF16.name))
    m = LatencyModel(TINY_BF16, LAYOUT, "h100", search_dirs=[tmp_path])
    assert m.found_tables == {"table": str(path)}
    assert m.describe()["table"]["path"] == str(path) and m.describe()["table"]["found"] is True


def test_a_table_found_to_calibrate_another_gpu_is_recorded(tmp_path):
    path = linear_table(TINY_BF16).save(table_path(tmp_path, "h100-sxm5-80gb", TINY_BF16.name))
    m = LatencyModel(TINY_BF16, LAYOUT, "h200", search_dirs=[tmp_path])
    assert m.source == "roofline" and m.describe()["calibration_table"] == str(path)
