"""Codecs put through the API, kept in the database (``codec_overrides``).

The ingest and the API read them every ``CITYIOT_REGISTRY_REFRESH_S``
(:meth:`~cityiot.ingest.codecs.book.CodecBook.refresh`): a codec put through the API decodes
the next messages of its vendors with no restart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cityiot.storage.tables.codecs import CodecOverride
from cityiot.storage.utc import utcnow

StoredCodecs = dict[str, tuple[dict[str, Any], dict[str, str], dt.datetime]]


async def codec_overrides(
    sessions: async_sessionmaker[AsyncSession], names: Collection[str] | None = None
) -> StoredCodecs:
    """name → (spec, scripts, when it was put) of every codec put through the API (or of
    ``names`` among them)."""
    query = select(
        CodecOverride.name, CodecOverride.spec, CodecOverride.scripts, CodecOverride.updated_at
    )
    if names is not None:
        query = query.where(CodecOverride.name.in_(list(names)))
    async with sessions() as session:
        rows = (await session.execute(query)).all()
    return {name: (dict(spec), dict(scripts), when) for name, spec, scripts, when in rows}


async def codec_stamps(sessions: async_sessionmaker[AsyncSession]) -> dict[str, dt.datetime]:
    """name → when it was put, of every codec put through the API: what a refresh compares
    before it reads any script."""
    async with sessions() as session:
        rows = (await session.execute(select(CodecOverride.name, CodecOverride.updated_at))).all()
    return {name: when for name, when in rows}


async def save_codec(
    sessions: async_sessionmaker[AsyncSession],
    name: str,
    spec: Mapping[str, Any],
    scripts: Mapping[str, str],
    updated_by: str,
) -> bool:
    """Keep the codec (already loaded and its examples run); True when it is new."""
    async with sessions() as session, session.begin():
        row = await session.get(CodecOverride, name, with_for_update=True)
        if row is None:
            session.add(
                CodecOverride(
                    name=name, spec=dict(spec), scripts=dict(scripts), updated_by=updated_by
                )
            )
            return True
        row.spec = dict(spec)
        row.scripts = dict(scripts)
        row.updated_at = utcnow()
        row.updated_by = updated_by
        return False
