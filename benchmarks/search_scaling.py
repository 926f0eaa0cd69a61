"""Trials per minute of one study fed by 1, 2, 4 … workers on one PostgreSQL server.

    python benchmarks/search_scaling.py --out benchmarks/results/search_scaling_cpu.json
    python benchmarks/search_scaling.py --tiny --out /tmp/scaling.json       # a quick check (~1 min)
    python benchmarks/search_scaling.py --measure --out benchmarks/results/search_scaling_h200.json

For each worker count a fresh database on one throwaway PostgreSQL cluster (scripts/pg_cluster.py;
durable: fsync on) holds the default demo study (``autoprune search --gpu a100 --budget 4x``: demo
model, TPE, seed 0, the default references), created for external workers (``--workers 0``); then
N ``autoprune worker`` processes start at once, each in its own working directory with its own
host name and one CPU thread (as N hosts would), and run it to ``--trials``. Reported:

- ``trials_per_min``: counted trials (COMPLETE + PRUNED) over the wall time from the workers'
  start to the last one's exit (model loading and the prefix cache included: what a user waits);
- ``steady_trials_per_min``: the same between the first trial's start and the last trial's end
  (the study's own timestamps: the search once every worker is up);
- the share of trials each worker ran, and the load average.

``--measure``: the study times candidates on the present GPU (``--measure``, ``--gpu auto``) and
worker K is pinned to GPU K (``--device cuda:K``); worker counts default to 1 and every power of
two up to the GPU count (1 worker on one GPU is the baseline). Without PostgreSQL binaries on the
machine (``--storage sqlite``) the workers share one SQLite file instead (one host only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDY = "scaling"


def _cluster_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pg_cluster", ROOT / "scripts" / "pg_cluster.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _env(host: str) -> dict:
    env = dict(os.environ)
    # after what is there: an installed autoprune (the device's /tmp/site) comes first
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(ROOT)) if p)
    env.update(AUTOPRUNE_WORKER_HOST=host, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _create(url: str, out: Path, args) -> None:
    cmd = [sys.executable, "-m", "autoprune.cli", "search", "--model", args.model, "--gpu", args.gpu, "--budget",
           args.budget, "--trials", str(args.trials), "--study", STUDY, "--storage", url, "--workers", "0",
           "--no-progress", "--out", str(out)]
    if args.measure:
        cmd.append("--measure")
    for opt in args.model_option or ():
        cmd += ["--model-option", opt]
    subprocess.run(cmd, check=True, env=_env("creator"), cwd=out.parent, stdout=subprocess.DEVNULL)


def _counted(url: str):
    import optuna
    from optuna.trial import TrialState

    from autoprune.search.storage import close_storage, open_storage, resolve_storage

    storage = open_storage(resolve_storage(url, Path(".")), heartbeat_s=None)
    try:
        study = optuna.load_study(study_name=STUDY, storage=storage)
        return [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    finally:
        close_storage(storage)


def _server_cpu_s(cluster) -> float:
    """CPU seconds the server has used: the postmaster's own and its reaped children's (every backend
    that served a worker's connection), from /proc; 0 without a cluster (SQLite)."""
    if cluster is None:
        return 0.0
    try:
        pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return float("nan")
    live = 0
    for d in Path("/proc").iterdir():  # backends still running count too
        try:
            if d.name.isdigit() and (d / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                g = (d / "stat").read_text().rsplit(")", 1)[1].split()
                live += int(g[11]) + int(g[12])
        except (OSError, IndexError, ValueError):
            continue
    return (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14]) + live) / os.sysconf("SC_CLK_TCK")


def run_one(n: int, url: str, work: Path, args, cluster=None) -> dict:
    import resource

    work.mkdir(parents=True)
    _create(url, work / "creator", args)
    pre = {t.number for t in _counted(url)}  # references evaluated at creation (not the workers')
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    pg0 = _server_cpu_s(cluster)
    t0 = time.monotonic()
    procs = []
    for i in range(n):
        cwd = work / f"host-{i}"
        cwd.mkdir()
        cmd = [sys.executable, "-m", "autoprune.cli", "worker", "--storage", url, "--study", STUDY, "--index", str(i)]
        if args.measure:
            cmd += ["--device", f"cuda:{i}"]
        procs.append(subprocess.Popen(cmd, cwd=cwd, env=_env(f"host-{i}"), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    errs = []
    for p in procs:
        _out, err = p.communicate()
        if p.returncode != 0:
            errs.append(err.strip().splitlines()[-1] if err.strip() else f"exit {p.returncode}")
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    server_cpu = _server_cpu_s(cluster) - pg0
    trials = [t for t in _counted(url) if t.number not in pre]
    if errs:
        raise SystemExit(f"{n} workers: a worker failed: {errs}")
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    steady = (max(ends) - min(starts)).total_seconds() if starts and ends else float("nan")
    share: dict[str, int] = {}
    for t in trials:
        host = str(t.user_attrs.get("worker", "?")).split(":")[0]
        share[host] = share.get(host, 0) + 1
    return {"workers": n, "trials": len(trials), "wall_s": round(wall, 2),
            "trials_per_min": round(60 * len(trials) / wall, 1),
            "steady_s": round(steady, 2), "steady_trials_per_min": round(60 * len(trials) / steady, 1),
            "per_worker": dict(sorted(share.items())),
            # what saturates: the workers' CPU time against the machine's (wall × cores), and the server's
            "workers_cpu_s": round(worker_cpu, 1), "server_cpu_s": round(server_cpu, 1),
            "machine_cpu_share_workers": round(worker_cpu / (wall * os.cpu_count()), 3),
            "machine_cpu_share_server": round(server_cpu / (wall * os.cpu_count()), 3),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--workers", default=None, help="worker counts, e.g. 1,2,4 (default 1,2,4; with --measure 1 "
                                                    "and powers of two up to the GPU count)")
    ap.add_argument("--trials", type=int, default=None, help="trials per study (default 80; --tiny 24)")
    ap.add_argument("--model", default="demo")
    ap.add_argument("--model-option", action="append", metavar="KEY=VALUE")
    ap.add_argument("--gpu", default=None, help="target GPU of the study (default a100; --measure: auto)")
    ap.add_argument("--budget", default="4x")
    ap.add_argument("--measure", action="store_true", help="measure latency on the present GPUs, one worker a GPU")
    ap.add_argument("--storage", choices=["postgres", "sqlite"], default=None,
                    help="default postgres where its binaries are installed, else sqlite")
    ap.add_argument("--tiny", action="store_true", help="the synthetic model, 24 trials, 1,2 workers")
    args = ap.parse_args(argv)
    # a terminated run still stops its cluster and removes its folders (the finally below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.tiny:
        args.model, args.trials = "synthetic", args.trials or 24
        args.workers = args.workers or "1,2"
    args.trials = args.trials or 80
    args.gpu = args.gpu or ("auto" if args.measure else "a100")
    n_gpus = 0
    if args.measure:
        import torch

        n_gpus = torch.cuda.device_count()
        if n_gpus == 0:
            raise SystemExit("--measure needs CUDA GPUs (one worker a GPU)")
    if args.workers:
        counts = [int(x) for x in args.workers.split(",")]
    elif args.measure:
        counts = [k for k in (1, 2, 4, 8) if k <= n_gpus]
    else:
        counts = [1, 2, 4]
    if args.measure and max(counts) > n_gpus:
        raise SystemExit(f"--measure: {max(counts)} workers need as many GPUs; {n_gpus} present")
    pgc = _cluster_module()
    storage = args.storage or ("postgres" if pgc.find_bin() is not None else "sqlite")
    root = Path(tempfile.mkdtemp(prefix="autoprune-scaling-"))
    cluster = pgc.PgCluster.create(durable=True) if storage == "postgres" else None
    rows = []
    try:
        for n in counts:
            if cluster is not None:
                import psycopg

                db = f"scaling_{n}"
                with psycopg.connect(cluster.url, autocommit=True) as conn:
                    conn.execute(f"CREATE DATABASE {db}")
                url = cluster.url.rsplit("/", 1)[0] + "/" + db
            else:
                url = f"sqlite:///{root / f'scaling_{n}.db'}"
            row = run_one(n, url, root / f"w{n}", args, cluster)
            rows.append(row)
            print(f"{n} worker(s): {row['trials']} trials in {row['wall_s']:.1f} s = {row['trials_per_min']:.1f}/min "
                  f"(steady {row['steady_trials_per_min']:.1f}/min), per worker {row['per_worker']}", flush=True)
    finally:
        if cluster is not None:
            cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)
    base = rows[0]["trials_per_min"] if rows else float("nan")
    print(f"\n{'workers':>7} {'trials':>6} {'wall s':>7} {'trials/min':>10} {'steady/min':>10} {'speedup':>7} "
          f"{'workers CPU':>11} {'server CPU':>10} {'load':>5}")
    for r in rows:
        print(f"{r['workers']:>7} {r['trials']:>6} {r['wall_s']:>7.1f} {r['trials_per_min']:>10.1f} "
              f"{r['steady_trials_per_min']:>10.1f} {r['trials_per_min'] / base:>7.2f} "
              f"{r['machine_cpu_share_workers']:>10.0%} {r['machine_cpu_share_server']:>10.0%} "
              f"{r['load_average'][0]:>5.1f}")
    gpu_names = []
    if args.measure:
        import torch

        gpu_names = [torch.cuda.get_device_name(i) for i in range(n_gpus)]
    meta = {"date": datetime.now().isoformat(timespec="seconds"), "machine": platform.node(),
            "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(), "gpus": gpu_names,
            "storage": storage + (" (PostgreSQL, durable: fsync on)" if storage == "postgres" else ""),
            "study": {"model": args.model, "gpu": args.gpu, "budget": args.budget, "trials": args.trials,
                      "measure": args.measure, "model_options": args.model_option or []},
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
