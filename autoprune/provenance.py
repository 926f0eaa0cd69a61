"""Where a result came from: package versions, the git commit of a source checkout, the command
line, the machine — recorded in every settings file, schedule, index and report.

:func:`environment` is collected once when a study is created (and stored in its settings);
artifacts written later copy it and add what they are about (latency source, evaluation set).
"""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from ._version import __version__

__all__ = ["environment", "versions", "git_commit", "utc_now", "PACKAGES"]

PACKAGES = ("torch", "transformers", "optuna", "triton", "mamba-ssm", "numpy")


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def versions() -> dict[str, str | None]:
    """Installed versions of autoprune and the packages its numbers depend on (None: not installed)."""
    out: dict[str, str | None] = {"autoprune": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """The commit (with ``+dirty`` when the tree has changes) of the checkout autoprune runs from, or None
    for an installed package."""
    here = Path(__file__).resolve().parent.parent
    if not (here / ".git").exists():
        return None
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


def environment(command: list[str] | None = None) -> dict:
    """Versions, commit, command line (default: this process's), host and time, as plain data."""
    argv = list(sys.argv if command is None else command)
    return {"created": utc_now(), "versions": versions(), "git_commit": git_commit(),
            "command": " ".join(argv), "host": platform.node(), "platform": platform.platform()}
