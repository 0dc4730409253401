"""How a process writes to the SQL store: one writer at a time, alerts first, in short
transactions on the event loop's own thread, bulk rows in slices.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import itertools
import logging
import re
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.orm import sessionmaker as sync_sessionmaker

from cityiot.storage.engine import json_text, sqlite_file, sqlite_pragmas
from cityiot.storage.utc import as_utc

log = logging.getLogger("cityiot.db")
T = TypeVar("T")


def driver_time(value: dt.datetime, dialect: Dialect) -> Any:
    """``value`` as :class:`UTCDateTime` hands it to the driver, for :func:`execute_rows`:
    UTC text on SQLite (the format SQLAlchemy stores and compares), aware elsewhere."""
    value = as_utc(value)
    if dialect.name == "sqlite":  # as SQLAlchemy writes it: YYYY-MM-DD HH:MM:SS.ffffff
        return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    return value


# Rows per transaction of a bulk write through execute_rows (latest values, last seen): a
# few ms of SQLite each, so a writer waiting for its write_turn waits for one slice at most,
# and a reading arriving meanwhile for one slice of the loop. Larger slices made long turns
# of the loop and late alerts; smaller ones cost CPU (the measurements: git log -S ROWS_PER_TURN).
ROWS_PER_TURN = 200


async def execute_rows(
    session: Any, sql: str, rows: list[tuple[Any, ...]], *, sqlite_sql: str | None = None
) -> None:
    """Run ``sql`` (``?`` placeholders) for each of ``rows``, straight through the driver.

    For the ingest's bulk writes (latest values, last seen), where SQLAlchemy's per-row
    parameter processing cost five times what SQLite itself did (17 µs against 3 µs a
    row). The values must be what the driver takes: times from :func:`driver_time`, JSON
    as text.

    On SQLite the rows go ``VALUES_PER_STATEMENT`` at a time in one statement (``sqlite_sql``
    when given, else ``sql``, its one ``VALUES (?, …)`` group repeated): one call into the
    driver's thread, which gives up the GIL around each statement it steps, instead of one
    per row.
    """
    conn = await session.connection()
    if conn.dialect.name == "sqlite":
        for statement, params in _sqlite_statements(sqlite_sql or sql, rows):
            await conn.exec_driver_sql(statement, params)
        return
    if conn.dialect.paramstyle == "numeric_dollar":  # asyncpg: $1, $2, …
        parts = sql.split("?")
        sql = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))
    await conn.exec_driver_sql(sql, rows)


def _sqlite_statements(
    sql: str, rows: list[tuple[Any, ...]]
) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """``sql``'s one ``VALUES (?, …)`` group repeated for up to ``VALUES_PER_STATEMENT`` rows
    at a time, with the rows' values in one flat tuple."""
    head, group, tail = _VALUES_GROUP.split(sql, maxsplit=1)
    for start in range(0, len(rows), VALUES_PER_STATEMENT):
        chunk = rows[start : start + VALUES_PER_STATEMENT]
        many = f"{head}VALUES {', '.join([group] * len(chunk))}{tail}"
        yield many, tuple(itertools.chain.from_iterable(chunk))


async def write_rows(
    session_factory: Any, sql: str, rows: list[tuple[Any, ...]], *, sqlite_sql: str | None = None
) -> float:
    """:func:`execute_rows` in a transaction of its own, in this process's :func:`write_turn`.

    On SQLite the statements run on the event loop's own thread (:func:`write_now`): the
    turn is then held for the few ms SQLite takes, not for several trips through a busy
    loop, so an alert waiting behind a bulk write waits that long at most. The loop gets a
    turn after each call: a free write turn is taken without one, and a flush of 100,000
    rows, called slice after slice, held the loop for a second.

    Returns how long the write took (s), that turn of the loop not counted: what callers
    that pace themselves by their own cost count.
    """

    def direct(session: Session) -> None:
        conn = session.connection()
        for statement, params in _sqlite_statements(sqlite_sql or sql, rows):
            conn.exec_driver_sql(statement, params)

    async def through_driver(session: Any) -> None:
        await execute_rows(session, sql, rows, sqlite_sql=sqlite_sql)

    started = time.perf_counter()
    await write_now(session_factory, direct, through_driver, what=f"{len(rows)} rows")
    took = time.perf_counter() - started
    await asyncio.sleep(0)  # the readings and alerts that came meanwhile go first
    return took


async def write_now(
    session_factory: Any,
    work: Callable[[Session], T],
    fallback: Callable[[Any], Awaitable[T]] | None = None,
    *,
    urgent: bool = False,
    direct: bool = True,
    what: str = "write",
) -> T:
    """``work(session)`` in a transaction of its own, in this process's :func:`write_turn`.

    On a SQLite file it runs on a synchronous session on the event loop's own thread
    (:func:`direct_sessions`): a fraction of a ms for an alert, a few ms for 200 rows,
    instead of a trip through the busy loop per statement. When another process holds the
    database (that connection never waits for a lock), and on PostgreSQL, it runs through
    the async session: ``fallback(session)`` when given, else ``work`` through
    ``run_sync``; so does a write too large to hold the loop for (``direct=False``).
    ``work`` must be safe to run again after a rollback.
    """
    async with write_turn(session_factory, urgent=urgent):
        sessions = direct_sessions(session_factory) if direct else None
        if sessions is not None:
            try:
                with sessions.begin() as session:
                    return work(session)
            except OperationalError as exc:  # locked by another process: wait for it
                log.info("event=write_deferred what=%s reason=%s", what, exc)
        async with session_factory() as session, session.begin():
            if fallback is not None:
                return await fallback(session)
            return await session.run_sync(work)


VALUES_PER_STATEMENT = 500  # rows of one SQLite statement (3 or 4 values each: under its 32,766)
_VALUES_GROUP = re.compile(r"VALUES (\((?:\?, )*\?\))")


class _Turns:
    """One writer at a time; the urgent ones (alerts) before the others, each kind in
    arrival order."""

    def __init__(self) -> None:
        self.busy = False
        self.urgent: collections.deque[asyncio.Future[None]] = collections.deque()
        self.others: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self, urgent: bool) -> None:
        if not self.busy and not self.urgent and not self.others:
            self.busy = True
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self.urgent if urgent else self.others
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed the turn as it was cancelled: pass it on
            elif waiter in queue:
                queue.remove(waiter)
            raise

    def release(self) -> None:
        """Hand the turn to the next waiter (it is busy on their behalf), or free it."""
        for queue in (self.urgent, self.others):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self.busy = False


# SQLite engine → (event loop, the turns its writers take)
_WRITE_TURNS: weakref.WeakKeyDictionary[Any, tuple[Any, _Turns]] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def write_turn(session_factory: Any, *, urgent: bool = False) -> AsyncIterator[None]:
    """Hold this process's turn to write to the database behind ``session_factory``.

    SQLite lets one connection write at a time, and a connection that finds the database
    locked sleeps in SQLite's busy handler, waking after 1, 2, 5 … up to 100 ms to try
    again: an alert waiting behind a stream of latest-value writes could wait seconds.
    Writers of one process that take their turn here are served as soon as the turn is
    free: ``urgent`` ones (alert state changes) first, then the others (latest values,
    presence, work orders), each in arrival order. Other processes still meet the busy
    timeout. PostgreSQL locks rows, not the database: no turn is taken there.
    """
    engine = getattr(session_factory, "kw", {}).get("bind")
    if engine is None or engine.dialect.name != "sqlite":
        yield
        return
    key = engine.sync_engine
    loop = asyncio.get_running_loop()
    held = _WRITE_TURNS.get(key)
    if held is None or held[0] is not loop:  # turns serve the loop they were made on
        held = _WRITE_TURNS[key] = (loop, _Turns())
    turns = held[1]
    await turns.acquire(urgent)
    try:
        yield
    finally:
        turns.release()


@contextlib.asynccontextmanager
async def writing(session_factory: Any, *, urgent: bool = False) -> AsyncIterator[Any]:
    """A session in a transaction, in this process's :func:`write_turn`; committed on
    leaving, rolled back on an exception."""
    async with (
        write_turn(session_factory, urgent=urgent),
        session_factory() as session,
        session.begin(),
    ):
        yield session


# SQLite engine → sessions of a synchronous engine on the same file, used on the loop's thread
_DIRECT: weakref.WeakKeyDictionary[Any, sync_sessionmaker[Session]] = weakref.WeakKeyDictionary()


def direct_sessions(session_factory: Any) -> sync_sessionmaker[Session] | None:
    """Synchronous sessions on the SQLite file behind ``session_factory``, for a short write
    made on the event loop's own thread while holding :func:`write_turn` (:func:`write_now`);
    None on PostgreSQL and for an in-memory database.

    Through aiosqlite every statement, and the commit, is a trip to the driver's thread and
    back, and the way back waits for the event loop to come round: under load each trip
    cost several ms, so an alert recorded in four of them reached its topic 40–70 ms late.
    Done here, one alert is a fraction of a ms of SQLite that the loop waits for instead.
    (A writer thread, one hand-over per transaction, was tried twice: the hand-overs of
    the GIL cost more than they saved; in an interleaved A/B, alert p50 26.9 and 58.0 ms
    against 15.5 and 21.1.) The connection
    never waits for a lock (busy timeout 0: a writer of another process makes it fail at
    once, and the caller falls back to the async session) and never checkpoints the WAL
    (the async connections do). Disposing of the async engine disposes of this one too.
    """
    if sqlite_file(session_factory) is None:
        return None
    engine = session_factory.kw["bind"]
    key = engine.sync_engine
    made = _DIRECT.get(key)
    if made is None:
        direct: Engine = create_engine(
            engine.url.set(drivername="sqlite+pysqlite"),
            connect_args={"timeout": 0, "check_same_thread": False},
            json_serializer=json_text,
            json_deserializer=orjson.loads,
        )
        event.listen(
            direct,
            "connect",
            lambda conn, record: sqlite_pragmas(conn, record, "wal_autocheckpoint=0"),
        )
        # Closed with the async engine: the last connection to close checkpoints the log
        # and removes it; left open, a cleanly stopped run left its -wal file behind.
        event.listen(key, "engine_disposed", lambda _engine: direct.dispose())
        made = _DIRECT[key] = sync_sessionmaker(direct, expire_on_commit=False)
    return made
