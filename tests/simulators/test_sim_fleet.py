"""The simulated fleet: deterministic, well-formed, and its registry CSV as docs/design.md §7 says."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import pytest

from cityiot.domain.catalogue import DISTRICTS, KINDS, is_valid_id
from cityiot.simulators import CSV_COLUMNS, DEFAULT_MIX, Fleet
from cityiot.simulators.fleet import AREA_LAT, AREA_LON, VENDOR_KINDS

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


def test_kinds_follow_the_mix() -> None:
    fleet = Fleet.generate(1000, seed=1)
    counts = Counter(d.kind for d in fleet)
    for kind, share in DEFAULT_MIX.items():
        assert abs(counts[kind] - share * 1000) <= 1
    assert Counter(d.kind for d in Fleet.generate(10, seed=1))["hydrant"] == 1
    only_manholes = Fleet.generate(20, seed=1, mix={"manhole": 1.0})
    assert {d.kind for d in only_manholes} == {"manhole"}


def test_devices_are_valid_unique_and_in_zhumadian() -> None:
    fleet = Fleet.generate(2000, seed=11)
    ids = [d.device_id for d in fleet]
    assert len(set(ids)) == len(ids)
    vendors = {v.id: v for v in fleet.vendors}
    for d in fleet:
        assert is_valid_id(d.device_id) and is_valid_id(d.vendor)
        assert d.device_id.split("-")[1] == d.district
        assert d.district in DISTRICTS
        assert AREA_LAT[0] < d.lat < AREA_LAT[1] and AREA_LON[0] < d.lon < AREA_LON[1]
        assert d.address.startswith("驻马店市" + DISTRICTS[d.district].name_zh)
        assert d.report_interval_s == KINDS[d.kind].report_interval_s
        assert d.kind in VENDOR_KINDS[d.vendor]
        assert d.codec == vendors[d.vendor].codec
        attributes = set(d.attributes)
        assert attributes == {a.name for a in KINDS[d.kind].attributes}
    assert {d.district for d in fleet} == set(DISTRICTS)
    assert sum(d.district in URBAN for d in fleet) > 0.6 * len(fleet)


def test_kind_attributes_are_plausible() -> None:
    fleet = Fleet.generate(1000, seed=2)
    for d in fleet:
        if d.kind == "manhole":
            assert d.depth_cm is not None and 100 <= d.depth_cm <= 400
        if d.kind == "parking":
            assert d.lot_id and d.lot_id.startswith(d.district + "-p")
            assert d.max_stay_min in (60.0, 120.0, 180.0, 240.0)
        if d.kind == "water":
            assert d.zone and d.zone.startswith(d.district + "-dma")
    lots = Counter(d.lot_id for d in fleet if d.lot_id)
    assert max(lots.values()) > 1, "parking spaces share lots"
    stays = {d.lot_id: d.max_stay_min for d in fleet if d.lot_id}
    assert all(d.max_stay_min == stays[d.lot_id] for d in fleet if d.lot_id)


def test_vendors_and_their_codecs() -> None:
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


def test_csv_has_exactly_the_registry_columns(tmp_path: Path) -> None:
    fleet = Fleet.generate(300, seed=5)
    path = tmp_path / "fleet.csv"
    fleet.write_csv(path)
    data = path.read_bytes()
    assert not data.startswith(b"\xef\xbb\xbf")
    header = data.decode("utf-8").splitlines()[0]
    assert header == (
        "device_id,vendor,kind,district,lat,lon,address,report_interval_s,"
        "depth_cm,lot_id,max_stay_min,zone,install_date"
    )
    assert tuple(header.split(",")) == CSV_COLUMNS
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    assert len(rows) == 300
    for row, device in zip(rows, fleet, strict=True):
        assert row["device_id"] == device.device_id
        assert float(row["lat"]) == pytest.approx(device.lat, abs=1e-6)
        assert row["install_date"] == device.install_date.isoformat()
        for column in ("depth_cm", "lot_id", "max_stay_min", "zone"):
            assert (row[column] != "") == (column in device.attributes), (column, device)


def test_csv_reads_back_as_the_same_fleet(tmp_path: Path) -> None:
    fleet = Fleet.generate(400, seed=9)
    fleet.write_csv(tmp_path / "fleet.csv")
    again = Fleet.from_csv(tmp_path / "fleet.csv", seed=9)
    assert again.devices == fleet.devices


def test_csv_passes_the_registry_import_checks() -> None:
    device_csv = pytest.importorskip("cityiot.storage.device_csv")
    parsed = device_csv.parse_device_csv(Fleet.generate(500, seed=4).csv_text())
    assert parsed.errors == []
    assert len(parsed.rows) == 500


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"devices": -1}, "0 or more"),
        ({"devices": 5, "mix": {"tram": 1.0}}, "unknown kinds"),
        ({"devices": 5, "mix": {"manhole": 0.0}}, "positive shares"),
        ({"devices": 5, "vendors": ()}, "at least one vendor"),
    ],
)
def test_bad_arguments_say_what_to_change(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Fleet.generate(**kwargs)  # type: ignore[arg-type]
