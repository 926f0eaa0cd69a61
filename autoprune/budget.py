"""Latency budgets: parsing ``4x`` / ``120ms`` / ``25%`` and meeting them.

A budget is a limit on prefill latency, on the GPU the search targets:

- ``4x``   a speedup of at least 4 over the unreduced model (same inputs, same GPU);
- ``120ms`` (or ``0.12s``) an absolute latency;
- ``25%``  a latency of at most 25% of the unreduced model's.

:meth:`Budget.limit_ms` turns it into milliseconds given the unreduced latency, and
:meth:`Budget.constraint` into the value the study stores with
``trial.set_constraint("budget", ...)``: ``latency / limit - 1``, ``<= 0`` when met.

:func:`fit_to_budget` moves a schedule onto the budget along one axis that keeps it
valid (see its docstring): the search uses it to *project* a sampled candidate that
is too slow, and to calibrate the reference schedules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from .errors import BudgetError
from .schedule import Schedule

__all__ = ["Budget", "parse_budget", "Projection", "project_keep", "fit_to_budget", "FEASIBILITY_RTOL"]

# A latency counts as meeting the limit up to this relative slack (float noise only).
FEASIBILITY_RTOL = 1e-9

_BUDGET_RE = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z%]*)\s*$")
_UNITS = {"x": "speedup", "ms": "ms", "s": "ms", "%": "fraction"}


@dataclass(frozen=True)
class Budget:
    """A parsed latency budget. ``kind`` is ``speedup``, ``ms`` or ``fraction``.

    ``value`` is the speedup factor (``>= 1``), the limit in milliseconds (``> 0``) or
    the fraction of the unreduced latency (``(0, 1]``); ``text`` is the canonical form.
    """

    kind: str
    value: float
    text: str

    def __post_init__(self):
        if self.kind not in ("speedup", "ms", "fraction"):
            raise BudgetError(f"budget kind must be speedup, ms or fraction, got {self.kind!r}")
        if not isinstance(self.value, (int, float)) or isinstance(self.value, bool) or not math.isfinite(self.value):
            raise BudgetError(f"budget value must be a finite number, got {self.value!r}")
        if self.kind == "speedup" and self.value < 1:
            raise BudgetError(f"budget {self.text!r}: a speedup below 1x asks for a slowdown; use e.g. 4x")
        if self.kind == "ms" and self.value <= 0:
            raise BudgetError(f"budget {self.text!r}: a latency limit must be > 0 ms")
        if self.kind == "fraction" and not 0 < self.value <= 1:
            raise BudgetError(
                f"budget {self.text!r}: a latency fraction must be in (0%, 100%] of the unreduced latency"
            )

    @property
    def is_relative(self) -> bool:
        """True when the limit depends on the unreduced model's latency."""
        return self.kind != "ms"

    def limit_ms(self, baseline_ms: float) -> float:
        """The latency limit in ms, given the unreduced latency on the same GPU."""
        if self.kind == "speedup":
            return baseline_ms / self.value
        if self.kind == "fraction":
            return baseline_ms * self.value
        return self.value

    def constraint(self, latency_ms: float, limit_ms: float) -> float:
        """``latency / limit - 1``: ``<= 0`` when the budget is met (Optuna's convention)."""
        return latency_ms / limit_ms - 1.0

    @staticmethod
    def meets(latency_ms: float, limit_ms: float) -> bool:
        return latency_ms <= limit_ms * (1.0 + FEASIBILITY_RTOL)

    def slug(self) -> str:
        """A file-name-safe form: ``4x``, ``120ms``, ``25pct``."""
        return self.text.replace("%", "pct").replace(".", "p")


def parse_budget(text: str) -> Budget:
    """Parse ``4x``, ``3.5x``, ``120ms``, ``0.12s``, ``25%`` (case and spaces ignored).

    Raises :class:`~autoprune.errors.BudgetError` with a message naming the problem:
    an unknown unit (``4y``), a slowdown (``0.5x``), a zero or negative limit
    (``0x``, ``-3ms``), a fraction above 100% (``150%``), NaN/inf, or no number.
    """
    if not isinstance(text, str):
        raise BudgetError(f"budget must be a string such as '4x', '120ms' or '25%', got {text!r}")
    m = _BUDGET_RE.match(text)
    if not m:
        raise BudgetError(
            f"cannot parse budget {text!r}: expected a number and a unit, e.g. '4x' (speedup), "
            "'120ms' (latency) or '25%' (of the unreduced latency)"
        )
    number, unit = m.group(1), m.group(2).lower()
    if unit == "":
        raise BudgetError(f"budget {text!r} has no unit: write '{number}x' (speedup), '{number}ms' or '{number}%'")
    if unit not in _UNITS:
        raise BudgetError(
            f"budget {text!r}: unknown unit {m.group(2)!r}; use 'x' (speedup), 'ms' or 's' (latency), "
            "or '%' (of the unreduced latency)"
        )
    value = float(number)
    if not math.isfinite(value):
        raise BudgetError(f"budget {text!r} is not a finite number")
    canonical = f"{_fmt(value)}{'ms' if unit == 's' else unit}"
    if unit == "x":
        if value <= 0:
            raise BudgetError(f"budget {text!r}: a speedup must be positive (and at least 1x)")
        return Budget("speedup", value, canonical)
    if unit in ("ms", "s"):
        ms = value * 1000.0 if unit == "s" else value
        if ms <= 0:
            raise BudgetError(f"budget {text!r}: a latency limit must be > 0 ms")
        return Budget("ms", ms, f"{_fmt(ms)}ms")
    if value <= 0:
        raise BudgetError(f"budget {text!r}: a latency fraction must be > 0%")
    if value > 100:
        raise BudgetError(
            f"budget {text!r}: more than 100% of the unreduced latency is no budget; use a value in (0%, 100%]"
        )
    return Budget("fraction", value / 100.0, canonical)


def _fmt(v: float) -> str:
    return f"{v:g}"


# ----------------------------------------------------------------- projection
@dataclass(frozen=True)
class Projection:
    """Result of :func:`fit_to_budget`.

    ``schedule`` is the fitted schedule (the input when ``gamma == 1``), ``latency_ms``
    its latency, ``met`` whether it meets ``limit_ms``; ``probes`` counts latency calls.
    """

    schedule: Schedule
    gamma: float
    latency_ms: float
    met: bool
    probes: int


def project_keep(keep: tuple[float, ...], gamma: float, floor: float) -> tuple[float, ...]:
    """``keep[i] ** gamma`` for entries below 1, never below ``floor`` (entries at 1 stay 1).

    A power keeps the schedule's structure: layers at full keep stay full (so prune
    points and ``keep[0] = 1`` are preserved), the order of the entries is preserved
    (so the schedule stays monotone), and a stage that kept a fraction ``r`` of the
    previous stage now keeps ``r ** gamma``. ``floor`` (``min_tokens / V``) only avoids
    underflow: below it every entry gives ``min_tokens`` tokens anyway.
    """
    return tuple(1.0 if k >= 1.0 else max(k ** gamma, floor) for k in keep)


def fit_to_budget(
    schedule: Schedule,
    latency_ms: Callable[[Schedule], float],
    limit_ms: float,
    num_visual: int,
    *,
    gamma_low: float = 1.0,
    rtol: float = 1e-3,
    max_probes: int = 40,
    floor: float | None = None,
) -> Projection:
    """The least reduction ``keep ** gamma`` (``gamma >= gamma_low``) that meets ``limit_ms``.

    With ``gamma_low = 1`` (the search's projection) a schedule that already meets the
    budget is returned unchanged; a slower one is reduced further until its predicted
    latency meets the budget. With ``gamma_low < 1`` (calibrating references) the
    schedule may also be relaxed towards the budget. Latency must not increase with
    ``gamma`` (fewer tokens per layer never cost more); bisection on ``log gamma``
    stops when the bracket is within ``rtol`` (about a dozen latency calls).

    If even the strongest reduction of this shape (every reduced layer at
    ``min_tokens``) misses the budget, ``met`` is False and the input (``gamma = 1``) is
    returned:
    a schedule whose full-keep layers alone are too slow cannot be projected. ``floor`` (default
    ``min_tokens / num_visual``) is the smallest keep ratio a reduced layer takes
    (:class:`~autoprune.accounting.TokenAccounting` gives the study's).
    """
    floor = min(1.0, schedule.min_tokens / max(1, num_visual)) if floor is None else min(1.0, float(floor))
    below = [k for k in schedule.keep if k < 1.0]
    probes = 0

    def at(g: float) -> tuple[Schedule, float]:
        nonlocal probes
        s = schedule if g == 1.0 else schedule.replace(keep=project_keep(schedule.keep, g, floor))
        probes += 1
        return s, float(latency_ms(s))

    s_lo, t_lo = at(gamma_low)
    if Budget.meets(t_lo, limit_ms):
        return Projection(s_lo, gamma_low, t_lo, True, probes)
    if not below:
        return Projection(s_lo, gamma_low, t_lo, False, probes)
    # Above this gamma the largest reduced entry is at the floor: nothing changes any more.
    gamma_high = max(gamma_low, math.log(floor) / math.log(max(below)) if floor < 1.0 else 64.0) * (1 + 1e-6)
    s_hi, t_hi = at(gamma_high)
    if not Budget.meets(t_hi, limit_ms):
        if gamma_low != 1.0:
            s_lo, t_lo = at(1.0)
        return Projection(s_lo, 1.0, t_lo, False, probes)
    lo, hi, best = gamma_low, gamma_high, (s_hi, t_hi)
    while hi / lo > 1.0 + rtol and probes < max_probes:
        mid = math.sqrt(lo * hi)
        s_mid, t_mid = at(mid)
        if Budget.meets(t_mid, limit_ms):
            hi, best = mid, (s_mid, t_mid)
        else:
            lo = mid
    return Projection(best[0], hi, best[1], True, probes)

