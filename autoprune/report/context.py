"""The study, read once for every figure and table of a report.

:func:`load_context` turns an Optuna study made by ``autoprune search`` into a
:class:`StudyContext`: its :class:`~autoprune.search.settings.StudySettings`, the trials
frame of :func:`autoprune.search.export.trials_frame` (one row per trial: state, reference,
score, latency, speedup, feasibility, Pareto membership, keep vector, …), the
unreduced model's score, trial counts, times, and the words the figures use for the
metric, the GPU and the latency source.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..search.export import baseline_score, trials_frame
from ..search.records import load_validation, read_trial
from ..search.references import reference_names
from ..search.settings import StudySettings, load_settings

__all__ = ["StudyContext", "load_context", "latency_phrase", "LATENCY_SOURCE_WORDS"]

# latency source -> (predicted|measured, how)
LATENCY_SOURCE_WORDS = {
    "roofline": ("predicted", "roofline"),
    "roofline-uncalibrated": ("predicted", "uncalibrated roofline"),
    "table": ("predicted", "measured per-layer table"),
    "measured": ("measured", "CUDA events"),
    "cpu-measured": ("measured", "wall clock"),
}


@dataclass(frozen=True)
class StudyContext:
    """Everything a report section needs; built by :func:`load_context`.

    ``frame``: the pandas DataFrame of :func:`autoprune.search.export.trials_frame` (one row
    per trial). ``exported``: trial numbers of the feasible Pareto front, ascending by
    latency (what :func:`autoprune.search.export.export_study` writes). ``baseline_score``:
    the score of the ``none`` reference (None when it is missing or did not complete).
    """

    study_name: str
    settings: StudySettings
    frame: Any
    metric: str
    budget_text: str
    budget_ms: float
    baseline_ms: float
    baseline_score: float | None
    gpu_name: str
    gpu_label: str
    latency_sources: tuple[str, ...]
    latency_label: str
    layer_kinds: str
    counts: dict
    exported: tuple[int, ...]
    keeps: dict  # trial number -> tuple of keep ratios (trials that recorded one)
    directions: tuple[str, ...] = ()
    created: str | None = None
    first_start: datetime | None = None
    last_complete: datetime | None = None
    trial_seconds: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)
    validation: dict | None = None  # the study's validation (autoprune.search.validate), None if not validated

    # -------------------------------------------------------------- helpers
    @property
    def n_trials(self) -> int:
        return int(len(self.frame))

    @property
    def n_feasible(self) -> int:
        return int(self.frame["feasible"].sum()) if len(self.frame) else 0

    def rows(self, numbers) -> list:
        """Frame rows (itertuples) of the given trial numbers, in that order."""
        by = {int(r.number): r for r in self.frame.itertuples(index=False)}
        return [by[int(n)] for n in numbers]

    def reference_rows(self) -> list:
        """Rows of reference trials, in the search's reference order."""
        if not len(self.frame):
            return []
        refs = [r for r in self.frame.itertuples(index=False) if isinstance(r.reference, str) and r.reference]
        order = {name: i for i, name in enumerate(reference_names())}

        def key(r):
            shape, _, at = r.reference.partition(":")[0].partition("@")
            return order.get(shape, len(order)), int(at) if at.isdigit() else -1, r.reference, r.number

        return sorted(refs, key=key)


def latency_phrase(sources, gpu_label: str) -> str:
    """``predicted latency on A100-SXM4-80GB (roofline)``; several sources are listed."""
    words = [LATENCY_SOURCE_WORDS.get(s, ("", s)) for s in sources]
    kinds = sorted({k for k, _ in words if k})
    hows = [h for _, h in words]
    kind = kinds[0] + " " if len(kinds) == 1 else ""
    how = f" ({' / '.join(hows)})" if hows else ""
    return f"{kind}latency on {gpu_label}{how}"


def _gpu_label(gpu_name: str) -> str:
    return "CPU" if gpu_name.lower() == "cpu" else gpu_name.upper()


def load_context(study, run_dir: str | Path | None = None) -> StudyContext:
    """Read ``study`` (an Optuna study made by ``autoprune search``) once.

    Raises :class:`~autoprune.errors.ConfigError` when the study was not made by
    ``autoprune search`` (no settings, or settings of another format). ``run_dir`` (optional) is where the export
    wrote ``pareto.json``: a disagreement between that file and the study's front
    (an export older than the last trials) becomes a note.
    """
    settings = load_settings(study)
    df = trials_frame(study, settings)
    trials = study.get_trials(deepcopy=False)
    counts = {state: 0 for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    if len(df):
        front = df[df["pareto"]].sort_values(["latency_ms", "number"])
        exported = tuple(int(n) for n in front["number"])
        sources = tuple(sorted({s for s in df["latency_source"].dropna().unique() if isinstance(s, str)}))
    else:
        exported, sources = (), ()
    if not sources:
        sources = (settings.baseline_source,)
    gpu_name = settings.gpu_name
    gpu_label = _gpu_label(gpu_name)
    keeps = {}
    for t in trials:
        rec = read_trial(t)
        if rec.keep is not None:
            keeps[t.number] = rec.keep
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    seconds = sum(t.duration.total_seconds() for t in trials if t.duration is not None)
    notes = _export_notes(run_dir, exported) if run_dir is not None else ()
    base_score = baseline_score(df) if len(df) else None
    if base_score is not None and not math.isfinite(base_score):
        base_score = None
    return StudyContext(
        study_name=study.study_name,
        settings=settings,
        frame=df,
        metric=settings.metric,
        budget_text=settings.budget.text,
        budget_ms=settings.budget_ms,
        baseline_ms=settings.baseline_ms,
        baseline_score=base_score,
        gpu_name=gpu_name,
        gpu_label=gpu_label,
        latency_sources=sources,
        latency_label=latency_phrase(sources, gpu_label),
        layer_kinds=settings.signature.layer_kinds,
        counts=counts,
        exported=exported,
        keeps=keeps,
        directions=tuple(d.name.lower() for d in study.directions),
        created=settings.created,
        first_start=min(starts) if starts else None,
        last_complete=max(ends) if ends else None,
        trial_seconds=seconds,
        notes=notes,
        validation=load_validation(study),
    )


def _export_notes(run_dir, exported) -> tuple[str, ...]:
    path = Path(run_dir) / "pareto.json"
    if not path.is_file():
        return (f"{path.name} is missing: the study has not been exported yet (autoprune search exports at its "
                "end); the front shown here is computed from the study itself",)
    try:
        index = json.loads(path.read_text())
        on_disk = sorted(int(e["trial"]) for e in index.get("schedules", []))
    except (OSError, ValueError, KeyError, TypeError) as e:
        return (f"{path.name} could not be read ({e}); the front shown here is computed from the study itself",)
    if on_disk != sorted(exported):
        return (f"{path.name} lists trials {on_disk} but the study's feasible front is now {sorted(exported)} "
                "(trials finished after the export); the figures and tables show the study's front — "
                "`autoprune search --resume` re-exports",)
    return ()
