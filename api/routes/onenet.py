"""OneNET's (China Mobile) HTTP push for a vendor's NB-IoT devices (docs/design.md §4a).

``GET /intake/onenet/{vendor}?msg=M&nonce=N&signature=S`` is OneNET's URL check when the push
is configured: answered with ``M`` when ``S`` = base64(md5(T + N + M)), T the vendor's intake
token. ``POST`` to the same path carries ``{"msg", "nonce", "msg_signature"}``, signed the
same way over the msg text, checked before the messages are read. ``msg`` is one message or
an array: type 1 a data point (``ds_id`` and ``value``, time ``at``), type 2 presence
(``status`` 1 online, 0 offline), type 7 a command's result (logged).

The data points of one device at one ``at`` are one reading: ``{ds_id: value, …}`` mapped by
the vendor's codec (``metrics``), as CTWing's serviceData is. For a vendor whose codec
decodes frames, a string value is the frame in hex (OneNET's pass-through devices).

Answers are CTWing's: 200 once what was taken is durable (refusals listed, each a dead
letter: OneNET resends anything but a 200), 503 with Retry-After otherwise. A resent push is
harmless: each reading keeps OneNET's ``at``, and a point written again at its own time
replaces itself in InfluxDB.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
from collections.abc import Coroutine
from typing import Annotated, Any, cast

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse

from cityiot.api.context import ApiContext, context
from cityiot.api.limits import client_address
from cityiot.api.problems import Problem, problem_doc
from cityiot.api.routes.intake import (
    CTWING_RESPONSES,
    IntakeTaken,
    VendorId,
    answer,
    ingest_link,
    json_frame,
    token_failures,
    whole_number,
)
from cityiot.api.routes.telemetry import Rejection
from cityiot.ingest.http_link import NotDurable, PushLink, Taken
from cityiot.storage.intake_tokens import signing_token

log = logging.getLogger("cityiot.api.intake")

router = APIRouter(tags=["intake"])

ONENET = "onenet"
DATA_POINT, PRESENCE, COMMAND_RESULT = 1, 2, 7

ONENET_RESPONSES: dict[int | str, dict[str, Any]] = {
    **CTWING_RESPONSES,
    400: problem_doc("msg is not a OneNET message or an array of them"),
    401: problem_doc(
        "the signature is missing or not base64(md5(token + nonce + msg)) with the vendor's "
        "intake token"
    ),
}
_ONENET_BODY = {
    "requestBody": {
        "required": True,
        "description": "a OneNET push, as OneNET sends it: msg (its JSON text, or the message "
        "itself), nonce and msg_signature = base64(md5(token + nonce + msg text))",
        "content": {
            "application/json": {
                "schema": {"type": "object"},
                "example": {
                    "msg": '{"type":1,"imei":"869975031234567","dev_id":1052213,'
                    '"ds_id":"water_level_cm","value":42.5,"at":1763856000000}',
                    "nonce": "k3Lp9QzA",
                    "msg_signature": "aGVsbG8gd29ybGQgc2lnbmF0dXJl",
                },
            }
        },
    }
}


def signature(token: str, nonce: str, msg: str) -> str:
    """OneNET's signature: base64(md5(token + nonce + msg))."""
    digest = hashlib.md5((token + nonce + msg).encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def _signed(token: str, nonce: str, msg: str, presented: str) -> bool:
    expected = signature(token, nonce, msg).encode()
    # In a query string an unescaped '+' of the base64 reads as a space.
    return hmac.compare_digest(expected, presented.encode()) or hmac.compare_digest(
        expected, presented.replace(" ", "+").encode()
    )


def _unsigned(vendor: str) -> Problem:
    return Problem(
        401,
        f"the signature is not made with vendor {vendor}'s intake token: in OneNET's push "
        f"settings set the URL to /api/v1/intake/onenet/{vendor} and the token to T from POST "
        f"/api/v1/vendors/{vendor}/intake-token (or cityiot vendors intake-token {vendor}), "
        "with plain (not encrypted) messages",
    )


@router.get(
    "/intake/onenet/{vendor}",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {}}, "description": "msg, as given"},
        401: ONENET_RESPONSES[401],
    },
    summary="OneNET's URL check of a push subscription: answers msg when signed",
)
async def verify_onenet(
    request: Request,
    vendor: VendorId,
    ctx: Annotated[ApiContext, Depends(context)],
    msg: Annotated[str | None, Query(max_length=1024)] = None,
    nonce: Annotated[str | None, Query(max_length=128)] = None,
    signature: Annotated[str | None, Query(max_length=128)] = None,
) -> PlainTextResponse:
    """Answer ``msg`` when ``signature`` = base64(md5(T + nonce + msg)), T the vendor's intake
    token; 401 otherwise."""
    if msg is None or nonce is None or signature is None:
        await _failed(ctx, request, vendor)
        raise _unsigned(vendor)
    token = await signing_token(ctx.sessions, vendor, ctx.secret)
    if token is None or not _signed(token, nonce, msg, signature):
        await _failed(ctx, request, vendor)
        raise _unsigned(vendor)
    return PlainTextResponse(msg)


@router.post(
    "/intake/onenet/{vendor}",
    response_model=IntakeTaken,
    responses=ONENET_RESPONSES,
    openapi_extra=_ONENET_BODY,
    summary="Take OneNET's (China Mobile) HTTP push for a vendor's NB-IoT devices",
)
async def post_onenet(
    request: Request,
    vendor: VendorId,
    ctx: Annotated[ApiContext, Depends(context)],
) -> IntakeTaken:
    """Take one OneNET push: data points (type 1) as readings, presence (type 2); command
    results (type 7) and other types are answered 200 and only logged."""
    body = await request.body()
    messages = await _checked(ctx, request, vendor, body)
    link = ingest_link(ctx, "OneNET")
    if isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list) or not messages:
        raise Problem(
            400,
            "msg is neither a OneNET message (an object with type) nor a non-empty array of "
            "them; check the push's message format (plain JSON)",
        )
    try:
        return await _take_all(link, vendor, messages)
    except NotDurable as exc:
        raise Problem(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from None


async def _failed(ctx: ApiContext, request: Request, vendor: str) -> None:
    await token_failures(ctx).failed(
        ctx.sessions, ONENET, vendor, client_address(request.scope), "signature"
    )


async def _checked(ctx: ApiContext, request: Request, vendor: str, body: bytes) -> Any:
    """The messages of msg, once the signature over it is the vendor's; 401 before
    anything in msg is read otherwise.

    ``msg`` is its JSON text (design §4a); a msg given as JSON itself (OneNET's plain mode
    as some of its versions send it) is checked over its compact form."""
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError:
        envelope = None
    fields = envelope if isinstance(envelope, dict) else {}
    msg, nonce, presented = fields.get("msg"), fields.get("nonce"), fields.get("msg_signature")
    if msg is None or not isinstance(nonce, str) or not isinstance(presented, str):
        await _failed(ctx, request, vendor)
        raise _unsigned(vendor)
    msg_text = msg if isinstance(msg, str) else orjson.dumps(msg).decode()
    token = await signing_token(ctx.sessions, vendor, ctx.secret)
    if token is None or not _signed(token, nonce, msg_text, presented):
        await _failed(ctx, request, vendor)
        raise _unsigned(vendor)
    if not isinstance(msg, str):
        return msg
    try:
        return orjson.loads(msg_text)
    except orjson.JSONDecodeError:
        raise Problem(
            400, "msg is not JSON text; check the push's message format (plain JSON)"
        ) from None


async def _take_all(link: PushLink, vendor: str, messages: list[Any]) -> IntakeTaken:
    """Each message of the push, taken in order; one answer for them all.

    Every message enters the ingest's open batch before any is awaited, so a push of many
    waits for one write, not one per message."""
    readings: dict[tuple[str, int | None], tuple[int, dict[str, Any]]] = {}
    takes: list[tuple[int, Coroutine[Any, Any, Taken]]] = []
    refusals: list[tuple[int, str, Coroutine[Any, Any, None]]] = []
    decodes = await link.decodes_frames(vendor)
    for index, message in enumerate(messages):
        why = ""
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == DATA_POINT:
            device_id = await _device(link, vendor, message)
            ds_id, value, at = message.get("ds_id"), message.get("value"), message.get("at")
            if device_id is None:
                why = _unknown(vendor, message)
            elif not isinstance(ds_id, str) or not ds_id or "value" not in message:
                why = "a data point (type 1) needs ds_id (the field's name) and value"
            elif decodes and isinstance(value, str):
                frame = _hex(value)
                take = link.take(vendor, device_id, frame, link_ts_ms=whole_number(at), link=ONENET)
                takes.append((index, take))
            elif decodes:
                why = (
                    f"vendor {vendor}'s codec decodes frames: a pass-through device's value is "
                    f"its frame in hex, not {type(value).__name__}"
                )
            else:
                key = (device_id, whole_number(at))
                readings.setdefault(key, (index, {}))[1][ds_id] = value
        elif kind == PRESENCE:
            device_id = await _device(link, vendor, message)
            status = message.get("status")
            if device_id is None:
                why = _unknown(vendor, message)
            elif status not in (0, 1) or isinstance(status, bool):
                why = f"presence (type 2): status {status!r:.20} is neither 1 nor 0"
            else:
                online = orjson.dumps({"online": status == 1})
                takes.append(
                    (index, link.take(vendor, device_id, online, channel="status", link=ONENET))
                )
        elif kind == COMMAND_RESULT:
            log.info(
                "event=onenet_command_result vendor=%s cmd_id=%.64s", vendor, message.get("cmd_id")
            )
        elif isinstance(message, dict):
            log.info("event=onenet_not_taken vendor=%s type=%.20r", vendor, kind)
        else:
            why = f"msg[{index}] is not a OneNET message (an object with type)"
        if why:
            refusals.append((index, why, link.refuse(ONENET, vendor, orjson.dumps(message), why)))
    for (device_id, at), (index, fields) in readings.items():
        frame = await json_frame(link, vendor, fields)
        takes.append((index, link.take(vendor, device_id, frame, link_ts_ms=at, link=ONENET)))
    # Each coroutine puts its message in the batch before its first wait: started in order,
    # they are all in before any write is awaited.
    results = await asyncio.gather(
        *(take for _, take in takes),
        *(refuse for _, _, refuse in refusals),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result  # NotDurable: the push is answered 503 and sent again whole
    total = IntakeTaken(stored=0, rejected=[], duplicates=0)
    for (index, _), taken in zip(takes, results, strict=False):
        _add(total, index, cast(Taken, taken))
    total.rejected.extend(Rejection(index=index, reason=why) for index, why, _ in refusals)
    total.rejected.sort(key=lambda r: r.index)
    return total


def _add(total: IntakeTaken, index: int, taken: Taken) -> None:
    """``taken`` of the message at ``index`` added to the push's answer."""
    one = answer(taken)
    total.stored += one.stored
    total.duplicates += one.duplicates
    total.rejected.extend(Rejection(index=index, reason=r.reason) for r in one.rejected)


def _hex(value: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        return value.encode()  # not hex: the codec refuses it, a dead letter that shows it


async def _device(link: PushLink, vendor: str, message: dict[str, Any]) -> str | None:
    """The vendor's registered device with the message's ``imei``, else its ``dev_id`` as
    ``onenet_dev_id``. Another vendor's device reads as none."""
    imei, dev_id = message.get("imei"), message.get("dev_id")
    if isinstance(imei, str) and imei:
        return await link.device(vendor, imei=imei)
    if isinstance(dev_id, (int, str)) and not isinstance(dev_id, bool):
        return await link.device(vendor, onenet_dev_id=str(dev_id))
    return None


def _unknown(vendor: str, message: dict[str, Any]) -> str:
    imei, dev_id = message.get("imei"), message.get("dev_id")
    named = f"imei {str(imei)[:40]!r}" if imei else f"dev_id {str(dev_id)[:64]!r}"
    return (
        f"{named} is not registered to vendor {vendor}: give the device its imei or "
        "onenet_dev_id attribute (cityiot devices import FILE.csv or PATCH "
        "/api/v1/devices/{id}), or check the push subscription's vendor"
    )
