"""Every InfluxQL query of every dashboard, panels and variables, run on the real InfluxDB
after the real ingest stored the fleet's evening: each must return the series its panel
draws (non-empty, with the columns the panel, its alias or its join refer to)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from cityiot.domain.catalogue import KINDS
from cityiot.grafana.export import dashboards, render
from cityiot.grafana.kinds import uid as kind_uid
from tests.grafana.conftest import City, grafana_query, influx_results


def _influx_targets() -> list[tuple[str, str, dict[str, Any]]]:
    """(dashboard uid, panel title, target) of every InfluxQL panel query."""
    found = []
    for dashboard in dashboards():
        data = json.loads(render(dashboard))
        for panel in data["panels"]:
            for target in panel["targets"]:
                if target["datasource"]["type"] == "influxdb":
                    found.append((data["uid"], f"{panel['title']} [{target['refId']}]", target))
    return found


def _variables() -> dict[str, dict[str, Any]]:
    """``uid/name`` → the variable, for every dashboard variable."""
    found = {}
    for dashboard in dashboards():
        data = json.loads(render(dashboard))
        for variable in data["templating"]["list"]:
            found[f"{data['uid']}/{variable['name']}"] = variable
    return found


TARGETS = _influx_targets()
VARIABLES = _variables()
KIND_OF = {kind_uid(kind): kind for kind in KINDS}


def _choices(city: City, uid: str) -> dict[str, str | list[str]]:
    """The variable values a user would pick: All districts; the cover-open manhole."""
    device = city.incidents["cover_open"]
    if uid == "cityiot-device":
        return {"district": device.district, "device_id": device.device_id, "kind": device.kind}
    return {"district": ".*"}  # All (allValue)


def _window(city: City) -> tuple[int, int]:
    # From the evening's first reading until now: presence points carry the receive time.
    return city.start_ms - 60_000, int(time.time() * 1000) + 60_000


def _series(city: City, query: str, choices: dict[str, str | list[str]]) -> list[dict[str, Any]]:
    start, end = _window(city)
    q = grafana_query(query, choices, start, end)
    assert not re.search(r"\$\w|\$\{", q), f"unsubstituted macro in {q}"
    results = influx_results(city.settings, q)["results"]
    return [s for r in results for s in r.get("series", [])]


def test_there_are_queries_on_every_dashboard_with_influx_data() -> None:
    assert {uid for uid, _t, _q in TARGETS} == {"cityiot-overview", *KIND_OF, "cityiot-device"}
    assert len(TARGETS) >= 30


@pytest.mark.parametrize(
    ("uid", "title", "target"), TARGETS, ids=[f"{u}:{t}" for u, t, _ in TARGETS]
)
def test_panel_query_returns_the_series_its_panel_draws(
    city: City, uid: str, title: str, target: dict[str, Any]
) -> None:
    series = _series(city, target["query"], _choices(city, uid))
    if uid in KIND_OF and not city.districts(KIND_OF[uid]):
        return  # a kind the evening's fleet has no device of: InfluxDB took the query
    if ") WHERE " in target["query"]:
        return  # devices meeting a condition (a flag true, a state): none is an answer too
    assert series, f"{uid} / {title}: no series for {target['query']}"
    values = [v for s in series for row in s["values"] for v in row[1:]]
    # A quantity may be 0 all evening (no rain, no outflow): a value, not an empty panel.
    assert any(v is not None for v in values), f"{uid} / {title}: only empty values"
    for s in series:
        assert s["columns"][0] == "time"
        if "$tag_" in target.get("alias", ""):
            tag = target["alias"].split("$tag_")[1].split()[0]
            assert tag in s.get("tags", {}), f"{title}: alias {target['alias']} needs tag {tag}"
    query = target["query"]
    columns = {c for s in series for c in s["columns"]} | {
        t for s in series for t in s.get("tags", {})
    }
    if target["resultFormat"] == "table" and query.startswith("SELECT * FROM (SELECT last("):
        # The "now" tables: one row per device, named and placed.
        assert {"device_id", "district"} <= columns, title
    for alias in _aliases(query):
        assert alias in columns, f"{title}: column {alias} missing from {sorted(columns)}"


def _aliases(query: str) -> list[str]:
    """The outermost SELECT's ``AS "name"`` columns."""
    head = query.split(" FROM ", 1)[0]
    return [part.split('"')[1] for part in head.split(" AS ")[1:]]


@pytest.mark.parametrize("uid", sorted(KIND_OF))
def test_district_variable_lists_the_kinds_districts(city: City, uid: str) -> None:
    variable = VARIABLES[f"{uid}/district"]
    series = _series(city, variable["query"], {})
    values = {row[1] for s in series for row in s["values"]}
    assert values == city.districts(KIND_OF[uid])
    assert variable["allValue"] == ".*" and variable["includeAll"] and variable["multi"]


def test_single_district_choice_narrows_the_kind_panels(city: City) -> None:
    device = city.incidents["valve_open"]
    board = kind_uid(device.kind)
    for uid, title, target in TARGETS:
        if uid != board:
            continue
        series = _series(city, target["query"], {"district": device.district})
        districts = {s.get("tags", {}).get("district") for s in series} - {None}
        assert districts <= {device.district}, title
        districts = {
            row[s["columns"].index("district")]
            for s in series
            if "district" in s["columns"]
            for row in s["values"]
        }
        assert districts <= {device.district}, title
    several = sorted(city.districts(device.kind))[:2]
    for uid, _title, target in TARGETS:
        if uid == board:
            _series(city, target["query"], {"district": several})  # (a|b) parses and runs


def test_drilldown_variables_chain_district_device_kind(city: City) -> None:
    device = city.incidents["cover_open"]
    districts = _series(city, VARIABLES["cityiot-device/district"]["query"], {})
    assert {row[1] for s in districts for row in s["values"]} == city.districts()
    devices = _series(
        city, VARIABLES["cityiot-device/device_id"]["query"], {"district": device.district}
    )
    ids = {row[1] for s in devices for row in s["values"]}
    expected = {d.device_id for d in city.fleet.devices if d.district == device.district}
    assert ids == expected
    every = _series(city, VARIABLES["cityiot-device/device_id"]["query"], {"district": ".*"})
    assert {row[1] for s in every for row in s["values"]} == {d.device_id for d in city.fleet}
    kinds = _series(
        city, VARIABLES["cityiot-device/kind"]["query"], {"device_id": device.device_id}
    )
    assert [row[0] for s in kinds for row in s["values"]] == [device.kind]


def test_devices_online_and_offline_match_the_fleet(city: City) -> None:
    by_title = {t: q for u, t, q in TARGETS if u == "cityiot-overview"}
    online = _series(city, by_title["Devices online, by kind [A]"]["query"], {})
    counted = {s["tags"]["kind"]: s["values"][0][1] for s in online}
    expected: dict[str, int] = {}
    for d in city.fleet.devices:
        if d is not city.signed_off:
            expected[d.kind] = expected.get(d.kind, 0) + 1
    assert counted == expected
    offline = _series(city, by_title["Devices offline, by kind [A]"]["query"], {})
    assert {s["tags"]["kind"]: s["values"][0][1] for s in offline} == {city.signed_off.kind: 1}


def test_latest_tables_hold_every_device_of_the_kind(city: City) -> None:
    """Each kind's table of latest readings: one row per device of the fleet, placed in its
    district, every metric of the kind a column with a value."""
    tables = {u: q for u, t, q in TARGETS if t == "各设备最新读数 [A]"}
    assert set(tables) == set(KIND_OF)
    for uid, target in tables.items():
        kind = KINDS[KIND_OF[uid]]
        fleet = {d.device_id: d.district for d in city.fleet.devices if d.kind == kind.name}
        if not fleet:
            continue
        series = _series(city, target["query"], {"district": ".*"})
        rows = [
            {**s["tags"], **dict(zip(s["columns"], row, strict=True))}
            for s in series
            for row in s["values"]
        ]
        assert {r["device_id"]: r["district"] for r in rows} == fleet, uid
        for metric in kind.metrics:
            assert any(r[metric.name] is not None for r in rows), (uid, metric.name)
        for incident, device in city.incidents.items():
            if device.kind == kind.name:
                assert device.device_id in {r["device_id"] for r in rows}, incident
