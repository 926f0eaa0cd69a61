"""A lock shared by every process of one study storage, on any host that reaches it.

Two things must not interleave between workers: creating a study (two identical ``search``
commands started at once: one creates, the other waits and joins) and claiming a trial slot (count
the trials counted or running, then ask for one: without the lock two workers that both see one
slot left would both take it and the study would overshoot its ``trials``).

- PostgreSQL: a session advisory lock (``pg_advisory_lock``) on a connection of its own; the
  server releases it when that connection dies, so a killed worker never leaves it held.
- MySQL/MariaDB: ``GET_LOCK``, likewise tied to the connection.
- SQLite and journal files: an ``fcntl`` lock on ``<file>.autoprune-lock`` beside the storage (one
  host by nature; the kernel releases it when the process dies). Not ``<file>.lock``: that is the
  path of Optuna's own journal lock (a symlink), which would take our file for a lock held by
  another process and wait out its 30 s grace period at every append.
- other servers: no lock (documented: a study may then overshoot its count by a worker's trial).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator

from sqlalchemy import text
from sqlalchemy.engine import make_url

from ..errors import StorageError
from .storage import StorageSpec

__all__ = ["study_lock", "lock_key", "LOCK_SUFFIX"]

LOCK_SUFFIX = ".autoprune-lock"


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (PostgreSQL advisory locks take a bigint)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def study_lock(spec: StorageSpec, storage, name: str, *, timeout_s: float = 600.0) -> Iterator[None]:
    """Hold the lock called ``name`` (e.g. ``create:<study>``) on ``spec`` while the block runs.

    ``storage`` is the open Optuna storage (its engine is reused on servers). StorageError when the
    lock is not had within ``timeout_s``.
    """
    if spec.kind in ("sqlite", "journal"):
        with _file_lock(spec.path, timeout_s):
            yield
        return
    backend = make_url(spec.url).get_backend_name()
    engine = getattr(storage, "engine", None)
    if engine is None or backend not in ("postgresql", "mysql", "mariadb"):
        yield
        return
    with engine.connect() as conn:
        if backend == "postgresql":
            conn.execute(text(f"SET lock_timeout = {int(timeout_s * 1000)}"))
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key(name)})
            conn.commit()
            try:
                yield
            finally:
                with contextlib.suppress(Exception):  # a dead connection released it already
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(name)})
                    conn.commit()
        else:
            got = conn.execute(text("SELECT GET_LOCK(:n, :t)"), {"n": name[:64], "t": int(timeout_s)}).scalar()
            if got != 1:
                raise StorageError(f"storage {spec.display!r}: lock {name!r} not had within {timeout_s:g} s")
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": name[:64]})


@contextlib.contextmanager
def _file_lock(path, timeout_s: float) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as for other servers
        yield
        return
    lock_path = path.with_name(path.name + LOCK_SUFFIX)
    with open(lock_path, "a") as f:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StorageError(f"{lock_path}: lock not had within {timeout_s:g} s") from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
