"""Migration 0012: api_keys gains expires_at; keys made before it never expire, and the
downgrade takes the column away again (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, inspect, text

from cityiot.storage.engine import make_engine
from cityiot.storage.migrations import SCRIPT_LOCATION


def _api_key_columns(conn: Connection) -> set[str]:
    return {c["name"] for c in inspect(conn).get_columns("api_keys")}


async def test_api_keys_get_an_expiry_and_keys_made_before_never_expire(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYIOT_DATABASE_URL", db_url)
    config = Config(str(SCRIPT_LOCATION / "alembic.ini"))
    engine = make_engine(db_url)
    try:
        await asyncio.to_thread(command.upgrade, config, "0011")
        async with engine.begin() as conn:
            assert "expires_at" not in await conn.run_sync(_api_key_columns)
            await conn.execute(
                text(
                    "INSERT INTO api_keys (id, secret_hash, name, role, created_at, created_by) "
                    "VALUES ('old', 'x', 'ops desk', 'operator', CURRENT_TIMESTAMP, 'cli')"
                )
            )
        await asyncio.to_thread(command.upgrade, config, "0012")
        async with engine.connect() as conn:
            assert "expires_at" in await conn.run_sync(_api_key_columns)
            legacy = (await conn.execute(text("SELECT expires_at FROM api_keys"))).scalar_one()
            assert legacy is None  # a key made before expiry existed: never expires
        await asyncio.to_thread(command.downgrade, config, "0011")
        async with engine.connect() as conn:
            assert "expires_at" not in await conn.run_sync(_api_key_columns)
            assert (await conn.execute(text("SELECT id FROM api_keys"))).scalar_one() == "old"
    finally:
        await engine.dispose()
