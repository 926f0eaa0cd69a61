"""The study (autoprune.search.run and what it drives), run on the synthetic model: budget
handling, references, failures, reproducibility, resume after a kill, several workers on one
storage."""

import dataclasses
import os
import subprocess
import sys
import textwrap
import time

import optuna
import pytest
from optuna.trial import TrialState

from autoprune.budget import Budget, parse_budget
from autoprune.cost.gpus import resolve
from autoprune.errors import BudgetError, ConfigError, StorageError, UnknownGPUError
from autoprune.interfaces import SourceRequest, StudyInputs
from autoprune.models import register_model_source
from autoprune.models.synthetic import SyntheticSource
from autoprune.schedule import Schedule, ScorerConfig
from autoprune.search.config import SearchConfig, derive_study_name
from autoprune.search.objective import TrialRunner
from autoprune.search.records import read_trial
from autoprune.search.run import plan_search, run_search
from autoprune.search.settings import load_settings
from autoprune.search.space import load_space


def build_inputs(gpu="a100", task=None, measure=False, options=None):
    return SyntheticSource().build(SourceRequest(gpu=resolve(gpu), task=task, measure=measure, options=options or {}))


# A short list of references keeps these studies small; the default list is tested on its own.
COMPACT = ("none", "fastv", "high_to_low")


def cfg(tmp_path, **kw):
    base = dict(model="synthetic", gpu="a100", budget="4x", trials=12, out=str(tmp_path / "runs"),
                show_progress=False, references=COMPACT)
    base.update(kw)
    return SearchConfig(**base)


def quiet(*_):
    pass


def load(result):
    return optuna.load_study(study_name=result.study_name, storage=f"sqlite:///{result.run_dir / 'study.db'}")


def fingerprint(study):
    return [(t.number, t.state, t.params, t.values, t.user_attrs.get("reference")) for t in study.trials]


# ------------------------------------------------------------------ basics
def test_study_name_is_derived_from_model_gpu_and_budget():
    assert derive_study_name("demo", "a100", parse_budget("4x")) == "demo-a100-4x"
    assert derive_study_name("demo", "A100", parse_budget("25%")) == "demo-a100-25pct"


def test_a_run_creates_the_study_with_named_metrics_and_settings(tmp_path):
    r = run_search(cfg(tmp_path), log=quiet)
    study = load(r)
    assert study.metric_names == ["accuracy", "latency_ms"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    s = load_settings(study)
    assert s.budget.text == "4x" and s.budget_ms == pytest.approx(s.baseline_ms / 4)
    assert len(study.trials) == 12 and all(t.state.is_finished() for t in study.trials)
    assert (r.run_dir / "search.json").is_file()


def test_references_come_first_named_and_fitted_to_the_budget(tmp_path):
    plan = plan_search(cfg(tmp_path, trials=100, references=None))
    names = [ref.name for ref in plan.references]
    assert names[0] == "none" and {"pyramid", "high_to_low", "low_to_high"} <= set(names)
    assert [n for n in names if n.startswith("fastv@")]  # FastV-like cuts at every layer that reaches 4x
    r = run_search(cfg(tmp_path, trials=len(names) + 2, references=None), log=quiet)
    study = load(r)
    s = load_settings(study)
    refs = [t for t in study.trials if t.user_attrs.get("reference")]
    assert sorted(t.number for t in refs) == list(range(len(names)))  # evaluated first
    assert sorted(t.user_attrs["reference"] for t in refs) == sorted(names)
    for t in refs:
        assert t.state == TrialState.COMPLETE
        if t.user_attrs["reference"] != "none":
            assert t.user_attrs["reference_fitted"]
            assert t.values[1] <= s.budget_ms
            assert t.values[1] > 0.97 * s.budget_ms  # on the budget, not far below
    expressible = [t for t in refs if t.params]
    assert expressible and all(t.user_attrs["reference"].startswith(("fastv", "high_to_low")) for t in expressible)
    none = next(t for t in refs if t.user_attrs["reference"] == "none")
    assert read_trial(none).schedule.is_identity
    assert none.constraints["budget"] > 0  # the unreduced model is over any budget > 1x


def test_a_reference_the_space_cannot_express_is_stored_with_ask_tell(tmp_path):
    space = tmp_path / "narrow.yaml"
    space.write_text(textwrap.dedent("""\
        name: narrow
        schedule: {kind: progressive, stages: {low: 1, high: 2}, retention: {low: 0.5, high: 1.0}}
        scorer: {state_momentum: {low: 0.0, high: 0.9}}
    """))
    r = run_search(cfg(tmp_path, space=str(space), trials=7, references=("none", "uniform")), log=quiet)
    study = load(r)
    uniform = [t for t in study.trials if t.user_attrs.get("reference") == "uniform"]
    assert len(uniform) == 1 and uniform[0].params == {}  # 0.24 after layer 1 is below retention 0.5
    assert uniform[0].state == TrialState.COMPLETE and min(read_trial(uniform[0]).keep) < 0.5
    assert len(study.trials) == 7


# --------------------------------------------------------- budget handling
def _runner(over_budget, **opts):
    inputs = build_inputs("a100", options=opts)
    base = inputs.latency.baseline_ms
    return TrialRunner(space=load_space("progressive"), inputs=inputs, budget=parse_budget("4x"),
                       limit_ms=base / 4, baseline_ms=base, objectives=("score", "latency"),
                       over_budget=over_budget)


@pytest.mark.parametrize("mode", ["project", "reject"])
def test_a_candidate_over_budget_costs_no_accuracy_evaluation(mode):
    runner = _runner(mode)
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(runner, n_trials=40)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert runner.evaluator.evaluations == len(complete) == runner.accuracy_evaluations
    assert pruned, "random candidates include some that miss a 4x budget"
    for t in complete:
        assert Budget.meets(t.values[1], runner.limit_ms) and t.constraints["budget"] <= 0
    for t in pruned:
        assert read_trial(t).latency.latency_ms > runner.limit_ms and t.constraints["budget"] > 0
        assert t.user_attrs["rejected"]
    if mode == "project":
        assert any(t.user_attrs["gamma"] > 1 for t in complete)
        assert all("cannot meet the budget" in t.user_attrs["rejected"] for t in pruned)
    else:
        assert all(t.user_attrs["gamma"] == 1 for t in complete)


def test_fewer_trials_than_references_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="at least as many trials as references"):
        run_search(cfg(tmp_path, trials=2), log=quiet)
    assert not (tmp_path / "runs").exists()


def test_an_unreachable_budget_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(BudgetError, match="out of reach"):
        run_search(cfg(tmp_path, budget="50x"), log=quiet)
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------ failures
def test_a_crashing_or_nan_trial_is_recorded_as_fail_with_its_reason_and_the_study_goes_on(tmp_path):
    r = run_search(cfg(tmp_path, model_options={"fail_at": 6, "nan_at": 7}), log=quiet)
    study = load(r)
    failed = study.get_trials(states=(TrialState.FAIL,))
    reasons = sorted(t.user_attrs["fail_reason"] for t in failed)
    assert len(failed) == 2
    assert reasons[0].startswith("AutopruneError: TaskResult.score must be a finite number")
    assert reasons[1].startswith("MemoryError: synthetic out-of-memory")
    # --trials counts evaluated trials: the two failures do not use up the study's 12
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 12
    assert len(study.trials) == 14 and r.export.csv_path.is_file()


# ----------------------------------------------------- reproducibility
@pytest.mark.parametrize("sampler", ["tpe", pytest.param("nsga2", marks=pytest.mark.slow), "random",
                                     pytest.param("gp", marks=pytest.mark.slow)])
def test_seeded_sequential_runs_reproduce(tmp_path, sampler):
    if sampler == "gp":
        pytest.importorskip("scipy")  # Optuna's GPSampler needs it
    trials = 12  # 3 references, then 9 sampled: 5 of them past TPE's 4 random startup trials
    a = load(run_search(cfg(tmp_path / "a", sampler=sampler, seed=3, trials=trials), log=quiet))
    b = load(run_search(cfg(tmp_path / "b", sampler=sampler, seed=3, trials=trials), log=quiet))
    assert fingerprint(a) == fingerprint(b)
    assert len({tuple(sorted(t.params.items())) for t in a.trials}) == trials


def test_the_gp_sampler_without_scipy_is_a_config_error_with_a_hint(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "scipy" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install scipy"):
        run_search(cfg(tmp_path, sampler="gp"), log=quiet)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("space", ["per_layer", "fixed_scorer"])
def test_other_packaged_spaces_run(tmp_path, space):
    r = run_search(cfg(tmp_path, space=space, trials=8), log=quiet)
    study = load(r)
    assert load_settings(study).space.name == space
    assert sorted(t.user_attrs.get("reference") for t in study.trials[:3]) == sorted(COMPACT)
    assert r.export.pareto


def test_another_seed_samples_other_candidates(tmp_path):
    a = load(run_search(cfg(tmp_path / "a", sampler="random", seed=3, trials=16), log=quiet))
    c = load(run_search(cfg(tmp_path / "c", sampler="random", seed=4, trials=16), log=quiet))

    def split(study):  # the references and warm starts are the same whatever the seed; the samples are not
        fixed = [t for t in study.trials if t.user_attrs.get("reference") or t.user_attrs.get("warm_start")]
        return [(t.params, t.user_attrs.get("reference")) for t in fixed], \
            [t.params for t in study.trials if t not in fixed]

    (fa, sa), (fc, sc) = split(a), split(c)
    assert fa == fc and sa and sc and sa != sc


# ------------------------------------------------------------ storages
def test_optuna_load_study_opens_the_default_storage(tmp_path):
    r = run_search(cfg(tmp_path, trials=6), log=quiet)
    url = f"sqlite:///{r.run_dir / 'study.db'}"
    study = optuna.load_study(study_name="synthetic-a100-4x", storage=url)
    assert len(study.best_trials) >= 1 and len(study.trials) == 6


def test_a_journal_file_storage_works_and_loads(tmp_path):
    path = tmp_path / "study.journal"
    r = run_search(cfg(tmp_path, trials=7, storage=f"journal:{path}"), log=quiet)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    study = optuna.load_study(study_name=r.study_name, storage=JournalStorage(JournalFileBackend(str(path))))
    assert len(study.trials) == 7 and (r.run_dir / "pareto.json").is_file()


@pytest.mark.parametrize("url", ["postgresql://127.0.0.1:1/x", "mysql://u:secret@127.0.0.1:1/x"])
def test_a_storage_that_does_not_answer_fails_fast_and_writes_nothing(tmp_path, url):
    t0 = time.monotonic()
    with pytest.raises(StorageError, match="does not answer") as e:
        run_search(cfg(tmp_path, storage=url), log=quiet)
    assert time.monotonic() - t0 < 5
    assert "secret" not in str(e.value)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("bad,error", [
    (dict(gpu="a1000"), UnknownGPUError),
    (dict(budget="4y"), BudgetError),
    (dict(budget="0.5x"), BudgetError),
    (dict(storage="sqlite:///nowhere/at/all/x.db"), StorageError),
    (dict(sampler="cmaes"), ConfigError),
    (dict(space="nonexistent"), ConfigError),
])
def test_bad_inputs_raise_before_a_run_dir_exists(tmp_path, bad, error):
    with pytest.raises(error):
        run_search(cfg(tmp_path, **bad), log=quiet)
    assert not (tmp_path / "runs").exists()


def test_an_existing_study_needs_resume_and_resume_needs_a_study(tmp_path):
    run_search(cfg(tmp_path, trials=6), log=quiet)
    with pytest.raises(ConfigError, match="--resume"):
        run_search(cfg(tmp_path, trials=6), log=quiet)
    with pytest.raises(ConfigError, match="nothing to resume"):
        run_search(cfg(tmp_path, study="other", resume=True), log=quiet)
    with pytest.raises(ConfigError, match="budget"):
        run_search(cfg(tmp_path, budget="3x", study="synthetic-a100-4x", resume=True), log=quiet)


def test_resume_adds_trials_up_to_the_new_total_without_repeating_the_sampler(tmp_path):
    r = run_search(cfg(tmp_path, trials=12), log=quiet)
    before = fingerprint(load(r))
    r2 = run_search(SearchConfig(study=r.study_name, resume=True, trials=16, out=str(tmp_path / "runs"),
                                 show_progress=False), log=quiet)
    study = load(r2)
    assert fingerprint(study)[:12] == before and len(study.trials) == 16
    old = {tuple(sorted(t.params.items())) for t in study.trials[:12]}
    assert all(tuple(sorted(t.params.items())) not in old for t in study.trials[12:])
    assert load_settings(study).trials == 16


KILLED_RUN = textwrap.dedent("""\
    import sys
    from autoprune.search.config import SearchConfig
    from autoprune.search.run import plan_search, run_search
    run_search(SearchConfig(model="synthetic", gpu="a100", budget="4x", trials=12, out=sys.argv[1],
                            show_progress=False, model_options={"hang_at": 6, "hang_marker": sys.argv[2]}))
""")


def test_a_study_killed_mid_trial_resumes_and_reruns_the_orphaned_trial(tmp_path):
    marker = tmp_path / "hanging"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(tmp_path / "runs"), str(marker)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the run never reached the hanging trial"
            time.sleep(0.1)
    finally:
        proc.kill()  # SIGKILL mid-trial: no cleanup, the trial stays RUNNING
        proc.wait()
    url = f"sqlite:///{tmp_path / 'runs' / 'synthetic-a100-4x' / 'study.db'}"
    running = optuna.load_study(study_name="synthetic-a100-4x", storage=url).get_trials(states=(TrialState.RUNNING,))
    assert len(running) == 1
    orphan = running[0]

    logs = []
    r = run_search(SearchConfig(study="synthetic-a100-4x", resume=True, out=str(tmp_path / "runs"),
                                model_options={}, show_progress=False), log=logs.append)
    study = load(r)
    assert r.recovered == [orphan.number]
    dead = study.trials[orphan.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["fail_reason"].startswith("orphaned")
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == orphan.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == orphan.params
    # the orphan does not count against --trials: 12 evaluated trials beside it
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 12
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


# ------------------------------------------------------------- workers
@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_two_workers_on_one_storage_lose_no_trial_and_duplicate_none(tmp_path, storage):
    kw = {} if storage == "sqlite" else {"storage": f"journal:{tmp_path / 'study.journal'}"}
    # enough trials that the worker which starts second still gets some: with 12, one worker could run
    # all 9 sampled trials before the other had loaded (seen once in a fresh-clone CI run)
    n = 36
    r = run_search(cfg(tmp_path, trials=n, workers=2, **kw), log=quiet)
    if storage == "sqlite":
        study = load(r)
    else:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        study = optuna.load_study(study_name=r.study_name,
                                  storage=JournalStorage(JournalFileBackend(str(tmp_path / "study.journal"))))
    trials = study.trials
    assert [t.number for t in trials] == list(range(n))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    refs = [t.user_attrs["reference"] for t in trials if "reference" in t.user_attrs]
    assert sorted(refs) == sorted(COMPACT)  # each reference ran exactly once
    workers = {t.user_attrs["worker"] for t in trials if t.params and "reference" not in t.user_attrs}
    assert len(workers) == 2 and os.getpid() not in {int(w.split(":")[1]) for w in workers}
    assert len({t._trial_id for t in trials}) == n


def test_energy_can_be_a_third_objective_with_measured_latency(tmp_path):
    r = run_search(cfg(tmp_path, gpu="auto", budget="2x", measure=True, objectives=("score", "latency", "energy"),
                       trials=7), log=quiet)
    study = load(r)
    assert study.metric_names == ["accuracy", "latency_ms", "energy_j"]
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert done and all(len(t.values) == 3 and read_trial(t).latency.source == "cpu-measured" for t in done)


def test_energy_without_energy_readings_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="energy"):
        run_search(cfg(tmp_path, objectives=("score", "latency", "energy")), log=quiet)
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------- shared work
CALLS = {"build": 0, "identity_estimates": 0}


class _CountingLatency:
    def __init__(self, inner):
        self.inner, self.gpu = inner, inner.gpu

    def estimate(self, schedule):
        if schedule.is_identity:
            CALLS["identity_estimates"] += 1
        return self.inner.estimate(schedule)


@register_model_source("counting-synthetic")
class CountingSource(SyntheticSource):
    name = "counting-synthetic"

    def build(self, request):
        CALLS["build"] += 1
        inputs = super().build(request)
        lat = _CountingLatency(inputs.latency)
        return StudyInputs(evaluator=inputs.evaluator, latency=lat, predictor=lat, model=self.name, task=inputs.task)


def test_the_baseline_latency_is_not_recomputed_per_trial(tmp_path):
    CALLS.update(build=0, identity_estimates=0)
    run_search(cfg(tmp_path, trials=10, model="counting-synthetic"), log=quiet)
    assert CALLS["build"] == 1  # one evaluator and latency source per process, reused by every trial
    assert CALLS["identity_estimates"] == 2  # the study's baseline, and the `none` reference trial


def test_a_model_source_given_as_module_attribute_is_found(tmp_path):
    r = run_search(cfg(tmp_path, trials=6, model="autoprune.models.synthetic:SyntheticSource"), log=quiet)
    assert load_settings(load(r)).model == "autoprune.models.synthetic:SyntheticSource"


def test_an_unknown_model_lists_the_known_ones_and_writes_nothing(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown model 'llama'.*demo.*synthetic"):
        run_search(cfg(tmp_path, model="llama"), log=quiet)
    assert not (tmp_path / "runs").exists()


def test_an_unknown_model_option_is_refused_before_anything_loads(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['colour'\] for model 'synthetic'"):
        run_search(cfg(tmp_path, model_options={"colour": 3}), log=quiet)
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------- measuring on this machine
class _Loaded:
    """A measured latency on this machine: the unreduced model timed ``drift`` × slower the second
    time, reduced schedules ``slow_reduced`` × slower than the synthetic model says, ``flags`` on each
    (with repeats 30 % apart)."""

    def __init__(self, inner, *, drift=1.0, slow_reduced=1.0, flags=(), noisy_below=None):
        self.inner, self.gpu = inner, inner.gpu
        self.drift, self.slow_reduced, self.flags, self.noisy_below = drift, slow_reduced, flags, noisy_below

    def estimate(self, schedule):
        import dataclasses

        est = self.inner.estimate(schedule)
        factor = self.drift if schedule.is_identity else self.slow_reduced
        flags = self.flags
        if self.noisy_below is not None and schedule.mean_keep < self.noisy_below:
            flags = ("noisy-repeats",)
        return dataclasses.replace(est, latency_ms=est.latency_ms * factor, flags=flags,
                                   repeat_spread=0.3 if flags else None)


def _measuring_source(name, **kw):
    def build(self, request):
        inputs = SyntheticSource.build(self, request)
        lat = _Loaded(inputs.latency, **kw)
        return StudyInputs(evaluator=inputs.evaluator, latency=lat, predictor=inputs.predictor, model=name,
                           task=inputs.task)

    return register_model_source(name)(type(name, (SyntheticSource,), {"name": name, "build": build}))


_measuring_source("drifting-synthetic", drift=1.4)
_measuring_source("noisy-synthetic", flags=("noisy-repeats",))
_measuring_source("slow-here-synthetic", slow_reduced=15.0)  # the fastest: 3.5% of the baseline predicted, 53% here
_measuring_source("noisy-below-synthetic", noisy_below=0.5)  # strong reductions time noisily
_measuring_source("extrapolated-synthetic", flags=("extrapolated",))  # a table cut short
_measuring_source("mildly-drifting-synthetic", drift=1.15)  # beyond the timer's 10 %, short of refusing


@pytest.mark.parametrize("model", ["drifting-synthetic", "noisy-synthetic"])
def test_a_measuring_study_on_a_loaded_machine_is_refused_in_one_line_before_anything_is_written(tmp_path, model):
    from autoprune.errors import MeasurementError

    with pytest.raises(MeasurementError, match="this machine is too loaded to measure") as e:
        run_search(cfg(tmp_path, model=model, gpu="auto", budget="2x", measure=True), log=quiet)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "runs").exists()


def test_a_budget_out_of_reach_as_measured_here_is_refused_though_predicted_reachable(tmp_path):
    # The predictor (the synthetic latency model) reaches 2x; measured here it is 15x slower.
    plan_search(cfg(tmp_path, gpu="auto", budget="2x", measure=True))  # reachable as the plain source measures
    with pytest.raises(BudgetError, match=r"out of reach on cpu \(measured here\)"):
        run_search(cfg(tmp_path, model="slow-here-synthetic", gpu="auto", budget="2x", measure=True), log=quiet)
    assert not (tmp_path / "runs").exists()


def test_noisy_trial_timings_are_recorded_logged_and_named_in_the_export(tmp_path):
    import pandas as pd

    lines = []
    r = run_search(cfg(tmp_path, model="noisy-below-synthetic", gpu="auto", budget="3x", measure=True, trials=10),
                   log=lines.append)
    trials = load(r).trials
    noisy = [t for t in trials if t.user_attrs.get("timing_noise")]
    clean = [t for t in trials if "schedule" in t.user_attrs and not t.user_attrs.get("timing_noise")]
    assert noisy and clean
    assert all(t.user_attrs["timing_noise"] == {"spread": 0.005, "repeat_spread": 0.3, "flags": ["noisy-repeats"]}
               for t in noisy)
    assert all(read_trial(t).timing_noise is not None for t in noisy)
    assert any(f"trial {noisy[0].number}: noisy timing (repeats 30% apart" in line for line in lines)
    csv = pd.read_csv(r.run_dir / "trials.csv").set_index("number")
    assert csv.loc[noisy[0].number, "timing_noise"] == 0.3 and pd.isna(csv.loc[clean[0].number, "timing_noise"])
    assert f"note: {len(noisy)} trial(s) were timed noisily" in r.summary


# ------------------------------------------------------ latency tables
def _tiny_table_info(tmp_path, cut=False):
    import dataclasses

    from autoprune.cost.latency import LatencyModel
    from autoprune.cost.profile_table import Series, table_path
    from autoprune.cost.shapes import TokenLayout
    from hw_fixtures import TINY_BF16, linear_table

    t = linear_table(TINY_BF16)
    if cut:
        t = dataclasses.replace(t, layers={**t.layers, "attention": Series((128,), (2.56,))})
    root = tmp_path / "profiles" / "measured"
    path = t.save(table_path(root, "h100-sxm5-80gb", TINY_BF16.name))
    model = LatencyModel(TINY_BF16, TokenLayout(32, 1024, 64), "h100", search_dirs=[root])
    return model.describe(), path


def test_a_table_found_outside_the_package_is_announced_and_an_extrapolation_warned(tmp_path):
    from autoprune.search.run import latency_notes

    info, path = _tiny_table_info(tmp_path, cut=True)
    notes = latency_notes(info)
    assert notes[0] == f"using latency table {path}"
    assert notes[1].startswith(f"warning: latency predictions are extrapolated beyond what the table {path} "
                               "measured: attention at 1120 tokens (measured 128..128)")
    full, full_path = _tiny_table_info(tmp_path / "full")
    assert latency_notes(full) == [f"using latency table {full_path}"]  # measured over the prefill: no warning


def test_the_package_tables_are_not_announced():
    from autoprune.cost.latency import LatencyModel
    from autoprune.cost.shapes import NEMOTRON_H_8B, TokenLayout
    from autoprune.search.run import latency_notes

    info = LatencyModel(NEMOTRON_H_8B, TokenLayout(32, 16384, 64), "h100").describe()
    assert info["table"]["found"] and latency_notes(info) == []


def _table_source(name, info):
    def build(self, request):
        inputs = SyntheticSource.build(self, request)
        return StudyInputs(evaluator=inputs.evaluator, latency=inputs.latency, model=name, task=inputs.task,
                           latency_info=info)

    return register_model_source(name)(type(name, (SyntheticSource,), {"name": name, "build": build}))


def test_a_search_on_a_found_table_says_so_and_records_it_in_search_json_and_every_schedule(tmp_path):
    import json

    info, path = _tiny_table_info(tmp_path, cut=True)
    _table_source("tabled-synthetic", info)
    lines = []
    r = run_search(cfg(tmp_path, model="tabled-synthetic", trials=6), log=lines.append)
    assert f"using latency table {path}" in lines
    assert any(line.startswith("warning: latency predictions are extrapolated") for line in lines)
    settings = json.loads((r.run_dir / "search.json").read_text())
    assert settings["latency_info"]["table"]["path"] == str(path) and settings["latency_info"]["extrapolated"]
    for f in r.export.files:
        lat = json.loads(f.read_text())["provenance"]["latency"]
        assert lat["table"]["path"] == str(path) and lat["beyond_measured"]


def test_trials_predicted_beyond_the_measured_table_are_named_in_the_export(tmp_path):
    import pandas as pd

    r = run_search(cfg(tmp_path, model="extrapolated-synthetic", trials=6), log=quiet)
    csv = pd.read_csv(r.run_dir / "trials.csv")
    assert csv["extrapolated"].all()
    assert f"note: the latency of trial(s) {sorted(r.export.pareto)} on the front is extrapolated" in r.summary
    plain = run_search(cfg(tmp_path / "plain", trials=6), log=quiet)
    assert "extrapolated" not in plain.summary


def test_a_measuring_study_with_some_noise_runs_rather_than_being_refused(tmp_path):
    from autoprune.search.run import LOADED_SPREAD

    assert 0.10 < LOADED_SPREAD < 0.30
    r = run_search(cfg(tmp_path, model="mildly-drifting-synthetic", gpu="auto", budget="2x", measure=True, trials=6),
                   log=quiet)
    assert r.export is not None


# ----------------------------------------------------- a measuring study's predictor is off
class _SlowerThanPredicted:
    """Stands in for a measurement: the reduced part takes ``factor`` times what the predictor says
    (as NemotronH Omni's MoE layers did on an H200), the unreduced prefill is as predicted."""

    def __init__(self, inner, factor):
        self.inner, self.gpu, self.factor, self.calls = inner, inner.gpu, factor, 0

    def estimate(self, schedule):
        self.calls += 1
        e = self.inner.estimate(schedule)
        if schedule.is_identity:
            return e
        return dataclasses.replace(e, latency_ms=e.latency_ms * self.factor, source="measured",
                                   low_ms=None, high_ms=None, interval_level=None)


def _measuring_runner(factor):
    inputs = build_inputs("a100")
    measured = _SlowerThanPredicted(inputs.latency, factor)
    inputs = dataclasses.replace(inputs, latency=measured, predictor=inputs.latency)
    base = inputs.latency.estimate(Schedule.identity(inputs.evaluator.signature.num_layers, model=inputs.evaluator.signature)).baseline_ms
    return TrialRunner(space=load_space("budgeted"), inputs=inputs, budget=parse_budget("4x"),
                       limit_ms=base / 4, baseline_ms=base, objectives=("score", "latency"),
                       over_budget="project"), measured


def test_a_measuring_study_learns_how_far_its_predictor_is_off_and_fits_to_the_measured_budget():
    runner, measured = _measuring_runner(1.15)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(runner, n_trials=16)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    # every schedule the predictor fits to 4x measures 4/1.15 = 3.5x: without the correction every
    # trial would be rejected over budget
    assert len(complete) >= 14, [t.user_attrs.get("rejected") for t in study.trials]
    assert all(Budget.meets(t.values[1], runner.limit_ms) for t in complete)
    assert runner.correction.ratio == pytest.approx(1.15, rel=1e-6)
    assert all(t.user_attrs["predictor_correction"] == pytest.approx(1.15, rel=1e-6) for t in complete[2:])


def test_a_schedule_cutting_before_its_scorers_evidence_is_rejected_not_failed():
    runner = _runner("project")
    sig = runner.signature
    attn = sig.layer_kinds.index("*")
    assert sig.layer_kinds.index("M") < attn - 1, "the synthetic pattern starts with Mamba layers"
    # an attention-only score cutting at layer 2, long before the first attention layer
    s = Schedule(keep=(1.0, 1.0) + (0.3,) * (sig.num_layers - 2), model=sig, min_tokens=16,
                 scorer=ScorerConfig(w_attn=1.0, w_mamba=0.0))
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned):
        runner.run(trial, s)
    study.tell(trial, state=TrialState.PRUNED)
    assert runner.evaluator.evaluations == 0
    assert f"the first layer that may cut is {attn + 1}" in study.trials[0].user_attrs["rejected"]
