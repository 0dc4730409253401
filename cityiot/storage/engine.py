"""Connecting to the SQL store and migrating it.

SQLAlchemy 2 async; SQLite by default, PostgreSQL when ``CITYIOT_DATABASE_URL`` says so.
The schema is owned by Alembic (``cityiot/storage/migrations``); ``migrate()`` brings any database
to the head revision.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SessionFactory = async_sessionmaker[AsyncSession]


def json_text(value: Any) -> str:
    """``value`` as JSON text, as the engines serialise JSON columns."""
    return orjson.dumps(value).decode()


def make_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``; SQLite gets WAL and a busy timeout for concurrent stages.

    JSON columns are serialised with orjson: the latest-value upserts write one JSON
    document per device, and the standard library's encoder was a tenth of the ingest's
    time at 100,000 devices.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1].split("?", 1)[0] if "///" in url else ""
        if path and path != ":memory:" and not path.startswith("file:"):
            private_file(Path(path))
        engine = create_async_engine(
            url,
            connect_args={"timeout": 30},
            json_serializer=json_text,
            json_deserializer=orjson.loads,
        )

        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        return engine
    return create_async_engine(
        url, pool_pre_ping=True, json_serializer=json_text, json_deserializer=orjson.loads
    )


def private_file(path: Path) -> None:
    """Make the SQLite file ``path`` readable by its owner only (0600) when it does not exist
    yet, in a folder made 0700 when that is missing: SQLite gives the -wal and -shm files
    the database file's mode, so they are private too. A file that exists keeps its mode
    (an operator's choice, e.g. a backup group)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


# The write-ahead log is cut back to this size when it starts over after a checkpoint
# (SQLite otherwise keeps the file at the largest it ever grew).
WAL_SIZE_LIMIT = 64 * 1024 * 1024
_PRAGMAS = (
    "journal_mode=WAL",
    "synchronous=NORMAL",
    "foreign_keys=ON",
    f"journal_size_limit={WAL_SIZE_LIMIT}",
)


def sqlite_pragmas(dbapi_conn: Any, _record: Any, *more: str) -> None:
    """Set the store's pragmas, and ``more``, on a new SQLite connection."""
    cur = dbapi_conn.cursor()
    for pragma in (*_PRAGMAS, *more):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def dialect_of(session_factory: Any) -> Dialect:
    """The SQL dialect of the database behind ``session_factory``."""
    dialect: Dialect = session_factory.kw["bind"].dialect
    return dialect


def sqlite_file(session_factory: Any) -> str | None:
    """The path of the SQLite file behind ``session_factory``; None on PostgreSQL and for
    an in-memory database."""
    engine = getattr(session_factory, "kw", {}).get("bind")
    if engine is None or engine.dialect.name != "sqlite":
        return None
    database: str | None = engine.url.database
    if not database or database == ":memory:":
        return None
    return database


async def migrate(url: str) -> None:
    """Bring the database at ``url`` (SQLite or PostgreSQL) to the newest schema; idempotent."""
    from cityiot.storage.migrations import upgrade_to_head  # Alembic loads only when migrating

    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade_to_head)
    finally:
        await engine.dispose()
