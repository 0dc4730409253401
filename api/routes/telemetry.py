"""The HTTP link: ``POST /telemetry/{vendor}/{device_id}`` (docs/design.md §4a) — readings
of devices and gateways that cannot speak MQTT, taken into this process's ingest, or relayed
through the broker to the ingest by an API that runs apart from it (cityiot/api/relay.py).

The body goes to the vendor's codec as it is: the JSON access standard (or the vendor's own
JSON, for a mapping-only codec) with ``Content-Type: application/json`` or none, raw bytes
for a decoding codec with ``application/octet-stream`` and ``?fport=N``. The same intake as
for MQTT validates it, makes dead letters of what it refuses, drops a repeated ``seq`` and
hands the readings to the rules; the answer comes only once they are durable (stored in
InfluxDB or spooled), as a broker's PUBACK would. The body is capped at
``CITYIOT_MAX_PAYLOAD_BYTES`` by the edge (:mod:`cityiot.api.limits`), before it is read.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from cityiot.api.access import allow
from cityiot.api.context import ApiContext, context
from cityiot.api.keys import Principal
from cityiot.api.problems import Problem, problem_doc
from cityiot.ingest.http_link import NotDurable, Taken

router = APIRouter(tags=["telemetry"])

SENDERS = ("vendor", "admin")
JSON = "application/json"
OCTETS = "application/octet-stream"
NO_INGEST_RETRY_S = 60  # an API without an ingest stays so until it is run otherwise
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

VendorId = Annotated[
    str, Path(pattern=ID_PATTERN, description="the vendor's id", examples=["acme"])
]
DeviceId = Annotated[
    str, Path(pattern=ID_PATTERN, description="the device's id", examples=["mh-0001"])
]
FPort = Annotated[
    int,
    Query(
        ge=0,
        le=255,
        description="the LoRaWAN-style port a decoding codec is given (raw bytes); 0 if absent",
    ),
]


class Rejection(BaseModel):
    index: int = Field(
        description="the reading's index in the message's batch; 0 for a single reading or "
        "when the whole message was refused"
    )
    reason: str = Field(description="why it was refused: what to change")


class TelemetryTaken(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "stored": 2,
                    "rejected": [
                        {
                            "index": 1,
                            "reason": "readings[1]: tilt_deg=400 is outside the physical "
                            "range 0..90 °",
                        }
                    ],
                    "duplicates": 0,
                }
            ]
        }
    )

    stored: int = Field(description="readings taken, durable (stored or spooled)")
    rejected: list[Rejection] = Field(description="readings refused, each also a dead letter")
    duplicates: int = Field(
        description="readings dropped as a repeated seq: they were taken before; don't resend"
    )


_REJECTED_PROPERTY = {
    "rejected": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"index": {"type": "integer"}, "reason": {"type": "string"}},
        },
    }
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}}
RESPONSES: dict[int | str, dict[str, Any]] = {
    403: problem_doc("the key is not a vendor or admin key, or is another vendor's"),
    413: problem_doc("the body is over CITYIOT_MAX_PAYLOAD_BYTES; nothing was read"),
    415: problem_doc("a Content-Type other than application/json or application/octet-stream"),
    422: problem_doc(
        "nothing could be taken: every reading was refused (each a dead letter), or the "
        "vendor, device or fport is not valid",
        _REJECTED_PROPERTY,
    ),
    503: {
        **problem_doc(
            "not taken: InfluxDB and the spool both refuse, the ingest is behind, or (an API "
            "apart from the ingest) the broker did not take it; send the message again after "
            "Retry-After"
        ),
        "headers": _RETRY_AFTER,
    },
}
_BODY = {
    "requestBody": {
        "required": True,
        "description": "what the vendor's codec takes",
        "content": {
            JSON: {
                "schema": {"type": "object"},
                "example": {
                    "ts": 1763856000000,
                    "seq": 42,
                    "metrics": {"tilt_deg": 2.5, "cover_open": False, "battery_pct": 87},
                },
            },
            OCTETS: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post(
    "/telemetry/{vendor}/{device_id}",
    response_model=TelemetryTaken,
    responses=RESPONSES,
    openapi_extra=_BODY,
    summary="Send a device's readings over HTTP (the HTTP link)",
)
async def post_telemetry(
    request: Request,
    vendor: VendorId,
    device_id: DeviceId,
    principal: Annotated[Principal, Depends(allow(*SENDERS))],
    ctx: Annotated[ApiContext, Depends(context)],
    fport: FPort = 0,
) -> TelemetryTaken:
    """Take one message of ``device_id`` of ``vendor`` — as the vendor's codec takes it —
    and answer once its readings are durable. A vendor key sends for its own vendor only."""
    if principal.vendor is not None and principal.vendor != vendor:
        # Refused before any lookup: the answer tells nothing of the other vendor's devices.
        raise Problem(
            403,
            f"this key is vendor {principal.vendor}'s; it may send only to "
            f"/api/v1/telemetry/{principal.vendor}/{{device_id}}",
        )
    _check_media_type(request.headers.get("content-type"))
    link = ctx.telemetry
    if link is None:
        raise Problem(
            503,
            "this API has neither an ingest in its process (`cityiot run`) nor a broker to "
            "relay messages to the ingest through: set CITYIOT_MQTT_URL for it",
            headers={"Retry-After": str(NO_INGEST_RETRY_S)},
        )
    body = await request.body()
    try:
        taken = await link.take(vendor, device_id, body, fport)
    except NotDurable as exc:
        raise Problem(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from None
    return _answer(taken)


def _check_media_type(header: str | None) -> None:
    """415 unless the body is JSON, raw bytes, or says nothing of its type."""
    media_type = (header or "").split(";", 1)[0].strip().lower()
    if media_type not in ("", JSON, OCTETS):
        raise Problem(
            415,
            f"Content-Type {media_type!r} is not taken here: send Content-Type: {JSON} for "
            f"the JSON access standard (or your codec's JSON), or {OCTETS} with ?fport=N for "
            "raw bytes your vendor's codec decodes",
        )


def _answer(taken: Taken) -> TelemetryTaken:
    """200 with what was taken; 422 when nothing was, now or before (a message wholly
    refused: the sender must fix it, not resend it)."""
    rejected = [Rejection(index=index, reason=reason) for index, reason in taken.rejected]
    if rejected and taken.stored == 0 and taken.duplicates == 0:
        more = len(rejected) - 1
        detail = f"nothing of the message was stored: {rejected[0].reason}"
        if more:
            detail += f" (and {more} more refused: see rejected)"
        raise Problem(
            422,
            detail + "; each refusal is a dead letter (GET /api/v1/deadletters)",
            rejected=[r.model_dump() for r in rejected],
        )
    return TelemetryTaken(stored=taken.stored, rejected=rejected, duplicates=taken.duplicates)
