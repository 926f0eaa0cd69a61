"""Pareto export: the feasible non-dominated trials of a study as schedule files.

Writes, atomically, into ``runs/<study>/``:

- ``pareto/trial-XXXX.json``: one :class:`~autoprune.schedule.Schedule` (JSON v1) per
  feasible Pareto-optimal trial, with metrics (latency, speedup, score and the
  unreduced model's score, energy, latency source, CI) and provenance (study, trial,
  autoprune version, created UTC, sampler, seed, space); files of trials no longer on
  the front (after a resume) are removed;
- ``pareto.json``: the index (``autoprune.pareto/v1``);
- ``trials.csv``: one row per trial: state, reference name, objectives, constraint,
  recomputed feasibility, latency source, keep vector, scorer knobs, parameters,
  rejection/failure reasons, ``timing_noise`` (the relative spread of a latency measured
  noisily, NaN otherwise), ``extrapolated`` (predicted beyond a table's measured token range);
  the summary names such trials.

Feasibility is recomputed from each trial's stored latency and the study's budget
(``budget_ms`` fixed when the study was created): Optuna's constraints are soft,
the export is the hard filter. The front is cross-checked against Optuna's
``study.best_trials`` (which uses the stored constraints); a disagreement is reported.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from optuna.trial import TrialState

from .. import _io
from .._version import __version__
from ..schedule import Target
from .records import load_validation, read_trial
from .settings import StudySettings, load_settings

__all__ = ["ExportResult", "trials_frame", "pareto_front", "export_study", "baseline_score", "best_schedule",
           "INDEX_FORMAT"]

INDEX_FORMAT = "autoprune.pareto/v1"


@dataclass
class ExportResult:
    run_dir: Path
    pareto: list[int]
    files: list[Path]
    index_path: Path
    csv_path: Path
    frame: Any = None  # pandas.DataFrame, one row per trial
    summary: str = ""
    agrees_with_optuna: bool = True
    warnings: list[str] = field(default_factory=list)


def trials_frame(study, settings: StudySettings | None = None):
    """One row per trial (pandas DataFrame); see the module docstring for the columns."""
    s = settings or load_settings(study)
    n_obj = len(s.objectives)
    validation = load_validation(study)
    checked = (validation or {}).get("results", {})
    rows = []
    for t in study.get_trials(deepcopy=False):
        rec = read_trial(t)
        lat, res = rec.latency, rec.result or {}
        score = latency = energy = math.nan
        if t.state == TrialState.COMPLETE and t.values is not None:
            score, latency = float(t.values[0]), float(t.values[1])
            energy = float(t.values[2]) if n_obj > 2 else _num(lat.energy_j if lat else None)
        elif lat is not None:
            latency, energy = lat.latency_ms, _num(lat.energy_j)
        constraint = t.constraints.get("budget", math.nan)
        feasible = (t.state == TrialState.COMPLETE and math.isfinite(latency) and math.isfinite(score)
                    and s.budget.constraint(latency, s.budget_ms) <= 0)
        ci = res.get("ci") or [math.nan, math.nan]
        sched = rec.schedule
        val = checked.get(str(t.number))
        vs = (val or {}).get("vs_reference") or {}
        row = {
            "number": t.number,
            "state": t.state.name,
            "reference": rec.reference,
            "score": val["score"] if val else score,
            "ci_low": val["ci"][0] if val else ci[0],
            "ci_high": val["ci"][1] if val else ci[1],
            "validated": val is not None,
            "search_score": score,
            "search_ci_low": ci[0],
            "search_ci_high": ci[1],
            "vs_reference": vs.get("name"),
            "vs_reference_trial": vs.get("trial"),
            "vs_reference_delta": vs.get("delta", math.nan),
            "vs_reference_ci_low": (vs.get("ci") or [math.nan])[0],
            "vs_reference_ci_high": (vs.get("ci") or [math.nan, math.nan])[1],
            "latency_ms": latency,
            "energy_j": energy,
            "speedup": s.baseline_ms / latency if math.isfinite(latency) and latency > 0 else math.nan,
            "constraint": constraint,
            "feasible": feasible,
            "latency_source": lat.source if lat else None,
            # The prediction's interval (cost/uncertainty.py): a feasible schedule whose upper
            # bound misses the budget is marked in the report.
            "latency_low_ms": _num(lat.low_ms if lat else None),
            "latency_high_ms": _num(lat.high_ms if lat else None),
            "upper_over_budget": bool(feasible and lat is not None and lat.high_ms is not None
                                      and s.budget.constraint(lat.high_ms, s.budget_ms) > 0),
            # How noisily a measured latency was timed (its repeats' or calls' relative spread); NaN when clean.
            "timing_noise": _noise_value(rec.timing_noise),
            # Predicted beyond the token range a latency table was measured over (cost/profile_table.py).
            "extrapolated": bool(lat is not None and "extrapolated" in lat.flags),
            "gamma": _num(rec.gamma),
            "mean_keep": sched.mean_keep if sched else math.nan,
            "keep": json.dumps(list(sched.keep)) if sched else None,
            "rejected": rec.rejected,
            "raced_out_at": (rec.raced_out or {}).get("n"),
            "fail_reason": rec.fail_reason,
            "retry_of": rec.retry_of,
            "worker": rec.worker,
            "duration_s": t.duration.total_seconds() if t.duration is not None else math.nan,
            "eval_s": _num(res.get("eval_s")),
        }
        if sched is not None:
            for k, v in sched.scorer.to_dict().items():
                row[f"scorer.{k}"] = v
        for k, v in t.params.items():
            row[f"param.{k}"] = v
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        pool = df[df["validated"]] if validation is not None else df
        df["pareto"] = df["number"].isin(pareto_front(pool, n_obj))
    else:
        df = pd.DataFrame(columns=["number", "state", "reference", "score", "latency_ms", "feasible", "pareto"])
    return df


def _noise_value(noise) -> float:
    if not noise:
        return math.nan
    return _num(noise.get("repeat_spread") if noise.get("repeat_spread") is not None else noise.get("spread"))


def _num(v) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None else math.nan


def pareto_front(df, n_objectives: int = 2) -> list[int]:
    """Trial numbers of the non-dominated feasible rows (score ↑, latency ↓, energy ↓).

    Of trials with exactly equal objective values only the lowest-numbered is kept (ties broken
    by score, then latency, then trial number).
    """
    feas = df[df["feasible"]]
    cols = ["score", "latency_ms"] + (["energy_j"] if n_objectives > 2 else [])
    pts, seen = [], set()
    for r in sorted(feas.itertuples(), key=lambda r: int(r.number)):
        p = [-float(getattr(r, "score"))] + [float(getattr(r, c)) for c in cols[1:]]
        if tuple(p) not in seen:
            seen.add(tuple(p))
            pts.append((int(r.number), p))
    front = []
    for n, p in pts:
        dominated = any(all(a <= b for a, b in zip(q, p)) and any(a < b for a, b in zip(q, p)) for m, q in pts if m != n)
        if not dominated:
            front.append(n)
    return sorted(front)


def _utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def export_study(study, run_dir: str | Path) -> ExportResult:
    """Write the Pareto schedules, the index and trials.csv for ``study`` into ``run_dir``."""
    run_dir = Path(run_dir)
    s = load_settings(study)
    df = trials_frame(study, s)
    front = [int(n) for n in df.loc[df["pareto"], "number"]] if len(df) else []
    warnings = []
    validation = load_validation(study)
    optuna_front = sorted(t.number for t in study.best_trials)
    if validation is None:
        agrees = optuna_front == front
        if not agrees:
            warnings.append(f"the exported front {front} differs from Optuna's best_trials {optuna_front} "
                            "(stored constraints and the recomputed budget disagree); the export uses the latter")
    else:  # the front is taken on validation scores; every trial of the search set's front must have been checked
        missed = sorted(set(optuna_front) - set(int(n) for n in df.loc[df["validated"], "number"]))
        agrees = not missed
        if missed:
            warnings.append(f"trials {missed} of Optuna's front on the search set were not validated")
    metric = s.metric
    base_score = baseline_score(df)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    created = _utc_now()
    pareto_dir = run_dir / "pareto"
    files, entries = [], []
    for n in front:
        rec = read_trial(by_number[n])
        row = df[df["number"] == n].iloc[0]
        metrics = {
            "latency_ms": float(row["latency_ms"]),
            "speedup": float(row["speedup"]),
            metric: float(row["score"]),
            f"baseline_{metric}": base_score,
            "score": float(row["score"]),
            "metric": metric,
            "ci_low": _finite_or_none(row["ci_low"]),
            "ci_high": _finite_or_none(row["ci_high"]),
            "n": ((validation or {}).get("results", {}).get(str(n)) or rec.result or {}).get("n"),
            "validated": bool(row["validated"]),
            "search_score": float(row["search_score"]),
            "search_n": (rec.result or {}).get("n"),
            "vs_reference": None if not isinstance(row["vs_reference"], str) else {
                "name": row["vs_reference"], "trial": int(row["vs_reference_trial"]),
                "delta": float(row["vs_reference_delta"]),
                "ci": [float(row["vs_reference_ci_low"]), float(row["vs_reference_ci_high"])]},
            "energy_j": _finite_or_none(row["energy_j"]),
            "latency_source": row["latency_source"],
            "latency_interval_ms": None if not math.isfinite(row["latency_high_ms"]) else [
                float(row["latency_low_ms"]), float(row["latency_high_ms"])],
            "latency_interval_level": rec.latency.interval_level if rec.latency else None,
            "latency_upper_over_budget": bool(row["upper_over_budget"]),
            "timing_noise": None if rec.timing_noise is None else dict(rec.timing_noise),
            "baseline_ms": s.baseline_ms,
            "budget_ms": s.budget_ms,
            "gpu": s.gpu_name,
        }
        provenance = {
            "study": study.study_name,
            "trial": n,
            "autoprune": __version__,
            "created": created,
            "sampler": s.sampler,
            "seed": s.seed,
            "space": s.space.name,
            "reference": rec.reference,
            **s.provenance(),
            "latency_flags": list(rec.latency.flags) if rec.latency else [],
            "validation": None if validation is None else {k: v for k, v in validation.items() if k != "results"},
        }
        sched = rec.schedule.replace(target=Target(gpu=s.gpu_name, budget=s.budget.text), metrics=metrics,
                                     provenance=provenance)
        path = pareto_dir / f"trial-{n:04d}.json"
        sched.save(path)
        files.append(path)
        entries.append({"trial": n, "file": f"pareto/{path.name}", "score": metrics["score"],
                        "latency_ms": metrics["latency_ms"], "speedup": metrics["speedup"],
                        "energy_j": metrics["energy_j"], "mean_keep": sched.mean_keep,
                        "reference": rec.reference})
    keep_names = {p.name for p in files}
    if pareto_dir.is_dir():
        for old in pareto_dir.glob("trial-*.json"):
            if old.name not in keep_names:
                old.unlink()
    entries.sort(key=lambda e: e["latency_ms"])
    counts = df["state"].value_counts().to_dict() if len(df) else {}
    index = {
        "format": INDEX_FORMAT,
        "study": study.study_name,
        "created": created,
        "autoprune": __version__,
        "model": s.model,
        "task": s.task,
        "metric": metric,
        "objectives": list(s.objectives),
        "target": {"gpu": s.gpu_name, "budget": s.budget.text, "budget_ms": s.budget_ms,
                   "baseline_ms": s.baseline_ms, "latency_source": s.baseline_source},
        "baseline_score": base_score,
        "validation": None if validation is None else {k: v for k, v in validation.items() if k != "results"},
        "n_trials": int(len(df)),
        "n_feasible": int(df["feasible"].sum()) if len(df) else 0,
        "states": {k: int(v) for k, v in counts.items()},
        "agrees_with_optuna_best_trials": agrees,
        "provenance": s.provenance(),
        "schedules": entries,
    }
    index_path = _io.write_json(run_dir / "pareto.json", index)
    csv_path = _io.write_text(run_dir / "trials.csv", df.to_csv(index=False))
    summary = _summary(df, s, base_score, warnings)
    return ExportResult(run_dir=run_dir, pareto=front, files=files, index_path=index_path, csv_path=csv_path,
                        frame=df, summary=summary, agrees_with_optuna=agrees, warnings=warnings)


def _finite_or_none(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def baseline_score(df) -> float | None:
    """The score of the completed ``none`` reference in a :func:`trials_frame` (None without one)."""
    if not len(df):
        return None
    rows = df[(df["reference"] == "none") & (df["state"] == "COMPLETE")]
    return float(rows.iloc[0]["score"]) if len(rows) else None


def _summary(df, s: StudySettings, baseline_score, warnings) -> str:
    """A text table: the references and the feasible Pareto front, fastest first."""
    if not len(df):
        return "no trials"
    counts = df["state"].value_counts().to_dict()
    raced = int(df["raced_out_at"].notna().sum()) if "raced_out_at" in df else 0
    validated = bool(df["validated"].any())
    head = (f"{len(df)} trials: {counts.get('COMPLETE', 0)} complete ({int(df['feasible'].sum())} within "
            f"{s.budget.text} = {s.budget_ms:.2f} ms), {counts.get('PRUNED', 0) - raced} rejected over budget, "
            f"{raced} raced out, {counts.get('FAIL', 0)} failed; baseline {s.metric} "
            + (f"{baseline_score:.4f}" if baseline_score is not None else "n/a")
            + (" (scores of validated trials are validation scores)" if validated else ""))
    shown = df[df["pareto"] | (df["reference"].notna() & (df["validated"] | ~validated))].copy()
    shown = shown.sort_values(["pareto", "latency_ms"], ascending=[False, True])
    intervals = "latency_high_ms" in shown and shown["latency_high_ms"].notna().any()
    cols = ["number", "reference", "state", "score"] + (["search_score"] if validated else []) + [
        "latency_ms"] + (["latency_high_ms"] if intervals else []) + ["speedup", "mean_keep", "feasible", "pareto"]
    table = shown[cols].rename(columns={"number": "trial", "score": s.metric,
                                        "search_score": f"{s.metric} (search set)"})
    table["reference"] = table["reference"].fillna("")
    text = table.to_string(index=False, float_format=lambda v: f"{v:.4f}")
    upper = sorted(int(n) for n in shown[shown["pareto"] & shown["upper_over_budget"]]["number"]) if intervals \
        else []
    notes = [f"note: the {s.budget.text} budget holds as predicted but not over the latency interval "
             f"(latency_high_ms) of trial(s) {upper}"] if upper else []
    noisy = df[df["timing_noise"].notna()] if "timing_noise" in df else df.iloc[0:0]
    if len(noisy):
        on_front = sorted(int(n) for n in noisy[noisy["pareto"]]["number"])
        notes.append(f"note: {len(noisy)} trial(s) were timed noisily (timing_noise in trials.csv: their repeats "
                     f"disagreed after re-measuring), on the exported front: {on_front or 'none'}; their latency "
                     "and feasibility are uncertain")
    beyond = sorted(int(n) for n in shown[shown["pareto"] & shown["extrapolated"]]["number"]) \
        if "extrapolated" in shown else []
    if beyond:
        notes.append(f"note: the latency of trial(s) {beyond} on the front is extrapolated beyond the token range "
                     "its table was measured over (latency_flags); re-run `autoprune profile` over those counts")
    return "\n".join([head, text] + notes + [f"warning: {w}" for w in warnings])


def best_schedule(run_dir: str | Path) -> Path:
    """The file of the best exported schedule of a run directory: highest score in ``pareto.json``, then
    lowest latency, then lowest trial number. ConfigError when there is no export or it is empty."""
    from ..errors import ConfigError

    run_dir = Path(run_dir)
    index = _io.read_json(run_dir / "pareto.json") if (run_dir / "pareto.json").is_file() else None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise ConfigError(f"{run_dir / 'pareto.json'}: no export of autoprune search ({INDEX_FORMAT}) there")
    entries = index.get("schedules") or []
    if not entries:
        raise ConfigError(f"{run_dir / 'pareto.json'} lists no schedule (no trial met the budget)")
    best = max(entries, key=lambda e: (e["score"], -e["latency_ms"], -e["trial"]))
    return run_dir / best["file"]
