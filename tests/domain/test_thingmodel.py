"""Kind and city files (docs/design.md §4a): what they may say, what a broken one is told,
which changes are compatible, and how the live model takes changes in."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from cityiot.domain.catalogue import MODEL, SHIPPED_KINDS, IncompatibleChange
from cityiot.domain.city import read_city
from cityiot.domain.sun import local_hour
from cityiot.domain.thingmodel import (
    ModelError,
    incompatibilities,
    kind_spec,
    parse_kind,
    read_kind_file,
)
from tests.operator_files import NOISE, changed, run_cli, write_kind


def test_the_contracts_example_parses_with_every_type() -> None:
    kind = parse_kind(NOISE, "noise.yaml")
    assert [m.type for m in kind.metrics] == ["float", "bool", "enum"]
    laeq = kind.metric("laeq_db")
    assert laeq is not None and (laeq.low, laeq.high, laeq.unit) == (20.0, 140.0, "dB(A)")
    assert laeq.label("zh") == "等效声级 (dB(A))" and laeq.label("en") == "equivalent level (dB(A))"
    period = kind.metric("period")
    assert period is not None and period.values == ("day", "night")
    zone = kind.attribute("zone_class")
    assert zone is not None and zone.required and zone.type is str
    assert [a.type for a in kind.attributes] == [float, str, int]
    assert parse_kind(kind_spec(kind), "noise.yaml") == kind  # the spec round-trips


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        ("kind", "Noise", "must match [a-z]"),
        ("title", None, "title is missing"),
        ("title.zh", None, "title.zh: missing"),
        ("report_interval_s", 0, "report_interval_s: 0"),
        ("metrics", {}, "at least one metric"),
        ("metrics.laeq_db.type", "number", "use one of float, bool, enum"),
        ("metrics.laeq_db.range", [140, 20], "low < high"),
        ("metrics.laeq_db.range", None, "needs its physical range"),
        ("metrics.laeq_db.title", None, "metrics.laeq_db: title is missing"),
        ("metrics.alarm.range", [0, 1], "only float metrics have a range"),
        ("metrics.period.values", None, "an enum metric needs values"),
        ("metrics.period.values", [True, False], "quote yes/no/on/off"),
        ("metrics.period.values", ["day", "day"], "repeats a value"),
        ("metrics.LAeq", {"type": "bool", "title": {"zh": "a", "en": "b"}}, "metric name 'LAeq'"),
        ("metrics.laeq_db.scale", 2, "unknown field(s) ['scale']"),
        ("attributes.limit_db.type", "number", "use one of str, float, int"),
        ("attributes.district", {"type": "str", "title": {"zh": "a", "en": "b"}}, "already has"),
        ("attributes.vendor", {"type": "str", "title": {"zh": "a", "en": "b"}}, "already has"),
        ("attributes.alarm", {"type": "str", "title": {"zh": "a", "en": "b"}}, "both a metric"),
        ("metrics.time", {"type": "bool", "title": {"zh": "a", "en": "b"}}, "'time' is reserved"),
        ("metrics.district", {"type": "bool", "title": {"zh": "a", "en": "b"}}, "is reserved"),
        ("metrics.ts_assumed", {"type": "bool", "title": {"zh": "a", "en": "b"}}, "is reserved"),
        ("metrics.not", {"type": "bool", "title": {"zh": "a", "en": "b"}}, "is reserved"),
        ("attributes.and", {"type": "str", "title": {"zh": "a", "en": "b"}}, "rule language"),
        ("kind", "device_status", "the platform's own measurement"),
    ],
)
def test_a_broken_kind_is_told_the_field_and_the_fix(path: str, value: Any, says: str) -> None:
    with pytest.raises(ModelError) as refused:
        parse_kind(changed(path, value), "kinds/noise.yaml")
    message = str(refused.value)
    assert message.startswith("kinds/noise.yaml") and says in message, message


def test_a_file_must_be_named_after_its_kind(tmp_path: Path) -> None:
    (tmp_path / "sound.yaml").write_text(yaml.safe_dump(NOISE, allow_unicode=True))
    with pytest.raises(ModelError, match="name the file noise.yaml"):
        read_kind_file(tmp_path / "sound.yaml")
    (tmp_path / "bad.yaml").write_text("kind: [noise\n")
    with pytest.raises(ModelError, match=r"bad.yaml: not valid YAML .* line"):
        read_kind_file(tmp_path / "bad.yaml")


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        ("metrics.laeq_db", None, "metric laeq_db is removed"),
        (
            "metrics.alarm",
            {"type": "float", "range": [0, 1], "title": {"zh": "报警", "en": "alarm"}},
            "metric alarm changes type bool → float",
        ),
        ("metrics.laeq_db.range", [30, 140], "metric laeq_db narrows its range 20..140 → 30..140"),
        ("metrics.period.values", ["day"], "metric period drops value(s) night"),
        ("attributes.limit_db.type", "int", "attribute limit_db changes type float → int"),
        ("attributes.zone_class", None, "attribute zone_class is removed"),
        (
            "attributes.street",
            {"type": "str", "required": True, "title": {"zh": "街道", "en": "street"}},
            "attribute street is new and required",
        ),
        ("attributes.limit_db.required", True, "attribute limit_db becomes required"),
    ],
)
def test_incompatible_changes_name_the_metric_and_why(path: str, value: Any, says: str) -> None:
    old = parse_kind(NOISE, "noise.yaml")
    problems = incompatibilities(old, parse_kind(changed(path, value), "noise.yaml"))
    assert len(problems) == 1 and says in problems[0], problems


def test_compatible_changes_pass() -> None:
    old = parse_kind(NOISE, "noise.yaml")
    new = changed("metrics.laeq_db.range", [0, 150])
    new["metrics"]["period"]["values"] = ["day", "evening", "night"]
    new["metrics"]["lcpeak_db"] = {
        "type": "float", "unit": "dB(C)", "range": [20, 160], "title": {"zh": "峰值", "en": "peak"}
    }  # fmt: skip
    new["attributes"]["street"] = {"type": "str", "title": {"zh": "街道", "en": "street"}}
    new["title"] = {"zh": "噪声监测", "en": "noise monitoring"}
    new["report_interval_s"] = 300
    assert incompatibilities(old, parse_kind(new, "noise.yaml")) == []


def test_shipped_kinds_load_with_the_five_of_the_access_standard_unchanged() -> None:
    shipped = {p.stem for p in SHIPPED_KINDS.glob("*.yaml")}
    assert {"manhole", "streetlight", "hydrant", "water", "parking"} <= shipped
    assert {"waterlogging", "drainage", "gas", "tunnel"} <= shipped
    manhole = MODEL.kinds["manhole"]
    assert [m.name for m in manhole.metrics] == [
        "tilt_deg", "cover_open", "water_level_cm", "gas_ch4_ppm", "battery_pct", "rssi_dbm"
    ]  # fmt: skip
    assert [a.name for a in MODEL.kinds["parking"].attributes] == ["lot_id", "max_stay_min"]
    for kind in MODEL.kinds.values():
        for metric in kind.metrics:
            assert metric.title_zh and metric.title_en, (kind.name, metric.name)


@pytest.mark.usefixtures("live_model")
def test_a_kinds_folder_adds_kinds_and_refuses_an_incompatible_shipped_change(
    tmp_path: Path,
) -> None:
    write_kind(tmp_path)
    MODEL.configure(tmp_path, None)
    assert MODEL.kinds["noise"].metric("period") is not None
    assert "manhole" in MODEL.kinds

    parking = yaml.safe_load((SHIPPED_KINDS / "parking.yaml").read_text())
    del parking["metrics"]["rssi_dbm"]
    (tmp_path / "parking.yaml").write_text(yaml.safe_dump(parking, allow_unicode=True))
    with pytest.raises(ModelError, match=r"parking.yaml: kind parking .* rssi_dbm is removed"):
        MODEL.configure(tmp_path, None)


@pytest.mark.usefixtures("live_model")
def test_refresh_takes_a_changed_file_and_an_api_change_and_refuses_an_incompatible_one(
    tmp_path: Path,
) -> None:
    write_kind(tmp_path)
    MODEL.configure(tmp_path, None)
    before = MODEL.generation()
    assert MODEL.refresh({}) == [] and MODEL.generation() == before

    wider = changed("metrics.laeq_db.range", [10, 150])
    write_kind(tmp_path, wider)
    os.utime(tmp_path / "noise.yaml", (1, 1))  # another stamp, whatever the clock's grain
    assert MODEL.refresh({}) == ["noise"] and MODEL.generation() > before
    laeq = MODEL.kinds["noise"].metric("laeq_db")
    assert laeq is not None and laeq.low == 10

    no_alarm = copy.deepcopy(wider)
    del no_alarm["metrics"]["alarm"]
    with pytest.raises(IncompatibleChange) as refused:
        MODEL.check_change(no_alarm)
    assert refused.value.problems == [
        "metric alarm is removed; stored readings and rules use it (keep it)"
    ]
    gauge = copy.deepcopy(wider)
    gauge["metrics"]["gauge_pct"] = {
        "type": "float", "unit": "%", "range": [0, 100], "title": {"zh": "表", "en": "gauge"}
    }  # fmt: skip
    assert MODEL.check_change(gauge).metric("gauge_pct") is not None
    assert MODEL.refresh({"noise": gauge}) == ["noise"]
    assert MODEL.kinds["noise"].source == "api"
    # A stored change that no longer fits (the file moved on) is kept out, not applied.
    assert MODEL.refresh({"noise": no_alarm}) == []
    assert MODEL.kinds["noise"].metric("alarm") is not None


@pytest.mark.usefixtures("live_model")
def test_overrides_read_before_those_taken_in_are_ignored() -> None:
    """Two refreshes crossing (a PUT's and the periodic one): the one that read the
    database first must not put back what the other took in."""
    wider = changed("metrics.laeq_db.range", [10, 150])
    assert MODEL.refresh({"noise": NOISE}, as_of=1) == ["noise"]
    assert MODEL.refresh({"noise": wider}, as_of=3) == ["noise"]
    assert MODEL.refresh({"noise": NOISE}, as_of=2) == []  # the older snapshot
    laeq = MODEL.kinds["noise"].metric("laeq_db")
    assert laeq is not None and laeq.low == 10


CITY = """\
name: {zh: 示例市, en: Example City}
timezone: Europe/Paris
center: [48.85, 2.35]
districts:
  centre: {zh: 中心区, en: Centre}
  north: {zh: 北区, en: North}
boundaries: districts.geojson
"""
BOUNDARIES = """{"type": "FeatureCollection", "features": [
 {"type": "Feature", "properties": {"id": "centre"},
  "geometry": {"type": "Polygon", "coordinates": [[[2.3, 48.8], [2.4, 48.8], [2.4, 48.9], [2.3, 48.8]]]}}
]}"""


@pytest.mark.usefixtures("live_model")
def test_another_city_brings_its_districts_clock_and_boundaries(tmp_path: Path) -> None:
    (tmp_path / "city.yaml").write_text(CITY)
    (tmp_path / "districts.geojson").write_text(BOUNDARIES)
    MODEL.configure(None, tmp_path / "city.yaml")
    assert list(MODEL.districts) == ["centre", "north"]
    assert MODEL.city.boundaries is not None and MODEL.city.fixed_offset_s() is None
    # 2026-07-01 10:00 UTC is noon in Paris (summer time) and 18:00 in Zhumadian.
    assert local_hour(1_782_900_000_000) == pytest.approx(12.0)
    MODEL.configure(None, None)
    assert local_hour(1_782_900_000_000) == pytest.approx(18.0)
    assert "yicheng" in MODEL.districts and "centre" not in MODEL.districts


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda t: t.replace("Europe/Paris", "Europe/Atlantis"), "not an IANA time zone"),
        (lambda t: t.replace("[48.85, 2.35]", "[248.85, 2.35]"), "center: [248.85, 2.35]"),
        (lambda t: t.replace("  north:", "  North:"), "id 'North' must match"),
        (lambda t: t.replace("{zh: 北区, en: North}", "{zh: 北区}"), "districts.north: write"),
        (lambda t: t + "mayor: x\n", "unknown field(s) ['mayor']"),
    ],
)
def test_a_broken_city_file_is_told_what_to_change(tmp_path: Path, edit: Any, says: str) -> None:
    (tmp_path / "city.yaml").write_text(edit(CITY))
    (tmp_path / "districts.geojson").write_text(BOUNDARIES.replace('"centre"', '"south"'))
    with pytest.raises(ModelError) as refused:
        read_city(tmp_path / "city.yaml")
    assert says in str(refused.value), refused.value


def test_boundaries_must_name_the_citys_districts(tmp_path: Path) -> None:
    (tmp_path / "city.yaml").write_text(CITY)
    (tmp_path / "districts.geojson").write_text(BOUNDARIES.replace('"centre"', '"south"'))
    with pytest.raises(ModelError, match="properties.id 'south'.*use one of centre, north"):
        read_city(tmp_path / "city.yaml")


def test_a_broken_kind_or_city_file_stops_start_up_naming_file_and_field(tmp_path: Path) -> None:
    kinds = tmp_path / "kinds"
    write_kind(kinds, changed("metrics.laeq_db.range", [140, 20]))
    done = run_cli(
        "ingest", env={"CITYIOT_KINDS_PATH": str(kinds), "CITYIOT_RUN_DIR": str(tmp_path)}
    )
    assert done.returncode != 0
    said = " ".join(done.stderr.split())
    assert "noise.yaml: kind noise: metrics.laeq_db.range" in said and "low < high" in said, said

    (tmp_path / "city.yaml").write_text(CITY.replace("Europe/Paris", "Mars/Olympus"))
    done = run_cli(
        "api",
        env={"CITYIOT_CITY_PATH": str(tmp_path / "city.yaml"), "CITYIOT_RUN_DIR": str(tmp_path)},
    )
    assert done.returncode != 0
    said = " ".join(done.stderr.split())
    assert "city.yaml: timezone: 'Mars/Olympus' is not an IANA time zone" in said, said
