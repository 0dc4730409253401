"""API keys: ``/keys`` — create (shown once), list, revoke. Administrators only."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from cityiot.api.access import allow
from cityiot.api.context import ApiContext, context
from cityiot.api.keys import KeyRequestError, LastAdminKey, Principal, create_key, revoke_key
from cityiot.api.paging import Cursor, Limit, Page, after, page_of
from cityiot.api.problems import Problem
from cityiot.api.teams import known_teams, routing
from cityiot.rules.events import city_time
from cityiot.storage.tables.keys import ApiKey
from cityiot.storage.utc import as_utc, utcnow

router = APIRouter(tags=["keys"])

Role = Literal["admin", "operator", "field", "department", "vendor"]
TEAM_PATTERN = r"^[^\x00-\x1f]{1,128}$"  # as the routing file's names: no control characters


class KeyIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "role": "department",
                    "name": "fire brigade",
                    "kinds": ["hydrant"],
                    "districts": ["yicheng", "kaifaqu"],
                    "expires_at": "2027-03-31T18:00:00+08:00",
                }
            ]
        },
    )

    role: Role
    name: str = Field("", max_length=200)
    kinds: list[str] | None = Field(
        None, description="department keys: kinds granted (all if absent)"
    )
    districts: list[str] | None = Field(None, description="department keys: districts granted")
    vendor: str | None = Field(None, max_length=64, description="vendor keys: the vendor id")
    teams: list[Annotated[str, Field(pattern=TEAM_PATTERN)]] | None = Field(
        None,
        min_length=1,
        max_length=32,
        description="field keys (required): the teams of the routing file it acts for",
    )
    expires_at: dt.datetime | None = Field(
        None,
        description="when the key stops working (RFC 3339 with its offset, in the future); "
        "absent: never",
    )


class KeyOut(BaseModel):
    id: str
    name: str
    role: str
    kinds: list[str] | None
    districts: list[str] | None
    vendor: str | None
    teams: list[str] | None = Field(description="field keys: the teams it acts for")
    created_at: str
    created_by: str
    revoked_at: str | None
    expires_at: str | None = Field(description="when the key stops working; null: never")
    expired: bool = Field(description="whether the key has expired (it is refused, 401)")


class NewKeyOut(KeyOut):
    key: str = Field(description="the key itself: shown this once, only its hash is kept")


def key_out(row: ApiKey) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "kinds": row.kinds,
        "districts": row.districts,
        "vendor": row.vendor_id,
        "teams": row.teams,
        "created_at": city_time(row.created_at),
        "created_by": row.created_by,
        "revoked_at": city_time(row.revoked_at),
        "expires_at": city_time(row.expires_at),
        "expired": row.expires_at is not None and as_utc(row.expires_at) <= utcnow(),
    }


@router.post(
    "/keys",
    response_model=NewKeyOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create an API key",
    responses={422: {"description": "the grant does not fit the role"}},
)
async def new_key(
    body: KeyIn,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow("admin"))],
) -> dict[str, Any]:
    """A new key with a role (and, for department keys, the kinds and districts granted;
    for field keys, the teams it acts for), expiring at ``expires_at`` if given."""
    teams = known_teams(routing(ctx)) if body.role == "field" else ()
    try:
        row, key = await create_key(
            ctx.sessions,
            body.role,
            name=body.name,
            kinds=body.kinds,
            districts=body.districts,
            vendor=body.vendor,
            teams=body.teams,
            known_teams=teams,
            created_by=principal.actor,
            creator_role=principal.role,
            expires_at=body.expires_at,
        )
    except KeyRequestError as exc:
        raise Problem(422, str(exc)) from None
    return {**key_out(row), "key": key}


@router.get("/keys", response_model=Page[KeyOut], summary="List API keys (no secrets)")
async def list_keys(
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow("admin"))],
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    stmt = after(select(ApiKey), [ApiKey.id], cursor).limit(limit + 1)
    async with ctx.sessions() as session:
        rows = list(await session.scalars(stmt))
    return page_of(rows, limit, key=lambda r: [r.id], convert=key_out)


@router.delete(
    "/keys/{key_id}",
    response_model=KeyOut,
    summary="Revoke an API key",
    responses={
        404: {"description": "unknown key"},
        409: {"description": "the last active admin key"},
    },
)
async def revoke(
    key_id: Annotated[str, Path(max_length=16)],
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow("admin"))],
) -> dict[str, Any]:
    """Revoke at once in this process (other API processes within 2 s)."""
    try:
        row = await revoke_key(ctx.sessions, key_id, principal.actor, principal.role)
    except LastAdminKey as exc:
        raise Problem(409, str(exc)) from None
    if row is None:
        raise Problem(404, f"no API key {key_id!r}; GET /api/v1/keys lists them")
    ctx.keys.forget()
    return key_out(row)
