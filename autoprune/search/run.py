"""``run_search``: validate, create or resume the study, run its trials, export the Pareto front.

``run_search(SearchConfig(gpu="a100", budget="4x"))`` is what ``autoprune search --gpu a100
--budget 4x`` does:

1. **validate** everything before anything is written: the budget (parsed when the config was
   built), the space, the sampler, the storage (a URL that does not answer → StorageError within
   ``probe_timeout_s``), the GPU (resolved once, here), the model source and its options, and
   that the budget can be reached at all;
2. create ``runs/<study>/`` and the study (SQLite ``runs/<study>/study.db`` by default, any
   SQLAlchemy URL, or an Optuna journal file), store its :class:`StudySettings`, and enqueue the
   **reference schedules** (:mod:`autoprune.search.references`) first;
3. run the trials in this process or in ``workers`` processes on one storage
   (:mod:`autoprune.search.workers`: an ask/tell loop to exactly ``trials`` counted trials, COMPLETE
   or PRUNED) — or none (``workers=0``: the study waits for ``autoprune worker`` processes); trials
   a dead worker left running are re-queued (:mod:`autoprune.search.recovery`); a study that an
   identical command created meanwhile is joined (creation runs under the storage's lock);
4. validate (once, here) and export the feasible Pareto front from one consistent snapshot
   (:mod:`autoprune.search.export`, :mod:`autoprune.search.snapshot`) and print a summary.

The report is the command layer's business (``autoprune search`` writes it after this returns).
References are enqueued with ``study.enqueue_trial(params, user_attrs={"reference": name})``
when the space can express them; one it cannot is evaluated here and stored with ask/tell.
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import optuna

from .. import _io
from .._version import __version__
from ..accounting import TokenAccounting
from ..budget import Budget
from ..cost import gpus
from ..errors import BudgetError, ConfigError, MeasurementError
from ..interfaces import LatencyEstimate, LatencySource, SourceRequest, StudyInputs
from ..models import check_request, get_model_source
from ..provenance import environment
from ..schedule import Schedule
from .config import (
    DEFAULT_MODEL,
    DEFAULT_SPACE,
    DEFAULT_TRIALS,
    SearchConfig,
    derive_study_name,
)
from .export import ExportResult, export_study
from .locks import study_lock
from .objective import TrialRunner
from .quiet import optuna_quiet
from .recovery import count_done, recover_orphans
from .references import REFERENCES, Reference, reference_schedules
from .samplers import check_sampler
from .settings import StudySettings, load_settings, store_settings
from .snapshot import study_snapshot
from .space import SearchSpace, first_cut_layer, load_space
from .storage import (
    StorageSpec,
    close_storage,
    open_storage,
    probe_storage,
    resolve_storage,
    storage_has_study,
    study_names,
)
from .validate import validate_study
from .workers import run_worker, run_workers

__all__ = ["SearchResult", "SearchPlan", "plan_search", "run_search", "resolve_gpu", "latency_notes"]


@dataclass
class SearchResult:
    """What a run did: the study, where it lives (``storage`` is safe to print; ``storage_spec``
    opens it again), how many trials it has, the export, and any trials recovered on resume."""

    study_name: str
    run_dir: Path
    storage: str
    storage_spec: StorageSpec
    n_trials: int
    export: ExportResult | None = None
    summary: str = ""
    recovered: list[int] = field(default_factory=list)


@dataclass
class SearchPlan:
    """Everything a run needs, computed by :func:`plan_search` without writing anything."""

    config: SearchConfig
    study_name: str
    run_dir: Path
    storage: StorageSpec
    settings: StudySettings
    inputs: StudyInputs
    references: list[Reference]
    exists: bool


def resolve_gpu(name: str, *, measure: bool) -> gpus.GpuSpec:
    """``auto`` → the present device (the CPU fallback when a measuring study has no GPU); else the registry."""
    if name == "auto":
        return gpus.present_device() if measure else gpus.detect()
    return gpus.resolve(name)


def _utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _build_inputs(model: str, request: SourceRequest) -> StudyInputs:
    source = get_model_source(model)
    check_request(source, request)
    inputs = source.build(request)
    if not isinstance(inputs, StudyInputs):
        raise ConfigError(f"model source {model!r} returned {type(inputs).__name__}, not StudyInputs")
    return inputs


def _stored_settings(spec: StorageSpec, name: str, timeout_s: float) -> StudySettings:
    storage = open_storage(spec, heartbeat_s=None, timeout_s=timeout_s)
    try:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            raise ConfigError(f"nothing to resume: storage {spec.display!r} has no study {name!r}") from None
        return load_settings(study)
    finally:
        close_storage(storage)


def _check_resume(c: SearchConfig, stored: StudySettings, name: str) -> None:
    gpu_names = {stored.gpu_request, stored.gpu.id, *stored.gpu.aliases}
    checks = [("model", c.model, stored.model), ("task", c.task, stored.task),
              ("measure", c.measure, stored.measure), ("over_budget", c.over_budget, stored.over_budget),
              ("space", c.space, stored.space.name), ("objectives", c.objectives, stored.objectives),
              ("budget", c.budget.text if c.budget else None, stored.budget.text)]
    for key, given, have in checks:
        if given is not None and given != have:
            raise ConfigError(f"study {name!r} was created with {key}={have!r}, not {given!r}: "
                              "drop the option to resume it, or start another --study")
    if c.gpu is not None and gpus.normalize_name(c.gpu) not in gpu_names:
        raise ConfigError(f"study {name!r} was created for GPU {stored.gpu.id!r}, not {c.gpu!r}: drop --gpu to "
                          "resume it, or start another --study")


def accounting_for(inputs: StudyInputs, space: SearchSpace) -> TokenAccounting:
    """The study's token accounting: the evaluated samples' visual tokens, the latency layout's."""
    served = inputs.layout.visual if inputs.layout is not None else max(inputs.evaluated_visual)
    return TokenAccounting(inputs.evaluated_visual, served, space.min_tokens)


def _check_reachable(space: SearchSpace, inputs: StudyInputs, accounting: TokenAccounting, budget: Budget,
                     limit_ms: float, baseline_ms: float, source: LatencySource | None = None) -> None:
    """BudgetError, naming the cause, when not even the strongest reduction the study allows meets it:
    every layer from the first that may cut on at the token floor, its latency from ``source``
    (default: the study's predictor; a measuring study passes its measurement: reachable *here*)."""
    signature = inputs.signature
    lo = first_cut_layer(signature)  # with the scorer that cuts earliest: what any trial could do
    floor = accounting.floor
    keep = tuple([1.0] * lo + [min(1.0, floor)] * (signature.num_layers - lo))
    fastest = Schedule(keep=keep, model=signature, min_tokens=space.min_tokens, scorer=space.default_scorer())
    est = (source or inputs.predictor).estimate(fastest)
    t = est.latency_ms
    if not Budget.meets(t, limit_ms):
        raise BudgetError(
            f"budget {budget.text} is out of reach on {inputs.latency.gpu}"
            + (" (measured here)" if est.measured else "") + ": the fastest schedule the study allows — "
            f"layers 0..{lo - 1} unreduced (no evidence before layer {lo}), every later layer at the token floor "
            f"{floor:.2%} ({accounting.floor_reason()}) — takes {t:.2f} ms, {baseline_ms / t:.2f}x; the budget needs "
            f"{limit_ms:.2f} ms. A lower space min_tokens or longer evaluated samples lower the floor"
        )


# A measuring study is refused when the unreduced model's timings lie further apart than this: the
# budget in ms is a fraction of that baseline, so it would be uncertain by more than the step between
# budgets one would try (2x vs 2.5x). Between the timer's ``max_spread`` (10 %) and this, the study
# runs and each noisy trial is flagged (``timing_noise``).
LOADED_SPREAD = 0.25


def _check_quiet(base: LatencyEstimate) -> None:
    """MeasurementError when the unreduced model's measurement is too noisy to decide a budget on: its
    repeats' medians (``repeat_spread``), its calls (``spread``), or its two timings — the baseline,
    then the identity schedule — lie more than :data:`LOADED_SPREAD` apart."""
    apart = abs(base.latency_ms / base.baseline_ms - 1)
    spread = max(x for x in (base.repeat_spread, base.spread, apart) if x is not None)
    if spread > LOADED_SPREAD:
        raise MeasurementError(
            f"this machine is too loaded to measure: the unreduced prefill on {base.gpu} took "
            f"{base.baseline_ms:.1f} ms, then {base.latency_ms:.1f} ms (timings {spread:.0%} apart, above "
            f"{LOADED_SPREAD:.0%}); --measure on an idle machine, or drop --measure to search on the predicted "
            "latency"
        )


def latency_notes(info) -> list[str]:
    """What a user must be told about the latency of a study (its ``latency_info``): a table read
    from a folder of measured tables that is not the package's own (``./profiles/measured``,
    ``$AUTOPRUNE_PROFILE_DIRS``) — ``using latency table PATH`` —, and predictions extrapolated
    beyond the token range a table was measured over."""
    shipped = (gpus.profiles_root() / "measured").resolve()
    out = []
    table = info.get("table")
    found = [(table.get("path"), "")] if isinstance(table, dict) and table.get("found") else []
    if info.get("calibration_table"):
        found.append((info["calibration_table"], " (to calibrate the roofline)"))
    for path, why in found:
        if path and not Path(path).resolve().is_relative_to(shipped):
            out.append(f"using latency table {path}{why}")
    if info.get("extrapolated"):
        beyond = "; ".join(info.get("beyond_measured") or ()) or "some terms"
        where = f" {table['path']}" if isinstance(table, dict) else ""
        out.append(f"warning: latency predictions are extrapolated beyond what the table{where} measured: {beyond} "
                   "(re-run `autoprune profile` over the served token counts)")
    return out


def _check_trivial_budget(budget: Budget) -> None:
    """BudgetError before anything loads for a relative budget the unreduced model meets by definition."""
    if (budget.kind == "speedup" and budget.value <= 1) or (budget.kind == "fraction" and budget.value >= 1):
        raise BudgetError(f"budget {budget.text} is met by the unreduced model: nothing to search "
                          "(ask for a speedup above 1x, e.g. --budget 2x)")


def plan_search(config: SearchConfig) -> SearchPlan:
    """Validate everything and compute what a run needs; writes nothing."""
    c = config
    if c.resume and c.study is None and (c.gpu is None or c.budget is None):
        raise ConfigError("--resume needs --study NAME (or the --gpu and --budget it was started with)")
    model = c.model or DEFAULT_MODEL
    if c.study is not None:
        study_name = c.study
    elif c.gpu is None or c.budget is None:
        raise ConfigError("give --gpu and --budget (e.g. --gpu a100 --budget 4x), or a --spec that sets them")
    else:
        study_name = derive_study_name(model, c.gpu, c.budget)
    run_dir = Path(c.out) / study_name
    spec = resolve_storage(c.storage, run_dir)
    probe_storage(spec, c.probe_timeout_s)
    if c.resume:
        if spec.kind in ("sqlite", "journal") and not spec.path.exists():
            raise ConfigError(f"nothing to resume: {spec.display} does not exist")
        stored = _stored_settings(spec, study_name, c.probe_timeout_s)
        _check_resume(c, stored, study_name)
        sampler = c.sampler or stored.sampler
        check_sampler(sampler)
        settings = stored.replace(trials=c.trials or stored.trials, sampler=sampler, seed=c.seed,
                                  model_options=stored.model_options if c.model_options is None else c.model_options)
        inputs = _build_inputs(settings.model, SourceRequest(gpu=settings.gpu, task=settings.task,
                                                             measure=settings.measure,
                                                             options=settings.model_options))
        if inputs.signature != settings.signature:
            raise ConfigError(f"study {study_name!r} was made for model {settings.signature.to_dict()}, "
                              f"the model source now gives {inputs.signature.to_dict()}")
        return SearchPlan(c, study_name, run_dir, spec, settings, inputs, [], True)

    if c.storage is None and run_dir.exists():
        raise ConfigError(
            f"{run_dir} already exists: pass --resume to continue study {study_name!r}, or choose another --study"
        )
    if storage_has_study(spec, study_name, timeout_s=c.probe_timeout_s):
        raise ConfigError(f"study {study_name!r} already exists in {spec.display}: pass --resume, or another --study "
                          f"(while it runs, `autoprune worker --storage URL --study {study_name}` joins it)")
    if c.gpu is None:
        raise ConfigError("give --gpu (e.g. --gpu a100), or a --spec that sets it")
    if c.budget is None:
        raise ConfigError("give --budget (e.g. --budget 4x), or a --spec that sets it")
    measure = bool(c.measure)
    objectives = c.objectives or ("score", "latency")
    _check_trivial_budget(c.budget)
    if "energy" in objectives and not measure:
        raise ConfigError("--energy needs --measure: energy readings come from NVML while candidates are timed")
    space = load_space(c.space or DEFAULT_SPACE)
    sampler = c.sampler or "tpe"
    check_sampler(sampler)
    gpu = resolve_gpu(c.gpu, measure=measure)  # the one resolution of the GPU name for this study
    options = dict(c.model_options or {})
    inputs = _build_inputs(model, SourceRequest(gpu=gpu, task=c.task, measure=measure, options=options))
    signature = inputs.signature
    base = inputs.latency.estimate(Schedule.identity(signature.num_layers, model=signature))
    if measure and base.measured:
        _check_quiet(base)  # the quick baseline: before minutes of trials are spent on noise
    baseline_ms = base.baseline_ms
    limit_ms = c.budget.limit_ms(baseline_ms)
    if Budget.meets(baseline_ms, limit_ms):
        raise BudgetError(f"budget {c.budget.text} ({limit_ms:.2f} ms) is met by the unreduced model "
                          f"({baseline_ms:.2f} ms on {inputs.latency.gpu}): there is nothing to search")
    if "energy" in objectives and base.energy_j is None:
        raise ConfigError(f"the energy objective needs energy readings; the {base.source} latency source of "
                          f"{inputs.latency.gpu} gives none (use --measure on a GPU with NVML)")
    accounting = accounting_for(inputs, space)
    _check_reachable(space, inputs, accounting, c.budget, limit_ms, baseline_ms,
                     source=inputs.latency if measure else None)
    settings = StudySettings(
        model=model, task=c.task, metric=inputs.evaluator.metric, gpu=gpu, gpu_request=c.gpu, budget=c.budget,
        budget_ms=limit_ms, baseline_ms=baseline_ms, baseline_source=base.source, measure=measure,
        objectives=objectives, over_budget=c.over_budget or "project", space=space, signature=signature,
        num_visual=inputs.evaluator.num_visual, sampler=sampler, seed=c.seed, trials=c.trials or DEFAULT_TRIALS,
        created=_utc_now(), model_options=options, latency_info=inputs.latency_info,
        evaluated_visual=accounting.evaluated, served_visual=accounting.served,
        race=True if c.race is None else c.race, evaluation_info=inputs.evaluation_info,
        environment=environment(), autoprune=__version__,
    )
    names = c.references if c.references is not None else REFERENCES
    predictor = inputs.predictor
    references = reference_schedules(space, signature, inputs.evaluator.num_visual,
                                     lambda s: predictor.estimate(accounting.clamp(s)).latency_ms, limit_ms, names,
                                     floor=accounting.floor, keep_unfitted=not space.fits_to_budget)
    if settings.trials < len(references):
        raise ConfigError(f"{len(references)} reference schedules ({', '.join(r.name for r in references)}) need at "
                          f"least as many trials as references; --trials is {settings.trials}")
    return SearchPlan(c, study_name, run_dir, spec, settings, inputs, references, False)


def _create_or_load(plan: SearchPlan, storage) -> tuple:
    """``(study, settings, joined)``: the study loaded (resume), created, or — when an identical
    command created it meanwhile — joined with its stored settings (``joined`` True).

    Creation runs under the storage's ``create:<study>`` lock (:mod:`autoprune.search.locks`), so
    of two commands started at once one creates the study (settings, references) and the other
    waits for it, then joins.
    """
    s = plan.settings
    if plan.exists:
        study = optuna.load_study(study_name=plan.study_name, storage=storage)
        store_settings(study, s)  # the new total, sampler, seed, model options
        return study, s, False
    with study_lock(plan.storage, storage, f"create:{plan.study_name}"):
        if plan.study_name in study_names(storage):
            study = optuna.load_study(study_name=plan.study_name, storage=storage)
            try:
                stored = load_settings(study)
            except ConfigError:
                raise ConfigError(f"study {plan.study_name!r} in {plan.storage.display} is being created by another "
                                  "process (its settings are not stored yet): join it with --resume or "
                                  "`autoprune worker` in a moment") from None
            _check_resume(plan.config, stored, plan.study_name)
            if stored.signature != s.signature:
                raise ConfigError(f"study {plan.study_name!r} was made for model {stored.signature.to_dict()}, "
                                  f"this process has {s.signature.to_dict()}")
            return study, stored, True
        directions = ["maximize", "minimize"] + (["minimize"] if "energy" in s.objectives else [])
        study = optuna.create_study(study_name=plan.study_name, storage=storage, directions=directions,
                                    load_if_exists=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([s.metric, "latency_ms"] + (["energy_j"] if len(directions) == 3 else []))
        try:
            store_settings(study, s)
            _add_references(study, plan)
        except BaseException:
            # Nobody joined yet (they wait for this lock): what this process made is removed again.
            with contextlib.suppress(Exception):
                optuna.delete_study(study_name=plan.study_name, storage=storage)
            raise
        return study, s, False


def _add_references(study, plan: SearchPlan) -> None:
    """Evaluate the references the space cannot express here (ask/tell), then enqueue the others.

    In that order: ``study.ask()`` would pop an enqueued trial and give it another schedule.
    """
    sig = plan.settings.signature
    runner = None
    queued = []
    for ref in plan.references:
        params = plan.settings.space.params_for(ref.schedule, sig)
        attrs = {"reference": ref.name, "reference_fitted": ref.fitted}
        if params is not None:
            queued.append((params, attrs))
            continue
        runner = runner or TrialRunner.from_settings(plan.settings, plan.inputs)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Heartbeat of storage")  # a short trial, no beats needed
            trial = study.ask()
        trial.set_user_attr("worker", runner.worker)
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
    for params, attrs in queued:
        study.enqueue_trial(params, user_attrs=attrs)
    room = max(0, plan.settings.trials - len(plan.references))  # no warm start left waiting past the count
    for params in plan.settings.space.warm_starts(sig)[:room]:
        study.enqueue_trial(params, user_attrs={"warm_start": True})


def _has_study(plan: SearchPlan) -> bool:
    try:
        return storage_has_study(plan.storage, plan.study_name, timeout_s=plan.config.probe_timeout_s)
    except Exception:
        return True  # cannot tell: keep the folder


def _resume_hint(plan: SearchPlan) -> str:
    c = plan.config
    return (f"`autoprune search --study {plan.study_name} --resume`"
            + (f" --storage {plan.storage.display}" if c.storage else "")
            + (f" --out {c.out}" if c.out != "runs" else ""))


def run_search(config: SearchConfig, *, log: Callable[[str], None] = print) -> SearchResult:
    """Validate, create or resume the study, run its trials, export. See the module docstring.

    Raises BudgetError, ConfigError, StorageError, UnknownGPUError before anything is
    written; a new run directory is removed again if setting up the study fails.
    """
    plan = plan_search(config)
    c, s = plan.config, plan.settings
    try:  # atomic: of two commands started at once, only the one that made the folder may remove it
        plan.run_dir.mkdir(parents=True)
        created_dir = True
    except FileExistsError:
        created_dir = False
    with optuna_quiet():
        try:
            storage = open_storage(plan.storage, heartbeat_s=c.heartbeat_s, timeout_s=c.probe_timeout_s,
                                   grace_s=c.grace_s)
            study, s, joined = _create_or_load(plan, storage)
        except BaseException:
            if created_dir and not plan.exists and not _has_study(plan):
                shutil.rmtree(plan.run_dir, ignore_errors=True)
            raise
        _io.write_json(plan.run_dir / "search.json", {**s.to_dict(), "storage": plan.storage.display,
                                                     "study": plan.study_name})
        if joined:
            log(f"study {plan.study_name} was created by another process meanwhile: joined it")
        for note in latency_notes(s.latency_info):
            log(note)
        recovered = recover_orphans(study, log=log) if plan.exists else []
        remaining = max(0, s.trials - count_done(study))
        log(f"study {plan.study_name}: {s.model} on {s.gpu_name}, budget {s.budget.text} (<= {s.budget_ms:.2f} ms; "
            f"unreduced {s.baseline_ms:.2f} ms), space {s.space.name}, sampler {s.sampler}; {remaining} of "
            f"{s.trials} trials to run on {plan.storage.display}")
        if c.workers == 0:
            close_storage(storage)
            log(f"study {plan.study_name} is ready for workers: `autoprune worker --storage {plan.storage.display} "
                f"--study {plan.study_name}` on each host; then {_resume_hint(plan)} validates and exports")
            return SearchResult(plan.study_name, plan.run_dir, plan.storage.display, plan.storage, len(study.trials),
                                recovered=recovered)
        try:
            if remaining and c.workers == 1 and not c.devices:  # a pinned GPU needs a process of its own
                run_worker(study, plan.inputs, s, 1 if joined else 0, spec=plan.storage, timeout=c.timeout,
                           show_progress=c.show_progress, log=log)
            elif remaining:
                close_storage(storage)
                run_workers(plan.storage, plan.study_name, workers=c.workers, total=s.trials,
                            heartbeat_s=c.heartbeat_s, grace_s=c.grace_s, timeout=c.timeout,
                            show_progress=c.show_progress, log=log, devices=c.devices)
                storage = open_storage(plan.storage, heartbeat_s=None, timeout_s=c.probe_timeout_s)
                study = optuna.load_study(study_name=plan.study_name, storage=storage)
        except KeyboardInterrupt:
            log(f"interrupted: finished trials are stored in {plan.storage.display}; continue with {_resume_hint(plan)}")
            raise
        result = SearchResult(plan.study_name, plan.run_dir, plan.storage.display, plan.storage, len(study.trials),
                              recovered=recovered)
        # Validation runs once per study, here, by the command that created or resumed it (not by a
        # process that joined, nor by `autoprune worker`).
        if c.export and c.validate and plan.inputs.validation is not None and not joined:
            validator = plan.inputs.validation()
            validate_study(study, s, validator, log=log, show_progress=c.show_progress)
        if c.export:
            # One consistent read of the study: workers on other hosts may still be running.
            reader = open_storage(plan.storage, heartbeat_s=None, timeout_s=c.probe_timeout_s, snapshot=True)
            try:
                frozen = study_snapshot(optuna.load_study(study_name=plan.study_name, storage=reader))
            finally:
                close_storage(reader)
            result.export = export_study(frozen, plan.run_dir)
            result.summary = result.export.summary
            log(result.summary)
            log(f"exported {len(result.export.pareto)} schedule(s) to {plan.run_dir / 'pareto'}; "
                f"index {result.export.index_path}, all trials in {result.export.csv_path}")
        close_storage(storage)
    return result

