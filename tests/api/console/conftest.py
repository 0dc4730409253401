"""The console against a real platform, driven by headless Chromium.

One platform per module, composed as ``cityiot run`` composes it (ingest → rules → API, on
the session's Mosquitto and InfluxDB, a SQLite registry): a 60-device simulated fleet with
an hour of history, a few devices silent, offline or decommissioned, an admin key (for the
tests' own requests) and an administrator's account (the console signs in as a person).
The browser is Debian's Chromium (``/usr/bin/chromium``, installed by ``make deps``),
driven by Playwright's Python API: no browser is downloaded.
"""

from __future__ import annotations

import os
import random
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest

from cityiot.api.keys import create_key
from cityiot.api.people import create_user
from cityiot.domain.catalogue import MODEL
from cityiot.domain.settings import Settings
from cityiot.platform.local_services import LocalBroker, LocalInflux, free_port
from cityiot.platform.wiring import platform as start_platform
from cityiot.simulators import Fleet
from cityiot.simulators.behaviour import new_state, reading
from cityiot.simulators.fleet import SimDevice
from cityiot.simulators.messages import encode
from tests.ingest.conftest import publisher_for
from tests.seeding import open_seeded
from tests.waiting import until

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "test-artifacts" / "console"
SCREENSHOTS = ROOT / "docs" / "screenshots"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}

FLEET_SIZE = 60
FLEET_SEED = 5
HISTORY_S = 3600
HISTORY_STEP_S = 120
SILENT = 4  # devices that never report (status "unknown")
OFFLINE = 3  # devices that report, then say {"online": false}
DECOMMISSIONED = 2
PASSWORD = "console test passphrase"


@dataclass
class ConsolePlatform:
    url: str
    key: str
    settings: Settings
    sessions: Any
    fleet: Fleet
    publisher: mqtt.Client
    http: httpx.AsyncClient  # the API with the admin key
    # The console's administrator: people sign in with a password (DESIGN §10).
    username: str = "console.admin"
    password: str = PASSWORD
    seq: dict[str, int] = field(default_factory=dict)

    def publish(self, device: SimDevice, metrics: dict[str, float | bool], ts_ms: int) -> None:
        """One reading of ``device`` over MQTT, in its vendor's codec."""
        seq = self.seq[device.device_id] = self.seq.get(device.device_id, 0) + 1
        info = self.publisher.publish(
            device.telemetry_topic, encode(device, [(ts_ms, seq, metrics)]), qos=1
        )
        info.wait_for_publish(5)

    async def register_manhole(self, device_id: str, **fields: Any) -> dict[str, Any]:
        """A new manhole ``device_id`` registered beside :meth:`alerting_manhole` (its vendor,
        district, place and attributes), reporting every minute; ``fields`` add to or replace
        what is posted. Returns the API's answer."""
        manhole = self.alerting_manhole()
        created = await self.http.post(
            "/devices",
            json={
                "device_id": device_id,
                "vendor": manhole.vendor,
                "kind": "manhole",
                "district": manhole.district,
                "lat": manhole.lat,
                "lon": manhole.lon,
                "report_interval_s": 60,
                "attributes": manhole.attributes,
                **fields,
            },
        )
        assert created.status_code == 201, created.text
        answer: dict[str, Any] = created.json()
        return answer

    async def listed(self, path: str, expired: bool) -> list[dict[str, Any]]:
        """The items of ``GET path`` (silences, maintenance windows), the ended ones too when
        ``expired``."""
        params: dict[str, str | int] = {"expired": str(expired).lower(), "limit": 1000}
        body = (await self.http.get(path, params=params)).json()
        items: list[dict[str, Any]] = body["items"]
        return items

    def alerting_manhole(self) -> SimDevice:
        """The manhole (JSON vendor, with history) whose cover the tests open."""
        return next(
            d
            for d in self.reporting
            if d.kind == "manhole" and d.codec == "json" and d.attribute("depth_cm")
        )

    @property
    def reporting(self) -> list[SimDevice]:
        return list(self.fleet.devices[SILENT + DECOMMISSIONED :])

    async def person_of(self, role: str, **grant: Any) -> str:
        """A new account of ``role`` (password :data:`PASSWORD`); its username."""
        username = f"{role}.{uuid.uuid4().hex[:6]}"
        await create_user(self.sessions, username, role, PASSWORD, **grant)
        return username


async def _history(platform: ConsolePlatform) -> None:
    """An hour of normal readings for every reporting device (one batch per JSON device)."""
    now_ms = int(time.time() * 1000)
    rng = random.Random(FLEET_SEED)
    start_ms = now_ms - HISTORY_S * 1000
    for device in platform.reporting:
        state = new_state(device, HISTORY_STEP_S * 1000.0)
        readings = []
        for ts in range(start_ms, now_ms, HISTORY_STEP_S * 1000):
            seq = platform.seq[device.device_id] = platform.seq.get(device.device_id, 0) + 1
            readings.append((ts, seq, reading(device, ts, state, rng)))
        if device.codec == "hexframe":  # one reading per frame: the newest is enough
            readings = readings[-1:]
        platform.publisher.publish(device.telemetry_topic, encode(device, readings), qos=1)
    for device in platform.reporting[-OFFLINE:]:
        platform.publisher.publish(device.status_topic, orjson.dumps({"online": False}), qos=1)


@pytest.fixture(scope="module")
async def platform(
    broker: LocalBroker, influx: LocalInflux, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ConsolePlatform]:
    tmp = tmp_path_factory.mktemp("console")
    influx_db = f"console_{uuid.uuid4().hex[:10]}"
    settings = Settings(
        run_dir=tmp,
        mqtt_url=broker.url,
        influx_url=influx.url,
        influx_db=influx_db,
        database_url=f"sqlite+aiosqlite:///{tmp / 'cityiot.db'}",
        mqtt_client_id=f"console-{uuid.uuid4().hex[:8]}",
        api_host="127.0.0.1",
        api_port=free_port(),
        api_rate_per_s=1000.0,
        api_rate_burst=1000,
        flush_interval_ms=50,
        registry_refresh_s=0.5,
        # Vendors' MQTT accounts are issued into files here (the session's broker reads none).
        broker_password_file=tmp / "broker" / "passwd",
        broker_acl_file=tmp / "broker" / "acl",
    )
    fleet = Fleet.generate(FLEET_SIZE, FLEET_SEED)
    engine, sessions = await open_seeded(settings.database_url, fleet.csv_text(), fleet.vendors)
    _, key = await create_key(sessions, "admin", name="console test admin")
    await create_user(sessions, "console.admin", "admin", PASSWORD, display_name="值班长")
    publisher = publisher_for(broker)
    try:
        async with (
            start_platform(settings, rules=True, api=True) as running,
            httpx.AsyncClient(
                base_url=f"{running.api.url}/api/v1",  # type: ignore[union-attr]
                headers={"Authorization": f"Bearer {key}"},
                timeout=10.0,
            ) as http,
        ):
            api = running.api
            assert api is not None
            running.start()
            harness = ConsolePlatform(api.url, key, settings, sessions, fleet, publisher, http)
            try:
                for device in fleet.devices[SILENT : SILENT + DECOMMISSIONED]:
                    r = await http.patch(
                        f"/devices/{device.device_id}", json={"decommissioned": True}
                    )
                    assert r.status_code == 200, r.text
                await _history(harness)
                expected = len(harness.reporting) - OFFLINE

                async def settled() -> bool:
                    online = (
                        await http.get("/devices", params={"status": "online", "limit": 1000})
                    ).json()
                    offline = (
                        await http.get("/devices", params={"status": "offline", "limit": 1000})
                    ).json()
                    return len(online["items"]) == expected and len(offline["items"]) == OFFLINE

                await until(settled, 20, f"{expected} devices online and {OFFLINE} offline")
                yield harness
            finally:
                await running.stop()
    finally:
        # Kinds a test added while the platform ran leave with it (the model is the process's).
        MODEL.use(settings)
        publisher.disconnect()
        publisher.loop_stop()
        await engine.dispose()
        async with httpx.AsyncClient() as client:
            await client.post(f"{influx.url}/query", data={"q": f'DROP DATABASE "{influx_db}"'})


def require_chromium() -> None:
    """Fail (not skip) without Debian's Chromium: `make test` installs it."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"the console tests drive Debian's Chromium at {CHROMIUM}, which is missing: "
            "run `make deps` (or as root: apt-get install -y chromium)",
            pytrace=False,
        )


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    require_chromium()
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail(
            "the console tests need Playwright's Python package: run `make venv` "
            "(or .venv/bin/pip install -e '.[test]')",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@dataclass
class Tab:
    """A page in its own browser context, recording every request and every error."""

    page: Any
    context: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def assert_clean(self, refused: tuple[str, ...] = ()) -> None:
        """No console error or uncaught exception; no request left this machine. ``refused``:
        the statuses the test expects refused requests to log (``"401 (Unauthorized)"``)."""
        logged = tuple(f"status of {status}" for status in refused)
        errors = [e for e in self.errors if not (logged and e.endswith(logged))]
        assert not errors, f"errors in the browser console: {errors}"
        outside = [u for u in self.requests if urlsplit(u).hostname not in LOCAL_HOSTS]
        assert not outside, f"requests left localhost: {outside}"
        assert self.requests, "no request was recorded"


@pytest.fixture
async def open_tab(browser: Any) -> AsyncIterator[Callable[..., Any]]:
    """``await open_tab(viewport=(w, h), **context_options)`` → a fresh :class:`Tab`."""
    contexts: list[Any] = []

    async def open_(viewport: tuple[int, int] = (1440, 900), **options: Any) -> Tab:
        context = await browser.new_context(
            viewport={"width": viewport[0], "height": viewport[1]},
            locale="zh-CN",
            timezone_id="Asia/Shanghai",
            **options,
        )
        contexts.append(context)
        page = await context.new_page()
        tab = Tab(page, context)
        context.on("request", lambda request: tab.requests.append(request.url))
        page.on("console", tab.console)
        page.on("pageerror", lambda exc: tab.errors.append(f"uncaught: {exc} {exc.stack}"))
        return tab

    yield open_
    for context in contexts:
        await context.close()


async def screenshot(page: Any, name: str) -> Path:
    """Save the page as ``test-artifacts/console/{name}.png``; with
    ``CITYIOT_UPDATE_SCREENSHOTS=1`` also as ``docs/screenshots/{name}.png``, which the operators' guides show."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path))
    if os.environ.get("CITYIOT_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / path.name)
    return path
