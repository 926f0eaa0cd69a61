"""The report's tables (autoprune/report/tables.py): numbers straight from the study's trials."""

import pytest
from optuna.trial import TrialState

from autoprune.report.context import load_context
from autoprune.report.tables import comparison_rows, header_facts, reference_rows
from autoprune.search.records import read_trial
from report_helpers import make_study, references, trial


@pytest.fixture(scope="module")
def study():
    trials = references(at={"fastv": 80.0}) + [
        trial(score=0.34, latency=55.0),  # 5: no reference within 5%
        trial(score=0.445, latency=81.0),  # 6: FastV-like at 80 ms (0.44) is within 5%
        trial(score=0.46, latency=99.5),  # 7: uniform, pyramid, high-to-low at 99.9 ms are within 5%
        trial("PRUNED", latency=150.0, rejected="cannot meet the budget"),
        trial("FAIL", fail_reason="MemoryError: synthetic out-of-memory"),
    ]
    return make_study(trials)


def test_each_row_carries_the_trials_own_numbers(study):
    ctx = load_context(study)
    rows = comparison_rows(ctx)
    by_number = {t.number: t for t in study.trials}
    none = next(t for t in study.trials if t.user_attrs.get("reference") == "none")
    assert [r.number for r in rows] == [5, 2, 6, 7]  # the FastV-like reference (#2) is on the front too
    for r in rows:
        t = by_number[r.number]
        assert t.state == TrialState.COMPLETE
        assert r.score == t.values[0] and r.latency_ms == t.values[1]
        assert r.speedup == pytest.approx(400.0 / t.values[1])
        assert r.delta_vs_unreduced == pytest.approx(t.values[0] - none.values[0])
        rec = read_trial(t)
        assert (r.ci_low, r.ci_high) == tuple(rec.result["ci"])
        assert r.latency_source == rec.latency.source and r.gpu == "A100-SXM4-80GB"
        assert r.energy_j is None


def test_the_best_reference_within_the_latency_window_is_the_comparison(study):
    rows = {r.number: r for r in comparison_rows(load_context(study), tolerance=0.05)}
    assert rows[5].matches == () and rows[5].nearest.name == "fastv"  # 80 ms is the nearest, but 45% away
    assert rows[5].nearest.latency_gap == pytest.approx(80.0 / 55.0 - 1)
    assert [m.name for m in rows[6].matches] == ["fastv"] and rows[6].nearest is None
    assert rows[6].matches[0].gain == pytest.approx(0.445 - 0.44)
    assert rows[2].reference == "fastv" and rows[2].matches == ()
    assert rows[2].nearest.name == "pyramid"  # three references tie on latency: the best-scoring is named
    assert [m.name for m in rows[7].matches] == ["pyramid", "high_to_low", "uniform"]  # best score first
    assert rows[7].matches[0].gain == pytest.approx(0.46 - 0.45)


def test_a_wider_window_admits_more_references(study):
    rows = {r.number: r for r in comparison_rows(load_context(study), tolerance=0.30)}
    assert {m.name for m in rows[6].matches} == {"fastv", "uniform", "pyramid", "high_to_low"}


def test_the_unreduced_reference_is_never_a_competitor_and_an_exported_reference_is_not_its_own():
    study = make_study(references(scores={"pyramid": 0.5}))
    rows = comparison_rows(load_context(study))
    assert [(r.number, r.reference) for r in rows] == [(3, "pyramid")]
    assert "pyramid" not in [m.name for m in rows[0].matches]
    assert all(m.name != "none" for m in rows[0].matches)


def test_reference_rows_list_every_reference_with_its_state(study):
    refs = reference_rows(load_context(study))
    assert [r.name for r in refs] == ["none", "uniform", "fastv", "pyramid", "high_to_low"]
    none = refs[0]
    assert none.score == 0.72 and none.delta_vs_unreduced == 0.0 and not none.feasible and none.note == "over budget"


def test_header_counts_trials_by_state(study):
    facts = dict(header_facts(load_context(study)))
    assert facts["trials"].startswith("10: 8 complete (7 within the budget), 1 pruned")  # 'none' is over
    assert "1 failed" in facts["trials"]
    assert facts["budget"].startswith("4x: ≤ 100.00 ms (unreduced 400.00 ms)")
    assert facts["GPU"] == "A100-SXM4-80GB; predicted latency on A100-SXM4-80GB (roofline)"
    assert "sampler tpe" in facts["search"] and facts["study"] == "fake-a100-4x"


def test_energy_is_carried_when_the_study_measured_it():
    trials = [trial(score=0.72, latency=400.0, reference="none", energy=100.0),
              trial(score=0.40, latency=90.0, energy=22.5)]
    study = make_study(trials, objectives=("score", "latency", "energy"))
    (row,) = comparison_rows(load_context(study))
    assert row.energy_j == 22.5


def test_the_header_names_the_latency_table_its_range_and_an_extrapolation():
    from autoprune.report.tables import provenance_facts

    lat = {"source": "table", "extrapolated": True,
           "table": {"path": "profiles/measured/cpu/x.json", "found": True,
                     "measured_tokens": {"mamba": [64, 16384], "attention": [128, 128]}},
           "beyond_measured": ["attention at 16480 tokens (measured 128..128)"]}
    facts = dict(provenance_facts({"latency": lat}))
    assert facts["latency table"] == ("profiles/measured/cpu/x.json (found in the table folders); measured tokens: "
                                      "mamba 64..16384, attention 128..128")
    assert facts["latency warning"] == ("predictions extrapolated beyond the measured table: attention at 16480 "
                                        "tokens (measured 128..128)")
    assert "latency warning" not in dict(provenance_facts({"latency": {**lat, "extrapolated": False}}))
