"""What the ingest uses: the device map with refresh, vendor codecs, presence, dead letters."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, text

from cityiot.ingest.devices import DeviceMap
from cityiot.storage.deadletters import DeadLetterIn, add_dead_letters
from cityiot.storage.device_csv import parse_device_csv
from cityiot.storage.engine import SessionFactory
from cityiot.storage.registry import (
    DeviceEntry,
    import_devices,
    load_devices,
    load_vendor_codecs,
    record_presence,
    upsert_vendor,
)
from cityiot.storage.tables.deadletters import DeadLetter
from cityiot.storage.tables.registry import Device

FLEET = """device_id,vendor,kind,district,lat,lon,address,report_interval_s,depth_cm
MH-1,acme,manhole,yicheng,32.98,114.02,Jiefang Rd,,180
MH-2,acme,manhole,yicheng,32.99,114.03,Renmin Rd,600,200
SL-1,lumen,streetlight,kaifaqu,32.95,114.05,,30,
"""
UTC = dt.UTC


async def _fleet(sessions: SessionFactory, text: str = FLEET) -> None:
    parsed = parse_device_csv(text)
    assert parsed.errors == []
    await import_devices(sessions, parsed.rows)


async def _presence(sessions: SessionFactory) -> dict[str, tuple[str, dt.datetime | None]]:
    async with sessions() as session:
        rows = await session.execute(select(Device.id, Device.status, Device.last_seen))
        return {r.id: (r.status, r.last_seen) for r in rows}


async def test_load_devices_gives_the_ingest_what_it_needs(sessions: SessionFactory) -> None:
    await _fleet(sessions)
    entries = {e.device_id: e for e in await load_devices(sessions)}
    assert set(entries) == {"MH-1", "MH-2", "SL-1"}
    entry = entries["MH-2"]
    assert isinstance(entry, DeviceEntry)
    assert (entry.vendor, entry.kind, entry.district, entry.report_interval_s) == (
        "acme",
        "manhole",
        "yicheng",
        600,
    )
    assert entry.attributes == {"depth_cm": 200.0}
    assert entry.decommissioned is False
    assert entry.updated_at.tzinfo is not None
    with pytest.raises(AttributeError):
        entry.kind = "parking"  # type: ignore[misc]


async def test_load_devices_since_returns_only_changes(sessions: SessionFactory) -> None:
    await _fleet(sessions)
    watermark = max(e.updated_at for e in await load_devices(sessions))
    assert await load_devices(sessions, since=watermark) == []
    await _fleet(sessions, FLEET.replace("Renmin Rd,600", "Renmin Rd,900"))
    changed = await load_devices(sessions, since=watermark)
    assert [(e.device_id, e.report_interval_s) for e in changed] == [("MH-2", 900)]
    with pytest.raises(ValueError, match="timezone-aware"):
        await load_devices(sessions, since=dt.datetime(2025, 1, 1))


async def test_record_presence_does_not_bump_updated_at(sessions: SessionFactory) -> None:
    await _fleet(sessions)
    before = {e.device_id: e.updated_at for e in await load_devices(sessions)}
    watermark = max(before.values())
    t1 = dt.datetime(2025, 11, 23, 8, 0, 0, 123456, tzinfo=UTC)
    await record_presence(sessions, {"MH-1": t1, "SL-1": t1, "NOPE": t1}, set(), {"MH-1", "SL-1"})
    await record_presence(sessions, {}, {"SL-1"}, set())
    assert await load_devices(sessions, since=watermark) == []
    assert {e.device_id: e.updated_at for e in await load_devices(sessions)} == before
    assert await _presence(sessions) == {
        "MH-1": ("online", t1),
        "MH-2": ("unknown", None),
        "SL-1": ("offline", t1),
    }


async def test_record_presence_rewrites_only_rows_whose_status_changes(
    sessions: SessionFactory,
) -> None:
    # After a restart every device "comes online" again; rows already online stay as they
    # are (SQLite: no UPDATE reaches them; PostgreSQL: no new row version, same xmin).
    await _fleet(sessions)
    await record_presence(sessions, {}, set(), {"MH-1", "SL-1"})
    async with sessions() as session, session.begin():
        sqlite = session.bind.dialect.name == "sqlite"
        if sqlite:
            await session.execute(text("CREATE TABLE status_writes (device_id TEXT)"))
            await session.execute(
                text(
                    "CREATE TRIGGER count_status AFTER UPDATE OF status ON devices "
                    "BEGIN INSERT INTO status_writes VALUES (new.id); END"
                )
            )

    async def versions() -> dict[str, str]:
        async with sessions() as session:
            if sqlite:
                rows = await session.execute(
                    text("SELECT device_id, count(*) FROM status_writes GROUP BY device_id")
                )
            else:
                rows = await session.execute(text("SELECT id, xmin::text FROM devices"))
            return {r[0]: str(r[1]) for r in rows}

    before = await versions()
    await record_presence(sessions, {}, {"MH-2"}, {"MH-1", "SL-1"})
    after = await versions()
    changed = {d for d in after if after[d] != before.get(d)}
    assert changed == {"MH-2"}
    assert {d: s for d, (s, _) in (await _presence(sessions)).items()} == {
        "MH-1": "online",
        "MH-2": "offline",
        "SL-1": "online",
    }


async def test_last_seen_only_moves_forward(sessions: SessionFactory) -> None:
    await _fleet(sessions)
    later = dt.datetime(2025, 11, 23, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    earlier = later - dt.timedelta(seconds=1)
    await record_presence(sessions, {"MH-1": later}, set(), set())
    await record_presence(sessions, {"MH-1": earlier}, set(), set())
    status, last_seen = (await _presence(sessions))["MH-1"]
    assert last_seen == later and last_seen is not None and last_seen.utcoffset() == dt.timedelta(0)


async def test_record_presence_handles_many_devices(sessions: SessionFactory) -> None:
    rows = "".join(f"SL-{i},lumen,streetlight,yicheng,32.9,114.0,,60,\n" for i in range(1500))
    await _fleet(sessions, FLEET.splitlines()[0] + "\n" + rows)
    now = dt.datetime.now(UTC)
    ids = {f"SL-{i}" for i in range(1500)}
    await record_presence(sessions, dict.fromkeys(ids, now), set(), ids)
    presence = await _presence(sessions)
    assert all(presence[d] == ("online", now) for d in ids)
    # Again, in statements of many rows: only later times move, unknown ids are ignored.
    earlier, later = now - dt.timedelta(seconds=5), now + dt.timedelta(seconds=5)
    seen = {**dict.fromkeys(ids, earlier), "SL-1234": later, "NOPE": later}
    await record_presence(sessions, seen, set(), set())
    presence = await _presence(sessions)
    assert presence["SL-1234"] == ("online", later) and "NOPE" not in presence
    assert all(presence[d] == ("online", now) for d in ids - {"SL-1234"})


async def test_upsert_vendor_creates_then_updates(sessions: SessionFactory) -> None:
    assert await upsert_vendor(sessions, "hexco", "Hex Co.", codec="hexframe") is True
    assert await upsert_vendor(sessions, "hexco", "Hex Company", codec="json") is False
    assert await load_vendor_codecs(sessions) == {"hexco": "json"}
    with pytest.raises(ValueError, match="reserved"):
        await upsert_vendor(sessions, "alerts", "x")
    with pytest.raises(ValueError, match="starts with 'cityiot'"):
        await upsert_vendor(sessions, "cityiot-ingest", "x")
    with pytest.raises(ValueError, match="not valid"):
        await upsert_vendor(sessions, "a b", "x")
    with pytest.raises(ValueError, match="vendor name"):
        await upsert_vendor(sessions, "ok", "  ")


async def test_dead_letters_are_stored(sessions: SessionFactory) -> None:
    at = dt.datetime(2025, 11, 23, 0, 0, 1, tzinfo=UTC)
    letters = [
        DeadLetterIn("city/acme/MH-1/telemetry", "acme", "MH-1", b"{bad", 4, "not JSON", at),
        DeadLetterIn("city/x", None, None, b"\x00" * 16, 1_000_000, "topic outside city/...", at),
    ]
    await add_dead_letters(sessions, letters)
    await add_dead_letters(sessions, [])
    async with sessions() as session:
        stored = (await session.scalars(select(DeadLetter).order_by(DeadLetter.id))).all()
    assert [
        (d.topic, d.vendor, d.device_id, d.payload, d.payload_size, d.reason) for d in stored
    ] == [
        ("city/acme/MH-1/telemetry", "acme", "MH-1", b"{bad", 4, "not JSON"),
        ("city/x", None, None, b"\x00" * 16, 1_000_000, "topic outside city/..."),
    ]
    assert all(d.received_at == at for d in stored)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_device_map_orders_ids_as_the_table_holds_them(sessions: SessionFactory) -> None:
    fleet = """device_id,vendor,kind,district,lat,lon,address,report_interval_s,depth_cm
Z-9,acme,manhole,yicheng,32.98,114.02,,,180
A-1,acme,manhole,yicheng,32.98,114.02,,,180
M-5,acme,manhole,yicheng,32.98,114.02,,,180
"""
    await _fleet(sessions, fleet)
    devices = DeviceMap(sessions)
    await devices.refresh()
    assert devices.in_table_order({"M-5", "GONE", "Z-9", "A-1"}) == [["Z-9", "A-1", "M-5", "GONE"]]
    assert devices.in_table_order({"M-5", "Z-9"}, set(), {"A-1", "Z-9"}) == [
        ["Z-9", "M-5"],
        [],
        ["Z-9", "A-1"],
    ]
    # A device changed later keeps its place; one added later comes last, as its row does.
    await _fleet(sessions, fleet.replace("Z-9,acme,manhole,yicheng,32.98,114.02,,,180", "Z-9,acme,manhole,yicheng,32.98,114.02,,600,180") + "B-2,acme,manhole,yicheng,32.98,114.02,,,180\n")  # fmt: skip
    devices._last_read = None  # a full reload, as at a restart
    await devices.refresh()
    assert devices.devices["Z-9"].report_interval_s == 600
    assert devices.in_table_order({"B-2", "A-1", "Z-9"}) == [["Z-9", "A-1", "B-2"]]
