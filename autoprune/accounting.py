"""One token accounting for a study: the evaluator, the latency model, the budget check and the
projection agree on the share of visual tokens each layer keeps.

A study evaluates samples with ``evaluated`` visual tokens (several lengths when the evaluation
set mixes video lengths) while its latency is predicted or measured for a prefill with ``served``
visual tokens (the latency layout: e.g. 16,384 for the demo's long-video shape). ``keep[i]``
means the same *share* at every length only when no floor binds differently, so the accounting
puts one floor on every keep ratio below 1::

    floor = max(min_tokens / served, 1 / min(evaluated))

``min_tokens`` is the floor at the served length (the schedule's own ``min_tokens``); the second
term keeps at least one token of the shortest evaluated sample. A schedule is clamped to the floor
(:meth:`TokenAccounting.clamp`) before its latency is taken or it is evaluated, and the evaluator
runs it with ``min_tokens = 1`` (:meth:`TokenAccounting.for_evaluation`): with every keep at or
above the floor, neither ``min_tokens`` binds, and the tokens a layer keeps at any length are
``ceil(keep · V)``, the same share to within one token of the evaluated sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError
from .schedule import Schedule

__all__ = ["TokenAccounting"]


@dataclass(frozen=True)
class TokenAccounting:
    """``evaluated``: visual tokens of the evaluated samples (each length once); ``served``: visual
    tokens of the prefill whose latency is predicted; ``min_tokens``: the floor at the served length."""

    evaluated: tuple[int, ...]
    served: int
    min_tokens: int

    def __post_init__(self):
        ev = tuple(sorted(set(self.evaluated)))
        if not ev or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in ev):
            raise ConfigError(f"evaluated visual-token counts must be positive integers, got {self.evaluated!r}")
        object.__setattr__(self, "evaluated", ev)
        for name in ("served", "min_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"TokenAccounting.{name} must be an integer >= 1, got {v!r}")

    @property
    def floor(self) -> float:
        """The smallest keep ratio below 1 a schedule may have (see the module docstring)."""
        return max(self.min_tokens / self.served, 1.0 / self.evaluated[0])

    def floor_reason(self) -> str:
        """Why the floor is what it is, in words (for errors and reports)."""
        if self.min_tokens / self.served >= 1.0 / self.evaluated[0]:
            return (f"min_tokens = {self.min_tokens} of the {self.served} visual tokens of the latency layout "
                    f"({self.floor:.2%})")
        return (f"one token of the shortest evaluated sample's {self.evaluated[0]} visual tokens ({self.floor:.2%}; "
                f"min_tokens = {self.min_tokens} of {self.served} would allow {self.min_tokens / self.served:.2%})")

    def clamp(self, schedule: Schedule) -> Schedule:
        """``schedule`` with every keep ratio below 1 raised to the floor (monotonicity is kept)."""
        f = self.floor
        keep = tuple(k if k >= 1.0 or k >= f else f for k in schedule.keep)
        out = schedule if keep == schedule.keep else schedule.replace(keep=keep)
        return out if out.min_tokens == self.min_tokens else out.replace(min_tokens=self.min_tokens)

    def for_evaluation(self, schedule: Schedule) -> Schedule:
        """The clamped schedule as the evaluator runs it (``min_tokens = 1``: the floor is in the keep ratios)."""
        return self.clamp(schedule).replace(min_tokens=1)

    def shares(self, schedule: Schedule, visual: int) -> list[float]:
        """Share of the visual tokens entering each layer at ``visual`` tokens, as the accounting runs it."""
        s = self.clamp(schedule)
        if visual in self.evaluated:
            s = s.replace(min_tokens=1)
        return [n / visual for n in s.tokens_per_layer(visual)]

    def agree(self, schedule: Schedule) -> bool:
        """Whether the shares at every evaluated length and at the served length agree to within one
        token of each evaluated length (what the accounting promises)."""
        served = self.shares(schedule, self.served)
        for v in self.evaluated:
            if any(abs(a - b) > 1.0 / v + 1e-12 for a, b in zip(self.shares(schedule, v), served)):
                return False
        return True

    def min_keep_tokens(self, visual: int) -> int:
        return max(1, math.ceil(self.floor * visual - 1e-9))
