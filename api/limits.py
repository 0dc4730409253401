"""The API's edge: what a request may cost before the platform knows who sent it.

:class:`BodyLimits` is a pure ASGI middleware in front of every route. For a request that
carries a body it

- answers 413 at once when ``Content-Length`` exceeds the cap of its path
  (``api_max_import_bytes`` for ``POST /api/v1/devices/import``, ``max_payload_bytes`` for
  the HTTP link ``POST /api/v1/telemetry/…``, ``api_max_body_bytes`` for every other path),
  and cuts a body sent without a length (chunked) at that cap;
- on paths that need a key (under ``/api/v1`` but not in :data:`PUBLIC_PATHS` or
  :data:`PUBLIC_PREFIXES`), checks the key (:func:`cityiot.api.access.authenticate`) or the
  person's session cookie first and answers 401 or 429 without reading a byte of the body.

Refusals close the connection, so the unread body is never read, with one exception: a body
cut at its cap (sent without a length, by a caller whose key was checked) is read on and
dropped, up to :data:`LINGER_BYTES` more for at most :data:`LINGER_S`, before the 413 is
sent. Closing a connection whose peer is still sending makes the kernel reset it, and a
client often loses the answer to the reset: it would see a broken connection, not the 413
that says what to change. The server reads at most
a small buffer ahead of the app (uvicorn pauses reading until the app asks for more), so
an unread body costs no memory. What the edge refuses is counted in :class:`EdgeCounters`
(``cityiot_api_edge_*`` at ``/metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cityiot.api.access import authenticate, session_known
from cityiot.api.context import ApiContext
from cityiot.api.people import COOKIE
from cityiot.api.problems import PROBLEM_JSON, TITLES, Problem
from cityiot.domain.settings import Settings

API_PREFIX = "/api/v1"
IMPORT_PATH = f"{API_PREFIX}/devices/import"  # the CSV import: its own, larger cap
# The HTTP link: a device's message, capped as one over MQTT is (CITYIOT_MAX_PAYLOAD_BYTES).
TELEMETRY_PREFIX = f"{API_PREFIX}/telemetry/"
# The network platforms' pushes (CTWing, OneNET): device messages too, capped alike.
INTAKE_PREFIX = f"{API_PREFIX}/intake/"
# Paths under the prefix that take a body without an API key (they check their own token
# or password); everything else under the prefix needs a key before its body is read.
PUBLIC_PATHS: frozenset[str] = frozenset({f"{API_PREFIX}/session"})
PUBLIC_PREFIXES: tuple[str, ...] = (INTAKE_PREFIX,)

# After a body passes its cap, at most this much more of it is read and dropped, for at most
# this long, so that the client has sent it all and reads the 413 (see the module).
LINGER_BYTES = 1024 * 1024
LINGER_S = 2.0
CLOSE = {"Connection": "close"}  # the rest of a refused body is never read


@dataclass
class EdgeCounters:
    """What the edge refused, since the process started."""

    body_too_large: int = 0  # 413: over the path's cap
    body_refused_unauthenticated: int = 0  # 401/429 before the body was read
    connections_refused: int = 0  # all connections busy with requests: closed at once
    connections_evicted: int = 0  # idle or still sending headers, closed for a new one
    connections_timed_out: int = 0  # headers (or the body) not sent in time


def needs_key(path: str) -> bool:
    """Whether a request to ``path`` must show an API key before its body is read."""
    if not (path == API_PREFIX or path.startswith(f"{API_PREFIX}/")):
        return False
    return path not in PUBLIC_PATHS and not path.startswith(PUBLIC_PREFIXES)


def body_cap(settings: Settings, method: str, path: str) -> int:
    """The largest body a request to ``path`` may send."""
    if method == "POST" and path == IMPORT_PATH:
        return settings.api_max_import_bytes
    if is_telemetry(method, path):
        return settings.max_payload_bytes
    return settings.api_max_body_bytes


def is_telemetry(method: str, path: str) -> bool:
    """Whether the request is a device's message: on the HTTP link, or pushed by a network
    platform."""
    return method == "POST" and path.startswith((TELEMETRY_PREFIX, INTAKE_PREFIX))


def too_large(cap: int, method: str = "", path: str = "") -> str:
    if cap >= 2**20:
        size = f"{cap / 2**20:g} MiB"
    else:
        size = f"{cap / 2**10:g} KiB" if cap >= 2**10 else f"{cap} bytes"
    if is_telemetry(method, path):
        return (
            f"the message is over {size}, the most one message may hold "
            "(CITYIOT_MAX_PAYLOAD_BYTES); split its readings into several messages"
        )
    return f"the request body is over {size}, the most this endpoint reads; send less"


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def bearer_token(scope: Scope) -> str | None:
    """The key of ``Authorization: Bearer <key>``, or None."""
    value = _header(scope, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.decode("latin-1").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def session_token(scope: Scope) -> str | None:
    """The session token of a person's cookie (:data:`cityiot.api.people.COOKIE`), or None."""
    value = _header(scope, b"cookie")
    if value is None:
        return None
    return cookie_parser(value.decode("latin-1")).get(COOKIE) or None


async def _caller_known(ctx: ApiContext, scope: Scope) -> None:
    """A Problem unless the request shows a usable key or, without one, a live session."""
    key, token, client = bearer_token(scope), session_token(scope), client_address(scope)
    if key is None and token is not None:
        await session_known(ctx, token, client)
    else:
        await authenticate(ctx, key, client)


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class BodyLimits:
    """Caps request bodies and checks the key before reading one (see the module)."""

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        counters: EdgeCounters,
        context: Callable[[], ApiContext],
    ) -> None:
        self.app = app
        self.settings = settings
        self.counters = counters
        self.context = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length_header = _header(scope, b"content-length")
        chunked = _header(scope, b"transfer-encoding") is not None
        length = int(length_header) if length_header and length_header.isdigit() else 0
        if not chunked and length == 0:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        cap = body_cap(self.settings, scope["method"], path)
        if length > cap:
            self.counters.body_too_large += 1
            await _problem(scope, send, 413, too_large(cap, scope["method"], path))
            return
        if needs_key(path):
            try:
                await _caller_known(self.context(), scope)
            except Problem as refused:
                self.counters.body_refused_unauthenticated += 1
                await _problem(scope, send, refused.status, refused.detail, refused.headers)
                return
        cut = _BodyCap(scope, receive, send, cap, self.counters)
        try:
            await self.app(scope, cut.receive, cut.send)
        except Exception:
            if not cut.answered:  # after our 413, what the app makes of the cut is moot
                raise


class _BodyCut(Exception):
    """The body passed its cap; the 413 is already sent."""


class _BodyCap:
    """``receive`` and ``send`` of one request whose body (sent without a length, or longer
    than it said) is stopped at ``cap``: 413 at once, then the app's reading fails and
    whatever it would answer is dropped."""

    def __init__(
        self, scope: Scope, receive: Receive, send: Send, cap: int, counters: EdgeCounters
    ) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.cap = cap
        self.counters = counters
        self.read = 0
        self.started = False
        self.answered = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.read += len(message.get("body", b""))
            if self.read > self.cap:
                self.counters.body_too_large += 1
                if not self.started:
                    self.answered = True
                    if message.get("more_body"):
                        await _drop_rest(self._receive)
                    detail = too_large(self.cap, self.scope["method"], self.scope["path"])
                    await _problem(self.scope, self._send, 413, detail)
                raise _BodyCut(too_large(self.cap))
        return message

    async def send(self, message: Message) -> None:
        if self.answered:
            return
        self.started = True
        await self._send(message)


async def _drop_rest(receive: Receive) -> None:
    """Read and drop what is left of a refused body, up to :data:`LINGER_BYTES` within
    :data:`LINGER_S`; a body longer or slower than that is left unread (the connection is
    reset on close, as before)."""
    dropped = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(LINGER_S):
            while dropped <= LINGER_BYTES:
                message = await receive()
                if message["type"] != "http.request":
                    return
                dropped += len(message.get("body", b""))
                if not message.get("more_body"):
                    return


async def _problem(
    scope: Scope, send: Send, status: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    """A problem document (as :mod:`cityiot.api.problems` writes them), closing the connection."""
    body = orjson.dumps(
        {
            "type": "about:blank",
            "title": TITLES.get(status, "Error"),
            "status": status,
            "detail": detail,
            "instance": scope["path"],
        }
    )
    raw_headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in {**(headers or {}), **CLOSE}.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
