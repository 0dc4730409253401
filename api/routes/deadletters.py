"""Dead letters: ``/deadletters`` — every message the platform rejected, with the reason.

Newest first. A payload is stored cut to ``CITYIOT_DEAD_LETTER_PAYLOAD_BYTES`` (``truncated``
says so); it is served as text (UTF-8, undecodable bytes replaced by U+FFFD) and as base64,
so binary frames can be inspected exactly. Admin and operator keys see every dead letter,
a vendor key only those published under its own vendor id (another vendor's id answers 404,
like a missing one); department and field keys none.

The store is bounded: a vendor's dead letters are stored at most
``CITYIOT_DEAD_LETTER_RATE_PER_S`` a second (bursts of ``CITYIOT_DEAD_LETTER_RATE_BURST``);
beyond it they are counted (``cityiot_ingest_dead_letters_dropped_by_vendor_total``) and
summed up in one dead letter per vendor and interval (topic ``city/{vendor}/#``, no device id:
how many, the most common reason, and every reason's count in its payload). The oldest are
pruned past ``CITYIOT_DEAD_LETTER_MAX_ROWS`` rows or ``CITYIOT_DEAD_LETTER_MAX_BYTES`` of
stored payload (``cityiot_ingest_dead_letters_pruned_total``).
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from cityiot.api.access import allow, check_filter, scoped
from cityiot.api.context import ApiContext, context
from cityiot.api.keys import Principal
from cityiot.api.paging import Cursor, Limit, Page, after, page_of
from cityiot.api.params import TEXT, Instant, city_instant
from cityiot.api.problems import Problem
from cityiot.domain.sun import CITY_TZ
from cityiot.storage.tables.deadletters import DeadLetter

router = APIRouter(tags=["deadletters"])

READERS = ("admin", "operator", "vendor")
MAX_ID = 2**31 - 1  # the id column is a 32-bit integer on PostgreSQL

IdText = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")]

_EXAMPLE: dict[str, Any] = {
    "id": 1842,
    "received_at": "2025-11-23T10:00:00.123+08:00",
    "topic": "city/acme/mh-0001/telemetry",
    "vendor": "acme",
    "device_id": "mh-0001",
    "reason": "tilt_deg=400 is outside the physical range 0..90 °",
    "payload_size": 47,
    "payload": '{"ts":1763863200123,"metrics":{"tilt_deg":400}}',
    "payload_base64": "eyJ0cyI6MTc2Mzg2MzIwMDEyMywibWV0cmljcyI6eyJ0aWx0X2RlZyI6NDAwfX0=",
    "truncated": False,
}


class DeadLetterOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    id: int
    received_at: str = Field(description="when the platform received it; RFC 3339, +08:00")
    topic: str
    vendor: str | None = Field(description="the vendor id in the topic, when it had one")
    device_id: str | None = Field(description="the device id in the topic, when it had one")
    reason: str = Field(description="why it was rejected")
    payload_size: int = Field(description="size of the whole raw payload in bytes")
    payload: str = Field(description="stored payload as UTF-8 text (undecodable bytes → U+FFFD)")
    payload_base64: str = Field(description="stored payload bytes, base64")
    truncated: bool = Field(description="true when only the first bytes were stored")


def dead_letter_out(row: DeadLetter) -> dict[str, Any]:
    raw = bytes(row.payload or b"")
    return {
        "id": row.id,
        "received_at": row.received_at.astimezone(CITY_TZ).isoformat(timespec="milliseconds"),
        "topic": row.topic,
        "vendor": row.vendor,
        "device_id": row.device_id,
        "reason": row.reason,
        "payload_size": row.payload_size,
        "payload": raw.decode("utf-8", errors="replace"),
        "payload_base64": base64.b64encode(raw).decode("ascii"),
        "truncated": row.payload_size > len(raw),
    }


@router.get(
    "/deadletters",
    response_model=Page[DeadLetterOut],
    summary="Rejected messages with reasons",
    responses={
        403: {"description": "a role without access, or another vendor's filter"},
        400: {"description": "a cursor this API did not give out"},
    },
)
async def list_dead_letters(
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow(*READERS))],
    vendor: IdText = None,
    device_id: IdText = None,
    since: Annotated[
        Instant | None, Query(description="received at or after (RFC 3339; no offset: +08:00)")
    ] = None,
    until: Annotated[Instant | None, Query(description="received before (RFC 3339)")] = None,
    reason: Annotated[
        str | None,
        Query(max_length=200, pattern=TEXT, description="text the reason contains (any case)"),
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Rejected messages, newest first. A vendor key sees only its own vendor's."""
    if principal.vendor is not None:
        check_filter(principal, "vendor", vendor, {principal.vendor})
    start, end = city_instant(since, "since"), city_instant(until, "until")
    stmt = scoped(select(DeadLetter), principal, None, None, DeadLetter.vendor)
    if vendor is not None:
        stmt = stmt.where(DeadLetter.vendor == vendor)
    if device_id is not None:
        stmt = stmt.where(DeadLetter.device_id == device_id)
    if start is not None:
        stmt = stmt.where(DeadLetter.received_at >= start)
    if end is not None:
        stmt = stmt.where(DeadLetter.received_at < end)
    if reason:
        stmt = stmt.where(func.lower(DeadLetter.reason).contains(reason.lower(), autoescape=True))
    columns = [DeadLetter.received_at, DeadLetter.id]
    stmt = after(stmt, columns, cursor, descending=True).limit(limit + 1)
    async with ctx.sessions() as session:
        rows = list(await session.scalars(stmt))
    return page_of(rows, limit, key=lambda r: [r.received_at, r.id], convert=dead_letter_out)


@router.get(
    "/deadletters/{dead_letter_id}",
    response_model=DeadLetterOut,
    summary="One rejected message",
    responses={
        403: {"description": "a role without access"},
        404: {"description": "no such dead letter, or another vendor's (alike)"},
    },
)
async def get_dead_letter(
    dead_letter_id: Annotated[int, Path(ge=1, le=MAX_ID, description="dead letter id")],
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow(*READERS))],
) -> dict[str, Any]:
    async with ctx.sessions() as session:
        row = await session.get(DeadLetter, dead_letter_id)
    # Another vendor's dead letter is answered like a missing one: its id tells nothing.
    if row is None or (principal.vendor is not None and row.vendor != principal.vendor):
        raise Problem(
            404,
            f"no dead letter {dead_letter_id} among those this key may see; list them with "
            "GET /api/v1/deadletters",
        )
    return dead_letter_out(row)
