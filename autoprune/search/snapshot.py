"""A consistent, frozen copy of a study for the export and the report while workers still run.

The export and the report read a study several times (the trials, Optuna's ``best_trials``, each
exported trial again). With workers writing meanwhile, two reads could see two different studies
(a trial COMPLETE in one, RUNNING in the other). :func:`study_snapshot` reads every trial once —
on a server storage opened with ``snapshot=True`` in one REPEATABLE READ transaction, so that the
several queries Optuna makes for one ``get_trials`` see one state of the database — and returns an
in-memory study holding those trials (numbers, states, values, parameters, attributes,
constraints) and the study's attributes: every later read agrees with the first.
"""

from __future__ import annotations

import warnings

import optuna
from optuna.storages import InMemoryStorage

from .quiet import optuna_quiet

__all__ = ["study_snapshot"]


def study_snapshot(study) -> optuna.Study:
    """An in-memory copy of ``study`` as it is now (see the module docstring); same name, directions,
    metric names, user attributes and trials (in number order, so numbers are kept)."""
    trials = sorted(study.get_trials(deepcopy=True), key=lambda t: t.number)
    with optuna_quiet():
        snap = optuna.create_study(study_name=study.study_name, storage=InMemoryStorage(),
                                   directions=study.directions)
        if study.metric_names is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                snap.set_metric_names(list(study.metric_names))
        for key, value in study.user_attrs.items():
            snap.set_user_attr(key, value)
        for t in trials:
            snap.add_trial(t)
    if [t.number for t in snap.trials] != [t.number for t in trials]:
        raise RuntimeError(f"study {study.study_name!r}: trial numbers are not contiguous; cannot snapshot")
    return snap
