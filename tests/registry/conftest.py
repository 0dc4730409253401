"""Registry fixtures: each test runs on a fresh SQLite file and on a fresh PostgreSQL database."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from cityiot.db import make_engine, migrate, sessionmaker
from cityiot.registry import SessionFactory

POSTGRES_ADMIN_URL = os.environ.get(
    "CITYIOT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


async def _postgres_admin() -> asyncpg.Connection:
    """A connection for CREATE/DROP DATABASE; skips (fails on CI) when PostgreSQL is away."""
    try:
        return await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        message = (
            f"PostgreSQL at {POSTGRES_ADMIN_URL} is unreachable ({exc}); start it or set "
            "CITYIOT_TEST_POSTGRES_URL"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def _database_url(name: str) -> str:
    parts = urlsplit(POSTGRES_ADMIN_URL)
    return urlunsplit(parts._replace(scheme="postgresql+asyncpg", path=f"/{name}"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database, SQLite or PostgreSQL; dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
        return
    name = f"cityiot_test_{uuid.uuid4().hex[:12]}"
    admin = await _postgres_admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _database_url(name)
    finally:
        admin = await _postgres_admin()
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[SessionFactory]:
    """A session factory on the migrated database at ``db_url``."""
    await migrate(db_url)
    engine = make_engine(db_url)
    try:
        yield sessionmaker(engine)
    finally:
        await engine.dispose()
