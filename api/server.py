"""Serving the app with uvicorn inside an event loop we own (``cityiot run``, ``cityiot api``
and the tests): signals stay with the caller, which decides when to stop.

HTTPS when ``CITYIOT_API_TLS_CERT_FILE`` and ``CITYIOT_API_TLS_KEY_FILE`` are set (checked
by the settings); ``X-Forwarded-For`` is believed only from the proxies of
``CITYIOT_API_FORWARDED_ALLOW_IPS``.

The connections are uvicorn's h11 protocol with the edge's limits (:class:`EdgeProtocol`):
at most ``api_max_connections`` open at once, and ``api_header_timeout_s`` to send a
request's headers (and between pieces of its body). The process's open-file limit is
raised to its hard limit at start, and the connection cap kept to half of it, so the
ingest's and the database's files never starve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar

import h11
import orjson
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from cityiot.api.app import create_app
from cityiot.api.limits import EdgeCounters
from cityiot.api.problems import PROBLEM_JSON
from cityiot.domain.settings import Settings

log = logging.getLogger("cityiot.api")


@dataclass
class ConnectionLimits:
    """The limits one server's connections share, and its connections waiting for a request."""

    max_connections: int
    header_timeout_s: float
    counters: EdgeCounters
    # Connections idle or still sending a request's headers, oldest first: evicted first.
    waiting: dict[EdgeProtocol, None] = field(default_factory=dict)
    closing: int = 0  # evicted, not yet gone


def _refusal(limit: int) -> bytes:
    body = orjson.dumps(
        {
            "type": "about:blank",
            "title": "Service unavailable",
            "status": 503,
            "detail": f"the API is answering {limit} connections at once, its limit "
            "(CITYIOT_API_MAX_CONNECTIONS); retry in a moment",
            "instance": "",
        }
    )
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        f"content-type: {PROBLEM_JSON}\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\nretry-after: 1\r\n\r\n"
    )
    return head.encode() + body


class EdgeProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections that send their request too slowly and
    keeping at most ``limits.max_connections`` open.

    Past the cap, a new connection takes the place of the oldest one that is idle or still
    sending headers (a slow or stalled client); when every connection is busy with a
    request, the new one is answered 503 and closed at once.
    """

    limits: ClassVar[ConnectionLimits]  # set on the subclass made by edge_protocol()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False
        self._evicted = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        limits = self.limits
        if len(self.connections) - limits.closing >= limits.max_connections:
            if limits.waiting:
                oldest = next(iter(limits.waiting))
                oldest._evict()
            else:
                limits.counters.connections_refused += 1
                self._refused = True
                transport.write(_refusal(limits.max_connections))
                transport.close()
                return
        super().connection_made(transport)
        self._await_request()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        if self._evicted:
            self.limits.closing -= 1
        self.limits.waiting.pop(self, None)
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.SEND_BODY:
            self._arm()  # the body: each piece has the timeout to come

    def handle_events(self) -> None:
        super().handle_events()
        state = self.conn.their_state
        if state is not h11.IDLE:
            self.limits.waiting.pop(self, None)  # the headers are in: a request is under way
        if state is not h11.IDLE and state is not h11.SEND_BODY:
            self._cancel_deadline()  # the whole request is in

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._await_request()  # the next request's headers have the timeout to come
        super().on_response_complete()

    def _await_request(self) -> None:
        self.limits.waiting[self] = None
        self._arm()

    def _arm(self) -> None:
        self._cancel_deadline()
        self._deadline = self.loop.call_later(self.limits.header_timeout_s, self._timed_out)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.SEND_BODY and self.flow.read_paused:
            self._arm()  # the app is not reading the body yet: not the client's delay
            return
        self.limits.counters.connections_timed_out += 1
        self.limits.waiting.pop(self, None)
        self.transport.close()

    def _evict(self) -> None:
        self.limits.counters.connections_evicted += 1
        self.limits.waiting.pop(self, None)
        self._cancel_deadline()
        self._evicted = True
        self.limits.closing += 1
        self.transport.close()


def edge_protocol(limits: ConnectionLimits) -> type[EdgeProtocol]:
    """An :class:`EdgeProtocol` class bound to one server's ``limits``."""
    return type("EdgeProtocol", (EdgeProtocol,), {"limits": limits})


def open_file_budget(max_connections: int) -> int:
    """Raise the open-file limit to its hard limit; the connections the API may hold: at
    most half of it, the rest kept for the ingest, the database and the logs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    budget = max(1, soft // 2)
    if max_connections > budget:
        log.warning(
            "event=api_connections_capped wanted=%d serving=%d open_file_limit=%d "
            "hint=lower CITYIOT_API_MAX_CONNECTIONS or raise the open-file limit (ulimit -n)",
            max_connections,
            budget,
            soft,
        )
        return budget
    return max_connections


def own_certificate_context(settings: Settings) -> ssl.SSLContext:
    """A client context trusting exactly the API's own certificate
    (``CITYIOT_API_TLS_CERT_FILE``), whatever names it carries: for the platform's own
    requests to its API on loopback (``cityiot run``'s simulated NB-IoT pushes), where the
    address is not a name in the certificate. The certificate is the trust anchor, so only
    the holder of its key is accepted."""
    with open(settings.api_tls_cert_file, encoding="ascii") as f:
        pem = f.read()
    # The first certificate only: the chain after it (intermediate CAs) must not become
    # anchors, or any certificate they issued would pass with the names unchecked.
    end = pem.find(_PEM_END)
    if end < 0:
        raise ValueError(
            f"CITYIOT_API_TLS_CERT_FILE: {settings.api_tls_cert_file} holds no PEM certificate"
        )
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.load_verify_locations(cadata=pem[: end + len(_PEM_END)])
    return context


_PEM_END = "-----END CERTIFICATE-----"


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the caller handles SIGINT/SIGTERM
        yield


class ApiServer:
    """``async with ApiServer(settings) as api:`` — serving at ``api.url`` until the block ends."""

    def __init__(self, settings: Settings, *, port: int | None = None) -> None:
        self.settings = settings
        self.app = create_app(settings)
        counters: EdgeCounters = self.app.state.edge_counters
        self.limits = ConnectionLimits(
            max_connections=open_file_budget(settings.api_max_connections),
            header_timeout_s=settings.api_header_timeout_s,
            counters=counters,
        )
        # X-Forwarded-For / -Proto are believed from the trusted proxies only (none by
        # default): otherwise any caller could pick the address its rate limit and the
        # audit see.
        forwarded = settings.api_forwarded_allow_list
        config = uvicorn.Config(
            self.app,
            host=settings.api_host,
            port=settings.api_port if port is None else port,
            http=edge_protocol(self.limits),
            log_level="warning",
            access_log=False,
            lifespan="on",
            proxy_headers=bool(forwarded),
            forwarded_allow_ips=forwarded,
            ssl_certfile=settings.api_tls_cert_file or None,
            ssl_keyfile=settings.api_tls_key_file or None,
        )
        self.server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """``http://`` or, with ``CITYIOT_API_TLS_CERT_FILE``, ``https://`` host:port."""
        scheme = "https" if self.settings.api_tls else "http"
        return f"{scheme}://{self.settings.api_host}:{self.server.config.port}"

    async def _serve(self) -> None:
        """uvicorn's ``serve``, its SystemExit turned into an exception saying what to change.

        uvicorn exits (``sys.exit``) when it cannot bind or the app's start-up fails, after
        shutting the app down. A SystemExit leaving a task is re-raised by the event loop
        itself and stops it: every later user of the loop (a test worker's other tests)
        would fail with it."""
        try:
            await self.server.serve()
        except SystemExit:
            lifespan = getattr(self.server, "lifespan", None)
            if lifespan is not None and getattr(lifespan, "should_exit", False):
                raise RuntimeError(
                    "the API's start-up failed (the error is logged above)"
                ) from None
            raise OSError(
                f"the API could not listen on {self.settings.api_host}:"
                f"{self.server.config.port}; set CITYIOT_API_PORT to a free port"
            ) from None

    async def __aenter__(self) -> ApiServer:
        self._task = asyncio.create_task(self._serve(), name="api")
        while not self.server.started:
            if self._task.done():
                self._task.result()  # raises what kept it from starting
                raise RuntimeError("the API stopped before it started")
            await asyncio.sleep(0.02)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Open SSE streams would hold the shutdown for seconds: end them first.
        ctx = getattr(self.app.state, "ctx", None)
        if ctx is not None and ctx.hub is not None:
            ctx.hub.drain()
        self.server.should_exit = True
        if self._task is not None:
            await self._task

    async def wait(self) -> None:
        """Until the server stops by itself (it failed)."""
        if self._task is not None:
            await asyncio.shield(self._task)
