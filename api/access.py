"""Request guards: who is calling, may they, and not too often.

A machine sends its API key (``Authorization: Bearer <key>``); a person signed in with a
password sends the session cookie (:mod:`cityiot.api.people`), and with every request that
changes something, the session's CSRF token in ``X-CSRF-Token``. A key wins when both come.

``allow("admin", "operator")`` is a dependency that returns the caller's
:class:`~cityiot.api.keys.Principal`, or answers 401 (no or unknown key, no or ended
session), 403 (role not allowed, CSRF token missing or wrong) or 429 (rate limit, with
``Retry-After``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import false

from cityiot.api.context import ApiContext, context
from cityiot.api.keys import MAX_KEY_CHARS, Principal
from cityiot.api.paging import S
from cityiot.api.people import COOKIE, CSRF_HEADER, SessionEnded, csrf_matches
from cityiot.api.problems import Problem
from cityiot.rules.events import city_time
from cityiot.storage.utc import utcnow

_bearer = HTTPBearer(auto_error=False, description="an API key: cityiot keys create --role R")


def charge_stranger(ctx: ApiContext, client: str, now: float, without: str, then: str) -> None:
    """Charge one request to ``client``'s anonymous limit; a 429 when it is spent, saying it
    came ``without`` (a valid key, session …) and what to do ``then``."""
    wait = ctx.anonymous.take(client, now)
    if wait:
        raise Problem(
            429,
            f"over {ctx.settings.api_anonymous_rate_per_s:g} requests/s from {client} without "
            f"{without}; retry in {math.ceil(wait)} s {then}",
            headers={"Retry-After": str(math.ceil(wait))},
        )


async def authenticate(ctx: ApiContext, presented: str | None, client: str) -> Principal:
    """The principal of the key ``presented`` by ``client`` (an address), or a Problem: 401
    (no, unknown, revoked or expired key) or 429 (this address sends too many requests without a
    valid key). Each lookup is charged to the address before it is made (the lookup is what
    a stranger costs us) and refunded when the key is real."""
    now = time.monotonic()
    if presented is not None:
        known = ctx.keys.cached(presented, now)
        if known is not None:
            return _unexpired(known)
    charge_stranger(ctx, client, now, "a valid API key", "with a valid key")
    if presented is None:
        raise Problem(
            401,
            "this endpoint needs a signed-in person (POST /api/v1/session, as the console "
            "does) or an API key: send Authorization: Bearer <key> (an administrator creates "
            "keys with cityiot keys create --role R)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if len(presented) > MAX_KEY_CHARS:
        raise Problem(
            401,
            f"the API key is longer than any key the platform issues ({MAX_KEY_CHARS} "
            "characters at most); send the key exactly as cityiot keys create printed it",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    principal = await ctx.keys.identify(presented, now)
    if principal is None:
        raise Problem(
            401,
            "the API key is unknown or revoked; ask an administrator for a new one",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    _unexpired(principal)
    ctx.anonymous.refund(client)  # charged before the lookup; a real key costs nothing
    return principal


def _unexpired(principal: Principal) -> Principal:
    """``principal``, or a 401 saying when its key expired and what to do."""
    if principal.expires_at is not None and principal.expired(utcnow()):
        raise Problem(
            401,
            f"the API key {principal.key_id} expired at {city_time(principal.expires_at)}; "
            "ask an administrator for a new one (cityiot keys create, or POST /api/v1/keys)",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return principal


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_SESSION_CHARS = 100  # session tokens are 43 characters
# Sent with a 401 for an ended session: the browser forgets the cookie.
FORGET_COOKIE = f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict"


async def from_session(ctx: ApiContext, request: Request, token: str, client: str) -> Principal:
    """The person whose session cookie holds ``token``, or a Problem: 401 (ended, idle or
    unknown session), 403 (a state-changing request without the session's CSRF token) or
    429 (too many requests without a valid session from this address)."""
    principal = await session_known(ctx, token, client, touch=True)
    if request.method not in SAFE_METHODS and not csrf_matches(
        token, request.headers.get(CSRF_HEADER)
    ):
        raise Problem(
            403,
            f"this request came with a session cookie but without the session's "
            f"{CSRF_HEADER} header (or with another one): send the csrf_token that "
            "POST /api/v1/session or GET /api/v1/session answered, in that header",
        )
    return principal


async def session_known(ctx: ApiContext, token: str, client: str, touch: bool = False) -> Principal:
    """The person of a live session, or a Problem: 401 (ended, idle or unknown) or 429."""
    charge_stranger(ctx, client, time.monotonic(), "a valid session", "and sign in again")
    if len(token) > MAX_SESSION_CHARS:
        raise Problem(401, "the session cookie is not one the platform set; sign in again")
    try:
        principal = await ctx.people.identify(token, touch=touch)
    except SessionEnded as exc:
        raise Problem(
            401, str(exc), headers={"WWW-Authenticate": "Bearer", "Set-Cookie": FORGET_COOKIE}
        ) from None
    ctx.anonymous.refund(client)
    return principal


async def caller(
    request: Request,
    response: Response,
    ctx: Annotated[ApiContext, Depends(context)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    client = request.client.host if request.client else "unknown"
    token = request.cookies.get(COOKIE)
    if credentials is None and token:
        principal = await from_session(ctx, request, token, client)
    else:
        presented = credentials.credentials if credentials is not None else None
        principal = await authenticate(ctx, presented, client)
    wait = ctx.limiter.take(principal.actor, time.monotonic())
    if wait:
        raise Problem(
            429,
            f"rate limit of {ctx.settings.api_rate_per_s:g} requests/s for this "
            f"{principal.holder} reached; retry in {math.ceil(wait)} s",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    request.state.principal = principal
    if principal.expires_at is not None:
        # The console (or any client) can warn its holder before the key stops working.
        response.headers["X-Key-Expires"] = city_time(principal.expires_at) or ""
    return principal


def allow(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting keys of these roles (every role when none are named)."""

    async def guard(principal: Annotated[Principal, Depends(caller)]) -> Principal:
        if roles and principal.role not in roles:
            raise Problem(
                403,
                f"a {principal.role} {principal.holder} may not do this; it needs a "
                f"{principal.holder} with role {' or '.join(roles)}",
            )
        return principal

    return guard


def check_filter(principal: Principal, what: str, value: str | None, granted: Any) -> None:
    """403 for an explicit filter outside the key's grant (``granted`` None: unrestricted)."""
    if value is not None and granted is not None and value not in granted:
        raise Problem(
            403,
            f"this key is not granted {what} {value!r}; it may read {what}s "
            f"{', '.join(sorted(granted))}",
        )


def check_sees(principal: Principal, kind: str, district: str, vendor: str, missing: str) -> None:
    """404 with ``missing``, the route's answer for an item that does not exist, when one
    item lies outside the key's grant: a key learns nothing of what it may not see."""
    if not principal.sees(kind, district, vendor):
        raise Problem(404, missing)


def scoped(
    stmt: S,
    principal: Principal,
    kind: Any | None,
    district: Any | None,
    vendor: Any | None,
) -> S:
    """``stmt`` narrowed to the key's grant, on the given columns of the queried table."""
    # A restriction on a column the table lacks shows nothing rather than everything.
    for granted, column in (
        (principal.kinds, kind),
        (principal.districts, district),
        ({principal.vendor} if principal.vendor is not None else None, vendor),
    ):
        if granted is None:
            continue
        stmt = stmt.where(column.in_(sorted(granted)) if column is not None else false())
    return stmt
