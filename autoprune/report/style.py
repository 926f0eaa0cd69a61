"""Colours, markers, font sizes and the PNG writer shared by the report's figures.

Colours are the Okabe-Ito palette (distinguishable with the common colour-vision
deficiencies); categories also differ by marker shape, so the figures survive a
greyscale print. Figures are plain :class:`matplotlib.figure.Figure` objects drawn by
the Agg canvas: no pyplot, no global backend switch, no state left behind.
"""

from __future__ import annotations

from contextlib import contextmanager

# Okabe-Ito
BLUE = "#0072B2"
SKY = "#56B4E9"
ORANGE = "#E69F00"
VERMILLION = "#D55E00"
GREEN = "#009E73"
PURPLE = "#CC79A7"
YELLOW = "#F0E442"
GREY = "#7F7F7F"
DARK = "#333333"

FRONT = BLUE
OTHER = SKY
OVER = VERMILLION
REJECTED = VERMILLION
FAILED = DARK
BUDGET = VERMILLION
BASELINE = DARK
REFERENCE_FACE = ORANGE

# Reference schedules: display name and marker (all orange with a black edge).
REFERENCE_NAMES = {
    "none": "no reduction",
    "uniform": "uniform",
    "fastv": "FastV-like",
    "pyramid": "PyramidDrop-like",
    "high_to_low": "high-to-low",
    "low_to_high": "low-to-high",
    "prefilter": "uniform prefilter",
}
REFERENCE_MARKERS = {"none": "s", "uniform": "D", "fastv": "^", "pyramid": "v", "high_to_low": "P", "low_to_high": "X",
                     "prefilter": "h"}
REFERENCE_LINESTYLES = {"none": "-", "uniform": (0, (5, 2)), "fastv": (0, (1, 1.5)), "pyramid": (0, (5, 1.5, 1, 1.5)),
                        "high_to_low": (0, (3, 1, 1, 1, 1, 1)), "low_to_high": (0, (2, 2)), "prefilter": (0, (6, 1))}

# Layer kinds along depth (NemotronH pattern letters).
KIND_NAMES = {"M": "Mamba", "*": "attention", "-": "MLP", "E": "MoE", "L": "Gated DeltaNet", "C": "short conv",
              "P": "attention ∥ Mamba2", "S": "shared attention + Mamba2", "A": "Mamba1"}
# L and S, C and A share a colour: no supported family has both letters of a pair (Qwen3.5/Qwen3-Next
# L *, LFM2 C *, Zamba2 M S, Jamba A *), and the palette has no more colours that read on white.
KIND_COLORS = {"M": GREEN, "*": VERMILLION, "-": "#D9D9D9", "E": PURPLE, "L": BLUE, "C": SKY, "P": ORANGE, "S": BLUE,
               "A": SKY}

FONT = 10.0
SMALL = 8.5
TITLE = 11.0
DPI = 130

RC = {
    "font.size": FONT,
    "axes.titlesize": TITLE,
    "axes.labelsize": FONT,
    "xtick.labelsize": SMALL + 0.5,
    "ytick.labelsize": SMALL + 0.5,
    "legend.fontsize": SMALL + 0.5,
    "axes.spines.top": True,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "grid.linewidth": 0.6,
}


def _shape_of(name: str | None) -> tuple[str, str, str]:
    base, _, scorer = (name or "").partition(":")
    shape, _, at = base.partition("@")
    return shape, at, scorer


def reference_name(name: str | None) -> str:
    """``fastv@2:attn`` → ``FastV-like @2 (attention evidence)``."""
    shape, at, scorer = _shape_of(name)
    words = REFERENCE_NAMES.get(shape, shape) + (f" @{at}" if at else "")
    return words + {"attn": " (attention evidence)", "unified": " (unified score)"}.get(scorer, "")


def reference_marker(name: str | None) -> str:
    return REFERENCE_MARKERS.get(_shape_of(name)[0], "o")


def reference_linestyle(name: str | None):
    return REFERENCE_LINESTYLES.get(_shape_of(name)[0], "--")


@contextmanager
def rc():
    """The report's rc settings for the duration of a draw (restored afterwards)."""
    import matplotlib

    with matplotlib.rc_context(RC):
        yield


def new_figure(width_in: float, height_in: float):
    """A pyplot-free figure (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig) -> bytes:
    """The figure as PNG, without a timestamp (the same study gives the same bytes)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()
