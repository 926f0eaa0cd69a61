"""``autoprune search`` and ``autoprune apply`` from the command line (synthetic model)."""

import json

import pytest
import yaml

from autoprune.cli import main
from autoprune._io import data_dir
from autoprune.search.config import load_study_spec


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_search_runs_end_to_end_and_apply_uses_its_schedule(in_tmp, capsys):
    rc = main(["search", "--gpu", "a100", "--budget", "4x", "--model", "synthetic", "--trials", "8", "--no-progress",
               "--references", "none,fastv,high_to_low"])
    out = capsys.readouterr().out
    assert rc == 0
    run = in_tmp / "runs" / "synthetic-a100-4x"
    assert (run / "study.db").is_file() and (run / "trials.csv").is_file()
    index = json.loads((run / "pareto.json").read_text())
    assert index["target"]["budget"] == "4x" and index["schedules"]
    assert "baseline accuracy" in out and "exported" in out
    assert (run / "report.md").is_file() and (run / "report.html").is_file()  # the command wrote the report

    first = run / index["schedules"][0]["file"]
    assert main(["apply", "--schedule", str(first)]) == 0
    out = capsys.readouterr().out
    assert "accuracy: " in out and "latency: " in out and "a100-sxm4-80gb" in out


def test_apply_refuses_a_schedule_made_for_another_model(in_tmp, capsys):
    assert main(["search", "--gpu", "a100", "--budget", "4x", "--model", "synthetic", "--trials", "6",
                 "--no-progress", "--no-references"]) == 0
    capsys.readouterr()
    f = next((in_tmp / "runs" / "synthetic-a100-4x" / "pareto").glob("*.json"))
    rc = main(["apply", "--schedule", str(f), "--model-option", "layer_kinds=M*M*M*M*"])
    assert rc == 2 and "layer" in capsys.readouterr().err


def test_search_from_a_spec_with_overrides(in_tmp, capsys):
    rc = main(["search", "--spec", "synthetic-a100-4x", "--trials", "7", "--sampler", "random", "--no-progress",
               "--references", "none,fastv",
               "--seed", "5"])
    assert rc == 0
    settings = json.loads((in_tmp / "runs" / "synthetic-a100-4x" / "search.json").read_text())
    assert settings["format"] == "autoprune.search/v1" and settings["study"] == "synthetic-a100-4x"
    assert settings["trials"] == 7 and settings["sampler"] == "random" and settings["seed"] == 5


def _bad_space(tmp):
    data = yaml.safe_load((data_dir("search_spaces") / "progressive.yaml").read_text())
    data["scorer"]["momentum"] = 0.5
    p = tmp / "bad-space.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _bad_spec(tmp):
    p = tmp / "bad-spec.yaml"
    p.write_text("model: synthetic\ngpu: a100\nbudget: 4x\ntrails: 10\n")
    return p


BASE = ["search", "--model", "synthetic", "--no-progress"]


@pytest.mark.parametrize("args,fragment", [
    (["--gpu", "a1000", "--budget", "4x"], "unknown GPU 'a1000'"),
    (["--gpu", "a100", "--budget", "4y"], "unknown unit 'y'"),
    (["--gpu", "a100", "--budget", "0.5x"], "slowdown"),
    (["--gpu", "a100", "--budget", "0x"], "positive"),
    (["--gpu", "a100", "--budget=-3ms"], "> 0 ms"),
    (["--gpu", "a100", "--budget", "150%"], "more than 100%"),
    (["--gpu", "a100", "--budget", "4x", "--storage", "postgresql://127.0.0.1:1/x"], "does not answer"),
    (["--gpu", "a100", "--budget", "4x", "--storage", "mysql://127.0.0.1:1/x"], "does not answer"),
    (["--gpu", "a100", "--budget", "4x", "--space", "BAD_SPACE"], "unknown key(s) ['momentum']"),
    (["--spec", "BAD_SPEC"], "unknown key(s) ['trails']"),
    (["--budget", "4x"], "give --gpu"),
    (["--gpu", "a100", "--budget", "4x", "--workers", "-1"], "workers"),
    (["--gpu", "a100", "--budget", "-3ms"], "> 0 ms"),  # no '=' needed
    (["--gpu", "a100", "--budget", "4x", "--seed", "abc"], "--seed takes a non-negative integer"),
    (["--gpu", "a100", "--budget", "4x", "--seed", "-1"], "--seed takes a non-negative integer"),
    (["--gpu", "a100", "--budget", "1x"], "met by the unreduced model"),
    (["--gpu", "a100", "--budget", "100%"], "met by the unreduced model"),
    (["--gpu", "a100", "--budget", "4x", "--energy"], "--energy needs --measure"),
])
def test_bad_inputs_give_a_clear_error_and_leave_no_run_dir(in_tmp, capsys, args, fragment):
    args = [a.replace("BAD_SPACE", str(_bad_space(in_tmp))).replace("BAD_SPEC", str(_bad_spec(in_tmp)))
            for a in args]
    rc = main(BASE + args)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert fragment in err
    assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    if "BAD" in " ".join(args) or "yaml" in " ".join(args):
        assert "bad-" in err  # names the file
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize("name", ["demo-a100-4x", "demo-measured", "nemotron-h-8b-h100", "synthetic-a100-4x"])
def test_checked_in_study_specs_load(name):
    spec = load_study_spec(name)
    assert spec.name == name and spec.budget.text == "4x" and spec.trials >= 1
    if name == "demo-measured":
        assert spec.measure and spec.gpu == "auto"
    if name == "nemotron-h-8b-h100":
        assert spec.task == "fidelity" and spec.gpu == "h100"


def _schedule_file(tmp, keep):
    from autoprune.schedule import ModelSignature, Schedule

    p = tmp / "sched.json"
    Schedule(keep=(1.0, 1.0, 0.5, 0.5), model=ModelSignature(family="nemotron_h", layer_kinds="M*M-")).save(p)
    data = json.loads(p.read_text())
    data["keep"] = keep
    p.write_text(json.dumps(data).replace('"NAN"', "NaN"))
    return p


@pytest.mark.parametrize("case,fragment", [
    ("missing", "no such schedule file"),
    ("nan", "NaN"),
    ("non-monotone", "monoton"),
])
def test_apply_names_the_schedule_file_for_every_bad_file(in_tmp, capsys, case, fragment):
    if case == "missing":
        path = in_tmp / "missing.json"
    elif case == "nan":
        path = _schedule_file(in_tmp, [1.0, 1.0, "NAN", 0.5])
    else:
        path = _schedule_file(in_tmp, [1.0, 0.5, 0.9, 0.5])
    before = sorted(p.name for p in in_tmp.iterdir())
    rc = main(["apply", "--schedule", str(path)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert str(path) in err and fragment in err
    assert len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in in_tmp.iterdir()) == before


def _register_loaded_source():
    """``loaded-synthetic``: the synthetic model whose unreduced prefill, timed a second time, takes 40% longer."""
    import dataclasses

    from autoprune.interfaces import StudyInputs
    from autoprune.models import register_model_source
    from autoprune.models.synthetic import SyntheticSource

    class Drifting:
        def __init__(self, inner):
            self.inner, self.gpu = inner, inner.gpu

        def estimate(self, schedule):
            est = self.inner.estimate(schedule)
            return dataclasses.replace(est, latency_ms=est.latency_ms * (1.4 if schedule.is_identity else 1.0))

    def build(self, request):
        inputs = SyntheticSource.build(self, request)
        return StudyInputs(evaluator=inputs.evaluator, latency=Drifting(inputs.latency), predictor=inputs.predictor,
                           model="loaded-synthetic", task=inputs.task)

    register_model_source("loaded-synthetic")(type("Loaded", (SyntheticSource,), {"name": "loaded-synthetic",
                                                                                  "build": build}))


def test_measure_on_a_loaded_machine_is_one_line_exit_2_and_nothing_written(in_tmp, capsys):
    _register_loaded_source()
    rc = main(["search", "--model", "loaded-synthetic", "--gpu", "auto", "--measure", "--budget", "2x",
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip().splitlines() == [err.strip()] and "this machine is too loaded to measure" in err
    assert not (in_tmp / "runs").exists()
