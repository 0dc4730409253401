"""Kinds changed through the API, kept in the database, and taking them into the model.

Every stage (ingest, rules, API) calls :func:`refresh_kinds` every
``CITYIOT_REGISTRY_REFRESH_S``: a kind put through the API, or a changed file of
``CITYIOT_KINDS_PATH``, reaches all of them with no restart.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cityiot.domain.catalogue import MODEL, IncompatibleChange, Kind
from cityiot.domain.thingmodel import incompatibilities, kind_spec, parse_kind
from cityiot.storage.tables.kinds import KindOverride
from cityiot.storage.utc import utcnow

log = logging.getLogger(__name__)


async def kind_overrides(sessions: async_sessionmaker[AsyncSession]) -> dict[str, dict[str, Any]]:
    """The kinds put through the API: kind → its spec (the kind file's mapping)."""
    return (await _overrides_as_of(sessions))[0]


async def _overrides_as_of(
    sessions: async_sessionmaker[AsyncSession],
) -> tuple[dict[str, dict[str, Any]], dt.datetime | None]:
    """The kinds put through the API and the time of the newest change among them."""
    async with sessions() as session:
        rows = (
            await session.execute(
                select(KindOverride.kind, KindOverride.spec, KindOverride.updated_at)
            )
        ).all()
    newest = max((row.updated_at for row in rows), default=None)
    return {kind: dict(spec) for kind, spec, _ in rows}, newest


async def save_kind(
    sessions: async_sessionmaker[AsyncSession], kind: Kind, updated_by: str
) -> None:
    """Keep ``kind`` (already checked by :meth:`ThingModel.check_change`) in the database.

    Raises :class:`IncompatibleChange` (nothing stored) when the version stored now, which
    another PUT may have put since the check, may not be replaced by ``kind``."""
    spec: Mapping[str, Any] = kind_spec(kind)
    async with sessions() as session, session.begin():
        # Locked until the commit (PostgreSQL; SQLite's write transactions take turns).
        stmt = select(KindOverride).where(KindOverride.kind == kind.name).with_for_update()
        row = (await session.execute(stmt)).scalar_one_or_none()
        if row is not None:
            problems = incompatibilities(parse_kind(row.spec, "api"), kind)
            if problems:
                raise IncompatibleChange(kind.name, problems)
        if row is None:
            session.add(KindOverride(kind=kind.name, spec=dict(spec), updated_by=updated_by))
        else:
            row.spec = dict(spec)
            row.updated_at = utcnow()
            row.updated_by = updated_by


async def refresh_kinds(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    """Take the API's kinds and changed kind files into :data:`MODEL`; the kinds that
    changed. The database being away leaves the model as it is (logged)."""
    try:
        overrides, as_of = await _overrides_as_of(sessions)
    except Exception as exc:  # keep the kinds in force; the next round tries again
        log.warning("event=kinds_refresh_deferred error=%s", exc)
        return MODEL.refresh(None)
    return MODEL.refresh(overrides, as_of)
