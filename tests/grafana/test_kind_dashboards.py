"""Dashboards follow the model (issue 24): one per kind, the city's own kinds included.

Every kind in the model gets a dashboard whose panels cover every metric, titled in Chinese;
a kind added in ``CITYIOT_KINDS_PATH`` gets one from ``cityiot grafana export`` like a shipped
kind; and its dashboard's InfluxQL, run on the real InfluxDB over readings of that kind (a
number, a flag and an enum's string field), returns the values written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from cityiot.domain.catalogue import MODEL, Kind
from cityiot.domain.settings import Settings
from cityiot.grafana.export import dashboards, render
from cityiot.grafana.kinds import uid
from cityiot.grafana.units import grafana_unit
from cityiot.platform.local_services import LocalInflux
from cityiot.storage.influx import InfluxDB, format_field, series_key
from tests.grafana.conftest import grafana_query, influx_results
from tests.operator_files import changed, model, write_kind

# A kind named like one of the set's other dashboards.
DEVICE_KIND = """\
kind: device
title: {zh: 通用设备, en: generic device}
report_interval_s: 300
metrics:
  level_pct: {type: float, unit: "%", range: [0, 100], title: {zh: 液位, en: level}}
"""


def _as_json(dashboard: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(render(dashboard))
    return data


def _board(kind: str) -> dict[str, Any]:
    return _as_json(next(d for d in dashboards() if d.uid == uid(kind)))


def _queries(panel: dict[str, Any]) -> list[str]:
    return [t["query"] for t in panel["targets"] if "query" in t]


def _panel(board: dict[str, Any], title: str) -> dict[str, Any]:
    (panel,) = [p for p in board["panels"] if p["title"] == title]
    return panel


def _overrides(panel: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Field name → {property id: value} of a panel's byName overrides."""
    return {
        o["matcher"]["options"]: {p["id"]: p.get("value") for p in o["properties"]}
        for o in panel["fieldConfig"]["overrides"]
        if o["matcher"]["id"] == "byName"
    }


@pytest.fixture
def own_kinds(tmp_path: Path) -> Iterator[Path]:
    """The model with the kinds folder of a city that added its own kinds; shipped after."""
    folder = tmp_path / "kinds"
    write_kind(folder)
    with model(folder):
        yield folder


def _check_kind_dashboard(kind: Kind) -> None:
    board = _board(kind.name)
    assert board["title"] == f"{kind.title_en[:1].upper()}{kind.title_en[1:]} {kind.title_zh}"
    assert [v["name"] for v in board["templating"]["list"]] == ["district"]
    assert f'FROM "{kind.name}"' in board["templating"]["list"][0]["query"]
    titles = [p["title"] for p in board["panels"]]
    names = {m.name for m in kind.metrics}
    for title in titles:
        assert title not in names, f"{kind.name}: a panel titled with a raw name: {title}"
        assert any("\u4e00" <= c <= "\u9fff" for c in title), f"{kind.name}: {title} not Chinese"
    latest = _panel(board, "各设备最新读数")
    shown = _overrides(latest)
    for metric in kind.metrics:
        # Its own panel, titled with its Chinese title, querying it.
        if metric.type == "float":
            panel = _panel(board, metric.label("zh"))
            assert panel["fieldConfig"]["defaults"]["unit"] == grafana_unit(metric.unit)
            assert [t["refId"] for t in panel["targets"]] == ["A", "min", "max"]
        elif metric.type == "bool":
            panel = _panel(board, f"{metric.title_zh}（设备数）")
        else:
            panel = _panel(board, f"{metric.title_zh}（按状态的设备数）")
            assert [t["alias"] for t in panel["targets"]] == list(metric.values)
        assert all(f'"{metric.name}"' in q for q in _queries(panel)), (kind.name, metric.name)
        assert metric.title_en in panel["description"] and metric.name in panel["description"]
        # A column of the latest readings, titled in Chinese with its unit.
        assert f'last("{metric.name}") AS "{metric.name}"' in _queries(latest)[0]
        assert shown[metric.name]["displayName"] == metric.label("zh")
        if metric.type == "float":
            assert shown[metric.name]["unit"] == grafana_unit(metric.unit)


@pytest.mark.parametrize(
    ("unit", "grafana"),
    [
        ("°C", "celsius"),
        ("%", "percent"),
        ("%RH", "humidity"),
        ("kPa", "pressurekpa"),
        ("kWh", "kwatth"),
        ("mA", "mamp"),
        ("dBm", "dBm"),
        ("lx", "lux"),
        ("m/s", "velocityms"),
        ("MPa", "suffix:MPa"),
        ("m³/h", "suffix:m³/h"),
        ("%LEL", "suffix:%LEL"),
        ("cm", "suffix:cm"),
        ("pH", "none"),
        ("", "none"),
    ],
)
def test_units_are_grafanas_where_it_has_one(unit: str, grafana: str) -> None:
    assert grafana_unit(unit) == grafana


def test_every_kind_of_the_model_has_a_dashboard_covering_every_metric() -> None:
    assert MODEL.kinds, "the shipped kinds"
    for kind in MODEL.kinds.values():
        _check_kind_dashboard(kind)


def test_shipped_kinds_keep_their_uids_and_files() -> None:
    committed = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"
    for kind in MODEL.kinds:
        assert uid(kind) == f"cityiot-{kind}"
        assert (committed / f"cityiot-{kind}.json").is_file(), kind


def test_a_citys_own_kind_gets_its_dashboard(own_kinds: Path) -> None:
    kind = MODEL.kinds["noise"]
    _check_kind_dashboard(kind)
    uids = [d.uid for d in dashboards()]
    assert "cityiot-noise" in uids and len(uids) == len(set(uids))
    overview = _as_json(next(d for d in dashboards() if d.uid == "cityiot-overview"))
    rates = _panel(overview, "Readings per second")
    assert 'SELECT count("laeq_db") * 1000 / $__interval_ms AS "noise"' in " ".join(_queries(rates))
    assert _overrides(rates)["noise"]["displayName"] == "环境噪声 environmental noise"
    drilldown = _as_json(next(d for d in dashboards() if d.uid == "cityiot-device"))
    (kind_variable,) = [v for v in drilldown["templating"]["list"] if v["name"] == "kind"]
    assert "|noise)$/" in kind_variable["query"]


def test_a_kind_named_like_another_dashboard_gets_a_uid_of_its_own(own_kinds: Path) -> None:
    (own_kinds / "device.yaml").write_text(DEVICE_KIND, encoding="utf-8")
    MODEL.configure(own_kinds, None)
    uids = [d.uid for d in dashboards()]
    assert len(uids) == len(set(uids))
    assert "cityiot-kind-device" in uids and "cityiot-device" in uids
    assert _board("device")["title"] == "Generic device 通用设备"


def _cli(*args: str, kinds: Path | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYIOT_")}
    env["COLUMNS"] = "1000"  # the messages on one line each, however long the paths
    if kinds is not None:
        env["CITYIOT_KINDS_PATH"] = str(kinds)
    return subprocess.run(
        [sys.executable, "-m", "cityiot", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_export_writes_a_dashboard_for_the_kinds_path(tmp_path: Path) -> None:
    kinds = tmp_path / "kinds"
    write_kind(kinds)
    out = tmp_path / "out"
    done = _cli("grafana", "export", "--out", str(out), kinds=kinds)
    assert done.returncode == 0, done.stderr
    written = sorted(p.name for p in out.iterdir())
    shipped = {f"cityiot-{k}.json" for k in MODEL.kinds}
    assert shipped | {"cityiot-noise.json"} <= set(written)
    assert f"{len(written)} dashboards in {out}" in done.stderr
    board = json.loads((out / "cityiot-noise.json").read_text(encoding="utf-8"))
    assert board["uid"] == "cityiot-noise"
    assert board["title"] == "Environmental noise 环境噪声"
    titles = [p["title"] for p in board["panels"]]
    assert {"等效声级 (dB(A))", "超标报警（设备数）", "时段（按状态的设备数）"} <= set(titles)
    unit = _panel(board, "等效声级 (dB(A))")["fieldConfig"]["defaults"]["unit"]
    assert unit == "suffix:dB(A)"
    # Without the setting, the city's kind is not there (nothing left from the run above).
    plain = _cli("grafana", "export", "--out", str(tmp_path / "plain"), kinds=None)
    assert plain.returncode == 0, plain.stderr
    assert not (tmp_path / "plain" / "cityiot-noise.json").exists()


def test_cli_export_refuses_a_broken_kind_file_naming_it(tmp_path: Path) -> None:
    kinds = tmp_path / "kinds"
    write_kind(kinds, changed("metrics.period.title", None))
    done = _cli("grafana", "export", "--out", str(tmp_path / "out"), kinds=kinds)
    assert done.returncode == 1
    assert "noise.yaml" in done.stderr and "period" in done.stderr and "title" in done.stderr
    assert not (tmp_path / "out").exists()


# -- the noise dashboard's queries on the real InfluxDB ------------------------------------

BUCKET_MS = 600_000  # one interval holds every reading: each answer is one number
# device → its district's position in the city's list, and its readings (laeq, alarm, period)
READINGS: dict[str, tuple[int, list[tuple[float, bool, str]]]] = {
    "noise-1": (0, [(50.0, False, "day"), (55.0, False, "day"), (60.0, True, "night")]),
    "noise-2": (0, [(40.0, False, "day"), (45.0, False, "day"), (70.0, False, "day")]),
    "noise-3": (1, [(80.0, True, "night"), (85.0, True, "night"), (90.0, True, "night")]),
}


class Noise:
    """The noise readings stored, and the dashboard's queries run as Grafana would."""

    def __init__(self, settings: Settings, start_ms: int, districts: list[str]) -> None:
        self.settings = settings
        self.start_ms = start_ms
        self.districts = districts

    def district(self, device: str) -> str:
        return self.districts[READINGS[device][0]]

    def run(self, query: str, **variables: str | list[str]) -> list[dict[str, Any]]:
        chosen: dict[str, str | list[str]] = {"district": ".*", **variables}
        q = grafana_query(
            query, chosen, self.start_ms, self.start_ms + BUCKET_MS - 1, interval_ms=BUCKET_MS
        )
        results = influx_results(self.settings, q)["results"]
        return [s for r in results for s in r.get("series", [])]

    def values(self, query: str, **variables: str | list[str]) -> dict[str, Any]:
        """Series name (its district tag, or ``all``) → its one value."""
        found = {}
        for s in self.run(query, **variables):
            ((_time, value),) = s["values"]
            found[s.get("tags", {}).get("district", "all")] = value
        return found


@pytest.fixture
async def noise(own_kinds: Path, influx: LocalInflux, influx_db: str) -> AsyncIterator[Noise]:
    districts = sorted(MODEL.districts)[:2]
    # In a past interval of its own, so GROUP BY time() puts every reading in one bucket.
    start_ms = (int(time.time() * 1000) // BUCKET_MS - 2) * BUCKET_MS
    lines = []
    for device, (where, readings) in READINGS.items():
        tags = {"device_id": device, "district": districts[where], "vendor": "acme"}
        for i, (laeq, alarm, period) in enumerate(readings):
            fields = ",".join(
                format_field(name, value)
                for name, value in (("laeq_db", laeq), ("alarm", alarm), ("period", period))
            )
            lines.append(f"{series_key('noise', tags)} {fields} {start_ms + i * 60_000}")
    async with InfluxDB(influx.url, influx_db) as db:
        await db.write("\n".join(lines).encode())
    yield Noise(Settings(influx_url=influx.url, influx_db=influx_db), start_ms, districts)


def test_noise_queries_return_the_readings_written(noise: Noise) -> None:
    board = _board("noise")
    one, two = noise.districts

    (variable,) = board["templating"]["list"]
    assert {row[1] for s in noise.run(variable["query"]) for row in s["values"]} == {one, two}

    # Every device's latest readings: the number, the flag and the enum's string.
    latest = _queries(_panel(board, "各设备最新读数"))[0]
    rows = {
        s["tags"]["device_id"]: dict(zip(s["columns"], s["values"][0], strict=True))
        for s in noise.run(latest)
    }
    assert {d: (r["laeq_db"], r["alarm"], r["period"]) for d, r in rows.items()} == {
        device: readings[-1] for device, (_, readings) in READINGS.items()
    }
    (map_panel,) = [p for p in board["panels"] if p["type"] == "geomap"]
    assert [t["query"] for t in map_panel["targets"] if t["refId"] == "latest"] == [latest]

    # The number: the mean per district, the lowest and highest of the chosen districts.
    mean, low, high = _queries(_panel(board, "等效声级 (dB(A))"))
    assert noise.values(mean) == {one: pytest.approx(320 / 6), two: pytest.approx(85.0)}
    assert (noise.values(low), noise.values(high)) == ({"all": 40.0}, {"all": 90.0})
    assert (noise.values(low, district=one), noise.values(high, district=one)) == (
        {"all": 40.0},
        {"all": 70.0},
    )

    # The flag: devices whose last reading said true, per district.
    (alarms,) = _queries(_panel(board, "超标报警（设备数）"))
    assert noise.values(alarms) == {one: 1, two: 1}
    assert noise.values(alarms, district=two) == {two: 1}

    # The enum: devices per state of their last reading.
    day, night = _queries(_panel(board, "时段（按状态的设备数）"))
    assert (noise.values(day), noise.values(night)) == ({"all": 1}, {"all": 2})
    assert noise.values(night, district=one) == {"all": 1}

    # Now: devices reporting, and those whose alarm is on.
    reporting, alarm_on = _queries(_panel(board, "当前设备数"))
    assert (noise.values(reporting), noise.values(alarm_on)) == ({"all": 3}, {"all": 2})


def test_overview_and_drilldown_take_the_citys_kind(noise: Noise) -> None:
    overview = _as_json(next(d for d in dashboards() if d.uid == "cityiot-overview"))
    rates = _panel(overview, "Readings per second")
    (per_second,) = [t["query"] for t in rates["targets"] if t["refId"] == "noise"]
    assert noise.values(per_second) == {"all": pytest.approx(9 * 1000 / BUCKET_MS)}

    drilldown = _as_json(next(d for d in dashboards() if d.uid == "cityiot-device"))
    (kind_variable,) = [v for v in drilldown["templating"]["list"] if v["name"] == "kind"]
    found = noise.run(kind_variable["query"], device_id="noise-1")
    assert [row[0] for s in found for row in s["values"]] == ["noise"]
    picked = {"device_id": "noise-1", "kind": "noise"}
    (numeric,) = _queries(_panel(drilldown, "Numeric readings"))
    assert noise.values(numeric, **picked) == {"all": pytest.approx(55.0)}  # the string is left out
    (recent,) = _queries(_panel(drilldown, "Recent readings"))
    (series,) = noise.run(recent, **picked)
    assert [row[series["columns"].index("period")] for row in series["values"]] == [
        "night",
        "day",
        "day",
    ]
