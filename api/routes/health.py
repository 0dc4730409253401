"""Health, readiness and the platform's own metrics — the endpoints that need no key.

``router`` serves ``/healthz``, ``/readyz`` and ``/metrics`` at the root (what probes and
Prometheus expect); ``prefixed`` serves ``/healthz`` and ``/readyz`` under ``/api/v1`` too.

- ``/healthz``: the process serves requests (liveness); always 200.
- ``/readyz``: the database, InfluxDB and the broker answer (readiness); 200, or 503 naming
  each dependency that failed and why. Each check gets at most ``CHECK_TIMEOUT_S``, and
  the checks run side by side, so the answer comes within that time.
- ``/metrics``: Prometheus metrics of the platform itself (:mod:`cityiot.api.metrics`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from cityiot.api.context import ApiContext, context
from cityiot.api.metrics import PlatformMetrics
from cityiot.api.problems import PROBLEM_JSON, Problem

log = logging.getLogger("cityiot.api")

router = APIRouter(tags=["health"])
prefixed = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = 2.0

CheckStatus = Literal["up", "down", "not configured"]


class Check(BaseModel):
    status: CheckStatus = Field(description="up, down, or not configured (not used here)")
    ms: float = Field(description="how long the check took, in milliseconds")
    detail: str | None = Field(None, description="why it is down")


_CHECKS_EXAMPLE: dict[str, Any] = {
    "database": {"status": "up", "ms": 1.2, "detail": None},
    "influxdb": {"status": "up", "ms": 2.5, "detail": None},
    "broker": {"status": "up", "ms": 0.0, "detail": None},
}


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"]


class Ready(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "ready", "checks": _CHECKS_EXAMPLE}]}
    )

    status: Literal["ready"]
    checks: dict[str, Check] = Field(description="database, influxdb, broker")


class NotReady(BaseModel):
    """An RFC 9457 problem document naming the dependencies that failed."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "about:blank",
                    "title": "Service unavailable",
                    "status": 503,
                    "detail": "not ready: influxdb: no answer within 2 s",
                    "instance": "/readyz",
                    "checks": _CHECKS_EXAMPLE
                    | {
                        "influxdb": {
                            "status": "down",
                            "ms": 2001.0,
                            "detail": "no answer within 2 s",
                        }
                    },
                }
            ]
        }
    )

    type: str
    title: str
    status: int
    detail: str
    instance: str
    checks: dict[str, Check]


async def healthz() -> dict[str, Any]:
    """Liveness: 200 while the process serves requests. Needs no key."""
    return {"status": "ok"}


async def readyz(ctx: Annotated[ApiContext, Depends(context)]) -> dict[str, Any]:
    """Readiness: the database, InfluxDB and the broker all answer. Needs no key.

    503 (a problem document) names each dependency that is down and why; a dependency the
    platform is not configured to use reports ``not configured`` and does not count.
    """
    names = ("database", "influxdb", "broker")
    results = await asyncio.gather(
        _timed(lambda: _database(ctx)), _timed(lambda: _influxdb(ctx)), _timed(lambda: _broker(ctx))
    )
    checks = dict(zip(names, results, strict=True))
    down = {name: check for name, check in checks.items() if check["status"] == "down"}
    if down:
        reasons = "; ".join(f"{name}: {check['detail']}" for name, check in down.items())
        log.warning("event=not_ready %s", " ".join(f"{name}=down" for name in down))
        raise Problem(503, f"not ready: {reasons}", checks=checks)
    return {"status": "ready", "checks": checks}


# A check answers (status, detail); _timed adds the time limit and the duration.
Probe = Callable[[], Awaitable[tuple[CheckStatus, str | None]]]


async def _timed(probe: Probe) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        status, detail = await asyncio.wait_for(probe(), CHECK_TIMEOUT_S)
    except TimeoutError:
        status, detail = "down", f"no answer within {CHECK_TIMEOUT_S:g} s"
    except Exception as exc:  # the class only: messages may carry hosts or user names
        status, detail = "down", f"not reachable ({type(exc).__name__})"
    ms = round((time.perf_counter() - started) * 1000, 1)
    return {"status": status, "ms": ms, "detail": detail}


async def _database(ctx: ApiContext) -> tuple[CheckStatus, str | None]:
    async with ctx.sessions() as session:
        await session.execute(text("SELECT 1"))
    return "up", None


async def _influxdb(ctx: ApiContext) -> tuple[CheckStatus, str | None]:
    if ctx.influx is None:
        return "not configured", None
    if await ctx.influx.ping():
        return "up", None
    return "down", "InfluxDB did not answer /ping (is it running at CITYIOT_INFLUX_URL?)"


async def _broker(ctx: ApiContext) -> tuple[CheckStatus, str | None]:
    if ctx.hub is None:
        return "not configured", None
    connected: Any = getattr(ctx.hub, "connected", False)
    if callable(connected):  # a method rather than a property
        connected = connected()
        if asyncio.iscoroutine(connected):
            connected = await connected
    if connected is True:
        return "up", None
    return "down", "the API's MQTT connection to the broker is down; it keeps reconnecting"


async def metrics(request: Request) -> Response:
    """Prometheus metrics of the platform itself (text format; OpenMetrics when the
    ``Accept`` header asks for it). Needs no key."""
    platform: PlatformMetrics | None = getattr(request.app.state, "metrics", None)
    if platform is None:
        raise Problem(503, "metrics are not installed in this app: call api.metrics.install(app)")
    body, content_type = platform.exposition(request.headers.get("accept", ""))
    return Response(body, media_type=content_type)


def _problem_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema for a problem+json response (its nested models are components)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return schema


_NOT_READY = {
    503: {
        "description": "a dependency is down: each failing check and why",
        "content": {PROBLEM_JSON: {"schema": _problem_schema(NotReady)}},
    }
}

for _router in (router, prefixed):
    _router.add_api_route(
        "/healthz", healthz, methods=["GET"], response_model=Health, summary="Liveness"
    )
    _router.add_api_route(
        "/readyz",
        readyz,
        methods=["GET"],
        response_model=Ready,
        summary="Readiness: database, InfluxDB, broker",
        responses=_NOT_READY,  # type: ignore[arg-type]
    )

router.add_api_route(
    "/metrics",
    metrics,
    methods=["GET"],
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format (OpenMetrics on request)",
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/openmetrics-text": {"schema": {"type": "string"}},
            },
        },
        503: {"description": "metrics not installed in this app"},
    },
)

__all__ = ["prefixed", "router"]
