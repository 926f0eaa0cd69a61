"""The storage-wide lock (autoprune.search.locks) beside a file storage."""

import time

import optuna

from autoprune.search.locks import study_lock
from autoprune.search.storage import open_storage, resolve_storage


def test_holding_the_lock_of_a_journal_file_does_not_block_optunas_own_journal_lock(tmp_path):
    # Optuna's journal backend takes `<file>.lock` (a symlink) around every append and waits a 30 s
    # grace period when that path exists: our lock must live elsewhere.
    spec = resolve_storage(f"journal:{tmp_path / 'study.journal'}", tmp_path)
    storage = open_storage(spec, heartbeat_s=None)
    t0 = time.monotonic()
    with study_lock(spec, storage, "create:s"):
        study = optuna.create_study(study_name="s", storage=storage)
        study.enqueue_trial({"x": 1.0})
    assert time.monotonic() - t0 < 15
    assert len(study.trials) == 1


def test_the_lock_of_an_sqlite_file_lies_beside_it(tmp_path):
    spec = resolve_storage(f"sqlite:///{tmp_path / 'study.db'}", tmp_path)
    storage = open_storage(spec, heartbeat_s=None)
    with study_lock(spec, storage, "create:s"):
        optuna.create_study(study_name="s", storage=storage)
    names = {p.name for p in tmp_path.iterdir()}
    assert "study.db.autoprune-lock" in names and names <= {"study.db", "study.db-wal", "study.db-shm",
                                                            "study.db.autoprune-lock"}
