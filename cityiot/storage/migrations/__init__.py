"""Alembic migrations of the SQL store, shipped inside the package.

``upgrade_to_head(connection)`` (run by ``cityiot.storage.engine.migrate``) needs no
``alembic.ini``: the configuration is built in code. Developers writing a new revision
use the ini beside this file:
``alembic -c cityiot/storage/migrations/alembic.ini revision --autogenerate -m "..."``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

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


def upgrade_to_head(connection: Connection) -> None:
    """Upgrade the database of ``connection`` (in a transaction) to the head revision; a
    no-op when it is already there.

    On PostgreSQL an advisory lock, held until the transaction ends, serialises stages that
    start together and all migrate.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    command.upgrade(alembic_config(connection), "head")
