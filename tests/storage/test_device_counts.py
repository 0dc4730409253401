"""``device_counts``, kept by triggers, always equals counting ``devices`` — after imports,
the ingest's presence statements, decommissioning, moves, deletes and PostgreSQL's folding —
and migration 0015 fills it for a registry that already has devices."""

from __future__ import annotations

import datetime as dt
from typing import Any

from alembic import command
from sqlalchemy import Connection, delete, func, select, text, update

from cityiot.storage.device_counts import Count, counts, fold
from cityiot.storage.device_csv import parse_device_csv
from cityiot.storage.engine import make_engine, migrate, sessionmaker
from cityiot.storage.migrations import alembic_config
from cityiot.storage.registry import import_devices, record_presence
from cityiot.storage.tables.registry import Device, DeviceCount

HEADER = "device_id,vendor,kind,district,lat,lon,address,report_interval_s,depth_cm,lot_id\n"


def _csv(rows: list[tuple[str, str, str]]) -> str:
    lines = [
        f"{d},acme,{k},{district},32.98,114.02,somewhere,300,"
        f"{'200' if k == 'manhole' else ''},{'P1' if k == 'parking' else ''}"
        for d, k, district in rows
    ]
    return HEADER + "\n".join(lines) + "\n"


FLEET = [
    *((f"mh-{i}", "manhole", "yicheng") for i in range(6)),
    *((f"mh-x{i}", "manhole", "xiping") for i in range(3)),
    *((f"pk-{i}", "parking", "yicheng") for i in range(4)),
]


async def _register(sessions: Any, rows: list[tuple[str, str, str]]) -> None:
    parsed = parse_device_csv(_csv(rows))
    assert not parsed.errors
    report = await import_devices(sessions, parsed.rows, create_vendors=True)
    assert not report.errors


async def _counted(sessions: Any, **grant: Any) -> set[Count]:
    async with sessions() as session:
        return set(await counts(session, **grant))


async def _grouped(sessions: Any) -> set[Count]:
    """What the counts must say: a GROUP BY over the devices in service."""
    stmt = (
        select(Device.kind, Device.district, Device.status, func.count())
        .where(Device.decommissioned_at.is_(None))
        .group_by(Device.kind, Device.district, Device.status)
    )
    async with sessions() as session:
        return {Count(*row) for row in await session.execute(stmt)}


async def test_counts_follow_every_change_to_the_registry(sessions: Any) -> None:
    await _register(sessions, FLEET)
    assert (
        await _counted(sessions)
        == await _grouped(sessions)
        == {
            Count("manhole", "yicheng", "unknown", 6),
            Count("manhole", "xiping", "unknown", 3),
            Count("parking", "yicheng", "unknown", 4),
        }
    )
    # The ingest's presence statements (raw SQL through the driver).
    now = dt.datetime.now(dt.UTC)
    await record_presence(
        sessions, {"mh-0": now, "mh-1": now}, offline=["mh-2"], online=["mh-0", "mh-1", "pk-0"]
    )
    await record_presence(sessions, {}, offline=["mh-1"], online=["mh-0"])  # mh-0 unchanged
    assert await _counted(sessions) == await _grouped(sessions)
    assert Count("manhole", "yicheng", "offline", 2) in await _counted(sessions)
    async with sessions() as session, session.begin():
        # decommission one, move one to another district, delete one
        await session.execute(
            update(Device).where(Device.id == "mh-3").values(decommissioned_at=now)
        )
        await session.execute(update(Device).where(Device.id == "pk-1").values(district="xiping"))
        await session.execute(delete(Device).where(Device.id == "mh-x0"))
        # a decommissioned device's status change is not counted
        await session.execute(update(Device).where(Device.id == "mh-3").values(status="online"))
    assert await _counted(sessions) == await _grouped(sessions)
    # recommissioned, re-imported with a new district, new devices added
    async with sessions() as session, session.begin():
        await session.execute(
            update(Device).where(Device.id == "mh-3").values(decommissioned_at=None)
        )
    await _register(sessions, [("mh-4", "manhole", "queshan"), ("mh-new", "manhole", "biyang")])
    grouped = await _grouped(sessions)
    assert await _counted(sessions) == grouped
    assert sum(c.devices for c in grouped) == len(FLEET) - 1 + 1
    # a grant narrows the counts
    assert await _counted(sessions, kinds={"parking"}, districts={"xiping"}) == {
        Count("parking", "xiping", "unknown", 1)
    }


async def test_folding_keeps_the_counts(sessions: Any) -> None:
    await _register(sessions, FLEET)
    now = dt.datetime.now(dt.UTC)
    for turn in range(4):  # devices flapping: many signed rows on PostgreSQL
        offline, online = (["mh-0", "pk-2"], []) if turn % 2 == 0 else ([], ["mh-0", "pk-2"])
        await record_presence(sessions, {"mh-0": now}, offline=offline, online=online)
    before = await _counted(sessions)
    async with sessions() as session:
        await fold(session)
        per_key = (
            select(func.count())
            .select_from(DeviceCount)
            .group_by(DeviceCount.kind, DeviceCount.district, DeviceCount.status)
        )
        rows_per_key = set((await session.execute(per_key)).scalars())
    assert await _counted(sessions) == before == await _grouped(sessions)
    assert rows_per_key == {1}  # folded: one row per key


def _to(revision: str) -> Any:
    def upgrade(conn: Connection) -> None:
        command.upgrade(alembic_config(conn), revision)

    return upgrade


async def test_migration_fills_the_counts_of_a_registry_with_devices(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_to("0014"))
        sessions = sessionmaker(engine)
        async with sessions() as session, session.begin():
            await session.execute(
                text(
                    "INSERT INTO vendors (id, name, codec, created_at) VALUES (:v, :v, 'json', :t)"
                ),
                {"v": "acme", "t": dt.datetime(2026, 1, 1)},
            )
            for n, (kind, district, status, gone) in enumerate(
                [
                    ("manhole", "yicheng", "online", False),
                    ("manhole", "yicheng", "online", False),
                    ("manhole", "yicheng", "offline", False),
                    ("parking", "xiping", "unknown", False),
                    ("parking", "xiping", "online", True),
                ]
            ):
                await session.execute(
                    text(
                        "INSERT INTO devices (id, vendor_id, kind, district, lat, lon, address, "
                        "report_interval_s, attributes, status, decommissioned_at, created_at, "
                        "updated_at) VALUES (:id, 'acme', :kind, :district, 33, 114, '', 300, "
                        "'{}', :status, :gone, :t, :t)"
                    ),
                    {
                        "id": f"d-{n}",
                        "kind": kind,
                        "district": district,
                        "status": status,
                        "gone": dt.datetime(2026, 1, 2) if gone else None,
                        "t": dt.datetime(2026, 1, 1),
                    },
                )
        await migrate(db_url)
        assert (
            await _counted(sessions)
            == await _grouped(sessions)
            == {
                Count("manhole", "yicheng", "online", 2),
                Count("manhole", "yicheng", "offline", 1),
                Count("parking", "xiping", "unknown", 1),
            }
        )
        # and the triggers run from then on
        async with sessions() as session, session.begin():
            await session.execute(update(Device).where(Device.id == "d-3").values(status="online"))
        assert Count("parking", "xiping", "online", 1) in await _counted(sessions)
    finally:
        await engine.dispose()
