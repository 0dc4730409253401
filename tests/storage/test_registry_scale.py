"""A big registry: errors still reported row by row in a large import, the import's rows as
the ORM would write them, and the ingest's device map loaded in chunks, compact and equal to
the registry after a refresh."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
from typing import Any

from sqlalchemy import insert, select, update

from cityiot.ingest.devices import DeviceMap, KnownDevice
from cityiot.simulators.fleet import DEFAULT_VENDORS, LINK_VENDORS, Fleet
from cityiot.storage.device_csv import parse_device_csv
from cityiot.storage.engine import SessionFactory
from cityiot.storage.influx import series_key
from cityiot.storage.registry import _ROW_FIELDS, import_devices, iter_devices
from cityiot.storage.tables.registry import Device
from cityiot.storage.utc import utcnow

BIG = 20_000
# Line → (column, value) of the rows spoilt in the big file (line 2 is the first device).
SPOILT = {
    2: ("lat", "north"),
    777: ("kind", "manhol"),
    5_001: ("district", "atlantis"),
    5_002: ("report_interval_s", "often"),
    12_345: ("lon", "999"),
    BIG + 1: ("install_date", "yesterday"),
}


def _csv(fleet: Fleet, spoilt: dict[int, tuple[str, str]] | None = None) -> str:
    rows = list(csv.reader(io.StringIO(fleet.csv_text())))
    header = rows[0]
    for line, (column, value) in (spoilt or {}).items():
        rows[line - 1][header.index(column)] = value
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


async def _rows(sessions: SessionFactory) -> dict[str, dict[str, Any]]:
    async with sessions() as session:
        found = await session.execute(select(Device))
        return {
            d.id: {c.name: getattr(d, c.key) for c in Device.__table__.columns}
            for d in found.scalars()
        }


async def test_every_bad_row_of_a_big_file_is_reported_with_its_line(
    sessions: SessionFactory,
) -> None:
    fleet = Fleet.generate(BIG, seed=3)
    parsed = parse_device_csv(_csv(fleet, SPOILT))
    assert [(e.line, e.column) for e in parsed.errors] == [
        (line, column) for line, (column, _) in sorted(SPOILT.items())
    ]
    report = await import_devices(sessions, parsed.rows)
    assert report.errors == []
    assert report.created == BIG - len(SPOILT)
    imported = await _rows(sessions)
    bad_ids = {fleet.devices[line - 2].device_id for line in SPOILT}
    assert set(imported) == {d.device_id for d in fleet.devices} - bad_ids


async def test_imported_rows_equal_what_the_orm_insert_writes(sessions: SessionFactory) -> None:
    """The import's driver-level insert against the ORM bulk insert of the same rows (what
    the import did before), column by column; the times compared apart."""
    # Every kind, with identities on LoRaWAN and NB-IoT, and install dates.
    fleet = Fleet.generate(1_200, seed=5, vendors=(*DEFAULT_VENDORS, *LINK_VENDORS))
    parsed = parse_device_csv(fleet.csv_text())
    assert parsed.errors == []
    half = len(parsed.rows) // 2
    ours, theirs = parsed.rows[:half], parsed.rows[half:]
    await import_devices(sessions, ours)
    # The other half by the ORM's bulk insert, as the import wrote rows before.
    now = utcnow()
    async with sessions() as session, session.begin():
        await session.execute(
            insert(Device),
            [
                {
                    "id": r.device_id,
                    "vendor_id": r.vendor,
                    **{f: getattr(r, f) for f in _ROW_FIELDS},
                    "created_at": now,
                    "updated_at": now,
                }
                for r in theirs
            ],
        )
    rows = await _rows(sessions)
    assert len(rows) == len(parsed.rows)
    by_orm = [rows[r.device_id] for r in theirs]
    by_import = [rows[r.device_id] for r in ours]
    # Swap the halves through the import: the import's rows of the ORM's devices must match.
    async with sessions() as session, session.begin():
        await session.execute(
            Device.__table__.delete().where(Device.id.in_([r.device_id for r in theirs]))
        )
    await import_devices(sessions, theirs)
    again = await _rows(sessions)
    times = ("created_at", "updated_at")
    for before in by_orm:
        after = again[before["id"]]
        assert {k: v for k, v in after.items() if k not in times} == {
            k: v for k, v in before.items() if k not in times
        }
        assert all(isinstance(after[t], dt.datetime) and after[t].tzinfo for t in times)
        assert after["created_at"] == after["updated_at"]
    assert {r["status"] for r in by_import} == {"unknown"}
    assert any(r["dev_eui"] for r in by_import) and any(r["imei"] for r in by_import)
    assert all(r["install_date"] is not None for r in by_import)


async def test_the_map_is_loaded_in_chunks(sessions: SessionFactory) -> None:
    fleet = Fleet.generate(2_500, seed=7)
    await import_devices(sessions, parse_device_csv(fleet.csv_text()).rows)
    sizes = [len(chunk) async for chunk in iter_devices(sessions, chunk=1_000)]
    assert sizes == [1_000, 1_000, 500]


async def test_the_map_after_a_refresh_equals_the_registry(sessions: SessionFactory) -> None:
    fleet = Fleet.generate(3_000, seed=9, vendors=(*DEFAULT_VENDORS, *LINK_VENDORS))
    await import_devices(sessions, parse_device_csv(fleet.csv_text()).rows)
    devices = DeviceMap(sessions)
    assert await devices.refresh() == 3_000
    # 300 devices change through the registry as the import does, one is decommissioned.
    moved = tuple(
        dataclasses.replace(d, address=d.address + " (moved)", report_interval_s=7_200)
        for d in fleet.devices[::10]
    )
    report = await import_devices(
        sessions, parse_device_csv(dataclasses.replace(fleet, devices=moved).csv_text()).rows
    )
    assert report.updated == 300
    gone = fleet.devices[1].device_id
    async with sessions() as session, session.begin():
        await session.execute(
            update(Device)
            .where(Device.id == gone)
            .values(decommissioned_at=utcnow(), updated_at=utcnow())
        )
    assert await devices.refresh() == 301
    rows = await _rows(sessions)
    assert set(devices.devices) == set(rows)
    for device_id, row in rows.items():
        known = devices.devices[device_id]
        assert (
            known.vendor,
            known.kind,
            known.district,
            known.report_interval_s,
            dict(known.attributes),
            known.decommissioned,
            known.updated_at,
            known.dev_eui,
            known.imei,
            known.onenet_dev_id,
        ) == (
            row["vendor_id"],
            row["kind"],
            row["district"],
            row["report_interval_s"],
            row["attributes"],
            row["decommissioned_at"] is not None,
            row["updated_at"],
            row["dev_eui"],
            row["imei"],
            row["onenet_dev_id"],
        )
        tags = {"device_id": device_id, "district": known.district, "vendor": known.vendor}
        assert known.series_key == series_key(known.kind, tags)
        assert known.status_key == series_key("device_status", {**tags, "kind": known.kind})
    assert devices.devices[gone].decommissioned
    assert {d.device_id for d in moved} <= {
        i for i, k in devices.devices.items() if k.report_interval_s == 7_200
    }
    with_eui = [d for d in fleet.devices if d.dev_eui]
    assert with_eui
    for d in with_eui:
        assert devices.by_dev_eui[d.dev_eui.upper()].device_id == d.device_id


async def test_the_map_shares_what_devices_hold_alike(sessions: SessionFactory) -> None:
    """A million entries fit in memory because only what differs per device is stored: one
    object per vendor, kind, district, import stamp and text attribute value, and no text
    series keys kept beside the encoded one."""
    fleet = Fleet.generate(2_000, seed=13)
    await import_devices(sessions, parse_device_csv(fleet.csv_text()).rows)
    devices = DeviceMap(sessions)
    await devices.refresh()
    known = list(devices.devices.values())

    def objects(field: str) -> int:
        return len({id(getattr(k, field)) for k in known})

    def values(field: str) -> int:
        return len({getattr(k, field) for k in known})

    for field in ("vendor", "kind", "district", "updated_at"):
        assert objects(field) == values(field)
    assert values("updated_at") == 1  # one import, one stamp
    texts = [(k, v) for k in known for k, v in k.attributes.items() if isinstance(v, str)]
    assert texts
    assert len({id(v) for _, v in texts}) == len({v for _, v in texts})
    assert "series_key" not in KnownDevice.__slots__
    assert "status_key" not in KnownDevice.__slots__
