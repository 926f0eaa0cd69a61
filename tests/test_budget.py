"""Budget strings and fitting schedules to a budget (autoprune/budget.py)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoprune.budget import Budget, fit_to_budget, parse_budget, project_keep
from autoprune.cost.gpus import resolve
from autoprune.cost.shapes import NEMOTRON_H_8B, TokenLayout
from autoprune.errors import BudgetError
from autoprune.models.synthetic import SyntheticLatency
from autoprune.schedule import ModelSignature, Schedule

SIG = ModelSignature("synthetic", NEMOTRON_H_8B.layer_kinds)
LAT = SyntheticLatency(SIG, TokenLayout(64, 8192, 32), resolve("a100"))
V = 8192


def lat(s):
    return LAT.estimate(s).latency_ms


@pytest.mark.parametrize("text,kind,value,canonical", [
    ("4x", "speedup", 4.0, "4x"),
    ("3.5X", "speedup", 3.5, "3.5x"),
    ("1x", "speedup", 1.0, "1x"),
    (" 120 ms ", "ms", 120.0, "120ms"),
    ("0.12s", "ms", 120.0, "120ms"),
    ("25%", "fraction", 0.25, "25%"),
    ("100%", "fraction", 1.0, "100%"),
])
def test_valid_budgets_parse_to_kind_and_value(text, kind, value, canonical):
    b = parse_budget(text)
    assert (b.kind, b.value, b.text) == (kind, pytest.approx(value), canonical)


@pytest.mark.parametrize("text,fragment", [
    ("4y", "unknown unit 'y'"),
    ("0.5x", "slowdown"),
    ("0x", "positive"),
    ("-3ms", "> 0 ms"),
    ("150%", "more than 100%"),
    ("0%", "> 0%"),
    ("4", "has no unit"),
    ("", "cannot parse"),
    ("fast", "cannot parse"),
    ("nanx", "cannot parse"),
    ("1e999x", "finite"),
])
def test_bad_budgets_raise_budget_error_with_specific_message(text, fragment):
    with pytest.raises(BudgetError, match=fragment.replace("(", r"\(")) as e:
        parse_budget(text)
    assert isinstance(e.value, ValueError)


def test_budget_limits_and_constraint_sign():
    assert parse_budget("4x").limit_ms(400.0) == 100.0
    assert parse_budget("25%").limit_ms(400.0) == 100.0
    assert parse_budget("120ms").limit_ms(400.0) == 120.0
    b = parse_budget("4x")
    assert b.constraint(90.0, 100.0) < 0 < b.constraint(110.0, 100.0)
    assert b.constraint(100.0, 100.0) == 0 and Budget.meets(100.0, 100.0)
    assert parse_budget("25%").slug() == "25pct"


def test_projection_meets_budget_and_keeps_structure():
    s = Schedule.from_stages([(0, 1.0), (10, 0.8), (30, 0.5)], SIG.num_layers, model=SIG)
    limit = LAT.baseline_ms / 4
    p = fit_to_budget(s, lat, limit, V)
    assert p.met and p.gamma > 1 and lat(p.schedule) <= limit
    assert p.schedule.keep[:10] == (1.0,) * 10  # full layers stay full: same prune points
    assert p.schedule.prune_layers(V) == s.prune_layers(V)
    # the least reduction: a slightly smaller gamma misses the budget
    slightly_less = s.replace(keep=project_keep(s.keep, p.gamma / 1.01, 16 / V))
    assert lat(slightly_less) > limit


def test_projection_leaves_a_schedule_within_budget_unchanged():
    s = Schedule.from_stages([(0, 1.0), (1, 0.1)], SIG.num_layers, model=SIG)
    p = fit_to_budget(s, lat, LAT.baseline_ms / 2, V)
    assert p.met and p.gamma == 1.0 and p.schedule is s and p.probes == 1


def test_projection_reports_unreachable_when_full_layers_alone_are_too_slow():
    s = Schedule.from_stages([(0, 1.0), (45, 0.5)], SIG.num_layers, model=SIG)
    p = fit_to_budget(s, lat, LAT.baseline_ms / 4, V)
    assert not p.met and p.schedule is s


def test_relaxing_fit_lands_just_under_the_budget():
    unit = Schedule.from_stages([(0, 1.0), (1, 0.5)], SIG.num_layers, model=SIG)
    limit = LAT.baseline_ms / 4
    p = fit_to_budget(unit, lat, limit, V, gamma_low=0.01)
    assert p.met and lat(p.schedule) <= limit
    assert lat(p.schedule) > 0.99 * limit
    assert p.gamma < 3


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.3, 1.0), min_size=SIG.num_layers - 1, max_size=SIG.num_layers - 1),
       st.floats(1.5, 8.0))
def test_projection_of_any_monotone_schedule_is_valid_and_monotone(ratios, speedup):
    keep, k = [1.0], 1.0
    for r in ratios:
        k *= r
        keep.append(k)
    s = Schedule(keep=tuple(keep), model=SIG)
    p = fit_to_budget(s, lat, LAT.baseline_ms / speedup, V)
    out = p.schedule.keep  # Schedule validates monotonicity and keep[0] == 1
    assert out[0] == 1.0 and all(a >= b for a, b in zip(out, out[1:]))
    if p.met:
        assert lat(p.schedule) <= LAT.baseline_ms / speedup
