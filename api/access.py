"""Request guards: who is calling (``Authorization: Bearer <key>``), may they, and not too often.

``allow("admin", "operator")`` is a dependency that returns the caller's
:class:`~cityiot.api.keys.Principal`, or answers 401 (no or unknown key), 403 (role not allowed)
or 429 (rate limit, with ``Retry-After``).
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
from cityiot.api.problems import Problem
from cityiot.rules.events import city_time
from cityiot.storage.utc import utcnow

_bearer = HTTPBearer(auto_error=False, description="an API key: cityiot keys create --role R")


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
    wait = ctx.anonymous.take(client, now)
    if wait:
        raise Problem(
            429,
            f"over {ctx.settings.api_anonymous_rate_per_s:g} requests/s from {client} without "
            f"a valid API key; retry in {math.ceil(wait)} s with a valid key",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    if presented is None:
        raise Problem(
            401,
            "this endpoint needs an API key: send Authorization: Bearer <key> "
            "(an administrator creates keys with cityiot keys create --role R)",
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


async def caller(
    request: Request,
    response: Response,
    ctx: Annotated[ApiContext, Depends(context)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    client = request.client.host if request.client else "unknown"
    presented = credentials.credentials if credentials is not None else None
    principal = await authenticate(ctx, presented, client)
    wait = ctx.limiter.take(principal.key_id, time.monotonic())
    if wait:
        raise Problem(
            429,
            f"rate limit of {ctx.settings.api_rate_per_s:g} requests/s for this key reached; "
            f"retry in {math.ceil(wait)} s",
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
                f"a {principal.role} key may not do this; it needs a key with role "
                f"{' or '.join(roles)}",
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
