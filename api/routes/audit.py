"""The audit log: ``/audit`` — who changed what, newest first (admin keys only).

Every change made through the API or the CLI (keys, devices, vendors, credentials, alert
acks, silences, rules, work orders) writes one entry in the same transaction as the change.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, or_, select

from cityiot.api.access import allow
from cityiot.api.context import ApiContext, context
from cityiot.api.keys import Principal
from cityiot.api.paging import Cursor, Limit, Page, after, page_of
from cityiot.api.params import TEXT, Instant, city_instant
from cityiot.domain.sun import CITY_TZ
from cityiot.storage.tables.audit import AuditEntry

router = APIRouter(tags=["audit"])

_EXAMPLE: dict[str, Any] = {
    "id": 311,
    "at": "2026-11-23T10:02:11.481+08:00",
    "actor": "key:3f9a0c1b2d4e (ops desk)",
    "role": "operator",
    "action": "alert.ack",
    "resource": "alerts/01JD8Z3K6Q",
    "detail": {"note": "crew on the way"},
}


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    id: int
    at: str = Field(description="RFC 3339, +08:00")
    actor: str = Field(description='"key:<id> (<name>)" for an API key, "cli" for the CLI')
    role: str = Field(description="the actor's role")
    action: str = Field(description="what was done, e.g. device.update, alert.ack, key.create")
    resource: str = Field(description="what it was done to, e.g. devices/mh-0001")
    detail: dict[str, Any] = Field(description="the change's parameters (never secrets)")


def audit_entry_out(row: AuditEntry) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": row.at.astimezone(CITY_TZ).isoformat(timespec="milliseconds"),
        "actor": row.actor,
        "role": row.role,
        "action": row.action,
        "resource": row.resource,
        "detail": dict(row.detail or {}),
    }


@router.get(
    "/audit",
    response_model=Page[AuditEntryOut],
    summary="Audit log: who changed what",
    responses={
        403: {"description": "not an admin key"},
        400: {"description": "a cursor this API did not give out"},
    },
)
async def list_audit_entries(
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow("admin"))],
    actor: Annotated[
        str | None,
        Query(max_length=128, pattern=TEXT, description="text the actor contains, e.g. a key id"),
    ] = None,
    action: Annotated[
        str | None,
        Query(
            max_length=64, pattern=TEXT, description="an action (alert.ack) or its family (alert)"
        ),
    ] = None,
    resource: Annotated[
        str | None,
        Query(
            max_length=200,
            pattern=TEXT,
            description="a resource (devices/mh-1) or a collection (devices)",
        ),
    ] = None,
    since: Annotated[
        Instant | None, Query(description="at or after (RFC 3339; no offset: +08:00)")
    ] = None,
    until: Annotated[Instant | None, Query(description="before (RFC 3339)")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Changes, newest first. Admin keys only."""
    start, end = city_instant(since, "since"), city_instant(until, "until")
    stmt = select(AuditEntry)
    if actor:
        stmt = stmt.where(func.lower(AuditEntry.actor).contains(actor.lower(), autoescape=True))
    if action:
        stmt = stmt.where(
            or_(
                AuditEntry.action == action,
                AuditEntry.action.startswith(f"{action}.", autoescape=True),
            )
        )
    if resource:
        stmt = stmt.where(
            or_(
                AuditEntry.resource == resource,
                AuditEntry.resource.startswith(f"{resource}/", autoescape=True),
            )
        )
    if start is not None:
        stmt = stmt.where(AuditEntry.at >= start)
    if end is not None:
        stmt = stmt.where(AuditEntry.at < end)
    stmt = after(stmt, [AuditEntry.at, AuditEntry.id], cursor, descending=True).limit(limit + 1)
    async with ctx.sessions() as session:
        rows = list(await session.scalars(stmt))
    return page_of(rows, limit, key=lambda r: [r.at, r.id], convert=audit_entry_out)
