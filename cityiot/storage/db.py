"""The SQL store: registry, dead letters, alerts, silences, the
notification outbox, work orders and device commands.

SQLAlchemy 2 async; SQLite by default, PostgreSQL when ``CITYIOT_DATABASE_URL`` says so.
The schema is owned by Alembic (``cityiot/storage/migrations``); ``migrate()`` brings any database
to the head revision.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import itertools
import logging
import re
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.orm import sessionmaker as sync_sessionmaker

log = logging.getLogger("cityiot.db")
T = TypeVar("T")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """``value`` in UTC; a naive datetime is taken to be UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes in and out, also on SQLite (which stores them naive).

    A naive datetime given to the database is taken to be UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = as_utc(value)
        # SQLite compares the stored text: one offset-free format keeps the order right.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if not isinstance(value, dt.datetime):
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


# Named constraints, so later migrations can drop or alter them (SQLite batch mode needs names).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Vendor(Base):
    __tablename__ = "vendors"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Payload format of the vendor's devices: "json" (the access standard) or a codec name.
    codec: Mapped[str] = mapped_column(String(64), default="json")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    district: Mapped[str] = mapped_column(String(32), index=True)
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    address: Mapped[str] = mapped_column(Text, default="")
    install_date: Mapped[dt.date | None] = mapped_column(default=None)
    report_interval_s: Mapped[int] = mapped_column(Integer)
    # Kind-specific attributes (depth_cm, lot_id, max_stay_min, zone) as a JSON object.
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="unknown")  # online|offline|unknown
    last_seen: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    decommissioned_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Bumped on every registry change; the ingest refreshes its map from it.
    updated_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, index=True
    )


class DeadLetter(Base):
    __tablename__ = "dead_letters"
    __table_args__ = (Index("ix_dead_letters_received_at", "received_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    topic: Mapped[str] = mapped_column(Text)
    vendor: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    device_id: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # first N bytes of the raw payload
    payload_size: Mapped[int] = mapped_column(Integer)  # size of the whole raw payload
    reason: Mapped[str] = mapped_column(Text)


class Alert(Base):
    """One alert of one rule on one device, through pending → firing → acknowledged → resolved.

    ``open_key`` is ``rule/device_id`` while the alert is open and NULL once resolved; its
    unique constraint is what guarantees one open alert per (rule, device), whoever
    evaluates (NULLs never collide, on SQLite and PostgreSQL alike).
    """

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_state_severity", "state", "severity"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    rule: Mapped[str] = mapped_column(String(128), index=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    district: Mapped[str] = mapped_column(String(32), index=True)
    vendor: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())  # condition first held
    fired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    acknowledged_by: Mapped[str | None] = mapped_column(String(128), default=None)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    values: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    summary: Mapped[str] = mapped_column(Text, default="")
    open_key: Mapped[str | None] = mapped_column(String(200), unique=True, default=None)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Silence(Base):
    """Mutes notifications of alerts whose labels match every matcher, until ``ends_at``."""

    __tablename__ = "silences"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # [{"label": "district", "op": "=", "value": "yicheng"}, ...]; ops: = != =~ !~
    matchers: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    starts_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Notification(Base):
    """The durable outbox: one message for one channel, retried until delivered."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    receiver: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(128))  # the channel's name in the routing file
    group_key: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|sent|failed
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)  # the alert group to deliver
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)


class WorkOrder(Base):
    """A task for a field team: dispatched → accepted → on_site → resolved → closed."""

    __tablename__ = "work_orders"
    __table_args__ = (Index("ix_work_orders_team_state", "team", "state"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    alert_id: Mapped[str] = mapped_column(ForeignKey("alerts.id"), unique=True)
    team: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), default="dispatched")
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    district: Mapped[str] = mapped_column(String(32), index=True)
    severity: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    accepted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    on_site_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    verify_due_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())  # SLA: on site by
    close_due_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())  # SLA: closed by
    assignee: Mapped[str | None] = mapped_column(String(128), default=None)
    note: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Command(Base):
    """A command sent to a device (linked control) and the device's acknowledgement."""

    __tablename__ = "commands"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    vendor: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    rule: Mapped[str | None] = mapped_column(String(128), default=None)
    alert_id: Mapped[str | None] = mapped_column(String(32), default=None)
    sent_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    acked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    ok: Mapped[bool | None] = mapped_column(default=None)
    message: Mapped[str] = mapped_column(Text, default="")


class LatestReading(Base):
    """The newest value of each metric of a device, kept by the ingest (fresh within a second).

    ``metrics`` maps a metric name to ``[value, ts_ms]``; the API answers
    ``/devices/{id}/latest`` from here without asking InfluxDB.
    """

    __tablename__ = "latest_readings"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ts_ms: Mapped[int] = mapped_column(BigInteger)  # time of the newest reading
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Not indexed: nothing queries by it, and the ingest rewrites it with every reading.
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MqttCredential(Base):
    """An MQTT account issued to a vendor; the password is kept only as Mosquitto's hash."""

    __tablename__ = "mqtt_credentials"

    username: Mapped[str] = mapped_column(String(128), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    password_hash: Mapped[str] = mapped_column(Text)  # Mosquitto password-file format ($7$...)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)


class ApiKey(Base):
    """An API key: role and grant; the secret is kept only as its SHA-256."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # the key's visible part
    secret_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(16))
    # Grant of a department key (None: every kind / district); the vendor of a vendor key.
    kinds: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    districts: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    vendor_id: Mapped[str | None] = mapped_column(String(64), default=None)
    # The field teams (routing file's receivers) whose work orders and alerts a field key
    # acts on; None for other roles and for field keys made before teams existed.
    teams: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)


class AuditEntry(Base):
    """Who changed what, through the API or the CLI."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))  # "key:<id> (<name>)" or "cli"
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))  # e.g. device.update, alert.ack
    resource: Mapped[str] = mapped_column(String(200))  # e.g. devices/mh-0001
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class RuleOverride(Base):
    """A rule put through the API: replaces the catalogue rule of the same id (or adds one)."""

    __tablename__ = "rule_overrides"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)  # the rule's YAML mapping
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    updated_by: Mapped[str] = mapped_column(String(128), default="")


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def make_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``; SQLite gets WAL and a busy timeout for concurrent stages.

    JSON columns are serialised with orjson: the latest-value upserts write one JSON
    document per device, and the standard library's encoder was a tenth of the ingest's
    time at 100,000 devices.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url,
            connect_args={"timeout": 30},
            json_serializer=_json_text,
            json_deserializer=orjson.loads,
        )

        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url, pool_pre_ping=True, json_serializer=_json_text, json_deserializer=orjson.loads
    )


# The write-ahead log is cut back to this size when it starts over after a checkpoint
# (SQLite otherwise keeps the file at the largest it ever grew).
WAL_SIZE_LIMIT = 64 * 1024 * 1024
_PRAGMAS = (
    "journal_mode=WAL",
    "synchronous=NORMAL",
    "foreign_keys=ON",
    f"journal_size_limit={WAL_SIZE_LIMIT}",
)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any, *more: str) -> None:
    cur = dbapi_conn.cursor()
    for pragma in (*_PRAGMAS, *more):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def driver_time(value: dt.datetime, dialect: Dialect) -> Any:
    """``value`` as :class:`UTCDateTime` hands it to the driver, for :func:`execute_rows`:
    UTC text on SQLite (the format SQLAlchemy stores and compares), aware elsewhere."""
    value = as_utc(value)
    if dialect.name == "sqlite":  # as SQLAlchemy writes it: YYYY-MM-DD HH:MM:SS.ffffff
        return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    return value


# Rows per transaction of a bulk write through execute_rows (latest values, last seen): a
# few ms of SQLite each, so a writer waiting for its write_turn waits for one slice at most,
# and a reading arriving meanwhile for one slice of the loop. At 500 rows (5-6 ms a slice)
# the slices were half of the loop's turns over 5 ms at 10,000 readings/s; at 200, alert
# p95 / p99 25, 27 / 43, 48 -> 14, 12 / 24, 20 ms in two interleaved pairs of 60 s runs,
# for about 2 % more of the ingest's CPU in drains (within their noise).
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


def dialect_of(session_factory: Any) -> Dialect:
    """The SQL dialect of the database behind ``session_factory``."""
    dialect: Dialect = session_factory.kw["bind"].dialect
    return dialect


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
    if _sqlite_file(session_factory) is None:
        return None
    engine = session_factory.kw["bind"]
    key = engine.sync_engine
    made = _DIRECT.get(key)
    if made is None:
        direct: Engine = create_engine(
            engine.url.set(drivername="sqlite+pysqlite"),
            connect_args={"timeout": 0, "check_same_thread": False},
            json_serializer=_json_text,
            json_deserializer=orjson.loads,
        )
        event.listen(
            direct,
            "connect",
            lambda conn, record: _sqlite_pragmas(conn, record, "wal_autocheckpoint=0"),
        )
        # Closed with the async engine: the last connection to close checkpoints the log
        # and removes it; left open, a cleanly stopped run left its -wal file behind.
        event.listen(key, "engine_disposed", lambda _engine: direct.dispose())
        made = _DIRECT[key] = sync_sessionmaker(direct, expire_on_commit=False)
    return made


def _sqlite_file(session_factory: Any) -> str | None:
    """The path of the SQLite file behind ``session_factory``; None on PostgreSQL and for
    an in-memory database."""
    engine = getattr(session_factory, "kw", {}).get("bind")
    if engine is None or engine.dialect.name != "sqlite":
        return None
    database: str | None = engine.url.database
    if not database or database == ":memory:":
        return None
    return database


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
    database = _sqlite_file(session_factory)
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


async def migrate(url: str) -> None:
    """Bring the database at ``url`` (SQLite or PostgreSQL) to the newest schema; idempotent."""
    from cityiot.storage.migrations import upgrade_to_head  # Alembic loads only when migrating

    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade_to_head)
    finally:
        await engine.dispose()
