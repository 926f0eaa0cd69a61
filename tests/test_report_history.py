"""Search progress and hypervolume (autoprune/report/history.py), checked against Optuna's own."""

import random

import numpy as np
import pytest
from optuna._hypervolume import compute_hypervolume
from optuna.visualization._hypervolume_history import _get_hypervolume_history_info

from autoprune.report.context import load_context
from autoprune.report.history import draw_history, history_figure_data, hypervolume_2d
from report_helpers import make_study, references, trial


@pytest.mark.parametrize("seed", range(5))
def test_the_2d_sweep_equals_optunas_hypervolume(seed):
    rng = random.Random(seed)
    pts = [(rng.uniform(0.2, 0.8), rng.uniform(10, 120)) for _ in range(rng.randint(1, 25))]
    ref_latency = 100.0
    ours = hypervolume_2d(pts, ref_score=0.0, ref_latency=ref_latency)
    inside = np.array([(-s, lat) for s, lat in pts if lat <= ref_latency] or np.zeros((0, 2)))
    theirs = compute_hypervolume(inside.reshape(-1, 2), np.array([0.0, ref_latency])) if len(inside) else 0.0
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-12)


def test_points_outside_the_reference_box_add_nothing():
    assert hypervolume_2d([(0.5, 150.0), (-0.1, 10.0)], ref_score=0.0, ref_latency=100.0) == 0.0
    assert hypervolume_2d([(0.5, 50.0)], ref_score=0.0, ref_latency=100.0) == pytest.approx(25.0)


def _study():
    rng = random.Random(3)
    trials = references()
    for i in range(20):
        if i % 7 == 3:
            trials.append(trial("PRUNED", latency=150.0, rejected="over"))
        elif i % 9 == 5:
            trials.append(trial("FAIL", fail_reason="MemoryError"))
        else:
            trials.append(trial(score=rng.uniform(0.25, 0.5), latency=rng.uniform(40, 130)))
    return make_study(trials)


def test_the_history_matches_optunas_hypervolume_history_at_every_completed_trial():
    study = _study()
    ctx = load_context(study)
    data = history_figure_data(ctx)
    # Same reference point (score 0, the unreduced latency); Optuna's history covers COMPLETE trials only and
    # reads feasibility from the stored constraints, which agree with the budget here.
    info = _get_hypervolume_history_info(study, np.array([0.0, ctx.baseline_ms]))
    ours = dict(data.hypervolume)
    for n, v in zip(info.trial_numbers, info.values):
        assert ours[n] * ctx.baseline_ms == pytest.approx(v, rel=1e-9, abs=1e-9)
    assert data.ref_point == (0.0, ctx.baseline_ms)


def test_every_trial_is_marked_with_its_state_and_the_best_feasible_score_never_drops():
    study = _study()
    data = history_figure_data(load_context(study))
    assert [m.number for m in data.trials] == list(range(25))
    states = {m.state for m in data.trials}
    assert states == {"COMPLETE", "PRUNED", "FAIL"}
    assert {m.status for m in data.trials} == {"feasible", "over budget", "rejected", "failed"}
    assert all((m.status == "rejected") == (m.state == "PRUNED") for m in data.trials)
    assert all(m.score is None for m in data.trials if m.state != "COMPLETE")
    best = [b for _, b in data.best]
    assert best == sorted(best)
    feasible = [m.score for m in data.trials if m.feasible]
    assert best[-1] == max(feasible)
    hv = [v for _, v in data.hypervolume]
    assert hv == sorted(hv) and 0 < hv[-1] < 1


def test_the_drawing_shows_scores_a_status_strip_best_so_far_and_hypervolume():
    data = history_figure_data(load_context(_study()))
    fig = draw_history(data)
    ax, strip, hx = fig.axes[:3]
    labels = {c.get_label() for c in ax.collections}
    assert {"feasible trials", "evaluated, over budget", "reference: uniform"} <= labels
    assert len(strip.patches) == len(data.trials)  # one status cell per trial
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"status: rejected (3)", "status: failed (2)"} <= set(legend)
    assert {"best feasible so far", "unreduced accuracy"} <= {ln.get_label() for ln in ax.lines}
    (hv_line,) = hx.lines
    assert list(hv_line.get_ydata()) == [v for _, v in data.hypervolume]
    assert ax.get_ylabel().startswith("accuracy") and "hypervolume" in hx.get_ylabel()


def test_a_study_without_feasible_trials_has_zero_hypervolume_and_says_so():
    study = make_study([trial(score=0.72, latency=400.0, reference="none"), trial("FAIL", fail_reason="x")])
    data = history_figure_data(load_context(study))
    assert [v for _, v in data.hypervolume] == [0.0, 0.0] and data.best == ()
    assert "no feasible trial" in data.message
    draw_history(data)
