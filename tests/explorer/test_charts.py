"""Server-side SVG charts: round ticks that cover the data, escaped labels, empty input."""

from __future__ import annotations

import re

from api.explorer.charts import Series, line_chart, nice_ticks


def test_ticks_are_round_and_cover_the_range() -> None:
    ticks = nice_ticks(0.384, 2.302585, 5)
    assert ticks[0] <= 0.384 and ticks[-1] >= 2.302585
    steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:], strict=False)}
    assert steps == {0.5}


def test_flat_series_still_gets_an_axis() -> None:
    ticks = nice_ticks(3.0, 3.0)
    assert ticks[0] <= 3.0 < ticks[-1]


def test_points_follow_the_data() -> None:
    svg = line_chart([Series("loss", [0, 1, 2], [3.0, 2.0, 1.0])], title="loss")
    points = re.search(r'points="([^"]+)"', svg)
    assert points is not None
    ys = [float(p.split(",")[1]) for p in points.group(1).split()]
    assert ys == sorted(ys)  # SVG y grows downwards: a falling loss is drawn going down
    assert svg.count("<circle") == 3


def test_labels_are_escaped() -> None:
    svg = line_chart([Series("<script>", [0], [1.0])], title="a & b")
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "a &amp; b" in svg


def test_no_data_says_so() -> None:
    assert "no data" in line_chart([], title="empty")


def test_whole_number_axes_get_whole_number_ticks() -> None:
    ticks = nice_ticks(1, 3, 6, integer=True)
    assert ticks == [1, 2, 3]
    svg = line_chart([Series("loss", [1, 2, 3], [1.5, 0.6, 0.4])])
    x_labels = re.findall(r'y="236" text-anchor="middle">([^<]+)<', svg)
    assert x_labels == ["1", "2", "3"]
