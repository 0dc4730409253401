"""People's sign-in: ``/session`` — sign in with a password, who am I, sign out, and a
person's own password change (DESIGN §10). Machines use API keys instead."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from cityiot.api.access import FORGET_COOKIE, allow, charge_stranger, from_session
from cityiot.api.context import ApiContext, context
from cityiot.api.keys import Principal
from cityiot.api.people import (
    COOKIE,
    IDLE,
    MAX_PASSWORD,
    AccountError,
    SignInRefused,
    csrf_token,
)
from cityiot.api.problems import Problem

router = APIRouter(tags=["session"])


class SignIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"username": "zhang.wei", "password": "…"}]},
    )

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD)


class SessionOut(BaseModel):
    csrf_token: str = Field(description="send it in X-CSRF-Token with every request that changes")
    role: str
    username: str
    display_name: str
    grant: dict[str, Any] = Field(description="kinds, districts, vendor (and teams) granted")
    idle_timeout_s: int = Field(description="the session ends after this long without use")


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(min_length=1, max_length=MAX_PASSWORD)
    new_password: str = Field(min_length=1, max_length=MAX_PASSWORD)


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _session_out(token: str, principal: Principal) -> dict[str, Any]:
    return {
        "csrf_token": csrf_token(token),
        "role": principal.role,
        "username": principal.user,
        "display_name": principal.name,
        "grant": principal.grant(),
        "idle_timeout_s": int(IDLE.total_seconds()),
    }


def _cookie(request: Request, token: str) -> str:
    # No Max-Age: the browser forgets it when it closes; the server ends it when idle.
    secure = "; Secure" if request.url.scheme == "https" else ""
    return f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}"


@router.post(
    "/session",
    response_model=SessionOut,
    summary="Sign in with a username and password (people; machines use API keys)",
    responses={
        401: {"description": "wrong username or password"},
        423: {"description": "the account is locked after repeated failures (Retry-After)"},
    },
)
async def sign_in(
    body: SignIn, request: Request, response: Response, ctx: Annotated[ApiContext, Depends(context)]
) -> dict[str, Any]:
    """Opens a session: the answer sets it in an HttpOnly cookie and carries the CSRF token
    the page sends in ``X-CSRF-Token`` with every request that changes something. Five
    failed sign-ins within 15 minutes lock the account for 15 minutes; every sign-in,
    failure and lock is audit-logged with the caller's address."""
    address = _address(request)
    charge_stranger(ctx, address, time.monotonic(), "a valid session", "to sign in")
    try:
        signed = await ctx.people.sign_in(
            body.username, body.password, address, request.headers.get("user-agent", "")
        )
    except SignInRefused as exc:
        headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else None
        raise Problem(exc.status, exc.detail, headers=headers) from None
    response.headers["Set-Cookie"] = _cookie(request, signed.token)
    response.headers["Cache-Control"] = "no-store"
    return _session_out(signed.token, signed.principal)


@router.get(
    "/session",
    response_model=SessionOut,
    summary="The signed-in person and CSRF token (204: no session cookie)",
    responses={
        204: {"description": "no session cookie was sent: no one is signed in here"},
        401: {"description": "the session has ended (signed out, idle, account changed)"},
    },
)
async def who(
    request: Request, response: Response, ctx: Annotated[ApiContext, Depends(context)]
) -> Any:
    """The person of the session cookie, and the session's CSRF token again (the console
    asks at every load: it keeps no secret in the browser's storage). Without a session
    cookie: 204, so that a page can ask without an error (API keys have no session)."""
    token = request.cookies.get(COOKIE)
    if not token:
        return Response(status_code=204, headers={"Cache-Control": "no-store"})
    principal = await from_session(ctx, request, token, _address(request))
    response.headers["Cache-Control"] = "no-store"
    return _session_out(token, principal)


@router.delete(
    "/session", status_code=status.HTTP_204_NO_CONTENT, summary="Sign out (ends the session)"
)
async def sign_out(
    request: Request,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow())],
) -> Response:
    """Ends the session at once in every API process; the cookie no longer opens anything."""
    token = request.cookies.get(COOKIE)
    if principal.user is None or not token:
        raise Problem(404, "this is an API key, not a person's session; revoke keys instead")
    await ctx.people.sign_out(token, _address(request))
    return Response(status_code=204, headers={"Set-Cookie": FORGET_COOKIE})


@router.post(
    "/session/password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Change one's own password (ends the account's sessions)",
    responses={401: {"description": "the current password is wrong"}},
)
async def change_password(
    body: PasswordChange,
    ctx: Annotated[ApiContext, Depends(context)],
    principal: Annotated[Principal, Depends(allow())],
) -> Response:
    """The signed-in person's own password; every session of the account ends with it."""
    if principal.user is None:
        raise Problem(404, "API keys have no password; this is for people's accounts")
    try:
        await ctx.people.change_password(principal, body.current_password, body.new_password)
    except AccountError as exc:
        raise Problem(422, str(exc)) from None
    except SignInRefused as exc:
        raise Problem(exc.status, exc.detail) from None
    return Response(status_code=204, headers={"Set-Cookie": FORGET_COOKIE})
