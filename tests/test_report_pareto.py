"""The Pareto figure (autoprune/report/pareto.py): its data object, then lightly its artists."""

import pytest

from autoprune.report.context import load_context
from autoprune.report.pareto import AXES, FIGSIZE, draw_pareto, pareto_figure_data
from report_helpers import make_study, references, trial


@pytest.fixture(scope="module")
def study():
    trials = references() + [
        trial(score=0.34, latency=55.0),  # 5: front, fastest
        trial(score=0.37, latency=70.0),  # 6: front
        trial(score=0.36, latency=80.0),  # 7: dominated by 6
        trial(score=0.39, latency=98.0),  # 8: front
        trial(score=0.455, latency=99.85),  # 9: front, beats every reference (they sit at 99.9 ms)
        trial(score=0.50, latency=130.0),  # 10: evaluated, over budget
        trial("PRUNED", latency=180.0, rejected="cannot meet the budget"),  # 11
        trial("FAIL", fail_reason="MemoryError: out of memory"),  # 12
    ]
    return make_study(trials)


@pytest.fixture(scope="module")
def data(study):
    return pareto_figure_data(load_context(study))


def test_the_front_is_the_feasible_non_dominated_set_fastest_first(data):
    assert [p.number for p in data.front] == [5, 6, 8, 9]
    assert [p.latency_ms for p in data.front] == sorted(p.latency_ms for p in data.front)
    assert all(p.feasible and p.exported for p in data.front)


def test_every_trial_is_in_exactly_one_category_and_failed_ones_are_counted(data):
    assert [p.number for p in data.others] == [7]
    assert [p.number for p in data.over_budget] == [10]
    assert [(p.number, p.score) for p in data.rejected] == [(11, None)]
    assert data.n_failed == 1 and "1 failed trial" in data.footnote
    assert [p.reference for p in data.references] == ["none", "uniform", "fastv", "pyramid", "high_to_low"]
    assert not data.references[0].feasible  # the unreduced model is over any budget < 1x


def test_axes_name_the_metric_the_latency_source_the_gpu_and_the_units(data):
    assert data.ylabel.startswith("accuracy")
    assert "predicted latency on A100-SXM4-80GB (roofline)" in data.xlabel and "[ms]" in data.xlabel
    assert "speedup" in data.top_label and "×" in data.top_label
    assert data.baseline_score == pytest.approx(0.72) and "0.720" in data.baseline_label
    assert data.budget_ms == 100.0 and "4x" in data.budget_label and "100.0 ms" in data.budget_label


def test_the_overview_spans_every_trial_and_the_zoom_spans_the_front_and_the_budget(data):
    a, b = data.panels
    assert a.xscale == "log" and a.xlim[0] < 55.0 and a.xlim[1] > 400.0
    assert a.ylim[0] < 0.34 and a.ylim[1] > 0.72
    assert b.xscale == "linear" and b.xlim[0] < 55.0 < 100.0 < b.xlim[1] < 130.0
    assert set(a.speedup_ticks) >= {1.0, 4.0} and 4.0 in b.speedup_ticks
    assert {100.0, 200.0, 400.0} <= set(a.latency_ticks) and all(a.xlim[0] <= t <= a.xlim[1] for t in a.latency_ticks)


def test_each_exported_schedule_has_one_label_that_overlaps_no_other_label(data):
    labels = data.panels[1].labels
    assert [lab.number for lab in labels] == [5, 6, 8, 9]
    assert [lab.text for lab in labels] == ["#5", "#6", "#8", "#9"]
    assert all(lab.clear for lab in labels)
    w, h = AXES[1][2] * FIGSIZE[0] * 72, AXES[1][3] * FIGSIZE[1] * 72
    for i, lab in enumerate(labels):
        assert lab.box.inside(w, h)
        assert all(lab.box.overlap(other.box) == 0 for other in labels[i + 1:])


def test_an_exported_reference_is_labelled_with_its_name():
    study = make_study(references(scores={"pyramid": 0.5}) + [trial(score=0.3, latency=60.0)])
    data = pareto_figure_data(load_context(study))
    assert [lab.text for lab in data.panels[1].labels] == ["#5", "#3 PyramidDrop-like"]


def test_the_drawing_has_the_series_labels_and_axis_labels_of_the_data(data):
    fig = draw_pareto(data)
    a, b = fig.axes[:2]
    for ax in (a, b):
        assert ax.get_xlabel() == data.xlabel
        labels = {c.get_label() for c in ax.collections}
        assert {"exported", "other feasible", "over budget", "rejected"} <= labels
        assert {"reference: no reduction", "reference: uniform", "reference: FastV-like",
                "reference: PyramidDrop-like", "reference: high-to-low"} <= labels
        lines = {ln.get_label() for ln in ax.lines}
        assert {"budget", "unreduced", "front"} <= lines
    assert a.get_ylabel() == data.ylabel
    assert a.get_xscale() == "log" and b.get_xscale() == "linear"
    assert sorted(t.get_text() for t in b.texts) == ["#5", "#6", "#8", "#9"]
    for ax, panel in zip((a, b), data.panels):
        (top,) = ax.child_axes  # the speedup axis
        assert top.get_xlabel() == data.top_label
        assert [t.get_text() for t in top.get_xticklabels()] == [f"{s:g}×" for s in panel.speedup_ticks]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith("exported Pareto schedules (4)") for t in legend)
    assert any(t.startswith("budget 4x") for t in legend) and any(t.startswith("unreduced accuracy") for t in legend)


def test_no_feasible_trial_gives_an_explaining_panel_not_an_error():
    study = make_study([trial(score=0.72, latency=400.0, reference="none"), trial(score=0.5, latency=150.0),
                        trial("PRUNED", latency=180.0, rejected="over budget")])
    data = pareto_figure_data(load_context(study))
    assert data.front == () and data.panels[1].labels == ()
    assert "no feasible trial" in data.panels[1].message
    fig = draw_pareto(data)
    assert any("no feasible trial" in t.get_text() for t in fig.axes[1].texts)


def test_a_fidelity_study_says_fidelity_and_a_study_without_baseline_draws_no_baseline_line():
    study = make_study([trial(score=0.9, latency=80.0)], metric="fidelity")
    data = pareto_figure_data(load_context(study))
    assert data.ylabel.startswith("fidelity") and data.baseline_score is None and data.baseline_label is None
    assert "no baseline line" in data.footnote
    fig = draw_pareto(data)
    assert "unreduced" not in {ln.get_label() for ln in fig.axes[0].lines}


def test_with_the_energy_objective_the_line_is_the_running_best_and_a_footnote_explains():
    trials = [trial(score=0.40, latency=60.0, energy=30.0),
              trial(score=0.38, latency=70.0, energy=10.0),  # beaten in 2-D by #0, exported for its energy
              trial(score=0.45, latency=90.0, energy=40.0)]
    data = pareto_figure_data(load_context(make_study(trials, objectives=("score", "latency", "energy"))))
    assert [p.number for p in data.front] == [0, 1, 2]
    assert data.staircase == ((60.0, 0.40), (70.0, 0.40), (90.0, 0.45))
    assert "energy" in data.footnote
