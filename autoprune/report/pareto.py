"""The Pareto figure: score vs latency (speedup on the top axis), budget, references, front.

Two panels: (a) every trial, latency on a log axis from the fastest trial to the
unreduced model; (b) a linear zoom on the exported front, where the exported
schedules carry their trial numbers (placed by :mod:`.labels`, never on top of each
other or of a marker). Feasible and over-budget trials differ by colour and shape;
rejected candidates (over budget, never evaluated, so they have a latency and no
score) are ticks along the bottom edge; references are orange markers, one shape
each, named in the legend; the unreduced score is a horizontal line.

:func:`pareto_figure_data` computes everything drawn (tests check it);
:func:`draw_pareto` draws it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from . import style
from .context import StudyContext
from .labels import Box, LabelRequest, marker_box, place_labels, to_points

__all__ = ["Point", "Label", "Panel", "ParetoFigureData", "pareto_figure_data", "draw_pareto"]

FIGSIZE = (13.0, 6.2)
# left, bottom, width, height (figure fraction); fixed so that label placement knows the axes' size
AXES = ((0.06, 0.245, 0.395, 0.595), (0.545, 0.245, 0.435, 0.595))
LABEL_FONT = style.SMALL
SPEEDUP_CANDIDATES = (1, 1.25, 1.5, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 25, 32, 40, 50, 64, 100)
RUG = 0.05  # rejected candidates: ticks in the bottom 5% of the axes
MARKER_PT = 10.0  # the largest marker (a reference, s=95 pt²) is ~10 pt across: labels keep off it


class Point(NamedTuple):
    number: int
    latency_ms: float
    speedup: float
    score: float | None  # None: rejected before evaluation
    reference: str | None
    feasible: bool
    exported: bool


class Label(NamedTuple):
    number: int
    text: str
    dx: float  # offset in points from the point to the label centre
    dy: float
    leader: bool
    clear: bool  # False when no non-overlapping place was found
    box: Box  # estimated text box, points from the panel's lower-left corner


class Panel(NamedTuple):
    title: str
    xscale: str  # "log" or "linear"
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    speedup_ticks: tuple[float, ...]
    latency_ticks: tuple[float, ...]  # log panels: round latencies (ms) at least ~30 points apart; () = automatic
    labels: tuple[Label, ...]
    message: str | None  # drawn in the middle of an empty panel


class ParetoFigureData(NamedTuple):
    title: str
    metric: str
    xlabel: str
    ylabel: str
    top_label: str
    baseline_ms: float
    budget_ms: float
    budget_label: str
    baseline_score: float | None
    baseline_label: str | None
    front: tuple[Point, ...]  # exported (feasible, non-dominated), ascending latency
    staircase: tuple[tuple[float, float], ...]  # (latency, best score of the front up to it): the line drawn
    others: tuple[Point, ...]  # feasible, not exported, not references
    over_budget: tuple[Point, ...]  # evaluated, over the budget, not references
    rejected: tuple[Point, ...]  # not evaluated (latency only)
    references: tuple[Point, ...]  # evaluated references, search order
    n_failed: int
    panels: tuple[Panel, Panel]
    footnote: str | None


# ---------------------------------------------------------------- compute
def _point(r, exported: set[int]) -> Point:
    score = float(r.score) if isinstance(r.score, float) and math.isfinite(r.score) else None
    ref = r.reference if isinstance(r.reference, str) and r.reference else None
    return Point(int(r.number), float(r.latency_ms), float(r.speedup), score, ref, bool(r.feasible),
                 int(r.number) in exported)


def _pad(lo: float, hi: float, frac: float, *, min_span: float) -> tuple[float, float]:
    span = max(hi - lo, min_span)
    mid = (lo + hi) / 2
    lo, hi = min(lo, mid - span / 2), max(hi, mid + span / 2)
    return lo - frac * span, hi + frac * span


def _log_ticks(xlim, width: float, min_gap: float = 30.0) -> tuple[float, ...]:
    """1, 2, 3, 4, 5, 7 × 10^k inside ``xlim`` (log axis), dropping those closer than ``min_gap`` points."""
    out, last = [], None
    k = math.floor(math.log10(xlim[0]))
    while 10 ** k <= xlim[1]:
        for m in (1, 2, 3, 4, 5, 7):
            v = m * 10.0 ** k
            if not xlim[0] <= v <= xlim[1]:
                continue
            x, _ = to_points(v, 0.0, xlim=xlim, ylim=(0, 1), xlog=True, width=width, height=1)
            if last is None or x - last >= min_gap:
                out.append(float(f"{v:.6g}"))
                last = x
        k += 1
    return tuple(out)


def _speedup_ticks(baseline_ms: float, xlim, xscale: str, width: float) -> tuple[float, ...]:
    """Round speedups inside the panel, at least ~45 points apart."""
    lo_s, hi_s = baseline_ms / xlim[1], baseline_ms / xlim[0]
    out, last = [], None
    for s in SPEEDUP_CANDIDATES:
        if not lo_s <= s <= hi_s:
            continue
        x, _ = to_points(baseline_ms / s, 0.0, xlim=xlim, ylim=(0, 1), xlog=xscale == "log", width=width, height=1)
        if last is None or abs(x - last) >= 45:
            out.append(float(s))
            last = x
    return tuple(out)


def _label_text(p: Point) -> str:
    return f"#{p.number} {style.reference_name(p.reference)}" if p.reference else f"#{p.number}"


def pareto_figure_data(ctx: StudyContext) -> ParetoFigureData:
    """What the Pareto figure shows for ``ctx`` (see the module docstring)."""
    df = ctx.frame
    exported = set(ctx.exported)
    rows = list(df.itertuples(index=False)) if len(df) else []
    complete = [_point(r, exported) for r in rows if r.state == "COMPLETE" and math.isfinite(r.latency_ms)]
    by_number = {p.number: p for p in complete}
    front = tuple(by_number[n] for n in ctx.exported if n in by_number)
    references = tuple(p for p in (by_number.get(int(r.number)) for r in ctx.reference_rows()) if p is not None)
    others = tuple(p for p in complete if p.feasible and not p.exported and p.reference is None)
    over = tuple(p for p in complete if not p.feasible and p.reference is None)
    rejected = tuple(
        Point(int(r.number), float(r.latency_ms), float(r.speedup), None, None, False, False)
        for r in rows if r.state == "PRUNED" and isinstance(r.latency_ms, float) and math.isfinite(r.latency_ms))
    n_failed = ctx.counts.get("FAIL", 0)

    metric = ctx.metric
    budget_label = f"budget {ctx.budget_text}: ≤ {ctx.budget_ms:.1f} ms (shaded: over)"
    baseline_label = (f"unreduced {metric} {ctx.baseline_score:.3f} ({ctx.baseline_ms:.1f} ms)"
                      if ctx.baseline_score is not None else None)

    panel_a = _panel_all(ctx, complete, rejected)
    panel_b = _panel_front(ctx, front, complete, rejected)
    staircase, best = [], -math.inf
    for p in front:
        best = max(best, p.score)
        staircase.append((p.latency_ms, best))
    foot = []
    if len(ctx.settings.objectives) > 2:
        foot.append("exported = non-dominated in score, latency and energy: a point under the line is there for "
                    "its energy")
    if n_failed:
        foot.append(f"{n_failed} failed trial{'s' if n_failed != 1 else ''} (no result) not shown")
    if ctx.baseline_score is None:
        foot.append("no unreduced ('none') reference completed: no baseline line")
    title = (f"{ctx.study_name}: {metric} vs {ctx.latency_label.split(' (')[0]} — "
             f"budget {ctx.budget_text}, {ctx.n_trials} trials, {len(front)} exported")
    return ParetoFigureData(
        title=title, metric=metric, xlabel=f"{ctx.latency_label} [ms]", ylabel=f"{metric} (higher is better)",
        top_label="speedup over the unreduced model (×)", baseline_ms=ctx.baseline_ms, budget_ms=ctx.budget_ms,
        budget_label=budget_label, baseline_score=ctx.baseline_score, baseline_label=baseline_label, front=front,
        staircase=tuple(staircase),
        others=others, over_budget=over, rejected=rejected, references=references, n_failed=n_failed,
        panels=(panel_a, panel_b), footnote="; ".join(foot) or None,
    )


def _axes_points(i: int) -> tuple[float, float]:
    rect = AXES[i]
    return rect[2] * FIGSIZE[0] * 72, rect[3] * FIGSIZE[1] * 72


def _ylim(scores, baseline_score, *, rug: bool) -> tuple[float, float]:
    vals = [s for s in scores if s is not None] + ([baseline_score] if baseline_score is not None else [])
    if not vals:
        return 0.0, 1.0
    lo, hi = _pad(min(vals), max(vals), 0.08, min_span=0.02)
    if rug:  # room for the rejected ticks along the bottom
        lo -= (hi - lo) * RUG / (1 - RUG)
    return lo, hi


def _panel_all(ctx: StudyContext, complete, rejected) -> Panel:
    lat = [p.latency_ms for p in complete] + [p.latency_ms for p in rejected] + [ctx.budget_ms, ctx.baseline_ms]
    lat = [x for x in lat if x > 0]
    lo, hi = min(lat), max(lat)
    xlim = (lo / 1.15, hi * 1.15)
    ylim = _ylim([p.score for p in complete], ctx.baseline_score, rug=bool(rejected))
    w, _ = _axes_points(0)
    msg = None if complete or rejected else "no completed trial to plot"
    n = ctx.n_trials
    return Panel(title=f"(a) all {n} trial{'s' if n != 1 else ''}", xscale="log", xlim=xlim, ylim=ylim,
                 speedup_ticks=_speedup_ticks(ctx.baseline_ms, xlim, "log", w), latency_ticks=_log_ticks(xlim, w),
                 labels=(), message=msg)


def _panel_front(ctx: StudyContext, front, complete, rejected) -> Panel:
    w, h = _axes_points(1)
    if not front:
        why = ("no feasible trial: no evaluated schedule\n"
               f"meets the budget (≤ {ctx.budget_ms:.1f} ms),\nso nothing was exported")
        xlim = (ctx.budget_ms * 0.5, ctx.budget_ms * 1.1)
        return Panel(title="(b) exported Pareto schedules", xscale="linear", xlim=xlim, ylim=(0.0, 1.0),
                     speedup_ticks=_speedup_ticks(ctx.baseline_ms, xlim, "linear", w), latency_ticks=(), labels=(),
                     message=why)
    lat = [p.latency_ms for p in front]
    lo, hi = min(lat), max(max(lat), ctx.budget_ms)
    xlim = _pad(lo, hi, 0.08, min_span=0.1 * ctx.budget_ms)
    xlim = (max(xlim[0], 1e-9), xlim[1])
    shown = [p for p in complete if xlim[0] <= p.latency_ms <= xlim[1]]
    ylim = _ylim([p.score for p in shown], None, rug=False)
    lo_y, hi_y = ylim
    # Head-room above the highest point for labels (the space up-left of a front is empty).
    ylim = (lo_y, hi_y + 0.12 * (hi_y - lo_y))
    pts = {p.number: to_points(p.latency_ms, p.score, xlim=xlim, ylim=ylim, xlog=False, width=w, height=h)
           for p in shown}
    obstacles = [marker_box(x, y, MARKER_PT) for x, y in pts.values()]
    for p in rejected:  # their ticks along the bottom edge
        if xlim[0] <= p.latency_ms <= xlim[1]:
            x, _ = to_points(p.latency_ms, ylim[0], xlim=xlim, ylim=ylim, xlog=False, width=w, height=h)
            obstacles.append(marker_box(x, RUG * h / 2, RUG * h))
    # Label the highest-scoring point first: it has the most room up-left; the rest fan out below it.
    order = sorted(front, key=lambda p: (-p.score, p.latency_ms))
    reqs = [LabelRequest(p.number, _label_text(p), *pts[p.number]) for p in order]
    placed = {pl.key: pl for pl in place_labels(reqs, width=w, height=h, fontsize=LABEL_FONT, obstacles=obstacles)}
    labels = tuple(Label(p.number, pl.text, pl.dx, pl.dy, pl.leader, pl.clear, pl.box)
                   for p, pl in ((p, placed[p.number]) for p in front))
    return Panel(title=f"(b) the {len(front)} exported Pareto schedule{'s' if len(front) != 1 else ''} "
                       "(trial numbers)", xscale="linear", xlim=xlim, ylim=ylim,
                 speedup_ticks=_speedup_ticks(ctx.baseline_ms, xlim, "linear", w), latency_ticks=(), labels=labels,
                 message=None)


# ------------------------------------------------------------------- draw
def draw_pareto(data: ParetoFigureData):
    """A matplotlib Figure of ``data`` (two panels, shared legend below them)."""
    from matplotlib.lines import Line2D

    with style.rc():
        fig = style.new_figure(*FIGSIZE)
        axes = [fig.add_axes(rect) for rect in AXES]
        for ax, panel in zip(axes, data.panels):
            _draw_panel(ax, data, panel)
        axes[0].set_ylabel(data.ylabel)
        fig.suptitle(data.title, fontsize=style.TITLE + 1, y=0.985)
        handles = _legend_handles(data, Line2D)
        fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.005), ncol=4, frameon=False,
                   fontsize=style.SMALL + 0.5, handletextpad=0.5, columnspacing=1.4)
        if data.footnote:
            fig.text(0.99, 0.135, data.footnote, ha="right", va="bottom", fontsize=style.SMALL, color=style.GREY)
    return fig


def _draw_panel(ax, data: ParetoFigureData, panel: Panel) -> None:
    ax.set_xscale(panel.xscale)
    ax.set_xlim(*panel.xlim)
    ax.set_ylim(*panel.ylim)
    ax.set_xlabel(data.xlabel)
    ax.set_title(panel.title, loc="left", pad=34, fontsize=style.TITLE)
    if panel.xscale == "log":
        _plain_log_ticks(ax, panel.latency_ticks)
    ax.axvspan(data.budget_ms, panel.xlim[1] * 10, color=style.BUDGET, alpha=0.06, lw=0, zorder=0)
    ax.axvline(data.budget_ms, color=style.BUDGET, ls="--", lw=1.3, zorder=1, label="budget")
    if data.baseline_score is not None:
        ax.axhline(data.baseline_score, color=style.BASELINE, ls=":", lw=1.3, zorder=1, label="unreduced")
    top = ax.secondary_xaxis("top", functions=(_inverse(data.baseline_ms), _inverse(data.baseline_ms)))
    top.set_xticks(list(panel.speedup_ticks))
    top.set_xticklabels([f"{s:g}×" for s in panel.speedup_ticks])
    top.set_xlabel(data.top_label, fontsize=style.SMALL + 0.5)
    top.minorticks_off()
    if panel.message:
        ax.text(0.5, 0.5, panel.message, transform=ax.transAxes, ha="center", va="center",
                fontsize=style.FONT, color=style.DARK,
                bbox=dict(boxstyle="round,pad=0.6", fc="white", ec=style.BUDGET, lw=1.0))
    # Trials, back to front.
    _scatter(ax, data.others, marker="o", s=22, c=style.OTHER, edgecolors="none", alpha=0.75, label="other feasible")
    _scatter(ax, data.over_budget, marker="X", s=30, c=style.OVER, edgecolors="none", alpha=0.85, label="over budget")
    if data.rejected:
        ax.scatter([p.latency_ms for p in data.rejected], [RUG / 2] * len(data.rejected), marker="|", s=90,
                   c=style.REJECTED, lw=1.4, transform=ax.get_xaxis_transform(), zorder=3, clip_on=True,
                   label="rejected")
    if data.front:
        xs = [x for x, _ in data.staircase] + [data.budget_ms]
        ys = [y for _, y in data.staircase] + [data.staircase[-1][1]]
        ax.plot(xs, ys, drawstyle="steps-post", color=style.FRONT, lw=1.4, alpha=0.8, zorder=4, label="front")
        # On top of the (larger) reference markers: an exported reference shows as a blue dot in its marker.
        _scatter(ax, data.front, marker="o", s=40, c=style.FRONT, edgecolors="white", linewidths=0.7, zorder=6,
                 label="exported")
    for p in data.references:
        ax.scatter([p.latency_ms], [p.score], marker=style.reference_marker(p.reference), s=95,
                   c=style.REFERENCE_FACE, edgecolors="black", linewidths=0.9, zorder=5,
                   label=f"reference: {style.reference_name(p.reference)}")
    by_number = {p.number: p for p in data.front}
    for lab in panel.labels:
        p = by_number[lab.number]
        arrow = dict(arrowstyle="-", color=style.GREY, lw=0.7, shrinkA=0, shrinkB=4) if lab.leader else None
        ax.annotate(lab.text, xy=(p.latency_ms, p.score), xytext=(lab.dx, lab.dy), textcoords="offset points",
                    ha="center", va="center", fontsize=LABEL_FONT, color=style.FRONT, zorder=7, arrowprops=arrow,
                    bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.8))


def _inverse(c: float):
    """x -> c / x for the speedup axis (its own inverse), safe at x = 0."""
    import numpy as np

    def f(x):
        x = np.asarray(x, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(x > 0, c / np.where(x > 0, x, 1.0), np.inf)

    return f


def _scatter(ax, pts, *, label, **kw):
    if pts:
        ax.scatter([p.latency_ms for p in pts], [p.score for p in pts], label=label, **kw)


def _plain_log_ticks(ax, ticks) -> None:
    """Round latencies as plain numbers (not 10^k) on a log axis."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.xaxis.set_major_locator(FixedLocator(list(ticks)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _legend_handles(data: ParetoFigureData, Line2D) -> list:
    h = []
    if data.front:
        h.append(Line2D([], [], marker="o", color=style.FRONT, mfc=style.FRONT, mec="white", ms=7, lw=1.4,
                        label=f"exported Pareto schedules ({len(data.front)})"))
    if data.others:
        h.append(Line2D([], [], marker="o", ls="", mfc=style.OTHER, mec="none", ms=6,
                        label=f"other feasible trials ({len(data.others)})"))
    if data.over_budget:
        h.append(Line2D([], [], marker="X", ls="", mfc=style.OVER, mec="none", ms=7,
                        label=f"evaluated, over budget ({len(data.over_budget)})"))
    if data.rejected:
        h.append(Line2D([], [], marker="|", ls="", mec=style.REJECTED, ms=11, mew=1.4,
                        label=f"rejected before evaluation ({len(data.rejected)}; latency only)"))
    h.append(Line2D([], [], color=style.BUDGET, ls="--", lw=1.3, label=data.budget_label))
    if data.baseline_label:
        h.append(Line2D([], [], color=style.BASELINE, ls=":", lw=1.3, label=data.baseline_label))
    for p in data.references:
        h.append(Line2D([], [], marker=style.reference_marker(p.reference), ls="", mfc=style.REFERENCE_FACE,
                        mec="black", mew=0.9, ms=9,
                        label=f"reference: {style.reference_name(p.reference)} (#{p.number}"
                              + (", exported)" if p.exported else ")")))
    return h
