"""The live stream: ``GET /stream`` — Server-Sent Events of alert changes (and one device's
readings) for the console and the city brain.

Events: ``ready`` first (the subscription is live), then ``alert`` (the alert event of the
contract, one per state change) and, with ``device_id``, ``reading``; ``dropped`` last when
the client fell too far behind, ``revoked`` last when the stream's key was revoked (checked
every second while the stream is open). A comment line every 15 s keeps proxies from
closing it. Every key sees only what its grant covers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select
from sse_starlette import EventSourceResponse, ServerSentEvent

from cityiot.api.access import allow
from cityiot.api.context import ApiContext, context
from cityiot.api.keys import Principal
from cityiot.api.people import COOKIE, SessionEnded
from cityiot.api.problems import Problem
from cityiot.api.routes.devices import visible_device
from cityiot.api.stream import Subscription, WatchedDevice
from cityiot.storage.tables.registry import Vendor

log = logging.getLogger("cityiot.api.stream")

router = APIRouter(tags=["stream"])

PING_S = 15
SEND_TIMEOUT_S = 30.0  # a client that takes longer to accept one event is dropped
READY_WAIT_S = 2.0  # wait this long for the broker before saying ready anyway
KEY_CHECK_S = 1.0  # an open stream re-checks its key this often: a revocation ends it
REVOKED = {"reason": "the API key was revoked or has expired; ask an administrator for a new key"}

_STREAM_EXAMPLE = (
    'event: ready\ndata: {"device_id":null,"connected":true,'
    '"grant":{"kinds":null,"districts":null,"vendor":null}}\n\n'
    'event: alert\ndata: {"id":"4f1c…","rule":"manhole_cover_open","device_id":"mh-0001",'
    '"kind":"manhole","district":"yicheng","vendor":"acme","severity":"critical",'
    '"state":"firing","started_at":"2026-11-23T10:00:00+08:00","resolved_at":null,'
    '"values":{"cover_open":true,"tilt_deg":31.0},"summary":"井盖打开或倾斜（倾角 31°） / '
    'Manhole cover open or tilted (31°)"}\n\n'
    'event: reading\ndata: {"device_id":"mh-0001","kind":"manhole",'
    '"ts":"2026-11-23T10:00:00.000+08:00","ts_ms":1795399200000,"metrics":{"tilt_deg":31.0}}\n\n'
)


@router.get(
    "/stream",
    summary="Live stream of alert changes (Server-Sent Events)",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "an endless text/event-stream: ready, then alert (and reading) events",
            "content": {
                "text/event-stream": {"schema": {"type": "string"}, "example": _STREAM_EXAMPLE}
            },
        },
        404: {"description": "no such device, or one outside the key's grant (alike)"},
        503: {"description": "the API has no broker connection configured"},
    },
)
async def stream(
    request: Request,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow())],
    device_id: Annotated[
        str | None,
        Query(
            pattern=r"^[A-Za-z0-9_-]{1,64}$",
            description="also stream this device's readings (event: reading)",
        ),
    ] = None,
) -> EventSourceResponse:
    """Alert events as they happen, filtered to the key's grant; with ``device_id``, also
    that device's validated readings. Reconnect when the stream ends (``EventSource`` does
    so by itself); events missed meanwhile are in ``GET /alerts``."""
    hub = ctx.hub
    if hub is None:
        raise Problem(
            503,
            "the live stream needs the broker: start the API with CITYIOT_MQTT_URL set; "
            "meanwhile poll GET /api/v1/alerts",
        )
    watched = None
    if device_id is not None:
        device = await visible_device(ctx, principal, device_id)
        async with ctx.sessions() as session:
            codec = await session.scalar(select(Vendor.codec).where(Vendor.id == device.vendor_id))
        watched = WatchedDevice(
            device.id, device.vendor_id, device.kind, codec or "json", dict(device.attributes or {})
        )

    def wants(event: dict[str, Any]) -> bool:
        return principal.sees(event.get("kind"), event.get("district"), event.get("vendor"))

    if principal.user is not None:  # a person: the session cookie allow() took
        still = _session_check(ctx, request.cookies.get(COOKIE, ""))
    else:  # allow() took the key from this header, so it is there and well formed
        still = _key_check(ctx, request.headers.get("authorization", "").partition(" ")[2].strip())

    async def events() -> AsyncIterator[ServerSentEvent]:
        async with hub.subscribe(wants, watched) as subscription:
            guard = asyncio.create_task(_end_when_revoked(still, subscription))
            try:
                connected = await hub.wait_connected(READY_WAIT_S)
                grant = principal.grant()
                yield _event(
                    "ready", {"device_id": device_id, "connected": connected, "grant": grant}
                )
                async for name, data in subscription:  # ends when dropped, revoked or on shutdown
                    try:
                        event = _event(name, data)
                    except TypeError as exc:  # e.g. an integer beyond 64 bits: skip the event
                        log.warning("event=stream_event_unsendable name=%s error=%s", name, exc)
                        continue
                    yield event
            finally:
                guard.cancel()

    return EventSourceResponse(events(), ping=PING_S, send_timeout=SEND_TIMEOUT_S)


Check = Callable[[], Awaitable[dict[str, str] | None]]  # None, or the last event's data


def _key_check(ctx: ApiContext, presented: str) -> Check:
    async def check() -> dict[str, str] | None:
        principal = await ctx.keys.resolve(presented, time.monotonic())
        return None if principal is not None else REVOKED

    return check


def _session_check(ctx: ApiContext, token: str) -> Check:
    """An open stream is no use of the session: it ends when the person signs out, is
    disabled or leaves the console idle (DESIGN §10's idle expiry)."""

    async def check() -> dict[str, str] | None:
        try:
            await ctx.people.identify(token, touch=False)
        except SessionEnded as exc:
            return {"reason": str(exc)}
        return None

    return check


async def _end_when_revoked(still: Check, subscription: Subscription) -> None:
    """End ``subscription`` with a last ``revoked`` event once its key no longer resolves
    (revoked through the API at once, by the CLI in the database within the key cache's time
    to live, or expired), or its person's session has ended."""
    while not subscription.dropped:
        await asyncio.sleep(KEY_CHECK_S)
        try:
            ended = await still()
        except Exception as exc:  # the database is away: keep the stream, ask again next time
            log.warning("event=stream_key_check_failed error=%s", type(exc).__name__)
            continue
        if ended is not None:
            log.info("event=stream_ended reason=credentials_ended")
            subscription.finish("revoked", ended)


def _event(name: str, data: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=orjson.dumps(data).decode(), event=name)
