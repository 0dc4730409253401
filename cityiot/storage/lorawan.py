"""LoRaWAN devices' ChirpStack applications (docs/design.md §4a), learned from uplinks and
read when a command's downlink is published; and the commands a restarted ingest still
waits to see acknowledged."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import select

from cityiot.storage.registry import dialect_insert
from cityiot.storage.tables.control import Command
from cityiot.storage.tables.lorawan import LorawanApplication
from cityiot.storage.utc import utcnow
from cityiot.storage.writes import writing


async def remember_applications(session_factory: Any, applications: Mapping[str, str]) -> None:
    """Record each DevEUI's application id (DevEUI in upper case), replacing an older one."""
    if not applications:
        return
    now = utcnow()
    rows = [
        {"dev_eui": eui, "application_id": app, "seen_at": now} for eui, app in applications.items()
    ]
    async with writing(session_factory) as session:
        stmt = dialect_insert(session)(LorawanApplication)
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=["dev_eui"],
                set_={"application_id": stmt.excluded.application_id, "seen_at": now},
            ),
            rows,
        )


async def load_applications(session_factory: Any) -> dict[str, str]:
    """DevEUI (upper case) → application id, of every device seen so far."""
    async with session_factory() as session:
        rows = await session.execute(
            select(LorawanApplication.dev_eui, LorawanApplication.application_id)
        )
        return {row.dev_eui: row.application_id for row in rows}


async def unacked_commands(
    session_factory: Any, device_ids: Collection[str], since: dt.datetime
) -> list[tuple[str, str, str, dt.datetime]]:
    """(command id, device id, vendor, sent at) of the commands to ``device_ids`` sent since
    ``since`` that no ack has answered yet, oldest first."""
    if not device_ids:
        return []
    query = (
        select(Command.id, Command.device_id, Command.vendor, Command.sent_at)
        .where(Command.acked_at.is_(None), Command.ok.is_(None), Command.sent_at >= since)
        .order_by(Command.sent_at)
    )
    wanted = set(device_ids)
    async with session_factory() as session:
        rows = await session.execute(query)
        return [
            (row.id, row.device_id, row.vendor, row.sent_at)
            for row in rows
            if row.device_id in wanted
        ]
