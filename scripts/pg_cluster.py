#!/usr/bin/env python3
"""A throwaway PostgreSQL cluster on 127.0.0.1 for tests and benchmarks (Debian's packages).

    python scripts/pg_cluster.py start /tmp/pg     # prints the URL; the cluster lives in /tmp/pg
    python scripts/pg_cluster.py stop /tmp/pg

From Python: ``with PgCluster.create() as pg: pg.url``; ``pg.stop()`` / ``pg.start()`` restart it on
the same port (the fault tests). PostgreSQL refuses to run as root: as root, ``initdb`` and
``pg_ctl`` run as the ``postgres`` user (Debian's package makes it) through ``runuser``, in a folder
that user owns. The binaries are found in ``/usr/lib/postgresql/<newest>/bin`` or on ``PATH``;
:func:`find_bin` returns None when there are none (``apt-get install postgresql``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["PgCluster", "find_bin", "free_port"]

USER = "autoprune"  # the cluster's superuser (trust authentication on the loopback only)
DATABASE = "autoprune"


def find_bin() -> Path | None:
    """The folder of ``initdb``/``pg_ctl``, newest major version first; None when not installed."""
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True):
        if (Path(d) / "initdb").is_file() and (Path(d) / "pg_ctl").is_file():
            return Path(d)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(os.path.realpath(pg_ctl)).parent
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """One cluster in ``root`` (``root/data``, ``root/log``, socket in ``root``), listening on
    127.0.0.1:``port``, with database :data:`DATABASE` owned by :data:`USER`."""

    def __init__(self, root: str | Path, port: int, bin_dir: Path, *, durable: bool = False):
        self.root, self.port, self.bin = Path(root), int(port), Path(bin_dir)
        self.durable = durable
        self.run_as = "postgres" if os.geteuid() == 0 else None
        if self.run_as is not None:
            try:
                pwd.getpwnam(self.run_as)
            except KeyError:
                raise RuntimeError("running as root needs the 'postgres' user (apt-get install postgresql)") from None

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _run(self, *cmd, check=True, timeout=120) -> subprocess.CompletedProcess:
        argv = [str(self.bin / cmd[0]), *map(str, cmd[1:])]
        if self.run_as is not None:
            argv = ["runuser", "-u", self.run_as, "--", *argv]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
        return out

    @classmethod
    def create(cls, root: str | Path | None = None, *, port: int | None = None, durable: bool = False) -> PgCluster:
        """initdb a new cluster (in a new temporary folder unless ``root``), start it, create the database."""
        bin_dir = find_bin()
        if bin_dir is None:
            raise RuntimeError("no PostgreSQL binaries (initdb, pg_ctl): apt-get install postgresql")
        root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="autoprune-pg-"))
        root.mkdir(parents=True, exist_ok=True)
        pg = cls(root, port or free_port(), bin_dir, durable=durable)
        if pg.run_as is not None:
            shutil.chown(root, pg.run_as, pg.run_as)
            os.chmod(root, 0o700)
        pg._run("initdb", "-D", pg.data, "-U", USER, "--auth=trust", "-E", "UTF8", "--no-instructions")
        conf = ["listen_addresses = '127.0.0.1'", f"port = {pg.port}", f"unix_socket_directories = '{root}'",
                "max_connections = 200", "shared_buffers = 32MB"]
        if not durable:  # a test database: nothing to keep across a power loss
            conf += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with open(pg.data / "postgresql.conf", "a") as f:
            f.write("\n".join(conf) + "\n")
        pg.start()
        pg._run("createdb", "-h", "127.0.0.1", "-p", pg.port, "-U", USER, DATABASE)
        return pg

    def start(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-l", self.root / "log", "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop", check=False)

    def is_running(self) -> bool:
        return self._run("pg_ctl", "-D", self.data, "status", check=False).returncode == 0

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()


def _wait_for(pg: PgCluster, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", pg.port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the cluster in {pg.root} does not answer on 127.0.0.1:{pg.port}")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    action, root = argv[0], Path(argv[1])
    if action == "start":
        pg = PgCluster.create(root)
        _wait_for(pg)
        (root / "port").write_text(str(pg.port))  # root is the postgres user's: written as root here
        print(pg.url)
        return 0
    bin_dir = find_bin()
    if bin_dir is None or not (root / "data").is_dir():
        print(f"no cluster in {root}", file=sys.stderr)
        return 2
    port = int((root / "port").read_text()) if (root / "port").is_file() else 0
    PgCluster(root, port, bin_dir).destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
