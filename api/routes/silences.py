"""Silences: ``GET/POST /silences``, ``DELETE /silences/{id}`` — mute the notifications of
the alerts they match for a while (maintenance, a known outage).

A silence only stops notifications: alerts are still recorded, published and listed.
Matchers are Alertmanager's: ``{"label", "op", "value"}`` with ``op`` one of ``=``, ``!=``,
``=~``, ``!~`` on the labels rule, kind, district, severity, vendor, device_id and team.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from cityiot.api.access import allow
from cityiot.api.audit import audited
from cityiot.api.context import ApiContext, context
from cityiot.api.keys import Principal
from cityiot.api.paging import Cursor, Limit, Page, after, page_of
from cityiot.api.params import TEXT, Instant, city_instant
from cityiot.api.problems import Problem
from cityiot.api.routes.alerts import ID_PATTERN
from cityiot.rules.events import city_time
from cityiot.rules.silences import OPS, MatcherError, SilenceError, create_silence, expire_silence
from cityiot.storage.tables.alerts import Silence
from cityiot.storage.utc import utcnow

router = APIRouter(tags=["silences"])

MANAGERS = ("admin", "operator")

SilenceId = Annotated[str, Path(pattern=ID_PATTERN, description="the silence's id")]

_EXAMPLE: dict[str, Any] = {
    "id": "9b2e4c6d8f0a1b3c5d7e9f1a2b3c4d5e",
    "matchers": [
        {"label": "district", "op": "=", "value": "yicheng"},
        {"label": "kind", "op": "=", "value": "streetlight"},
    ],
    "starts_at": "2026-11-23T09:00:00+08:00",
    "ends_at": "2026-11-23T17:00:00+08:00",
    "created_by": "key:3f2a1b0c9d8e (ops desk)",
    "comment": "Jiefang Road streetlight maintenance",
    "created_at": "2026-11-23T08:55:00+08:00",
    "active": True,
}


class MatcherModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: Literal["rule", "kind", "district", "severity", "vendor", "device_id", "team"]
    op: Literal["=", "!=", "=~", "!~"] = Field(description=" ".join(OPS))
    value: str = Field(max_length=256, pattern=TEXT)


class SilenceIn(BaseModel):
    """Mute alerts matching every matcher, from ``starts_at`` (default now) to ``ends_at``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "matchers": _EXAMPLE["matchers"],
                    "ends_at": "2026-11-23T17:00:00+08:00",
                    "comment": "Jiefang Road streetlight maintenance",
                }
            ]
        },
    )

    matchers: list[MatcherModel] = Field(min_length=1, max_length=32)
    starts_at: Instant | None = Field(None, description="RFC 3339; default: now")
    ends_at: Instant = Field(description="RFC 3339; +08:00 when no offset is given")
    comment: str = Field("", max_length=1000, pattern=TEXT)


class SilenceOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    id: str
    matchers: list[MatcherModel]
    starts_at: str
    ends_at: str
    created_by: str
    comment: str
    created_at: str
    active: bool = Field(description="in force now")


def silence_out(silence: Silence, now: dt.datetime) -> dict[str, Any]:
    return {
        "id": silence.id,
        "matchers": silence.matchers,
        "starts_at": city_time(silence.starts_at),
        "ends_at": city_time(silence.ends_at),
        "created_by": silence.created_by,
        "comment": silence.comment,
        "created_at": city_time(silence.created_at),
        "active": silence.starts_at <= now < silence.ends_at,
    }


@router.get(
    "/silences",
    response_model=Page[SilenceOut],
    summary="List silences",
)
async def list_silences(
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow(*MANAGERS))],
    expired: Annotated[bool, Query(description="also list silences that have ended")] = False,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Silences in force or still to come (newest first); ``expired=true`` adds ended ones."""
    now = utcnow()
    stmt = select(Silence)
    if not expired:
        stmt = stmt.where(Silence.ends_at > now)
    columns = [Silence.created_at, Silence.id]
    stmt = after(stmt, columns, cursor, descending=True).limit(limit + 1)
    async with ctx.sessions() as session:
        rows = list((await session.scalars(stmt)).all())
    return page_of(
        rows, limit, key=lambda s: [s.created_at, s.id], convert=lambda s: silence_out(s, now)
    )


@router.post(
    "/silences",
    response_model=SilenceOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create a silence",
    responses={422: {"description": "a matcher or the times are invalid"}},
)
async def add_silence(
    body: SilenceIn,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow(*MANAGERS))],
) -> dict[str, Any]:
    """Mute the notifications of every alert the matchers select until ``ends_at``."""
    now = utcnow()
    starts_at = city_instant(body.starts_at, "starts_at") or now
    ends_at = city_instant(body.ends_at, "ends_at")
    assert ends_at is not None
    matchers = [m.model_dump() for m in body.matchers]
    try:
        silence = await create_silence(
            audited(
                ctx.sessions,
                principal,
                "silence.create",
                "silences",
                matchers=matchers,
                ends_at=ends_at.isoformat(),
                comment=body.comment,
            ),
            matchers,
            starts_at,
            ends_at,
            created_by=principal.actor[:128],
            comment=body.comment,
        )
    except (MatcherError, SilenceError) as exc:
        raise Problem(422, str(exc)) from None
    return silence_out(silence, now)


@router.delete(
    "/silences/{silence_id}",
    response_model=SilenceOut,
    summary="End a silence now",
    responses={404: {"description": "no such silence"}},
)
async def end_silence(
    silence_id: SilenceId,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow(*MANAGERS))],
) -> dict[str, Any]:
    """Expire the silence at once (kept, with its new end, for the record)."""
    now = utcnow()
    async with ctx.sessions() as session:
        if await session.get(Silence, silence_id) is None:
            raise Problem(404, f"no silence {silence_id!r}; see GET /api/v1/silences?expired=true")
    silence = await expire_silence(
        audited(ctx.sessions, principal, "silence.expire", f"silences/{silence_id}"),
        silence_id,
        now,
    )
    if silence is None:
        raise Problem(404, f"no silence {silence_id!r}; see GET /api/v1/silences?expired=true")
    return silence_out(silence, now)
