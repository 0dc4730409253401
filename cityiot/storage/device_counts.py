"""Devices in service counted per kind, district and status, kept by the database itself.

Triggers on ``devices`` (migration 0015) keep ``device_counts`` in step with every insert,
delete and change of kind, district, status or decommissioning, whoever writes — the API,
the import, the ingest's presence statements — so the console's first tile reads a few
hundred rows instead of counting a million. On SQLite (one writer at a time) they keep one
row per key. On PostgreSQL they append signed rows instead, so that concurrent writers never
wait on, or deadlock over, one hot counter row; the count of a key is the sum of its rows, and
a reader that finds many rows folds them (:func:`counts`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from cityiot.storage.tables.registry import DeviceCount

# Rows beyond one per key at which a PostgreSQL reader folds them.
FOLD_ABOVE_ROWS = 2_000

_FOLD_POSTGRESQL = text(
    "WITH folded AS (DELETE FROM device_counts RETURNING kind, district, status, devices) "
    "INSERT INTO device_counts (kind, district, status, devices) "
    "SELECT kind, district, status, sum(devices) FROM folded "
    "GROUP BY kind, district, status HAVING sum(devices) <> 0"
)


@dataclass(frozen=True, slots=True)
class Count:
    """Devices in service (not decommissioned) of one kind and district with one status."""

    kind: str
    district: str
    status: str
    devices: int


async def counts(
    session: AsyncSession,
    kinds: Iterable[str] | None = None,
    districts: Iterable[str] | None = None,
) -> list[Count]:
    """The counts, narrowed to ``kinds`` and ``districts`` when given (a grant); keys with
    no device left are not listed. On PostgreSQL, folds the rows when they have piled up."""
    stmt = select(
        DeviceCount.kind,
        DeviceCount.district,
        DeviceCount.status,
        func.sum(DeviceCount.devices),
        func.count(),
    ).group_by(DeviceCount.kind, DeviceCount.district, DeviceCount.status)
    if kinds is not None:
        stmt = stmt.where(DeviceCount.kind.in_(sorted(kinds)))
    if districts is not None:
        stmt = stmt.where(DeviceCount.district.in_(sorted(districts)))
    rows = (await session.execute(stmt)).all()
    if sum(r[4] for r in rows) - len(rows) > FOLD_ABOVE_ROWS:
        await fold(session)
    return [Count(r[0], r[1], r[2], int(r[3])) for r in rows if r[3]]


async def fold(session: AsyncSession) -> None:
    """Sum PostgreSQL's appended rows into one per key (nothing to do on SQLite). Safe while
    others write or fold: each row is folded by the one statement that deletes it."""
    if session.get_bind().dialect.name != "postgresql":
        return
    await session.execute(_FOLD_POSTGRESQL)
    await session.commit()
