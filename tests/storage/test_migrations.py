"""The Alembic migrations build exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect

from cityiot.storage.engine import make_engine, migrate
from cityiot.storage.migrations import SCRIPT_LOCATION, alembic_config
from cityiot.storage.tables.base import Base


def _state(conn: Connection) -> dict[str, Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return {
        "revision": context.get_current_revision(),
        "diffs": compare_metadata(context, Base.metadata),
        "tables": set(inspect(conn).get_table_names()),
    }


async def _inspect(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_state)
    finally:
        await engine.dispose()


def _head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def test_migrate_builds_the_models_schema(db_url: str) -> None:
    await migrate(db_url)
    state = await _inspect(db_url)
    assert state["diffs"] == []
    assert state["revision"] == _head()
    assert {"vendors", "devices", "dead_letters"} <= state["tables"]


async def test_the_tables_alembic_compares_are_the_migrated_tables(db_url: str) -> None:
    """``env.py`` imports ``Base`` alone; that must load every table module, or autogenerate
    would see the tables it does not know as dropped."""
    probe = "from cityiot.storage.tables.base import Base; print(*sorted(Base.metadata.tables))"
    command_line = [sys.executable, "-c", probe]
    done = await asyncio.to_thread(
        subprocess.run, command_line, capture_output=True, text=True, check=True
    )
    await migrate(db_url)
    state = await _inspect(db_url)
    assert set(done.stdout.split()) == state["tables"] - {"alembic_version"}
    assert set(Base.metadata.tables) == state["tables"] - {"alembic_version"}


async def test_migrate_is_idempotent(db_url: str) -> None:
    await migrate(db_url)
    await migrate(db_url)
    state = await _inspect(db_url)
    assert state["diffs"] == []
    assert state["revision"] == _head()


@pytest.mark.postgres
async def test_stages_starting_together_all_migrate_one_postgresql(postgres_url: str) -> None:
    """``cityiot run`` starts its stages at once and each migrates: the advisory lock makes
    the others wait for the first instead of creating the same tables beside it."""
    await asyncio.gather(*(migrate(postgres_url) for _ in range(4)))
    state = await _inspect(postgres_url)
    assert state["diffs"] == []
    assert state["revision"] == _head()


async def test_alembic_command_line_uses_the_database_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a developer runs: ``alembic -c cityiot/storage/migrations/alembic.ini upgrade head``."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("CITYIOT_DATABASE_URL", url)
    config = Config(str(SCRIPT_LOCATION / "alembic.ini"))
    # The command line runs its own event loop: give it a thread without one.
    await asyncio.to_thread(command.upgrade, config, "head")
    state = await _inspect(url)
    assert state["revision"] == _head()
    assert state["diffs"] == []


def _latest_indexes(conn: Connection) -> set[str]:
    return {str(i["name"]) for i in inspect(conn).get_indexes("latest_readings")}


async def test_latest_readings_loses_its_updated_at_index_and_gets_it_back_on_downgrade(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYIOT_DATABASE_URL", db_url)
    config = Config(str(SCRIPT_LOCATION / "alembic.ini"))
    engine = make_engine(db_url)
    try:
        await asyncio.to_thread(command.upgrade, config, "0003")
        async with engine.connect() as conn:
            assert "ix_latest_readings_updated_at" in await conn.run_sync(_latest_indexes)
        await asyncio.to_thread(command.upgrade, config, "0004")
        async with engine.connect() as conn:
            assert "ix_latest_readings_updated_at" not in await conn.run_sync(_latest_indexes)
        await asyncio.to_thread(command.downgrade, config, "0003")
        async with engine.connect() as conn:
            assert "ix_latest_readings_updated_at" in await conn.run_sync(_latest_indexes)
    finally:
        await engine.dispose()


def _api_key_columns(conn: Connection) -> set[str]:
    return {c["name"] for c in inspect(conn).get_columns("api_keys")}


@pytest.mark.parametrize(
    ("column", "before", "after", "role"),
    [
        ("teams", "0004", "0005", "field"),  # a legacy field key: no team until replaced
        ("expires_at", "0011", "0012", "operator"),  # a key made before expiry: never expires
    ],
)
async def test_api_keys_get_a_column_and_keys_made_before_hold_none(
    db_url: str, monkeypatch: pytest.MonkeyPatch, column: str, before: str, after: str, role: str
) -> None:
    """A column added to api_keys: a key made before it holds NULL there, and the downgrade
    takes the column away and keeps the key."""
    from sqlalchemy import text

    monkeypatch.setenv("CITYIOT_DATABASE_URL", db_url)
    config = Config(str(SCRIPT_LOCATION / "alembic.ini"))
    engine = make_engine(db_url)
    try:
        await asyncio.to_thread(command.upgrade, config, before)
        async with engine.begin() as conn:
            assert column not in await conn.run_sync(_api_key_columns)
            await conn.execute(
                text(
                    "INSERT INTO api_keys (id, secret_hash, name, role, created_at, created_by) "
                    f"VALUES ('old', 'x', 'legacy', '{role}', CURRENT_TIMESTAMP, 'cli')"
                )
            )
        await asyncio.to_thread(command.upgrade, config, after)
        async with engine.connect() as conn:
            assert column in await conn.run_sync(_api_key_columns)
            legacy = (await conn.execute(text(f"SELECT {column} FROM api_keys"))).scalar_one()
            assert legacy is None
        await asyncio.to_thread(command.downgrade, config, before)
        async with engine.connect() as conn:
            assert column not in await conn.run_sync(_api_key_columns)
            assert (await conn.execute(text("SELECT id FROM api_keys"))).scalar_one() == "old"
    finally:
        await engine.dispose()
