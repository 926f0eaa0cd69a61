"""Validated export: the search set ranks trials, a disjoint validation set decides what is exported.

After the trials, the candidates — every feasible trial on the search set's front, the near-ties
(a feasible trial whose search score is within the search set's 95 % interval of the best score at
its latency or lower), and the references (every fitted reference within that interval of the
best reference, and the best of each shape) — are evaluated on the validation set, at most
``max_sampled`` sampled trials and ``max_references`` references, best search score first. Each
result is stored in the study's user attribute ``validation`` (trials cannot be changed once
finished): score, 95 % interval, per family and per length, and the paired difference to the best
validated reference at an equal or lower latency with its own paired interval. The export then
takes the front on validation scores (:func:`autoprune.search.export.trials_frame`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tqdm.auto import tqdm

from ..interfaces import Evaluator, PairedEvaluator
from .export import pareto_front, trials_frame
from .records import VALIDATION_ATTR, read_trial
from .settings import StudySettings

__all__ = ["select_candidates", "validate_study"]


def _half_ci(row) -> float:
    lo, hi = float(row.ci_low), float(row.ci_high)
    return (hi - lo) / 2 if math.isfinite(lo) and math.isfinite(hi) else 0.0


def select_candidates(df, *, max_sampled: int = 10, max_references: int = 6, n_objectives: int = 2,
                      always: tuple[int, ...] = ()) -> list[int]:
    """Trial numbers to validate (see the module docstring), deterministic: by search score, then
    latency, then trial number. ``always`` (Optuna's own front on the search set, which keeps
    every trial of a tie that :func:`pareto_front` collapses to its lowest number) is added
    uncapped, so the export can check that nothing Optuna ranks best went unvalidated."""
    done = df[(df["state"] == "COMPLETE") & df["feasible"]]
    rows = sorted(done.itertuples(index=False), key=lambda r: (-float(r.score), float(r.latency_ms), int(r.number)))
    refs = [r for r in rows if isinstance(r.reference, str) and r.reference]
    sampled = [r for r in rows if not (isinstance(r.reference, str) and r.reference)]

    def near(r, pool) -> bool:
        better = [o for o in pool if float(o.latency_ms) <= float(r.latency_ms) * (1 + 1e-9)]
        if not better:
            return True
        top = max(better, key=lambda o: float(o.score))
        return float(r.score) >= float(top.score) - _half_ci(top)

    front = set(pareto_front(done, n_objectives))
    ordered = [r.number for r in sampled if r.number in front] + [r.number for r in sampled
                                                                   if r.number not in front and near(r, sampled)]
    pick = ordered[:max(max_sampled, len([n for n in ordered if n in front]))]
    ref_pick, families = [], set()
    for r in refs:
        family = r.reference.split("@")[0].split(":")[0]
        if near(r, refs) or family not in families:
            ref_pick.append(r.number)
        families.add(family)
    pick += ref_pick[:max_references]
    none = df[(df["reference"] == "none") & (df["state"] == "COMPLETE")]
    pick += [int(n) for n in none["number"]]
    complete = set(int(n) for n in df.loc[df["state"] == "COMPLETE", "number"])
    pick += [int(n) for n in always if int(n) in complete]
    return sorted(dict.fromkeys(int(n) for n in pick))


def _result_dict(r) -> dict:
    return {"score": r.score, "ci": [r.ci_low, r.ci_high], "n": r.n, "per_family": dict(r.per_family),
            "per_length": dict(r.per_length)}


def validate_study(study, settings: StudySettings, validator: Evaluator, *, max_sampled: int = 10,
                   max_references: int = 6, log: Callable[[str], None] = print,
                   show_progress: bool = False) -> dict:
    """Evaluate the candidates on ``validator`` and store the results in the study (see the module
    docstring); ``show_progress``: a progress bar over the candidates (minutes on the demo)."""
    df = trials_frame(study, settings)
    numbers = select_candidates(df, max_sampled=max_sampled, max_references=max_references,
                                n_objectives=len(settings.objectives),
                                always=tuple(t.number for t in study.best_trials))
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    acc = settings.accounting
    schedules, results = {}, {}
    log(f"validation: {len(numbers)} candidate(s) on a disjoint validation set")
    recs = {n: read_trial(by_number[n]) for n in numbers}
    with tqdm(total=len(numbers), desc="validation", unit="candidate", disable=not show_progress) as bar:
        for n in numbers:
            schedules[n] = acc.for_evaluation(recs[n].schedule)
            bar.set_postfix_str(f"trial {n}" + (f" ({recs[n].reference})" if recs[n].reference else ""))
            results[n] = validator.evaluate(schedules[n])
            bar.update()
    lat = {n: float(df.loc[df["number"] == n, "latency_ms"].iloc[0]) for n in numbers}
    refs = {n for n in numbers if isinstance(recs[n].reference, str) and recs[n].reference != "none"}
    out = {}
    for n in numbers:
        entry = _result_dict(results[n])
        fair = [m for m in refs if m != n and lat[m] <= lat[n] * (1 + 1e-3)]
        if fair and isinstance(validator, PairedEvaluator):
            best = max(fair, key=lambda m: (results[m].score, -lat[m], -m))
            d, lo, hi = validator.paired_delta(schedules[n], schedules[best])
            entry["vs_reference"] = {"trial": best, "name": recs[best].reference,
                                     "delta": d, "ci": [lo, hi]}
        out[str(n)] = entry
    first = results[numbers[0]] if numbers else None
    stored = {"n": first.n if first else 0, "visual_tokens": sorted(int(k) for k in (first.per_length if first else {})),
              "metric": validator.metric, "candidates": numbers, "results": out}
    study.set_user_attr(VALIDATION_ATTR, stored)
    return stored
