"""Uncertainty of a latency prediction: an interval from its source's validation residuals.

For every prediction source (``table``, ``few-shot``, ``roofline``) the validation of the
latency model against measured prefills (``benchmarks/latency_model_offline.py``) leaves
residuals ``r = log(measured / predicted)``, one per measured schedule. The interval of a new
prediction ``p`` at level ``1 − α`` is split-conformal on those residuals' magnitudes::

    [p · e^(−q), p · e^(q)],   q = |r|_(k),  k = ⌈(n+1)·(1 − α)⌉

(the k-th smallest |r|, 1-based): for a new schedule exchangeable with the validated ones it
covers the measurement with probability ≥ 1 − α. Symmetric rather than from the signed
quantiles: the validation runs differ in their bias (GPU, run, token count), and a signed
interval fitted on one run's bias misses the next run's (seen leave-one-run-out, see the
benchmark). With too few residuals for ``k ≤ n`` the largest is widened by half.

The residuals shipped with the package are ``autoprune/data/profiles/residuals.json``
(``autoprune.residuals/v1``), written by the offline validation from measured data; a source
without residuals (``roofline-uncalibrated``) gets :data:`DEFAULT_HALF_WIDTH`, a documented guess.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .. import _io
from ..errors import ConfigError

__all__ = ["FORMAT", "LEVEL", "DEFAULT_HALF_WIDTH", "Interval", "ResidualSet", "conformal_bounds", "load_residuals",
           "residual"]

FORMAT = "autoprune.residuals/v1"
LEVEL = 0.9
# No validation at all (default efficiencies on an unmeasured shape): ±40 % in log terms, a
# guess from the uncalibrated roofline's errors seen on the H100 (they reach 30-40 %).
DEFAULT_HALF_WIDTH = math.log(1.4)


def residual(measured_ms: float, predicted_ms: float) -> float:
    """``log(measured / predicted)``: > 0 when the prediction was too fast."""
    if not (measured_ms > 0 and predicted_ms > 0):
        raise ConfigError(f"residual needs positive times, got {measured_ms!r} and {predicted_ms!r}")
    return math.log(measured_ms / predicted_ms)


def conformal_bounds(residuals: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """``(−q, q)``: log-offsets of the split-conformal interval (see the module docstring)."""
    if not 0 < level < 1:
        raise ConfigError(f"interval level must be in (0, 1), got {level!r}")
    a = sorted(abs(float(x)) for x in residuals)
    n = len(a)
    if n == 0:
        raise ConfigError("conformal_bounds needs at least one residual")
    k = math.ceil((n + 1) * level)
    q = a[k - 1] if k <= n else 1.5 * a[-1]
    return -q, q


@dataclass(frozen=True)
class Interval:
    """The interval of one source: ``bounds(p) = (p·e^low, p·e^high)`` at ``level``; ``n``
    residuals behind it (0: the documented default), ``origin`` where they come from."""

    source: str
    level: float
    low: float
    high: float
    n: int
    origin: str = ""

    def __post_init__(self):
        if not (self.low <= 0 <= self.high) or not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ConfigError(f"Interval of {self.source!r}: need finite low <= 0 <= high, got {self.low}, {self.high}")

    def bounds(self, predicted_ms: float) -> tuple[float, float]:
        return predicted_ms * math.exp(self.low), predicted_ms * math.exp(self.high)

    def to_dict(self) -> dict:
        return {"source": self.source, "level": self.level, "low_rel": math.exp(self.low) - 1,
                "high_rel": math.exp(self.high) - 1, "n": self.n, "origin": self.origin}


@dataclass(frozen=True)
class ResidualSet:
    """Validation residuals per prediction source (``log(measured/predicted)`` of latency)."""

    residuals: Mapping[str, tuple[float, ...]]
    origin: str = "<memory>"
    notes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        from ..interfaces import LATENCY_SOURCES

        out = {}
        for src, rs in self.residuals.items():
            if src not in LATENCY_SOURCES:
                raise ConfigError(f"{self.origin}: unknown latency source {src!r}; sources: {LATENCY_SOURCES}")
            vals = tuple(float(x) for x in rs)
            if not all(math.isfinite(x) for x in vals):
                raise ConfigError(f"{self.origin}: residuals of {src!r} must be finite numbers")
            out[src] = vals
        object.__setattr__(self, "residuals", out)
        object.__setattr__(self, "notes", dict(self.notes))

    def with_residuals(self, source: str, extra: Sequence[float]) -> ResidualSet:
        """This set with ``extra`` residuals of ``source`` added (e.g. the quick prefills)."""
        r = dict(self.residuals)
        r[source] = tuple(r.get(source, ())) + tuple(float(x) for x in extra)
        return ResidualSet(residuals=r, origin=self.origin, notes=self.notes)

    def interval(self, source: str, level: float = LEVEL) -> Interval:
        rs = self.residuals.get(source, ())
        if not rs:
            return Interval(source=source, level=level, low=-DEFAULT_HALF_WIDTH, high=DEFAULT_HALF_WIDTH, n=0,
                            origin="default (no validation residuals)")
        lo, hi = conformal_bounds(rs, level)
        return Interval(source=source, level=level, low=lo, high=hi, n=len(rs), origin=self.origin)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "residuals": {k: list(v) for k, v in self.residuals.items()},
                "notes": dict(self.notes)}

    @classmethod
    def from_dict(cls, d: Mapping, origin: str = "<dict>") -> ResidualSet:
        if not isinstance(d, Mapping) or d.get("format") != FORMAT:
            raise ConfigError(f"{origin}: format is {d.get('format') if isinstance(d, Mapping) else None!r}; "
                              f"this autoprune reads {FORMAT!r}")
        unknown = sorted(set(d) - {"format", "residuals", "notes"})
        if unknown:
            raise ConfigError(f"{origin}: unknown key(s) {unknown}")
        return cls(residuals=d.get("residuals") or {}, notes=d.get("notes") or {}, origin=origin)

    def save(self, path) -> Path:
        return _io.write_json(path, self.to_dict())


def _default_path() -> Path:
    return _io.data_dir("profiles") / "residuals.json"


@lru_cache(maxsize=4)
def _load(path: str) -> ResidualSet:
    p = Path(path)
    if not p.is_file():
        return ResidualSet(residuals={}, origin=f"{p} (missing)")
    return ResidualSet.from_dict(_io.read_json(p), origin=str(p))


def load_residuals(path: str | Path | None = None) -> ResidualSet:
    """The residuals shipped with the package, or those of ``path``."""
    return _load(str(Path(path) if path is not None else _default_path()))
