"""The device registry: ``/devices`` — list, register, read, change, decommission, CSV import.

Decommissioning keeps the device's row and its whole history in InfluxDB; its data is
refused from then on until it is recommissioned (``PATCH {"decommissioned": false}``).
"""

from __future__ import annotations

import codecs
import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, status
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)
from sqlalchemy import select

from cityiot.api.access import allow, check_filter, check_sees, scoped
from cityiot.api.audit import audit
from cityiot.api.context import ApiContext, context
from cityiot.api.keys import Principal
from cityiot.api.paging import Cursor, Limit, Page, after, page_of
from cityiot.api.problems import Problem
from cityiot.domain.catalogue import KINDS
from cityiot.domain.thingmodel import IDENTITY_ATTRIBUTES
from cityiot.rules.events import city_time
from cityiot.storage.device_csv import (
    FIRST_INSTALL_DATE,
    MAX_ADDRESS_CHARS,
    MAX_REPORT_INTERVAL_S,
    RowError,
    parse_device,
    parse_device_csv,
)
from cityiot.storage.registry import IdentityTaken, ImportReport, import_devices
from cityiot.storage.tables.registry import Device, LatestReading, Vendor
from cityiot.storage.utc import utcnow

router = APIRouter(tags=["devices"])

WRITERS = ("admin", "operator")

DeviceId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="device id")]
Status = Literal["online", "offline", "unknown", "decommissioned"]


def _written_date(value: Any) -> Any:
    # Pydantic reads a bare number as Unix seconds; a date must be written as one.
    if value is None or isinstance(value, dt.date | str):
        return value
    raise ValueError("not a date; write YYYY-MM-DD, e.g. 2024-03-01")


# Strict numbers: JSON true/false are not 1/0 here (lon: false once stored 0.0). The ranges
# are the registry's (checked there, with every problem of a device named at once).
Latitude = Annotated[float, Field(strict=True, json_schema_extra={"minimum": -90, "maximum": 90})]
Longitude = Annotated[
    float, Field(strict=True, json_schema_extra={"minimum": -180, "maximum": 180})
]
Interval = Annotated[
    int,
    Field(
        strict=True,
        description="seconds",
        json_schema_extra={"minimum": 1, "maximum": MAX_REPORT_INTERVAL_S},
    ),
]
InstallDate = Annotated[
    dt.date,
    BeforeValidator(_written_date),
    Field(description=f"YYYY-MM-DD, from {FIRST_INSTALL_DATE.isoformat()} to tomorrow"),
]
AttributeValue = StrictFloat | StrictInt | StrictStr

_EXAMPLE: dict[str, Any] = {
    "id": "mh-0001",
    "vendor": "acme",
    "kind": "manhole",
    "district": "yicheng",
    "lat": 32.98,
    "lon": 114.02,
    "address": "驿城区解放路 1 号",
    "install_date": "2025-06-01",
    "report_interval_s": 300,
    "attributes": {"depth_cm": 200},
    "status": "online",
    "last_seen": "2026-11-23T10:00:00+08:00",
    "link": "mqtt",
    "battery_pct": 87.0,
    "decommissioned_at": None,
    "created_at": "2026-11-01T09:00:00+08:00",
    "updated_at": "2026-11-01T09:00:00+08:00",
}


Link = Literal["mqtt", "http", "chirpstack", "ctwing", "onenet"]


class DeviceOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    id: str
    vendor: str
    kind: str
    district: str
    lat: float
    lon: float
    address: str
    install_date: dt.date | None
    report_interval_s: int
    attributes: dict[str, float | int | str]
    status: Status = Field(description="online, offline, unknown (never heard) or decommissioned")
    last_seen: str | None = Field(description="RFC 3339, +08:00")
    link: Link | None = Field(
        description="the link of its latest message: mqtt, http, chirpstack (LoRaWAN), ctwing "
        "or onenet (NB-IoT); null before its first"
    )
    battery_pct: float | None = Field(description="from the latest reading, when it reports one")
    decommissioned_at: str | None
    created_at: str
    updated_at: str


class DeviceIn(BaseModel):
    """A device to register; the same fields and rules as a row of the device CSV."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "device_id": "mh-0001",
                    "vendor": "acme",
                    "kind": "manhole",
                    "district": "yicheng",
                    "lat": 32.98,
                    "lon": 114.02,
                    "address": "驿城区解放路 1 号",
                    "report_interval_s": 300,
                    "attributes": {"depth_cm": 200},
                }
            ]
        },
    )

    device_id: str = Field(max_length=64)
    vendor: str = Field(max_length=64)
    kind: str = Field(max_length=32, description="a kind's id (GET /api/v1/kinds lists them)")
    district: str = Field(
        max_length=32, description="one of the city's district ids (a wrong one is told them)"
    )
    lat: Latitude
    lon: Longitude
    address: str = Field("", max_length=MAX_ADDRESS_CHARS)
    report_interval_s: Interval
    install_date: InstallDate | None = None
    attributes: dict[str, AttributeValue] = Field(
        default_factory=dict,
        description="the kind's own registry attributes by name (GET /api/v1/kinds/{kind}, "
        "attributes); a name the kind lacks is refused, a required one must be given. Any "
        "device may also have its identities on a network, unique among devices: dev_eui "
        "(16 hex digits), imei (15 digits), onenet_dev_id",
    )


class DevicePatch(BaseModel):
    """Fields to change; absent fields stay. ``attributes`` are merged (null removes one)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"address": "驿城区解放路 3 号", "decommissioned": False}]},
    )

    district: str | None = Field(None, max_length=32)
    lat: Latitude | None = None
    lon: Longitude | None = None
    address: str | None = Field(None, max_length=MAX_ADDRESS_CHARS)
    report_interval_s: Interval | None = None
    install_date: InstallDate | None = None
    attributes: dict[str, AttributeValue | None] | None = None
    decommissioned: StrictBool | None = Field(
        None, description="true decommissions, false brings the device back into service"
    )


class RowProblem(BaseModel):
    line: int
    column: str | None
    message: str


class ImportOut(BaseModel):
    """What an import did; rows listed in ``errors`` were not imported, all others were."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "created": 2,
                    "updated": 1,
                    "unchanged": 0,
                    "vendors_created": [],
                    "errors": [
                        {"line": 4, "column": "kind", "message": "'manhol' is not a kind; ..."}
                    ],
                    "warnings": [],
                }
            ]
        }
    )

    created: int
    updated: int
    unchanged: int
    vendors_created: list[str]
    errors: list[RowProblem]
    warnings: list[RowProblem]


def device_out(device: Device, latest: LatestReading | None = None) -> dict[str, Any]:
    battery = None
    if latest is not None:
        entry = (latest.metrics or {}).get("battery_pct")
        battery = entry[0] if entry else None
    return {
        "id": device.id,
        "vendor": device.vendor_id,
        "kind": device.kind,
        "district": device.district,
        "lat": device.lat,
        "lon": device.lon,
        "address": device.address,
        "install_date": device.install_date,
        "report_interval_s": device.report_interval_s,
        "attributes": dict(device.attributes or {}) | identities_of(device),
        "status": "decommissioned" if device.decommissioned_at else device.status,
        "last_seen": city_time(device.last_seen),
        "link": device.link,
        "battery_pct": battery,
        "decommissioned_at": city_time(device.decommissioned_at),
        "created_at": city_time(device.created_at),
        "updated_at": city_time(device.updated_at),
    }


def identities_of(device: Device) -> dict[str, str]:
    """The device's identities on a network it has (dev_eui, imei, onenet_dev_id): shown and
    changed among its attributes, though any kind may have them."""
    found = {name: getattr(device, name) for name in IDENTITY_ATTRIBUTES}
    return {name: value for name, value in found.items() if value is not None}


async def _imported(ctx: ApiContext, principal: Principal, rows: list[Any]) -> ImportReport:
    """Import one device's row: 409 when an identity it gives belongs to another device
    (named only to a key that sees every vendor), 422 for any other problem."""
    try:
        report = await import_devices(ctx.sessions, rows, create_vendors=False)
    except IdentityTaken as exc:
        raise Problem(409, str(exc)) from None
    if report.taken:
        taken = report.taken if principal.vendor is None else report.taken_unnamed
        raise Problem(409, "; ".join(f"{e.column}: {e.message}" for e in taken))
    if report.errors:
        raise _invalid(report.errors)
    return report


def _problems(errors: list[RowError]) -> list[dict[str, Any]]:
    return [{"line": e.line, "column": e.column, "message": e.message} for e in errors]


def _invalid(errors: list[RowError]) -> Problem:
    detail = "; ".join(f"{e.column}: {e.message}" if e.column else e.message for e in errors)
    return Problem(
        422,
        detail,
        errors=[{"where": f"body {e.column or ''}".strip(), "message": e.message} for e in errors],
    )


def missing_device(device_id: str) -> str:
    """The 404 detail for a device that does not exist and for one the key may not see:
    the same words, so that a key cannot tell them apart."""
    return (
        f"no device {device_id[:80]!r} among the devices this key may see; "
        "check the id (GET /api/v1/devices)"
    )


async def visible_device(ctx: ApiContext, principal: Principal, device_id: str) -> Device:
    """The device, or 404 when it does not exist or lies outside the key's grant (alike)."""
    async with ctx.sessions() as session:
        device = await session.get(Device, device_id)
    if device is None:
        raise Problem(404, missing_device(device_id))
    check_sees(principal, device.kind, device.district, device.vendor_id, missing_device(device_id))
    return device


@router.get(
    "/devices",
    response_model=Page[DeviceOut],
    summary="List devices",
    responses={403: {"description": "a filter outside the key's grant"}},
)
async def list_devices(
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow())],
    kind: Annotated[
        str | None, Query(max_length=32, description="a kind's id (GET /api/v1/kinds)")
    ] = None,
    district: Annotated[str | None, Query(max_length=32)] = None,
    vendor: Annotated[str | None, Query(max_length=64)] = None,
    status_: Annotated[
        Status | None,
        Query(alias="status", description="decommissioned devices are listed only with this"),
    ] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Registered devices in id order, with status, last seen and battery."""
    check_filter(principal, "kind", kind, principal.kinds)
    check_filter(principal, "district", district, principal.districts)
    if principal.vendor is not None:
        check_filter(principal, "vendor", vendor, {principal.vendor})
    stmt = page_query(
        principal,
        kind=kind,
        district=district,
        vendor=vendor,
        status=status_,
        limit=limit,
        cursor=cursor,
    )
    async with ctx.sessions() as session:
        rows = (await session.execute(stmt)).all()
    return page_of(rows, limit, key=lambda r: [r[0].id], convert=lambda r: device_out(r[0], r[1]))


def page_query(
    principal: Principal,
    *,
    limit: int,
    cursor: str | None = None,
    kind: str | None = None,
    district: str | None = None,
    vendor: str | None = None,
    status: str | None = None,
) -> Any:
    """The devices of a page (with their latest values) in id order, ``limit + 1`` rows to
    tell whether another page follows; each filter has an index (filter, id) to read in order."""
    stmt = select(Device, LatestReading).outerjoin(
        LatestReading, LatestReading.device_id == Device.id
    )
    stmt = scoped(stmt, principal, Device.kind, Device.district, Device.vendor_id)
    if kind is not None:
        stmt = stmt.where(Device.kind == kind)
    if district is not None:
        stmt = stmt.where(Device.district == district)
    if vendor is not None:
        stmt = stmt.where(Device.vendor_id == vendor)
    if status == "decommissioned":
        stmt = stmt.where(Device.decommissioned_at.is_not(None))
    else:
        stmt = stmt.where(Device.decommissioned_at.is_(None))
        if status is not None:
            stmt = stmt.where(Device.status == status)
    return after(stmt, [Device.id], cursor).limit(limit + 1)


@router.post(
    "/devices",
    response_model=DeviceOut,
    status_code=status.HTTP_201_CREATED,
    summary="Register a device",
    responses={409: {"description": "already registered"}, 422: {"description": "invalid"}},
)
async def create_device(
    body: DeviceIn,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow(*WRITERS))],
) -> dict[str, Any]:
    """Register one device; validated exactly like a row of the device CSV."""
    values = body.model_dump(exclude={"attributes"})
    row, errors = parse_device(values, body.attributes)
    if row is None:
        raise _invalid(errors)
    async with ctx.sessions() as session:
        if await session.get(Device, row.device_id) is not None:
            raise Problem(
                409,
                f"device {row.device_id} is already registered; change it with "
                f"PATCH /api/v1/devices/{row.device_id}",
            )
        if await session.get(Vendor, row.vendor) is None:
            raise Problem(
                422,
                f"vendor {row.vendor!r} is not registered; create it first (POST /api/v1/vendors)",
            )
    await _imported(ctx, principal, [row])
    async with ctx.sessions() as session, session.begin():
        audit(
            session,
            principal,
            "device.create",
            f"devices/{row.device_id}",
            **_loggable(values | body.attributes),
        )
    return device_out(await visible_device(ctx, principal, row.device_id))


@router.post(
    "/devices/import",
    response_model=ImportOut,
    summary="Import devices from CSV",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "device_id,vendor,kind,district,lat,lon,address,report_interval_s,"
                    "depth_cm\nmh-0001,acme,manhole,yicheng,32.98,114.02,解放路 1 号,300,200\n",
                }
            },
        }
    },
    responses={
        403: {"description": "create_vendors by a key that is not an admin's"},
        413: {"description": "file too large"},
        415: {"description": "not text"},
        422: {"description": "not a device CSV: no header line naming its columns"},
    },
)
async def import_csv(
    request: Request,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow(*WRITERS))],
    create_vendors: Annotated[
        bool, Query(description="create vendors the file names that are not registered")
    ] = False,
) -> dict[str, Any]:
    """Register or update many devices (the CSV of docs/design.md §7); a report row by row.

    Valid rows are imported even when others are not; each bad row is listed with its line,
    column and what to change.
    """
    if create_vendors and principal.role != "admin":
        raise Problem(
            403,
            "only an admin key may create vendors (an admin registers them with POST "
            "/api/v1/vendors); import without create_vendors once the vendors exist",
        )
    # Read as it comes, decoded piece by piece: never the bytes and the text at once.
    cap = ctx.settings.api_max_import_bytes
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    parts: list[str] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise Problem(
                    413,
                    f"the CSV is over {cap / 2**20:g} MiB (CITYIOT_API_MAX_IMPORT_BYTES); "
                    "split it into parts",
                    headers={"Connection": "close"},  # the rest is not read
                )
            parts.append(decoder.decode(chunk))
        parts.append(decoder.decode(b"", final=True))
    except UnicodeDecodeError:
        raise Problem(
            415, "the CSV is not UTF-8 text; save it as UTF-8 and send it again"
        ) from None
    text = "".join(parts)
    del parts
    parsed = parse_device_csv(text)
    if not parsed.rows and parsed.errors and all(e.line == 1 for e in parsed.errors):
        raise _invalid(parsed.errors)  # no device CSV at all: nothing to report row by row
    try:
        report = await import_devices(ctx.sessions, parsed.rows, create_vendors)
    except IdentityTaken as exc:
        raise Problem(409, str(exc)) from None
    if principal.vendor is not None:  # a vendor's key never learns other vendors' devices
        hidden = {id(e) for e in report.taken}
        report.errors = [e for e in report.errors if id(e) not in hidden] + report.taken_unnamed
    errors = sorted([*parsed.errors, *report.errors], key=lambda e: e.line)
    async with ctx.sessions() as session, session.begin():
        audit(
            session,
            principal,
            "device.import",
            "devices",
            created=report.created,
            updated=report.updated,
            errors=len(errors),
        )
    return {
        "created": report.created,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "vendors_created": report.vendors_created,
        "errors": _problems(errors),
        "warnings": _problems(report.warnings),
    }


@router.get(
    "/devices/{device_id}",
    response_model=DeviceOut,
    summary="One device",
    responses={404: {"description": "no such device, or one outside the key's grant (alike)"}},
)
async def get_device(
    device_id: DeviceId,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow())],
) -> dict[str, Any]:
    device = await visible_device(ctx, principal, device_id)
    async with ctx.sessions() as session:
        latest = await session.get(LatestReading, device_id)
    return device_out(device, latest)


@router.patch(
    "/devices/{device_id}",
    response_model=DeviceOut,
    summary="Change a device",
    responses={404: {"description": "unknown"}, 422: {"description": "invalid"}},
)
async def patch_device(
    device_id: DeviceId,
    body: DevicePatch,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow(*WRITERS))],
) -> dict[str, Any]:
    """Change registry fields (kind and vendor never change: register a new device instead)."""
    device = await visible_device(ctx, principal, device_id)
    changes = body.model_dump(exclude_unset=True)
    decommission = changes.pop("decommissioned", None)
    attributes: dict[str, Any] = dict(device.attributes or {}) | identities_of(device)
    for name, value in (changes.pop("attributes", None) or {}).items():
        if value is None:
            attributes.pop(name, None)
        else:
            attributes[name] = value
    values: dict[str, Any] = {
        "device_id": device.id,
        "vendor": device.vendor_id,
        "kind": device.kind,
        "district": device.district,
        "lat": device.lat,
        "lon": device.lon,
        "address": device.address,
        "report_interval_s": device.report_interval_s,
        "install_date": device.install_date,
    }
    values.update({k: v for k, v in changes.items() if v is not None or k == "install_date"})
    # Every attribute the kind has (the model in force now): a removed one is sent as empty,
    # so it is cleared; one the kind lacks is an error naming it.
    kind = KINDS.get(device.kind)
    present = dict.fromkeys(a.name for a in kind.attributes) if kind is not None else {}
    present |= dict.fromkeys(IDENTITY_ATTRIBUTES)  # a removed identity is cleared too
    row, errors = parse_device(values, present | attributes)
    if row is None:
        raise _invalid(errors)
    await _imported(ctx, principal, [row])
    async with ctx.sessions() as session, session.begin():
        stored = await session.get(Device, device_id)
        assert stored is not None
        if decommission is True and stored.decommissioned_at is None:
            stored.decommissioned_at = utcnow()
        elif decommission is False and stored.decommissioned_at is not None:
            stored.decommissioned_at = None
            stored.status = "unknown"
        stored.updated_at = utcnow()  # the ingest's registry refresh picks the change up
        audit(
            session,
            principal,
            "device.update",
            f"devices/{device_id}",
            **_loggable(body.model_dump(exclude_unset=True, mode="json")),
        )
    return await get_device(device_id, ctx, principal)


@router.delete(
    "/devices/{device_id}",
    response_model=DeviceOut,
    summary="Decommission a device",
    responses={404: {"description": "unknown"}},
)
async def decommission_device(
    device_id: DeviceId,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow(*WRITERS))],
) -> dict[str, Any]:
    """Take a device out of service. Its registry entry and readings are kept; its new data
    is refused (dead letters) until ``PATCH {"decommissioned": false}``."""
    await visible_device(ctx, principal, device_id)
    async with ctx.sessions() as session, session.begin():
        stored = await session.get(Device, device_id)
        assert stored is not None
        if stored.decommissioned_at is None:
            stored.decommissioned_at = utcnow()
            stored.updated_at = utcnow()
            audit(session, principal, "device.decommission", f"devices/{device_id}")
    return await get_device(device_id, ctx, principal)


def _loggable(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, str | int | float | bool | None) else str(v)
        for k, v in values.items()
    }
