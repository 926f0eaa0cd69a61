"""What a trial stores beside its parameters and values, written and read in one place.

A trial's user attributes hold its schedule as one :meth:`Schedule.to_dict` (keep ratios,
``min_tokens``, scorer, prefilter, model), its latency as one
:meth:`LatencyEstimate.to_dict`, the projection factor ``gamma``, the evaluation's result
(score, interval, samples, per-family scores) and, where they apply, the worker, the reference
name, why it was rejected or failed, and ``timing_noise`` when its latency was measured noisily
(the timer re-measured it and its repeats still disagreed: ``autoprune.profiler.timing.NOISE_FLAGS``).
Optuna's own fields (state, values, params, constraints) are not repeated here. The validation of
a study's candidates, done after its trials finished, is stored once in the study's user attributes
(``validation``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..interfaces import LatencyEstimate, TaskResult
from ..schedule import Schedule

__all__ = ["TrialRecord", "record_schedule", "record_result", "read_trial", "load_validation", "timing_noise",
           "noise_text",
           "SCHEDULE_ATTR", "LATENCY_ATTR", "RESULT_ATTR", "VALIDATION_ATTR", "NOISE_ATTR"]

SCHEDULE_ATTR = "schedule"
LATENCY_ATTR = "latency"
RESULT_ATTR = "result"
NOISE_ATTR = "timing_noise"
VALIDATION_ATTR = "validation"  # a study attribute: trials cannot be changed once finished
_MAX_REASON = 2000


def timing_noise(estimate: LatencyEstimate) -> dict | None:
    """``{"spread", "repeat_spread", "flags"}`` of a noisy measurement, None for a clean one or a prediction."""
    from ..profiler.timing import NOISE_FLAGS

    flags = [f for f in estimate.flags if f in NOISE_FLAGS]
    if not flags:
        return None
    return {"spread": estimate.spread, "repeat_spread": estimate.repeat_spread, "flags": flags}


def noise_text(noise: Mapping[str, Any]) -> str:
    """``repeats 31% apart, noisy-repeats``: a ``timing_noise`` record in a few words."""
    parts = []
    if noise.get("repeat_spread") is not None:
        parts.append(f"repeats {noise['repeat_spread']:.0%} apart")
    if noise.get("spread") is not None:
        parts.append(f"spread {noise['spread']:.0%}")
    return ", ".join(parts + list(noise.get("flags") or []))


def record_schedule(trial, schedule: Schedule, estimate: LatencyEstimate, gamma: float) -> None:
    """Store the schedule a trial evaluates (after projection), its latency, ``gamma`` and, when its
    latency was measured noisily, ``timing_noise``."""
    trial.set_user_attr(SCHEDULE_ATTR, schedule.replace(metrics=None, provenance=None, target=None).to_dict())
    trial.set_user_attr(LATENCY_ATTR, estimate.to_dict())
    trial.set_user_attr("gamma", gamma)
    noise = timing_noise(estimate)
    if noise is not None:
        trial.set_user_attr(NOISE_ATTR, noise)


def record_result(trial, result: TaskResult, eval_s: float) -> None:
    trial.set_user_attr(RESULT_ATTR, {"score": result.score, "metric": result.metric,
                                      "ci": [result.ci_low, result.ci_high], "n": result.n,
                                      "per_family": dict(result.per_family), "eval_s": round(eval_s, 4)})


def reason(text: str) -> str:
    return text[:_MAX_REASON]


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the export and the report read it (any field may be missing: ``None``)."""

    number: int
    state: str
    reference: str | None = None
    reference_fitted: bool | None = None
    schedule: Schedule | None = None
    latency: LatencyEstimate | None = None
    gamma: float | None = None
    result: Mapping[str, Any] | None = None
    rejected: str | None = None
    raced_out: Mapping[str, Any] | None = None
    fail_reason: str | None = None
    worker: str | None = None
    retry_of: int | None = None
    timing_noise: Mapping[str, Any] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def keep(self) -> tuple[float, ...] | None:
        return None if self.schedule is None else self.schedule.keep


def read_trial(t) -> TrialRecord:
    """The :class:`TrialRecord` of an Optuna ``FrozenTrial``."""
    ua = t.user_attrs
    sched = Schedule.from_dict(ua[SCHEDULE_ATTR]) if isinstance(ua.get(SCHEDULE_ATTR), Mapping) else None
    lat = LatencyEstimate.from_dict(ua[LATENCY_ATTR]) if isinstance(ua.get(LATENCY_ATTR), Mapping) else None
    return TrialRecord(
        number=t.number, state=t.state.name, reference=ua.get("reference"), reference_fitted=ua.get("reference_fitted"),
        schedule=sched, latency=lat, gamma=ua.get("gamma"), result=ua.get(RESULT_ATTR), rejected=ua.get("rejected"),
        raced_out=ua.get("raced_out"),
        fail_reason=ua.get("fail_reason"), worker=ua.get("worker"), retry_of=t.system_attrs.get("failed_trial"),
        timing_noise=ua.get(NOISE_ATTR),
        params=dict(t.params),
    )


def load_validation(study) -> dict | None:
    """The study's validation results (:mod:`autoprune.search.validate`), None when it was not validated."""
    v = study.user_attrs.get(VALIDATION_ATTR)
    return v if isinstance(v, dict) else None
