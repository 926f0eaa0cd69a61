"""A study's settings: fixed when the study is created, stored once in the study's user
attributes (format ``autoprune.search/v1``), read back by every worker, the export and the report.

Every user string is parsed before a :class:`StudySettings` exists (the budget by
:class:`~autoprune.search.config.SearchConfig`, the GPU name by the run): here they are typed
values, and a worker that joins the study reads them instead of resolving anything again.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .._version import __version__
from ..accounting import TokenAccounting
from ..budget import Budget
from ..cost.gpus import CPU, GpuSpec
from ..errors import ConfigError, check_keys
from ..schedule import ModelSignature
from .space import SearchSpace, space_from_dict

__all__ = ["StudySettings", "SETTINGS_FORMAT", "STUDY_ATTR", "load_settings", "store_settings", "OBJECTIVES",
           "OVER_BUDGET"]

SETTINGS_FORMAT = "autoprune.search/v1"
STUDY_ATTR = "autoprune"  # the study user attribute that holds the settings
OBJECTIVES = ("score", "latency", "energy")
OVER_BUDGET = ("project", "reject")


def _plain(value: Any, where: str) -> Any:
    """A JSON-safe deep copy (mappings with string keys, lists, finite numbers, strings, None)."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where} must be finite, got {value!r}")
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(f"{where} must be plain data, got {type(value).__name__}")


@dataclass(frozen=True)
class StudySettings:
    """Everything fixed for a study.

    - ``model``, ``model_options``, ``task``: the model source, its options, the task it
      evaluates; ``metric``: what the evaluator reports (``accuracy`` or ``fidelity``);
    - ``gpu``: the resolved target; ``gpu_request``: the name the user gave (``a100``, ``auto``);
    - ``budget`` and ``budget_ms``: the limit, computed once from ``baseline_ms`` (the unreduced
      latency from ``baseline_source``); ``measure``: latency measured on the present device;
    - ``objectives`` (``score``, ``latency``[, ``energy``]), ``over_budget`` (``project`` or
      ``reject``), ``space``, ``signature`` (the model's layer kinds and fingerprint),
      ``num_visual`` (visual tokens of the evaluated samples);
    - ``sampler``, ``seed``, ``trials`` (the total, references included): may change on resume;
    - ``latency_info``: what the latency is of (shape, token layout, calibration), as plain data;
    - ``evaluated_visual``, ``served_visual``: the visual tokens of the evaluated samples and of the
      latency layout (default: ``num_visual`` for both), the study's token accounting;
    - ``race``: whether trials race the incumbent (:mod:`autoprune.search.objective`);
    - ``evaluation_info``: the evaluated data (search and validation sets), as plain data;
    - ``environment``: versions, commit, command line and host at creation
      (:func:`autoprune.provenance.environment`).

    Raises :class:`~autoprune.errors.ConfigError` naming the field.
    """

    model: str
    task: str | None
    metric: str
    gpu: GpuSpec
    gpu_request: str
    budget: Budget
    budget_ms: float
    baseline_ms: float
    baseline_source: str
    measure: bool
    objectives: tuple[str, ...]
    over_budget: str
    space: SearchSpace
    signature: ModelSignature
    num_visual: int
    sampler: str
    seed: int | None
    trials: int
    created: str
    model_options: Mapping[str, Any] = field(default_factory=dict)
    latency_info: Mapping[str, Any] = field(default_factory=dict)
    evaluated_visual: tuple[int, ...] = ()
    served_visual: int = 0
    race: bool = False
    evaluation_info: Mapping[str, Any] = field(default_factory=dict)
    environment: Mapping[str, Any] = field(default_factory=dict)
    autoprune: str = __version__

    def __post_init__(self):
        for name in ("model", "metric", "gpu_request", "baseline_source", "sampler", "created", "autoprune"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v:
                raise ConfigError(f"settings.{name} must be a non-empty string, got {v!r}")
        if self.task is not None and not isinstance(self.task, str):
            raise ConfigError(f"settings.task must be a string or null, got {self.task!r}")
        for name, typ in (("gpu", GpuSpec), ("budget", Budget), ("space", SearchSpace), ("signature", ModelSignature)):
            if not isinstance(getattr(self, name), typ):
                raise ConfigError(f"settings.{name} must be a {typ.__name__}, got {type(getattr(self, name)).__name__}")
        for name in ("budget_ms", "baseline_ms"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"settings.{name} must be a positive number of ms, got {v!r}")
        if not isinstance(self.measure, bool):
            raise ConfigError(f"settings.measure must be true or false, got {self.measure!r}")
        objectives = tuple(self.objectives)
        if objectives not in (OBJECTIVES[:2], OBJECTIVES):
            raise ConfigError(f"settings.objectives must be [score, latency] or [score, latency, energy], "
                              f"got {list(objectives)}")
        object.__setattr__(self, "objectives", objectives)
        if self.over_budget not in OVER_BUDGET:
            raise ConfigError(f"settings.over_budget must be one of {OVER_BUDGET}, got {self.over_budget!r}")
        for name, low in (("num_visual", 1), ("trials", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"settings.{name} must be an integer >= {low}, got {v!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ConfigError(f"settings.seed must be an integer or null, got {self.seed!r}")
        if not isinstance(self.race, bool):
            raise ConfigError(f"settings.race must be true or false, got {self.race!r}")
        object.__setattr__(self, "evaluated_visual", tuple(self.evaluated_visual) or (self.num_visual,))
        object.__setattr__(self, "served_visual", self.served_visual or max(self.evaluated_visual))
        self.accounting  # validates both  # noqa: B018
        object.__setattr__(self, "model_options",
                           MappingProxyType(_plain(dict(self.model_options), "settings.model_options")))
        for name in ("latency_info", "evaluation_info", "environment"):
            object.__setattr__(self, name, MappingProxyType(_plain(dict(getattr(self, name)), f"settings.{name}")))

    @property
    def gpu_name(self) -> str:
        """The target's registry id (``a100-sxm4-80gb``)."""
        return self.gpu.id

    @property
    def min_tokens(self) -> int:
        return self.space.min_tokens

    @property
    def accounting(self) -> TokenAccounting:
        return TokenAccounting(self.evaluated_visual, self.served_visual, self.space.min_tokens)

    def provenance(self) -> dict:
        """What a result of this study came from, for every artifact: the environment at creation, the
        latency (source, shape, token layout, GPU, calibration), the token accounting, the evaluated data."""
        acc = self.accounting
        return {"environment": dict(self.environment), "latency": {**dict(self.latency_info), "gpu": self.gpu_name,
                                                                   "baseline_source": self.baseline_source},
                "tokens": {"evaluated_visual": list(acc.evaluated), "served_visual": acc.served,
                           "min_tokens": acc.min_tokens, "floor": acc.floor, "floor_reason": acc.floor_reason()},
                "evaluation": dict(self.evaluation_info), "model": self.model, "model_options": dict(self.model_options),
                "task": self.task, "metric": self.metric}

    def replace(self, **changes) -> StudySettings:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict:
        return {
            "format": SETTINGS_FORMAT, "autoprune": self.autoprune, "created": self.created,
            "model": self.model, "model_options": dict(self.model_options), "task": self.task, "metric": self.metric,
            "gpu": {"request": self.gpu_request, "spec": _gpu_to_dict(self.gpu)},
            "budget": {"kind": self.budget.kind, "value": self.budget.value, "text": self.budget.text},
            "budget_ms": self.budget_ms, "baseline_ms": self.baseline_ms, "baseline_source": self.baseline_source,
            "measure": self.measure, "objectives": list(self.objectives), "over_budget": self.over_budget,
            "space": self.space.to_dict(), "signature": self.signature.to_dict(), "num_visual": self.num_visual,
            "sampler": self.sampler, "seed": self.seed, "trials": self.trials,
            "evaluated_visual": list(self.evaluated_visual), "served_visual": self.served_visual, "race": self.race,
            "latency_info": _plain(dict(self.latency_info), "latency_info"),
            "evaluation_info": _plain(dict(self.evaluation_info), "evaluation_info"),
            "environment": _plain(dict(self.environment), "environment"),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "study settings") -> StudySettings:
        """Read :meth:`to_dict`'s output; the format tag is checked first."""
        if not isinstance(d, Mapping) or d.get("format") != SETTINGS_FORMAT:
            got = d.get("format") if isinstance(d, Mapping) else type(d).__name__
            raise ConfigError(f"{where}: format is {got!r}; this autoprune reads {SETTINGS_FORMAT!r} "
                              "(a study made by another version of autoprune)")
        keys = {f.name for f in dataclasses.fields(cls)} - {"gpu_request"} | {"format"}
        check_keys(d, keys, keys - {"model_options", "latency_info", "evaluation_info", "environment"}, where)
        try:
            g = d["gpu"]
            check_keys(g, {"request", "spec"}, {"request", "spec"}, f"{where}: gpu")
            b = d["budget"]
            check_keys(b, {"kind", "value", "text"}, {"kind", "value", "text"}, f"{where}: budget")
            kw = {k: v for k, v in d.items() if k not in ("format", "gpu", "budget", "space", "signature")}
            return cls(gpu=_gpu_from_dict(g["spec"], where), gpu_request=g["request"],
                       budget=Budget(b["kind"], b["value"], b["text"]),
                       space=space_from_dict(d["space"], source=f"{where}: space"),
                       signature=ModelSignature.from_dict(d["signature"]),
                       **{**kw, "objectives": tuple(d["objectives"]),
                          "evaluated_visual": tuple(d["evaluated_visual"])})
        except ConfigError:
            raise
        except (ValueError, TypeError) as e:  # BudgetError, ScheduleError (also ValueError), bad types
            raise ConfigError(f"{where}: {e}") from None


def _gpu_to_dict(spec: GpuSpec) -> dict:
    return {"id": "cpu"} if spec.is_cpu else spec.to_dict()


def _gpu_from_dict(d: Mapping, where: str) -> GpuSpec:
    if isinstance(d, Mapping) and d.get("id") == "cpu" and len(d) == 1:
        return CPU
    return GpuSpec.from_dict(d, origin=f"{where}: gpu")


def load_settings(study) -> StudySettings:
    """The settings stored in an Optuna study; ConfigError when it was not made by ``autoprune search``."""
    raw = study.user_attrs.get(STUDY_ATTR)
    if raw is None:
        raise ConfigError(f"study {study.study_name!r} was not made by autoprune search (it has no {STUDY_ATTR!r} "
                          "settings attribute)")
    return StudySettings.from_dict(raw, where=f"study {study.study_name!r}")


def store_settings(study, settings: StudySettings) -> None:
    study.set_user_attr(STUDY_ATTR, settings.to_dict())
