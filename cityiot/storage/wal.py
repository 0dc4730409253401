"""Checkpointing SQLite's write-ahead log, so that it starts over instead of growing."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from typing import Any

from cityiot.storage.engine import sqlite_file
from cityiot.storage.writes import write_turn

log = logging.getLogger("cityiot.db")


CHECKPOINT_EVERY_S = 5.0  # how often a process's writer checkpoints the SQLite WAL
CHECKPOINT_TRIES = 4  # passes alongside the writers before one in the write turn


async def checkpoint(session_factory: Any) -> tuple[int, int] | None:
    """Copy SQLite's write-ahead log back into the database file, so the log starts over
    (and is cut to ``WAL_SIZE_LIMIT``) at the next write; (frames in the log, frames copied)
    of the last pass. None on PostgreSQL and for an in-memory database.

    The direct connections never checkpoint (:func:`direct_sessions`), and the log only
    starts over when a checkpoint has copied all of it before the next write begins: the
    ingest's latest values and last-seen times, written on and on, grew it by a GB a
    minute at 10,000 readings/s. So, on a thread of its own (the loop runs on): a pass
    copies what is there while the writers go on, then passes copy what they added
    meanwhile, until one finds nothing new (the next write starts the log over). After
    ``CHECKPOINT_TRIES`` such passes the last one is made in this process's write turn:
    that pass ends with an fsync, 10–45 ms in the bench's latency runs, which an alert
    would wait for.
    """
    database = sqlite_file(session_factory)
    if database is None:
        return None

    def run() -> tuple[int, int]:
        conn = sqlite3.connect(database, timeout=0, check_same_thread=False)
        try:
            _busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            return int(frames), int(copied)
        finally:
            conn.close()

    started = time.perf_counter()
    first = last = await asyncio.to_thread(run)
    passes, in_turn_ms = 1, 0.0
    while True:
        again = await asyncio.to_thread(run)
        passes += 1
        if again[0] == again[1] == last[0]:  # nothing written since the last pass began
            break
        last = again
        if passes > CHECKPOINT_TRIES:
            async with write_turn(session_factory):
                turn = time.perf_counter()
                again = await asyncio.to_thread(run)
                in_turn_ms = (time.perf_counter() - turn) * 1000
            passes += 1
            break
    log.debug(
        "event=wal_checkpoint frames=%d passes=%d ms=%.1f in_write_turn_ms=%.1f",
        first[0],
        passes,
        (time.perf_counter() - started) * 1000,
        in_turn_ms,
    )
    return again
