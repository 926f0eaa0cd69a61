"""Small Optuna studies shaped like ``autoprune search`` studies, for the report tests.

:func:`make_study` stores trials with :func:`optuna.trial.create_trial` (no evaluator,
no latency model): what each report section reads is exactly what is put here.
"""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from autoprune.budget import parse_budget
from autoprune.cost.gpus import resolve
from autoprune.interfaces import LatencyEstimate
from autoprune.schedule import ModelSignature, Schedule, ScorerConfig
from autoprune.search.records import LATENCY_ATTR, RESULT_ATTR, SCHEDULE_ATTR
from autoprune.search.settings import STUDY_ATTR, StudySettings
from autoprune.search.space import space_from_dict

LAYER_KINDS = "M-M*M-M*M-"  # 10 layers: 5 Mamba, 2 attention, 3 MLP
SPACE_SPEC = {
    "name": "progressive", "description": "test", "min_tokens": 16,
    "schedule": {"kind": "progressive", "stages": {"low": 1, "high": 2}, "retention": {"low": 0.05, "high": 1.0}},
    "scorer": {"state_momentum": {"low": 0.0, "high": 0.9, "default": 0.5}, "w_attn": {"low": 0.0, "high": 1.0},
               "w_mamba": {"low": 0.0, "high": 1.0}, "mamba_decay": {"choices": [False, True]},
               "head_agg": {"choices": ["mean", "max"]}, "evidence_window": {"low": 1, "high": 4}, "seed": 0,
               "selector": "language"},
}
KNOB_DISTRIBUTIONS = {
    "state_momentum": FloatDistribution(0.0, 0.9), "w_attn": FloatDistribution(0.0, 1.0),
    "w_mamba": FloatDistribution(0.0, 1.0), "mamba_decay": CategoricalDistribution([False, True]),
    "head_agg": CategoricalDistribution(["mean", "max"]), "evidence_window": IntDistribution(1, 4),
}
DEFAULT_SCORER = {"state_momentum": 0.5, "w_attn": 1.0, "w_mamba": 1.0, "mamba_decay": False, "head_agg": "mean",
                  "evidence_window": 2, "selector": "language", "seed": 0}


def settings(*, budget_ms=100.0, baseline_ms=400.0, metric="accuracy", budget="4x", objectives=("score", "latency"),
             space_spec=None, layer_kinds=LAYER_KINDS, trials=1):
    """A real :class:`StudySettings` of a synthetic study on an A100."""
    return StudySettings(
        model="synthetic", task=None, metric=metric, gpu=resolve("a100"), gpu_request="a100",
        budget=parse_budget(budget), budget_ms=budget_ms, baseline_ms=baseline_ms, baseline_source="roofline",
        measure=False, objectives=tuple(objectives), over_budget="project",
        space=space_from_dict(space_spec or SPACE_SPEC, source="test"),
        signature=ModelSignature("synthetic", layer_kinds), num_visual=1024, sampler="tpe", seed=0,
        trials=max(1, trials), created="2026-11-24T12:00:00Z",
    )


def keep_for(latency, baseline_ms, n=len(LAYER_KINDS)):
    """A monotone keep vector whose mean shrinks with the latency (only its shape matters here)."""
    m = max(0.02, min(1.0, latency / baseline_ms))
    return [1.0] + [m] * (n - 1)


def trial(state="COMPLETE", *, score=None, latency=None, reference=None, knobs=None, energy=None, fail_reason=None,
          rejected=None, keep=None):
    """One trial spec for :func:`make_study`."""
    return dict(state=state, score=score, latency=latency, reference=reference, knobs=knobs, energy=energy,
                fail_reason=fail_reason, rejected=rejected, keep=keep)


def make_study(trials, *, name="fake-a100-4x", storage=None, budget_ms=100.0, baseline_ms=400.0, metric="accuracy",
               objectives=("score", "latency"), space_spec=None, layer_kinds=LAYER_KINDS):
    s = settings(budget_ms=budget_ms, baseline_ms=baseline_ms, metric=metric, objectives=objectives,
                 space_spec=space_spec, layer_kinds=layer_kinds, trials=len(trials))
    directions = ["maximize", "minimize"] + (["minimize"] if "energy" in objectives else [])
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line per test
    try:
        study = optuna.create_study(study_name=name, storage=storage, directions=directions)
    finally:
        optuna.logging.set_verbosity(level)
    study.set_user_attr(STUDY_ATTR, s.to_dict())
    searched = space_spec is None or any(isinstance(v, dict) for v in (space_spec or {}).get("scorer", {}).values())
    for spec in trials:
        ua = {"worker": "test:1:1"}
        if spec["reference"]:
            ua["reference"] = spec["reference"]
        knobs = dict(DEFAULT_SCORER, **(spec["knobs"] or {}))
        lat = spec["latency"]
        if lat is not None:
            keep = spec["keep"] or keep_for(lat, baseline_ms, len(layer_kinds))
            sched = Schedule(keep=tuple(keep), model=s.signature, min_tokens=16, scorer=ScorerConfig(**knobs))
            est = LatencyEstimate(latency_ms=lat, baseline_ms=baseline_ms, source="roofline", gpu=s.gpu_name,
                                  energy_j=spec["energy"])
            ua.update({SCHEDULE_ATTR: sched.to_dict(), LATENCY_ATTR: est.to_dict(), "gamma": 1.0})
        if spec["score"] is not None:
            ua[RESULT_ATTR] = {"score": spec["score"], "metric": metric,
                               "ci": [spec["score"] - 0.03, spec["score"] + 0.03], "n": 500, "per_family": {},
                               "eval_s": 0.1}
        if spec["fail_reason"]:
            ua["fail_reason"] = spec["fail_reason"]
        if spec["rejected"]:
            ua["rejected"] = spec["rejected"]
        params = {k: knobs[k] for k in KNOB_DISTRIBUTIONS} if searched else {}
        dists = {k: KNOB_DISTRIBUTIONS[k] for k in params}
        constraints = {"budget": lat / budget_ms - 1.0} if lat is not None else None
        state = TrialState[spec["state"]]
        values = None
        if state == TrialState.COMPLETE:
            values = [spec["score"], lat] + ([spec["energy"]] if "energy" in objectives else [])
        study.add_trial(optuna.trial.create_trial(state=state, values=values, params=params, distributions=dists,
                                                  user_attrs=ua, constraints=constraints))
    return study


def references(*, baseline_ms=400.0, budget_ms=100.0, at=None, scores=None):
    """The five references: ``none`` unreduced, the others at ``at`` ms (default: the budget)."""
    at = at or {}
    scores = {"none": 0.72, "uniform": 0.42, "fastv": 0.44, "pyramid": 0.45, "high_to_low": 0.43, **(scores or {})}
    out = [trial(score=scores["none"], latency=baseline_ms, reference="none")]
    for name in ("uniform", "fastv", "pyramid", "high_to_low"):
        out.append(trial(score=scores[name], latency=at.get(name, budget_ms * 0.999), reference=name))
    return out


