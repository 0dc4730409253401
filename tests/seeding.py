"""A registry seeded for a test: the database migrated, the vendors and the devices in."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncEngine

from cityiot.storage.device_csv import parse_device_csv
from cityiot.storage.engine import SessionFactory, make_engine, migrate, sessionmaker
from cityiot.storage.registry import import_devices, upsert_vendor

Vendor = tuple[str, str, str]  # id, name, codec (a SimVendor is one)


async def open_seeded(
    url: str, csv: str, vendors: Iterable[Vendor] = ()
) -> tuple[AsyncEngine, SessionFactory]:
    """Migrate the database at ``url``, register ``vendors`` and import the devices of
    ``csv`` (any error in it fails the test); the caller disposes of the engine."""
    await migrate(url)
    engine = make_engine(url)
    try:
        sessions = sessionmaker(engine)
        for vendor_id, name, codec in vendors:
            await upsert_vendor(sessions, vendor_id, name, codec=codec)
        parsed = parse_device_csv(csv)
        assert not parsed.errors, parsed.errors[:3]
        report = await import_devices(sessions, parsed.rows)
        assert not report.errors, report.errors[:3]
    except BaseException:
        await engine.dispose()
        raise
    return engine, sessions


async def seed_registry(url: str, csv: str, vendors: Iterable[Vendor] = ()) -> None:
    """``open_seeded`` for a database that other processes or stages open themselves."""
    engine, _ = await open_seeded(url, csv, vendors)
    await engine.dispose()
