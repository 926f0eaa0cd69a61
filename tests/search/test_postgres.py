"""The distributed search on a real PostgreSQL server (a throwaway cluster on 127.0.0.1, see
pg_fixtures): worker processes that share nothing but the database, as separate hosts would —
each in its own working directory, with its own host name — and faults injected into them."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from pg_fixtures import pg, pg_cluster, pg_db, start_worker, worker_env  # noqa: F401  (fixtures)

from autoprune.cli import main
from autoprune.errors import StorageError
from autoprune.search.config import SearchConfig
from autoprune.search.run import run_search
from autoprune.search.export import export_study
from autoprune.search.snapshot import study_snapshot
from autoprune.search.storage import close_storage, open_storage, resolve_storage

STUDY = "pg-a100-4x"
COMPACT = ("none", "fastv", "high_to_low")
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


def quiet(*_):
    pass


def create(tmp_path, url, trials, **kw):
    """The study, created for external workers (``--workers 0``), from its own folder."""
    base = dict(model="pg_model:source", gpu="a100", budget="4x", trials=trials, storage=url, study=STUDY,
                out=str(tmp_path / "creator"), show_progress=False, references=COMPACT, workers=0)
    base.update(kw)
    return run_search(SearchConfig(**base), log=quiet)


def load(url):
    return optuna.load_study(study_name=STUDY, storage=open_storage(resolve_storage(url, Path(".")), heartbeat_s=None))


def finish(procs, timeout=240):
    outs = []
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            out, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError("a worker did not finish") from None
        outs.append((p.returncode, out, err))
    return outs


def assert_complete_and_unique(study, trials):
    all_trials = study.trials
    assert [t.number for t in all_trials] == list(range(len(all_trials)))  # no number twice
    counted = [t for t in all_trials if t.state in COUNTED]
    assert len(counted) == trials  # no trial lost, no overshoot
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    params = [tuple(sorted(t.params.items())) for t in counted]
    assert len(set(params)) == len(params)  # no trial run twice
    refs = sorted(t.user_attrs["reference"] for t in counted if "reference" in t.user_attrs)
    assert refs == sorted(COMPACT)
    return counted


def test_four_workers_in_their_own_folders_lose_and_duplicate_no_trial_and_export_optunas_front(pg_db, tmp_path):
    create(tmp_path, pg_db, 40)
    procs = [start_worker(pg_db, STUDY, tmp_path / f"host-{i}", f"host-{i}", "--index", str(i)) for i in range(4)]
    live = 0
    while any(p.poll() is None for p in procs):  # exports while the workers write: each one self-consistent
        reader = open_storage(resolve_storage(pg_db, Path(".")), heartbeat_s=None, snapshot=True)
        snap = study_snapshot(optuna.load_study(study_name=STUDY, storage=reader))
        close_storage(reader)
        if snap.get_trials(states=(TrialState.COMPLETE,)):
            index = json.loads(export_study(snap, tmp_path / "live").index_path.read_text())
            assert index["agrees_with_optuna_best_trials"] and index["n_trials"] == len(snap.trials)
            live += 1
        time.sleep(0.5)
    for rc, _out, err in finish(procs):
        assert rc == 0, err
    assert live >= 1
    study = load(pg_db)
    counted = assert_complete_and_unique(study, 40)
    hosts = {t.user_attrs["worker"].split(":")[0] for t in counted}
    assert len(hosts) >= 3  # the work was shared
    assert not any(any((tmp_path / f"host-{i}").iterdir()) for i in range(4))  # nothing written beside the database

    r = create(tmp_path, pg_db, 40, resume=True, workers=1)  # the one export (and validation) of the study
    exported = sorted(e["trial"] for e in json.loads(r.export.index_path.read_text())["schedules"])
    assert exported == sorted(t.number for t in study.best_trials)  # Optuna's feasible front from the storage


def test_a_worker_killed_mid_trial_has_its_trial_rerun_and_the_study_reaches_its_count(pg_db, tmp_path):
    create(tmp_path, pg_db, 12, model_options={"delay_s": 0.5})
    hb = ("--heartbeat", "1", "--grace", "3")
    procs = [start_worker(pg_db, STUDY, tmp_path / f"host-{i}", f"host-{i}", *hb) for i in range(3)]
    study = load(pg_db)
    deadline = time.monotonic() + 120
    victim = None
    while victim is None:
        assert time.monotonic() < deadline, "host-0 never ran a trial"
        running = study.get_trials(states=(TrialState.RUNNING,))
        victim = next((t for t in running if t.user_attrs.get("worker", "").startswith("host-0:")
                       and "schedule" in t.user_attrs), None)  # sampled, now evaluating
        time.sleep(0.05)
    os.kill(procs[0].pid, signal.SIGKILL)  # mid-trial: no tell, no cleanup; the trial stays RUNNING
    for rc, _out, err in finish(procs[1:]):
        assert rc == 0, err
    procs[0].wait()
    study = load(pg_db)
    dead = study.trials[victim.number]
    assert dead.state == TrialState.FAIL
    reruns = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(reruns) == 1 and reruns[0].state in COUNTED and reruns[0].params == victim.params
    assert not reruns[0].user_attrs["worker"].startswith("host-0:")
    assert_complete_and_unique(study, 12)
    # `autoprune report runs/<study>` finds the server in search.json (no --storage)
    run_dir = tmp_path / "creator" / STUDY
    assert main(["report", str(run_dir)]) == 0 and (run_dir / "report.html").is_file()


def test_the_server_stopped_for_10_s_mid_study_is_ridden_out_by_every_worker(pg, pg_db, tmp_path):
    create(tmp_path, pg_db, 15, model_options={"delay_s": 0.2})
    hb = ("--heartbeat", "1", "--grace", "4")
    procs = [start_worker(pg_db, STUDY, tmp_path / f"host-{i}", f"host-{i}", *hb) for i in range(3)]
    study = load(pg_db)
    deadline = time.monotonic() + 120
    while len(study.get_trials(states=COUNTED)) < 5:
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.2)
    pg.stop()  # every worker is mid-trial or between trials
    try:
        time.sleep(10)
        gave_up = [p.communicate()[1] for p in procs if p.poll() is not None]
        assert not gave_up, f"a worker gave up while the server was down: {gave_up}"
    finally:
        pg.start()
    results = finish(procs)
    for rc, _out, err in results:
        assert rc == 0, err
    assert any("storage unavailable" in out + err for _, out, err in results)  # noticed, waited out
    study = load(pg_db)
    assert_complete_and_unique(study, 15)


def test_a_worker_with_another_checkpoint_is_refused_naming_both_fingerprints(pg_db, tmp_path):
    create(tmp_path, pg_db, 6)
    before = len(load(pg_db).trials)
    p = start_worker(pg_db, STUDY, tmp_path / "host-b", "host-b",
                     env=worker_env("host-b", AUTOPRUNE_TEST_CHECKPOINT="checkpoint-b"))
    [(rc, _out, err)] = finish([p])
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    stored = json.loads((tmp_path / "creator" / STUDY / "search.json").read_text())["signature"]["fingerprint"]
    assert stored in lines[0] and "fingerprint" in lines[0]
    import hashlib

    assert "sha256:" + hashlib.sha256(b"checkpoint-b").hexdigest()[:16] in lines[0]
    assert len(load(pg_db).trials) == before  # the worker ran nothing


def test_a_server_that_does_not_answer_is_named_with_its_host_and_port_and_nothing_is_written(tmp_path):
    port = pg_cluster.free_port()
    url = f"postgresql://autoprune@127.0.0.1:{port}/studies"
    with pytest.raises(StorageError, match=f"127.0.0.1:{port}"):
        create(tmp_path, url, 6)
    assert not (tmp_path / "creator").exists()
    out = subprocess.run([sys.executable, "-m", "autoprune.cli", "worker", "--storage", url, "--study", "x"],
                         capture_output=True, text=True, env=worker_env("h"), cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert f"127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("storage", ["postgresql", "sqlite"])
def test_two_identical_searches_started_at_once_one_creates_and_the_other_joins(storage, tmp_path, request):
    cmd = [sys.executable, "-m", "autoprune.cli", "search", "--model", "pg_model:source", "--gpu", "a100",
           "--budget", "4x", "--trials", "8", "--study", STUDY, "--references", ",".join(COMPACT),
           "--no-progress", "--out", str(tmp_path / "runs")]
    if storage == "postgresql":
        url = request.getfixturevalue("pg_db")
        cmd += ["--storage", url]
    else:
        url = f"sqlite:///{tmp_path / 'runs' / STUDY / 'study.db'}"
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=worker_env(f"h{i}"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = finish(procs)
    assert any(rc == 0 for rc, _, _ in results)
    for rc, _out, err in results:
        assert "Traceback" not in err
        if rc != 0:  # the other may only be told, in one line, that the study exists or is being created
            assert rc == 2 and len(err.strip().splitlines()) == 1, err
            assert "already exists" in err or "being created" in err
    study = load(url)
    assert len(study.get_trials(states=COUNTED)) == 8
    assert (tmp_path / "runs" / STUDY / "pareto.json").is_file()  # nothing deleted
