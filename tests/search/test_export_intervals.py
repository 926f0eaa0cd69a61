"""The latency interval through the search: exported with each schedule, and a feasible schedule
whose upper bound misses the budget marked in trials.csv, the schedule JSON and the report."""

import dataclasses
import json

import pandas as pd
import pytest

from autoprune.models.synthetic import SyntheticLatency
from autoprune.search.config import SearchConfig
from autoprune.search.run import run_search


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    plain = SyntheticLatency.estimate

    def with_interval(self, schedule):  # ±15 %: wide enough that schedules near the budget reach past it
        est = plain(self, schedule)
        return dataclasses.replace(est, low_ms=est.latency_ms / 1.15, high_ms=est.latency_ms * 1.15,
                                   interval_level=0.9)

    mp = pytest.MonkeyPatch()
    mp.setattr(SyntheticLatency, "estimate", with_interval)
    try:
        out = tmp_path_factory.mktemp("intervals") / "runs"
        yield run_search(SearchConfig(model="synthetic", gpu="a100", budget="4x", trials=16, sampler="random",
                                      seed=2, space="progressive", out=str(out), show_progress=False),
                         log=lambda *_: None)
    finally:
        mp.undo()


def test_trials_csv_has_the_interval_and_marks_upper_bounds_over_budget(run):
    df = pd.read_csv(run.run_dir / "trials.csv")
    budget = json.loads((run.run_dir / "pareto.json").read_text())["target"]["budget_ms"]
    done = df[df["state"] == "COMPLETE"]
    assert (done["latency_high_ms"] > done["latency_ms"]).all()
    expected = df["feasible"] & (df["latency_high_ms"] > budget)
    assert df["upper_over_budget"].tolist() == expected.tolist()
    assert expected.any(), "with a ±15 % interval some feasible schedule reaches past the budget"


def test_each_exported_schedule_carries_its_interval_and_the_mark(run):
    budget = json.loads((run.run_dir / "pareto.json").read_text())["target"]["budget_ms"]
    for path in (run.run_dir / "pareto").glob("trial-*.json"):
        m = json.loads(path.read_text())["metrics"]
        low, high = m["latency_interval_ms"]
        assert low < m["latency_ms"] < high and m["latency_interval_level"] == 0.9
        assert m["latency_upper_over_budget"] == (high > budget)


def test_the_report_names_the_schedules_whose_upper_bound_misses_the_budget(run):
    from autoprune.report import report_run_dir

    report_run_dir(run.run_dir, log=lambda *_: None)
    text = (run.run_dir / "report.md").read_text()
    df = pd.read_csv(run.run_dir / "trials.csv")
    exported = {int(p.stem.split("-")[1]) for p in (run.run_dir / "pareto").glob("trial-*.json")}
    marked = [n for n in df[df["upper_over_budget"]]["number"] if n in exported]
    unmarked = exported - set(marked)
    assert marked, "the front's fastest-feasible end sits near the budget: its ±15 % reaches past it"
    assert "Upper bound over budget" in text and all(f"#{n} (up to" in text for n in marked)
    assert not any(f"#{n} (up to" in text for n in unmarked)


def test_the_printed_summary_shows_the_upper_bound_and_names_the_trials_it_misses(run):
    assert "latency_high_ms" in run.export.summary
    df = pd.read_csv(run.run_dir / "trials.csv")
    marked = sorted(int(n) for n in df[df["upper_over_budget"] & df["pareto"]]["number"])
    assert f"trial(s) {marked}" in run.export.summary
