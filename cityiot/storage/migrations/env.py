"""Alembic environment: runs on a connection handed over by ``upgrade_to_head``, or, from
the ``alembic`` command line, on ``CITYIOT_DATABASE_URL`` (async drivers included)."""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from cityiot.storage.engine import make_engine
from cityiot.storage.tables.base import Base  # loads every table module (storage.tables)

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("CITYIOT_DATABASE_URL")
    if not url:
        from cityiot.domain.settings import Settings

        url = Settings.model_validate({}).database_url
    return url


async def _run_online() -> None:
    engine = make_engine(_url())
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_configure)
    finally:
        await engine.dispose()


def _run_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run_offline()
elif (connection := config.attributes.get("connection")) is not None:
    _configure(connection)
else:
    if config.config_file_name:  # the alembic command line: log as its ini says
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    asyncio.run(_run_online())
