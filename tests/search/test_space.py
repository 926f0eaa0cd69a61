"""Search spaces: YAML validation, sampling valid monotone schedules, schedule -> params."""

import math

import optuna
import pytest
import yaml

from autoprune._io import data_dir
from autoprune.cost.shapes import NEMOTRON_H_8B
from autoprune.errors import ConfigError
from autoprune.plan import plan_reduction
from autoprune.schedule import ModelSignature, Schedule, ScorerConfig
from autoprune.search.space import available_spaces, first_cut_layer, load_space

SIG = ModelSignature("synthetic", NEMOTRON_H_8B.layer_kinds)
SMALL = ModelSignature("synthetic", "*-M-M*-M-")
V = 4096


def _write(tmp_path, data, name="space.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def _base():
    return yaml.safe_load((data_dir("search_spaces") / "progressive.yaml").read_text())


def test_packaged_spaces_load():
    assert {"progressive", "per_layer", "fixed_scorer"} <= set(available_spaces())
    for name in available_spaces():
        sp = load_space(name)
        assert sp.name == name
        assert sp.distributions(SIG)


@pytest.mark.parametrize("where", ["top", "schedule", "scorer", "range"])
def test_unknown_key_names_the_key_and_the_file(tmp_path, where):
    data = _base()
    if where == "top":
        data["colour"] = 1
    elif where == "schedule":
        data["schedule"]["colour"] = 1
    elif where == "scorer":
        data["scorer"]["colour"] = 1
    else:
        data["scorer"]["state_momentum"]["colour"] = 1
    p = _write(tmp_path, data)
    with pytest.raises(ConfigError) as e:
        load_space(p)
    assert "colour" in str(e.value) and str(p) in str(e.value)


@pytest.mark.parametrize("mutate,fragment", [
    (lambda d: d["scorer"].update(state_momentum={"low": 0.0, "high": 1.0}), "state_momentum"),
    (lambda d: d["scorer"].update(w_attn={"low": -1.0, "high": 1.0}), "w_attn"),
    (lambda d: d["scorer"].update(head_agg=["mean", "median"]), "head_agg"),
    (lambda d: d["scorer"].update(evidence_window={"low": 0, "high": 3}), "evidence_window"),
    (lambda d: d["schedule"].update(retention={"low": 0.0, "high": 1.0}), "retention"),
    (lambda d: d["schedule"].update(stages={"low": 3, "high": 2}), "stages"),
    (lambda d: d["schedule"].update(kind="zigzag"), "kind"),
    (lambda d: d["scorer"].update(w_attn=0.0, w_mamba=0.0), "both fixed at 0"),
])
def test_invalid_values_raise_config_error(tmp_path, mutate, fragment):
    data = _base()
    mutate(data)
    with pytest.raises(ConfigError, match=fragment):
        load_space(_write(tmp_path, data))


def test_unknown_space_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="progressive"):
        load_space("nonexistent")


def _sampled(space_name, sig, n=60, seed=0):
    space = load_space(space_name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        t = study.ask()
        out.append((space.sample(t, sig), dict(t.params)))
        study.tell(t, 0.0)
    return space, out


@pytest.mark.parametrize("space_name", ["progressive", "per_layer", "fixed_scorer"])
@pytest.mark.parametrize("sig", [SIG, SMALL], ids=["nemotron-h-8b", "small"])
def test_sampled_schedules_are_valid_monotone_and_plannable(space_name, sig):
    space, samples = _sampled(space_name, sig)
    names = set(space.distributions(sig))
    for s, params in samples:
        assert set(params) == names  # fixed dimension, every trial
        assert s.keep[0] == 1.0 and all(a >= b for a, b in zip(s.keep, s.keep[1:]))
        plan_reduction(s, sig.layer_kinds, V)  # raises if a prune point lacks evidence


def test_fixed_scorer_space_never_changes_the_scorer():
    space, samples = _sampled("fixed_scorer", SIG, n=10)
    assert {s.scorer for s, _ in samples} == {space.default_scorer()}


def test_cut_before_any_enabled_evidence_layer_is_moved_after_it():
    space = load_space("progressive")
    sig = ModelSignature("synthetic", "-M--*-M-")  # first Mamba at 1, first attention at 4
    params = {"n_stages": 1, "cut_1": 2, "retention_1": 0.5, "cut_2": 2, "retention_2": 1.0, "cut_3": 2,
              "retention_3": 1.0, "cut_4": 2, "retention_4": 1.0, "state_momentum": 0.5, "w_attn": 1.0,
              "w_mamba": 0.0, "mamba_decay": False, "head_agg": "mean", "evidence_window": 2}
    s = space.schedule_from_params(params, sig)
    assert s.prune_layers(V) == [5]  # the first attention layer is 4: cuts move to 5
    plan_reduction(s, sig.layer_kinds, V)
    assert first_cut_layer(sig) == 2


@pytest.mark.parametrize("space_name", ["progressive", "per_layer"])
def test_params_for_round_trips_sampled_schedules(space_name):
    space, samples = _sampled(space_name, SIG, n=30, seed=1)
    for s, _ in samples:
        params = space.params_for(s, SIG)
        if params is None:  # e.g. two stages at one cut whose product is below the retention range
            continue
        back = space.schedule_from_params(params, SIG)
        assert back.scorer == s.scorer
        assert all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(back.keep, s.keep))
        assert back.tokens_per_layer(V) == s.tokens_per_layer(V)


@pytest.mark.parametrize("space_name", ["progressive", "per_layer"])
def test_params_for_expresses_the_identity_and_a_pyramid(space_name):
    space = load_space(space_name)
    L = SIG.num_layers
    for s in (Schedule.identity(L, model=SIG),
              Schedule.from_stages([(0, 1.0), (1, 0.6), (14, 0.36), (27, 0.216), (40, 0.1296)], L, model=SIG)):
        params = space.params_for(s, SIG)
        assert params is not None
        assert space.distributions(SIG).keys() == params.keys()
        back = space.schedule_from_params(params, SIG)
        assert back.tokens_per_layer(V) == s.tokens_per_layer(V)


def test_params_for_refuses_what_the_space_cannot_express():
    space = load_space("progressive")
    L = SIG.num_layers
    assert space.params_for(Schedule.from_stages([(0, 1.0), (5, 0.01)], L, model=SIG), SIG) is None  # retention
    five = [(0, 1.0)] + [(i, 0.9 ** i) for i in (3, 6, 9, 12, 15)]
    assert space.params_for(Schedule.from_stages(five, L, model=SIG), SIG) is None  # too many stages
    odd = Schedule.identity(L, model=SIG, scorer=ScorerConfig(state_momentum=0.95))
    assert space.params_for(odd, SIG) is None  # knob out of range
    assert load_space("fixed_scorer").params_for(
        Schedule.identity(L, model=SIG, scorer=ScorerConfig(head_agg="max")), SIG) is None  # fixed knob differs


def _budgeted(tmp_path, warm_start):
    data = yaml.safe_load((data_dir("search_spaces") / "budgeted.yaml").read_text())
    data["schedule"]["warm_start"] = warm_start
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump(data))
    return load_space(p)


def test_warm_starts_cut_after_each_attention_layer_and_vary_one_categorical_knob_at_a_time(tmp_path):
    space = _budgeted(tmp_path, True)
    sig = ModelSignature(family="nemotron_h", layer_kinds="M*M-M*M-M*M-")
    starts = space.warm_starts(sig)
    dists = space.distributions(sig)
    choices = {n: k.choices for n, k in space.scorer if hasattr(k, "choices")}
    assert len(starts) == 1 + sum(len(c) - 1 for c in choices.values())
    defaults = space.default_scorer()
    for p in starts:
        assert set(p) == set(dists) and all(dists[n]._contains(dists[n].to_internal_repr(v)) for n, v in p.items())
        keep = space.schedule_from_params(p, sig).keep
        assert [i for i in range(1, 12) if keep[i] < keep[i - 1]] == [2, 6, 10]
        changed = [n for n in choices if p[n] != getattr(defaults, n)]
        assert len(changed) <= 1
    assert space.warm_starts(ModelSignature(family="nemotron_h", layer_kinds="MMM-MMM-")) == []


def test_warm_starts_cut_after_the_attention_of_two_mixer_layers_too(tmp_path):
    space = _budgeted(tmp_path, True)
    sig = ModelSignature(family="zamba2", layer_kinds="MMSMMMSMMMSM")  # S: shared attention, then Mamba2
    starts = space.warm_starts(sig)
    assert starts
    keep = space.schedule_from_params(starts[0], sig).keep
    assert [i for i in range(1, 12) if keep[i] < keep[i - 1]] == [3, 7, 11]


def test_no_warm_starts_unless_the_space_asks_for_them(tmp_path):
    space = _budgeted(tmp_path, False)
    assert space.warm_starts(ModelSignature(family="nemotron_h", layer_kinds="M*M-M*M-M*M-")) == []
    with pytest.raises(ConfigError, match="warm_start"):
        _budgeted(tmp_path, "yes")
