"""Where a study lives: resolving ``--storage``, failing fast when a server does not answer,
opening it for several workers, and closing it.

``--storage`` is None (SQLite ``runs/<study>/study.db``), any SQLAlchemy URL (SQLite, PostgreSQL,
MySQL), ``journal:PATH`` or a path ending in ``.journal``/``.log`` (an Optuna journal file).

PostgreSQL is the storage for many hosts: ``postgresql://user@host:5432/db`` uses psycopg 3
(``pip install 'autoprune[postgres]'``; a URL naming another driver, ``postgresql+psycopg2://``,
keeps it). The password is best left out of the URL (libpq reads ``PGPASSWORD`` or
``~/.pgpass``): the URL is printed and recorded in ``search.json`` without it. Each process opens
a small pool (:data:`POOL`: two connections and two more on demand, each checked before use so that
a restarted server's dead connections are replaced), and every call retries through a lost
connection (:mod:`autoprune.search.resilient`).
"""

from __future__ import annotations

import math
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ..errors import AutopruneError, StorageError
from .resilient import ResilientRDBStorage

__all__ = ["StorageSpec", "resolve_storage", "probe_storage", "open_storage", "close_storage", "storage_has_study",
           "POOL", "study_names"]

# Per process: the trial's calls and the heartbeat thread use one connection each, the lock of
# trial claims (autoprune.search.locks) a third. N workers hold at most 4 N connections: PostgreSQL's
# default max_connections (100) serves ~24 workers; raise it for more. pool_recycle avoids
# connections that a firewall or PgBouncer dropped silently.
POOL = {"pool_size": 2, "max_overflow": 2, "pool_pre_ping": True, "pool_recycle": 1800, "pool_timeout": 60}


@dataclass(frozen=True)
class StorageSpec:
    """Where a study lives. ``kind``: ``sqlite`` (a file), ``rdb`` (a server), ``journal`` (a file).

    ``url`` is the SQLAlchemy URL (sqlite, rdb) and ``path`` the file (sqlite, journal);
    ``display`` is safe to print and store (no password).
    """

    kind: str
    url: str | None
    path: Path | None
    display: str


_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433, "oracle": 1521}


def resolve_storage(storage: str | None, run_dir: Path) -> StorageSpec:
    """Parse ``--storage``: None (SQLite ``run_dir/study.db``), a SQLAlchemy URL,
    ``journal:PATH`` or a path ending in ``.journal``/``.log`` (an Optuna journal file)."""
    if storage is None:
        path = run_dir / "study.db"
        return StorageSpec("sqlite", f"sqlite:///{path.resolve()}", path, f"sqlite:///{path}")
    s = storage.strip()
    if s.startswith("journal:") or (("://" not in s) and s.endswith((".journal", ".log", ".jsonl"))):
        p = s[len("journal:"):] if s.startswith("journal:") else s
        p = p[2:] if p.startswith("//") else p
        if not p:
            raise StorageError(f"journal storage {storage!r} names no file")
        path = Path(p).expanduser()
        if not path.parent.is_dir():
            raise StorageError(f"journal storage {storage!r}: folder {str(path.parent)!r} does not exist")
        return StorageSpec("journal", None, path, f"journal:{path}")
    if "://" not in s:
        raise StorageError(
            f"storage {storage!r} is neither a URL nor a journal file: use e.g. sqlite:///runs/x/study.db, "
            "postgresql://user@host/db, or journal:runs/x/study.journal"
        )
    try:
        url = make_url(s)
    except ArgumentError as e:
        raise StorageError(f"storage URL {storage!r} is not valid: {e}") from None
    backend = url.get_backend_name()
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")  # the maintained driver (the postgres extra)
        s = url.render_as_string(hide_password=False)
    # No password in what is printed and stored: libpq finds it in PGPASSWORD or ~/.pgpass.
    display = url._replace(password=None).render_as_string() if url.password else url.render_as_string()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise StorageError(f"storage {display!r} is in memory: the study would be lost; give a file")
        path = Path(url.database)
        if not path.parent.is_dir() and path.resolve().parent != run_dir.resolve():
            raise StorageError(f"storage {display!r}: folder {str(path.parent)!r} does not exist")
        return StorageSpec("sqlite", s, path, display)
    return StorageSpec("rdb", s, None, display)


def probe_storage(spec: StorageSpec, timeout_s: float = 3.0) -> None:
    """Fail fast (StorageError) if a server storage does not answer; writes nothing.

    A TCP connection to the server's host and port within ``timeout_s`` (driver-free,
    so it also fails fast when the driver would hang), then the SQLAlchemy driver import.
    """
    if spec.kind != "rdb":
        return
    url = make_url(spec.url)
    backend = url.get_backend_name()
    host = url.host or "localhost"
    port = url.port or _DEFAULT_PORTS.get(backend)
    if port is not None and not host.startswith("/"):
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                pass
        except OSError as e:
            raise StorageError(
                f"storage {spec.display!r} does not answer at {host}:{port} (within {timeout_s:g} s): {e}"
            ) from None
    try:
        url.get_dialect().import_dbapi()
    except ImportError as e:
        hint = " (pip install 'autoprune[postgres]')" if backend == "postgresql" else ""
        raise StorageError(f"storage {spec.display!r}: the {backend} driver is not installed{hint}: {e}") from None


def open_storage(spec: StorageSpec, *, heartbeat_s: int | None = 10, timeout_s: float = 3.0,
                 grace_s: int | None = None, retry_s: float = 300.0, max_retry: int = 2, snapshot: bool = False):
    """An Optuna storage for ``spec``; StorageError (with the cause) if it cannot be opened.

    SQLite waits up to 60 s on a locked database (several workers write to it); RDB
    server storages (PostgreSQL, MySQL) are a :class:`ResilientRDBStorage` (each call retries
    through a lost connection for ``retry_s``), with the :data:`POOL` settings, and record heartbeats
    every ``heartbeat_s`` s (grace ``grace_s``, default ``6 × heartbeat_s``): a trial whose heartbeat
    is older is failed and re-queued, at most ``max_retry`` times for one trial (Optuna's
    ``RetryHeartbeatStaleTrialCallback``). ``snapshot``: every session of a server storage is one
    REPEATABLE READ transaction (the reads of :func:`~autoprune.search.snapshot.study_snapshot`).
    """
    try:
        if spec.kind == "journal":
            return JournalStorage(JournalFileBackend(str(spec.path)))
        engine_kwargs: dict[str, Any] = {}
        if spec.kind == "sqlite":
            engine_kwargs["connect_args"] = {"timeout": 60}
        else:
            backend = make_url(spec.url).get_backend_name()
            if backend in ("postgresql", "mysql", "mariadb"):
                engine_kwargs["connect_args"] = {"connect_timeout": max(1, int(math.ceil(timeout_s)))}
            engine_kwargs.update(POOL)
            if snapshot and backend in ("postgresql", "mysql", "mariadb"):
                engine_kwargs["isolation_level"] = "REPEATABLE READ"
        hb: dict[str, Any] = {}
        # Heartbeats only on server databases: on SQLite (one host by nature) the heartbeat
        # thread's writes contend with the trial's own for the file lock (measured: +0.5 s
        # per trial); orphans there are found by their dead worker process instead.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if heartbeat_s and spec.kind == "rdb":
                hb = dict(heartbeat_interval=int(heartbeat_s), grace_period=int(grace_s or 6 * heartbeat_s),
                          heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                              max_retry=max_retry))
            for attempt in range(4):
                try:
                    if spec.kind == "rdb":
                        storage = ResilientRDBStorage(spec.url, retry_s=retry_s, engine_kwargs=engine_kwargs, **hb)
                    else:
                        storage = optuna.storages.RDBStorage(spec.url, engine_kwargs=engine_kwargs, **hb)
                    break
                except (sa_exc.IntegrityError, sa_exc.ProgrammingError, sa_exc.OperationalError) as e:
                    # Two processes opening a new database at once both create Optuna's tables: the
                    # loser's CREATE fails ("already exists"); the tables are there on the next try.
                    if attempt == 3 or not _creation_race(e):
                        raise
                    time.sleep(0.2 * (attempt + 1))
        if spec.kind == "sqlite":
            _sqlite_wal(storage.engine)
        return storage
    except AutopruneError:
        raise
    except Exception as e:  # sqlalchemy.exc.*, OSError, driver errors
        raise StorageError(f"cannot open storage {spec.display!r}: {type(e).__name__}: {e}") from None


def _creation_race(e: Exception) -> bool:
    text = str(e).lower()
    return "already exists" in text or "duplicate key" in text or "unique constraint" in text or "locked" in text


def _sqlite_wal(engine) -> None:
    """Make SQLite safe and fast for several worker processes.

    - ``BEGIN IMMEDIATE`` for every transaction (pysqlite's own transaction handling
      off, SQLAlchemy's recipe): Optuna pops an enqueued trial by reading its state
      and then updating it, with a row lock SQLite ignores; pysqlite runs the read
      outside any transaction, so two workers could both pop the same reference
      trial (seen: "Cannot tell a COMPLETE trial" and a crashed worker). Taking the
      write lock at the start of the transaction makes read-then-update atomic.
    - write-ahead log with ``synchronous=NORMAL``: Optuna commits every suggest and
      attr (~40 commits per trial); with the default journal each commit waited
      15 ms for fsync here (0.6 s of storage time per trial). WAL survives a killed
      process (the resume case), may lose the last commits on power loss, and
      readers (the progress bar) do not block the workers.
    """
    def on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" hook below owns transactions
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    def on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)
    engine.dispose()  # connections opened by RDBStorage's set-up are re-made with these settings


def storage_has_study(spec: StorageSpec, name: str, *, timeout_s: float = 3.0) -> bool:
    """Whether ``spec`` holds a study called ``name`` (False when its file does not exist yet)."""
    if spec.kind in ("sqlite", "journal") and not spec.path.exists():
        return False
    storage = open_storage(spec, heartbeat_s=None, timeout_s=timeout_s, retry_s=0)
    try:
        return name in study_names(storage)
    finally:
        close_storage(storage)


def study_names(storage) -> set[str]:
    """The names of the studies an open storage holds."""
    return {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}


def close_storage(storage) -> None:
    """Release the storage's database handles (SQLite files can then be removed)."""
    # Release SQLite handles promptly (tests delete run dirs; Windows-safe too).
    engine = getattr(storage, "engine", None) or getattr(getattr(storage, "_backend", None), "engine", None)
    if engine is not None:
        engine.dispose()
