"""Dead letters: storing rejected messages, and pruning the oldest beyond the caps."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import Table, delete, func, insert, select

from cityiot.storage.engine import SessionFactory
from cityiot.storage.tables.deadletters import DeadLetter
from cityiot.storage.utc import require_aware, utcnow
from cityiot.storage.writes import writing

PRUNE_CHUNK = 2000  # dead letters deleted per transaction: each a short hold of the write turn


@dataclass(frozen=True, slots=True)
class DeadLetterIn:
    """A rejected message to store; ``payload`` is already cut to the stored bound."""

    topic: str
    vendor: str | None
    device_id: str | None
    payload: bytes
    payload_size: int
    reason: str
    received_at: dt.datetime = field(default_factory=utcnow)


async def add_dead_letters(
    session_factory: SessionFactory, letters: Sequence[DeadLetterIn]
) -> None:
    """Store rejected messages, all in one transaction."""
    if not letters:
        return
    params = [
        {
            "topic": d.topic,
            "vendor": d.vendor,
            "device_id": d.device_id,
            "payload": d.payload,
            "payload_size": d.payload_size,
            "reason": d.reason,
            "received_at": require_aware(d.received_at, "received_at"),
        }
        for d in letters
    ]
    async with writing(session_factory) as session:
        conn = await session.connection()
        await conn.execute(insert(cast(Table, DeadLetter.__table__)), params)


@dataclass(frozen=True, slots=True)
class DeadLetterCaps:
    """How many dead letters are kept: at most ``max_rows`` rows and ``max_bytes`` bytes of
    stored payload; the oldest go first."""

    max_rows: int
    max_bytes: int


async def prune_dead_letters(session_factory: SessionFactory, caps: DeadLetterCaps) -> int:
    """Delete the oldest dead letters beyond ``caps``; returns how many were deleted.

    Ids only grow, so the newest ``max_rows`` all lie above ``newest id - max_rows`` (fewer
    when a rolled-back insert left a gap). The byte cutoff is found by a running sum of
    ``length(payload)`` from the newest down, read outside the write turn; the deletes go
    ``PRUNE_CHUNK`` rows a transaction, so no alert waits behind one large delete. SQLite
    reuses the pages freed for later rows, so its file stops growing at about the caps.
    """
    async with session_factory() as session:
        newest = await session.scalar(select(func.max(DeadLetter.id)))
        if newest is None:
            return 0
        cutoff = newest - caps.max_rows  # ids up to here go
        newer = (
            select(
                DeadLetter.id.label("id"),
                func.sum(func.length(DeadLetter.payload))
                .over(order_by=DeadLetter.id.desc())
                .label("newer_bytes"),
            )
            .where(DeadLetter.id > cutoff)
            .subquery()
        )
        over_bytes = await session.scalar(
            select(func.max(newer.c.id)).where(newer.c.newer_bytes > caps.max_bytes)
        )
    if over_bytes is not None:
        cutoff = max(cutoff, over_bytes)
    deleted = 0
    table = cast(Table, DeadLetter.__table__)
    oldest_first = select(table.c.id).where(table.c.id <= cutoff).order_by(table.c.id)
    while True:
        async with writing(session_factory) as session:
            conn = await session.connection()
            result = await conn.execute(
                delete(table).where(table.c.id.in_(oldest_first.limit(PRUNE_CHUNK)))
            )
        deleted += result.rowcount
        if result.rowcount < PRUNE_CHUNK:
            break
    return deleted
