"""Measured tables (``autoprune.profile/v1``): interpolation, the format, finding them on disk."""

import dataclasses
import json
import math

import pytest

from autoprune.cost.profile_table import FORMAT, ProfileTable, Series, find_table, list_tables, table_path
from autoprune.errors import ConfigError
from hw_fixtures import TINY_BF16, linear_table


def test_series_is_exact_at_grid_points():
    s = Series((100, 200, 400), (1.0, 3.0, 5.0))
    assert s.at(200) == (3.0, False)


def test_series_interpolation_is_exact_for_power_laws():
    xs = (128, 256, 512, 1024)
    s = Series(xs, [2e-5 * n ** 1.7 for n in xs])
    ms, ex = s.at(700)
    assert not ex and ms == pytest.approx(2e-5 * 700 ** 1.7, rel=1e-12)


def test_series_follows_linear_plus_quadratic_attention_closely():
    # attention = projections (a·n) + scores (b·n²); grid √2-spaced as `autoprune profile` measures
    from autoprune.profiler.layer_bench import token_grid

    grid = token_grid(512, 131072, 2)
    f = lambda n: 1e-3 * n + 4e-8 * n * n + 0.05  # noqa: E731
    s = Series(grid, [f(n) for n in grid])
    worst = max(abs(s.at(n)[0] - f(n)) / f(n) for n in range(600, 131000, 997))
    assert worst < 0.01


def test_series_extrapolates_with_clamped_slopes_and_says_so():
    s = Series((100, 200), (1.0, 8.0))  # slope 3 in log-log: clamped to 2 above the grid
    ms, ex = s.at(400)
    assert ex and ms == pytest.approx(8.0 * 4)
    s = Series((100, 200), (1.0, 1.0))  # flat: above the grid at least linear
    assert s.at(400)[0] == pytest.approx(2.0)
    s = Series((100, 200), (1.0, 4.0))  # below the grid at most linear
    assert s.at(50) == (pytest.approx(0.5), True)


@pytest.mark.parametrize("tokens, ms, match", [
    ((100, 100), (1.0, 2.0), "increase"),
    ((100, 200), (1.0, -2.0), "> 0"),
    ((100, 200), (1.0,), "times"),
    ((100.5,), (1.0,), "integer"),
    ((), (), "no measured"),
])
def test_series_validation(tokens, ms, match):
    with pytest.raises(ConfigError, match=match):
        Series(tokens, ms)


def test_profile_table_round_trips(tmp_path):
    t = linear_table(TINY_BF16)
    t = dataclasses.replace(t, skipped=({"what": "attention", "tokens": 4096, "reason": "out of memory"},),
                            environment={"torch": "2.13"}, created="2026-11-24T00:00:00+00:00")
    p = t.save(tmp_path / "t.json")
    back = ProfileTable.load(p)
    assert back.to_dict() == t.to_dict()
    assert back.layers["mamba"] == t.layers["mamba"]


def test_other_profile_format_versions_are_refused(tmp_path):
    d = linear_table(TINY_BF16).to_dict()
    d["format"] = "autoprune.profile/v2"
    (tmp_path / "t.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=FORMAT):
        ProfileTable.load(tmp_path / "t.json")


def test_tables_are_found_under_gpu_and_shape(tmp_path):
    linear_table(TINY_BF16).save(table_path(tmp_path, "h100-sxm5-80gb", TINY_BF16.name))
    assert find_table("h100-sxm5-80gb", TINY_BF16.name, [tmp_path]) is not None
    assert find_table("a100-sxm4-80gb", TINY_BF16.name, [tmp_path]) is None
    assert [(g, s) for g, s, _ in list_tables([tmp_path])] == [("h100-sxm5-80gb", TINY_BF16.name)]


def test_measured_ms_must_be_finite(tmp_path):
    d = linear_table(TINY_BF16).to_dict()
    d["layers"]["mlp"]["ms"][0] = math.inf
    with pytest.raises((ConfigError, ValueError)):
        ProfileTable.from_dict(json.loads(json.dumps(d, allow_nan=True)))


def test_a_table_reports_the_token_range_measured_per_kind_and_overhead():
    from hw_fixtures import TINY_BF16, linear_table

    t = linear_table(TINY_BF16, tokens=(64, 512, 4096))
    r = t.measured_range()
    assert r["mamba"] == r["attention"] == r["mlp"] == [64, 4096]
    assert r["scoring.attention"] == r["gather"] == r["head"] == [64, 4096]


def test_a_partial_table_says_so_and_round_trips_and_a_complete_one_has_no_key(tmp_path):
    import dataclasses

    from autoprune.cost.profile_table import ProfileTable
    from hw_fixtures import TINY_BF16, linear_table

    t = linear_table(TINY_BF16)
    assert "partial" not in t.to_dict()
    p = dataclasses.replace(t, partial=True).save(tmp_path / "t.json")
    back = ProfileTable.load(p)
    assert back.partial is True and back.to_dict()["partial"] is True
