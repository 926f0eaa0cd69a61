"""Running a study's trials: in this process, in worker processes on one host, or as a worker
that joined from another host (``autoprune worker``).

Every worker runs the same ask/tell loop (:func:`run_worker`) until the study holds ``trials``
counted trials (COMPLETE or PRUNED; a failed or orphaned trial does not count):

1. **recover** and **claim**, both under the storage's lock (:mod:`autoprune.search.locks`):
   trials whose worker is gone are failed and re-queued
   (:func:`~autoprune.search.recovery.recover_orphans`: a stale heartbeat on a server storage, a
   dead process on this host); then count the counted and running trials; when they reach the
   total, wait (a running trial may still fail and need a re-run) or stop; else ``study.ask()``
   (a re-queued trial first) and record its first heartbeat. No two workers take the last slot,
   and no slot freed by an orphan goes to a fresh trial before its re-queued copy, so the study
   ends at exactly its count;
2. **run** the trial with a heartbeat thread beside it (Optuna's own heartbeat runs only inside
   ``study.optimize``), then ``study.tell`` its values, PRUNED, or FAIL with the reason
   (:mod:`autoprune.search.objective` records it: a raise, an out-of-memory, a NaN).

A storage that loses its server retries each call (:mod:`autoprune.search.resilient`); after such
an outage a worker waits one grace period before judging other workers' heartbeats.

Spawned workers (``--workers N``) each open the storage, read the study's stored
:class:`~autoprune.search.settings.StudySettings`, and build their own evaluator and latency
sources through the study's model source; ``--devices 0,1`` gives each one GPU
(``CUDA_VISIBLE_DEVICES`` set before anything touches CUDA).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import os

import optuna
from optuna.trial import TrialState

from ..interfaces import SourceRequest, StudyInputs
from ..models import get_model_source
from .devices import pin_device
from .locks import study_lock
from .objective import TrialRunner
from .quiet import optuna_quiet
from .records import NOISE_ATTR, noise_text
from .recovery import count_done, recover_orphans
from .resilient import is_connection_error
from .samplers import derive_seed, make_sampler
from .settings import StudySettings, load_settings
from .storage import StorageSpec, close_storage, open_storage

__all__ = ["build_inputs", "run_worker", "run_workers", "WorkerTask", "WorkerStats", "worker_index"]

# A study whose trials keep failing stops instead of sampling forever: after this many FAIL trials
# (or the study's total, when larger) no worker starts another.
MIN_FAILURE_CAP = 10


def build_inputs(settings: StudySettings) -> StudyInputs:
    """The study's inputs, from its model source (called once per process)."""
    source = get_model_source(settings.model)
    return source.build(SourceRequest(gpu=settings.gpu, task=settings.task, measure=settings.measure,
                                      options=settings.model_options))


def worker_index(identity: str) -> int:
    """A sampler-seed index for a worker that was given none (different workers sample differently)."""
    return zlib.crc32(identity.encode()) % 100_000 + 1000


@dataclass
class WorkerStats:
    """What one worker did: trial numbers it told, by final state, and why it stopped."""

    told: dict[str, list[int]] = field(default_factory=lambda: {"COMPLETE": [], "PRUNED": [], "FAIL": []})
    lost: list[int] = field(default_factory=list)  # failed by another worker (stale) before this one told them
    stopped: str = ""

    @property
    def ran(self) -> int:
        return sum(len(v) for v in self.told.values()) + len(self.lost)


class _Heartbeat:
    """Records the trial's heartbeat every ``interval`` s in a thread (errors are the storage's)."""

    def __init__(self, storage, trial_id: int, interval: float):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{trial_id}")

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # a non-connection error: the next beat tries again  # noqa: S112
                continue

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def _heartbeat_interval(storage) -> float | None:
    get = getattr(storage, "get_heartbeat_interval", None)
    return get() if get is not None else None


def _backend(storage):
    """The storage under Optuna's cache wrapper (where ``last_trouble`` and ``grace_period`` live)."""
    return getattr(storage, "_backend", storage)


def _claim(study, spec: StorageSpec | None, target: int, failure_cap: int, recover: Callable[[], object]):
    """Under the storage's lock: ``recover()`` orphans, then ``("stop", why)``, ``("wait", None)`` or
    ``("run", trial)``."""
    lock = study_lock(spec, _backend(study._storage), f"claim:{study.study_name}") if spec is not None else None
    with lock if lock is not None else _nothing():
        # Inside the lock: between an orphan's FAIL and its re-queued copy another worker would
        # see a free slot, ask a fresh trial, and the copy would be left WAITING past the count.
        recover()
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                          TrialState.RUNNING, TrialState.FAIL))
        done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        failed = sum(t.state == TrialState.FAIL for t in trials)
        if done >= target:
            return "stop", f"the study has its {target} counted trials"
        if failed >= failure_cap:
            return "stop", f"{failed} trials failed (the cap is {failure_cap}); see their fail_reason"
        if done + running >= target:
            return "wait", None
        with warnings.catch_warnings():
            # "Heartbeat of storage is supposed to be used with Study.optimize": this loop beats itself.
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = study.ask()
        if _heartbeat_interval(study._storage):
            study._storage.record_heartbeat(trial._trial_id)  # a trial killed before its first beat still goes stale
        return "run", trial


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def run_worker(study, inputs: StudyInputs, settings: StudySettings, index: int, *, spec: StorageSpec | None = None,
               timeout: float | None = None, max_trials: int | None = None, show_progress: bool = False,
               poll_s: float = 0.5, log: Callable[[str], None] | None = None) -> WorkerStats:
    """Run trials of ``study`` here until it holds ``settings.trials`` counted trials (see the module
    docstring), ``timeout`` seconds passed (no new trial is started after), or this worker ran
    ``max_trials``. ``spec`` names the storage for its lock (None: no lock, one process)."""
    log = log or (lambda _m: None)
    study.sampler = make_sampler(settings.sampler, derive_seed(settings.seed, index, count_done(study)),
                                 trials=settings.trials)
    runner = TrialRunner.from_settings(settings, inputs)
    interval = _heartbeat_interval(study._storage)
    backend = _backend(study._storage)
    grace = float(getattr(backend, "grace_period", None) or 0)
    failure_cap = max(MIN_FAILURE_CAP, settings.trials)
    stats = WorkerStats()
    start = time.monotonic()
    retry_s = float(getattr(backend, "retry_s", 0.0))
    outage_since, backoff = float("inf"), 0.25
    bar = _progress(study, settings.trials) if show_progress else None
    try:
        while True:
            if timeout is not None and time.monotonic() - start > timeout:
                stats.stopped = f"timeout ({timeout:g} s)"
                break
            if max_trials is not None and stats.ran >= max_trials:
                stats.stopped = f"ran its {max_trials} trials"
                break
            # Judge others' heartbeats only a grace period after this worker's last storage trouble.
            heartbeats_fresh = time.monotonic() - getattr(backend, "last_trouble", float("-inf")) > grace
            try:
                action, what = _claim(study, spec, settings.trials, failure_cap,
                                      lambda: recover_orphans(study, log=log, quiet=True, stale=heartbeats_fresh))
            except Exception as e:
                if not is_connection_error(e) or time.monotonic() - outage_since > retry_s:
                    raise
                # The lock's own connection is not retried by the storage: wait here, as it does.
                if hasattr(backend, "note_trouble"):
                    backend.note_trouble()
                outage_since = min(outage_since, time.monotonic())
                log(f"storage unavailable ({type(e).__name__}); retrying in {backoff:g} s")
                time.sleep(backoff)
                backoff = min(8.0, backoff * 2)
                continue
            outage_since, backoff = float("inf"), 0.25
            if action == "stop":
                stats.stopped = what
                break
            if action == "wait":
                time.sleep(poll_s)
                continue
            _run_one(study, runner, what, interval, stats, log)
            if bar is not None:
                bar.n = min(settings.trials, count_done(study))
                bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    return stats


def _progress(study, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=count_done(study), desc=study.study_name, unit="trial")


def _run_one(study, runner: TrialRunner, trial, interval: float | None, stats: WorkerStats, log) -> None:
    values, state = None, TrialState.COMPLETE
    with _Heartbeat(study._storage, trial._trial_id, interval) if interval else _nothing():
        try:
            values = runner(trial)
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except KeyboardInterrupt:
            # Told FAIL at once (it does not count): a resume need not wait to find it orphaned.
            with contextlib.suppress(Exception):
                trial.set_user_attr("fail_reason", "interrupted (Ctrl-C)")
                study.tell(trial, state=TrialState.FAIL)
            raise
        except Exception as e:
            if is_connection_error(e):
                raise  # the storage gave up retrying: this worker cannot go on
            state = TrialState.FAIL  # the runner recorded fail_reason
            log(f"trial {trial.number} failed: {trial.user_attrs.get('fail_reason') or repr(e)}")
    noise = trial.user_attrs.get(NOISE_ATTR)
    if noise:
        log(f"trial {trial.number}: noisy timing ({noise_text(noise)}): its latency is uncertain")
    try:
        if state == TrialState.COMPLETE:
            study.tell(trial, list(values))
        else:
            study.tell(trial, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        stats.lost.append(trial.number)  # failed as stale meanwhile (and re-queued by whoever did)
        log(f"trial {trial.number} was failed by another worker (stale heartbeat) before it was told; re-queued")
        return
    final = study._storage.get_trial(trial._trial_id).state
    stats.told.setdefault(final.name, []).append(trial.number)


@dataclass(frozen=True)
class WorkerTask:
    """What a spawned worker is told (plain data: it crosses a process boundary)."""

    kind: str
    url: str | None
    path: str | None
    display: str
    study: str
    index: int
    heartbeat_s: int
    grace_s: int | None
    timeout: float | None
    device: str | None = None
    threads: int | None = None

    @property
    def storage(self) -> StorageSpec:
        return StorageSpec(self.kind, self.url, Path(self.path) if self.path else None, self.display)


def _worker_main(task: dict) -> None:
    """Entry point of a spawned worker: pin its device, open the storage, read the settings, build the
    inputs, run the loop."""
    t = WorkerTask(**task)
    pin_device(t.device)
    if t.threads is not None:
        import torch

        torch.set_num_threads(t.threads)
    with optuna_quiet():
        storage = open_storage(t.storage, heartbeat_s=t.heartbeat_s, grace_s=t.grace_s)
        try:
            study = optuna.load_study(study_name=t.study, storage=storage)
            settings = load_settings(study)
            run_worker(study, build_inputs(settings), settings, t.index, spec=t.storage, timeout=t.timeout)
        finally:
            close_storage(storage)


def threads_per_worker(workers: int, cpus: int | None = None) -> int:
    """CPU threads each of ``workers`` processes on one machine may use: an equal share of the cores,
    at least one (torch's default of every core per process oversubscribes the CPU many times over)."""
    cpus = os.cpu_count() if cpus is None else cpus
    return max(1, (cpus or 1) // max(1, workers))


def run_workers(spec: StorageSpec, study_name: str, *, workers: int, total: int, heartbeat_s: int,
                grace_s: int | None = None, timeout: float | None, show_progress: bool, log,
                devices: Sequence[str] = ()) -> None:
    """``workers`` spawned processes run the study to ``total`` counted trials; worker ``i`` gets
    ``devices[i % len(devices)]`` when devices are given. Progress is read from the storage."""
    ctx = mp.get_context("spawn")
    procs = []
    for i in range(workers):
        device = devices[i % len(devices)] if devices else None
        task = WorkerTask(spec.kind, spec.url, str(spec.path) if spec.path else None, spec.display, study_name, i,
                          heartbeat_s, grace_s, timeout, device, threads_per_worker(workers))
        p = ctx.Process(target=_worker_main, args=(asdict(task),), name=f"autoprune-worker-{i}")
        p.start()
        procs.append(p)
    try:
        _watch(spec, study_name, procs, total, show_progress)
    except BaseException:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(10)
        raise
    bad = [(p.name, p.exitcode) for p in procs if p.exitcode != 0]
    if bad:
        log(f"warning: worker(s) exited abnormally: {bad}; counted trials are kept, continue with --resume")


def _watch(spec: StorageSpec, study_name: str, procs, total: int, show_progress: bool) -> None:
    bar = storage = study = None
    if show_progress:
        storage = open_storage(spec, heartbeat_s=None)
        study = optuna.load_study(study_name=study_name, storage=storage)
        bar = _progress(study, total)
    try:
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(0.5)
            if bar is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    bar.n = min(total, count_done(study))
                bar.refresh()
    finally:
        if bar is not None:
            bar.close()
            close_storage(storage)
