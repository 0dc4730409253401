"""A city's evening in InfluxDB and the database, filled once for the Grafana tests.

A small simulated fleet is registered, then ten minutes of its readings (20:30-20:40 in
Zhumadian, so it is dark: lamps on, cars parked) are published through the session's
Mosquitto into a running ingest and rules stage, with incidents that trip the dashboards'
"now" panels and raise real alerts. One device signs off (status offline) at the end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityiot.domain.settings import Settings
from cityiot.platform.local_services import LocalBroker, LocalInflux
from cityiot.platform.wiring import platform
from cityiot.simulators import Fleet, SimDevice, iter_reports, plan_incident
from tests.seeding import seed_registry
from tests.waiting import until

FLEET_SIZE = 40
FLEET_SEED = 7
REPORT_EVERY_S = 30
WINDOW_MIN = 10
CITY = dt.timezone(dt.timedelta(hours=8))
# Each incident on one device, for the whole window: what the "now" panels must show.
INCIDENTS = (
    "cover_open",
    "lamp_out",
    "leakage",
    "valve_open",
    "hydrant_knocked",
    "water_quality",
)


@dataclass
class City:
    """The filled databases and what the tests need to know about them."""

    settings: Settings
    fleet: Fleet
    start_ms: int  # first reading
    end_ms: int  # last reading
    incidents: dict[str, SimDevice]  # incident name → its device
    signed_off: SimDevice  # sent {"online": false} at the end
    readings: int
    extra: dict[str, Any] = field(default_factory=dict)

    def device(self, kind: str) -> SimDevice:
        return next(d for d in self.fleet.devices if d.kind == kind)

    def districts(self, kind: str | None = None) -> set[str]:
        return {d.district for d in self.fleet.devices if kind is None or d.kind == kind}


def evening_window(now: dt.datetime) -> tuple[int, int]:
    """(start, end) epoch ms: the latest 20:30-20:40 Zhumadian time that has passed."""
    local = now.astimezone(CITY)
    end = local.replace(hour=20, minute=40, second=0, microsecond=0)
    if end > local:
        end -= dt.timedelta(days=1)
    end_ms = int(end.timestamp() * 1000)
    return end_ms - WINDOW_MIN * 60_000, end_ms


def _influx(influx: LocalInflux, q: str) -> None:
    response = httpx.post(f"{influx.url}/query", data={"q": q}, timeout=10.0)
    response.raise_for_status()


@pytest.fixture(scope="session")
def city_db(influx: LocalInflux) -> Iterator[str]:
    """A database of its own on the session InfluxDB (the per-test one would not outlive
    a test), dropped at the end."""
    name = f"grafana_{uuid.uuid4().hex[:10]}"
    _influx(influx, f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        _influx(influx, f'DROP DATABASE "{name}"')


@pytest.fixture(scope="session")
async def city(
    broker: LocalBroker,
    influx: LocalInflux,
    city_db: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[City]:
    """The fleet's evening stored by the real ingest, alerts raised by the real rules."""
    run_dir = tmp_path_factory.mktemp("grafana-city")
    database_url = f"sqlite+aiosqlite:///{run_dir / 'cityiot.db'}"
    settings = Settings(
        run_dir=run_dir,
        mqtt_url=broker.url,
        influx_url=influx.url,
        influx_db=city_db,
        database_url=database_url,
        mqtt_client_id=f"grafana-{uuid.uuid4().hex[:8]}",
        flush_interval_ms=50,
        registry_refresh_s=0.5,
    )
    fleet = Fleet.generate(FLEET_SIZE, FLEET_SEED)
    await seed_registry(database_url, fleet.csv_text(), fleet.vendors)

    start_ms, end_ms = evening_window(dt.datetime.now(dt.UTC))
    incidents = [plan_incident(fleet, name, 1, 0.0, None, seed=FLEET_SEED) for name in INCIDENTS]
    by_id = {d.device_id: d for d in fleet.devices}
    chosen = {i.name: by_id[i.device_ids[0]] for i in incidents}
    rate = len(fleet.devices) / REPORT_EVERY_S
    slots = WINDOW_MIN * 60 * len(fleet.devices) // REPORT_EVERY_S
    messages = [
        report.message
        for _ts, report in iter_reports(fleet, start_ms, slots, FLEET_SEED, rate, incidents)
        if report is not None
    ]
    busy = set(chosen.values())
    signed_off = next(d for d in fleet.devices if d.kind == "parking" and d not in busy)

    publisher = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"grafana-pub-{uuid.uuid4().hex[:6]}"
    )
    publisher.connect(broker.host, broker.port)
    publisher.loop_start()
    try:
        async with platform(settings, rules=True) as running:
            ingest, rules = running.ingest, running.rules
            assert rules is not None
            running.start()
            sent = [publisher.publish(m.topic, m.payload, qos=1) for m in messages]
            sent.append(
                publisher.publish(signed_off.status_topic, orjson.dumps({"online": False}), qos=1)
            )
            for info in sent:
                await asyncio.to_thread(info.wait_for_publish, 10)
            await until(
                lambda: ingest.counters.messages >= len(sent) and ingest.idle,
                20.0,
                "every message taken and stored",
            )
            await until(
                lambda: rules.engine.counters.readings >= ingest.counters.readings,
                20.0,
                "every reading through the rules",
            )
            assert ingest.counters.rejected == 0, "the simulator's messages must all be valid"
    finally:
        publisher.disconnect()
        publisher.loop_stop()
    yield City(
        settings=settings,
        fleet=fleet,
        start_ms=start_ms,
        end_ms=end_ms,
        incidents=chosen,
        signed_off=signed_off,
        readings=ingest.counters.readings,
    )


# -- what Grafana does to a query before sending it --------------------------------------

VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def grafana_query(
    query: str,
    variables: dict[str, str | list[str]],
    start_ms: int,
    end_ms: int,
    interval_ms: int = 60_000,
) -> str:
    """``query`` as Grafana sends it to InfluxDB: time range, interval and variables in.

    A variable inside a regex (``/^$district$/``) takes one value as itself, several as
    ``(a|b)``, All as its allValue (``.*``); elsewhere (``"$kind"``) the value itself.
    """
    text = query.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms")
    text = text.replace("$__interval_ms", str(interval_ms))
    text = text.replace("$__interval", f"{interval_ms // 1000}s")

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise AssertionError(f"query uses ${name}, which the test does not set: {query}")
        chosen = variables[name]
        if isinstance(chosen, list):
            return "(" + "|".join(re.escape(v) for v in chosen) + ")"
        return chosen

    return VARIABLE.sub(value, text)


def influx_results(settings: Settings, q: str) -> dict[str, Any]:
    """Run ``q`` as Grafana's InfluxQL data source does (POST /query, epoch ms)."""
    response = httpx.post(
        f"{settings.influx_url}/query",
        data={"q": q, "db": settings.influx_db, "epoch": "ms"},
        timeout=20.0,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    for result in body["results"]:
        assert "error" not in result, f"InfluxDB refused {q!r}: {result['error']}"
    return body


@pytest.fixture(scope="session")
def committed_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"
