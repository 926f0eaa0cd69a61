"""The report's tables: header facts, exported schedules vs references at equal latency,
and the references themselves. Rows are typed tuples computed from the study's trials
(via :class:`~.context.StudyContext`); :mod:`.document` formats them.

**Equal-latency rule.** For each exported schedule, the comparison is the best-scoring
evaluated reference (other than the unreduced ``none``, which is the Δ column) whose
latency is within ``±tolerance`` (default 5%) of the schedule's. When no reference is
that close, the row names the nearest one and its latency gap, and claims no gain.
References are not interpolated: each reference family is evaluated at one operating
point (fitted to the budget), so a line between two families, or towards the unreduced
model, would be an accuracy nobody measured.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import NamedTuple

from . import style
from .context import StudyContext

__all__ = ["RefMatch", "provenance_facts", "ComparisonRow", "ReferenceRow", "GapRow", "comparison_rows", "reference_rows",
           "validation_rows", "header_facts", "comparison_rule", "DEFAULT_TOLERANCE"]

DEFAULT_TOLERANCE = 0.05


class RefMatch(NamedTuple):
    name: str
    number: int
    score: float
    latency_ms: float
    latency_gap: float  # reference latency / schedule latency - 1
    gain: float  # schedule score - reference score


class ComparisonRow(NamedTuple):
    number: int
    reference: str | None  # the exported schedule is itself this reference
    score: float
    ci_low: float | None
    ci_high: float | None
    delta_vs_unreduced: float | None
    latency_ms: float
    speedup: float
    energy_j: float | None
    latency_source: str
    gpu: str
    mean_keep: float | None
    matches: tuple[RefMatch, ...]  # references within the tolerance, best score first
    nearest: RefMatch | None  # the nearest reference in latency when none is within the tolerance
    paired: tuple[str, int, float, float, float] | None = None  # validation: (reference, trial, Δ, low, high)


class ReferenceRow(NamedTuple):
    name: str
    number: int
    state: str
    score: float | None
    delta_vs_unreduced: float | None
    latency_ms: float | None
    speedup: float | None
    energy_j: float | None
    feasible: bool
    exported: bool
    note: str  # why it has no score (rejected / failed), or ""


def _f(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def comparison_rule(tolerance: float = DEFAULT_TOLERANCE, metric: str = "accuracy") -> str:
    return (f"Each exported schedule is compared with the best-scoring reference whose latency is within "
            f"±{tolerance:.0%} of its own (the unreduced model is the Δ column, not a competitor). When no "
            "reference is that close, the row names the nearest one and its latency gap and claims no gain: "
            "references are not interpolated, because each reference family is evaluated at one operating point "
            "(fitted to the budget), so a line between two families, or towards the unreduced model, would be a "
            f"{metric} nobody measured. The gap is the reference's latency relative to the schedule's (+2% = the "
            "reference is 2% slower). A gain smaller than the confidence intervals is not a difference.")


def comparison_rows(ctx: StudyContext, tolerance: float = DEFAULT_TOLERANCE) -> list[ComparisonRow]:
    """One row per exported schedule (ascending latency) with its equal-latency references."""
    refs = [r for r in ctx.reference_rows() if r.state == "COMPLETE" and r.reference != "none"
            and _f(r.latency_ms) and _f(r.score) is not None and (ctx.validation is None or bool(r.validated))]
    out = []
    for r in ctx.rows(ctx.exported):
        lat, score = float(r.latency_ms), float(r.score)
        cands = [RefMatch(c.reference, int(c.number), float(c.score), float(c.latency_ms),
                          float(c.latency_ms) / lat - 1.0, score - float(c.score))
                 for c in refs if int(c.number) != int(r.number)]
        within = sorted((m for m in cands if abs(m.latency_gap) <= tolerance + 1e-12),
                        key=lambda m: (-m.score, abs(m.latency_gap), m.number))
        nearest = None if within or not cands else min(cands, key=lambda m: (abs(m.latency_gap), -m.score))
        base = ctx.baseline_score
        ref = r.reference if isinstance(r.reference, str) and r.reference else None
        out.append(ComparisonRow(
            number=int(r.number), reference=ref, score=score, ci_low=_f(r.ci_low), ci_high=_f(r.ci_high),
            delta_vs_unreduced=(score - base) if base is not None else None, latency_ms=lat,
            speedup=float(r.speedup), energy_j=_f(r.energy_j), latency_source=str(r.latency_source),
            gpu=ctx.gpu_label, mean_keep=_f(r.mean_keep), matches=tuple(within), nearest=nearest,
            paired=(str(r.vs_reference), int(r.vs_reference_trial), float(r.vs_reference_delta),
                    float(r.vs_reference_ci_low), float(r.vs_reference_ci_high))
            if ctx.validation is not None and isinstance(r.vs_reference, str) else None))
    return out


class GapRow(NamedTuple):
    number: int
    reference: str | None
    search_score: float
    search_ci: tuple[float, float]
    validation_score: float
    validation_ci: tuple[float, float]
    gap: float  # search - validation
    exported: bool


def validation_rows(ctx: StudyContext) -> list[GapRow]:
    """Every validated trial: its search-set and validation scores and the gap (best validation first)."""
    if ctx.validation is None or not ctx.n_trials:
        return []
    exported = set(ctx.exported)
    rows = ctx.frame[ctx.frame["validated"]].sort_values(["score", "latency_ms", "number"],
                                                         ascending=[False, True, True])
    return [GapRow(int(r.number), r.reference if isinstance(r.reference, str) else None, float(r.search_score),
                   (float(r.search_ci_low), float(r.search_ci_high)), float(r.score),
                   (float(r.ci_low), float(r.ci_high)), float(r.search_score) - float(r.score),
                   int(r.number) in exported) for r in rows.itertuples(index=False)]


def reference_rows(ctx: StudyContext) -> list[ReferenceRow]:
    out = []
    exported = set(ctx.exported)
    for r in ctx.reference_rows():
        done = r.state == "COMPLETE"
        score = _f(r.score) if done else None
        note = ""
        if isinstance(r.rejected, str) and r.rejected:
            note = f"rejected: {r.rejected}"
        elif isinstance(r.fail_reason, str) and r.fail_reason:
            note = f"failed: {r.fail_reason}"
        elif done and not r.feasible:
            note = "over budget"
        base = ctx.baseline_score
        out.append(ReferenceRow(
            name=r.reference, number=int(r.number), state=r.state, score=score,
            delta_vs_unreduced=(score - base) if score is not None and base is not None else None,
            latency_ms=_f(r.latency_ms), speedup=_f(r.speedup), energy_j=_f(r.energy_j), feasible=bool(r.feasible),
            exported=int(r.number) in exported, note=note))
    return out


def _when(dt: datetime | None) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S") if dt is not None else "?"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _scores_fact(ctx: StudyContext) -> str:
    v = ctx.validation
    if v is None:
        return ("search set only (no validation set): the exported scores are the ones the trials were ranked on, "
                "optimistic for the best of many")
    lengths = ", ".join(str(x) for x in v.get("visual_tokens", []))
    return (f"validation set of {v.get('n', '?')} held-out samples ({lengths} visual tokens): the exported front, "
            f"every score shown for a validated trial and the comparison come from it; {len(v.get('candidates', []))} "
            "candidates were validated")


def header_facts(ctx: StudyContext) -> list[tuple[str, str]]:
    """(label, value) pairs for the report's header."""
    s = ctx.settings
    c = ctx.counts
    layer_kinds = ctx.layer_kinds
    kinds = ", ".join(f"{layer_kinds.count(k)} {name}" for k, name in style.KIND_NAMES.items() if k in layer_kinds)
    model = f"{s.model} ({len(layer_kinds)} layers: {kinds}; {s.num_visual} visual tokens)"
    task = s.task
    trials = (f"{ctx.n_trials}: {c.get('COMPLETE', 0)} complete ({ctx.n_feasible} within the budget), "
              f"{c.get('PRUNED', 0)} pruned (rejected over budget, not evaluated), {c.get('FAIL', 0)} failed")
    if c.get("RUNNING") or c.get("WAITING"):
        trials += f"; {c.get('RUNNING', 0)} running, {c.get('WAITING', 0)} waiting (the study is not finished)"
    planned = s.trials
    if planned and planned != ctx.n_trials:
        trials += f" (of {planned} planned)"
    if ctx.first_start is not None:
        span = ((ctx.last_complete or ctx.first_start) - ctx.first_start).total_seconds()
        time = (f"created {ctx.created or '?'} (UTC); trials ran {_when(ctx.first_start)} → "
                f"{_when(ctx.last_complete)} (local time), {_duration(span)} wall, "
                f"{_duration(ctx.trial_seconds)} in trials")
    else:
        time = f"created {ctx.created or '?'} (UTC); no trial has run"
    baseline = (f"{ctx.baseline_score:.4f} {ctx.metric}" if ctx.baseline_score is not None
                else "unknown (no completed 'none' reference)")
    objectives = ", ".join(s.objectives)
    return [
        ("study", ctx.study_name),
        ("model", model),
        ("task / metric", f"{task} / {ctx.metric}" if task and task != ctx.metric else ctx.metric),
        ("GPU", f"{ctx.gpu_label}; {ctx.latency_label}"),
        ("budget", f"{ctx.budget_text}: ≤ {ctx.budget_ms:.2f} ms (unreduced {ctx.baseline_ms:.2f} ms)"),
        ("unreduced score", baseline),
        ("scores", _scores_fact(ctx)),
        ("search", f"sampler {s.sampler}, seed {s.seed}, space {s.space.name}, "
                   f"over-budget candidates {s.over_budget}ed, objectives {objectives}"),
        ("trials", trials),
        ("time", time),
        ("autoprune", s.autoprune),
        *provenance_facts(s.provenance()),
    ]


def _flat(value, limit: int = 12) -> str:
    """A nested mapping as ``key value; key value`` (nested keys joined by '.'), for one header cell."""
    if not isinstance(value, dict):
        return str(value)
    parts = []
    for k, v in value.items():
        if v is None or v == {} or v == []:
            continue
        parts.append(f"{k}: {_flat(v) if isinstance(v, dict) else (', '.join(map(str, v)) if isinstance(v, list) else v)}")
    return "; ".join(parts[:limit]) + ("; …" if len(parts) > limit else "")


def _table_facts(lat: dict) -> list[tuple[str, str]]:
    """The measured table a prediction read (path, found or given, token range) and, when the
    unreduced prefill lies outside that range, the warning that it was extrapolated."""
    out = []
    table = lat.get("table")
    if isinstance(table, dict):
        ranges = ", ".join(f"{k} {lo}..{hi}" for k, (lo, hi) in (table.get("measured_tokens") or {}).items())
        how = "found in the table folders" if table.get("found") else "given"
        out.append(("latency table", f"{table.get('path')} ({how}); measured tokens: {ranges or '?'}"))
    if lat.get("calibration_table"):
        out.append(("calibration table", str(lat["calibration_table"])))
    if lat.get("extrapolated"):
        beyond = "; ".join(lat.get("beyond_measured") or ()) or "some terms outside the measured range"
        out.append(("latency warning", f"predictions extrapolated beyond the measured table: {beyond}"))
    return out


def provenance_facts(p: dict) -> list[tuple[str, str]]:
    """The provenance block of every artifact (:meth:`StudySettings.provenance`) as header facts:
    what the latency is for, the token accounting, the evaluated data, versions, commit, command."""
    env = p.get("environment") or {}
    t = p.get("tokens") or {}
    tokens = (f"evaluated visual tokens {', '.join(map(str, t.get('evaluated_visual', [])))}; served (latency) "
              f"{t.get('served_visual')}; min_tokens {t.get('min_tokens')} → floor {float(t.get('floor', 0)):.2%} "
              f"({t.get('floor_reason')})") if t else "—"
    versions = ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items() if v)
    return [
        ("latency is for", _flat(p.get("latency") or {}) or "—"),
        *_table_facts(p.get("latency") or {}),
        ("token accounting", tokens),
        ("evaluated data", _flat(p.get("evaluation") or {}) or "—"),
        ("versions", versions or "—"),
        ("commit", env.get("git_commit") or "— (an installed package, not a checkout)"),
        ("command", f"`{env['command']}` on {env.get('host', '?')}" if env.get("command") else "—"),
    ]
