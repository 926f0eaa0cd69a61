"""What a user asks of ``autoprune search``: :class:`SearchConfig` (the command line or Python),
:class:`StudySpec` (a checked-in ``studies/*.yaml``), validated when they are built.

This is the edge where user strings become values: the budget string is parsed here, once
(:func:`coerce_budget`); the GPU name is resolved once per study by the run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._io import find_data_file, read_yaml_mapping
from ..budget import Budget, parse_budget
from ..errors import AutopruneError, ConfigError, check_keys
from .devices import parse_devices
from .references import REFERENCES, parse_reference
from .samplers import SAMPLERS
from .settings import OBJECTIVES, OVER_BUDGET

__all__ = ["SearchConfig", "StudySpec", "load_study_spec", "derive_study_name", "coerce_budget", "DEFAULT_TRIALS",
           "DEFAULT_MODEL", "DEFAULT_SPACE"]

# About a minute on the 2-core CPU machine for the demo (the prefix activation cache included).
DEFAULT_TRIALS = 150
DEFAULT_MODEL = "demo"
DEFAULT_SPACE = "budgeted"


def coerce_budget(value: Budget | str | None) -> Budget | None:
    """The one place a budget string from a user becomes a :class:`~autoprune.budget.Budget`."""
    if value is None or isinstance(value, Budget):
        return value
    return parse_budget(value)


def _validate_common(sampler, trials, seed, objectives, over_budget, workers, timeout, references, measure):
    if sampler is not None and sampler not in SAMPLERS:
        raise ConfigError(f"sampler must be one of {list(SAMPLERS)}, got {sampler!r}")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials < 1):
        raise ConfigError(f"trials must be an integer >= 1, got {trials!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"seed must be a non-negative integer or null, got {seed!r}")
    if objectives is not None:
        objectives = tuple(objectives)
        if objectives not in (OBJECTIVES[:2], OBJECTIVES):
            raise ConfigError(f"objectives must be [score, latency] or [score, latency, energy], got {list(objectives)}")
    if over_budget is not None and over_budget not in OVER_BUDGET:
        raise ConfigError(f"over_budget must be one of {OVER_BUDGET}, got {over_budget!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ConfigError(f"workers must be an integer >= 0 (0: create the study for `autoprune worker` processes), "
                          f"got {workers!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if references is not None:
        for r in references:
            parse_reference(r)
    if measure is not None and not isinstance(measure, bool):
        raise ConfigError(f"measure must be true or false, got {measure!r}")


_SPEC_KEYS = {"name", "description", "model", "task", "space", "gpu", "budget", "sampler", "trials", "seed",
              "measure", "objectives", "over_budget", "workers", "timeout", "model_options", "references", "race"}


@dataclass(frozen=True)
class StudySpec:
    """A checked-in study (``studies/*.yaml``): defaults for ``autoprune search --spec``."""

    name: str
    model: str = DEFAULT_MODEL
    task: str | None = None
    space: str = DEFAULT_SPACE
    gpu: str | None = None
    budget: Budget | None = None
    sampler: str = "tpe"
    trials: int = DEFAULT_TRIALS
    seed: int | None = 0
    measure: bool = False
    objectives: tuple[str, ...] = OBJECTIVES[:2]
    over_budget: str = "project"
    workers: int = 1
    timeout: float | None = None
    model_options: Mapping[str, Any] = field(default_factory=dict)
    references: tuple[str, ...] = REFERENCES
    race: bool = True
    description: str = ""
    source: str = ""

    def __post_init__(self):
        object.__setattr__(self, "budget", coerce_budget(self.budget))
        _validate_common(self.sampler, self.trials, self.seed, self.objectives, self.over_budget, self.workers,
                         self.timeout, self.references, self.measure)
        if not isinstance(self.model_options, Mapping):
            raise ConfigError(f"model_options must be a mapping, got {self.model_options!r}")
        if not isinstance(self.race, bool):
            raise ConfigError(f"race must be true or false, got {self.race!r}")


def load_study_spec(name_or_path: str | os.PathLike) -> StudySpec:
    """Load ``studies/<name>.yaml`` (or a path); unknown keys or bad values → ConfigError naming the file."""
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
    if kw.get("budget") is not None:
        kw["budget"] = str(kw["budget"])
    try:
        return StudySpec(**kw, source=str(path))
    except AutopruneError as e:
        raise type(e)(f"{path}: {e}") from None


_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class SearchConfig:
    """Everything ``autoprune search`` needs. ``None`` means: the default for a new study, the
    stored value when resuming (see :func:`autoprune.search.run.run_search`).

    ``model`` names a model source (:mod:`autoprune.models`): ``demo`` (default), ``synthetic``,
    or ``module:attribute`` of one of your own. ``budget`` may be given as a string (``4x``,
    ``120ms``, ``25%``); it is parsed when the config is built.
    """

    gpu: str | None = None
    budget: Budget | str | None = None
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
    race: bool | None = None
    show_progress: bool = True
    export: bool = True
    validate: bool = True
    heartbeat_s: int = 10
    probe_timeout_s: float = 3.0
    grace_s: int | None = None
    devices: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "budget", coerce_budget(self.budget))
        _validate_common(self.sampler, self.trials, self.seed, self.objectives, self.over_budget, self.workers,
                         self.timeout, self.references, self.measure)
        if self.objectives is not None:
            object.__setattr__(self, "objectives", tuple(self.objectives))
        if self.study is not None and not _STUDY_NAME.fullmatch(self.study):
            raise ConfigError(f"study name {self.study!r} must be letters, digits, '.', '_' or '-'")
        if self.model_options is not None and not isinstance(self.model_options, Mapping):
            raise ConfigError(f"model_options must be a mapping, got {self.model_options!r}")
        if self.race is not None and not isinstance(self.race, bool):
            raise ConfigError(f"race must be true or false, got {self.race!r}")
        for name in ("heartbeat_s", "grace_s"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name} must be a whole number of seconds >= 1, got {v!r}")
        try:
            object.__setattr__(self, "devices", parse_devices(self.devices or None))
        except ValueError as e:
            raise ConfigError(f"--devices: {e}") from None

    @classmethod
    def from_spec(cls, spec: StudySpec, **overrides) -> SearchConfig:
        """Spec values, with every override that is not None taking precedence."""
        kw = dict(study=spec.name, model=spec.model, task=spec.task, space=spec.space, gpu=spec.gpu,
                  budget=spec.budget, sampler=spec.sampler, trials=spec.trials, seed=spec.seed,
                  measure=spec.measure, objectives=spec.objectives, over_budget=spec.over_budget,
                  workers=spec.workers, timeout=spec.timeout, model_options=dict(spec.model_options),
                  references=spec.references, race=spec.race)
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)


def derive_study_name(model: str, gpu: str, budget: Budget) -> str:
    """``demo-a100-4x``, ``demo-h100-120ms``, ``demo-a100-25pct``."""
    return re.sub(r"[^a-z0-9._-]+", "-", f"{model}-{gpu}-{budget.slug()}".lower()).strip("-")
