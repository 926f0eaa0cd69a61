"""Running a study's trials: in this process, or in worker processes on one storage.

Each worker process opens the storage itself (``multiprocessing`` spawn), reads the study's
stored :class:`~autoprune.search.settings.StudySettings`, builds its own evaluator and latency
sources through the study's model source, and runs ``study.optimize`` for its share of the
remaining trials with Optuna's ``MaxTrialsCallback`` on the total as a cap. ``trials`` counts
finished trials (COMPLETE, PRUNED or FAIL), references included.
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
from optuna.study import MaxTrialsCallback

from ..interfaces import SourceRequest, StudyInputs
from ..models import get_model_source
from .objective import TrialRunner
from .quiet import optuna_quiet
from .recovery import count_finished, finished_states
from .samplers import derive_seed, make_sampler
from .settings import StudySettings, load_settings
from .storage import StorageSpec, close_storage, open_storage

__all__ = ["build_inputs", "run_worker", "run_workers", "WorkerTask"]


def build_inputs(settings: StudySettings) -> StudyInputs:
    """The study's inputs, from its model source (called once per process)."""
    source = get_model_source(settings.model)
    return source.build(SourceRequest(gpu=settings.gpu, task=settings.task, measure=settings.measure,
                                      options=settings.model_options))


def run_worker(study, inputs: StudyInputs, settings: StudySettings, index: int, n_trials: int,
               timeout: float | None, show_progress: bool) -> None:
    """Run up to ``n_trials`` trials of ``study`` here, stopping when the study has ``settings.trials``."""
    study.sampler = make_sampler(settings.sampler, derive_seed(settings.seed, index, count_finished(study)),
                                 trials=settings.trials)
    runner = TrialRunner.from_settings(settings, inputs)
    study.optimize(runner, n_trials=n_trials, timeout=timeout, catch=(Exception,),
                   callbacks=[MaxTrialsCallback(settings.trials, states=finished_states())],
                   show_progress_bar=show_progress, gc_after_trial=False)


@dataclass(frozen=True)
class WorkerTask:
    """What a spawned worker is told (plain data: it crosses a process boundary)."""

    kind: str
    url: str | None
    path: str | None
    display: str
    study: str
    index: int
    n_trials: int
    heartbeat_s: int
    timeout: float | None

    @property
    def storage(self) -> StorageSpec:
        return StorageSpec(self.kind, self.url, Path(self.path) if self.path else None, self.display)


def _worker_main(task: dict) -> None:
    """Entry point of a spawned worker: open the storage, read the settings, build the inputs, run a share."""
    t = WorkerTask(**task)
    with optuna_quiet():
        storage = open_storage(t.storage, heartbeat_s=t.heartbeat_s)
        try:
            study = optuna.load_study(study_name=t.study, storage=storage)
            settings = load_settings(study)
            run_worker(study, build_inputs(settings), settings, t.index, t.n_trials, t.timeout, False)
        finally:
            close_storage(storage)


def run_workers(spec: StorageSpec, study_name: str, *, workers: int, remaining: int, heartbeat_s: int,
                timeout: float | None, show_progress: bool, log) -> None:
    """``workers`` spawned processes share ``remaining`` trials; progress is read from the storage."""
    n = min(workers, remaining)
    shares = [remaining // n + (1 if i < remaining % n else 0) for i in range(n)]
    ctx = mp.get_context("spawn")
    procs = []
    for i, share in enumerate(shares):
        task = WorkerTask(spec.kind, spec.url, str(spec.path) if spec.path else None, spec.display, study_name, i,
                          share, heartbeat_s, timeout)
        p = ctx.Process(target=_worker_main, args=(asdict(task),), name=f"autoprune-worker-{i}")
        p.start()
        procs.append(p)
    try:
        _watch(spec, study_name, procs, remaining, show_progress)
    except BaseException:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(10)
        raise
    bad = [(p.name, p.exitcode) for p in procs if p.exitcode != 0]
    if bad:
        log(f"warning: worker(s) exited abnormally: {bad}; finished trials are kept, continue with --resume")


def _watch(spec: StorageSpec, study_name: str, procs, remaining: int, show_progress: bool) -> None:
    bar = storage = study = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=remaining, desc=study_name, unit="trial")
        storage = open_storage(spec, heartbeat_s=None)
        study = optuna.load_study(study_name=study_name, storage=storage)
        start = count_finished(study)
    try:
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(0.5)
            if bar is not None:
                bar.n = min(remaining, count_finished(study) - start)
                bar.refresh()
    finally:
        if bar is not None:
            bar.close()
            close_storage(storage)
