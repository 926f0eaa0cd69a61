"""Prediction intervals from validation residuals: the conformal rule, its coverage, its file."""

import math
import random

import pytest

from autoprune.cost.latency import LatencyModel
from autoprune.cost.shapes import TokenLayout
from autoprune.cost.uncertainty import (
    DEFAULT_HALF_WIDTH,
    ResidualSet,
    conformal_bounds,
    load_residuals,
    residual,
)
from autoprune.errors import AutopruneError, ConfigError
from autoprune.interfaces import LatencyEstimate
from autoprune.schedule import Schedule
from hw_fixtures import TINY_BF16, linear_table


def test_conformal_bound_is_the_order_statistic_by_hand():
    # n = 19, level 0.9: k = ceil(20 · 0.9) = 18 → the 18th smallest |r|
    rs = [i / 100 for i in range(1, 20)]
    assert conformal_bounds(rs, 0.9) == pytest.approx((-0.18, 0.18))
    # signs do not matter, magnitudes do
    assert conformal_bounds([-r for r in rs], 0.9) == pytest.approx((-0.18, 0.18))


def test_too_few_residuals_widen_the_largest():
    assert conformal_bounds([0.01, -0.02], 0.9) == pytest.approx((-0.03, 0.03))


def test_the_interval_covers_held_out_synthetic_data_at_its_level():
    rng = random.Random(0)

    def draw(n):  # a biased, heavy-ish tailed error: 1 % too fast on average, Laplace spread
        return [0.01 + rng.choice((-1, 1)) * rng.expovariate(60.0) for _ in range(n)]

    covered = []
    for _ in range(200):  # 200 calibrations of 40 residuals, each checked on 200 new predictions
        lo, hi = conformal_bounds(draw(40), 0.9)
        covered += [lo <= r <= hi for r in draw(200)]
    coverage = sum(covered) / len(covered)
    assert 0.88 <= coverage <= 0.95


def test_residual_is_the_log_ratio():
    assert residual(110.0, 100.0) == pytest.approx(math.log(1.1))
    with pytest.raises(ConfigError):
        residual(0.0, 1.0)


def test_a_source_without_residuals_gets_the_documented_default():
    iv = ResidualSet(residuals={}).interval("roofline-uncalibrated")
    assert (iv.low, iv.high, iv.n) == (-DEFAULT_HALF_WIDTH, DEFAULT_HALF_WIDTH, 0)
    lo, hi = iv.bounds(100.0)
    assert lo == pytest.approx(100 / 1.4) and hi == pytest.approx(140.0)


def test_residuals_round_trip_and_refuse_other_formats(tmp_path):
    rs = ResidualSet(residuals={"table": [0.01, -0.02], "few-shot": [0.0]}, notes={"from": "test"})
    path = rs.save(tmp_path / "r.json")
    back = load_residuals(path)
    assert back.residuals == rs.residuals and back.notes == {"from": "test"}
    with pytest.raises(ConfigError, match="format"):
        ResidualSet.from_dict({"format": "autoprune.residuals/v0", "residuals": {}})
    with pytest.raises(ConfigError, match="unknown latency source"):
        ResidualSet(residuals={"guess": [0.1]})


def test_the_shipped_residuals_cover_the_three_prediction_sources():
    rs = load_residuals()
    for source in ("table", "few-shot", "roofline"):
        iv = rs.interval(source)
        assert iv.n >= 20 and 0 < iv.high < 0.1


def test_every_prediction_carries_its_interval():
    table = linear_table(TINY_BF16, gpu="h100-sxm5-80gb")
    rs = ResidualSet(residuals={"table": [0.05] * 30})
    m = LatencyModel(TINY_BF16, TokenLayout(32, 512, 64), "h100-sxm5-80gb", table=table, residuals=rs)
    est = m.estimate(Schedule.identity(TINY_BF16.num_layers))
    assert est.interval_level == 0.9
    assert est.low_ms == pytest.approx(est.latency_ms * math.exp(-0.05))
    assert est.high_ms == pytest.approx(est.latency_ms * math.exp(0.05))
    d = est.to_dict()
    assert LatencyEstimate.from_dict(d) == est and d["high_ms"] == est.high_ms


def test_an_estimate_without_interval_keeps_its_old_record():
    est = LatencyEstimate(latency_ms=2.0, baseline_ms=4.0, source="measured", gpu="cpu")
    assert "low_ms" not in est.to_dict()


def test_an_interval_that_excludes_the_prediction_is_refused():
    with pytest.raises(AutopruneError, match="low_ms"):
        LatencyEstimate(latency_ms=2.0, baseline_ms=4.0, source="table", gpu="x", low_ms=2.5, high_ms=3.0)
    with pytest.raises(AutopruneError, match="both"):
        LatencyEstimate(latency_ms=2.0, baseline_ms=4.0, source="table", gpu="x", low_ms=1.5)
