"""The Optuna study: a search of reduction schedules for one model and one GPU under a latency
budget. One module a concept:

- :mod:`.config`      :class:`SearchConfig`, :class:`StudySpec`: what the user asks (the edge
  where strings become values);
- :mod:`.settings`    :class:`StudySettings`: what is fixed for a study, stored in it (v1);
- :mod:`.space`, :mod:`.knobs`  search spaces: a trial's parameters → a monotone schedule;
- :mod:`.references`  the one registry of named schedule shapes (references, analysis);
- :mod:`.samplers`    the sampler registry;
- :mod:`.storage`     where a study lives (resolve, probe, open, close); :mod:`.resilient` its calls
  retried through a lost server; :mod:`.locks` the storage-wide lock (creation, trial claims);
- :mod:`.objective`   the trial: budget projection, evaluation, constraint;
- :mod:`.records`     what a trial stores, written and read in one place;
- :mod:`.identity`, :mod:`.recovery`  which worker ran a trial; re-queueing a dead worker's;
- :mod:`.workers`     the ask/tell loop with heartbeats, in this process or spawned workers
  (:mod:`.devices`: one GPU each); :mod:`.join` a worker joining from any host;
- :mod:`.run`         :func:`run_search`;
- :mod:`.snapshot`    a frozen copy of a study for export and report while workers run;
- :mod:`.export`      the feasible Pareto front as schedule files, ``pareto.json``, ``trials.csv``;
- :mod:`.apply`       a schedule file's score and latency on its model.

The model a study evaluates comes from a model source (:mod:`autoprune.models`), known here by
name only. Importing this package is light; its names load their module on first use.
"""

from __future__ import annotations

import importlib

__all__ = ["SearchConfig", "StudySpec", "load_study_spec", "derive_study_name", "StudySettings", "load_settings",
           "SearchSpace", "load_space", "run_search", "plan_search", "SearchResult", "export_study", "trials_frame",
           "apply_schedule", "REFERENCES", "reference_schedules", "make_sampler", "SAMPLERS", "TrialRunner",
           "DEFAULT_TRIALS"]

_WHERE = {
    "SearchConfig": "config", "StudySpec": "config", "load_study_spec": "config", "derive_study_name": "config",
    "DEFAULT_TRIALS": "config", "StudySettings": "settings", "load_settings": "settings", "SearchSpace": "space",
    "load_space": "space", "run_search": "run", "plan_search": "run", "SearchResult": "run",
    "export_study": "export", "trials_frame": "export", "apply_schedule": "apply", "REFERENCES": "references",
    "reference_schedules": "references", "make_sampler": "samplers", "SAMPLERS": "samplers",
    "TrialRunner": "objective",
}


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
