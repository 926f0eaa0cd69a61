"""Workers and joining, without a server: device lists, the version and model checks of
``autoprune worker``, ``--workers 0``, trial counts that mean counted trials, connection errors."""

import os

import optuna
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from autoprune.cli import main
from autoprune.cost.gpus import resolve
from autoprune.errors import ConfigError
from autoprune.interfaces import SourceRequest
from autoprune.models.synthetic import SyntheticSource
from autoprune.schedule import ModelSignature
from autoprune.search.config import SearchConfig
from autoprune.search.devices import parse_devices
from autoprune.search.join import check_model, check_version
from autoprune.search.resilient import is_connection_error
from autoprune.search.run import run_search
from autoprune.search.settings import load_settings
from autoprune.search.storage import resolve_storage

COMPACT = ("none", "fastv", "high_to_low")


def cfg(tmp_path, **kw):
    base = dict(model="synthetic", gpu="a100", budget="4x", trials=8, out=str(tmp_path / "runs"),
                show_progress=False, references=COMPACT)
    base.update(kw)
    return SearchConfig(**base)


def quiet(*_):
    pass


def test_device_lists_take_indices_cuda_names_and_cpu_and_refuse_anything_else():
    assert parse_devices("0,1") == ("0", "1")
    assert parse_devices(["cuda:3", "cpu"]) == ("3", "cpu")
    for bad in ("gpu0", "0,0", "", "cuda:x"):
        with pytest.raises(ValueError):
            parse_devices(bad)
    with pytest.raises(ConfigError, match="--devices"):
        SearchConfig(devices="0,zero")


def test_workers_zero_creates_the_study_for_external_workers_and_runs_nothing(tmp_path):
    logs = []
    r = run_search(cfg(tmp_path, workers=0), log=logs.append)
    study = optuna.load_study(study_name=r.study_name, storage=f"sqlite:///{r.run_dir / 'study.db'}")
    assert load_settings(study).trials == 8
    assert not study.get_trials(states=(TrialState.RUNNING,)) and r.export is None
    assert any("autoprune worker --storage" in m for m in logs)
    # a worker (here: the command, from another folder) runs it to its count; the study ends there
    assert main(["worker", "--storage", f"sqlite:///{r.run_dir / 'study.db'}", "--study", r.study_name]) == 0
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 8
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


def test_a_worker_of_another_version_or_model_is_refused_naming_both(tmp_path):
    r = run_search(cfg(tmp_path, workers=0), log=quiet)
    study = optuna.load_study(study_name=r.study_name, storage=f"sqlite:///{r.run_dir / 'study.db'}")
    settings = load_settings(study)
    with pytest.raises(ConfigError, match=r"created by autoprune 0\.0\.1; this worker runs autoprune \S+"):
        check_version(r.study_name, settings.replace(autoprune="0.0.1"))
    inputs = SyntheticSource().build(SourceRequest(gpu=resolve("a100")))
    check_model(r.study_name, settings, inputs)  # the same model: joins
    inputs.evaluator.signature = ModelSignature(family="synthetic", layer_kinds=settings.signature.layer_kinds,
                                                fingerprint="sha256:other")
    with pytest.raises(ConfigError, match="fingerprint None.*fingerprint sha256:other"):
        check_model(r.study_name, settings, inputs)


def test_worker_flags_and_a_missing_study_are_one_line_errors(tmp_path, capsys):
    db = tmp_path / "s.db"
    assert main(["worker", "--storage", f"sqlite:///{db}", "--study", "x"]) == 2
    assert "no such file" in capsys.readouterr().err and not db.exists()
    assert main(["worker", "--storage", "sqlite:///x.db", "--study", "x", "--device", "gpu0"]) == 2
    assert "--device" in capsys.readouterr().err
    assert main(["worker", "--storage", "sqlite:///x.db", "--study", "x", "--heartbeat", "5", "--grace", "5"]) == 2
    assert "--grace" in capsys.readouterr().err


def test_a_postgresql_url_uses_psycopg_and_keeps_no_password_in_what_is_shown():
    spec = resolve_storage("postgresql://me:secret@db.example:6543/studies", None)
    assert spec.kind == "rdb" and spec.url.startswith("postgresql+psycopg://me:secret@")
    assert spec.display == "postgresql+psycopg://me@db.example:6543/studies"
    assert resolve_storage("postgresql+psycopg2://me@db/s", None).url.startswith("postgresql+psycopg2://")


def test_a_lost_connection_is_told_from_other_storage_errors():
    lost = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    wrapped = optuna.exceptions.StorageInternalError("commit failed")
    wrapped.__cause__ = lost
    assert is_connection_error(lost) and is_connection_error(wrapped)
    assert not is_connection_error(sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not is_connection_error(ValueError("no"))


def test_devices_give_each_spawned_worker_one_gpu_of_its_own(tmp_path, monkeypatch):
    log = tmp_path / "devices"
    log.mkdir()
    monkeypatch.setenv("AUTOPRUNE_TEST_DEVICE_LOG", str(log))
    r = run_search(cfg(tmp_path, model="pg_model:source", study="dev", workers=2, devices="3,cuda:5",
                       validate=False), log=quiet)
    seen = {f.read_text() for f in log.iterdir() if int(f.name) != os.getpid()}
    assert seen == {"3", "5"}
    assert r.export is not None and len(r.export.pareto) >= 1


def test_workers_on_one_machine_share_its_cores_instead_of_each_taking_all():
    from autoprune.search.workers import threads_per_worker

    assert threads_per_worker(2, cpus=2) == 1
    assert threads_per_worker(4, cpus=16) == 4
    assert threads_per_worker(8, cpus=2) == 1  # never zero
    assert threads_per_worker(1, cpus=2) == 2
