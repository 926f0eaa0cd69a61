"""Label placement (autoprune/report/labels.py): pure geometry, no matplotlib."""

from autoprune.report.labels import Box, LabelRequest, marker_box, place_labels, text_box, to_points


def test_boxes_overlap_only_when_they_share_area():
    a = Box(0, 0, 10, 10)
    assert a.overlap(Box(5, 5, 15, 15)) == 25
    assert a.overlap(Box(10, 0, 20, 10)) == 0  # touching is not overlapping
    assert a.overlap(Box(20, 20, 30, 30)) == 0


def test_a_crowded_vertical_cluster_gets_labels_that_overlap_nothing():
    # Seven points within a few points of each other, at the right edge (the budget line of a study).
    pts = [(380.0, 40.0 + 12 * i) for i in range(7)]
    obstacles = [marker_box(x, y, 9.0) for x, y in pts]
    reqs = [LabelRequest(i, f"#{10 + i}", x, y) for i, (x, y) in enumerate(pts)]
    placed = place_labels(reqs, width=400, height=260, fontsize=8.5, obstacles=obstacles)
    assert [p.key for p in placed] == list(range(7))
    assert all(p.clear for p in placed)
    for i, p in enumerate(placed):
        assert p.box.inside(400, 260)
        assert all(p.box.overlap(o) == 0 for o in obstacles)
        assert all(p.box.overlap(q.box) == 0 for q in placed[i + 1:])


def test_labels_prefer_the_empty_space_up_left_of_a_front():
    (p,) = place_labels([LabelRequest("a", "#1", 200, 100)], width=400, height=260, fontsize=9)
    assert p.dx < 0 and p.dy > 0 and p.leader


def test_when_nothing_is_clear_the_least_overlapping_place_is_used_and_flagged():
    wall = [Box(-1000, -1000, 1000, 1000)]
    (p,) = place_labels([LabelRequest("a", "#1", 50, 50)], width=100, height=100, fontsize=9, obstacles=wall)
    assert not p.clear


def test_data_to_points_handles_linear_and_log_axes():
    assert to_points(5, 0.5, xlim=(0, 10), ylim=(0, 1), xlog=False, width=100, height=50) == (50, 25)
    x, _ = to_points(100, 0, xlim=(10, 1000), ylim=(0, 1), xlog=True, width=100, height=50)
    assert abs(x - 50) < 1e-9


def test_text_box_grows_with_the_text():
    short, long = text_box(0, 0, "#1", 9), text_box(0, 0, "#12 PyramidDrop-like", 9)
    assert (long.x1 - long.x0) > 5 * (short.x1 - short.x0) / 2


def test_a_vertical_cluster_is_labelled_in_a_column_in_the_points_order_so_leaders_do_not_cross():
    ys = [200.0, 196.0, 190.0, 187.0, 175.0, 160.0]  # closer than a line of text
    reqs = [LabelRequest(i, f"#{i}", 390.0 + (i % 2), y) for i, y in enumerate(ys)]
    placed = place_labels(reqs, width=400, height=260, fontsize=8.5)
    centres = [(p.box.y0 + p.box.y1) / 2 for p in placed]
    assert centres == sorted(centres, reverse=True)  # same top-to-bottom order as the points
    rights = {round(p.box.x1, 6) for p in placed}
    assert len(rights) == 1 and rights.pop() < 390.0  # one right-aligned column left of the cluster
    assert all(p.leader and p.clear for p in placed)
