"""The schedule figure (autoprune/report/schedules.py): keep ratio vs layer, layer kinds along depth."""

import numpy as np

from autoprune.report.context import load_context
from autoprune.report.schedules import MAX_EXPORTED_LINES, draw_schedules, schedule_figure_data
from report_helpers import LAYER_KINDS, make_study, references, trial

KEEP_A = [1.0, 1.0, 0.5, 0.5, 0.2, 0.2, 0.2, 0.1, 0.1, 0.1]
KEEP_B = [1.0, 0.6, 0.6, 0.6, 0.4, 0.4, 0.3, 0.3, 0.3, 0.3]


def _study():
    return make_study(references() + [trial(score=0.35, latency=60.0, keep=KEEP_A),
                                      trial(score=0.46, latency=99.0, keep=KEEP_B)])


def test_one_line_per_exported_schedule_fastest_first_then_the_other_references():
    data = schedule_figure_data(load_context(_study()))
    exported = [ln for ln in data.lines if ln.role == "exported"]
    refs = [ln for ln in data.lines if ln.role == "reference"]
    assert [ln.number for ln in exported] == [5, 6]
    assert exported[0].keep == tuple(KEEP_A) and exported[1].keep == tuple(KEEP_B)
    assert exported[0].label.startswith("#5: 60.0 ms, 6.67×, accuracy 0.350")
    assert [ln.reference for ln in refs] == ["none", "uniform", "fastv", "pyramid", "high_to_low"]
    assert refs[3].label.startswith("ref. PyramidDrop-like (#3")
    assert data.lines.index(exported[-1]) < data.lines.index(refs[0])  # exported first


def test_layer_kinds_are_counted_and_named():
    data = schedule_figure_data(load_context(_study()))
    assert data.layer_kinds == LAYER_KINDS
    assert [(k.letter, k.name, k.count) for k in data.kinds] == [("M", "Mamba", 5), ("*", "attention", 2),
                                                                  ("-", "MLP", 3)]


def test_an_exported_reference_is_drawn_once_as_exported():
    study = make_study(references(scores={"uniform": 0.5}))
    data = schedule_figure_data(load_context(study))
    assert [(ln.number, ln.role) for ln in data.lines if ln.reference == "uniform"] == [(1, "exported")]


def test_many_exported_schedules_are_thinned_and_the_rest_named_in_a_note():
    trials = [trial(score=0.30 + 0.005 * i, latency=50.0 + 2 * i) for i in range(MAX_EXPORTED_LINES + 5)]
    data = schedule_figure_data(load_context(make_study(trials)))
    exported = [ln for ln in data.lines if ln.role == "exported"]
    assert len(exported) == MAX_EXPORTED_LINES
    assert exported[0].number == 0 and exported[-1].number == MAX_EXPORTED_LINES + 4  # both ends kept
    assert data.note.startswith("5 more exported schedules not drawn")


def test_the_drawing_has_a_step_line_per_schedule_and_a_layer_kind_strip():
    data = schedule_figure_data(load_context(_study()))
    fig = draw_schedules(data)
    ax, strip = fig.axes[:2]
    labels = [ln.get_label() for ln in ax.lines]
    assert labels == [ln.label for ln in data.lines]
    first = ax.lines[0]
    assert first.get_drawstyle() == "steps-post"
    assert np.allclose(first.get_ydata(), KEEP_A + [KEEP_A[-1]])
    assert ax.get_ylabel().startswith("keep ratio") and strip.get_xlabel() == "decoder layer"
    (img,) = strip.images
    assert img.get_array().shape == (1, len(LAYER_KINDS))
    kinds = [t.get_text() for t in fig.legends[0].get_texts()]
    assert kinds == ["Mamba (5)", "attention (2)", "MLP (3)"]


def test_no_exported_schedule_says_so_and_still_shows_the_references():
    study = make_study([trial(score=0.72, latency=400.0, reference="none"), trial(score=0.4, latency=150.0)])
    data = schedule_figure_data(load_context(study))
    assert "no exported schedule" in data.message and [ln.reference for ln in data.lines] == ["none"]
    draw_schedules(data)


def test_thinning_keeps_the_exported_references_and_the_best_schedule():
    trials = [trial(score=0.30 + 0.004 * i, latency=40.0 + 2 * i) for i in range(MAX_EXPORTED_LINES + 6)]
    trials[7] = trial(score=0.30 + 0.004 * 7, latency=40.0 + 2 * 7, reference="fastv")
    data = schedule_figure_data(load_context(make_study(trials)))
    numbers = [ln.number for ln in data.lines if ln.role == "exported"]
    assert len(numbers) == MAX_EXPORTED_LINES and 7 in numbers and MAX_EXPORTED_LINES + 5 in numbers
    assert numbers == sorted(numbers)  # still fastest first
