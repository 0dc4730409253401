"""Network platforms' HTTP push (docs/design.md §4a): ``POST /intake/ctwing/{vendor}`` takes
what China Telecom's CTWing (AEP) pushes for a vendor's NB-IoT devices.

The caller is the network platform, not a key holder: it presents the vendor's intake
token (``?token=T``), checked before the body is parsed. A data report goes through the
same intake as MQTT (the vendor's codec, validation, dead letters, duplicates by
``upPacketSN``, rules); the answer is 200 only once what was taken is durable, 503 with
Retry-After otherwise, so CTWing's own retries cover an outage. A report that can never be
taken (an unknown IMEI, a frame the codec refuses) is answered 200 with the refusal listed
and kept as a dead letter: CTWing retries on anything else, for ever.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from cityiot.api.context import ApiContext, context
from cityiot.api.intake_guard import TokenFailures
from cityiot.api.limits import client_address
from cityiot.api.problems import Problem, problem_doc
from cityiot.api.routes.telemetry import (
    ID_PATTERN,
    NO_INGEST_RETRY_S,
    RESPONSES,
    Rejection,
)
from cityiot.ingest.http_link import NotDurable, PushLink, Taken
from cityiot.storage.intake_tokens import verify

log = logging.getLogger("cityiot.api.intake")

router = APIRouter(tags=["intake"])

CTWING = "ctwing"
BUILT_IN_JSON = "json"  # the access standard: readings carry their metrics under "metrics"

VendorId = Annotated[
    str, Path(pattern=ID_PATTERN, description="the vendor's id", examples=["acme"])
]
Token = Annotated[
    str | None,
    Query(description="the vendor's intake token (POST /api/v1/vendors/{id}/intake-token)"),
]


class IntakeTaken(BaseModel):
    stored: int = Field(description="readings taken, durable (stored or spooled)")
    rejected: list[Rejection] = Field(
        description="what was refused, each also a dead letter: the push is not to be resent"
    )
    duplicates: int = Field(description="readings dropped as a repeated upPacketSN")


CTWING_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: problem_doc("the body is not a JSON object, or not a CTWing push message"),
    401: problem_doc("the token is missing or is not the vendor's intake token"),
    413: RESPONSES[413],
    503: RESPONSES[503],
}
_CTWING_BODY = {
    "requestBody": {
        "required": True,
        "description": "a CTWing (AEP) push message, as CTWing sends it",
        "content": {
            "application/json": {
                "schema": {"type": "object"},
                "example": {
                    "messageType": "dataReport",
                    "IMEI": "861234567890123",
                    "deviceId": "a1b2c3d4861234567890123",
                    "timestamp": 1763856000000,
                    "upPacketSN": 42,
                    "payload": {"serviceData": {"tilt_deg": 2.5, "cover_open": False}},
                },
            }
        },
    }
}


@router.post(
    "/intake/ctwing/{vendor}",
    response_model=IntakeTaken,
    responses=CTWING_RESPONSES,
    openapi_extra=_CTWING_BODY,
    summary="Take CTWing's (China Telecom AEP) HTTP push for a vendor's NB-IoT devices",
)
async def post_ctwing(
    request: Request,
    vendor: VendorId,
    ctx: Annotated[ApiContext, Depends(context)],
    token: Token = None,
) -> IntakeTaken:
    """Take one CTWing push message: ``dataReport`` (readings), ``deviceOnlineOfflineReport``
    (presence); other types are answered 200 and only logged."""
    if not await verify(ctx.sessions, vendor, token):
        await token_failures(ctx).failed(
            ctx.sessions, CTWING, vendor, client_address(request.scope), "token"
        )
        raise Problem(
            401,
            f"the token is missing or is not vendor {vendor}'s intake token: set the push "
            f"subscription's URL to /api/v1/intake/ctwing/{vendor}?token=T with T from POST "
            f"/api/v1/vendors/{vendor}/intake-token (or cityiot vendors intake-token {vendor})",
        )
    link = ingest_link(ctx)
    body = await request.body()
    message = _message(body)
    kind = message.get("messageType")
    try:
        if kind == "dataReport":
            return await _data_report(link, vendor, message, body)
        if kind == "deviceOnlineOfflineReport":
            return await _presence(link, vendor, message, body)
    except NotDurable as exc:
        raise Problem(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from None
    # commandResponse (commands to CTWing devices are not sent from here) and the rest.
    log.info("event=ctwing_not_taken vendor=%s messageType=%.64s", vendor, kind)
    return IntakeTaken(stored=0, rejected=[], duplicates=0)


def token_failures(ctx: ApiContext) -> TokenFailures:
    """This API's count of wrong intake tokens and signatures (api/intake_guard.py)."""
    guard = ctx.extra.get("token_failures")
    if guard is None:
        guard = ctx.extra["token_failures"] = TokenFailures()
    assert isinstance(guard, TokenFailures)
    return guard


def ingest_link(ctx: ApiContext, network: str = "CTWing") -> PushLink:
    if ctx.telemetry is None:
        raise Problem(
            503,
            f"{network} pushes are taken by an API with an ingest in its process (`cityiot "
            "run`) or with a broker to relay them to the ingest through; this API has neither: "
            "set CITYIOT_MQTT_URL for it",
            headers={"Retry-After": str(NO_INGEST_RETRY_S)},
        )
    return ctx.telemetry


def _message(body: bytes) -> dict[str, Any]:
    """The push message; 400 when the body is no JSON object with a ``messageType``. Not a
    dead letter: such a body names no vendor's device and nothing in it can be taken."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        message = None
    if not isinstance(message, dict) or not isinstance(message.get("messageType"), str):
        raise Problem(
            400,
            "the body is not a CTWing push message: a JSON object with messageType "
            "(dataReport, deviceOnlineOfflineReport, …) was expected",
        )
    return message


async def _data_report(
    link: PushLink, vendor: str, message: dict[str, Any], body: bytes
) -> IntakeTaken:
    device_id = await _device(link, vendor, message)
    if device_id is None:
        return await _unknown(link, vendor, message, body)
    payload = message.get("payload")
    ts = whole_number(message.get("timestamp"))
    seq = whole_number(message.get("upPacketSN"))
    seq = seq if seq is not None and seq >= 0 else None  # -1: CTWing numbered nothing
    frame = await _frame(link, vendor, payload)
    if frame is None:
        reason = (
            "dataReport: payload has neither APPdata (base64) nor serviceData (an object); "
            "check the product's data format in CTWing"
        )
        await link.refuse(CTWING, vendor, body, reason)
        return refused(reason)
    taken = await link.take(vendor, device_id, frame, 0, link_ts_ms=ts, link_seq=seq, link=CTWING)
    return answer(taken)


async def _device(link: PushLink, vendor: str, message: dict[str, Any]) -> str | None:
    """The registered device of ``vendor`` whose ``imei`` is the message's IMEI. Another
    vendor's device reads as none: a vendor learns nothing of other vendors' devices."""
    imei = message.get("IMEI")
    return await link.device(vendor, imei=imei) if isinstance(imei, str) else None


async def _unknown(
    link: PushLink, vendor: str, message: dict[str, Any], body: bytes
) -> IntakeTaken:
    """A dead letter of a message whose IMEI is no device of ``vendor``, and its answer."""
    reason = (
        f"IMEI {str(message.get('IMEI'))[:40]!r} is not registered to vendor {vendor}: give "
        "the device its imei attribute (cityiot devices import FILE.csv or PATCH "
        "/api/v1/devices/{id}), or check the push subscription's vendor"
    )
    await link.refuse(CTWING, vendor, body, reason)
    return refused(reason)


async def _frame(link: PushLink, vendor: str, payload: Any) -> bytes | None:
    """What the vendor's codec is given: APPdata's bytes, or serviceData as JSON (under
    ``metrics`` for the access standard's codec, as it is for a mapping codec)."""
    if not isinstance(payload, dict):
        return None
    app_data = payload.get("APPdata")
    if isinstance(app_data, str):
        try:
            return base64.b64decode(app_data, validate=True)
        except (binascii.Error, ValueError):
            return app_data.encode()  # not base64: the codec refuses it, a dead letter
    service_data = payload.get("serviceData")
    if isinstance(service_data, dict):
        return await json_frame(link, vendor, service_data)
    return None


async def json_frame(link: PushLink, vendor: str, fields: dict[str, Any]) -> bytes:
    """Named values (CTWing's serviceData, OneNET's data points) as the JSON the vendor's
    codec takes: under ``metrics`` for the access standard's codec, as they are for a
    mapping codec."""
    if await link.codec_of(vendor) == BUILT_IN_JSON:
        return orjson.dumps({"metrics": fields})
    return orjson.dumps(fields)


async def _presence(
    link: PushLink, vendor: str, message: dict[str, Any], body: bytes
) -> IntakeTaken:
    device_id = await _device(link, vendor, message)
    if device_id is None:
        return await _unknown(link, vendor, message, body)
    event = message.get("eventType")
    if event not in (0, 1) or isinstance(event, bool):
        reason = f"deviceOnlineOfflineReport: eventType {event!r:.20} is neither 1 nor 0"
        await link.refuse(CTWING, vendor, body, reason)
        return refused(reason)
    status = orjson.dumps({"online": event == 1})
    return answer(await link.take(vendor, device_id, status, channel="status", link=CTWING))


def whole_number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def refused(reason: str) -> IntakeTaken:
    return IntakeTaken(stored=0, rejected=[Rejection(index=0, reason=reason)], duplicates=0)


def answer(taken: Taken) -> IntakeTaken:
    """200 with what was taken, refusals included: a refused report is a dead letter, and
    CTWing would resend anything but a 200 for ever."""
    rejected = [Rejection(index=index, reason=reason) for index, reason in taken.rejected]
    return IntakeTaken(stored=taken.stored, rejected=rejected, duplicates=taken.duplicates)
