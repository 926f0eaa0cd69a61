"""Schedule JSON v1: validation, round trips, refusals."""

import json
import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoprune import (
    ModelMismatchError,
    ModelSignature,
    MonotonicityError,
    Schedule,
    ScheduleError,
    ScheduleFormatError,
    ScheduleValueError,
    ScorerConfig,
    Target,
)
from autoprune.schedule import FORMAT, stages_to_keep

SIG = ModelSignature(family="nemotron_h", layer_kinds="M-*M-*", fingerprint="sha256:abc")


def good(**kw):
    base = dict(keep=(1.0, 1.0, 0.5, 0.5, 0.25, 0.25), model=SIG, min_tokens=4,
                scorer=ScorerConfig(state_momentum=0.3, w_attn=1.0, w_mamba=0.5, mamba_decay=True),
                target=Target(gpu="a100-sxm4-80gb", budget="4x"), metrics={"latency_ms": 12.5, "speedup": 3.9},
                provenance={"study": "s", "trial": 3})
    base.update(kw)
    return Schedule(**base)


def good_dict(**kw):
    d = good().to_dict()
    d.update(kw)
    return d


# ------------------------------------------------------------------ round trips
def test_save_then_load_gives_an_equal_schedule(tmp_path):
    s = good()
    path = s.save(tmp_path / "s.json")
    assert Schedule.load(path) == s


def test_saved_file_is_json_v1_with_one_entry_per_layer(tmp_path):
    data = json.loads(good().save(tmp_path / "s.json").read_text())
    assert data["format"] == FORMAT
    assert data["model"]["num_layers"] == 6 and len(data["keep"]) == 6
    assert set(data) == {"format", "model", "keep", "min_tokens", "scorer", "prefilter", "target", "metrics",
                         "provenance"}


def test_scorer_config_round_trips_every_field():
    sc = ScorerConfig(state_momentum=0.9, w_attn=0.0, w_mamba=2.0, mamba_decay=True, head_agg="max",
                      evidence_window=3, selector="language", seed=7)
    assert ScorerConfig.from_dict(sc.to_dict()) == sc


def test_stage_form_is_normalised_to_per_layer():
    d = good_dict()
    del d["keep"]
    d["stages"] = [[0, 1.0], [2, 0.5], [4, 0.25]]
    assert Schedule.from_dict(d).keep == (1.0, 1.0, 0.5, 0.5, 0.25, 0.25)


def test_stages_to_keep_fills_until_the_last_layer():
    assert stages_to_keep([[0, 1.0], [3, 0.4]], 5) == (1.0, 1.0, 1.0, 0.4, 0.4)


# ------------------------------------------------------------------- refusals
@pytest.mark.parametrize("fmt", ["autoprune.schedule/v2", "autoprune.schedule/v0", "schedule", None])
def test_other_format_versions_are_refused(fmt):
    with pytest.raises(ScheduleFormatError, match="format"):
        Schedule.from_dict(good_dict(format=fmt))


@pytest.mark.parametrize("where", ["top", "scorer", "model", "target"])
def test_unknown_keys_are_refused_and_named(where):
    d = good_dict()
    if where == "top":
        d["keep_ratio"] = 1
    else:
        d[where] = dict(d[where], bogus=1)
    with pytest.raises(ScheduleFormatError, match="keep_ratio" if where == "top" else "bogus"):
        Schedule.from_dict(d)


def test_length_other_than_the_model_layers_is_refused():
    with pytest.raises(ScheduleValueError, match="5 entries .* 6 layers"):
        good(keep=(1.0, 1.0, 0.5, 0.5, 0.25))


@pytest.mark.parametrize("value", [0.0, -0.1, 1.5])
def test_values_outside_zero_one_are_refused_naming_the_layer(value):
    keep = [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    keep[3] = value
    with pytest.raises(ScheduleError, match="layer 3"):
        good(keep=tuple(keep))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_are_refused(value):
    with pytest.raises(ScheduleValueError, match="finite"):
        good(keep=(1.0, value, 0.5, 0.5, 0.25, 0.25))


def test_nan_literals_in_a_file_are_refused():
    text = good().to_json().replace('"keep": [\n    1.0,\n    1.0', '"keep": [\n    1.0,\n    NaN')
    assert "NaN" in text
    with pytest.raises(ScheduleValueError, match="NaN"):
        Schedule.from_json(text)


def test_booleans_are_not_numbers():
    with pytest.raises(ScheduleValueError, match="number"):
        good(keep=(True, 1.0, 0.5, 0.5, 0.25, 0.25))


def test_first_layer_below_one_needs_a_prefilter():
    with pytest.raises(ScheduleValueError, match="prefilter"):
        good(keep=(0.5, 0.5, 0.5, 0.5, 0.25, 0.25))
    assert good(keep=(0.5, 0.5, 0.5, 0.5, 0.25, 0.25), prefilter="uniform_stride").keep[0] == 0.5


def test_an_increase_along_depth_is_refused_naming_both_layers():
    with pytest.raises(MonotonicityError, match="layer 3 .*layer 4"):
        good(keep=(1.0, 1.0, 0.5, 0.25, 0.5, 0.25))


def test_a_schedule_for_other_layer_kinds_is_refused_naming_both():
    other = ModelSignature(family="nemotron_h", layer_kinds="MM*M-*")
    with pytest.raises(ModelMismatchError, match=r"M-\*M-\*.*MM\*M-\*"):
        good().check_model(other)


def test_a_schedule_for_another_fingerprint_is_refused_naming_both():
    other = ModelSignature(family="nemotron_h", layer_kinds="M-*M-*", fingerprint="sha256:def")
    with pytest.raises(ModelMismatchError, match="sha256:abc.*sha256:def"):
        good().check_model(other)


def test_loading_with_a_model_checks_the_match(tmp_path):
    path = good().save(tmp_path / "s.json")
    with pytest.raises(ModelMismatchError):
        Schedule.load(path, model=ModelSignature(family="bamba", layer_kinds="M*M*MM"))


def test_a_file_without_model_is_refused():
    with pytest.raises(ScheduleFormatError, match="model"):
        Schedule.from_dict(good_dict(model=None))


@pytest.mark.parametrize("field,value,match", [
    ("state_momentum", 1.0, "state_momentum"), ("w_attn", -1.0, "w_attn"), ("head_agg", "sum", "head_agg"),
    ("evidence_window", 0, "evidence_window"), ("selector", "magic", "selector"), ("mamba_decay", 1, "mamba_decay"),
])
def test_bad_scorer_values_are_refused_naming_the_field(field, value, match):
    with pytest.raises(ScheduleValueError, match=match):
        ScorerConfig(**{field: value})


def test_a_language_scorer_needs_some_evidence_weight():
    with pytest.raises(ScheduleValueError, match="both 0"):
        ScorerConfig(w_attn=0.0, w_mamba=0.0)
    assert ScorerConfig(w_attn=0.0, w_mamba=0.0, selector="uniform_stride").w_attn == 0.0


# ----------------------------------------------------------------- semantics
def test_tokens_per_layer_uses_ceil_and_min_tokens():
    s = good(min_tokens=3)
    assert s.tokens_per_layer(10) == [10, 10, 5, 5, 3, 3]
    assert s.tokens_per_layer(2) == [2, 2, 2, 2, 2, 2]  # never more than V


def test_prune_layers_are_where_the_count_drops():
    assert good(min_tokens=1).prune_layers(100) == [2, 4]
    assert Schedule.identity(6).prune_layers(100) == []


def test_mean_keep_is_the_average_keep():
    assert good().mean_keep == pytest.approx((1 + 1 + 0.5 + 0.5 + 0.25 + 0.25) / 6)


# ------------------------------------------------------------- atomic writes
def test_save_is_atomic_an_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = good().save(tmp_path / "s.json")
    before = path.read_text()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        good(keep=(1.0, 1.0, 1.0, 1.0, 1.0, 0.5)).save(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temp file left behind


# ------------------------------------------------------------------- fuzzing
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True),
                         st.text(max_size=5))
json_values = st.recursive(json_scalars, lambda c: st.one_of(st.lists(c, max_size=4),
                                                             st.dictionaries(st.text(max_size=5), c, max_size=3)),
                           max_leaves=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(["format", "model", "keep", "stages", "min_tokens", "scorer", "prefilter", "target",
                            "metrics", "provenance", "extra"]), value=json_values, drop=st.booleans())
def test_fuzzed_files_load_or_raise_a_schedule_error(key, value, drop):
    d = good_dict()
    if drop and key in d:
        del d[key]
    else:
        d[key] = value
    try:
        text = json.dumps(d)
    except ValueError:
        return
    try:
        s = Schedule.from_json(text)
    except ScheduleError:
        return
    # What loads must be a valid schedule that round-trips exactly.
    assert Schedule.from_json(s.to_json()) == s


@settings(max_examples=200, deadline=None)
@given(keep=st.lists(st.one_of(st.floats(min_value=-1, max_value=2), st.floats(), st.sampled_from([1.0, 0.5])),
                     min_size=6, max_size=6))
def test_fuzzed_keep_vectors_load_only_when_valid(keep):
    d = good_dict(keep=keep)
    try:
        s = Schedule.from_dict(d)
    except ScheduleError:
        return
    assert s.keep[0] == 1.0 and all(0 < k <= 1 for k in s.keep)
    assert all(a >= b for a, b in zip(s.keep, s.keep[1:]))
