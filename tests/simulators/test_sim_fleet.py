"""The simulated fleet: deterministic, every kind in force with its attributes, the city's
districts, and its registry CSV as docs/design.md §7 says."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import pytest

from cityiot.domain.catalogue import DISTRICTS, KINDS, MODEL, Kind, is_valid_id
from cityiot.simulators import DEFAULT_VENDORS, Fleet, codec_carries, default_mix, default_supply
from cityiot.simulators.fleet import AREA_LAT, AREA_LON, CSV_COMMON_COLUMNS, csv_columns
from cityiot.storage.device_csv import parse_device_csv

URBAN = {"yicheng", "kaifaqu", "gaoxinqu", "shifanqu"}


def test_same_seed_gives_the_same_fleet_and_csv_bytes(tmp_path: Path) -> None:
    a, b = Fleet.generate(500, seed=7), Fleet.generate(500, seed=7)
    assert a == b
    a.write_csv(tmp_path / "a.csv")
    b.write_csv(tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert Fleet.generate(500, seed=8).devices != a.devices


def test_a_smaller_fleet_is_the_start_of_a_larger_one() -> None:
    small, large = Fleet.generate(100, seed=3), Fleet.generate(1000, seed=3)
    assert large.devices[:100] == small.devices


def test_every_kind_in_force_is_in_the_fleet_in_equal_shares() -> None:
    assert default_mix() == dict.fromkeys(sorted(KINDS), 1.0)
    count = 100 * len(KINDS)
    counts = Counter(d.kind for d in Fleet.generate(count, seed=1))
    assert counts == dict.fromkeys(KINDS, 100)
    # The first devices are one of each kind: a small fleet shows them all.
    assert Counter(d.kind for d in Fleet.generate(len(KINDS), seed=1)) == dict.fromkeys(KINDS, 1)
    one_kind = next(iter(KINDS))
    assert {d.kind for d in Fleet.generate(20, seed=1, mix={one_kind: 1.0})} == {one_kind}


def test_a_kind_an_operator_added_joins_the_fleet(added_kind: Kind, tmp_path: Path) -> None:
    fleet = Fleet.generate(20 * len(KINDS), seed=4)
    added = [d for d in fleet if d.kind == added_kind.name]
    assert len(added) == 20
    for d in added:
        assert d.report_interval_s == added_kind.report_interval_s == 120
        assert d.device_id.startswith(f"{added_kind.name}-{d.district}-")
        values = d.attributes
        assert set(values) == {a.name for a in added_kind.attributes}
        # A string from the choices its description lists, else named after the attribute.
        assert values["station_class"] in ("roadside", "urban_background", "industrial")
        assert str(values["operator"]).startswith("operator-")
        assert type(values["inlets"]) is int and 1 <= int(values["inlets"]) <= 100
        # A float sharing a metric's unit suffix: above that metric's normal band.
        assert type(values["limit_ugm3"]) is float and 600 <= float(values["limit_ugm3"]) <= 800
    assert len({d.attribute("station_class") for d in added}) > 1
    # Its attribute columns are in the CSV, the registry import takes them, and they read back.
    assert {"station_class", "limit_ugm3", "inlets", "operator"} <= set(fleet.csv_columns)
    parsed = parse_device_csv(fleet.csv_text())
    assert parsed.errors == []
    rows = {r.device_id: r for r in parsed.rows}
    for d in added:
        assert rows[d.device_id].attributes == d.attributes
    fleet.write_csv(tmp_path / "fleet.csv")
    assert Fleet.from_csv(tmp_path / "fleet.csv", seed=4).devices == fleet.devices


def test_devices_are_valid_unique_and_in_zhumadian() -> None:
    fleet = Fleet.generate(2000, seed=11)
    ids = [d.device_id for d in fleet]
    assert len(set(ids)) == len(ids)
    vendors = {v.id: v for v in fleet.vendors}
    supply = default_supply(fleet.vendors)
    for d in fleet:
        assert is_valid_id(d.device_id) and is_valid_id(d.vendor)
        assert d.device_id.split("-")[1] == d.district
        assert d.district in DISTRICTS
        assert AREA_LAT[0] < d.lat < AREA_LAT[1] and AREA_LON[0] < d.lon < AREA_LON[1]
        assert d.address.startswith("驻马店市" + DISTRICTS[d.district].name_zh)
        assert d.report_interval_s == KINDS[d.kind].report_interval_s
        assert d.kind in supply[d.vendor]
        assert d.codec == vendors[d.vendor].codec
        attributes = set(d.attributes)
        assert attributes == {a.name for a in KINDS[d.kind].attributes}
    assert {d.district for d in fleet} == set(DISTRICTS)
    assert sum(d.district in URBAN for d in fleet) > 0.6 * len(fleet)


def test_another_city_gets_its_own_districts(other_city: Path) -> None:
    fleet = Fleet.generate(200, seed=3)
    assert {d.district for d in fleet} == {"shihe", "pingqiao"}
    for d in fleet:
        assert d.address.startswith("信阳市" + DISTRICTS[d.district].name_zh)
        assert abs(d.lat - MODEL.city.lat) < 0.5 and abs(d.lon - MODEL.city.lon) < 0.5
    assert parse_device_csv(fleet.csv_text()).errors == []


def test_another_citys_district_of_a_shipped_id_is_placed_in_that_city(tmp_path: Path) -> None:
    """Zhumadian's places and street names stay Zhumadian's: Xinyang with a district
    called yicheng gets it near Xinyang, with common street names."""
    from tests.operator_files import XINYANG, model, write_city

    city = write_city(tmp_path, XINYANG.replace("shihe:", "yicheng:"))
    with model(None, city):
        fleet = Fleet.generate(100, seed=3)
        for d in fleet:
            assert abs(d.lat - MODEL.city.lat) < 0.5 and abs(d.lon - MODEL.city.lon) < 0.5
            assert "驿城大道" not in d.address and "天中山大道" not in d.address
        assert any(d.district == "yicheng" for d in fleet)


def test_kind_attributes_are_plausible() -> None:
    fleet = Fleet.generate(2000, seed=2)
    for d in fleet:
        if "depth_cm" in d.attributes:
            assert 100 <= d.number("depth_cm", 0) <= 400
        if "lot_id" in d.attributes:
            assert str(d.attribute("lot_id")).startswith(d.district + "-p")
            assert d.attribute("max_stay_min") in (60.0, 120.0, 180.0, 240.0)
        if "zone" in d.attributes:
            assert str(d.attribute("zone")).startswith(d.district + "-dma")
        if "pipe_diameter_mm" in d.attributes:
            assert 300 <= d.number("pipe_diameter_mm", 0) <= 1500
            # The well is deeper than the pipe is wide.
            assert d.number("well_depth_cm", 0) > d.number("pipe_diameter_mm", 0) / 10
        if "design_pressure_kpa" in d.attributes:
            low, high = {"low": (1, 10), "medium": (10, 400), "high": (400, 4000)}[
                str(d.attribute("pressure_class"))
            ]
            assert low <= d.number("design_pressure_kpa", 0) <= high
        if "compartment" in d.attributes:
            assert d.attribute("compartment") in ("gas", "power", "water", "combined")
        if "site_type" in d.attributes:
            assert d.attribute("site_type") in (
                "underpass", "tunnel", "garage_ramp", "road_low_point",
            )  # fmt: skip
            assert d.attribute("warning_cm") in (10.0, 15.0, 20.0)
    lots = Counter(d.attribute("lot_id") for d in fleet if d.attribute("lot_id"))
    assert max(lots.values()) > 1, "parking spaces share lots"
    stays = {d.attribute("lot_id"): d.attribute("max_stay_min") for d in fleet}
    assert all(d.attribute("max_stay_min") == stays[d.attribute("lot_id")] for d in fleet)


def test_vendors_their_codecs_and_what_they_make() -> None:
    fleet = Fleet.generate(200, seed=1)
    assert [tuple(v) for v in fleet.vendors] == [
        ("hikvision-iot", "海康威视物联", "json"),
        ("huawei-nb", "华为 NB-IoT", "json"),
        ("zte-city", "中兴智慧城市", "json"),
        ("henan-legacy", "河南豫南传感 (旧型号)", "hexframe"),
    ]
    for vendor_id, _name, codec in fleet.vendors:
        assert fleet.codec_of(vendor_id) == codec
    assert {d.vendor for d in fleet} == {v.id for v in fleet.vendors}
    supply = default_supply(DEFAULT_VENDORS)
    # Every kind has two makers, each able to send all of it.
    makers = Counter(kind for kinds in supply.values() for kind in kinds)
    assert makers == dict.fromkeys(KINDS, 2)
    by_id = {v.id: v for v in DEFAULT_VENDORS}
    for vendor, kinds in supply.items():
        assert kinds and all(codec_carries(by_id[vendor].codec, KINDS[k]) for k in kinds)
    # The legacy frame holds each value × 1000 in an int32: no water meter's volume.
    too_wide = [k for k in KINDS.values() if any(m.type == "float" and (m.high or 0) > 2e6
                                                  for m in k.metrics)]  # fmt: skip
    assert too_wide and not any(codec_carries("hexframe", k) for k in too_wide)
    assert all(codec_carries("json", k) for k in KINDS.values())


def test_a_kind_without_frame_codes_is_made_by_json_vendors_only(added_kind: Kind) -> None:
    assert not codec_carries("hexframe", added_kind)
    supply = default_supply(DEFAULT_VENDORS)
    assert added_kind.name not in supply["henan-legacy"]
    fleet = Fleet.generate(10 * len(KINDS), seed=5)
    assert all(d.codec == "json" for d in fleet if d.kind == added_kind.name)


def test_csv_has_the_registry_columns_of_the_fleets_kinds(tmp_path: Path) -> None:
    fleet = Fleet.generate(300, seed=5)
    path = tmp_path / "fleet.csv"
    fleet.write_csv(path)
    data = path.read_bytes()
    assert not data.startswith(b"\xef\xbb\xbf")
    header = tuple(data.decode("utf-8").splitlines()[0].split(","))
    attributes = {a.name for k in KINDS.values() for a in k.attributes}
    assert header == fleet.csv_columns == csv_columns()
    assert header[: len(CSV_COMMON_COLUMNS)] == CSV_COMMON_COLUMNS == (
        "device_id", "vendor", "kind", "district", "lat", "lon", "address", "report_interval_s",
    )  # fmt: skip
    assert set(header[len(CSV_COMMON_COLUMNS) : -1]) == attributes
    assert header[-1] == "install_date"
    # A fleet of one kind has only that kind's columns.
    one = next(k for k in KINDS.values() if k.attributes)
    only = Fleet.generate(5, seed=1, mix={one.name: 1.0}).csv_columns
    assert only == (*CSV_COMMON_COLUMNS, *(a.name for a in one.attributes), "install_date")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    assert len(rows) == 300
    for row, device in zip(rows, fleet, strict=True):
        assert row["device_id"] == device.device_id
        assert float(row["lat"]) == pytest.approx(device.lat, abs=1e-6)
        assert row["install_date"] == device.install_date.isoformat()
        for column in attributes:
            assert (row[column] != "") == (column in device.attributes), (column, device)


def test_csv_reads_back_as_the_same_fleet(tmp_path: Path) -> None:
    fleet = Fleet.generate(400, seed=9)
    fleet.write_csv(tmp_path / "fleet.csv")
    again = Fleet.from_csv(tmp_path / "fleet.csv", seed=9)
    assert again.devices == fleet.devices


def test_csv_passes_the_registry_import_checks() -> None:
    parsed = parse_device_csv(Fleet.generate(500, seed=4).csv_text())
    assert parsed.errors == []
    assert len(parsed.rows) == 500
    assert {r.kind for r in parsed.rows} == set(KINDS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"devices": -1}, "0 or more"),
        ({"devices": 5, "mix": {"tram": 1.0}}, "unknown kinds in the mix: tram; use "),
        ({"devices": 5, "mix": dict.fromkeys(KINDS, 0.0)}, "positive shares"),
        ({"devices": 5, "vendors": ()}, "at least one vendor"),
        ({"devices": 5, "supply": {v.id: () for v in DEFAULT_VENDORS}}, "no vendor supplies"),
    ],
)
def test_bad_arguments_say_what_to_change(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Fleet.generate(**kwargs)  # type: ignore[arg-type]
