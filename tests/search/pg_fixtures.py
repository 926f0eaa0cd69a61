"""A real PostgreSQL server for the distributed-search tests: a throwaway cluster on 127.0.0.1 in a
temporary folder (``scripts/pg_cluster.py``), started once per test module and removed after.

Skipped, saying why, only where no PostgreSQL binaries or no psycopg are installed; ``.ci/run``
installs both, so CI never skips. As root the cluster runs as the ``postgres`` user.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def _cluster_module():
    spec = importlib.util.spec_from_file_location("pg_cluster", ROOT / "scripts" / "pg_cluster.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


pg_cluster = _cluster_module()


@pytest.fixture(scope="module")
def pg():
    """A running :class:`PgCluster` (``pg.url``, ``pg.stop()``, ``pg.start()``)."""
    if pg_cluster.find_bin() is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl): apt-get install postgresql (.ci/run does)")
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("no psycopg: pip install 'autoprune[postgres]'")
    cluster = pg_cluster.PgCluster.create()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_db(pg):
    """A fresh database on the cluster for one test (its URL): tests share nothing but the server."""
    import psycopg

    name = f"t{os.getpid()}_{os.urandom(4).hex()}"
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return pg.url.rsplit("/", 1)[0] + "/" + name


def worker_env(host: str, **extra) -> dict:
    """The environment of a worker process that stands for another host: the package and the test
    model source importable, its own host name for trial ownership (so only heartbeats can tell
    that it died), one thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE)])
    env.update(AUTOPRUNE_WORKER_HOST=host, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    return env


def start_worker(url: str, study: str, cwd: Path, host: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    """``autoprune worker --storage url --study study`` in its own working directory ``cwd``."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "autoprune.cli", "worker", "--storage", url, "--study", study,
                             *args], cwd=cwd, env=env or worker_env(host), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
