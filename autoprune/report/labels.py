"""Non-overlapping text labels for points: pure geometry in points (1/72 in).

Coordinates are in points from the axes' lower-left corner, so a placement is
independent of the data's units; the caller converts data to points with the
axes' limits and size (see :func:`to_points`). A vertical cluster of points (several
trials projected onto the budget share one latency) gets a column of labels to its
left, in the points' vertical order, so that the leader lines do not cross. Every
other label goes to the first of a list of candidate positions (rings of growing
radius, preferred directions first) whose box stays inside the axes and overlaps
neither a label placed before it nor any marker (``obstacles``). Labels carry leader
lines. When no position is clear, the least-overlapping one is used and ``clear`` is
False.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

__all__ = ["Box", "LabelRequest", "Placement", "place_labels", "text_box", "to_points", "marker_box"]

CHAR_WIDTH = 0.60  # average glyph advance / font size (DejaVu Sans digits and lower case)
LINE_HEIGHT = 1.30
RADII = (7.0, 14.0, 22.0, 32.0, 44.0, 58.0, 74.0, 92.0)
# Degrees, preferred first: up-left is empty above a Pareto front (score up, latency down).
ANGLES = (135.0, 160.0, 110.0, 180.0, 90.0, 200.0, 45.0, 225.0, 0.0, 270.0, 315.0, 250.0)
COLUMN_DX = 6.0  # points: three or more requests chained this close horizontally get a column of labels
LEADER_MIN = 0.0  # points; a label placed further than this from its point gets a leader line


class Box(NamedTuple):
    x0: float
    y0: float
    x1: float
    y1: float

    def overlap(self, other: Box) -> float:
        """Area shared with ``other`` (0 when disjoint or only touching)."""
        w = min(self.x1, other.x1) - max(self.x0, other.x0)
        h = min(self.y1, other.y1) - max(self.y0, other.y0)
        return w * h if w > 0 and h > 0 else 0.0

    def inside(self, width: float, height: float, margin: float = 2.0) -> bool:
        return self.x0 >= margin and self.y0 >= margin and self.x1 <= width - margin and self.y1 <= height - margin


class LabelRequest(NamedTuple):
    key: Any
    text: str
    x: float  # points from the axes' left edge
    y: float  # points from the axes' bottom edge


class Placement(NamedTuple):
    key: Any
    text: str
    dx: float  # offset (points) from the point to the label's centre
    dy: float
    box: Box
    leader: bool
    clear: bool


def text_box(cx: float, cy: float, text: str, fontsize: float) -> Box:
    """Estimated box of a one-line label centred at (cx, cy), in points (with a 1 pt pad)."""
    w = CHAR_WIDTH * fontsize * max(1, len(text)) + 2.0
    h = LINE_HEIGHT * fontsize + 2.0
    return Box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def marker_box(x: float, y: float, size: float = 7.0) -> Box:
    """Box of a marker of ``size`` points drawn at (x, y)."""
    return Box(x - size / 2, y - size / 2, x + size / 2, y + size / 2)


def to_points(x: float, y: float, *, xlim, ylim, xlog: bool, width: float, height: float) -> tuple[float, float]:
    """Data coordinates → points from the axes' lower-left corner (linear y; x linear or log)."""
    if xlog:
        fx = (math.log(x) - math.log(xlim[0])) / (math.log(xlim[1]) - math.log(xlim[0]))
    else:
        fx = (x - xlim[0]) / (xlim[1] - xlim[0])
    fy = (y - ylim[0]) / (ylim[1] - ylim[0])
    return fx * width, fy * height


def _candidates(x: float, y: float, text: str, fontsize: float, radii, angles):
    probe = text_box(0, 0, text, fontsize)
    hw, hh = (probe.x1 - probe.x0) / 2, (probe.y1 - probe.y0) / 2
    for r in radii:
        for a in angles:
            ux, uy = math.cos(math.radians(a)), math.sin(math.radians(a))
            # Push the box away from the point by its half extent along the direction,
            # so that the nearest edge (not the centre) lies at distance ~r.
            cx = x + r * ux + (hw * math.copysign(1, ux) if abs(ux) > 0.3 else 0.0)
            cy = y + r * uy + (hh * math.copysign(1, uy) if abs(uy) > 0.3 else 0.0)
            yield r, cx - x, cy - y, text_box(cx, cy, text, fontsize)


def _clusters(requests: Sequence[LabelRequest], dx: float) -> list[list[int]]:
    """Indices of requests grouped by horizontal proximity (chains of neighbours within ``dx``)."""
    order = sorted(range(len(requests)), key=lambda i: requests[i].x)
    groups: list[list[int]] = []
    for i in order:
        if groups and requests[i].x - requests[groups[-1][-1]].x <= dx:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _column(reqs: Sequence[LabelRequest], *, width: float, height: float, fontsize: float,
            blocked: Sequence[Box], margin: float = 2.0) -> list[Placement]:
    """Labels of a vertical cluster as a right-aligned column to its left, in the points' vertical
    order (so leader lines never cross), spread just enough not to overlap, as close to the
    points as the obstacles allow."""
    order = sorted(reqs, key=lambda r: -r.y)
    line = text_box(0, 0, "x", fontsize)
    h = line.y1 - line.y0 + 1.0  # one line and a point of air
    ys = [r.y for r in order]
    for i in range(1, len(ys)):  # top-down: each label at least one line under the one above
        ys[i] = min(ys[i], ys[i - 1] - h)
    shift = sum(r.y - y for r, y in zip(order, ys)) / len(ys)  # centre the column on its points
    shift = min(shift, height - margin - h / 2 - ys[0])
    shift = max(shift, margin + h / 2 - ys[-1])
    ys = [y + shift for y in ys]
    best = None
    for gap in (4.0, 10.0, 18.0, 28.0, 40.0, 56.0, 76.0, 100.0):
        right = min(r.x for r in reqs) - gap
        boxes = []
        for r, y in zip(order, ys):
            b = text_box(0, y, r.text, fontsize)
            boxes.append(Box(right - (b.x1 - b.x0), b.y0, right, b.y1))
        cost = sum(b.overlap(o) for b in boxes for o in blocked)
        inside = all(b.inside(width, height, margin) for b in boxes)
        if best is None or (not inside, cost) < best[0]:
            best = ((not inside, cost), boxes)
        if inside and cost == 0.0:
            break
    (outside, cost), boxes = best
    clear = not outside and cost == 0.0
    return [Placement(r.key, r.text, (b.x0 + b.x1) / 2 - r.x, (b.y0 + b.y1) / 2 - r.y, b, True, clear)
            for r, b in zip(order, boxes)]


def place_labels(requests: Sequence[LabelRequest], *, width: float, height: float, fontsize: float,
                 obstacles: Sequence[Box] = (), radii: Sequence[float] = RADII,
                 angles: Sequence[float] = ANGLES) -> list[Placement]:
    """Place each request's text near its point; returns one :class:`Placement` per request, same order.

    ``width``/``height``: the axes' size in points. ``obstacles``: boxes no label may
    cover (markers, other texts). Points that stand in a vertical cluster (three or more
    within :data:`COLUMN_DX` horizontally, e.g. trials projected onto the budget) get a
    column of labels to their left, in their vertical order; every other label goes to
    the first clear candidate around its point (rings of ``radii``, ``angles`` in order of
    preference), requests earlier in the list first.
    """
    placed: dict[int, Placement] = {}
    blocked = list(obstacles)
    for group in _clusters(requests, COLUMN_DX):
        if len(group) >= 3:
            for i, pl in zip(sorted(group, key=lambda i: -requests[i].y),
                             _column([requests[i] for i in group], width=width, height=height, fontsize=fontsize,
                                     blocked=blocked)):
                placed[i] = pl
                blocked.append(pl.box)
    for i, req in enumerate(requests):
        if i in placed:
            continue
        best = None
        for r, dx, dy, box in _candidates(req.x, req.y, req.text, fontsize, radii, angles):
            inside = box.inside(width, height)
            cost = sum(box.overlap(b) for b in blocked)
            if inside and cost == 0.0:
                best = (r, dx, dy, box, True, None)
                break
            rank = (not inside, cost)
            if best is None or rank < best[5]:
                best = (r, dx, dy, box, False, rank)
        r, dx, dy, box, clear, _ = best
        placed[i] = Placement(req.key, req.text, dx, dy, box, r > LEADER_MIN, clear)
        blocked.append(box)
    return [placed[i] for i in range(len(requests))]
