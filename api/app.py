"""The FastAPI app: ``create_app(settings)``; ``cityiot api`` serves it, ``cityiot run`` too.

The lifespan migrates the database, opens InfluxDB and the SQL store, takes in the kinds
put through the API and keeps taking their changes every ``CITYIOT_REGISTRY_REFRESH_S``, and
starts the stream hub (the API's own MQTT connection: alert events in for the SSE stream,
ack events out). One router per resource, in :mod:`cityiot.api.routes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Match

from cityiot.api import console, metrics, problems
from cityiot.api.console import docs
from cityiot.api.context import ApiContext
from cityiot.api.denials import DenialAudit, DenialCounters
from cityiot.api.keys import KeyRing
from cityiot.api.limits import BodyLimits, EdgeCounters
from cityiot.api.metrics import MetricsSource, add_source, counters_source
from cityiot.api.people import SessionBook
from cityiot.api.ratelimit import RateLimiter
from cityiot.api.routes import ROUTERS, health
from cityiot.api.routes.kinds import audit_file_changes
from cityiot.domain.catalogue import MODEL
from cityiot.domain.settings import Settings
from cityiot.domain.version import platform_version
from cityiot.ingest.codecs import CodecBook
from cityiot.storage.engine import make_engine, migrate, sessionmaker
from cityiot.storage.kinds import refresh_kinds

log = logging.getLogger("cityiot.api")

PREFIX = "/api/v1"

DESCRIPTION = """
The unified IoT access platform of Zhumadian's city operations centre.

Every endpoint but `/healthz`, `/readyz` and `/metrics` needs an API key
(`Authorization: Bearer cik_…`, created with `cityiot keys create --role R`: for machines)
or a person's session (`POST /api/v1/session` with a username and password sets an
HttpOnly cookie; requests that change something then carry the answer's `csrf_token` in
`X-CSRF-Token`).
Roles: `admin`, `operator`, `field`, `department` (read-only, limited to the kinds and
districts granted), `vendor` (its own devices). Lists are paginated with `limit` and
`cursor` (`next_cursor` of the previous page). Errors are RFC 9457 problem details.
Times are RFC 3339; series default to the city's time zone (its city file's
`timezone`, Asia/Shanghai for Zhumadian).
"""


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            app.state.ctx = await _context(settings, stack, app.state.edge_counters)
            add_source(app.state.ctx, "api_denials", app.state.denials.metrics)
            log.info("event=api_ready host=%s port=%d", settings.api_host, settings.api_port)
            yield

    app = FastAPI(
        title="cityiot",
        version=platform_version(),
        summary="Unified IoT access platform: registry, readings, alerts, work orders",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from our own origin, under a CSP: api/console/docs
        redoc_url=None,
        redirect_slashes=False,  # Starlette builds those redirects from the Host header
    )
    app.state.edge_counters = edge = EdgeCounters()
    problems.install(app)
    _no_redirects(app)
    app.add_middleware(BodyLimits, settings=settings, counters=edge, context=lambda: app.state.ctx)
    # Outside BodyLimits: the edge's 401s are audited too.
    app.state.denials = denials = DenialCounters()
    app.add_middleware(DenialAudit, sessions=lambda: app.state.ctx.sessions, counters=denials)
    metrics.install(app)  # outside BodyLimits: its refusals are counted as requests too
    if settings.api_trusted_hosts != ["*"]:
        app.add_middleware(
            TrustedHostMiddleware, allowed_hosts=settings.api_trusted_hosts, www_redirect=False
        )
    app.include_router(health.router)  # /healthz, /readyz, /metrics without the prefix too
    for router in ROUTERS:
        app.include_router(router, prefix=PREFIX, responses=problems.COMMON_RESPONSES)
    # The built-in console: / and /console/* (api/console), looking again as often as the
    # stages take registry and kind changes.
    reference = console.ReferenceData(refresh_s=settings.registry_refresh_s)
    app.include_router(console.make_router(reference=reference))
    app.include_router(docs.router)  # /docs and /redoc
    _register_problem_schema(app)
    return app


def _no_redirects(app: FastAPI) -> None:
    """A path that differs from an endpoint's by a trailing slash is answered 404 naming the
    endpoint (never a redirect: it would carry the request's Host header)."""
    fallback = app.exception_handlers[HTTPException]

    async def not_found(request: Request, exc: Exception) -> Any:
        path = request.url.path
        other = path[:-1] if path.endswith("/") and path != "/" else f"{path}/"
        scope = {**request.scope, "path": other}
        if isinstance(exc, HTTPException) and exc.detail == "Not Found":
            for route in app.router.routes:
                if route.matches(scope)[0] is not Match.NONE:
                    return problems.problem_response(
                        request, 404, f"no such endpoint {path}; did you mean {other}?"
                    )
        return await fallback(request, exc)  # type: ignore[misc]  # problems' are async

    app.add_exception_handler(404, not_found)


def _register_problem_schema(app: FastAPI) -> None:
    """Put ProblemDoc into the OpenAPI components; every 4xx/5xx answer is one of those."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["ProblemDoc"] = problems.ProblemDoc.model_json_schema()
            problem = problems.COMMON_RESPONSES[422]["content"]
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    for code, response in operation.get("responses", {}).items():
                        # Every error answer is a problem document (FastAPI's 422 says JSON).
                        if code[0] in "45" and (code == "422" or "content" not in response):
                            response["content"] = problem
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _edge_source(edge: EdgeCounters, ctx: ApiContext) -> MetricsSource:
    """``cityiot_api_edge_*``: what the edge refused, and the anonymous rate limit's."""
    counters = counters_source(edge)

    def read() -> dict[str, Any]:
        return {
            **counters(),
            "anonymous_rate_limited_total": ctx.anonymous.refused,
            "anonymous_buckets": len(ctx.anonymous),
            "cached_keys": len(ctx.keys),
        }

    return read


async def _refresh_kinds_every(period_s: float, sessions: Any, codecs: CodecBook) -> None:
    """Take kind changes (another API process's PUT, a changed file of
    ``CITYIOT_KINDS_PATH``) into this process's model every ``period_s``, and audit-log
    those a file made (only the API does: the ingest and rules refresh too); and codec
    changes (another API process's PUT, a changed file of ``CITYIOT_CODECS_PATH``)."""
    seen = dict(MODEL.kinds)
    while True:
        await asyncio.sleep(period_s)
        try:
            await refresh_kinds(sessions)
            seen = await audit_file_changes(sessions, seen)
        except Exception as exc:  # keep serving with the kinds in force; the next round retries
            log.warning("event=kinds_refresh_failed error=%s", exc)
        await codecs.refresh_from(sessions)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _context(
    settings: Settings, stack: contextlib.AsyncExitStack, edge: EdgeCounters
) -> ApiContext:
    from cityiot.ingest.service import influx_from
    from cityiot.storage.broker_access import BrokerAccess

    await migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    stack.push_async_callback(engine.dispose)
    sessions = sessionmaker(engine)
    await refresh_kinds(sessions)  # kinds put through the API before this process started
    codecs = CodecBook.of(settings).load()
    await codecs.refresh_from(sessions)
    refresher = asyncio.create_task(
        _refresh_kinds_every(settings.registry_refresh_s, sessions, codecs),
        name="api-kinds-refresh",
    )
    stack.push_async_callback(_cancel, refresher)
    influx = None
    if settings.influx_url:
        influx = await stack.enter_async_context(influx_from(settings))
    ctx = ApiContext(
        settings=settings,
        sessions=sessions,
        influx=influx,
        keys=KeyRing(sessions),
        people=SessionBook(sessions),
        limiter=RateLimiter(settings.api_rate_per_s, settings.api_rate_burst),
        anonymous=RateLimiter(settings.api_anonymous_rate_per_s, settings.api_anonymous_rate_burst),
        broker=BrokerAccess.from_settings(settings, sessions),
        codecs=codecs,
    )
    add_source(ctx, "api_edge", _edge_source(edge, ctx))
    if settings.mqtt_url:
        from cityiot.api.stream import StreamHub

        ctx.hub = await stack.enter_async_context(
            StreamHub(settings, sessions, codecs=codecs.codecs)
        )
        metrics.add_source(ctx, "api_stream", ctx.hub.metrics)
        from cityiot.api.relay import RelayLink

        # Apart from the ingest, posted and pushed messages go through the broker; in
        # `cityiot run` the platform sets the ingest of its process instead.
        ctx.telemetry = RelayLink(settings, sessions, codecs, ctx.hub)
    return ctx


def openapi_of(settings: Settings) -> dict[str, Any]:
    return create_app(settings).openapi()
