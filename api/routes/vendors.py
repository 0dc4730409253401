"""Vendor onboarding: ``/vendors`` — register vendors and issue their MQTT accounts.

A vendor's ``codec`` (how its payloads are decoded) is any codec in force in this API:
``json``, the shipped ones, ``CITYIOT_CODECS_PATH``'s and those put through
``PUT /codecs/{name}``; ``PATCH /vendors/{id}`` changes it.

An account's password is shown once, in the answer that issues it; the database keeps
only Mosquitto's hash. Issuing and revoking rewrite the broker's password and ACL files
and reload it (:mod:`cityiot.storage.broker_access`), so a revoked account is refused at once.
Administrators change; operators read; a vendor key reads its own vendor's record only.

A vendor's intake token (``POST /vendors/{id}/intake-token``) is what its CTWing and OneNET
push subscriptions present; it too is shown once and kept hashed
(:mod:`cityiot.storage.intake_tokens`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cityiot.api.access import allow
from cityiot.api.audit import audit
from cityiot.api.context import ApiContext, context
from cityiot.api.keys import Principal
from cityiot.api.paging import Cursor, Limit, Page, after, page_of
from cityiot.api.problems import PROBLEM_JSON, Problem
from cityiot.domain.catalogue import reserved_vendor
from cityiot.ingest.codecs.files import BUILT_IN
from cityiot.rules.events import city_time
from cityiot.storage.broker_access import (
    BrokerAccess,
    BrokerAccessError,
    UnknownVendor,
    vendor_topics,
)
from cityiot.storage.intake_tokens import UnknownVendor as NoVendorForToken
from cityiot.storage.intake_tokens import issue_intake_token
from cityiot.storage.tables.registry import MqttCredential, Vendor

router = APIRouter(tags=["vendors"])

READERS = ("admin", "operator", "vendor")

VendorId = Annotated[str, Path(max_length=64, description="the vendor's id", examples=["acme"])]
Username = Annotated[
    str, Path(max_length=128, description="the MQTT username", examples=["acme-2"])
]

_PROBLEM = {
    "content": {
        PROBLEM_JSON: {
            "schema": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                    "instance": {"type": "string"},
                },
            }
        }
    }
}
_403 = {**_PROBLEM, "description": "the key's role may not do this, or the vendor is not its own"}
_404 = {**_PROBLEM, "description": "no such vendor (or account)"}
_503 = {
    **_PROBLEM,
    "description": "this API does not manage the broker's accounts "
    "(CITYIOT_BROKER_PASSWORD_FILE / CITYIOT_BROKER_ACL_FILE unset), or cannot write them",
}


_EXAMPLE_TOPICS: Any = vendor_topics("acme")


class Topics(BaseModel):
    publish: list[str] = Field(description="topics the vendor's accounts may publish to")
    subscribe: list[str] = Field(description="topics they may read")


class VendorOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "acme",
                    "name": "Acme Sensors",
                    "codec": "json",
                    "created_at": "2026-11-01T09:00:00+08:00",
                    "topics": _EXAMPLE_TOPICS,
                }
            ]
        }
    )

    id: str
    name: str
    codec: str = Field(description="how its payloads are decoded: json (the standard) or a codec")
    created_at: str = Field(description="RFC 3339, +08:00")
    topics: Topics


class VendorIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"id": "acme", "name": "Acme Sensors", "codec": "json"}]},
    )

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="topic segment city/{id}/…")
    name: str = Field(min_length=1, max_length=200)
    codec: str = Field(
        "json", max_length=64, description="json, or a codec in force (GET /api/v1/codecs)"
    )

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        problem = reserved_vendor(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        return printable_name(value)


class VendorPatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"codec": "acme-level"}, {"name": "Acme Sensors Ltd"}]},
    )

    name: str | None = Field(None, min_length=1, max_length=200)
    codec: str | None = Field(
        None, max_length=64, description="a codec in force (GET /api/v1/codecs)"
    )

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        return printable_name(value)


def printable_name(value: str | None) -> str | None:
    """A vendor's name, trimmed; ValueError unless it is 1 to 200 printable characters."""
    if value is None:
        return None
    value = value.strip()
    if not value or not value.isprintable():
        raise ValueError("use 1 to 200 printable characters (no tabs or line breaks)")
    return value


class CredentialOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "username": "acme",
                    "vendor": "acme",
                    "active": True,
                    "created_at": "2026-11-01T09:05:00+08:00",
                    "created_by": "key:3f2a9c1b07de (onboarding desk)",
                    "revoked_at": None,
                }
            ]
        }
    )

    username: str
    vendor: str
    active: bool = Field(description="false once revoked: the broker refuses it")
    created_at: str
    created_by: str
    revoked_at: str | None


class RevokedOut(CredentialOut):
    broker_reloaded: bool = Field(
        description="the broker was told to reload (SIGHUP) and drops the account at once; "
        "false: it keeps accepting it until it is reloaded (CITYIOT_BROKER_PID_FILE unset?)"
    )


class IssuedOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "username": "acme-2",
                    "password": "q0V3m1c6oT5p9uUqX4Jb0wD2nS8kLr7a",
                    "vendor": "acme",
                    "mqtt_url": "mqtt://broker.city.example:1883",
                    "topics": _EXAMPLE_TOPICS,
                    "created_at": "2026-11-01T09:05:00+08:00",
                    "broker_reloaded": True,
                }
            ]
        }
    )

    username: str
    password: str = Field(description="shown this once; only Mosquitto's hash of it is kept")
    vendor: str
    mqtt_url: str = Field(description="the broker to connect to (empty when not configured)")
    topics: Topics
    created_at: str
    broker_reloaded: bool = Field(
        description="the broker was told to reload and accepts the account now; false: "
        "only after its next reload (CITYIOT_BROKER_PID_FILE unset?)"
    )


INTAKE_NOTE = (
    "shown once; only its hash is kept. Point the vendor's CTWing push at "
    "/api/v1/intake/ctwing/{vendor}?token=TOKEN and its OneNET push at "
    "/api/v1/intake/onenet/{vendor} with TOKEN as the token; issuing again replaces it"
)


class IntakeTokenOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "vendor": "acme",
                    "token": "pX8dT2qL9vR4mZ7kW1bN5cJ3hF6gS0aY",
                    "created_at": "2026-11-01T09:10:00+08:00",
                    "replaced": False,
                    "note": INTAKE_NOTE.replace("{vendor}", "acme"),
                }
            ]
        }
    )

    vendor: str
    token: str = Field(description="shown this once; only its SHA-256 is kept")
    created_at: str = Field(description="RFC 3339, +08:00")
    replaced: bool = Field(description="the vendor had a token, which no longer works")
    note: str


def vendor_out(row: Vendor) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "codec": row.codec,
        "created_at": city_time(row.created_at),
        "topics": vendor_topics(row.id),
    }


def credential_out(row: MqttCredential) -> dict[str, Any]:
    return {
        "username": row.username,
        "vendor": row.vendor_id,
        "active": row.revoked_at is None,
        "created_at": city_time(row.created_at),
        "created_by": row.created_by,
        "revoked_at": city_time(row.revoked_at),
    }


def _own_only(principal: Principal, vendor_id: str) -> None:
    if principal.vendor is not None and principal.vendor != vendor_id:
        raise Problem(
            403, f"this key belongs to vendor {principal.vendor!r}; it may not read {vendor_id!r}"
        )


async def _vendor(ctx: ApiContext, vendor_id: str) -> Vendor:
    async with ctx.sessions() as session:
        row = await session.get(Vendor, vendor_id)
    if row is None:
        raise Problem(404, f"no vendor {vendor_id!r} is registered; GET /api/v1/vendors lists them")
    return row


def _check_codec(ctx: ApiContext, codec: str) -> None:
    """422 unless ``codec`` is in force in this API (the files' and the API's codecs)."""
    names = ctx.codecs.names() if ctx.codecs is not None else [BUILT_IN]
    if codec not in names:
        raise Problem(
            422,
            f"unknown codec {codec[:64]!r}; the codecs in force are {', '.join(names)} "
            "(PUT /api/v1/codecs/{name} adds one)",
        )


def _managed(ctx: ApiContext) -> BrokerAccess:
    if ctx.broker is None:
        raise Problem(
            503,
            "this API does not manage the broker's accounts: set CITYIOT_BROKER_PASSWORD_FILE "
            "and CITYIOT_BROKER_ACL_FILE to the files Mosquitto reads (and "
            "CITYIOT_BROKER_PID_FILE to its pid file, so it reloads at once)",
        )
    return ctx.broker


@router.get(
    "/vendors",
    response_model=Page[VendorOut],
    summary="List vendors",
    responses={403: _403},
)
async def list_vendors(
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow(*READERS))],
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Every vendor, by id; a vendor key sees only its own."""
    stmt = select(Vendor)
    if principal.vendor is not None:
        stmt = stmt.where(Vendor.id == principal.vendor)
    stmt = after(stmt, [Vendor.id], cursor).limit(limit + 1)
    async with ctx.sessions() as session:
        rows = list(await session.scalars(stmt))
    return page_of(rows, limit, key=lambda r: [r.id], convert=vendor_out)


@router.post(
    "/vendors",
    response_model=VendorOut,
    status_code=status.HTTP_201_CREATED,
    summary="Register a vendor",
    responses={
        403: _403,
        409: {**_PROBLEM, "description": "a vendor with this id exists"},
        422: {**_PROBLEM, "description": "invalid id, name or codec"},
    },
)
async def create_vendor(
    body: VendorIn,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow("admin"))],
) -> dict[str, Any]:
    """Register a vendor; then issue its MQTT account (``POST /vendors/{id}/credentials``)."""
    _check_codec(ctx, body.codec)
    conflict = Problem(
        409, f"vendor {body.id!r} is already registered; GET /api/v1/vendors/{body.id}"
    )
    row = Vendor(id=body.id, name=body.name, codec=body.codec)
    try:
        async with ctx.sessions() as session, session.begin():
            if await session.get(Vendor, body.id) is not None:
                raise conflict
            session.add(row)
            audit(session, principal, "vendor.create", f"vendors/{body.id}",
                  name=body.name, codec=body.codec)  # fmt: skip
    except IntegrityError:  # registered by a concurrent request
        raise conflict from None
    return vendor_out(row)


@router.get(
    "/vendors/{vendor_id}",
    response_model=VendorOut,
    summary="One vendor",
    responses={403: _403, 404: _404},
)
async def get_vendor(
    vendor_id: VendorId,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow(*READERS))],
) -> dict[str, Any]:
    _own_only(principal, vendor_id)
    return vendor_out(await _vendor(ctx, vendor_id))


@router.patch(
    "/vendors/{vendor_id}",
    response_model=VendorOut,
    summary="Rename a vendor or set its codec",
    responses={
        403: _403,
        404: _404,
        422: {
            **_PROBLEM,
            "description": "invalid name, a codec not in force, or nothing to change",
        },
    },
)
async def patch_vendor(
    vendor_id: VendorId,
    body: VendorPatch,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow("admin"))],
) -> dict[str, Any]:
    """Change the vendor's name, its codec, or both. The ingest decodes the vendor's next
    messages with the new codec within ``CITYIOT_REGISTRY_REFRESH_S``. Audited
    (``vendor.update``, with what changed and the codec before)."""
    changes = body.model_dump(exclude_none=True)
    if not changes:
        raise Problem(422, "nothing to change: give name, codec or both")
    if body.codec is not None:
        _check_codec(ctx, body.codec)
    async with ctx.sessions() as session, session.begin():
        row = await session.get(Vendor, vendor_id, with_for_update=True)
        if row is None:
            raise Problem(
                404, f"no vendor {vendor_id!r} is registered; GET /api/v1/vendors lists them"
            )
        before = {"name": row.name, "codec": row.codec}
        for field, value in changes.items():
            setattr(row, field, value)
        audit(session, principal, "vendor.update", f"vendors/{vendor_id}",
              **changes, before={k: before[k] for k in changes})  # fmt: skip
    return vendor_out(row)


@router.post(
    "/vendors/{vendor_id}/credentials",
    response_model=IssuedOut,
    status_code=status.HTTP_201_CREATED,
    summary="Issue an MQTT account for a vendor (password shown once)",
    responses={403: _403, 404: _404, 503: _503},
)
async def issue_credentials(
    vendor_id: VendorId,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow("admin"))],
) -> dict[str, Any]:
    """A new username and password for the vendor's devices: the username is the vendor id
    for its first account, then ``{vendor}-2``, ``-3`` …; the broker lets it publish only
    under ``city/{vendor}/…`` and read only ``city/{vendor}/+/command``."""
    access = _managed(ctx)
    try:
        issued = await access.issue(vendor_id, actor=principal.actor, role=principal.role)
    except UnknownVendor:
        raise Problem(
            404, f"no vendor {vendor_id!r} is registered; register it first (POST /api/v1/vendors)"
        ) from None
    except BrokerAccessError as exc:
        raise Problem(503, f"no account issued: {exc}") from None
    return {
        "username": issued.username,
        "password": issued.password,
        "vendor": issued.vendor,
        "mqtt_url": access.broker_url,
        "topics": vendor_topics(vendor_id),
        "created_at": city_time(issued.created_at),
        "broker_reloaded": issued.broker_reloaded,
    }


@router.get(
    "/vendors/{vendor_id}/credentials",
    response_model=Page[CredentialOut],
    summary="A vendor's MQTT accounts (no secrets)",
    responses={403: _403, 404: _404},
)
async def list_credentials(
    vendor_id: VendorId,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow("admin", "operator"))],
    state: Annotated[
        Literal["active", "revoked"] | None, Query(description="only active or revoked ones")
    ] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Usernames, who issued them and when, and whether revoked; never a password."""
    await _vendor(ctx, vendor_id)
    stmt = select(MqttCredential).where(MqttCredential.vendor_id == vendor_id)
    if state == "active":
        stmt = stmt.where(MqttCredential.revoked_at.is_(None))
    elif state == "revoked":
        stmt = stmt.where(MqttCredential.revoked_at.is_not(None))
    stmt = after(stmt, [MqttCredential.username], cursor).limit(limit + 1)
    async with ctx.sessions() as session:
        rows = list(await session.scalars(stmt))
    return page_of(rows, limit, key=lambda r: [r.username], convert=credential_out)


@router.delete(
    "/vendors/{vendor_id}/credentials/{username}",
    response_model=RevokedOut,
    summary="Revoke an MQTT account (the broker refuses it at once)",
    responses={403: _403, 404: _404, 503: _503},
)
async def revoke_credentials(
    vendor_id: VendorId,
    username: Username,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow("admin"))],
) -> dict[str, Any]:
    """Revoke the account: the broker reloads, refuses new connections with it and drops
    the ones open. Revoking a revoked account changes nothing."""
    access = _managed(ctx)
    try:
        revoked = await access.revoke(
            vendor_id, username, actor=principal.actor, role=principal.role
        )
    except BrokerAccessError as exc:
        raise Problem(503, f"not revoked: {exc}") from None
    if revoked is None:
        raise Problem(
            404,
            f"vendor {vendor_id!r} has no MQTT account {username!r}; "
            f"GET /api/v1/vendors/{vendor_id}/credentials lists them",
        )
    return {**credential_out(revoked.credential), "broker_reloaded": revoked.broker_reloaded}


@router.post(
    "/vendors/{vendor_id}/intake-token",
    response_model=IntakeTokenOut,
    status_code=status.HTTP_201_CREATED,
    summary="Issue the vendor's intake token for CTWing and OneNET pushes (shown once)",
    responses={403: _403, 404: _404},
)
async def issue_intake(
    vendor_id: VendorId,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow("admin"))],
) -> dict[str, Any]:
    """A new intake token for the vendor, replacing its previous one at once (a vendor has
    one). Audited (``vendor.intake_token.issue``, with ``replaced``; never the token)."""
    try:
        issued = await issue_intake_token(
            ctx.sessions,
            vendor_id,
            secret=ctx.secret,
            actor=principal.actor,
            role=principal.role,
        )
    except NoVendorForToken:
        raise Problem(
            404, f"no vendor {vendor_id!r} is registered; register it first (POST /api/v1/vendors)"
        ) from None
    return {
        "vendor": issued.vendor,
        "token": issued.token,
        "created_at": city_time(issued.created_at),
        "replaced": issued.replaced,
        "note": INTAKE_NOTE.replace("{vendor}", vendor_id),
    }
