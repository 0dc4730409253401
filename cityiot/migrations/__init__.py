"""Alembic migrations of the SQL store, shipped inside the package.

``upgrade_to_head(url)`` (re-exported as ``cityiot.db.migrate``) needs no ``alembic.ini``:
the configuration is built in code. Developers writing a new revision use the ini beside
this file: ``alembic -c cityiot/migrations/alembic.ini revision --autogenerate -m "..."``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from cityiot.db import make_engine

SCRIPT_LOCATION = Path(__file__).resolve().parent
# Any constant will do: it only has to be the same for every process migrating one database.
_PG_LOCK_KEY = 0x63697479  # "city"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at this folder; ``connection`` is handed to ``env.py``."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def upgrade_to_head(url: str) -> None:
    """Upgrade the database at ``url`` to the head revision; a no-op when it is already there.

    On PostgreSQL an advisory lock serialises stages that start together and all migrate.
    """
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY}
                )
            await conn.run_sync(_upgrade)
    finally:
        await engine.dispose()


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")
