"""Importing devices into the registry: create, update, unchanged, vendors, conflicts."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update

from cityiot.storage.device_csv import parse_device_csv
from cityiot.storage.engine import SessionFactory
from cityiot.storage.registry import ImportReport, import_devices, load_devices, load_vendor_codecs
from cityiot.storage.tables.registry import Device, Vendor

HEADER = (
    "device_id,vendor,kind,district,lat,lon,address,report_interval_s,"
    "depth_cm,lot_id,max_stay_min,zone"
)
FLEET = f"""{HEADER}
MH-1,acme,manhole,yicheng,32.98,114.02,"Jiefang Rd, No. 1",,180,,,
MH-2,acme,manhole,yicheng,32.99,114.03,Renmin Rd,600,200,,,
SL-1,lumen,streetlight,kaifaqu,32.95,114.05,解放路 12 号,30,,,,
PK-1,acme,parking,xincai,32.75,114.98,Lot A,,,lot-a,120,
"""


async def _import(sessions: SessionFactory, text: str, create_vendors: bool = True) -> ImportReport:
    parsed = parse_device_csv(text)
    assert parsed.errors == []
    return await import_devices(sessions, parsed.rows, create_vendors=create_vendors)


async def _device(sessions: SessionFactory, device_id: str) -> Device:
    async with sessions() as session:
        device = await session.get(Device, device_id)
        assert device is not None
        return device


async def test_first_import_creates_devices_and_vendors(sessions: SessionFactory) -> None:
    report = await _import(sessions, FLEET)
    assert (report.created, report.updated, report.unchanged) == (4, 0, 0)
    assert report.vendors_created == ["acme", "lumen"]
    assert report.errors == []
    assert await load_vendor_codecs(sessions) == {"acme": "json", "lumen": "json"}
    async with sessions() as session:
        acme = await session.get(Vendor, "acme")
        assert acme is not None and acme.name == "acme"
    manhole = await _device(sessions, "MH-1")
    assert (manhole.vendor_id, manhole.kind, manhole.district) == ("acme", "manhole", "yicheng")
    assert (manhole.lat, manhole.lon, manhole.address) == (32.98, 114.02, "Jiefang Rd, No. 1")
    assert manhole.report_interval_s == 300
    assert manhole.attributes == {"depth_cm": 180.0}
    assert manhole.status == "unknown" and manhole.last_seen is None
    assert manhole.created_at.tzinfo is not None
    assert (await _device(sessions, "SL-1")).address == "解放路 12 号"
    assert (await _device(sessions, "PK-1")).attributes == {
        "lot_id": "lot-a",
        "max_stay_min": 120.0,
    }


async def test_reimport_of_the_same_file_changes_nothing(sessions: SessionFactory) -> None:
    await _import(sessions, FLEET)
    before = {e.device_id: e.updated_at for e in await load_devices(sessions)}
    report = await _import(sessions, FLEET)
    assert (report.created, report.updated, report.unchanged) == (0, 0, 4)
    assert report.vendors_created == []
    assert {e.device_id: e.updated_at for e in await load_devices(sessions)} == before


async def test_changed_rows_are_updated_and_new_ones_created(sessions: SessionFactory) -> None:
    await _import(sessions, FLEET)
    before = (await _device(sessions, "MH-2")).updated_at
    changed = FLEET.replace("Renmin Rd,600,200", "Renmin Rd,600,250") + (
        "WT-1,aqua,water,shifanqu,33.01,114.0,Pump 3,60,,,,Z-north\n"
    )
    report = await _import(sessions, changed)
    assert (report.created, report.updated, report.unchanged) == (1, 1, 3)
    assert report.vendors_created == ["aqua"]
    device = await _device(sessions, "MH-2")
    assert device.attributes == {"depth_cm": 250.0}
    assert device.updated_at > before
    assert (await _device(sessions, "WT-1")).attributes == {"zone": "Z-north"}


async def test_a_column_the_file_lacks_keeps_the_registered_value(sessions: SessionFactory) -> None:
    await _import(sessions, FLEET)
    without_attributes = (
        "device_id,vendor,kind,district,lat,lon,address,report_interval_s,install_date\n"
        'MH-1,acme,manhole,yicheng,32.98,114.02,"Jiefang Rd, No. 1",,2023-05-04\n'
    )
    report = await _import(sessions, without_attributes)
    assert (report.created, report.updated, report.unchanged) == (0, 1, 0)
    device = await _device(sessions, "MH-1")
    assert device.attributes == {"depth_cm": 180.0}
    assert device.install_date == dt.date(2023, 5, 4)
    # An empty cell in a column the file has clears the value.
    report = await _import(sessions, FLEET.replace('No. 1",,180', 'No. 1",,'))
    assert report.updated == 1
    device = await _device(sessions, "MH-1")
    assert device.attributes == {}
    assert device.install_date == dt.date(2023, 5, 4)


async def test_device_of_another_vendor_is_an_error_not_a_move(sessions: SessionFactory) -> None:
    await _import(sessions, FLEET)
    moved = FLEET.replace("MH-2,acme", "MH-2,rival")
    report = await _import(sessions, moved)
    assert (report.created, report.updated, report.unchanged) == (0, 0, 3)
    assert [(e.line, e.column) for e in report.errors] == [(3, "vendor")]
    assert "'MH-2' is registered under vendor 'acme', not 'rival'" in report.errors[0].message
    assert (await _device(sessions, "MH-2")).vendor_id == "acme"


async def test_unknown_vendor_without_creation_is_an_error(sessions: SessionFactory) -> None:
    report = await _import(sessions, FLEET, create_vendors=False)
    assert report.created == 0
    assert report.vendors_created == []
    assert [e.line for e in report.errors] == [2, 3, 4, 5]
    assert "vendor 'acme' is not registered" in report.errors[0].message
    assert await load_devices(sessions) == []


async def test_bad_rows_are_reported_and_the_rest_imports(sessions: SessionFactory) -> None:
    text = FLEET + (
        "MH-3,acme,manhole,yichen,32.98,114.02,bad district,,150,,,\n"
        "MH-4,alerts,manhole,yicheng,32.98,114.02,reserved vendor,,150,,,\n"
        "MH-5,acme,manhole,yicheng,32.98,114.02,ok,,150,,,\n"
    )
    parsed = parse_device_csv(text)
    assert [(e.line, e.column) for e in parsed.errors] == [(6, "district"), (7, "vendor")]
    report = await import_devices(sessions, parsed.rows)
    assert report.created == 5
    assert {e.device_id for e in await load_devices(sessions)} == {
        "MH-1",
        "MH-2",
        "SL-1",
        "PK-1",
        "MH-5",
    }


async def test_decommissioned_device_is_updated_but_stays_so(sessions: SessionFactory) -> None:
    await _import(sessions, FLEET)
    async with sessions() as session, session.begin():
        await session.execute(
            update(Device)
            .where(Device.id == "SL-1")
            .values(decommissioned_at=dt.datetime.now(dt.UTC))
        )
    report = await _import(sessions, FLEET.replace("12 号,30", "12 号,45"))
    assert report.updated == 1
    assert [(w.line, w.column) for w in report.warnings] == [(4, "device_id")]
    device = await _device(sessions, "SL-1")
    assert device.report_interval_s == 45 and device.decommissioned_at is not None


async def test_large_import_crosses_query_chunks(sessions: SessionFactory) -> None:
    rows = "".join(f"SL-{i},lumen,streetlight,yicheng,32.9,114.0,,60,,,,\n" for i in range(1234))
    report = await _import(sessions, HEADER + "\n" + rows)
    assert report.created == 1234
    report = await _import(sessions, HEADER + "\n" + rows)
    assert report.unchanged == 1234
    async with sessions() as session:
        count = len((await session.scalars(select(Device.id))).all())
    assert count == 1234
