"""``join_study``: a worker process that joins an existing study from any host
(``autoprune worker --storage URL --study NAME``).

The study's stored :class:`~autoprune.search.settings.StudySettings` are the source of truth: the
worker resolves nothing itself (GPU, budget, space, model options all come from the storage). It
refuses to join, with an error naming both sides, when its autoprune version differs from the one
that created the study, or when its model source gives another model (layer kinds or fingerprint:
another checkpoint under the same path). It runs the ask/tell loop of
:func:`~autoprune.search.workers.run_worker` until the study holds its count, then stops; it does
not validate or export (the ``search`` command that created the study, or ``search --resume``, does
that once).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna

from .._version import __version__
from ..errors import ConfigError
from ..interfaces import SourceRequest, StudyInputs
from ..models import check_request, get_model_source
from .devices import pin_device
from .identity import worker_identity
from .quiet import optuna_quiet
from .settings import StudySettings, load_settings
from .storage import (
    close_storage,
    open_storage,
    probe_storage,
    resolve_storage,
    study_names,
)
from .workers import WorkerStats, run_worker, worker_index

__all__ = ["join_study", "check_version", "check_model"]


def check_version(name: str, settings: StudySettings, version: str = __version__) -> None:
    """ConfigError, naming both versions, when this autoprune is not the one that created study ``name``."""
    if settings.autoprune != version:
        raise ConfigError(f"study {name!r} was created by autoprune {settings.autoprune}; this worker runs autoprune "
                          f"{version}: install autoprune=={settings.autoprune} to join it")


def check_model(name: str, settings: StudySettings, inputs: StudyInputs) -> None:
    """ConfigError, naming both models, when this worker's model source gives another model."""
    have, want = inputs.signature, settings.signature
    if have != want:
        raise ConfigError(f"study {name!r} is for model {want.family} {want.layer_kinds!r} fingerprint "
                          f"{want.fingerprint}; this worker's model source gives {have.family} {have.layer_kinds!r} "
                          f"fingerprint {have.fingerprint}: point it at the same checkpoint")


def _inputs(settings: StudySettings, device: str | None) -> StudyInputs:
    options = dict(settings.model_options)
    if device is not None and "device" in options:  # pinned: the one visible GPU is cuda (or the CPU)
        options["device"] = "cpu" if device == "cpu" else "cuda"
    request = SourceRequest(gpu=settings.gpu, task=settings.task, measure=settings.measure, options=options)
    source = get_model_source(settings.model)
    check_request(source, request)
    inputs = source.build(request)
    if not isinstance(inputs, StudyInputs):
        raise ConfigError(f"model source {settings.model!r} returned {type(inputs).__name__}, not StudyInputs")
    return inputs


def join_study(storage: str, study: str, *, device: str | None = None, index: int | None = None,
               timeout: float | None = None, max_trials: int | None = None, heartbeat_s: int = 10,
               grace_s: int | None = None, probe_timeout_s: float = 3.0,
               log: Callable[[str], None] = print) -> WorkerStats:
    """Join study ``study`` on ``storage`` and run its trials until it holds its count (see the
    module docstring). ``device``: ``cuda:K``/``K``/``cpu``, the only device this process uses;
    ``index``: the sampler-seed index (default derived from the worker's identity).

    Raises ConfigError (no such study, version or model differs) or StorageError (the server does
    not answer) before any trial runs.
    """
    spec = resolve_storage(storage, Path.cwd())
    if spec.kind in ("sqlite", "journal") and not spec.path.exists():
        raise ConfigError(f"--storage {spec.display}: no such file (a worker joins an existing study)")
    probe_storage(spec, probe_timeout_s)
    pin_device(device)
    with optuna_quiet():
        handle = open_storage(spec, heartbeat_s=heartbeat_s, timeout_s=probe_timeout_s, grace_s=grace_s)
        try:
            try:
                s = optuna.load_study(study_name=study, storage=handle)
            except KeyError:
                raise ConfigError(f"storage {spec.display} has no study {study!r}; it has "
                                  f"{sorted(study_names(handle))}") from None
            settings = load_settings(s)
            check_version(study, settings)  # before anything loads
            inputs = _inputs(settings, device)
            check_model(study, settings, inputs)
            me = worker_identity()
            idx = index if index is not None else worker_index(me)
            log(f"worker {me} joined study {study} on {spec.display}: {settings.trials} trials in all"
                + (f", device {device}" if device else ""))
            stats = run_worker(s, inputs, settings, idx, spec=spec, timeout=timeout, max_trials=max_trials, log=log)
            log(f"worker {me} done ({stats.stopped}): " + ", ".join(f"{len(v)} {k.lower()}" for k, v in
                                                                    stats.told.items()))
            return stats
        finally:
            close_storage(handle)
