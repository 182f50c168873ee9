"""The shared map's numbers: a robust colour scale, real-valued legend, rounding, risers."""

from __future__ import annotations

import pytest

from pulsar_core.pages.hexmap import (
    change_at,
    change_label,
    colour,
    colour_limit,
    legend,
    position,
    risers,
)


def test_one_outlier_does_not_set_the_scale() -> None:
    changes = [float(n % 40) for n in range(99)] + [3475.0]
    limit = colour_limit(changes)
    assert 35.0 <= limit <= 39.0
    assert colour(3475.0, limit) == colour(limit, limit) == "#ff0000"
    assert colour(None, limit) == "#bbbbbb"


def test_symmetric_log_scale_keeps_a_busy_hexagons_rise_visible_and_inverts() -> None:
    limit = 1000.0  # many floor hexagons leaving 8: the 95th percentile is huge
    assert position(40.0, limit) > 0.3  # linear scaling would give 0.04: white
    assert position(-100.0, limit) == -1.0  # demand cannot fall further than -100%
    for t in (-1.0, -0.5, 0.2, 1.0):
        assert position(change_at(t, limit), limit) == pytest.approx(t)


def test_legend_shows_real_values_and_counts_what_lies_beyond() -> None:
    text = legend(1000.0, 3)
    assert "+1000%" in text and "-100%" in text and "0%" in text
    assert "3 hexagons beyond +1000% drawn at full colour" in text


@pytest.mark.parametrize(("change", "label"), [
    (70.98504986900991, "+71%"), (-3.14159, "-3.1%"), (3475.2, "+3475%"), (None, "n/a")])
def test_changes_are_rounded(change: float | None, label: str) -> None:
    assert change_label(change) == label


def test_risers_rank_by_expected_absolute_increase_not_percent() -> None:
    items = [{"hexagon": "floor", "current": 8.0, "value": 65.0},  # +716%, +57
             {"hexagon": "busy", "current": 400.0, "value": 520.0},  # +30%, +120
             {"hexagon": "falling", "current": 50.0, "value": 40.0}]
    assert [i["hexagon"] for i in risers(items)] == ["busy", "floor"]
