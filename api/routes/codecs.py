"""The codecs: ``GET /codecs``, ``GET/PUT /codecs/{name}``, ``POST /codecs/{name}/decode``.

A codec (docs/design.md §4a) is served as its codec file's mapping (``spec``) with the
scripts it names (``scripts``) and where the version in force came from (``source``):
``built-in`` (``json``, the access standard itself), ``package`` (shipped), the path of a
file in ``CITYIOT_CODECS_PATH``, or ``api`` (put here, kept in the database). A ``PUT`` is
loaded into the sandbox and every example is run before anything is stored: a failing
example refuses it (422 naming the example). This API decodes with it at once; the ingest
and other API processes within ``CITYIOT_REGISTRY_REFRESH_S``. ``decode`` answers what a
payload would store for a device, validated as the ingest validates it, and stores nothing.

Who may do what: every role lists the codecs (a vendor key sees only its own vendor among
each codec's users; field and department keys see no vendors). Administrators and
operators read any codec's spec and scripts; other keys read the shipped ones and, for a
vendor key, its own vendor's codec. Only administrators put. Administrators and operators
decode with any codec; a vendor key with its own vendor's codec and its own devices only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections.abc import Mapping
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cityiot.api.access import allow
from cityiot.api.audit import audit, audited
from cityiot.api.context import ApiContext, context
from cityiot.api.keys import Principal
from cityiot.api.paging import Cursor, Limit, Page, decode_cursor, encode_cursor
from cityiot.api.problems import Problem
from cityiot.api.routes.devices import visible_device
from cityiot.domain.catalogue import MODEL
from cityiot.ingest.codecs import CodecBook
from cityiot.ingest.codecs.files import (
    BUILT_IN,
    MAX_SCRIPT_CHARS,
    SCRIPT_NAME,
    CodecFileError,
    parse_codec,
)
from cityiot.ingest.codecs.scripted import FileCodec
from cityiot.ingest.codecs.trial import Undecodable, try_payload
from cityiot.ingest.validate import Validator
from cityiot.rules.events import city_time
from cityiot.storage.codecs import save_codec
from cityiot.storage.tables.codecs import CodecOverride
from cityiot.storage.tables.registry import Device, Vendor

router = APIRouter(tags=["codecs"])
log = logging.getLogger("cityiot.api")

# Roles that read every codec's spec and scripts and decode with any codec.
STAFF = ("admin", "operator")
DECODERS = (*STAFF, "vendor")
# Sources anyone may read in full: the platform's own codecs.
SHIPPED = ("built-in", "package")
MAX_SCRIPTS = 8  # scripts one codec may carry: a decoder, an encoder, and room to spare
# Longest reason kept in the audit entry of a refused PUT.
REASON_CHARS = 2000
JSON_NOTE = (
    "json is the access standard itself (docs/design.md §4): built into the platform, with "
    "no codec file or script; it cannot be replaced"
)

CodecName = Annotated[
    str,
    Path(max_length=64, description="the codec's name, [a-z0-9_-]{1,64}", examples=["acme-level"]),
]

# The test codec of docs/design.md §4a, shortened: a level sensor's TS013 decoder.
_SCRIPT = """function decodeUplink(input) {
  var b = input.bytes;
  if (b.length !== 3) return {errors: ["frame of " + b.length + " bytes; expected 3"]};
  return {data: {distance: (b[0] << 8) | b[1], battery: b[2]}};
}
"""
_SPEC: dict[str, Any] = {
    "codec": "acme-level",
    "description": "Acme ultrasonic level sensor",
    "uplinkDecoder": {
        "fileName": "acme-level.js",
        "examples": [
            {
                "description": "distance 500 mm, battery 92 %",
                "input": {"fPort": 1, "bytes": [1, 244, 92]},
                "output": {"data": {"distance": 500, "battery": 92}},
            }
        ],
    },
    "metrics": {"water_level_cm": "depth_cm - distance / 10", "battery_pct": "battery"},
}
_CODEC_EXAMPLE: dict[str, Any] = {
    "name": "acme-level",
    "source": "api",
    "spec": _SPEC,
    "scripts": {"acme-level.js": _SCRIPT},
    "updated_at": "2026-11-23T10:00:00+08:00",
    "updated_by": "key:3f2a1b0c9d8e (test admin)",
    "note": None,
}


class ExampleCounts(BaseModel):
    uplink: int = Field(description="examples of the uplink decoder, run at every load")
    downlink: int = Field(description="examples of the downlink encoder")


class CodecSummary(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "acme-level",
                    "description": "Acme ultrasonic level sensor",
                    "source": "api",
                    "has_decoder": True,
                    "has_encoder": False,
                    "metrics": _SPEC["metrics"],
                    "examples": {"uplink": 1, "downlink": 0},
                    "vendors": ["acme"],
                }
            ]
        }
    )

    name: str
    description: str
    source: str = Field(
        description="built-in (json), package (shipped), the codec file's path "
        "(CITYIOT_CODECS_PATH), or api (put through PUT /codecs/{name})"
    )
    has_decoder: bool = Field(description="an uplinkDecoder script (else the payload is JSON)")
    has_encoder: bool = Field(description="a downlinkEncoder script (commands)")
    metrics: dict[str, str] | None = Field(
        description="metric → expression; null: the decoder's output fields are the metrics by name"
    )
    examples: ExampleCounts
    vendors: list[str] | None = Field(
        description="ids of the vendors set to this codec (a vendor key: its own only); "
        "null for keys that may not read vendors"
    )


class CodecOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_CODEC_EXAMPLE]})

    name: str
    source: str = Field(description="built-in, package, the codec file's path, or api")
    spec: dict[str, Any] | None = Field(
        description="the codec file's mapping (codec, description, uplinkDecoder, "
        "downlinkEncoder, metrics); null for json"
    )
    scripts: dict[str, str] = Field(description="file name → the JavaScript the spec names")
    updated_at: str | None = Field(None, description="when it was put through the API")
    updated_by: str | None = None
    note: str | None = None


class CodecIn(BaseModel):
    """A codec file and its scripts as JSON; what ``GET /codecs/{name}`` answers may be put
    back as it is (its read-only fields are ignored)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"spec": _SPEC, "scripts": {"acme-level.js": _SCRIPT}}]},
    )

    spec: dict[str, Any] = Field(
        description="the codec file's mapping; spec.codec is the path's name"
    )
    scripts: dict[str, str] = Field(
        default_factory=dict,
        description=f"file name → JavaScript, each named by a fileName of the spec; at most "
        f"{MAX_SCRIPTS}, each at most 1 MiB",
    )
    name: Any = Field(None, description="read-only (as GET answers it): ignored")
    source: Any = Field(None, description="read-only: ignored")
    updated_at: Any = Field(None, description="read-only: ignored")
    updated_by: Any = Field(None, description="read-only: ignored")
    note: Any = Field(None, description="read-only: ignored")


class DecodeIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={"examples": [{"fPort": 1, "bytes_hex": "01F45C", "device_id": "mh-1"}]},
    )

    fPort: int = Field(0, ge=0, le=255, description="the frame's port; 0 when the link has none")
    bytes_hex: str | None = Field(
        None,
        max_length=4 << 20,
        description="the frame as hex digits (spaces allowed); for a mapping-only codec, the "
        "JSON text's bytes",
    )
    json_: Any = Field(
        None,
        alias="json",
        description="the vendor's JSON, for json and mapping-only codecs (instead of bytes_hex)",
    )
    device_id: str | None = Field(
        None,
        max_length=64,
        description="map with this device's kind and attributes, and validate as the ingest "
        "does; without it nothing is validated but the times",
    )


class DecodedReading(BaseModel):
    ts: int = Field(description="epoch milliseconds, as it would be stored")
    time: str = Field(description="the same time, RFC 3339 in the city's offset")
    ts_assumed: bool = Field(description="no time in the frame: the receive time stands in")
    seq: int | None = None
    metrics: dict[str, Any]


class RejectedReading(BaseModel):
    index: int = Field(description="the reading's place in output")
    reason: str = Field(description="the dead letter's reason, word for word")


class DecodeOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "codec": "acme-level",
                    "device_id": "mh-1",
                    "kind": "manhole",
                    "output": [{"distance": 500, "battery": 92}],
                    "readings": [
                        {
                            "ts": 1795399200000,
                            "time": "2026-11-23T10:00:00+08:00",
                            "ts_assumed": True,
                            "seq": None,
                            "metrics": {"water_level_cm": 150.0, "battery_pct": 92.0},
                        }
                    ],
                    "rejected": [],
                    "note": None,
                }
            ]
        }
    )

    codec: str
    device_id: str | None
    kind: str | None = Field(description="the device's kind; null without a device")
    output: list[dict[str, Any]] = Field(
        description="what the decoder gave (json: the readings as sent), one object a reading"
    )
    readings: list[DecodedReading] = Field(description="what would be stored")
    rejected: list[RejectedReading] = Field(description="what would be dead letters instead")
    note: str | None = None


def _book(ctx: ApiContext) -> CodecBook:
    if ctx.codecs is None:
        raise Problem(503, "this API has no codec book loaded; restart it with the platform")
    return ctx.codecs


def _unknown(name: str, book: CodecBook) -> Problem:
    return Problem(
        404,
        f"no codec {name[:64]!r}; the codecs in force are {', '.join(book.names())} "
        "(PUT /api/v1/codecs/{name} adds one)",
    )


async def _put_by(ctx: ApiContext) -> dict[str, tuple[dt.datetime, str]]:
    """name → (when, by whom) of the codecs put through the API."""
    stmt = select(CodecOverride.name, CodecOverride.updated_at, CodecOverride.updated_by)
    async with ctx.sessions() as session:
        return {n: (at, by) for n, at, by in (await session.execute(stmt)).all()}


async def _users(ctx: ApiContext, principal: Principal) -> dict[str, list[str]] | None:
    """codec → the ids of the vendors set to it, as far as the key may read vendors."""
    if principal.role not in DECODERS:
        return None
    stmt = select(Vendor.codec, Vendor.id).order_by(Vendor.id)
    if principal.vendor is not None:
        stmt = stmt.where(Vendor.id == principal.vendor)
    users: dict[str, list[str]] = {}
    async with ctx.sessions() as session:
        for codec, vendor in (await session.execute(stmt)).all():
            users.setdefault(codec, []).append(vendor)
    return users


async def _own_codec(ctx: ApiContext, principal: Principal) -> str | None:
    """The codec of a vendor key's vendor (None for other keys, or an unknown vendor)."""
    if principal.vendor is None:
        return None
    async with ctx.sessions() as session:
        return await session.scalar(select(Vendor.codec).where(Vendor.id == principal.vendor))


def _summary(book: CodecBook, name: str, users: dict[str, list[str]] | None) -> dict[str, Any]:
    vendors = users.get(name, []) if users is not None else None
    spec = book.specs.get(name)
    if spec is None:  # json
        return {
            "name": name,
            "description": "接入标准本身 / the access standard itself",
            "source": book.source(name),
            "has_decoder": False,
            "has_encoder": False,
            "metrics": None,
            "examples": {"uplink": 0, "downlink": 0},
            "vendors": vendors,
        }
    return {
        "name": name,
        "description": spec.description,
        "source": book.source(name),
        "has_decoder": spec.decoder is not None,
        "has_encoder": spec.encoder is not None,
        "metrics": dict(spec.metrics) if spec.metrics is not None else None,
        "examples": {
            "uplink": len(spec.decoder.examples) if spec.decoder else 0,
            "downlink": len(spec.encoder.examples) if spec.encoder else 0,
        },
        "vendors": vendors,
    }


def _out(book: CodecBook, name: str, put: tuple[dt.datetime, str] | None) -> dict[str, Any]:
    source = book.source(name)
    spec = book.specs.get(name)
    if spec is None:
        return {"name": name, "source": source, "spec": None, "scripts": {}, "note": JSON_NOTE}
    at, by = put if put is not None and source == "api" else (None, None)
    return {
        "name": name,
        "source": source,
        "spec": dict(spec.spec),
        "scripts": dict(spec.scripts),
        "updated_at": city_time(at),
        "updated_by": by,
        "note": None,
    }


@router.get("/codecs", response_model=Page[CodecSummary], summary="The codecs in force")
async def list_codecs(
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow())],
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Every codec this API decodes with, by name: where it came from, whether it has a
    decoder and an encoder, its metrics mapping, how many examples prove it, and which
    vendors are set to it. Any key may list them."""
    book = _book(ctx)
    names = book.names()
    if cursor is not None:
        (last,) = decode_cursor(cursor, 1)
        names = [n for n in names if n > str(last)]
    page = names[:limit]
    users = await _users(ctx, principal)
    return {
        "items": [_summary(book, n, users) for n in page],
        "next_cursor": encode_cursor([page[-1]]) if len(names) > limit else None,
    }


@router.get(
    "/codecs/{name}",
    response_model=CodecOut,
    summary="One codec: its file's mapping and scripts",
    responses={
        403: {"description": "a codec this key may not read (another vendor's)"},
        404: {"description": "no such codec; the detail lists the codecs in force"},
    },
)
async def get_codec(
    name: CodecName,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow())],
) -> dict[str, Any]:
    """The codec in force, as ``PUT /codecs/{name}`` takes it back. Administrators and
    operators read any; other keys the shipped ones and a vendor key its vendor's."""
    book = _book(ctx)
    if name not in book.codecs:
        raise _unknown(name, book)
    if principal.role not in STAFF and book.source(name) not in SHIPPED:
        own = await _own_codec(ctx, principal)
        if own != name:
            raise Problem(
                403,
                f"codec {name!r} is not one of the platform's own codecs"
                + (f" nor this key's vendor's ({own})" if own else "")
                + "; an administrator or operator key reads it",
            )
    return _out(book, name, (await _put_by(ctx)).get(name))


async def _refused(
    ctx: ApiContext, principal: Principal, name: str, status_: int, detail: str
) -> Problem:
    """The Problem to raise for a refused PUT, after writing it to the audit log."""
    async with ctx.sessions() as session, session.begin():
        audit(
            session,
            principal,
            "codec.put_refused",
            f"codecs/{name}",
            status=status_,
            reason=detail[:REASON_CHARS],
        )
    return Problem(status_, detail)


def _named_scripts(spec: Mapping[str, Any]) -> set[str]:
    """The script files the spec names (uplinkDecoder, downlinkEncoder, downlinkDecoder)."""
    named = set()
    for part in ("uplinkDecoder", "downlinkEncoder", "downlinkDecoder"):
        entry = spec.get(part)
        if isinstance(entry, dict) and isinstance(entry.get("fileName"), str):
            named.add(entry["fileName"])
    return named


def _scripts_fault(spec: Mapping[str, Any], scripts: Mapping[str, str]) -> str | None:
    """What is wrong with the scripts of a PUT body, or None."""
    if len(scripts) > MAX_SCRIPTS:
        return f"scripts: {len(scripts)} files; a codec carries at most {MAX_SCRIPTS}"
    named = _named_scripts(spec)
    for file_name, text in scripts.items():
        if not SCRIPT_NAME.match(file_name):
            return (
                f"scripts: {file_name[:140]!r} is not a script's file name; write "
                "[A-Za-z0-9_.-]{1,128}.js, e.g. acme-level.js"
            )
        if len(text) > MAX_SCRIPT_CHARS:
            return f"scripts.{file_name}: {len(text)} characters; a codec script has at most 1 MiB"
        if file_name not in named:
            return (
                f"scripts.{file_name}: no fileName of the spec names it; name it in "
                "uplinkDecoder or downlinkEncoder, or leave it out"
            )
    return None


def _script_digests(scripts: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """What the audit log keeps of the scripts: each one's length and SHA-256."""
    return {
        f: {"chars": len(t), "sha256": hashlib.sha256(t.encode()).hexdigest()}
        for f, t in scripts.items()
    }


@router.put(
    "/codecs/{name}",
    response_model=CodecOut,
    summary="Put a codec (its examples must pass)",
    responses={
        201: {"model": CodecOut, "description": "a codec that was not in force before"},
        409: {"description": "put by someone else at the same moment; retry"},
        422: {"description": "invalid, or an example fails; the detail names it"},
    },
)
async def put_codec(
    name: CodecName,
    response: Response,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow("admin"))],
    body: CodecIn,
) -> dict[str, Any]:
    """Store the codec, adding one or replacing the one in force (a file's too: the API's
    version stands over it). It is loaded into the sandbox and every example runs first;
    anything wrong refuses it with 422 and changes nothing. This API decodes with it at
    once, the ingest within ``CITYIOT_REGISTRY_REFRESH_S``. 200 when it replaced a codec,
    201 when it is new. Audited, refused ones too (``codec.put``, ``codec.put_refused``)."""
    book = _book(ctx)
    spec, scripts = body.spec, body.scripts
    if name == BUILT_IN:
        raise await _refused(
            ctx, principal, name, 422, f"{JSON_NOTE}; name the codec after the vendor's format"
        )
    said = spec.get("codec")
    if said != name:
        raise await _refused(
            ctx,
            principal,
            name,
            422,
            f"spec.codec {str(said)[:64]!r} differs from the path's {name!r}; make them equal"
            if said is not None
            else f"spec.codec is missing; write codec: {name} (the path's name)",
        )
    fault = _scripts_fault(spec, scripts)
    if fault is not None:
        raise await _refused(ctx, principal, name, 422, fault)
    try:
        encoded = orjson.dumps({"spec": spec, "scripts": scripts})
    except TypeError:
        raise await _refused(
            ctx, principal, name, 422, "body: a number in the codec is too large; use smaller ones"
        ) from None
    if b"\\u0000" in encoded:
        raise await _refused(
            ctx,
            principal,
            name,
            422,
            "body: a codec holds no NUL characters (\\u0000); remove them",
        )
    try:
        book.build(parse_codec(spec, scripts, "api"))
    except CodecFileError as exc:
        raise await _refused(ctx, principal, name, 422, str(exc)) from None
    created = name not in book.codecs
    replaced = None if created else book.source(name)
    changes = audited(
        ctx.sessions,
        principal,
        "codec.put",
        f"codecs/{name}",
        spec=spec,
        scripts=_script_digests(scripts),
        replaced=replaced,
    )
    try:
        await save_codec(changes, name, spec, scripts, principal.actor[:128])
    except IntegrityError:  # another PUT added the same new codec in the same instant
        raise await _refused(
            ctx,
            principal,
            name,
            409,
            f"codec {name} was put by someone else at the same moment; retry",
        ) from None
    await book.refresh_from(ctx.sessions)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return _out(book, name, (await _put_by(ctx)).get(name))


# -- decode -----------------------------------------------------------------------------


def _payload(body: DecodeIn, codec: Any) -> bytes:
    """The payload the body gives: bytes_hex as bytes, or json as its JSON text."""
    given_json = "json_" in body.model_fields_set
    if (body.bytes_hex is None) == (not given_json):
        raise Problem(
            422,
            "give the payload as bytes_hex (the frame as hex digits) or as json (the vendor's "
            "JSON, for a codec without a decoder script), one of the two",
        )
    if body.bytes_hex is not None:
        try:
            return bytes.fromhex(body.bytes_hex)
        except ValueError:
            raise Problem(
                422,
                "bytes_hex is not hex; write two hex digits a byte, spaces between bytes "
                "allowed, e.g. 01 F4 5C",
            ) from None
    if isinstance(codec, FileCodec) and codec.decoder is not None:
        raise Problem(
            422,
            f"codec {codec.name} decodes frames with its script; send the frame as bytes_hex",
        )
    return orjson.dumps(body.json_)


def _validator(ctx: ApiContext) -> Validator:
    """The ingest's validator with this API's settings (kept: it compiles every kind)."""
    validator = ctx.extra.get("codec_validator")
    if validator is None:
        settings = ctx.settings
        validator = Validator(settings.retention_s, settings.future_tolerance_s)
        ctx.extra["codec_validator"] = validator
    return validator


def _stored(ts_ms: int, assumed: bool, seq: int | None, metrics: dict[str, Any]) -> dict[str, Any]:
    when = dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)
    return {
        "ts": ts_ms,
        "time": city_time(when),
        "ts_assumed": assumed,
        "seq": seq,
        "metrics": metrics,
    }


def _device_note(device: Device, vendor_codec: str | None, name: str) -> str | None:
    notes = []
    if device.decommissioned_at is not None:
        notes.append(
            f"device {device.id} is decommissioned: the ingest refuses its data until it is "
            'put back in service (PATCH /api/v1/devices/{id} {"decommissioned": false})'
        )
    if vendor_codec is not None and vendor_codec != name:
        notes.append(
            f"vendor {device.vendor_id} is set to codec {vendor_codec}, not {name}: the ingest "
            f"decodes its frames with {vendor_codec} (PATCH /api/v1/vendors/{device.vendor_id})"
        )
    return "; ".join(notes) or None


@router.post(
    "/codecs/{name}/decode",
    response_model=DecodeOut,
    summary="What a payload would store (nothing is stored)",
    responses={
        403: {"description": "a vendor key and another vendor's codec"},
        404: {"description": "no such codec, or no such device among the key's"},
        422: {"description": "the payload cannot be decoded: the dead letter's reason"},
    },
)
async def decode(
    name: CodecName,
    body: DecodeIn,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow(*DECODERS))],
) -> dict[str, Any]:
    """Decode a frame (``bytes_hex``, with ``fPort``) or a JSON message (``json``) with the
    codec and map it; with ``device_id``, with that device's kind and attributes, and
    validate every reading as the ingest does (``rejected``: each reading that would be a
    dead letter, with its reason). A payload the ingest could not decode at all is a 422
    whose detail is the dead letter's reason (and ``output``, the decoder's, when only the
    mapping failed). Nothing is stored. A vendor key decodes with its vendor's codec and
    for its own devices only."""
    book = _book(ctx)
    codec = book.codecs.get(name)
    if codec is None:
        raise _unknown(name, book)
    if principal.vendor is not None:
        own = await _own_codec(ctx, principal)
        if own != name:
            raise Problem(
                403,
                f"this key's vendor {principal.vendor!r} is set to codec {own!r}; a vendor key "
                f"decodes with that codec only (an administrator changes it: PATCH "
                f"/api/v1/vendors/{principal.vendor})",
            )
    device = None
    if body.device_id is not None:
        device = await visible_device(ctx, principal, body.device_id)
        if device.kind not in MODEL.kinds:
            raise Problem(
                422,
                f"device {device.id} is of kind {device.kind!r}, which this API does not know "
                "(yet); check GET /api/v1/kinds",
            )
    payload = _payload(body, codec)
    received_ms = int(time.time() * 1000)
    try:
        trial = try_payload(
            codec,
            payload,
            fport=body.fPort,
            received_ms=received_ms,
            validator=_validator(ctx),
            device_id=device.id if device is not None else None,
            kind=MODEL.kinds.get(device.kind) if device is not None else None,
            attributes=dict(device.attributes or {}) if device is not None else None,
        )
    except Undecodable as exc:
        extra: dict[str, Any] = {"output": exc.output} if exc.output is not None else {}
        raise Problem(422, str(exc), **extra) from None
    except Exception as exc:  # a decoder bug: the ingest makes the same dead letter of it
        log.exception("event=decode_crashed codec=%s", name)
        raise Problem(422, f"the platform could not decode this message ({exc!r:.200})") from None
    readings = [
        _stored(r.ts_ms, r.ts_assumed, trial.raws[i].seq, r.metrics) for i, r in trial.stored
    ]
    rejected = [{"index": i, "reason": reason} for i, reason in trial.rejected]
    outputs = trial.output
    note: str | None
    if device is None:
        note = (
            "no device_id: mapped with no registry attributes, and the metrics are not "
            "validated against a kind; give device_id to see what would be stored"
        )
    else:
        async with ctx.sessions() as session:
            vendor_codec = await session.scalar(
                select(Vendor.codec).where(Vendor.id == device.vendor_id)
            )
        note = _device_note(device, vendor_codec, name)
    return {
        "codec": name,
        "device_id": device.id if device is not None else None,
        "kind": device.kind if device is not None else None,
        "output": outputs,
        "readings": readings,
        "rejected": rejected,
        "note": note,
    }
