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
candidate instead. In a ``budgeted`` space every schedule, references included, is fitted both
ways (``gamma`` above or below 1) onto its target, ``target`` × the limit. Other spaces evaluate
references as they are. Every schedule is first clamped to the study's token floor
(:class:`~autoprune.accounting.TokenAccounting`), and the evaluator runs it as the accounting says.

**Racing.** With ``race`` (and an evaluator that can race), a sampled candidate is evaluated batch
by batch against the incumbent: the best trial this worker completed at an equal or lower latency.
After each batch with at least ``race_min_samples`` samples seen, the paired difference
``candidate − incumbent`` on those samples gives a one-sided bound ``mean + z·se``; below 0 the
candidate cannot catch up and is stopped: a PRUNED trial with ``raced_out`` (samples seen, its
score on them, the incumbent), its latency and constraint, at a fraction of the evaluation cost.

A trial that raises (out of memory, a NaN score, a bad schedule) is recorded as FAIL with its
reason and the study goes on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import optuna

from ..accounting import TokenAccounting
from ..budget import Budget, fit_to_budget
from ..errors import AutopruneError, ScheduleError
from ..interfaces import LatencyEstimate, RacingEvaluator, StudyInputs, TaskResult
from ..schedule import Schedule
from .correction import PredictionCorrection
from .identity import worker_identity
from .records import reason, record_result, record_schedule
from .settings import StudySettings
from .space import SearchSpace, first_cut_layer

__all__ = ["TrialRunner"]


class TrialRunner:
    """The objective: ``runner(trial) -> (score, latency_ms[, energy_j])``.

    Built once per process; holds the evaluator and latency sources (which keep their data,
    model and unreduced latency between trials) and the study's fixed budget (``limit_ms``,
    computed once when the study was created).
    """

    def __init__(self, *, space: SearchSpace, inputs: StudyInputs, budget: Budget, limit_ms: float,
                 baseline_ms: float, objectives: Sequence[str], over_budget: str, worker: str | None = None,
                 accounting: TokenAccounting | None = None, race: bool = False, race_min_samples: int = 64,
                 race_z: float = 2.5, timer: Callable[[], float] = time.perf_counter):
        self.space = space
        self.accounting = accounting or TokenAccounting(inputs.evaluated_visual, max(inputs.evaluated_visual),
                                                        space.min_tokens)
        self.race = race and isinstance(inputs.evaluator, RacingEvaluator)
        self.race_min_samples = int(race_min_samples)
        self.race_z = float(race_z)
        self._incumbents: list[tuple[float, float, int]] = []  # (latency, score, trial number) of completed trials
        self._evaluated: dict[int, Schedule] = {}  # trial number -> the schedule its evaluator ran
        self._latest_cut: dict[float, int] = {}
        self.correction = PredictionCorrection()  # used only where the predictor is not the objective's source
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
                   over_budget=settings.over_budget, accounting=settings.accounting, race=settings.race, **kw)

    # ------------------------------------------------------------------
    def __call__(self, trial) -> tuple[float, ...]:
        trial.set_user_attr("worker", self.worker)
        reference = trial.user_attrs.get("reference")
        try:
            schedule = self.space.sample(trial, self.signature)
        except ScheduleError as e:
            trial.set_user_attr("fail_reason", reason(f"invalid schedule: {e}"))
            raise
        return self.run(trial, schedule, reference=reference, target=self.space.target_of(trial.params))

    def run(self, trial, schedule: Schedule, *, reference: str | None = None, target: float = 1.0
            ) -> tuple[float, ...]:
        """Evaluate ``schedule`` as ``trial`` (references skip the budget handling, except in a
        ``budgeted`` space, where every schedule is fitted to ``target`` × the limit)."""
        try:
            schedule, est, gamma, reject = self._latency(self.accounting.clamp(schedule), reference, target)
            record_schedule(trial, schedule, est, gamma)
            if self.inputs.predictor is not self.inputs.latency:
                trial.set_user_attr("predictor_correction", self.correction.ratio)
            constraint = self.budget.constraint(est.latency_ms, self.limit_ms)
            if reject:
                trial.set_user_attr("rejected", reject)
                trial.set_constraint("budget", constraint)
                raise optuna.TrialPruned(reject)
            t0 = self.timer()
            result = self._evaluate(trial, schedule, est, reference)
            if result is None:
                trial.set_constraint("budget", constraint)
                raise optuna.TrialPruned("raced out: " + str(trial.user_attrs.get("raced_out")))
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
            self._incumbents.append((est.latency_ms, result.score, trial.number))
            self._evaluated[trial.number] = self.accounting.for_evaluation(schedule)
            return tuple(values)
        except optuna.TrialPruned:
            raise
        except Exception as e:
            # Recorded before Optuna marks the trial FAIL; the study goes on (catch=Exception).
            trial.set_user_attr("fail_reason", reason(f"{type(e).__name__}: {e}"))
            raise

    def _evaluate(self, trial, schedule: Schedule, est: LatencyEstimate, reference: str | None):
        """The evaluator's result, or None when the candidate was raced out (recorded on ``trial``)."""
        run = self.accounting.for_evaluation(schedule)
        incumbent = self._incumbent(est.latency_ms) if self.race and reference is None else None
        if incumbent is None:
            return self.evaluator.evaluate(run)
        inc_scores = self.evaluator.sample_scores(incumbent[1])
        n_min, z = self.race_min_samples, self.race_z

        def keep_going(index, scores) -> bool:
            n = int(index.numel())
            if n < n_min:
                return True
            d = scores.double() - inc_scores[index].double()
            se = float(d.std(unbiased=True)) / math.sqrt(n) if n > 1 else float("inf")
            return float(d.mean()) + z * se >= 0.0

        out = self.evaluator.race(run, keep_going)
        if isinstance(out, TaskResult):
            return out
        trial.set_user_attr("raced_out", {"n": out.n, "score": out.score, "batches": out.batches,
                                          "seconds": round(out.seconds, 4), "incumbent": incumbent[0]})
        return None

    def _incumbent(self, latency_ms: float) -> tuple[int, Schedule] | None:
        """(trial number, evaluated schedule) of the best completed trial at latency ≤ ``latency_ms``."""
        best = None
        for lat, score, number in self._incumbents:
            if lat <= latency_ms * (1 + 1e-3) and (best is None or score > best[1]):
                best = (lat, score, number)
        if best is None:
            return None
        return best[2], self._evaluated[best[2]]

    def _latest_first_cut(self, goal_ms: float, predict) -> int:
        """The latest layer at which a schedule may start cutting and still meet ``goal_ms`` (every
        later layer at the token floor); cached per goal."""
        key = round(goal_ms, 9)
        if key not in self._latest_cut:
            sig, floor = self.signature, self.accounting.floor
            best = 0
            for c in range(1, sig.num_layers):
                s = Schedule(keep=(1.0,) * c + (floor,) * (sig.num_layers - c), model=sig,
                             min_tokens=self.space.min_tokens, scorer=self.space.default_scorer())
                if not Budget.meets(predict(s), goal_ms):
                    break
                best = c
            self._latest_cut[key] = best
        return self._latest_cut[key]

    def _pull_first_cut(self, schedule: Schedule, goal_ms: float, predict) -> Schedule:
        """A sampled schedule whose first cut comes too late to meet ``goal_ms`` at any strength, with its
        first cut moved to the latest layer that can (the later stages stay where they are)."""
        keep = list(schedule.keep)
        first = schedule.first_cut
        latest = self._latest_first_cut(goal_ms, predict)
        if first is None or latest < 1 or first <= latest:
            return schedule
        for i in range(latest, first):
            keep[i] = keep[first]
        return schedule.replace(keep=tuple(keep))

    def _latency(self, schedule: Schedule, reference: str | None, target: float = 1.0
                 ) -> tuple[Schedule, LatencyEstimate, float, str | None]:
        """(schedule to evaluate, its latency, gamma, rejection reason or None).

        A measuring study (predictor ≠ the objective's source) aims the predictor at the goal
        divided by the measured/predicted ratio learned so far, and refits a fitted candidate whose
        measurement misses its goal by more than 2 % (at most twice), learning from each measurement.
        """
        latency, predictor = self.inputs.latency, self.inputs.predictor
        measuring = predictor is not latency
        memo: dict[tuple, LatencyEstimate] = {}
        floor = self.accounting.floor

        def predict(s: Schedule) -> float:
            est = predictor.estimate(s)
            memo[s.keep] = est
            return est.latency_ms

        def objective_estimate(s: Schedule) -> LatencyEstimate:
            est = memo.get(s.keep) if not measuring else None
            return est or latency.estimate(s)

        gamma = 1.0
        fit_both_ways = self.space.fits_to_budget and not schedule.is_identity  # the baseline stays the baseline
        fitted = fit_both_ways or (reference is None and self.over_budget == "project")
        goal = self.limit_ms * (target if fit_both_ways else 1.0)
        sampled = schedule
        est = None
        for attempt in range(3 if measuring and fitted else 1):
            aim = self.correction.predicted_goal(goal) if measuring else goal
            schedule = sampled
            if fit_both_ways and reference is None:
                schedule = self._pull_first_cut(schedule, aim, predict)
            if fitted:
                proj = fit_to_budget(schedule, predict, aim, self.num_visual, floor=floor,
                                     gamma_low=1e-3 if fit_both_ways else 1.0)
                if not proj.met:
                    return schedule, objective_estimate(schedule), 1.0, (
                        f"cannot meet the budget: even every reduced layer at the token floor ({floor:.2%}) gives "
                        f"{self.baseline_ms / proj.latency_ms:.2f}x ({proj.latency_ms:.2f} ms > {aim:.2f} ms"
                        + (f", the predictor's goal after its measured correction x{self.correction.ratio:.3f}"
                           if measuring else "") + ")"
                    )
                gamma, schedule = proj.gamma, proj.schedule
            too_early = self._cut_before_evidence(schedule)
            if too_early:
                return schedule, objective_estimate(schedule), gamma, too_early
            est = objective_estimate(schedule)
            if not (measuring and fitted):
                break
            predicted = memo[schedule.keep].latency_ms if schedule.keep in memo else predict(schedule)
            self.correction.observe(predicted, est.latency_ms)
            over = not Budget.meets(est.latency_ms, self.limit_ms)
            if not over and (not fit_both_ways or abs(est.latency_ms / goal - 1.0) <= 0.02):
                break
        if (reference is None or fit_both_ways) and not Budget.meets(est.latency_ms, self.limit_ms):
            return schedule, est, gamma, (
                f"over budget: {est.latency_ms:.2f} ms > {self.limit_ms:.2f} ms ({est.source}); not evaluated"
            )
        return schedule, est, gamma, None

    def _cut_before_evidence(self, schedule: Schedule) -> str | None:
        """The rejection reason when ``schedule`` cuts before its own scorer has evidence (an
        attention-only score on a pattern whose first layers are Mamba), else None."""
        first = schedule.first_cut
        if first is None:
            return None
        try:
            lo = first_cut_layer(self.signature, schedule.scorer)
        except ScheduleError as e:
            return f"cannot cut: {e}"
        if first >= lo:
            return None
        return (f"cannot meet the budget with this scorer: it first cuts at layer {first}, but with "
                f"w_attn={schedule.scorer.w_attn:g}, w_mamba={schedule.scorer.w_mamba:g} the first layer that "
                f"may cut is {lo}; not evaluated")

