"""Liveness, readiness against real dependencies going away, and the Prometheus metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from cityiot.api.app import create_app
from cityiot.api.keys import create_key
from cityiot.api.metrics import add_source, counters_source, install
from cityiot.api.server import ApiServer
from cityiot.domain.settings import Settings
from cityiot.ingest.pipeline import IngestCounters
from cityiot.platform.local_services import LocalBroker, LocalInflux
from cityiot.rules.engine import RulesCounters
from cityiot.storage.engine import migrate
from tests.api.conftest import Api, api_settings


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[ApiServer, httpx.AsyncClient]]:
    """An API of our own (so a test can control its dependencies), with its metrics."""
    await migrate(settings.database_url)
    server = ApiServer(settings)
    install(server.app)  # no-op when create_app already installs it
    async with server, httpx.AsyncClient(base_url=server.url, timeout=30.0) as client:
        yield server, client


async def ready_within(client: httpx.AsyncClient, seconds: float) -> httpx.Response:
    """The first 200 of /readyz within ``seconds`` (the broker link connects in the background),
    else the last answer."""
    deadline = time.monotonic() + seconds
    while True:
        r = await client.get("/readyz")
        if r.status_code == 200 or time.monotonic() > deadline:
            return r
        await asyncio.sleep(0.1)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_healthz_needs_no_key(api: Api) -> None:
    client = api.client(None)
    for path in ("/healthz", "/api/v1/healthz"):
        r = await client.get(path)
        assert r.status_code == 200, path
        assert r.json() == {"status": "ok"}


async def test_readyz_is_200_with_every_dependency_up(api: Api) -> None:
    client = api.client(None)
    for path in ("/readyz", "/api/v1/readyz"):
        r = await ready_within(client, 10) if path == "/readyz" else await client.get(path)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "ready"
        assert {name: c["status"] for name, c in body["checks"].items()} == {
            "database": "up",
            "influxdb": "up",
            "broker": "up",
        }


async def test_readyz_is_503_naming_influxdb_while_it_hangs_or_is_stopped(
    tmp_path: Path, sqlite_url: str, broker: LocalBroker
) -> None:
    with LocalInflux(tmp_path / "influx") as influx:
        settings = api_settings(sqlite_url, influx, "city", broker)
        async with serving(settings) as (_, client):
            assert (await ready_within(client, 10)).status_code == 200

            influx.pause()  # a hung InfluxDB: connections open, nothing answers
            try:
                r = await client.get("/readyz")
            finally:
                influx.resume()
            assert r.status_code == 503
            assert r.headers["content-type"].startswith("application/problem+json")
            body = r.json()
            assert body["checks"]["influxdb"]["status"] == "down"
            assert "influxdb: no answer within 2 s" in body["detail"]
            assert body["checks"]["database"]["status"] == "up"
            assert body["checks"]["influxdb"]["ms"] >= 2000  # the box ran out: no early answer
            # A hung InfluxDB never answers: the 503 naming the 2 s box is the proof that each
            # check is time-boxed.

            assert (await ready_within(client, 10)).status_code == 200  # back once it answers

            influx.stop()
            r = await client.get("/api/v1/readyz")
            assert r.status_code == 503
            assert r.json()["checks"]["influxdb"]["status"] == "down"
            assert "influxdb:" in r.json()["detail"]
            assert "database" not in r.json()["detail"]


async def test_metrics_count_requests_by_route_and_status(api: Api) -> None:
    admin = api.client("admin")
    for _ in range(3):
        assert (await admin.get("/api/v1/devices", params={"limit": 2})).status_code == 200
    assert (await admin.get("/api/v1/devices/mh-1")).status_code == 200
    assert (await api.client(None).get("/api/v1/devices")).status_code == 401
    assert (await admin.get("/api/v1/no/such/path")).status_code == 404

    r = await api.client(None).get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    got = samples(r.text)

    def requests(route: str, status: str) -> float:
        labels = frozenset({("method", "GET"), ("route", route), ("status", status)})
        return got.get(("cityiot_http_requests_total", labels), 0)

    assert requests("/api/v1/devices", "200") == 3
    assert requests("/api/v1/devices/{device_id}", "200") == 1  # the template, not the id
    assert requests("/api/v1/devices", "401") == 1
    assert requests("unmatched", "404") == 1
    count = got[
        (
            "cityiot_http_request_duration_seconds_count",
            frozenset({("method", "GET"), ("route", "/api/v1/devices")}),
        )
    ]
    assert count == 4  # three 200s and the 401


async def test_metrics_count_rate_limited_requests(
    sqlite_url: str, influx: LocalInflux, influx_db: str, broker: LocalBroker
) -> None:
    settings = api_settings(
        sqlite_url, influx, influx_db, broker, api_rate_per_s=0.01, api_rate_burst=2
    )
    async with serving(settings) as (server, client):
        _, key = await create_key(server.app.state.ctx.sessions, "operator")
        auth = {"Authorization": f"Bearer {key}"}
        statuses = [
            (await client.get("/api/v1/devices", headers=auth)).status_code for _ in range(4)
        ]
        assert statuses == [200, 200, 429, 429]
        got = samples((await client.get("/metrics")).text)
        assert got[("cityiot_api_rate_limited_total", frozenset())] == 2


async def test_metrics_expose_the_stages_counters(
    sqlite_url: str, influx: LocalInflux, influx_db: str, broker: LocalBroker
) -> None:
    async with serving(api_settings(sqlite_url, influx, influx_db, broker)) as (server, client):
        ingest = IngestCounters(messages=5, readings=4, rejected=1, last_write_ms=12.5)
        ingest.stored_by_kind["manhole"] = 3
        rules = RulesCounters(readings=4, events=2)
        ctx = server.app.state.ctx
        add_source(ctx, "ingest", counters_source(ingest))
        add_source(ctx, "rules", counters_source(rules))

        def broken() -> dict[str, Any]:
            raise RuntimeError("stage gone")

        add_source(ctx, "broken", broken)

        r = await client.get("/metrics")
        assert r.status_code == 200
        got = samples(r.text)
        assert got[("cityiot_ingest_messages_total", frozenset())] == 5
        assert got[("cityiot_ingest_rejected_total", frozenset())] == 1
        assert got[("cityiot_ingest_last_write_ms", frozenset())] == 12.5
        assert got[("cityiot_ingest_stored_by_kind_total", frozenset({("kind", "manhole")}))] == 3
        assert got[("cityiot_rules_events_total", frozenset())] == 2
        assert got[("cityiot_stage_source_up", frozenset({("stage", "ingest")}))] == 1
        assert got[("cityiot_stage_source_up", frozenset({("stage", "broken")}))] == 0

        ingest.messages += 10  # read at scrape time, not copied at registration
        got = samples((await client.get("/metrics")).text)
        assert got[("cityiot_ingest_messages_total", frozenset())] == 15

        # OpenMetrics on request, for scrapers that ask for it
        r = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
        assert r.headers["content-type"].startswith("application/openmetrics-text")
        assert r.text.rstrip().endswith("# EOF")


def test_each_app_has_its_own_registry() -> None:
    made: list[FastAPI] = [create_app(Settings()), create_app(Settings())]
    registries = {id(install(app).registry) for app in made}  # a shared one would raise
    assert len(registries) == 2
    assert install(made[0]) is made[0].state.metrics  # installing twice changes nothing
