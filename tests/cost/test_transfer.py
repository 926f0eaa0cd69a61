"""Cost forms per GPU, their spec-ratio transfer, and few-shot calibration on synthetic timings."""

import dataclasses
import math

import pytest

from autoprune.cost.gpus import resolve
from autoprune.cost.kinds import KindCost, kind_spec
from autoprune.cost.latency import LatencyModel, calibrate_prefills
from autoprune.cost.profile_table import KIND_NAMES, ProfileTable, Series
from autoprune.cost.shapes import NEMOTRON_H_8B, TokenLayout
from autoprune.cost.transfer import (
    FormSet,
    QuickPoint,
    QuickPrefill,
    clock_ratio,
    fit_few_shot,
    fit_forms,
    lower_envelope,
    quick_plan,
    spec_transfer,
)
from autoprune.errors import ConfigError
from autoprune.profiler.timing import METHOD_CUDA_EVENTS
from autoprune.schedule import Schedule

H100, H200, A100 = resolve("h100-sxm5-80gb"), resolve("h200-sxm-141gb"), resolve("a100-sxm4-80gb")
SHAPE = NEMOTRON_H_8B
GRID = tuple(int(128 * 2 ** (i / 2)) // 8 * 8 for i in range(19))

# The "truth" of two GPUs: known forms per kind. The target's GPU part is the source's carried by
# spec ratios times a known scale per kind (what the quick points must find); its host floors differ.
SOURCE = {"M": KindCost(1.35, 0.0, 0.30, 0.78, 16.0), "*": KindCost(0.56, 0.05, 0.60, 0.74, 4.0),
          "-": KindCost(0.20, 0.03, 0.58, math.inf, 4.0)}
SCALE = {"M": 0.95, "*": 1.03, "-": 1.00}
HOST = {"M": 1.40, "*": 0.70, "-": 0.43}


def target_truth() -> FormSet:
    moved = spec_transfer(FormSet(gpu=H100.id, shape=SHAPE.name, kinds=SOURCE, peak_tflops=989.4,
                                  bandwidth_gbs=3350.0), H100, H200)
    kinds = {k: KindCost(HOST[k], c.gpu_floor_ms * SCALE[k], c.compute / SCALE[k],
                         c.memory / SCALE[k] if c.memory != math.inf else math.inf, c.beta)
             for k, c in moved.kinds.items()}
    return dataclasses.replace(moved, kinds=kinds)


def table_of(forms: FormSet, gpu: str) -> ProfileTable:
    layers = {KIND_NAMES[k]: Series(GRID, [forms.call_ms(SHAPE, k, n) for n in GRID]) for k in forms.kinds}
    flat = Series(GRID, [0.4] * len(GRID))
    return ProfileTable(gpu=gpu, shape=SHAPE, method=METHOD_CUDA_EVENTS, layers=layers,
                        scoring={"attention": flat, "mamba": flat, "mamba_decay": flat}, gather=flat,
                        head=Series(GRID, [0.3 + 1e-4 * n for n in GRID]), prefix_tokens=32, query_tokens=64)


@pytest.fixture(scope="module")
def source_table():
    return table_of(FormSet(gpu=H100.id, shape=SHAPE.name, kinds=SOURCE, peak_tflops=989.4, bandwidth_gbs=3350.0),
                    H100.id)


def quick_points(forms: FormSet) -> list[QuickPoint]:
    return [QuickPoint(k, n, forms.call_ms(SHAPE, k, n)) for k, n in quick_plan(SHAPE)]


def test_clock_ratio_is_the_per_sm_peak_ratio_within_an_architecture():
    assert clock_ratio(H100, H200) == pytest.approx(1.0)
    slow = dataclasses.replace(H200, bf16_tflops=H200.bf16_tflops / 2, id="h200-half")
    assert clock_ratio(H100, slow) == pytest.approx(0.5)
    assert clock_ratio(H100, A100) == 1.0  # another architecture: no clock ratio from the sheets


def test_spec_transfer_keeps_efficiencies_and_follows_the_target_peaks(source_table):
    forms = fit_forms(source_table, H100)
    moved = spec_transfer(forms, H100, H200)
    assert moved.how == "spec-transfer" and moved.source_gpu == H100.id
    assert moved.bandwidth_gbs == 4800.0 and moved.kinds["M"].compute == forms.kinds["M"].compute
    # a memory-only kind gets faster by the bandwidth ratio
    mem = FormSet(gpu=H100.id, shape=SHAPE.name, kinds={"-": KindCost(0.0, 0.0, math.inf, 0.5)}, peak_tflops=989.4,
                  bandwidth_gbs=3350.0)
    m2 = spec_transfer(mem, H100, H200)
    assert mem.gpu_ms(SHAPE, "-", 8192) / m2.gpu_ms(SHAPE, "-", 8192) == pytest.approx(4800 / 3350)


def test_forms_fitted_on_a_table_reproduce_it(source_table):
    forms = fit_forms(source_table, H100)
    for k in "M*-":
        assert forms.fit_error[k] < 0.02
        for n in GRID:
            assert forms.call_ms(SHAPE, k, n) == pytest.approx(source_table.layer(k).at(n)[0], rel=0.05)


def test_the_quick_plan_is_at_most_twelve_points_over_every_kind():
    plan = quick_plan(SHAPE)
    assert len(plan) == 12 and {k for k, _ in plan} == set("M*-")
    assert sorted({n for _, n in plan}) == [512, 4096, 16384, 65536]


def test_few_shot_recovers_the_known_scale_and_host_floors(source_table):
    truth = target_truth()
    fs = fit_few_shot(source_table, H100, H200, quick_points(truth))
    for k in "M*-":
        assert fs.gpu_scale[k] == pytest.approx(SCALE[k], rel=0.03)
        assert fs.target_forms.kinds[k].host_ms == pytest.approx(HOST[k], rel=0.03)


def test_few_shot_table_predicts_the_target_at_every_point(source_table):
    truth = target_truth()
    fs = fit_few_shot(source_table, H100, H200, quick_points(truth))
    t = fs.table()
    assert t.gpu == H200.id
    for k in "M*-":
        for n in GRID:
            assert t.layer(k).at(n)[0] == pytest.approx(truth.call_ms(SHAPE, k, n), rel=0.04), (k, n)


def test_few_shot_prediction_names_its_source(source_table):
    fs = fit_few_shot(source_table, H100, H200, quick_points(target_truth()))
    m = LatencyModel(SHAPE, TokenLayout(32, 4096, 64), H200, few_shot=fs)
    est = m.estimate(Schedule.identity(SHAPE.num_layers))
    assert m.source == est.source == "few-shot"
    assert est.low_ms < est.latency_ms < est.high_ms


def test_quick_prefills_set_the_whole_prefill_scale(source_table):
    fs = fit_few_shot(source_table, H100, H200, quick_points(target_truth()))
    layout = TokenLayout(32, 4096, 64)
    plain = LatencyModel(SHAPE, layout, H200, few_shot=fs).baseline_ms()
    keep = (1.0,) * SHAPE.num_layers
    scaled = calibrate_prefills(fs, [QuickPrefill(keep=keep, visual=4096, ms=plain * 1.1)], SHAPE)
    assert scaled.prefill_scale == pytest.approx(1.1)
    assert LatencyModel(SHAPE, layout, H200, few_shot=scaled).baseline_ms() == pytest.approx(plain * 1.1)
    assert scaled.prefill_residuals() == pytest.approx([0.0], abs=1e-12)
    with pytest.raises(ConfigError, match="at most 3"):
        calibrate_prefills(fs, [QuickPrefill(keep=keep, visual=4096, ms=1.0)] * 4, SHAPE)


def _stepped(n_layers: int, cuts: int, keep: float = 0.25) -> tuple[float, ...]:
    """Keep 1 for two layers, then ``cuts`` equal steps down to ``keep`` (one prune point each)."""
    rest = n_layers - 2
    per = max(1, rest // cuts)
    vals = [1.0, 1.0]
    for i in range(rest):
        step = min(cuts, i // per + 1)
        vals.append(1.0 - (1.0 - keep) * step / cuts)
    return tuple(vals)


def test_prefills_with_different_prune_counts_recover_a_known_cost_per_prune_point(source_table):
    fs = fit_few_shot(source_table, H100, H200, quick_points(target_truth()))
    layout = TokenLayout(32, 4096, 64)
    plain = LatencyModel(SHAPE, layout, H200, few_shot=fs)
    keeps = [(1.0,) * SHAPE.num_layers, _stepped(SHAPE.num_layers, 2), _stepped(SHAPE.num_layers, 6)]
    truth_scale, truth_prune = 1.07, 4.0  # enough host time per cut to show past the GPU work it overlaps
    measured = []
    for k in keeps:
        b = plain.breakdown(Schedule(keep=k))
        measured.append(QuickPrefill(keep=k, visual=4096, ms=truth_scale * b.with_prune_cost(truth_prune)))
    assert len({plain.breakdown(Schedule(keep=k)).prune_points for k in keeps}) == 3
    fitted = calibrate_prefills(fs, measured, SHAPE)
    assert fitted.prefill_scale == pytest.approx(truth_scale, rel=1e-9)  # the unreduced prefill's own ratio
    assert fitted.prune_point_ms == pytest.approx(truth_prune, rel=1e-4)
    assert fitted.prefill_residuals() == pytest.approx([0.0] * 3, abs=1e-5)
    m = LatencyModel(SHAPE, layout, H200, few_shot=fitted)
    other = Schedule(keep=_stepped(SHAPE.num_layers, 4, keep=0.4))
    b = plain.breakdown(other)
    assert m.estimate(other).latency_ms == pytest.approx(truth_scale * b.with_prune_cost(truth_prune), rel=1e-5)
    assert m.baseline_ms() == pytest.approx(truth_scale * plain.baseline_ms())  # no prune point: scaled only


def test_a_prune_points_host_time_delays_only_a_host_bound_pipeline():
    from autoprune.cost.latency import LatencyBreakdown

    def bd(gpu, host):
        return LatencyBreakdown(tokens=(1,) * len(gpu), layers_ms=tuple(gpu), scoring_ms=0.0, gather_ms=0.0,
                                head_ms=0.0, extrapolated=False, layer_gpu_ms=tuple(gpu), layer_host_ms=tuple(host),
                                prune_layers=(1, 2))
    gpu_bound = bd([5.0, 5.0, 5.0], [0.1, 0.1, 0.1])
    assert gpu_bound.with_prune_cost(1.0) == pytest.approx(gpu_bound.total_ms)  # hidden behind the GPU's 15 ms
    host_bound = bd([0.2, 0.2, 0.2], [1.0, 1.0, 1.0])
    assert host_bound.with_prune_cost(1.0) == pytest.approx(host_bound.total_ms + 2.0)  # both prune layers show


def test_an_unreduced_prefill_fixes_the_scale_and_the_reduced_ones_fit_the_prune_cost(source_table):
    fs = fit_few_shot(source_table, H100, H200, quick_points(target_truth()))
    plain = LatencyModel(SHAPE, TokenLayout(32, 4096, 64), H200, few_shot=fs)
    base = plain.baseline_breakdown().total_ms
    keeps = [_stepped(SHAPE.num_layers, 2), _stepped(SHAPE.num_layers, 6)]
    reduced = [plain.breakdown(Schedule(keep=k)) for k in keeps]
    noisy = [QuickPrefill(keep=(1.0,) * SHAPE.num_layers, visual=4096, ms=1.05 * base)]
    noisy += [QuickPrefill(keep=k, visual=4096, ms=(1.10 + 0.01 * i) * b.total_ms)
              for i, (k, b) in enumerate(zip(keeps, reduced))]
    fitted = calibrate_prefills(fs, noisy, SHAPE)
    assert fitted.prefill_scale == pytest.approx(1.05)  # the baseline's own measurement, whatever the others say
    assert fitted.prune_point_ms > 0  # the reduced prefills' excess over 1.05x goes to their prune points
    corrected = fitted.prefill_corrected_ms
    assert all(abs(c / p.ms - 1) < abs(1.05 * q / p.ms - 1)
               for c, q, p in zip(corrected[1:], fitted.prefill_predicted_ms[1:], noisy[1:]))
    assert LatencyModel(SHAPE, TokenLayout(32, 4096, 64), H200, few_shot=fitted).baseline_ms() == pytest.approx(1.05 * base)


def test_prefills_that_cannot_separate_the_two_terms_fit_the_scale_alone(source_table):
    fs = fit_few_shot(source_table, H100, H200, quick_points(target_truth()))
    layout = TokenLayout(32, 4096, 64)
    plain = LatencyModel(SHAPE, layout, H200, few_shot=fs)
    k = _stepped(SHAPE.num_layers, 3)
    b = plain.breakdown(Schedule(keep=k))
    same = [QuickPrefill(keep=k, visual=4096, ms=b.total_ms * 1.2), QuickPrefill(keep=k, visual=4096, ms=b.total_ms * 1.2)]
    fitted = calibrate_prefills(fs, same, SHAPE)
    assert fitted.prune_point_ms == 0.0 and fitted.prefill_scale == pytest.approx(1.2)
    # prune points that look faster than free are not believed: the scale alone stands
    base = plain.baseline_breakdown().total_ms
    faster = [QuickPrefill(keep=(1.0,) * SHAPE.num_layers, visual=4096, ms=base),
              QuickPrefill(keep=k, visual=4096, ms=0.9 * b.total_ms)]
    assert calibrate_prefills(fs, faster, SHAPE).prune_point_ms == pytest.approx(0.0, abs=1e-6)


def test_more_than_twelve_layer_timings_is_not_few_shot(source_table):
    with pytest.raises(ConfigError, match="at most 12"):
        fit_few_shot(source_table, H100, H200, [QuickPoint("M", 512, 1.0)] * 13)


def test_a_kind_without_points_keeps_the_spec_transfer(source_table):
    pts = [p for p in quick_points(target_truth()) if p.kind != "-"]
    fs = fit_few_shot(source_table, H100, H200, pts)
    assert fs.gpu_scale["-"] == 1.0
    assert fs.target_forms.kinds["-"].host_ms == pytest.approx(fit_forms(source_table, H100).kinds["-"].host_ms)


def test_lower_envelope_removes_spikes_but_keeps_growth():
    s = Series((1, 2, 3, 4, 5), (0.5, 1.0, 0.5, 0.6, 2.0))
    assert lower_envelope(s) == [0.5, 0.5, 0.5, 0.6, 2.0]


@pytest.mark.parametrize("bad", [dict(kind="Q", tokens=1, ms=1.0), dict(kind="M", tokens=0, ms=1.0),
                                 dict(kind="M", tokens=8, ms=-1.0)])
def test_a_bad_quick_point_is_refused(bad):
    with pytest.raises(ConfigError):
        QuickPoint(**bad)


def test_kind_specs_count_the_same_as_the_roofline():
    from autoprune.cost.roofline import layer_bytes
    from autoprune.cost.shapes import layer_flops

    for k in "M*-":
        assert kind_spec(k).flops(SHAPE, 1000) == layer_flops(SHAPE, k, 1000)
        assert kind_spec(k).nbytes(SHAPE, 1000) == layer_bytes(SHAPE, k, 1000)


def test_more_kinds_get_fewer_token_counts_each_never_more_than_twelve_points():
    four = SHAPE.with_layer_kinds("M*-E", "four-kinds")
    plan = quick_plan(four)
    assert len(plan) == 12 and {k for k, _ in plan} == set("M*-E")
    assert sorted({n for _, n in plan}) == [512, 16384, 65536]  # the ends kept
