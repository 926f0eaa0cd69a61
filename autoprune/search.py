"""The Optuna study: objectives, budget constraint, references, samplers, storage, workers.

``run_search(SearchConfig(gpu="a100", budget="4x"))`` is what ``autoprune search
--gpu a100 --budget 4x`` does:

1. **validate** everything before anything is written: the budget (BudgetError), the
   space and spec files (ConfigError), the sampler, the storage (a URL that does not
   answer → StorageError within ``probe_timeout_s``), the model, task and GPU through
   :func:`build_default_study_inputs` (UnknownGPUError), and that the budget can be
   reached at all;
2. create ``runs/<study>/`` and the study (SQLite ``runs/<study>/study.db`` by default,
   any SQLAlchemy URL, or an Optuna journal file), record the study's settings in its
   user attrs, and enqueue the **reference schedules** first;
3. run the trials in this process or in ``workers`` spawned processes on one storage;
4. export the feasible Pareto front (:mod:`autoprune.export`), print a summary, call
   the report hook.

**Objectives**: the evaluator's score ↑ (accuracy, or fidelity for models without
labels) and the prefill latency ↓ from the latency source (predicted for an absent GPU,
measured with ``measure``), optionally energy ↓. **Budget**: every finished trial
carries ``trial.set_constraint("budget", latency / limit - 1)``; the export enforces it.

**A candidate that cannot meet the budget costs no accuracy evaluation.** The search
*projects* it onto the budget (``over_budget="project"``, the default): its keep
ratios are raised to a power ``gamma > 1`` (:func:`autoprune.budget.fit_to_budget`;
full layers stay full, monotonicity is kept, each stage keeps ``r ** gamma``) with
the smallest ``gamma`` whose *predicted* latency meets the budget, then it is
evaluated. A candidate that no ``gamma`` can bring under the budget (its full-keep
layers alone are too slow), or whose latency from the objective's source still
misses the budget (``measure``), is *rejected*: recorded as a PRUNED trial with its
latency, its constraint (> 0, so TPE learns the infeasible region) and the reason in
user attr ``rejected``, and no accuracy evaluation. ``over_budget="reject"`` rejects
every too-slow candidate instead of projecting it.

Why projection is the default (``benchmarks/search_speed.py --part budget --seeds 6
--trials 60``: synthetic model, 4x on an A100, TPE, same references; the real
evaluator did not exist yet, so this is not measured on the real setup):

====================  ======  ===========  =========  ============  ===========
mode                  trials  evaluations  rejected   best sampled  hypervolume
====================  ======  ===========  =========  ============  ===========
project, 60 trials    60      50.2         9.8        0.441         0.161
reject, 60 trials     60      28.0         32.0       0.428         0.163
reject, 50 evals      90.8    50.2         40.7       0.432         0.180
====================  ======  ===========  =========  ============  ===========

("best sampled": best feasible score of a non-reference trial, i.e. the schedule
that ends up on top at the budget; hypervolume of the feasible front against
(chance score, latency limit), 1 = perfect score at zero latency.) At equal cost
(accuracy evaluations), projection found the better schedule at the budget in 4 of 6
seeds and tied in the other 2 (never worse), because every projected evaluation lands on the budget, where the
budgeted optimum lies; rejection spends the same evaluations on candidates that are
faster than they need to be, which spreads the front below the budget (hypervolume
+12%). The schedule at the budget is what a user of ``--budget 4x`` applies, and with
projection the number of evaluations per trial is predictable (~84% of trials; with
rejection 45-60%), which is what ``--trials`` is sized by. Use ``--over-budget
reject`` when the shape of the front matters more than its best point. NSGA-II and GP
learn only from COMPLETE trials, so with rejection they never see the infeasible
region at all; TPE does (PRUNED trials with a positive constraint).

**References** (trials 0–4 of a new study, user attr ``reference=<name>``): ``none``
(no reduction: the baseline score), ``uniform`` (keep ``m`` from the first usable layer
on), ``fastv`` (one-shot drop after the first attention layer), ``pyramid`` (four equal
stages from the first usable layer, each keeping λ of the previous; λ = 0.5 as
published), ``high_to_low`` (a hard drop at the first usable layer, then a mild 10%
cut at mid depth). Each except ``none`` is fitted to the budget (``m``, ``m'`` and λ
solved by :func:`~autoprune.budget.fit_to_budget` on the predicted latency) and uses
the space's default scorer. A reference the space can express is enqueued with
``study.enqueue_trial(params, user_attrs={"reference": name})``; one it cannot is
evaluated here and stored with ask/tell (no params). References are evaluated even
when over the budget (``none`` always is): they are the comparison points.

**Storage, resume, workers.** Each worker process opens the storage itself
(``multiprocessing`` spawn), builds its own evaluator and latency source through the
factory, and runs ``study.optimize`` for its share of the remaining trials with an
Optuna ``MaxTrialsCallback`` on the total as a cap. ``trials`` is the total number of
finished trials (COMPLETE, PRUNED or FAIL) in the study, references included. Every
trial records its worker (``host:pid:start``). On ``resume`` a RUNNING trial whose
worker process is gone (same host) is failed with ``fail_reason`` ``orphaned: ...``
and re-queued with the same parameters; server RDB storages (PostgreSQL, MySQL) also
run heartbeats (``heartbeat_s``), so a trial of a dead worker on another host is
failed once its heartbeat is stale and re-queued by Optuna's
``RetryHeartbeatStaleTrialCallback``.
A trial that raises (out of memory, NaN score, a bad schedule) is recorded as FAIL
with ``fail_reason`` and the study goes on.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__, _io
from .budget import Budget, fit_to_budget, parse_budget
from .errors import AutopruneError, ConfigError, ScheduleError, StorageError
from .interfaces import LatencyEstimate, TaskResult
from .schedule import ModelSignature, Schedule
from ._io import find_data_file, read_yaml_mapping
from .errors import check_keys
from .space import SearchSpace, first_cut_layer, load_space, space_from_dict

__all__ = [
    "StudyInputs",
    "build_default_study_inputs",
    "StudySpec",
    "load_study_spec",
    "SearchConfig",
    "SearchResult",
    "run_search",
    "make_sampler",
    "reference_schedules",
    "TrialRunner",
    "StorageSpec",
    "resolve_storage",
    "open_storage",
    "recover_orphans",
    "SAMPLERS",
    "REFERENCES",
    "DEFAULT_TRIALS",
    "apply_schedule",
]

SAMPLERS = ("tpe", "nsga2", "gp", "random")
OBJECTIVES = ("score", "latency", "energy")
OVER_BUDGET = ("project", "reject")
REFERENCES = ("none", "uniform", "fastv", "pyramid", "high_to_low")
# About 3 minutes on the 2-core CPU at ~2-5 s per accuracy evaluation of the demo model
# (references included). To be tuned once the demo evaluator exists.
DEFAULT_TRIALS = 150
STUDY_ATTR = "autoprune"
DEFAULT_FACTORY = "autoprune.search:build_default_study_inputs"


# =========================================================== the model factory
@dataclass
class StudyInputs:
    """What a study evaluates: built once per process by the inputs factory.

    - ``evaluator``: :class:`~autoprune.interfaces.Evaluator` (``signature``,
      ``num_visual``, ``metric``, ``evaluate(schedule) -> TaskResult``). It should
      tokenise its data and load its model once (lazily is fine) and reuse them.
    - ``latency``: :class:`~autoprune.interfaces.LatencySource` giving the objective's
      latency (predicted, or measured with ``measure``); it computes the unreduced
      latency once and returns it as ``baseline_ms`` with every estimate.
    - ``predictor``: a cheap LatencySource used to project candidates onto the budget
      (default: ``latency``). With ``measure`` it should be the latency *model* of the
      present GPU, so that projection does not time a dozen schedules per trial.
    """

    evaluator: Any
    latency: Any
    predictor: Any = None
    model: str = ""
    task: str = ""

    def __post_init__(self):
        if self.predictor is None:
            self.predictor = self.latency
        for name in ("signature", "num_visual", "metric", "evaluate"):
            if not hasattr(self.evaluator, name):
                raise ConfigError(f"the evaluator {type(self.evaluator).__name__} has no {name!r} (see Evaluator)")
        for obj in (self.latency, self.predictor):
            if not hasattr(obj, "estimate") or not hasattr(obj, "gpu"):
                raise ConfigError(f"{type(obj).__name__} is not a LatencySource (needs .gpu and .estimate)")


def build_default_study_inputs(*, model: str, task: str | None, gpu: str, measure: bool = False,
                               options: Mapping[str, Any] | None = None) -> StudyInputs:
    """THE place that turns (model, task, gpu, measure) into an evaluator and latency sources.

    Must raise :class:`~autoprune.errors.UnknownGPUError` for an unknown GPU *before*
    doing anything expensive. Called once in the main process (validation, baseline,
    references) and once in each worker process, so it must be importable and cheap
    to call twice (load models lazily on the first ``evaluate``).

    - ``model="synthetic"``: :mod:`autoprune.synthetic` (no weights, no GPU): dry runs,
      tests, benchmarks.
    - ``model="demo"``: the shipped demo model and its test videos
      (:func:`autoprune.tasks.build_evaluator`); latency predicted by
      :class:`~autoprune.cost.latency.LatencyModel` for the demo's layer pattern at NemotronH-8B
      widths on ``gpu`` (see :mod:`autoprune.tasks.build`), or with ``measure`` timed on the
      present device (:class:`~autoprune.profiler.measured.MeasuredLatency`), the latency model of that
      device projecting candidates onto the budget.
    - another model: give a factory of your own (``--inputs module:function``).
    """
    if model == "synthetic":
        from .synthetic import build_inputs

        return build_inputs(gpu=gpu, task=task, measure=measure, options=options)
    from .cost import gpus
    from .cost.latency import LatencyModel
    from .tasks.build import build_evaluator, measured_latency

    spec = gpus.detect() if gpu == "auto" else gpus.resolve(gpu)  # UnknownGPUError before anything expensive
    opts = dict(options or {})
    if measure and "device" not in opts:
        import torch

        opts["device"] = "cuda" if spec.id != "cpu" and torch.cuda.is_available() else "cpu"
    evaluator = build_evaluator(model=model, task=task, **opts)
    if measure:
        latency = measured_latency(evaluator, gpu=spec.id)
        try:
            predictor = LatencyModel(evaluator.shape, evaluator.layout, spec)
        except ConfigError:  # no table or calibration for this device (the CPU): project with the measurement
            predictor = latency
    else:
        predictor = latency = LatencyModel(evaluator.shape, evaluator.layout, spec)
    return StudyInputs(evaluator=evaluator, latency=latency, predictor=predictor, model=model,
                       task=task or evaluator.metric)


def _load_factory(path: str) -> Callable[..., StudyInputs]:
    mod, _, name = path.partition(":")
    if not mod or not name:
        raise ConfigError(f"inputs factory must be 'module:function', got {path!r}")
    try:
        return getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"cannot import the inputs factory {path!r}: {e}") from None


# ================================================================ study specs
_SPEC_KEYS = {"name", "description", "model", "task", "space", "gpu", "budget", "sampler", "trials", "seed",
              "measure", "objectives", "over_budget", "workers", "timeout", "model_options", "references"}


@dataclass(frozen=True)
class StudySpec:
    """A checked-in study (``studies/*.yaml``): defaults for ``autoprune search --spec``."""

    name: str
    model: str = "demo"
    task: str | None = None
    space: str = "progressive"
    gpu: str | None = None
    budget: str | None = None
    sampler: str = "tpe"
    trials: int = DEFAULT_TRIALS
    seed: int | None = 0
    measure: bool = False
    objectives: tuple[str, ...] = ("score", "latency")
    over_budget: str = "project"
    workers: int = 1
    timeout: float | None = None
    model_options: Mapping[str, Any] = field(default_factory=dict)
    references: tuple[str, ...] = REFERENCES
    description: str = ""
    source: str = ""


def load_study_spec(name_or_path: str | os.PathLike) -> StudySpec:
    """Load ``studies/<name>.yaml`` (or a path); unknown keys → ConfigError naming key and file."""
    path = find_data_file(name_or_path, "studies", "study spec")
    data = read_yaml_mapping(path, "study spec")
    check_keys(data, _SPEC_KEYS, {"model"}, str(path))
    kw = dict(data)
    kw.setdefault("name", path.stem)
    for key in ("objectives", "references"):
        if key in kw:
            if not isinstance(kw[key], list):
                raise ConfigError(f"{path}: {key} must be a list, got {kw[key]!r}")
            kw[key] = tuple(kw[key])
    if "budget" in kw and kw["budget"] is not None:
        kw["budget"] = str(kw["budget"])
    spec = StudySpec(**kw, source=str(path))
    try:
        _validate_common(spec.sampler, spec.trials, spec.seed, spec.objectives, spec.over_budget, spec.workers,
                         spec.timeout, spec.references, spec.measure)
        if not isinstance(spec.model_options, Mapping):
            raise ConfigError(f"model_options must be a mapping, got {spec.model_options!r}")
        if spec.budget is not None:
            parse_budget(spec.budget)
    except AutopruneError as e:
        raise type(e)(f"{path}: {e}") from None
    return spec


def _validate_common(sampler, trials, seed, objectives, over_budget, workers, timeout, references, measure):
    if sampler is not None and sampler not in SAMPLERS:
        raise ConfigError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials < 1):
        raise ConfigError(f"trials must be an integer >= 1, got {trials!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"seed must be a non-negative integer or null, got {seed!r}")
    if objectives is not None:
        objectives = tuple(objectives)
        if not objectives or objectives[:2] != ("score", "latency") or len(set(objectives)) != len(objectives) or any(
                o not in OBJECTIVES for o in objectives):
            raise ConfigError(f"objectives must be [score, latency] or [score, latency, energy], got {list(objectives)}")
    if over_budget is not None and over_budget not in OVER_BUDGET:
        raise ConfigError(f"over_budget must be one of {OVER_BUDGET}, got {over_budget!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if references is not None:
        bad = [r for r in references if r not in REFERENCES]
        if bad:
            raise ConfigError(f"unknown reference(s) {bad}; known: {list(REFERENCES)}")
    if measure is not None and not isinstance(measure, bool):
        raise ConfigError(f"measure must be true or false, got {measure!r}")


# ============================================================== search config
@dataclass(frozen=True)
class SearchConfig:
    """Everything ``autoprune search`` needs. ``None`` means: the default for a new study,
    the stored value when resuming (see :func:`run_search`)."""

    gpu: str | None = None
    budget: str | None = None
    study: str | None = None
    model: str | None = None
    task: str | None = None
    space: str | None = None
    sampler: str | None = None
    trials: int | None = None
    seed: int | None = 0
    storage: str | None = None
    out: str = "runs"
    resume: bool = False
    workers: int = 1
    measure: bool | None = None
    timeout: float | None = None
    objectives: tuple[str, ...] | None = None
    over_budget: str | None = None
    references: tuple[str, ...] | None = None
    model_options: Mapping[str, Any] | None = None
    inputs_factory: str = DEFAULT_FACTORY
    show_progress: bool = True
    export: bool = True
    heartbeat_s: int = 10
    probe_timeout_s: float = 3.0

    def __post_init__(self):
        _validate_common(self.sampler, self.trials, self.seed, self.objectives, self.over_budget, self.workers,
                         self.timeout, self.references, self.measure)
        if self.study is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.study):
            raise ConfigError(f"study name {self.study!r} must be letters, digits, '.', '_' or '-'")
        if self.budget is not None:
            parse_budget(self.budget)

    @classmethod
    def from_spec(cls, spec: StudySpec, **overrides) -> SearchConfig:
        """Spec values, with every override that is not None taking precedence."""
        kw = dict(study=spec.name, model=spec.model, task=spec.task, space=spec.space, gpu=spec.gpu,
                  budget=spec.budget, sampler=spec.sampler, trials=spec.trials, seed=spec.seed,
                  measure=spec.measure, objectives=spec.objectives, over_budget=spec.over_budget,
                  workers=spec.workers, timeout=spec.timeout, model_options=dict(spec.model_options),
                  references=spec.references)
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)


def derive_study_name(model: str, gpu: str, budget: Budget) -> str:
    """``demo-a100-4x``, ``demo-h100-120ms``, ``demo-a100-25pct``."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", f"{model}-{gpu}-{budget.slug()}".lower()).strip("-")
    return slug


# ==================================================================== storage
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
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(s)
    except ArgumentError as e:
        raise StorageError(f"storage URL {storage!r} is not valid: {e}") from None
    display = url.render_as_string(hide_password=True)
    backend = url.get_backend_name()
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
    from sqlalchemy.engine import make_url

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
        raise StorageError(f"storage {spec.display!r}: the {backend} driver is not installed ({e})") from None


def open_storage(spec: StorageSpec, *, heartbeat_s: int | None = 10, timeout_s: float = 3.0):
    """An Optuna storage for ``spec``; StorageError (with the cause) if it cannot be opened.

    SQLite waits up to 60 s on a locked database (several workers write to it); RDB
    server storages (PostgreSQL, MySQL) record heartbeats every ``heartbeat_s`` s (grace
    ``6 × heartbeat_s``) and re-queue a stale trial once (Optuna's
    ``RetryHeartbeatStaleTrialCallback``).
    """
    import warnings

    import optuna

    try:
        if spec.kind == "journal":
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            return JournalStorage(JournalFileBackend(str(spec.path)))
        engine_kwargs: dict[str, Any] = {}
        if spec.kind == "sqlite":
            engine_kwargs["connect_args"] = {"timeout": 60}
        else:
            from sqlalchemy.engine import make_url

            backend = make_url(spec.url).get_backend_name()
            if backend in ("postgresql", "mysql", "mariadb"):
                engine_kwargs["connect_args"] = {"connect_timeout": max(1, int(math.ceil(timeout_s)))}
        hb: dict[str, Any] = {}
        # Heartbeats only on server databases: on SQLite (one host by nature) the heartbeat
        # thread's writes contend with the trial's own for the file lock (measured: +0.5 s
        # per trial); orphans there are found by their dead worker process instead.
        if heartbeat_s and spec.kind == "rdb":
            hb = dict(heartbeat_interval=int(heartbeat_s), grace_period=int(6 * heartbeat_s),
                      heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(spec.url, engine_kwargs=engine_kwargs, **hb)
        if spec.kind == "sqlite":
            _sqlite_wal(storage.engine)
        return storage
    except AutopruneError:
        raise
    except Exception as e:  # sqlalchemy.exc.*, OSError, driver errors
        raise StorageError(f"cannot open storage {spec.display!r}: {type(e).__name__}: {e}") from None


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
    from sqlalchemy import event

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


def _storage_has_study(spec: StorageSpec, name: str, *, heartbeat_s, timeout_s) -> bool:
    if spec.kind in ("sqlite", "journal") and not spec.path.exists():
        return False
    import optuna

    storage = open_storage(spec, heartbeat_s=heartbeat_s, timeout_s=timeout_s)
    try:
        return name in {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    finally:
        _close_storage(storage)


def _close_storage(storage) -> None:
    # Release SQLite handles promptly (tests delete run dirs; Windows-safe too).
    engine = getattr(storage, "engine", None) or getattr(getattr(storage, "_backend", None), "engine", None)
    if engine is not None:
        engine.dispose()


# =================================================================== samplers
def make_sampler(name: str, seed: int | None, *, trials: int = DEFAULT_TRIALS):
    """``tpe`` (Optuna 5's default TPE, independent for several objectives; random startup
    trials ``clamp(trials // 4, 4, 10)`` so that short studies are not all random),
    ``nsga2`` (population ``clamp(trials // 4, 8, 50)``), ``gp`` (needs scipy), ``random``."""
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(4, min(10, trials // 4)))
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(8, min(50, trials // 4)))
    if name == "gp":
        _require_scipy()
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"sampler must be one of {SAMPLERS}, got {name!r}")


def _require_scipy():
    import importlib.util

    if importlib.util.find_spec("scipy") is None:
        raise ConfigError("sampler 'gp' needs scipy (Optuna's GPSampler): pip install scipy")


def derive_seed(seed: int | None, worker: int, finished: int) -> int | None:
    """Sampler seed of worker ``worker`` when ``finished`` trials exist.

    A fresh sequential run (worker 0, nothing finished) always gets the same seed, so it
    reproduces; a resumed run gets another one, so the sampler does not repeat its
    startup trials (Optuna re-created with the same seed would).
    """
    if seed is None:
        return None
    return (seed * 1_000_003 + worker * 7_919 + finished * 104_729) % (2**31 - 1)


# ================================================================= references
@dataclass(frozen=True)
class Reference:
    name: str
    schedule: Schedule
    fitted: bool
    gamma: float


def reference_schedules(space: SearchSpace, signature: ModelSignature, num_visual: int,
                        latency_ms: Callable[[Schedule], float], limit_ms: float,
                        names: Sequence[str] = REFERENCES) -> list[Reference]:
    """The named comparison schedules (see the module docstring), fitted to ``limit_ms``."""
    scorer = space.default_scorer()
    L = signature.num_layers
    lo = first_cut_layer(signature, scorer)

    def shape(cuts: dict[int, float]) -> Schedule:
        keep, k = [], 1.0
        for i in range(L):
            k *= cuts.get(i, 1.0)
            keep.append(k)
        return Schedule(keep=tuple(keep), model=signature, min_tokens=space.min_tokens, scorer=scorer)

    attn = [j for j, c in enumerate(signature.layer_kinds[:-1]) if c == "*"]
    fastv_at = attn[0] + 1 if attn and scorer.w_attn > 0 and scorer.selector == "language" else lo
    quarter = [lo + round(j * (L - lo) / 4) for j in range(4)]
    shapes = {
        "none": None,
        "uniform": {lo: 0.5},
        "fastv": {max(lo, fastv_at): 0.5},
        "pyramid": {c: 0.5 for c in dict.fromkeys(min(L - 1, c) for c in quarter)},
        "high_to_low": {lo: 0.5, min(L - 1, max(lo + 1, lo + (L - lo) // 2)): 0.9},
    }
    out = []
    for name in names:
        cuts = shapes[name]
        if cuts is None:
            out.append(Reference(name, shape({}), False, 1.0))
            continue
        unit = shape(cuts)
        fit = fit_to_budget(unit, latency_ms, limit_ms, num_visual, gamma_low=0.01)
        out.append(Reference(name, fit.schedule if fit.met else unit, fit.met, fit.gamma if fit.met else 1.0))
    return out


# ================================================================ the objective
def worker_identity() -> str:
    """``host:pid:start`` of this process (start time from /proc where available)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def worker_alive(identity: str | None) -> bool | None:
    """True/False for a worker of this host, None when it cannot be told (another host)."""
    if not identity:
        return False
    try:
        host, pid_s, start = identity.rsplit(":", 2)
        pid = int(pid_s)
    except ValueError:
        return False
    if host != socket.gethostname():
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


class TrialRunner:
    """The objective: ``runner(trial) -> (score, latency_ms[, energy_j])``.

    Built once per process; holds the evaluator and latency sources (which keep their
    data, model and unreduced latency between trials) and the study's fixed budget
    (``limit_ms``, computed once when the study was created).
    """

    def __init__(self, *, space: SearchSpace, inputs: StudyInputs, budget: Budget, limit_ms: float,
                 baseline_ms: float, objectives: Sequence[str], over_budget: str, worker: str | None = None,
                 timer: Callable[[], float] = time.perf_counter):
        self.space = space
        self.inputs = inputs
        self.evaluator = inputs.evaluator
        self.signature = inputs.evaluator.signature
        self.num_visual = inputs.evaluator.num_visual
        self.budget = budget
        self.limit_ms = limit_ms
        self.baseline_ms = baseline_ms
        self.objectives = tuple(objectives)
        self.over_budget = over_budget
        self.worker = worker or worker_identity()
        self.timer = timer
        self.accuracy_evaluations = 0

    # ------------------------------------------------------------------
    def __call__(self, trial) -> tuple[float, ...]:
        trial.set_user_attr("worker", self.worker)
        reference = trial.user_attrs.get("reference")
        try:
            schedule = self.space.sample(trial, self.signature)
        except ScheduleError as e:
            trial.set_user_attr("fail_reason", f"invalid schedule: {e}"[:2000])
            raise
        return self.run(trial, schedule, reference=reference)

    def run(self, trial, schedule: Schedule, *, reference: str | None = None) -> tuple[float, ...]:
        """Evaluate ``schedule`` as ``trial`` (references skip the budget handling)."""
        import optuna

        try:
            schedule, est, gamma, reject = self._latency(schedule, reference)
            self._record_schedule(trial, schedule, est, gamma)
            constraint = self.budget.constraint(est.latency_ms, self.limit_ms)
            if reject:
                trial.set_user_attr("rejected", reject)
                trial.set_constraint("budget", constraint)
                raise optuna.TrialPruned(reject)
            t0 = self.timer()
            result = self.evaluator.evaluate(schedule)
            self.accuracy_evaluations += 1
            if not isinstance(result, TaskResult):
                raise TypeError(f"the evaluator returned {type(result).__name__}, not a TaskResult")
            trial.set_user_attr("eval_s", round(self.timer() - t0, 4))
            trial.set_user_attr("score", result.score)
            trial.set_user_attr("metric", result.metric)
            trial.set_user_attr("ci", [result.ci_low, result.ci_high])
            trial.set_user_attr("n", result.n)
            values = [result.score, est.latency_ms]
            if "energy" in self.objectives:
                if est.energy_j is None or not math.isfinite(est.energy_j):
                    raise AutopruneError(f"the energy objective needs energy from the latency source, got {est.energy_j!r}")
                values.append(est.energy_j)
            if not all(math.isfinite(v) for v in values):
                raise AutopruneError(f"non-finite objective values {values}")
            trial.set_constraint("budget", constraint)
            return tuple(values)
        except optuna.TrialPruned:
            raise
        except Exception as e:
            # Recorded before Optuna marks the trial FAIL; the study goes on (catch=Exception).
            trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}"[:2000])
            raise

    def _latency(self, schedule: Schedule, reference: str | None
                 ) -> tuple[Schedule, LatencyEstimate, float, str | None]:
        """(schedule to evaluate, its latency, gamma, rejection reason or None).

        Projects a too-slow candidate onto the budget, or rejects it (see the module
        docstring); references are taken as they are.
        """
        latency, predictor = self.inputs.latency, self.inputs.predictor
        memo: dict[tuple, LatencyEstimate] = {}

        def predict(s: Schedule) -> float:
            est = predictor.estimate(s)
            memo[s.keep] = est
            return est.latency_ms

        gamma = 1.0
        if reference is None and self.over_budget == "project":
            proj = fit_to_budget(schedule, predict, self.limit_ms, self.num_visual)
            if not proj.met:
                est = memo.get(schedule.keep) if predictor is latency else None
                est = est or latency.estimate(schedule)
                return schedule, est, 1.0, (
                    f"cannot meet the budget: even every reduced layer at min_tokens gives "
                    f"{self.baseline_ms / proj.latency_ms:.2f}x ({proj.latency_ms:.2f} ms > {self.limit_ms:.2f} ms)"
                )
            gamma, schedule = proj.gamma, proj.schedule
        est = memo.get(schedule.keep) if predictor is latency else None
        est = est or latency.estimate(schedule)
        if reference is None and not Budget.meets(est.latency_ms, self.limit_ms):
            return schedule, est, gamma, (
                f"over budget: {est.latency_ms:.2f} ms > {self.limit_ms:.2f} ms ({est.source}); not evaluated"
            )
        return schedule, est, gamma, None

    def _record_schedule(self, trial, schedule: Schedule, est: LatencyEstimate, gamma: float) -> None:
        trial.set_user_attr("keep", list(schedule.keep))  # exact floats: tokens_per_layer must not change
        trial.set_user_attr("mean_keep", schedule.mean_keep)
        trial.set_user_attr("scorer", schedule.scorer.to_dict())
        trial.set_user_attr("gamma", gamma)
        trial.set_user_attr("latency_ms", est.latency_ms)
        trial.set_user_attr("speedup", self.baseline_ms / est.latency_ms)
        trial.set_user_attr("latency_source", est.source)
        trial.set_user_attr("energy_j", est.energy_j)


# ================================================================== resume
def recover_orphans(study, *, log: Callable[[str], None] = print) -> list[int]:
    """Fail and re-queue RUNNING trials whose worker is gone; returns their numbers.

    A trial's worker is gone when its process on this host no longer exists (checked
    by pid and process start time), or, on RDB storages, when its heartbeat is stale
    (Optuna's ``fail_stale_trials``). A trial of a live process is left alone, and so
    is a trial of another host on a storage without heartbeats (with a warning).
    """
    import warnings

    import optuna
    from optuna.trial import TrialState

    storage = study._storage
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        optuna.storages.fail_stale_trials(study)  # RDB with heartbeats only; re-queues via the callback
    recovered = sorted(before - {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))})
    now = datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("worker")
        alive = worker_alive(owner)
        if owner is None and t.datetime_start is not None and (now - t.datetime_start).total_seconds() < 60:
            # A worker records itself first thing in a trial: give a just-started one time to do so.
            log(f"trial {t.number} started {(now - t.datetime_start).total_seconds():.0f} s ago and names no "
                "worker yet; left alone")
            continue
        if alive:
            log(f"trial {t.number} is still running in {owner}; left alone")
            continue
        if alive is None:
            log(f"trial {t.number} is RUNNING in {owner} on another host; left alone (no heartbeat says it is dead)")
            continue
        reason = f"orphaned: worker {owner or '(unknown)'} ended while the trial was running; re-queued on resume"
        try:
            storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process finished or failed it meanwhile
        user_attrs = {k: v for k, v in t.user_attrs.items() if k == "reference"}
        history = list(t.system_attrs.get("retry_history", [])) + [t.number]
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING, params=t.params, distributions=t.distributions, user_attrs=user_attrs,
            system_attrs={"failed_trial": t.system_attrs.get("failed_trial", t.number), "retry_history": history,
                          **({"fixed_params": t.system_attrs["fixed_params"]} if "fixed_params" in t.system_attrs
                             else {})},
        ))
        recovered.append(t.number)
    if recovered:
        log(f"resume: trial(s) {recovered} were left running by a dead worker: marked FAIL and re-queued")
    return recovered


def _finished_states():
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def count_finished(study) -> int:
    return len(study.get_trials(deepcopy=False, states=_finished_states()))


# ================================================================== running
@dataclass
class SearchResult:
    study_name: str
    run_dir: Path
    storage: str
    n_trials: int
    export: Any = None  # autoprune.export.ExportResult
    summary: str = ""
    recovered: list[int] = field(default_factory=list)


@dataclass
class _Plan:
    config: SearchConfig
    study_name: str
    run_dir: Path
    storage: StorageSpec
    settings: dict  # stored in the study's user attrs
    space: SearchSpace
    budget: Budget
    inputs: StudyInputs
    references: list[Reference]
    exists: bool


@contextlib.contextmanager
def _optuna_quiet():
    import optuna

    prev = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(prev)


def _stored_settings(spec: StorageSpec, name: str, config: SearchConfig) -> dict:
    import optuna

    storage = open_storage(spec, heartbeat_s=None, timeout_s=config.probe_timeout_s)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        settings = study.user_attrs.get(STUDY_ATTR)
    except KeyError:
        raise ConfigError(f"nothing to resume: storage {spec.display!r} has no study {name!r}") from None
    finally:
        _close_storage(storage)
    if not isinstance(settings, dict):
        raise ConfigError(f"study {name!r} in {spec.display!r} was not created by autoprune search")
    return settings


def plan_search(config: SearchConfig) -> _Plan:
    """Validate everything and compute what a run needs; writes nothing."""
    c = config
    out = Path(c.out)
    if c.resume and c.study is None and (c.gpu is None or c.budget is None):
        raise ConfigError("--resume needs --study NAME (or the --gpu and --budget it was started with)")
    model = c.model or "demo"
    stored = None
    if c.study is not None:
        study_name = c.study
    else:
        if c.gpu is None or c.budget is None:
            raise ConfigError("give --gpu and --budget (e.g. --gpu a100 --budget 4x), or a --spec that sets them")
        study_name = derive_study_name(model, c.gpu, parse_budget(c.budget))
    run_dir = out / study_name
    spec = resolve_storage(c.storage, run_dir)
    probe_storage(spec, c.probe_timeout_s)
    if c.resume:
        if spec.kind in ("sqlite", "journal") and not spec.path.exists():
            raise ConfigError(f"nothing to resume: {spec.display} does not exist")
        stored = _stored_settings(spec, study_name, c)
        _check_resume(c, stored, study_name)
    else:
        if c.storage is None and run_dir.exists():
            raise ConfigError(
                f"{run_dir} already exists: pass --resume to continue study {study_name!r}, or choose another --study"
            )
        if _storage_has_study(spec, study_name, heartbeat_s=None, timeout_s=c.probe_timeout_s):
            raise ConfigError(f"study {study_name!r} already exists in {spec.display}: pass --resume, or another --study")
    pick = (lambda key, default: stored[key] if stored is not None else default)
    model = pick("model", model)
    task = pick("task", c.task)
    gpu = pick("gpu", c.gpu)
    measure = pick("measure", bool(c.measure))
    objectives = tuple(pick("objectives", c.objectives or ("score", "latency")))
    over_budget = pick("over_budget", c.over_budget or "project")
    budget = parse_budget(pick("budget", c.budget))
    if gpu is None:
        raise ConfigError("give --gpu (e.g. --gpu a100), or a --spec that sets it")
    space = space_from_dict(stored["space_spec"], source=f"study {study_name}") if stored else load_space(
        c.space or "progressive")
    sampler = c.sampler or (stored or {}).get("sampler") or "tpe"
    make_sampler(sampler, None, trials=c.trials or DEFAULT_TRIALS)  # validates (gp needs scipy)
    model_options = dict(c.model_options if c.model_options is not None else (stored or {}).get("model_options", {}))
    factory = _load_factory(c.inputs_factory)
    inputs = factory(model=model, task=task, gpu=gpu, measure=measure, options=model_options)
    if not isinstance(inputs, StudyInputs):
        raise ConfigError(f"{c.inputs_factory} returned {type(inputs).__name__}, not StudyInputs")
    ev = inputs.evaluator
    signature: ModelSignature = ev.signature
    if stored is not None:
        if stored["signature"] != signature.to_dict():
            raise ConfigError(f"study {study_name!r} was made for model {stored['signature']}, "
                              f"the inputs now give {signature.to_dict()}")
        limit_ms, baseline_ms = stored["budget_ms"], stored["baseline_ms"]
        settings = dict(stored)
    else:
        base = inputs.latency.estimate(Schedule.identity(signature.num_layers, model=signature))
        baseline_ms = base.baseline_ms
        limit_ms = budget.limit_ms(baseline_ms)
        if "energy" in objectives and base.energy_j is None:
            raise ConfigError(f"the energy objective needs energy readings; the {base.source} latency source of "
                              f"{inputs.latency.gpu} gives none (use --measure on a GPU with NVML)")
        _check_reachable(space, signature, ev.num_visual, inputs, budget, limit_ms, baseline_ms)
        settings = {
            "format": "autoprune.search/v1", "autoprune": __version__, "model": model, "task": task,
            "metric": ev.metric, "gpu": gpu, "gpu_name": inputs.latency.gpu, "budget": budget.text,
            "budget_ms": limit_ms, "baseline_ms": baseline_ms, "baseline_source": base.source,
            "measure": measure, "objectives": list(objectives), "over_budget": over_budget,
            "space": space.name, "space_spec": space.to_dict(), "signature": signature.to_dict(),
            "num_visual": ev.num_visual, "model_options": model_options, "sampler": sampler, "seed": c.seed,
            "created": _utc_now(), "inputs_factory": c.inputs_factory,
        }
    settings["trials"] = c.trials or (stored or {}).get("trials") or DEFAULT_TRIALS
    settings["model_options"] = model_options
    settings["sampler"] = sampler
    settings["seed"] = c.seed
    references = []
    if stored is None:
        names = c.references if c.references is not None else REFERENCES
        predictor = inputs.predictor
        references = reference_schedules(space, signature, ev.num_visual, lambda s: predictor.estimate(s).latency_ms,
                                         limit_ms, names)
    return _Plan(config=c, study_name=study_name, run_dir=run_dir, storage=spec, settings=settings, space=space,
                 budget=budget, inputs=inputs, references=references, exists=stored is not None)


def _check_resume(c: SearchConfig, stored: dict, name: str) -> None:
    given = {"model": c.model, "task": c.task, "gpu": c.gpu, "measure": c.measure, "over_budget": c.over_budget,
             "space": c.space, "objectives": list(c.objectives) if c.objectives else None,
             "budget": parse_budget(c.budget).text if c.budget else None}
    for key, v in given.items():
        if v is not None and v != stored.get(key):
            raise ConfigError(f"study {name!r} was created with {key}={stored.get(key)!r}, not {v!r}: "
                              "drop the option to resume it, or start another --study")


def _check_reachable(space, signature, num_visual, inputs, budget, limit_ms, baseline_ms) -> None:
    """BudgetError when not even the strongest reduction from the first usable layer meets it."""
    from .errors import BudgetError

    lo = first_cut_layer(signature, space.default_scorer())
    floor = max(1e-12, space.min_tokens / max(1, num_visual))
    keep = tuple([1.0] * lo + [min(1.0, floor)] * (signature.num_layers - lo))
    fastest = Schedule(keep=keep, model=signature, min_tokens=space.min_tokens, scorer=space.default_scorer())
    t = inputs.predictor.estimate(fastest).latency_ms
    if not Budget.meets(t, limit_ms):
        raise BudgetError(
            f"budget {budget.text} is out of reach on {inputs.latency.gpu}: the limit is {limit_ms:.2f} ms, but keeping "
            f"only {space.min_tokens} visual tokens from layer {lo} on still takes {t:.2f} ms "
            f"({baseline_ms / t:.2f}x); the text tokens and layer {lo - 1} alone cost that much"
        )


def _utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def run_search(config: SearchConfig, *, log: Callable[[str], None] = print) -> SearchResult:
    """Validate, create or resume the study, run its trials, export. See the module docstring.

    Raises BudgetError, ConfigError, StorageError, UnknownGPUError before anything is
    written; a new run directory is removed again if setting up the study fails.
    """
    plan = plan_search(config)
    c = plan.config
    created_dir = not plan.run_dir.exists()
    import optuna

    with _optuna_quiet():
        try:
            plan.run_dir.mkdir(parents=True, exist_ok=True)
            storage = open_storage(plan.storage, heartbeat_s=c.heartbeat_s, timeout_s=c.probe_timeout_s)
            study = _create_or_load(plan, storage)
        except BaseException:
            if created_dir and not plan.exists:
                shutil.rmtree(plan.run_dir, ignore_errors=True)
            raise
        _io.write_json(plan.run_dir / "search.json", {**plan.settings, "storage": plan.storage.display,
                                                          "study": plan.study_name})
        recovered = recover_orphans(study, log=log) if plan.exists else []
        total = plan.settings["trials"]
        remaining = max(0, total - count_finished(study))
        log(f"study {plan.study_name}: {plan.settings['model']} on {plan.settings['gpu_name']}, budget "
            f"{plan.settings['budget']} (<= {plan.settings['budget_ms']:.2f} ms; unreduced "
            f"{plan.settings['baseline_ms']:.2f} ms), space {plan.space.name}, sampler {plan.settings['sampler']}; "
            f"{remaining} of {total} trials to run on {plan.storage.display}")
        try:
            if remaining and c.workers == 1:
                _run_worker(study, plan.inputs, plan.settings, plan.space, 0, remaining, total,
                            c.timeout, c.show_progress)
            elif remaining:
                _close_storage(storage)
                _run_workers(plan, remaining, total, log)
                storage = open_storage(plan.storage, heartbeat_s=None, timeout_s=c.probe_timeout_s)
                study = optuna.load_study(study_name=plan.study_name, storage=storage)
        except KeyboardInterrupt:
            log(f"interrupted: finished trials are stored in {plan.storage.display}; continue with "
                f"`autoprune search --study {plan.study_name} --resume`"
                + (f" --storage {plan.storage.display}" if c.storage else "")
                + (f" --out {c.out}" if c.out != "runs" else ""))
            raise
        result = SearchResult(plan.study_name, plan.run_dir, plan.storage.display, len(study.trials),
                              recovered=recovered)
        if c.export:
            from .export import export_study

            result.export = export_study(study, plan.run_dir)
            result.summary = result.export.summary
            log(result.summary)
            log(f"exported {len(result.export.pareto)} schedule(s) to {plan.run_dir / 'pareto'}; "
                f"index {result.export.index_path}, all trials in {result.export.csv_path}")
            _report_hook(plan.run_dir.resolve(), study, log)
        _close_storage(storage)
    return result


def _create_or_load(plan: _Plan, storage):
    import warnings

    import optuna

    if plan.exists:
        study = optuna.load_study(study_name=plan.study_name, storage=storage)
        study.set_user_attr(STUDY_ATTR, plan.settings)  # the new total, sampler, seed, model options
        return study
    directions = ["maximize", "minimize"] + (["minimize"] if "energy" in plan.settings["objectives"] else [])
    study = optuna.create_study(study_name=plan.study_name, storage=storage, directions=directions,
                                load_if_exists=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([plan.settings["metric"], "latency_ms"] +
                               (["energy_j"] if len(directions) == 3 else []))
    study.set_user_attr(STUDY_ATTR, plan.settings)
    _add_references(study, plan)
    return study


def _add_references(study, plan: _Plan) -> None:
    """Enqueue expressible references; evaluate the others here and store them with ask/tell."""
    import optuna

    sig = plan.inputs.evaluator.signature
    runner = None
    for ref in plan.references:
        params = plan.space.params_for(ref.schedule, sig)
        attrs = {"reference": ref.name, "reference_fitted": ref.fitted}
        if params is not None:
            study.enqueue_trial(params, user_attrs=attrs)
            continue
        runner = runner or _runner(plan.inputs, plan.settings, plan.space)
        trial = study.ask()
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        try:
            values = runner.run(trial, ref.schedule, reference=ref.name)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        except Exception:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, list(values))


def _runner(inputs: StudyInputs, settings: dict, space: SearchSpace) -> TrialRunner:
    return TrialRunner(space=space, inputs=inputs, budget=parse_budget(settings["budget"]),
                       limit_ms=settings["budget_ms"], baseline_ms=settings["baseline_ms"],
                       objectives=settings["objectives"], over_budget=settings["over_budget"])


def _run_worker(study, inputs: StudyInputs, settings: dict, space: SearchSpace, index: int, n_trials: int,
                total: int, timeout: float | None, show_progress: bool) -> None:
    from optuna.study import MaxTrialsCallback

    study.sampler = make_sampler(settings["sampler"], derive_seed(settings["seed"], index, count_finished(study)),
                                 trials=total)
    runner = _runner(inputs, settings, space)
    study.optimize(runner, n_trials=n_trials, timeout=timeout, catch=(Exception,),
                   callbacks=[MaxTrialsCallback(total, states=_finished_states())],
                   show_progress_bar=show_progress, gc_after_trial=False)


def _worker_main(payload: dict) -> None:
    """Entry point of a spawned worker: open the storage, build the inputs, run a share."""
    import optuna

    with _optuna_quiet():
        spec = StorageSpec(payload["kind"], payload["url"], Path(payload["path"]) if payload["path"] else None,
                           payload["display"])
        storage = open_storage(spec, heartbeat_s=payload["heartbeat_s"])
        study = optuna.load_study(study_name=payload["study"], storage=storage)
        settings = study.user_attrs[STUDY_ATTR]
        factory = _load_factory(payload["factory"])
        inputs = factory(model=settings["model"], task=settings["task"], gpu=settings["gpu"],
                         measure=settings["measure"], options=settings.get("model_options") or {})
        space = space_from_dict(settings["space_spec"], source=f"study {payload['study']}")
        settings = {**settings, "sampler": payload["sampler"], "seed": payload["seed"]}
        _run_worker(study, inputs, settings, space, payload["index"], payload["n_trials"], payload["total"],
                    payload["timeout"], False)
        _close_storage(storage)


def _run_workers(plan: _Plan, remaining: int, total: int, log) -> None:
    """``workers`` spawned processes share ``remaining`` trials; progress from the storage."""
    import multiprocessing as mp

    c = plan.config
    n = min(c.workers, remaining)
    shares = [remaining // n + (1 if i < remaining % n else 0) for i in range(n)]
    ctx = mp.get_context("spawn")
    procs = []
    for i, share in enumerate(shares):
        payload = {"kind": plan.storage.kind, "url": plan.storage.url,
                   "path": str(plan.storage.path) if plan.storage.path else None, "display": plan.storage.display,
                   "heartbeat_s": c.heartbeat_s, "study": plan.study_name, "factory": c.inputs_factory,
                   "sampler": plan.settings["sampler"], "seed": plan.settings["seed"], "index": i,
                   "n_trials": share, "total": total, "timeout": c.timeout}
        p = ctx.Process(target=_worker_main, args=(payload,), name=f"autoprune-worker-{i}")
        p.start()
        procs.append(p)
    try:
        _watch(plan, procs, remaining, total)
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


def _watch(plan: _Plan, procs, remaining: int, total: int) -> None:
    bar = None
    storage = None
    if plan.config.show_progress:
        import optuna
        from tqdm.auto import tqdm

        bar = tqdm(total=remaining, desc=plan.study_name, unit="trial")
        storage = open_storage(plan.storage, heartbeat_s=None)
        study = optuna.load_study(study_name=plan.study_name, storage=storage)
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
            _close_storage(storage)


def _report_hook(run_dir: Path, study, log) -> None:
    """Call ``autoprune.report.report_search(run_dir, study=study)`` when that module exists."""
    try:
        report = importlib.import_module("autoprune.report")
    except ModuleNotFoundError as e:
        if e.name != "autoprune.report":
            raise
        log("report: autoprune.report is not in this build yet; no report written (run `autoprune report` later)")
        return
    fn = getattr(report, "report_search", None)
    if fn is None:
        log("report: autoprune.report has no report_search(run_dir, study=...); no report written")
        return
    fn(run_dir, study=study)


# ==================================================================== apply
@dataclass
class ApplyResult:
    schedule: Schedule
    result: TaskResult
    latency: LatencyEstimate
    model: str
    num_visual: int


def apply_schedule(path: str | os.PathLike, *, model: str | None = None, task: str | None = None,
                   gpu: str | None = None, measure: bool = False, model_options: Mapping[str, Any] | None = None,
                   inputs_factory: str = DEFAULT_FACTORY) -> ApplyResult:
    """Run the model with a schedule file: its score and its latency (``autoprune apply``).

    Defaults come from the file: the model, task and model options of its provenance,
    the GPU of its target. Raises ModelMismatchError when the schedule was made for
    another model.
    """
    sched = Schedule.load(path)
    prov = dict(sched.provenance or {})
    model = model or prov.get("model") or "demo"
    task = task or prov.get("task")
    gpu = gpu or (sched.target.gpu if sched.target and sched.target.gpu else None)
    if gpu is None:
        raise ConfigError(f"{path}: the schedule names no target GPU; give --gpu")
    options = dict(model_options if model_options is not None else prov.get("model_options") or {})
    inputs = _load_factory(inputs_factory)(model=model, task=task, gpu=gpu, measure=measure, options=options)
    sched.check_model(inputs.evaluator.signature)
    est = inputs.latency.estimate(sched)
    result = inputs.evaluator.evaluate(sched)
    return ApplyResult(schedule=sched, result=result, latency=est, model=model,
                       num_visual=inputs.evaluator.num_visual)
