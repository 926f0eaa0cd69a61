"""The schedule figure: keep ratio vs decoder layer, with the layer kinds along depth.

Each exported schedule is a step line (layer ``i`` keeps ``keep[i]`` of the visual
tokens), coloured from fastest (dark) to slowest (light) and named by trial, latency
and score; the references are thin grey lines, one dash pattern each. A strip under
the plot colours every layer by its kind (Mamba, attention, MLP, MoE), so a cut can
be read against the layer it happens at.

:func:`schedule_figure_data` computes what is drawn; :func:`draw_schedules` draws it.
"""

from __future__ import annotations

from typing import NamedTuple

from . import style
from .context import StudyContext

__all__ = ["ScheduleLine", "LayerKind", "ScheduleFigureData", "schedule_figure_data", "draw_schedules",
           "MAX_EXPORTED_LINES"]

FIGSIZE = (12.0, 5.0)
MAX_EXPORTED_LINES = 12  # beyond this the lines are indistinguishable; the rest are listed in a note


class ScheduleLine(NamedTuple):
    label: str
    keep: tuple[float, ...]
    role: str  # "exported" or "reference"
    number: int
    reference: str | None
    latency_ms: float | None
    score: float | None


class LayerKind(NamedTuple):
    letter: str
    name: str
    count: int
    color: str


class ScheduleFigureData(NamedTuple):
    title: str
    layer_kinds: str
    kinds: tuple[LayerKind, ...]  # the kinds present, in the order Mamba, attention, MLP, MoE
    lines: tuple[ScheduleLine, ...]  # exported first (fastest first), then references
    ylabel: str
    xlabel: str
    message: str | None  # when there is no exported schedule
    note: str | None  # exported schedules left out of the plot


def schedule_figure_data(ctx: StudyContext) -> ScheduleFigureData:
    """Lines for the exported schedules (at most :data:`MAX_EXPORTED_LINES`, spread over the
    latency range) and the evaluated references; the layer-kind strip."""
    metric = ctx.metric
    exported = [r for r in ctx.rows(ctx.exported) if int(r.number) in ctx.keeps]
    shown = exported
    note = None
    if len(exported) > MAX_EXPORTED_LINES:
        idx = _thin(exported, MAX_EXPORTED_LINES)
        shown = [exported[i] for i in idx]
        left = [int(r.number) for i, r in enumerate(exported) if i not in idx]
        many = len(left) != 1
        note = (f"{len(left)} more exported schedule{'s' if many else ''} not drawn (trial{'s' if many else ''} "
                f"{', '.join(map(str, left))}); see the table")
    lines = []
    for r in shown:
        ref = r.reference if isinstance(r.reference, str) and r.reference else None
        label = (f"#{int(r.number)}" + (f" ({style.reference_name(ref)})" if ref else "")
                 + f": {r.latency_ms:.1f} ms, {r.speedup:.2f}×, {metric} {r.score:.3f}")
        lines.append(ScheduleLine(label, ctx.keeps[int(r.number)], "exported", int(r.number), ref,
                                  float(r.latency_ms), float(r.score)))
    for r in ctx.reference_rows():
        n = int(r.number)
        if n not in ctx.keeps or n in ctx.exported:
            continue
        done = r.state == "COMPLETE"
        label = f"ref. {style.reference_name(r.reference)} (#{n}" + (
            f", {r.latency_ms:.1f} ms, {metric} {r.score:.3f})" if done else f", {r.state.lower()})")
        lines.append(ScheduleLine(label, ctx.keeps[n], "reference", n, r.reference,
                                  float(r.latency_ms) if done else None, float(r.score) if done else None))
    kinds = tuple(LayerKind(k, style.KIND_NAMES[k], ctx.layer_kinds.count(k), style.KIND_COLORS[k])
                  for k in style.KIND_NAMES if k in ctx.layer_kinds)
    message = None if exported else "no exported schedule (no feasible trial)" + (
        "; the references are shown" if lines else "")
    L = len(ctx.layer_kinds)
    return ScheduleFigureData(
        title=f"{ctx.study_name}: keep ratio per layer ({L} decoder layers, {ctx.settings.num_visual} "
              "visual tokens before layer 0)",
        layer_kinds=ctx.layer_kinds, kinds=kinds, lines=tuple(lines),
        ylabel="keep ratio (fraction of visual tokens entering the layer)", xlabel="decoder layer",
        message=message, note=note)


def _thin(rows, k: int) -> list[int]:
    """``k`` indices of ``rows`` (ascending latency): the fastest, the best-scoring and every exported
    reference, then the others spread evenly over the latency range."""
    must = {0, max(range(len(rows)), key=lambda i: (rows[i].score, -i))}
    must |= {i for i, r in enumerate(rows) if isinstance(r.reference, str) and r.reference}
    must = set(sorted(must)[:k])
    rest = [i for i in range(len(rows)) if i not in must]
    free = k - len(must)
    if free > 0 and rest:
        step = (len(rest) - 1) / max(free - 1, 1)
        must |= {rest[min(len(rest) - 1, round(j * step))] for j in range(free)}
    return sorted(must)


def draw_schedules(data: ScheduleFigureData):
    """A matplotlib Figure: keep ratio vs layer on top, the layer-kind strip below."""
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    L = len(data.layer_kinds)
    with style.rc():
        fig = style.new_figure(*FIGSIZE)
        ax = fig.add_axes((0.07, 0.195, 0.55, 0.71))
        strip = fig.add_axes((0.07, 0.135, 0.55, 0.045), sharex=ax)
        x = np.arange(L + 1)
        exported = [ln for ln in data.lines if ln.role == "exported"]
        cmap = _ramp(len(exported))
        for i, ln in enumerate(exported):
            y = list(ln.keep) + [ln.keep[-1]]
            ax.plot(x, y, drawstyle="steps-post", color=cmap[i], lw=1.9, zorder=3, label=ln.label)
        for ln in data.lines:
            if ln.role == "reference":
                y = list(ln.keep) + [ln.keep[-1]]
                ax.plot(x, y, drawstyle="steps-post", color=style.GREY, lw=1.3, alpha=0.75, zorder=2,
                        ls=style.reference_linestyle(ln.reference), label=ln.label)
        # Attention layers (the other evidence kind) as faint bands through the plot.
        for i, c in enumerate(data.layer_kinds):
            if c in "*PS":  # layers with attention (P, S: beside a Mamba2)
                ax.axvspan(i, i + 1, color=style.KIND_COLORS["*"], alpha=0.08, lw=0, zorder=0)
        ax.set_xlim(0, max(L, 1))
        ax.set_ylim(0, 1.04)
        ax.set_ylabel(data.ylabel)
        ax.set_title(data.title, loc="left", fontsize=style.TITLE)
        ax.tick_params(labelbottom=False)
        if data.message:
            ax.text(0.5, 0.5, data.message, transform=ax.transAxes, ha="center", va="center", color=style.DARK,
                    bbox=dict(boxstyle="round,pad=0.6", fc="white", ec=style.BUDGET, lw=1.0))
        if data.lines:
            leg = ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=style.SMALL,
                            title="exported (fastest first, dark → light), then references",
                            title_fontsize=style.SMALL)
            leg._legend_box.align = "left"
        # Layer-kind strip.
        letters = [k.letter for k in data.kinds]
        codes = np.array([[letters.index(c) for c in data.layer_kinds]]) if L else np.zeros((1, 0))
        strip.imshow(codes, aspect="auto", cmap=ListedColormap([k.color for k in data.kinds] or ["white"]),
                     extent=(0, L, 0, 1), interpolation="nearest", vmin=-0.5, vmax=max(len(letters) - 0.5, 0.5))
        strip.set_yticks([])
        strip.grid(False)
        strip.set_xlabel(data.xlabel)
        step = 4 if L <= 64 else 8
        ticks = sorted(set(range(0, L, step)) | ({L - 1} if L else set()))
        strip.set_xticks([t + 0.5 for t in ticks], [str(t) for t in ticks])  # tick at the middle of layer t
        strip.set_ylabel("kind", rotation=0, ha="right", va="center", fontsize=style.SMALL)
        for side in ("top", "right", "left"):
            strip.spines[side].set_visible(False)
        handles = [Patch(facecolor=k.color, edgecolor="none", label=f"{k.name} ({k.count})") for k in data.kinds]
        fig.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.635, 0.1), ncol=len(handles),
                   frameon=False, fontsize=style.SMALL + 0.5, title_fontsize=style.SMALL, alignment="left",
                   title="layer kind (number of layers); attention layers also shaded above")
        if data.note:
            fig.text(0.99, 0.01, data.note, ha="right", va="bottom", fontsize=style.SMALL, color=style.GREY)
    return fig


def _ramp(n: int) -> list:
    """``n`` colours from dark blue to light green (viridis without its pale yellow end)."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    if n <= 1:
        return [cmap(0.25)]
    return [cmap(0.05 + 0.8 * i / (n - 1)) for i in range(n)]
