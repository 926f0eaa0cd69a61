"""Which process ran a trial: ``host:pid:start``, and whether that process still lives.

Every trial records its worker first thing, so that a trial left RUNNING by a process that died
can be told from one that is still running (see :mod:`autoprune.search.recovery`).

The host is ``AUTOPRUNE_WORKER_HOST`` when set, else the host name: containers that share a host
name but not a process table (``--network host``, some batch systems) must set it, or a worker
would judge another's trial by a pid that is not its own.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

__all__ = ["worker_identity", "worker_alive"]


def _start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def _host() -> str:
    return os.environ.get("AUTOPRUNE_WORKER_HOST") or socket.gethostname()


def worker_identity() -> str:
    """``host:pid:start`` of this process (start time from /proc where available)."""
    return f"{_host()}:{os.getpid()}:{_start_time(os.getpid())}"


def worker_alive(identity: str | None) -> bool | None:
    """True/False for a worker of this host, None when it cannot be told (another host)."""
    if not identity:
        return False
    try:
        host, pid_s, start = identity.rsplit(":", 2)
        pid = int(pid_s)
    except ValueError:
        return False
    if host != _host():
        return None
    if start != "?":
        return _start_time(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
