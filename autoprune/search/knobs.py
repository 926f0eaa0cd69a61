"""Scorer knobs of a search space: a fixed value, a float or integer range, or a categorical
choice; their YAML form, their Optuna distributions, their defaults, and the check that every
value a knob can take is a valid :class:`~autoprune.schedule.ScorerConfig` value."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from ..errors import ConfigError, ScheduleError, check_keys
from ..schedule import ScorerConfig

__all__ = ["Fixed", "FloatRange", "IntRange", "Choice", "Knob", "KNOBS", "FLOAT_KNOBS", "INT_KNOBS",
           "CATEGORICAL_KNOBS", "TOL", "suggest", "knob_default", "knob_to_dict", "parse_range", "parse_knob",
           "check_knobs"]

FLOAT_KNOBS = ("state_momentum", "w_attn", "w_mamba")
INT_KNOBS = ("evidence_window", "seed")
CATEGORICAL_KNOBS = ("mamba_decay", "delta_correction", "head_agg", "selector")
KNOBS = FLOAT_KNOBS + INT_KNOBS + CATEGORICAL_KNOBS
# Tolerance when mapping a schedule back to parameters (float products drift by ulps).
TOL = 1e-9


@dataclass(frozen=True)
class Fixed:
    value: Any


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False
    default: float | None = None

    def __post_init__(self):
        for f in ("low", "high"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"range {f} must be a finite number, got {v!r}")
        if self.low > self.high:
            raise ConfigError(f"range low {self.low} > high {self.high}")
        if self.log and self.low <= 0:
            raise ConfigError(f"a log range needs low > 0, got {self.low}")
        if self.default is not None and not self.low <= self.default <= self.high:
            raise ConfigError(f"default {self.default} is outside [{self.low}, {self.high}]")

    def contains(self, v: float) -> bool:
        return self.low - TOL <= v <= self.high + TOL

    def clip(self, v: float) -> float:
        return min(self.high, max(self.low, v))

    def distribution(self):
        return FloatDistribution(float(self.low), float(self.high), log=self.log)


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    default: int | None = None

    def __post_init__(self):
        for f in ("low", "high"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"integer range {f} must be an integer, got {v!r}")
        if self.low > self.high:
            raise ConfigError(f"range low {self.low} > high {self.high}")
        if self.default is not None and not self.low <= self.default <= self.high:
            raise ConfigError(f"default {self.default} is outside [{self.low}, {self.high}]")

    def contains(self, v: int) -> bool:
        return self.low <= v <= self.high

    def distribution(self):
        return IntDistribution(self.low, self.high)


@dataclass(frozen=True)
class Choice:
    choices: tuple
    default: Any = None

    def __post_init__(self):
        if not self.choices:
            raise ConfigError("choices must not be empty")
        if len(set(self.choices)) != len(self.choices):
            raise ConfigError(f"choices repeat a value: {list(self.choices)}")
        if self.default is not None and self.default not in self.choices:
            raise ConfigError(f"default {self.default!r} is not one of the choices {list(self.choices)}")

    def contains(self, v) -> bool:
        return any(v == c and type(v) is type(c) for c in self.choices)

    def distribution(self):
        return CategoricalDistribution(list(self.choices))


Knob = Fixed | FloatRange | IntRange | Choice


def suggest(trial, name: str, dist):
    """``trial.suggest_*`` for an Optuna distribution (public API only)."""
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    raise TypeError(f"unsupported distribution {dist!r}")


def knob_default(name: str, k: Knob):
    if isinstance(k, Fixed):
        return k.value
    if k.default is not None:
        return k.default
    base = getattr(ScorerConfig(), name)
    if k.contains(base):
        return base
    if isinstance(k, Choice):
        return k.choices[0]
    if isinstance(k, IntRange):
        return (k.low + k.high) // 2
    return math.sqrt(k.low * k.high) if k.log else (k.low + k.high) / 2


def knob_to_dict(k: Knob):
    if isinstance(k, Fixed):
        return k.value
    d = dataclasses.asdict(k)
    if isinstance(k, Choice):
        d["choices"] = list(k.choices)
    if isinstance(k, FloatRange) and not k.log:
        d.pop("log")
    return {key: v for key, v in d.items() if v is not None}


def parse_range(d: Any, typ, where: str):
    if typ is float:
        check_keys(d, {"low", "high", "log", "default"}, {"low", "high"}, where)
        log = d.get("log", False)
        if not isinstance(log, bool):
            raise ConfigError(f"{where}.log must be true or false, got {log!r}")
        try:
            return FloatRange(d["low"], d["high"], log, d.get("default"))
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    check_keys(d, {"low", "high", "default"}, {"low", "high"}, where)
    try:
        return IntRange(d["low"], d["high"], d.get("default"))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def parse_knob(name: str, v: Any, where: str) -> Knob:
    if isinstance(v, list):
        v = {"choices": v}
    if isinstance(v, Mapping):
        if "choices" in v:
            check_keys(v, {"choices", "default"}, {"choices"}, where)
            if not isinstance(v["choices"], list):
                raise ConfigError(f"{where}.choices must be a list, got {v['choices']!r}")
            try:
                return Choice(tuple(v["choices"]), v.get("default"))
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from None
        if name in FLOAT_KNOBS:
            return parse_range(v, float, where)
        if name in INT_KNOBS:
            return parse_range(v, int, where)
        raise ConfigError(f"{where}: {name} takes a value or choices, not a range")
    return Fixed(v)


def check_knobs(knobs: list[tuple[str, Knob]], where: str) -> None:
    """Every value a knob can take must be a valid ScorerConfig value on its own."""
    for n, k in knobs:
        if isinstance(k, Fixed):
            values = [k.value]
        elif isinstance(k, Choice):
            values = list(k.choices)
        else:
            values = [k.low, k.high]
        for v in values:
            kw = {n: v}
            if n in ("w_attn", "w_mamba"):
                kw["w_mamba" if n == "w_attn" else "w_attn"] = 1.0  # judge this weight alone
            try:
                ScorerConfig(**kw)
            except ScheduleError as e:
                raise ConfigError(f"{where}: scorer.{n}: {e}") from None
    kd = dict(knobs)
    if all(isinstance(kd[n], Fixed) and kd[n].value == 0 for n in ("w_attn", "w_mamba")) and (
        not isinstance(kd["selector"], Fixed) or kd["selector"].value == "language"
    ):
        raise ConfigError(f"{where}: scorer.w_attn and scorer.w_mamba are both fixed at 0: no evidence")
