"""The fixed limits a rule's condition draws on a chart (cityiot.domain.expressions.thresholds)."""

from __future__ import annotations

import pytest

from cityiot.domain.expressions import thresholds


@pytest.mark.parametrize(
    ("text", "limits"),
    [
        ("tilt_deg > 15", [("tilt_deg", ">", 15.0)]),
        ("cover_open or tilt_deg > 15", [("tilt_deg", ">", 15.0)]),
        ("15 < tilt_deg", [("tilt_deg", ">", 15.0)]),  # turned round
        ("5 <= x < 10", [("x", ">=", 5.0), ("x", "<", 10.0)]),
        ("t < -3.5 or t >= +40", [("t", "<", -3.5), ("t", ">=", 40.0)]),
        ("water_level_cm > 0.8 * depth_cm", []),  # depends on an attribute
        ('alarm_state == "fault" and flag == true', []),  # not numbers
        ("a > b", []),
        ("x >", []),  # not an expression: no limits, no error
        ("__import__('os')", []),
    ],
)
def test_the_limits_written_in_a_condition(text: str, limits: list[tuple[str, str, float]]) -> None:
    assert thresholds(text) == limits
