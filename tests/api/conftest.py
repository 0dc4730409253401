"""A running API (real uvicorn on a free port) over a real database (SQLite and
PostgreSQL), the session's InfluxDB and Mosquitto, a small registry and a key per role."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from cityiot.api.keys import create_key
from cityiot.api.server import ApiServer
from cityiot.domain.settings import Settings
from cityiot.platform.local_services import LocalBroker, LocalInflux, free_port
from cityiot.storage.influx import InfluxDB
from tests.ingest.conftest import REGISTRY_CSV
from tests.seeding import open_seeded

# The department key's grant: manholes and parking, in yicheng only. In REGISTRY_CSV that
# is mh-1 and pk-1; every other device is outside it.
DEPARTMENT_KINDS = ("manhole", "parking")
DEPARTMENT_DISTRICTS = ("yicheng",)
DEPARTMENT_SEES = {"mh-1", "pk-1"}
VENDOR = "acme"  # the vendor key's vendor: devices *-1 (oldco owns *-2)
# The field key's teams (rules/routing.yaml): ops hears of every alert, urban of manholes
# and streetlights.
FIELD_TEAMS = ("ops", "urban")
ROLES = ("admin", "operator", "field", "department", "vendor")


@dataclass
class Api:
    url: str
    settings: Settings
    sessions: Any
    influx: InfluxDB
    server: ApiServer
    keys: dict[str, str] = field(default_factory=dict)  # role → key
    _clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, role: str | None = "admin", key: str | None = None) -> httpx.AsyncClient:
        """A client sending the key of ``role`` (None: no key at all)."""
        headers = {}
        token = key if key is not None else (self.keys[role] if role else None)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30.0)
        self._clients.append(client)
        return client

    async def key(self, role: str, **grant: Any) -> str:
        _, key = await create_key(self.sessions, role, **grant)
        return key


def api_settings(
    db_url: str, influx: LocalInflux, influx_db: str, broker: LocalBroker, **extra: Any
) -> Settings:
    return Settings.model_validate(
        {
            "database_url": db_url,
            "influx_url": influx.url,
            "influx_db": influx_db,
            "mqtt_url": broker.url,
            "api_host": "127.0.0.1",
            "api_port": free_port(),
            "api_rate_per_s": 1000.0,
            "api_rate_burst": 1000,
            **extra,
        }
    )


REGISTRY_VENDORS = (("acme", "Acme Sensors", "json"), ("oldco", "Old Co", "hexframe"))


@contextlib.asynccontextmanager
async def running_api(
    db_url: str,
    influx: LocalInflux,
    influx_db: str,
    broker: LocalBroker,
    run_dir: Path,
    **extra: Any,
) -> AsyncIterator[Api]:
    """An API on a seeded registry with a key of each role (``api.keys``); ``extra``
    settings beside the tests' own."""
    settings = api_settings(db_url, influx, influx_db, broker, run_dir=run_dir, **extra)
    engine, sessions = await open_seeded(db_url, REGISTRY_CSV, REGISTRY_VENDORS)
    try:
        async with (
            InfluxDB(influx.url, influx_db) as client,
            ApiServer(settings) as server,
        ):
            await client.setup(settings.retention)
            harness = Api(server.url, settings, sessions, client, server)
            harness.keys = {
                "admin": await harness.key("admin", name="test admin"),
                "operator": await harness.key("operator", name="ops desk"),
                "field": await harness.key(
                    "field", name="crew 1", teams=FIELD_TEAMS, known_teams=FIELD_TEAMS
                ),
                "department": await harness.key(
                    "department",
                    name="urban management",
                    kinds=DEPARTMENT_KINDS,
                    districts=DEPARTMENT_DISTRICTS,
                ),
                "vendor": await harness.key("vendor", name="acme ops", vendor=VENDOR),
            }
            try:
                yield harness
            finally:
                for c in harness._clients:
                    await c.aclose()
    finally:
        await engine.dispose()


@pytest.fixture
async def api(
    db_url: str, influx: LocalInflux, influx_db: str, broker: LocalBroker, tmp_path: Path
) -> AsyncIterator[Api]:
    async with running_api(db_url, influx, influx_db, broker, tmp_path) as harness:
        yield harness
