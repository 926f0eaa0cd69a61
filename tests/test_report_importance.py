"""Scorer-knob importance (autoprune/report/importance.py): Optuna's evaluators, or a note why not."""

import importlib.util
import random

import pytest

from autoprune.report.context import load_context
from autoprune.report.importance import MIN_TRIALS, draw_importance, importance_data, searched_knobs
from autoprune.search.space import space_from_dict
from report_helpers import DEFAULT_SCORER, SPACE_SPEC, make_study, trial


def _study(n, *, seed=0):
    rng = random.Random(seed)
    trials = []
    for _ in range(n):
        m = rng.uniform(0.0, 0.9)
        knobs = {"state_momentum": m, "w_attn": rng.uniform(0, 1), "w_mamba": rng.uniform(0, 1),
                 "mamba_decay": rng.random() < 0.5, "head_agg": rng.choice(["mean", "max"]),
                 "evidence_window": rng.randint(1, 4)}
        # The score depends on state_momentum only.
        trials.append(trial(score=0.6 - (m - 0.6) ** 2, latency=rng.uniform(60, 99), knobs=knobs))
    return make_study(trials)


def test_the_searched_knobs_are_the_ranges_and_choices_of_the_space():
    space = space_from_dict(SPACE_SPEC)
    assert searched_knobs(space) == ("state_momentum", "w_attn", "w_mamba", "evidence_window", "mamba_decay",
                                     "head_agg")


def test_the_knob_that_drives_the_score_ranks_first():
    study = _study(40)
    data = importance_data(load_context(study), study)
    assert data.available and data.n_trials == 40 and data.evaluator.startswith("PED-ANOVA")
    assert data.params[0] == "state_momentum"
    assert set(data.params) == set(searched_knobs(space_from_dict(SPACE_SPEC)))
    assert sum(data.values) == pytest.approx(1.0)
    assert list(data.values) == sorted(data.values, reverse=True)


def test_the_chart_has_one_bar_per_knob_most_important_on_top():
    study = _study(30)
    data = importance_data(load_context(study), study)
    fig = draw_importance(data)
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names == list(reversed(data.params))
    assert [round(p.get_width(), 9) for p in ax.patches] == [round(v, 9) for v in reversed(data.values)]
    assert "accuracy" in ax.get_xlabel()


def test_too_few_completed_trials_give_a_note_not_an_error():
    study = _study(MIN_TRIALS - 1)
    data = importance_data(load_context(study), study)
    assert not data.available and "too few completed trials" in data.note and data.n_trials == MIN_TRIALS - 1


def test_a_space_that_fixes_every_knob_gives_a_note():
    spec = dict(SPACE_SPEC, name="fixed_scorer", scorer=dict(DEFAULT_SCORER))
    study = make_study([trial(score=0.4, latency=80.0) for _ in range(12)], space_spec=spec)
    data = importance_data(load_context(study), study)
    assert not data.available and "fixes every scorer knob" in data.note


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is not None, reason="scikit-learn is installed here")
def test_fanova_without_scikit_learn_falls_back_to_ped_anova_with_a_note():
    study = _study(20)
    data = importance_data(load_context(study), study, evaluator="fanova")
    assert data.available and data.evaluator.startswith("PED-ANOVA")
    assert "scikit-learn" in data.note


def test_an_evaluator_error_becomes_a_note(monkeypatch):
    import optuna

    def boom(*a, **k):
        raise FloatingPointError("singular")

    monkeypatch.setattr(optuna.importance, "get_param_importances", boom)
    study = _study(20)
    data = importance_data(load_context(study), study)
    assert not data.available and "FloatingPointError: singular" in data.note
