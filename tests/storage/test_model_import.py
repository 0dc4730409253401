"""Device CSV files follow the model in force: a kind an operator adds brings its attribute
columns (typed, required ones enforced), and a device's district must be the city's —
Zhumadian's, or another city's from CITYIOT_CITY_PATH. Imported into real SQLite and
PostgreSQL registries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cityiot.domain.catalogue import MODEL
from cityiot.storage.device_csv import RowError, parse_device, parse_device_csv
from cityiot.storage.engine import SessionFactory
from cityiot.storage.registry import import_devices
from cityiot.storage.tables.registry import Device
from tests.operator_files import XINYANG_DISTRICTS, model, write_city, write_kind

HEADER = (
    "device_id,vendor,kind,district,lat,lon,address,report_interval_s,"
    "limit_db,zone_class,microphones"
)
NOISE_CSV = f"""{HEADER}
ns-1,quietco,noise,yicheng,32.98,114.02,解放路口,,55,2,3
ns-2,quietco,noise,xincai,32.75,114.98,新蔡县人民公园,30,,1,
"""


@pytest.fixture
def noise_kind(tmp_path: Path) -> Iterator[Path]:
    """The model with the noise kind from a CITYIOT_KINDS_PATH folder; that folder."""
    folder = tmp_path / "kinds"
    write_kind(folder)
    with model(folder, None):
        yield folder


def _errors(text: str) -> list[str]:
    return [str(e) for e in parse_device_csv(text).errors]


@pytest.mark.usefixtures("noise_kind")
async def test_a_new_kinds_devices_import_with_their_typed_attributes(
    sessions: SessionFactory,
) -> None:
    parsed = parse_device_csv(NOISE_CSV)
    assert parsed.errors == []
    report = await import_devices(sessions, parsed.rows)
    assert (report.created, report.errors) == (2, [])
    async with sessions() as session:
        first = await session.get(Device, "ns-1")
        second = await session.get(Device, "ns-2")
    assert first is not None and second is not None
    assert (first.kind, first.district, first.report_interval_s) == ("noise", "yicheng", 60)
    assert first.attributes == {"limit_db": 55.0, "zone_class": "2", "microphones": 3}
    assert [type(first.attributes[n]) for n in ("limit_db", "zone_class", "microphones")] == [
        float,
        str,
        int,
    ]
    assert (second.report_interval_s, second.attributes) == (30, {"zone_class": "1"})

    # A re-import without the optional columns keeps them; the kind's own columns only.
    again = parse_device_csv(
        "device_id,vendor,kind,district,lat,lon,address,report_interval_s,zone_class\n"
        "ns-1,quietco,noise,yicheng,32.98,114.02,解放路口,,4a\n"
    )
    assert again.errors == []
    assert (await import_devices(sessions, again.rows)).updated == 1
    async with sessions() as session:
        first = await session.get(Device, "ns-1")
    assert first is not None
    assert first.attributes == {"limit_db": 55.0, "zone_class": "4a", "microphones": 3}


@pytest.mark.usefixtures("noise_kind")
@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            "ns-3,quietco,noise,yicheng,32.98,114.02,a,,55,,2",
            "line 2, zone_class: is empty; a noise needs zone_class (noise zone class)",
        ),
        (
            "ns-3,quietco,noise,yicheng,32.98,114.02,a,,loud,2,2",
            "line 2, limit_db: 'loud' is not a number",
        ),
        (
            "ns-3,quietco,noise,yicheng,32.98,114.02,a,,55,2,2.5",
            "line 2, microphones: '2.5' must be a whole number (microphones)",
        ),
        (
            "ns-3,quietco,noise,yicheng,32.98,114.02,a,,55,2,0",
            "line 2, microphones: 0 must be greater than 0 (microphones)",
        ),
    ],
)
def test_a_bad_attribute_cell_is_a_row_error_naming_it(row: str, expected: str) -> None:
    (error,) = _errors(f"{HEADER}\n{row}\n")
    assert error.startswith(expected), error


@pytest.mark.usefixtures("noise_kind")
def test_a_required_attribute_column_missing_is_an_error_on_each_row() -> None:
    text = (
        "device_id,vendor,kind,district,lat,lon,address,report_interval_s,limit_db\n"
        "ns-1,quietco,noise,yicheng,32.98,114.02,a,,55\n"
        "mh-1,acme,manhole,yicheng,32.98,114.02,b,,\n"
    )
    parsed = parse_device_csv(text)
    assert [str(e) for e in parsed.errors] == [
        "line 2, zone_class: a noise needs zone_class (noise zone class); add the column"
    ]
    assert [r.device_id for r in parsed.rows] == ["mh-1"]


@pytest.mark.usefixtures("noise_kind")
def test_another_kinds_attribute_and_an_unknown_column_are_named() -> None:
    text = (
        f"{HEADER},depth_cm,colour\n"
        "ns-1,quietco,noise,yicheng,32.98,114.02,a,,55,2,,150,red\n"
        "ns-2,quietco,noise,yicheng,32.98,114.02,a,,55,2,,,blue\n"
        "mh-1,acme,manhole,yicheng,32.98,114.02,b,,40,,,150,\n"
    )
    parsed = parse_device_csv(text)
    errors = [str(e) for e in parsed.errors]
    assert errors[0].startswith("line 1, colour: unknown column 'colour', ignored; remove it")
    assert "limit_db, zone_class, microphones" in errors[0]  # the new kind's columns
    assert errors[1:] == [
        "line 2, depth_cm: is an attribute of manhole devices, not of a noise (a noise has "
        "limit_db, zone_class, microphones); leave it empty on this row",
        "line 4, limit_db: is an attribute of noise devices, not of a manhole (a manhole has "
        "depth_cm); leave it empty on this row",
    ]
    assert [r.device_id for r in parsed.rows] == ["ns-2"]


def test_a_district_outside_the_city_names_the_citys_districts() -> None:
    (error,) = parse_device_csv(
        "device_id,vendor,kind,district,lat,lon,address,report_interval_s\n"
        "mh-1,acme,manhole,shihe,32.13,114.07,a,\n"
    ).errors
    assert (error.line, error.column) == (2, "district")
    assert error.message.startswith(
        "'shihe' is not a district of Zhumadian (驻马店市); use one of yicheng, kaifaqu, gaoxinqu, "
    )
    assert all(d in error.message for d in MODEL.districts)


async def test_another_city_takes_its_districts_and_refuses_zhumadians(
    tmp_path: Path, sessions: SessionFactory
) -> None:
    text = (
        "device_id,vendor,kind,district,lat,lon,address,report_interval_s,depth_cm\n"
        "mh-1,acme,manhole,shihe,32.13,114.07,浉河区,,150\n"
        "mh-2,acme,manhole,pingqiao,32.10,114.12,平桥区,,150\n"
        "mh-3,acme,manhole,yicheng,32.98,114.02,驿城区,,150\n"
        "mh-4,acme,manhole,平桥区,32.10,114.12,平桥区,,150\n"
    )
    with model(None, write_city(tmp_path / "city")):
        parsed = parse_device_csv(text)
        report = await import_devices(sessions, parsed.rows)
    assert [str(e) for e in parsed.errors] == [
        "line 4, district: 'yicheng' is not a district of Xinyang (信阳市); use one of "
        f"{', '.join(XINYANG_DISTRICTS)}",
        "line 5, district: '平桥区' is not a district of Xinyang (信阳市); use one of "
        f"{', '.join(XINYANG_DISTRICTS)} (did you mean 'pingqiao'?)",
    ]
    assert report.created == 2
    async with sessions() as session:
        stored = await session.get(Device, "mh-2")
    assert stored is not None and stored.district == "pingqiao"
    # Back in Zhumadian, the same file's Xinyang rows are refused.
    assert [e.line for e in parse_device_csv(text).errors] == [2, 3, 5]


def test_a_kind_added_while_running_is_importable_at_once(tmp_path: Path) -> None:
    """The CSV's kinds and columns are the model's at call time, not at import."""
    folder = tmp_path / "kinds"
    folder.mkdir()
    with model(folder, None):
        before = _errors(NOISE_CSV)
        assert before[0].startswith("line 1, limit_db: unknown column 'limit_db'")
        assert any(e.startswith("line 2, kind: 'noise' is not a kind; use one of") for e in before)
        write_kind(folder)
        assert MODEL.refresh() == ["noise"]
        assert _errors(NOISE_CSV) == []


@pytest.mark.usefixtures("noise_kind")
def test_the_api_form_checks_attribute_names_against_the_kind() -> None:
    device = {
        "device_id": "ns-9",
        "vendor": "quietco",
        "kind": "noise",
        "district": "yicheng",
        "lat": 32.98,
        "lon": 114.02,
        "report_interval_s": 60,
    }
    row, errors = parse_device(device, {"zone_class": "2", "limit_db": 55, "microphones": 2})
    assert errors == [] and row is not None
    assert row.attributes == {"zone_class": "2", "limit_db": 55.0, "microphones": 2}
    row, errors = parse_device(device, {"zone_class": "2", "depth_cm": 10, "lat": 1})
    assert row is None
    assert errors == [
        RowError(
            1,
            "depth_cm",
            "a noise has no attribute depth_cm; a noise has limit_db, zone_class, microphones",
        ),
        RowError(
            1, "lat", "a noise has no attribute lat; a noise has limit_db, zone_class, microphones"
        ),
    ]
    row, errors = parse_device(device, {"limit_db": 55})
    assert row is None
    assert errors == [
        RowError(
            1, "zone_class", "a noise needs zone_class (noise zone class); add it to attributes"
        )
    ]
