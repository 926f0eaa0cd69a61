"""The objective of a study: a trial's parameters → a schedule → its score and latency.

**Objectives**: the evaluator's score ↑ (accuracy, or fidelity for models without labels) and
the prefill latency ↓ from the latency source (predicted for an absent GPU, measured when the
study measures), optionally energy ↓. **Budget**: every finished trial carries
``trial.set_constraint("budget", latency / limit - 1)``; the export enforces it.

**A candidate that cannot meet the budget costs no accuracy evaluation.** With
``over_budget="project"`` (the default) its keep ratios are raised to the smallest power
``gamma > 1`` whose *predicted* latency meets the budget (:func:`autoprune.budget.fit_to_budget`:
full layers stay full, monotonicity is kept, each stage keeps ``r ** gamma``), then it is
evaluated. A candidate that no ``gamma`` brings under the budget (its full-keep layers alone are
too slow), or whose latency from the objective's source still misses it (a measuring study), is
*rejected*: a PRUNED trial with its latency, its constraint (> 0, so TPE learns the infeasible
region) and the reason, and no evaluation. ``over_budget="reject"`` rejects every too-slow
candidate instead. References are evaluated as they are. A trial that raises (out of memory, a
NaN score, a bad schedule) is recorded as FAIL with its reason and the study goes on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import optuna

from ..budget import Budget, fit_to_budget
from ..errors import AutopruneError, ScheduleError
from ..interfaces import LatencyEstimate, StudyInputs, TaskResult
from ..schedule import Schedule
from .identity import worker_identity
from .records import reason, record_result, record_schedule
from .settings import StudySettings
from .space import SearchSpace

__all__ = ["TrialRunner"]


class TrialRunner:
    """The objective: ``runner(trial) -> (score, latency_ms[, energy_j])``.

    Built once per process; holds the evaluator and latency sources (which keep their data,
    model and unreduced latency between trials) and the study's fixed budget (``limit_ms``,
    computed once when the study was created).
    """

    def __init__(self, *, space: SearchSpace, inputs: StudyInputs, budget: Budget, limit_ms: float,
                 baseline_ms: float, objectives: Sequence[str], over_budget: str, worker: str | None = None,
                 timer: Callable[[], float] = time.perf_counter):
        self.space = space
        self.inputs = inputs
        self.evaluator = inputs.evaluator
        self.signature = inputs.evaluator.signature
        self.num_visual = inputs.evaluator.num_visual
        self.budget = budget
        self.limit_ms = limit_ms
        self.baseline_ms = baseline_ms
        self.objectives = tuple(objectives)
        self.over_budget = over_budget
        self.worker = worker or worker_identity()
        self.timer = timer
        self.accuracy_evaluations = 0

    @classmethod
    def from_settings(cls, settings: StudySettings, inputs: StudyInputs, **kw) -> TrialRunner:
        return cls(space=settings.space, inputs=inputs, budget=settings.budget, limit_ms=settings.budget_ms,
                   baseline_ms=settings.baseline_ms, objectives=settings.objectives,
                   over_budget=settings.over_budget, **kw)

    # ------------------------------------------------------------------
    def __call__(self, trial) -> tuple[float, ...]:
        trial.set_user_attr("worker", self.worker)
        reference = trial.user_attrs.get("reference")
        try:
            schedule = self.space.sample(trial, self.signature)
        except ScheduleError as e:
            trial.set_user_attr("fail_reason", reason(f"invalid schedule: {e}"))
            raise
        return self.run(trial, schedule, reference=reference)

    def run(self, trial, schedule: Schedule, *, reference: str | None = None) -> tuple[float, ...]:
        """Evaluate ``schedule`` as ``trial`` (references skip the budget handling)."""
        try:
            schedule, est, gamma, reject = self._latency(schedule, reference)
            record_schedule(trial, schedule, est, gamma)
            constraint = self.budget.constraint(est.latency_ms, self.limit_ms)
            if reject:
                trial.set_user_attr("rejected", reject)
                trial.set_constraint("budget", constraint)
                raise optuna.TrialPruned(reject)
            t0 = self.timer()
            result = self.evaluator.evaluate(schedule)
            self.accuracy_evaluations += 1
            if not isinstance(result, TaskResult):
                raise TypeError(f"the evaluator returned {type(result).__name__}, not a TaskResult")
            record_result(trial, result, self.timer() - t0)
            values = [result.score, est.latency_ms]
            if "energy" in self.objectives:
                if est.energy_j is None or not math.isfinite(est.energy_j):
                    raise AutopruneError(f"the energy objective needs energy from the latency source, got {est.energy_j!r}")
                values.append(est.energy_j)
            if not all(math.isfinite(v) for v in values):
                raise AutopruneError(f"non-finite objective values {values}")
            trial.set_constraint("budget", constraint)
            return tuple(values)
        except optuna.TrialPruned:
            raise
        except Exception as e:
            # Recorded before Optuna marks the trial FAIL; the study goes on (catch=Exception).
            trial.set_user_attr("fail_reason", reason(f"{type(e).__name__}: {e}"))
            raise

    def _latency(self, schedule: Schedule, reference: str | None
                 ) -> tuple[Schedule, LatencyEstimate, float, str | None]:
        """(schedule to evaluate, its latency, gamma, rejection reason or None)."""
        latency, predictor = self.inputs.latency, self.inputs.predictor
        memo: dict[tuple, LatencyEstimate] = {}

        def predict(s: Schedule) -> float:
            est = predictor.estimate(s)
            memo[s.keep] = est
            return est.latency_ms

        def objective_estimate(s: Schedule) -> LatencyEstimate:
            est = memo.get(s.keep) if predictor is latency else None
            return est or latency.estimate(s)

        gamma = 1.0
        if reference is None and self.over_budget == "project":
            proj = fit_to_budget(schedule, predict, self.limit_ms, self.num_visual)
            if not proj.met:
                return schedule, objective_estimate(schedule), 1.0, (
                    f"cannot meet the budget: even every reduced layer at min_tokens gives "
                    f"{self.baseline_ms / proj.latency_ms:.2f}x ({proj.latency_ms:.2f} ms > {self.limit_ms:.2f} ms)"
                )
            gamma, schedule = proj.gamma, proj.schedule
        est = objective_estimate(schedule)
        if reference is None and not Budget.meets(est.latency_ms, self.limit_ms):
            return schedule, est, gamma, (
                f"over budget: {est.latency_ms:.2f} ms > {self.limit_ms:.2f} ms ({est.source}); not evaluated"
            )
        return schedule, est, gamma, None
