"""The search-progress figure: score of each trial and the hypervolume of the feasible front.

Left: every trial's score by trial number (feasible, over budget, references; rejected
and failed trials as ticks along the bottom and top edges) and the best feasible score
so far. Right: the hypervolume of the feasible front after each trial.

**Hypervolume** here is the area, in the (score, latency) plane, that the feasible
trials so far dominate above score 0 and below the *unreduced* latency, divided by
``1 × baseline_ms``: 0 = nothing feasible, 1 = a perfect score at zero latency. The
reference point is the unreduced latency, not the limit, because with projection
most trials sit *at* the limit: against the limit they would add no area and the
curve would ignore the score at the budget, which is what a user ships. It is
computed with a 2-D sweep (:func:`hypervolume_2d`; checked against Optuna's
``optuna._hypervolume.compute_hypervolume`` in the tests). With the energy objective
it is still the 2-D (score, latency) hypervolume.

:func:`history_figure_data` computes; :func:`draw_history` draws.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

from . import style
from .context import StudyContext

__all__ = ["hypervolume_2d", "TrialMark", "HistoryFigureData", "history_figure_data", "draw_history"]

FIGSIZE = (12.0, 4.8)


def hypervolume_2d(points: Iterable[tuple[float, float]], *, ref_score: float, ref_latency: float) -> float:
    """Area dominated by ``points`` = [(score ↑, latency ↓), ...] within score > ``ref_score``
    and latency < ``ref_latency`` (score × ms). Points outside that box add nothing."""
    pts = sorted((lat, s) for s, lat in points if lat < ref_latency and s > ref_score)
    area, best = 0.0, ref_score
    for i, (lat, s) in enumerate(pts):
        best = max(best, s)
        nxt = pts[i + 1][0] if i + 1 < len(pts) else ref_latency
        area += (nxt - lat) * (best - ref_score)
    return area


class TrialMark(NamedTuple):
    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    score: float | None
    feasible: bool
    reference: str | None
    status: str  # feasible, over budget, rejected (PRUNED), failed, unfinished (RUNNING/WAITING)


class HistoryFigureData(NamedTuple):
    title: str
    metric: str
    trials: tuple[TrialMark, ...]  # trial-number order
    best: tuple[tuple[int, float], ...]  # (trial number, best feasible score so far) from the first feasible
    hypervolume: tuple[tuple[int, float], ...]  # (trial number, normalised hypervolume after it)
    ref_point: tuple[float, float]  # (score, latency_ms) of the hypervolume's reference point
    baseline_score: float | None
    message: str | None


def _status(state: str, feasible: bool) -> str:
    if state == "COMPLETE":
        return "feasible" if feasible else "over budget"
    return {"PRUNED": "rejected", "FAIL": "failed"}.get(state, "unfinished")


def history_figure_data(ctx: StudyContext) -> HistoryFigureData:
    df = ctx.frame
    rows = sorted(df.itertuples(index=False), key=lambda r: r.number) if len(df) else []
    marks, best, hv = [], [], []
    feasible_pts: list[tuple[float, float]] = []
    top = None
    for r in rows:
        score = float(r.score) if r.state == "COMPLETE" and math.isfinite(r.score) else None
        ref = r.reference if isinstance(r.reference, str) and r.reference else None
        marks.append(TrialMark(int(r.number), r.state, score, bool(r.feasible), ref, _status(r.state, r.feasible)))
        if r.feasible:
            feasible_pts.append((float(r.score), float(r.latency_ms)))
            top = float(r.score) if top is None else max(top, float(r.score))
        if top is not None:
            best.append((int(r.number), top))
        area = hypervolume_2d(feasible_pts, ref_score=0.0, ref_latency=ctx.baseline_ms)
        hv.append((int(r.number), area / ctx.baseline_ms))
    message = None
    if not rows:
        message = "no trials"
    elif not feasible_pts:
        message = "no feasible trial yet:\nthe hypervolume stays 0"
    return HistoryFigureData(
        title=f"{ctx.study_name}: search progress ({ctx.settings.sampler} sampler)",
        metric=ctx.metric, trials=tuple(marks), best=tuple(best), hypervolume=tuple(hv),
        ref_point=(0.0, ctx.baseline_ms), baseline_score=ctx.baseline_score, message=message)


STATUS_COLORS = {"feasible": style.FRONT, "over budget": style.OVER, "rejected": "#F3B79A", "failed": style.DARK,
                 "unfinished": "#CCCCCC"}


def draw_history(data: HistoryFigureData):
    """A matplotlib Figure: score per trial with a trial-status strip (left), hypervolume (right)."""
    from matplotlib.patches import Patch

    with style.rc():
        fig = style.new_figure(*FIGSIZE)
        ax = fig.add_axes((0.065, 0.36, 0.52, 0.52))
        strip = fig.add_axes((0.065, 0.30, 0.52, 0.04), sharex=ax)
        hx = fig.add_axes((0.675, 0.30, 0.31, 0.58))
        plain = [m for m in data.trials if m.score is not None and not m.reference]
        feas = [m for m in plain if m.feasible]
        over = [m for m in plain if not m.feasible]
        if feas:
            ax.scatter([m.number for m in feas], [m.score for m in feas], s=24, c=style.FRONT, edgecolors="none",
                       alpha=0.8, label="feasible trials", zorder=3)
        if over:
            ax.scatter([m.number for m in over], [m.score for m in over], s=28, marker="X", c=style.OVER,
                       edgecolors="none", label="evaluated, over budget", zorder=3)
        for m in data.trials:
            if m.reference and m.score is not None:
                ax.scatter([m.number], [m.score], marker=style.reference_marker(m.reference), s=52,
                           c=style.REFERENCE_FACE, edgecolors="black", linewidths=0.8, zorder=4,
                           label=f"reference: {style.reference_name(m.reference)}")
        if data.best:
            ax.plot([n for n, _ in data.best], [b for _, b in data.best], drawstyle="steps-post", color=style.FRONT,
                    lw=1.4, label="best feasible so far", zorder=2)
        if data.baseline_score is not None:
            ax.axhline(data.baseline_score, color=style.BASELINE, ls=":", lw=1.3, label=f"unreduced {data.metric}")
        scores = [m.score for m in data.trials if m.score is not None]
        if scores:
            lo, hi = min(scores), max(scores)
            pad = max(hi - lo, 0.02) * 0.12
            ax.set_ylim(lo - pad, hi + pad)
        n = max([m.number for m in data.trials], default=0)
        ax.set_xlim(-0.8, n + 0.8)
        ax.set_ylabel(f"{data.metric} (higher is better)")
        ax.set_title(data.title, loc="left", fontsize=style.TITLE)
        ax.tick_params(labelbottom=False)
        # Status of every trial, evaluated or not, as one cell per trial.
        if data.trials:
            strip.bar([m.number for m in data.trials], 1.0, width=1.0, align="center",
                      color=[STATUS_COLORS[m.status] for m in data.trials], edgecolor="white", linewidth=0.4)
        strip.set_ylim(0, 1)
        strip.set_yticks([])
        strip.grid(False)
        strip.set_ylabel("status", rotation=0, ha="right", va="center", fontsize=style.SMALL)
        strip.set_xlabel("trial number (references first)")
        for side in ("top", "right", "left"):
            strip.spines[side].set_visible(False)
        # Hypervolume.
        hx.set_xlim(-0.8, n + 0.8)
        if data.hypervolume:
            hx.plot([x for x, _ in data.hypervolume], [v for _, v in data.hypervolume], drawstyle="steps-post",
                    color=style.GREEN, lw=1.8, label="hypervolume")
        top = max([v for _, v in data.hypervolume], default=0.0)
        hx.set_ylim(0, max(top * 1.15, 0.05))
        hx.set_xlabel("trial number")
        hx.set_ylabel("hypervolume (normalised)")
        hx.set_title("hypervolume of the feasible front", loc="left", fontsize=style.TITLE)
        fig.text(0.675, 0.15, f"area the feasible trials dominate above {data.metric} 0 and below\n"
                 f"the unreduced latency ({data.ref_point[1]:.0f} ms), as a fraction of 1 × {data.ref_point[1]:.0f} ms"
                 "\n(1 = perfect score at zero latency)", ha="left", va="top", fontsize=style.SMALL,
                 color=style.GREY)
        if data.message:
            hx.text(0.5, 0.55, data.message, transform=hx.transAxes, ha="center", va="center",
                    fontsize=style.SMALL, bbox=dict(boxstyle="round,pad=0.5", fc="white", ec=style.BUDGET))
        handles, labels = ax.get_legend_handles_labels()
        seen = dict(zip(labels, handles))
        counts = {}
        for m in data.trials:
            counts[m.status] = counts.get(m.status, 0) + 1
        for status, color in STATUS_COLORS.items():
            if counts.get(status):
                seen[f"status: {status} ({counts[status]})"] = Patch(facecolor=color, edgecolor="none")
        if seen:
            fig.legend(list(seen.values()), list(seen.keys()), loc="lower left", bbox_to_anchor=(0.065, 0.0),
                       ncol=3, frameon=False, fontsize=style.SMALL + 0.5)
    return fig
