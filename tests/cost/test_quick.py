"""Quick profiles (autoprune.quick/v1): stored, refused, and found by the latency model as 'few-shot'."""

import pytest

from autoprune.cost.latency import LatencyModel
from autoprune.cost.quick import QuickProfile, find_quick, quick_path
from autoprune.cost.shapes import TokenLayout
from autoprune.cost.transfer import QuickPoint, QuickPrefill, quick_plan
from autoprune.errors import ConfigError
from autoprune.profiler.quick import quick_keep
from autoprune.schedule import Schedule
from hw_fixtures import TINY_BF16, linear_table


def _points(scale=1.0):
    per = {"M": 0.01, "*": 0.02, "-": 0.005}
    return tuple(QuickPoint(k, n, scale * per[k] * n) for k, n in quick_plan(TINY_BF16, (64, 256, 1024, 2048)))


def _profile(**kw):
    d = dict(gpu="h200-sxm-141gb", shape=TINY_BF16.name, source_gpu="h100-sxm5-80gb", points=_points())
    d.update(kw)
    return QuickProfile(**d)


def test_a_quick_profile_round_trips(tmp_path):
    q = _profile(prefills=(QuickPrefill(keep=(1.0,) * TINY_BF16.num_layers, visual=512, ms=12.0),))
    back = QuickProfile.load(q.save(tmp_path / "q.json"))
    assert back.points == q.points and back.prefills == q.prefills and back.source_gpu == "h100-sxm5-80gb"


def test_a_quick_profile_of_another_format_or_too_many_points_is_refused():
    with pytest.raises(ConfigError, match="format"):
        QuickProfile.from_dict({"format": "autoprune.profile/v1"})
    with pytest.raises(ConfigError, match="1 to 12"):
        _profile(points=_points() * 2)
    with pytest.raises(ConfigError, match="source_gpu is the GPU itself"):
        _profile(source_gpu="h200-sxm-141gb")


def test_the_latency_model_finds_a_quick_profile_and_predicts_few_shot(tmp_path):
    root = tmp_path / "measured"
    linear_table(TINY_BF16, gpu="h100-sxm5-80gb").save(root / "h100-sxm5-80gb" / f"{TINY_BF16.name}.json")
    path = _profile(points=_points(scale=0.9)).save(quick_path(root, "h200-sxm-141gb", TINY_BF16.name))
    assert find_quick("h200-sxm-141gb", TINY_BF16.name, [root]) == path
    m = LatencyModel(TINY_BF16, TokenLayout(32, 1024, 64), "h200-sxm-141gb", search_dirs=[root])
    est = m.estimate(Schedule.identity(TINY_BF16.num_layers))
    assert est.source == "few-shot" and any(f.startswith("quick:") for f in est.flags)
    assert m.describe()["few_shot"]["source_gpu"] == "h100-sxm5-80gb"


def test_a_quick_profile_without_its_source_table_says_so(tmp_path):
    with pytest.raises(ConfigError, match="no measured table"):
        _profile().few_shot(search_dirs=[tmp_path])


@pytest.mark.parametrize("mean", [0.15, 0.25, 0.5, 0.9])
def test_quick_schedules_are_low_to_high_at_their_mean_keep(mean):
    keep = quick_keep(52, mean)
    assert keep[0] == 1.0 and all(b <= a for a, b in zip(keep, keep[1:]))
    assert sum(keep) / 52 == pytest.approx(mean, abs=0.01)
