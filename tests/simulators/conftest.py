"""Fixtures of the simulator tests: the model with a kind an operator added, or another city
(the process's model is put back after each test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cityiot.domain.catalogue import MODEL, Kind
from tests.operator_files import model, write_city, write_kind

# A kind no code knows: every metric and attribute type, nothing the shipped behaviours
# recognise, so everything about it is generic.
AIR: dict[str, Any] = {
    "kind": "air_quality",
    "title": {"zh": "空气质量", "en": "air quality"},
    "report_interval_s": 120,
    "metrics": {
        "pm25_ugm3": {"type": "float", "unit": "µg/m³", "range": [0, 1000],
                      "title": {"zh": "PM2.5", "en": "PM2.5"}},
        "no2_ppb": {"type": "float", "unit": "ppb", "range": [0, 2000],
                    "title": {"zh": "二氧化氮", "en": "nitrogen dioxide"}},
        "wind_ms": {"type": "float", "unit": "m/s", "range": [-60, 60],
                    "title": {"zh": "风速", "en": "wind"}},
        "battery_pct": {"type": "float", "unit": "%", "range": [0, 100],
                        "title": {"zh": "电池电量", "en": "battery"}},
        "heater_on": {"type": "bool", "title": {"zh": "加热", "en": "heater on"}},
        "mode": {"type": "enum", "values": ["auto", "manual", "service"],
                 "title": {"zh": "模式", "en": "mode"}},
    },
    "attributes": {
        "station_class": {"type": "str", "required": True,
                          "title": {"zh": "站点类型", "en": "station class"},
                          "description": "roadside, urban background or industrial"},
        "limit_ugm3": {"type": "float", "title": {"zh": "限值", "en": "limit"}},
        "inlets": {"type": "int", "title": {"zh": "进气口", "en": "inlets"}},
        "operator": {"type": "str", "title": {"zh": "运维单位", "en": "operator"}},
    },
}  # fmt: skip


@pytest.fixture
def added_kind(tmp_path: Path) -> Iterator[Kind]:
    """The model in force with :data:`AIR` added from a kinds folder."""
    folder = tmp_path / "kinds"
    write_kind(folder, AIR)
    with model(folder):
        yield MODEL.kinds[AIR["kind"]]


@pytest.fixture
def other_city(tmp_path: Path) -> Iterator[Path]:
    """The model in force with Xinyang as the city."""
    path = write_city(tmp_path)
    with model(None, path):
        yield path
