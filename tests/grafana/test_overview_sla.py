"""The overview's work-order KPIs: one stat panel per figure, a full row of them, each
titled in Chinese and coloured by its target (a count or a rate without a target neutral)."""

from __future__ import annotations

import json
from typing import Any

from cityiot.grafana.export import render
from cityiot.grafana.overview import NEUTRAL, city_overview
from cityiot.rules.workorders import CLOSURE_TARGET, VERIFICATION_TARGET

KPIS = {
    "verification_due": ("应核查数（30 天）", "none", [(None, NEUTRAL)]),
    "on_time_verification_rate": (
        "按时核查率（30 天）",
        "percentunit",
        [(None, NEUTRAL), (0.0, "red"), (VERIFICATION_TARGET, "green")],
    ),
    "closure_due": ("应结案数（30 天）", "none", [(None, NEUTRAL)]),
    "closure_rate": (
        "结案率（30 天）",
        "percentunit",
        [(None, NEUTRAL), (0.0, "red"), (CLOSURE_TARGET, "green")],
    ),
    "on_time_closure_rate": ("按期结案率（30 天）", "percentunit", [(None, NEUTRAL)]),
}


def _kpi_panels() -> list[dict[str, Any]]:
    panels = json.loads(render(city_overview().build()))["panels"]
    return [
        p for p in panels if any(t.get("root_selector") == "kpis" for t in p.get("targets", []))
    ]


def test_each_kpi_is_its_own_stat_panel_titled_in_chinese_and_coloured_by_its_target() -> None:
    panels = _kpi_panels()
    shown: dict[str, dict[str, Any]] = {}
    for panel in panels:
        assert panel["type"] == "stat", panel["title"]
        [target] = panel["targets"]
        [column] = target["columns"]  # one value per panel: readable at any width
        shown[column["selector"]] = panel
    assert list(shown) == list(KPIS)
    for field, (title, unit, steps) in KPIS.items():
        panel = shown[field]
        defaults = panel["fieldConfig"]["defaults"]
        assert panel["title"] == title
        assert defaults["unit"] == unit, field
        assert [(s["value"], s["color"]) for s in defaults["thresholds"]["steps"]] == steps
        assert panel.get("fieldConfig", {}).get("overrides", []) == [], field


def test_the_kpis_fill_one_row_of_their_own() -> None:
    places = [p["gridPos"] for p in _kpi_panels()]
    assert len({g["y"] for g in places}) == 1
    assert sum(g["w"] for g in places) == 24
    assert [g["x"] for g in places] == sorted(g["x"] for g in places)
    assert min(g["w"] for g in places) >= 4
