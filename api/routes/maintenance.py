"""Maintenance windows: ``GET/POST /maintenance-windows``, ``DELETE /maintenance-windows/{id}``
— mute the notifications of the alerts they match at fixed hours of the week, in the city's
time zone, until they are ended.

Windows come from two places: the routing file's ``maintenance_windows`` (``rules/routing.yaml``,
``"source": "file"``, listed read-only: they are changed in the file) and those made here
(``"source": "api"``, stored, ended with ``DELETE``). The dispatcher mutes by both.
Matchers are a silence's (``api/routes/silences.py``).
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
from cityiot.api.params import TEXT
from cityiot.api.problems import Problem
from cityiot.api.routes.alerts import ID_PATTERN
from cityiot.api.routes.silences import MANAGERS, MatcherModel
from cityiot.api.teams import routing
from cityiot.rules.events import city_time
from cityiot.rules.silences import (
    WEEKDAYS,
    MaintenanceWindow,
    MatcherError,
    WindowError,
    create_window,
    end_window,
    stored_windows,
    weekday_names,
    window_of,
)
from cityiot.storage.tables.alerts import MaintenanceWindowRow
from cityiot.storage.utc import utcnow

router = APIRouter(tags=["maintenance windows"])

WindowId = Annotated[str, Path(pattern=ID_PATTERN, description="the window's id")]

_EXAMPLE_MATCHERS = [
    {"label": "district", "op": "=", "value": "kaifaqu"},
    {"label": "kind", "op": "=", "value": "streetlight"},
]
_EXAMPLE: dict[str, Any] = {
    "id": "4c1d7e2a9b3f4e5d8c6a0b1f2e3d4c5b",
    "name": "kaifaqu-streetlight-night-works",
    "source": "api",
    "matchers": _EXAMPLE_MATCHERS,
    "weekdays": ["mon", "tue", "wed", "thu", "fri"],
    "start": "23:00",
    "end": "05:00",
    "comment": "Kaifaqu streetlight cabling, weeknights",
    "created_by": "key:3f2a1b0c9d8e (ops desk)",
    "created_at": "2026-11-23T08:55:00+08:00",
    "ended_at": None,
    "active": True,
    "open": False,
}


class WindowIn(BaseModel):
    """Mute the alerts matching every matcher on ``weekdays`` from ``start`` to ``end``
    (city time; an ``end`` not after ``start`` is on the next day), until ended."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    k: _EXAMPLE[k]
                    for k in ("name", "matchers", "weekdays", "start", "end", "comment")
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=128, pattern=TEXT)
    matchers: list[MatcherModel] = Field(min_length=1, max_length=32)
    weekdays: list[str] = Field(
        min_length=1, max_length=7, description=f"the days it starts: {', '.join(WEEKDAYS)}"
    )
    start: str = Field(max_length=5, description='local "HH:MM", "00:00" to "23:59"')
    end: str = Field(max_length=5, description='local "HH:MM", up to "24:00"')
    comment: str = Field("", max_length=1000, pattern=TEXT)


class WindowOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    id: str | None = Field(description="null for the routing file's windows")
    name: str
    source: Literal["api", "file"] = Field(
        description="api: made here, ended with DELETE; file: the routing file's, changed there"
    )
    matchers: list[MatcherModel]
    weekdays: list[str]
    start: str
    end: str
    comment: str
    created_by: str
    created_at: str | None
    ended_at: str | None
    active: bool = Field(description="in force (not ended)")
    open: bool = Field(description="its hours are now: it mutes the alerts it matches")


def _hhmm(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


def file_window_out(window: MaintenanceWindow, now: dt.datetime) -> dict[str, Any]:
    return {
        "id": None,
        "name": window.name,
        "source": "file",
        "matchers": [m.to_dict() for m in window.matchers],
        "weekdays": weekday_names(window.weekdays),
        "start": _hhmm(window.start_s),
        "end": _hhmm(window.end_s),
        "comment": "",
        "created_by": "",
        "created_at": None,
        "ended_at": None,
        "active": True,
        "open": window.is_open(now),
    }


def window_out(row: MaintenanceWindowRow, now: dt.datetime) -> dict[str, Any]:
    active = row.ended_at is None or row.ended_at > now
    try:
        is_open = active and window_of(row).is_open(now)
    except ValueError:  # edited by hand into something that no longer validates
        is_open = False
    return {
        "id": row.id,
        "name": row.name,
        "source": "api",
        "matchers": row.matchers,
        "weekdays": row.weekdays,
        "start": row.start,
        "end": row.end,
        "comment": row.comment,
        "created_by": row.created_by,
        "created_at": city_time(row.created_at),
        "ended_at": city_time(row.ended_at) if row.ended_at is not None else None,
        "active": active,
        "open": is_open,
    }


@router.get(
    "/maintenance-windows",
    response_model=Page[WindowOut],
    summary="List maintenance windows",
    responses={503: {"description": "the routing file cannot be read"}},
)
async def list_windows(
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow(*MANAGERS))],
    expired: Annotated[bool, Query(description="also list windows that have been ended")] = False,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The routing file's windows (first page only, in the file's order), then those made
    through the API in force (newest first); ``expired=true`` adds ended ones."""
    now = utcnow()
    stmt = select(MaintenanceWindowRow)
    if not expired:
        stmt = stmt.where(
            MaintenanceWindowRow.ended_at.is_(None) | (MaintenanceWindowRow.ended_at > now)
        )
    columns = [MaintenanceWindowRow.created_at, MaintenanceWindowRow.id]
    stmt = after(stmt, columns, cursor, descending=True).limit(limit + 1)
    async with ctx.sessions() as session:
        rows = list((await session.scalars(stmt)).all())
    page = page_of(
        rows, limit, key=lambda w: [w.created_at, w.id], convert=lambda w: window_out(w, now)
    )
    if cursor is None:
        files = [file_window_out(w, now) for w in routing(ctx).maintenance_windows]
        page["items"] = files + page["items"]
    return page


@router.post(
    "/maintenance-windows",
    response_model=WindowOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create a maintenance window",
    responses={422: {"description": "a field is invalid; the detail names it"}},
)
async def add_window(
    body: WindowIn,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow(*MANAGERS))],
) -> dict[str, Any]:
    """Mute the notifications of every alert the matchers select at the window's hours."""
    now = utcnow()
    name = body.name.strip()
    if name in {w.name for w in routing(ctx).maintenance_windows}:
        raise Problem(422, f"name: {name!r} is a window of the routing file; choose another name")
    if name in {w.name for w in await stored_windows(ctx.sessions, now)}:
        raise Problem(
            422, f"name: {name!r} is a window in force; choose another name or end that one"
        )
    matchers = [m.model_dump() for m in body.matchers]
    try:
        row = await create_window(
            audited(
                ctx.sessions,
                principal,
                "maintenance_window.create",
                "maintenance-windows",
                name=name,
                matchers=matchers,
                weekdays=body.weekdays,
                start=body.start,
                end=body.end,
                comment=body.comment,
            ),
            name,
            matchers,
            body.weekdays,
            body.start,
            body.end,
            created_by=principal.actor[:128],
            comment=body.comment,
        )
    except (MatcherError, WindowError) as exc:
        raise Problem(422, str(exc)) from None
    return window_out(row, now)


@router.delete(
    "/maintenance-windows/{window_id}",
    response_model=WindowOut,
    summary="End a maintenance window",
    responses={404: {"description": "no such window made through the API"}},
)
async def remove_window(
    window_id: WindowId,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow(*MANAGERS))],
) -> dict[str, Any]:
    """End the window at once: it mutes nothing from now on (kept, with its end, for the
    record). The routing file's windows are changed in the file."""
    now = utcnow()
    missing = (
        f"no maintenance window {window_id!r} made through the API; see "
        "GET /api/v1/maintenance-windows?expired=true (the routing file's are changed there)"
    )
    async with ctx.sessions() as session:
        if await session.get(MaintenanceWindowRow, window_id) is None:
            raise Problem(404, missing)
    row = await end_window(
        audited(
            ctx.sessions, principal, "maintenance_window.end", f"maintenance-windows/{window_id}"
        ),
        window_id,
        now,
    )
    if row is None:
        raise Problem(404, missing)
    return window_out(row, now)
