"""How far a measuring study's latency predictor is off, learned from the measurements it makes.

A measuring study fits each candidate to the budget with a cheap predictor (a table or a
roofline) and then measures it. Where the predictor is off — a real checkpoint's MoE routing,
a torch fallback kernel, launch overheads the roofline does not model — every fitted candidate
lands on the wrong side of the budget (seen on NemotronH Omni on an H200: schedules predicted at
2x measured 1.78-1.90x, and 18 of 24 trials were rejected). :class:`PredictionCorrection` keeps
the ratio measured / predicted of the schedules measured so far, and the objective aims its
predictor at ``goal / ratio`` instead of ``goal``.
"""

from __future__ import annotations

import math
import statistics
from collections import deque

__all__ = ["PredictionCorrection"]


class PredictionCorrection:
    """The running ratio ``measured / predicted`` of a measuring study's reduced schedules.

    ``ratio`` is the median of the last ``window`` ratios (1.0 before any), so one noisy
    measurement moves it little and a predictor that drifts with the schedules the sampler
    visits is followed. ``predicted_goal(goal_ms)`` is what the predictor must meet for the
    measurement to meet ``goal_ms``.
    """

    def __init__(self, window: int = 7):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self._ratios: deque[float] = deque(maxlen=int(window))

    def observe(self, predicted_ms: float, measured_ms: float) -> None:
        if predicted_ms > 0 and measured_ms > 0 and math.isfinite(predicted_ms) and math.isfinite(measured_ms):
            self._ratios.append(measured_ms / predicted_ms)

    @property
    def ratio(self) -> float:
        return statistics.median(self._ratios) if self._ratios else 1.0

    @property
    def observations(self) -> int:
        return len(self._ratios)

    def predicted_goal(self, goal_ms: float) -> float:
        return goal_ms / self.ratio
