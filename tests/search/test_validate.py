"""Validated export (autoprune.search.validate): the search set ranks, a disjoint validation set decides."""

import json

import optuna
import pandas as pd
import pytest

from autoprune.schedule import Schedule
from autoprune.search.config import SearchConfig
from autoprune.search.export import trials_frame
from autoprune.search.records import load_validation
from autoprune.search.run import run_search
from autoprune.search.validate import select_candidates


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("validate") / "runs"
    r = run_search(SearchConfig(model="synthetic", gpu="a100", budget="4x", trials=30, sampler="random", seed=2,
                                references=("none", "fastv", "high_to_low", "pyramid"), out=str(out),
                                model_options={"noise": 0.04, "validation_n": 4000}, show_progress=False), log=quiet)
    study = optuna.load_study(study_name=r.study_name, storage=r.storage_spec.url)
    return r, study


def test_the_search_sets_front_and_the_references_are_validated(run):
    r, study = run
    v = load_validation(study)
    assert v is not None and v["n"] == 4000
    checked = {int(n) for n in v["results"]}
    optuna_front = {t.number for t in study.best_trials}
    assert optuna_front <= checked  # every trial of the search set's front
    refs = {t.number for t in study.trials if t.user_attrs.get("reference")}
    assert refs & checked and r.export.agrees_with_optuna and not r.export.warnings


def test_the_exported_front_is_the_non_dominated_set_of_validation_scores(run):
    r, study = run
    v = load_validation(study)["results"]
    df = pd.read_csv(r.run_dir / "trials.csv")
    feas = df[df["validated"] & df["feasible"]]
    pts = [(int(x.number), v[str(int(x.number))]["score"], float(x.latency_ms)) for x in feas.itertuples()]
    front = {n for n, s, t in pts if not any(s2 >= s and t2 <= t and (s2 > s or t2 < t) for m, s2, t2 in pts if m != n)}
    assert set(r.export.pareto) == front
    for f in r.export.files:
        m = Schedule.load(f).metrics
        n = int(f.stem.split("-")[1])
        assert m["validated"] and m["score"] == v[str(n)]["score"] and m["n"] == 4000
        assert m["search_score"] == float(df.loc[df["number"] == n, "search_score"].iloc[0])


def test_validation_and_search_scores_differ_where_the_sets_disagree(run):
    r, study = run
    df = trials_frame(study)
    val = df[df["validated"] & (df["reference"] != "none")]
    assert (val["score"] != val["search_score"]).any()
    unval = df[~df["validated"] & (df["state"] == "COMPLETE")]
    assert (unval["score"] == unval["search_score"]).all()


def test_sampled_candidates_are_compared_with_the_best_validated_reference_at_no_higher_latency(run):
    r, study = run
    v = load_validation(study)["results"]
    sampled = [n for n in v if not study.trials[int(n)].user_attrs.get("reference")]
    assert sampled
    for n in sampled:
        vs = v[n].get("vs_reference")
        if vs is None:
            continue
        ref_lat = study.trials[vs["trial"]].values[1]
        assert ref_lat <= study.trials[int(n)].values[1] * (1 + 1e-3)
        assert vs["ci"][0] <= vs["delta"] <= vs["ci"][1]
    index = json.loads((r.run_dir / "pareto.json").read_text())
    assert index["validation"]["n"] == 4000


def test_candidates_are_chosen_deterministically_and_ties_keep_the_lowest_trial():
    rows = [dict(number=i, state="COMPLETE", feasible=True, reference=None, score=s, latency_ms=t, ci_low=s - 0.05,
                 ci_high=s + 0.05) for i, (s, t) in enumerate([(0.9, 10), (0.9, 10), (0.86, 9), (0.5, 9.5), (0.7, 8)])]
    rows.append(dict(number=5, state="COMPLETE", feasible=False, reference="none", score=0.95, latency_ms=40,
                     ci_low=0.9, ci_high=1.0))
    df = pd.DataFrame(rows)
    picked = select_candidates(df)
    assert picked == sorted(picked) and 0 in picked and 3 not in picked and 5 in picked
    from autoprune.search.export import pareto_front

    assert pareto_front(df) == [0, 2, 4]  # trial 1 ties trial 0 exactly: the lower number stays


def test_no_validation_set_means_the_search_scores_are_exported_and_said_so(tmp_path):
    r = run_search(SearchConfig(model="synthetic", gpu="a100", budget="4x", trials=8, references=("none", "fastv"),
                                out=str(tmp_path), show_progress=False), log=quiet)
    assert all(not Schedule.load(f).metrics["validated"] for f in r.export.files)
    assert json.loads((r.run_dir / "pareto.json").read_text())["validation"] is None


def test_every_trial_of_optunas_front_is_validated_even_past_the_caps():
    # Eight exact ties on the front: pareto_front keeps one, Optuna keeps all eight; the cap is 2.
    rows = [dict(number=i, state="COMPLETE", feasible=True, reference=None, score=0.9, latency_ms=10.0,
                 ci_low=0.85, ci_high=0.95) for i in range(8)]
    df = pd.DataFrame(rows)
    assert select_candidates(df, max_sampled=2) == [0, 1]  # the front (one of the ties) and one near-tie
    assert select_candidates(df, max_sampled=2, always=tuple(range(8))) == list(range(8))


def test_the_study_validates_all_of_optunas_front(run):
    r, study = run
    assert {str(t.number) for t in study.best_trials} <= set(load_validation(study)["results"])


def test_validation_shows_a_progress_bar_over_its_candidates(tmp_path, capsys):
    r = run_search(SearchConfig(model="synthetic", gpu="a100", budget="4x", trials=8, references=("none", "fastv"),
                                out=str(tmp_path), model_options={"validation_n": 500}, show_progress=True), log=quiet)
    study = optuna.load_study(study_name=r.study_name, storage=r.storage_spec.url)
    n = len(load_validation(study)["candidates"])
    err = capsys.readouterr().err
    assert n > 0 and "validation: 100%" in err and f"{n}/{n}" in err and "candidate" in err
