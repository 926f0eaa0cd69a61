"""Pareto export (autoprune.search.export): files, index and trials.csv of a finished study."""

import json
import math

import optuna
import pandas as pd
import pytest

from autoprune.cost.gpus import resolve
from autoprune.cost.shapes import TokenLayout
from autoprune.models.synthetic import SyntheticLatency
from autoprune.schedule import Schedule
from autoprune.search.config import SearchConfig
from autoprune.search.export import export_study
from autoprune.search.run import run_search


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "runs"
    # the progressive space: its random candidates include ones rejected over the budget
    r = run_search(SearchConfig(model="synthetic", gpu="a100", budget="4x", trials=24, sampler="random", seed=1,
                                space="progressive", out=str(out), show_progress=False), log=quiet)
    return r


def _front_from_csv(path, budget_ms):
    """Independent dominance check: feasible rows (COMPLETE, latency <= budget), score up, latency down."""
    df = pd.read_csv(path)
    rows = [(int(r["number"]), float(r["score"]), float(r["latency_ms"])) for _, r in df.iterrows()
            if r["state"] == "COMPLETE" and float(r["latency_ms"]) <= budget_ms]
    front = set()
    for n, s, t in rows:
        beaten = any((s2 >= s and t2 <= t) and (s2 > s or t2 < t) for m, s2, t2 in rows if m != n)
        if not beaten:
            front.add(n)
    return front


def test_exported_set_is_the_feasible_non_dominated_set_of_trials_csv(run):
    index = json.loads((run.run_dir / "pareto.json").read_text())
    budget_ms = index["target"]["budget_ms"]
    expected = _front_from_csv(run.run_dir / "trials.csv", budget_ms)
    files = {int(p.stem.split("-")[1]) for p in (run.run_dir / "pareto").glob("trial-*.json")}
    assert expected and files == expected
    assert {e["trial"] for e in index["schedules"]} == expected
    df = pd.read_csv(run.run_dir / "trials.csv")
    assert len(df) == 24
    assert df["state"].eq("PRUNED").any(), "random candidates include rejected ones: they must not be exported"


def test_the_export_agrees_with_optunas_best_trials(run):
    study = optuna.load_study(study_name=run.study_name, storage=f"sqlite:///{run.run_dir / 'study.db'}")
    assert sorted(t.number for t in study.best_trials) == run.export.pareto
    assert run.export.agrees_with_optuna and not run.export.warnings


def test_every_exported_schedule_loads_and_meets_the_budget_by_its_latency_source(run):
    index = json.loads((run.run_dir / "pareto.json").read_text())
    budget_ms = index["target"]["budget_ms"]
    for entry in index["schedules"]:
        s = Schedule.load(run.run_dir / entry["file"])
        m = s.metrics
        assert m["latency_ms"] <= budget_ms and m["speedup"] >= 4.0 * (1 - 1e-12)
        assert m["latency_source"] == "roofline"
        # the named source gives the same latency again
        again = SyntheticLatency(s.model, TokenLayout(64, 8192, 32), resolve(s.target.gpu)).estimate(s)
        assert again.source == m["latency_source"] and again.latency_ms == pytest.approx(m["latency_ms"])
        assert again.latency_ms <= budget_ms
        assert m["accuracy"] == m["score"] and m["baseline_accuracy"] == pytest.approx(0.72)
        assert m["ci_low"] <= m["score"] <= m["ci_high"]
        p = s.provenance
        assert p["study"] == run.study_name and p["trial"] == entry["trial"]
        assert p["autoprune"] and p["created"].endswith("Z") and p["sampler"] == "random" and p["seed"] == 1
        assert s.target.budget == "4x" and s.target.gpu == "a100-sxm4-80gb"


def test_trials_csv_has_one_row_per_trial_with_keep_constraint_state_and_reference(run):
    df = pd.read_csv(run.run_dir / "trials.csv")
    assert list(df["number"]) == list(range(24))
    for col in ("state", "reference", "score", "latency_ms", "constraint", "feasible", "latency_source", "keep",
                "param.n_stages", "scorer.state_momentum", "rejected"):
        assert col in df.columns
    refs = df[df["reference"].notna()]
    assert list(refs["number"]) == list(range(len(refs)))  # the references come first
    assert {"none", "pyramid", "high_to_low", "low_to_high"} <= set(refs["reference"])
    assert any(r.startswith("fastv@") for r in refs["reference"])
    keep = json.loads(df["keep"][1])
    assert keep[0] == 1.0 and len(keep) == 52
    done = df[df["state"] == "COMPLETE"]
    assert ((done["constraint"] <= 0) == done["feasible"]).all()


def test_a_later_export_removes_schedules_that_left_the_front(run, tmp_path):
    stale = run.run_dir / "pareto" / "trial-9999.json"
    stale.write_text("{}")
    study = optuna.load_study(study_name=run.study_name, storage=f"sqlite:///{run.run_dir / 'study.db'}")
    res = export_study(study, run.run_dir)
    assert not stale.exists()
    assert sorted(p.name for p in (run.run_dir / "pareto").iterdir()) == [f"trial-{n:04d}.json" for n in res.pareto]


def test_summary_lists_references_and_the_front(run):
    text = run.export.summary
    assert "baseline accuracy 0.7200" in text
    df = pd.read_csv(run.run_dir / "trials.csv")
    for name in df["reference"].dropna():
        assert name in text


def test_energy_is_exported_when_it_is_an_objective(tmp_path):
    r = run_search(SearchConfig(model="synthetic", gpu="auto", budget="2x", measure=True, trials=8,
                                references=("none", "fastv"),
                                objectives=("score", "latency", "energy"), out=str(tmp_path / "runs"),
                                show_progress=False), log=quiet)
    assert r.export.pareto
    for f in r.export.files:
        m = Schedule.load(f).metrics
        assert m["latency_source"] == "cpu-measured" and m["energy_j"] > 0
    df = pd.read_csv(r.run_dir / "trials.csv")
    assert df.loc[df["state"] == "COMPLETE", "energy_j"].notna().all()
    assert not any(math.isnan(x) for x in df.loc[df["pareto"], "energy_j"])


def test_every_schedule_and_the_index_carry_the_full_provenance_block(run):
    index = json.loads((run.run_dir / "pareto.json").read_text())
    blocks = [index["provenance"]] + [Schedule.load(run.run_dir / e["file"]).provenance for e in index["schedules"]]
    for p in blocks:
        env = p["environment"]
        assert {"torch", "transformers", "optuna", "autoprune"} <= {k for k, v in env["versions"].items() if v}
        assert "git_commit" in env and env["command"] and env["host"] and env["created"].endswith("Z")
        lat = p["latency"]
        assert lat["gpu"] == "a100-sxm4-80gb" and lat["baseline_source"] == "roofline"
        tok = p["tokens"]
        assert tok["served_visual"] == 8192 and tok["evaluated_visual"] and 0 < tok["floor"] < 1 and tok["floor_reason"]
        assert "search" in p["evaluation"] and p["model"] == "synthetic" and p["metric"] == "accuracy"
