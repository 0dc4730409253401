"""People's accounts: ``/users`` — list, create, change (role, grant, password, disabled,
unlock). Administrators only; every change is audit-logged (DESIGN §10)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from cityiot.api.access import allow
from cityiot.api.context import ApiContext, context
from cityiot.api.keys import Principal
from cityiot.api.paging import Cursor, Limit, Page, after, page_of
from cityiot.api.people import (
    MAX_PASSWORD,
    USERNAME,
    AccountError,
    Change,
    create_user,
    get_user,
    locked_until,
    new_password,
    update_user,
)
from cityiot.api.problems import Problem
from cityiot.api.routes.keys import TEAM_PATTERN, Role
from cityiot.api.teams import known_teams, routing
from cityiot.rules.events import city_time
from cityiot.storage.tables.people import User
from cityiot.storage.utc import utcnow

router = APIRouter(tags=["users"])

Username = Annotated[str, Path(pattern=USERNAME.pattern, description="the account's username")]


class UserIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"username": "zhang.wei", "role": "operator", "display_name": "张伟"},
                {"username": "li.na", "role": "field", "teams": ["urban"]},
            ]
        },
    )

    username: str = Field(pattern=USERNAME.pattern)
    role: Role
    display_name: str = Field("", max_length=200)
    kinds: list[str] | None = Field(None, description="department accounts: kinds granted")
    districts: list[str] | None = Field(None, description="department accounts: districts")
    vendor: str | None = Field(None, max_length=64, description="vendor accounts: the vendor id")
    teams: list[Annotated[str, Field(pattern=TEAM_PATTERN)]] | None = Field(
        None, min_length=1, max_length=32, description="field accounts: their teams"
    )
    password: str | None = Field(
        None,
        max_length=MAX_PASSWORD,
        description="at least 12 characters; absent: one is made and answered once",
    )


class UserPatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"disabled": True}, {"unlock": True}]},
    )

    display_name: str | None = Field(None, max_length=200)
    role: Role | None = Field(None, description="with kinds/districts/vendor/teams: a new grant")
    kinds: list[str] | None = None
    districts: list[str] | None = None
    vendor: str | None = Field(None, max_length=64)
    teams: list[Annotated[str, Field(pattern=TEAM_PATTERN)]] | None = Field(
        None, min_length=1, max_length=32
    )
    password: str | None = Field(None, max_length=MAX_PASSWORD)
    disabled: bool | None = Field(None, description="true: the account cannot sign in")
    unlock: bool = Field(False, description="true: lift a lock after failed sign-ins")


class UserOut(BaseModel):
    username: str
    display_name: str
    role: str
    kinds: list[str] | None
    districts: list[str] | None
    vendor: str | None
    teams: list[str] | None
    created_at: str
    created_by: str
    password_changed_at: str
    disabled: bool
    locked_until: str | None = Field(description="while locked after failed sign-ins")


class NewUserOut(UserOut):
    password: str | None = Field(description="the password made for the account (shown once)")


def user_out(row: User) -> dict[str, Any]:
    return {
        "username": row.username,
        "display_name": row.display_name,
        "role": row.role,
        "kinds": row.kinds,
        "districts": row.districts,
        "vendor": row.vendor_id,
        "teams": row.teams,
        "created_at": city_time(row.created_at),
        "created_by": row.created_by,
        "password_changed_at": city_time(row.password_changed_at),
        "disabled": row.disabled_at is not None,
        "locked_until": city_time(locked_until(row, utcnow())),
    }


@router.get("/users", response_model=Page[UserOut], summary="List people's accounts")
async def list_users(
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow("admin"))],
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    stmt = after(select(User), [User.username], cursor).limit(limit + 1)
    async with ctx.sessions() as session:
        rows = list(await session.scalars(stmt))
    return page_of(rows, limit, key=lambda r: [r.username], convert=user_out)


@router.get("/users/{username}", response_model=UserOut, summary="One person's account")
async def one_user(
    username: Username,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow("admin"))],
) -> dict[str, Any]:
    row = await get_user(ctx.sessions, username)
    if row is None:
        raise Problem(404, f"no account {username!r}; GET /api/v1/users lists them")
    return user_out(row)


@router.post(
    "/users",
    response_model=NewUserOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create a person's account",
    responses={
        409: {"description": "the username is taken"},
        422: {"description": "a password under 12 characters, or a grant unfit for the role"},
    },
)
async def new_user(
    body: UserIn,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow("admin"))],
) -> dict[str, Any]:
    """An account with the role and grant of an API key of that role. Without a password,
    one is made and answered this once."""
    made = new_password() if body.password is None else None
    try:
        row = await create_user(
            ctx.sessions,
            body.username,
            body.role,
            body.password or made or "",
            display_name=body.display_name,
            kinds=body.kinds,
            districts=body.districts,
            vendor=body.vendor,
            teams=body.teams,
            known_teams=known_teams(routing(ctx)) if body.role == "field" else (),
            created_by=principal.actor,
            creator_role=principal.role,
        )
    except AccountError as exc:
        raise Problem(409 if "already an account" in str(exc) else 422, str(exc)) from None
    return {**user_out(row), "password": made}


@router.patch(
    "/users/{username}",
    response_model=UserOut,
    summary="Change a person's account",
    responses={404: {"description": "no such account"}},
)
async def change_user(
    username: Username,
    body: UserPatch,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow("admin"))],
) -> dict[str, Any]:
    """Change the display name, role and grant (given together: the grant is replaced),
    password, disabled state, or lift a lock. A new password, grant or disabling ends the
    account's sessions at once. An administrator cannot disable or demote themself."""
    grant_given = any(
        f in body.model_fields_set for f in ("role", "kinds", "districts", "vendor", "teams")
    )
    if principal.user == username and (body.disabled or (grant_given and body.role != "admin")):
        raise Problem(
            409,
            "an administrator cannot disable or demote their own account; another "
            "administrator can",
        )
    role: str | None = body.role
    if grant_given and role is None:
        current = await get_user(ctx.sessions, username)
        role = current.role if current is not None else None
    change = Change(
        display_name=body.display_name,
        role=role,
        kinds=body.kinds,
        districts=body.districts,
        vendor=body.vendor,
        teams=body.teams,
        grant_given=grant_given,
        password=body.password,
        disabled=body.disabled,
        unlock=body.unlock,
    )
    try:
        row = await update_user(
            ctx.sessions,
            username,
            change,
            known_teams=known_teams(routing(ctx)) if role == "field" else (),
            by=principal.actor,
            by_role=principal.role,
        )
    except AccountError as exc:
        raise Problem(422, str(exc)) from None
    if row is None:
        raise Problem(404, f"no account {username!r}; GET /api/v1/users lists them")
    return user_out(row)
