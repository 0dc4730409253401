"""Prometheus metrics of the platform itself, served at ``GET /metrics`` (no key, no prefix).

Each app has its own registry (:class:`PlatformMetrics`, kept in ``app.state.metrics``), so
two apps in one process never share or clash. ``install(app)`` adds the registry and the
request-timing middleware; call it once from :func:`cityiot.api.app.create_app`.

What it measures:

- ``cityiot_http_requests_total{method, route, status}`` and
  ``cityiot_http_request_duration_seconds{method, route}``: every request, labelled by route
  template (``/api/v1/devices/{device_id}``; ``unmatched`` for unknown paths), so the label
  set stays bounded whatever clients send;
- ``cityiot_http_requests_in_flight``;
- ``cityiot_api_rate_limited_total``: requests refused with 429 by the per-key rate limit;
- the counters of in-process stages (``cityiot run``), read at scrape time from *sources*.

A source is a callable returning ``{name: number}`` (or ``{name: {label_value: number}}``),
registered under a stage name with :func:`add_source`; each entry becomes
``cityiot_<stage>_<name>``: a counter when the name ends in ``_total``, else a gauge. A nested
mapping becomes one labelled family, the label named after what follows ``_by_`` in the name
(``stored_by_kind_total`` → ``{kind="manhole"}``), else ``key``. :func:`counters_source`
turns a counters dataclass (``IngestCounters``, ``RulesCounters``) into a source::

    add_source(ctx, "ingest", counters_source(ingest.counters))
    # cityiot_ingest_messages_total, cityiot_ingest_stored_by_kind_total{kind="manhole"},
    # cityiot_ingest_last_write_ms, ...

``cityiot_stage_source_up{stage}`` is 0 while a source fails (its error is logged).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from fastapi import FastAPI

    from cityiot.api.context import ApiContext

log = logging.getLogger("cityiot.api")

NAMESPACE = "cityiot"
SOURCES = "metrics_sources"  # the key of ApiContext.extra holding {stage: source}
UNMATCHED = "unmatched"  # route label of requests no route answered (bounded cardinality)

Number = int | float
MetricsSource = Callable[[], Mapping[str, Number | Mapping[str, Number]]]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def _metric_name(text: str) -> str:
    name = _INVALID.sub("_", text).strip("_") or "value"
    return name if not name[0].isdigit() else f"_{name}"


def add_source(ctx: ApiContext, stage: str, source: MetricsSource) -> None:
    """Expose ``source()`` at every scrape as ``cityiot_<stage>_<name>`` (replaces a previous
    source of the same stage)."""
    ctx.extra.setdefault(SOURCES, {})[stage] = source


def counters_source(counters: Any) -> MetricsSource:
    """A source reading a counters dataclass at scrape time: int fields as counters
    (``<field>_total``), float fields as gauges, ``dict[str, int]`` fields as labelled
    counters; anything else is left out."""
    names = [f.name for f in dataclasses.fields(counters)]

    def read() -> dict[str, Number | Mapping[str, Number]]:
        values: dict[str, Number | Mapping[str, Number]] = {}
        for name in names:
            value = getattr(counters, name)
            if isinstance(value, bool):
                continue
            if isinstance(value, int):
                values[f"{name}_total"] = value
            elif isinstance(value, float):
                values[name] = value
            elif isinstance(value, dict):
                values[f"{name}_total"] = dict(value)
        return values

    return read


class StageCollector:
    """Turns the sources in ``ApiContext.extra["metrics_sources"]`` into metric families."""

    def __init__(self, sources: Callable[[], Mapping[str, MetricsSource]]) -> None:
        self._sources = sources

    def describe(self) -> list[Metric]:
        return []  # names are only known at scrape time

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            f"{NAMESPACE}_stage_source_up",
            "1 when the stage's metrics source answered this scrape, 0 when it failed",
            labels=["stage"],
        )
        for stage, source in sorted(self._sources().items()):
            try:
                values = dict(source())
            except Exception:  # a broken source must not break the scrape
                log.exception("event=metrics_source_failed stage=%s", stage)
                up.add_metric([stage], 0)
                continue
            up.add_metric([stage], 1)
            yield from _families(_metric_name(stage), values)
        yield up


def _families(stage: str, values: Mapping[str, Any]) -> Iterable[Metric]:
    for raw_name, value in sorted(values.items()):
        name = _metric_name(raw_name)
        counter = name.endswith("_total")
        full = f"{NAMESPACE}_{stage}_{name.removesuffix('_total') if counter else name}"
        doc = f"{raw_name} of the {stage} stage"
        if isinstance(value, Mapping):
            base = name.removesuffix("_total")
            label = _metric_name(base.rpartition("_by_")[2]) if "_by_" in base else "key"
            family: Metric = (
                CounterMetricFamily(full, doc, labels=[label])
                if counter
                else GaugeMetricFamily(full, doc, labels=[label])
            )
            for key, number in sorted(value.items()):
                if isinstance(number, int | float) and not isinstance(number, bool):
                    family.add_metric([str(key)], float(number))  # type: ignore[attr-defined]
            yield family
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield (
                CounterMetricFamily(full, doc, value=float(value))
                if counter
                else GaugeMetricFamily(full, doc, value=float(value))
            )


class PlatformMetrics:
    """One app's registry: request metrics and the stages' sources."""

    def __init__(self, sources: Callable[[], Mapping[str, MetricsSource]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by route template and status",
            ["method", "route", "status"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (to the end of the body), by route template",
            ["method", "route"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "http_requests_in_flight",
            "HTTP requests being answered now",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "api_rate_limited",
            "Requests refused with 429 by the per-key rate limit",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.registry.register(StageCollector(sources))  # type: ignore[arg-type]

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The scrape body and its content type, in the format the ``Accept`` header asks
        for (Prometheus text by default, OpenMetrics on request)."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


def install(app: FastAPI) -> PlatformMetrics:
    """Give ``app`` its metrics registry and the request-timing middleware (once)."""
    existing: PlatformMetrics | None = getattr(app.state, "metrics", None)
    if existing is not None:
        return existing

    def sources() -> Mapping[str, MetricsSource]:
        ctx = getattr(app.state, "ctx", None)  # built by the lifespan; absent before
        return dict(ctx.extra.get(SOURCES, {})) if ctx is not None else {}

    metrics = PlatformMetrics(sources)
    app.state.metrics = metrics
    app.add_middleware(RequestTiming, metrics=metrics)
    return metrics


def route_template(scope: Scope) -> str:
    """The path template of the route that answered (``/api/v1/devices/{device_id}``), or
    ``unmatched``."""
    # FastAPI keeps an included route unprefixed in scope["route"]; its effective context
    # holds the path as mounted. Older versions copy the route with its full path.
    fastapi_scope = scope.get("fastapi")
    effective = (
        fastapi_scope.get("effective_route_context") if isinstance(fastapi_scope, dict) else None
    )
    for candidate in (effective, scope.get("route")):
        template = getattr(candidate, "path_format", None) or getattr(candidate, "path", None)
        if isinstance(template, str) and template:
            return template
    return UNMATCHED


class RequestTiming:
    """ASGI middleware counting and timing each HTTP request by route template and status.

    Pure ASGI (not ``BaseHTTPMiddleware``), so streamed answers (the SSE stream) pass through
    untouched.
    """

    def __init__(self, app: ASGIApp, metrics: PlatformMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an exception escaping the app is answered 500 by the server
        started = time.perf_counter()

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, watch)
        finally:
            self.metrics.in_flight.dec()
            template = route_template(scope)
            method = scope.get("method", "")
            method = method if method in _METHODS else "other"
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
            if status == 429:
                self.metrics.rate_limited.inc()
