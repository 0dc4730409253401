"""Shared fixtures: real Mosquitto and InfluxDB processes, fresh databases (docs/design.md §3).

Processes are session-scoped and started synchronously, each in its own tmp dir (parallel
safe); databases are per test. Everything is cleaned up even when a test fails.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.engine import URL, make_url

from cityiot.domain.catalogue import MODEL, ThingModel
from cityiot.platform.local_services import LocalBroker, LocalInflux

T = TypeVar("T")

DEFAULT_TEST_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


# The console's browser tests: nodeids under this folder (relative to the checkout).
CONSOLE_TESTS = "tests/api/console/"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` first: spread over ``make test``'s workers (pytest-xdist), the
    minute-long ones start at once instead of ending a run the others finished long ago."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# Optional: without pytest-xdist (`-p no:xdist`) the hook is unknown and must not fail the run.
@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` as ``make test`` runs it: tests dealt one at a time to whichever
    worker is free, except that each module of the console's browser tests goes whole to one
    worker, so its platform and Chromium (module fixtures) start once, not on every worker
    dealt one of its tests. pytest-xdist's own groups (``xdist_group`` markers) do not take
    under pytest 9, whose node ids the plugin can no longer rename; the scheduler groups by
    node id instead."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ConsoleModules(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module.startswith(CONSOLE_TESTS) else nodeid

    return ConsoleModules(config, log)


@pytest.fixture
def live_model() -> Iterator[ThingModel]:
    """The process's model, which the test may change: the shipped kinds and city again
    after it."""
    try:
        yield MODEL
    finally:
        MODEL.configure(None, None)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A running Mosquitto for the whole session (anonymous, persistence on)."""
    service = LocalBroker(tmp_path_factory.mktemp("broker"))
    try:
        yield service.start()
    finally:
        service.stop()


@pytest.fixture
def publisher(broker: LocalBroker) -> Iterator[mqtt.Client]:
    """A connected paho client on the session broker (its network loop running)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


@pytest.fixture(scope="session")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalInflux]:
    """A running InfluxDB 1.x for the whole session."""
    service = LocalInflux(tmp_path_factory.mktemp("influx"))
    try:
        yield service.start()
    finally:
        service.stop()


def _influx_query(influx: LocalInflux, q: str, **params: str) -> dict[str, Any]:
    """POST an InfluxQL statement to the local InfluxDB; raise on any error it reports."""
    response = httpx.post(f"{influx.url}/query", data={"q": q, **params}, timeout=10.0)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    for result in body.get("results", []):
        if "error" in result:
            raise RuntimeError(f"InfluxDB rejected {q!r}: {result['error']}")
    return body


@pytest.fixture
def influx_db(influx: LocalInflux) -> Iterator[str]:
    """Name of a fresh database on the session InfluxDB, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    _influx_query(influx, f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        try:
            _influx_query(influx, f'DROP DATABASE "{name}"')
        except (httpx.HTTPError, RuntimeError) as e:  # e.g. a fault test left it paused
            warnings.warn(f"could not drop InfluxDB database {name}: {e}", stacklevel=1)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a fresh, empty SQLite file database."""
    return f"sqlite+aiosqlite:///{tmp_path / 'cityiot.db'}"


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    # In a thread of its own: safe even if the caller's thread has a running event loop.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _postgres_admin(admin: URL, sql: str) -> None:
    import asyncpg

    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL (``postgresql+asyncpg://…``) of a fresh database on the test PostgreSQL.

    The server is ``CITYIOT_TEST_POSTGRES_URL`` (its database is only used to create and drop
    ours). Unreachable: the test is skipped, except under ``CI=true``, where it fails.
    """
    admin = make_url(os.environ.get("CITYIOT_TEST_POSTGRES_URL", DEFAULT_TEST_POSTGRES_URL))
    name = f"cityiot_test_{uuid.uuid4().hex[:12]}"
    try:
        _run_async(_postgres_admin(admin, f'CREATE DATABASE "{name}"'))
    except Exception as e:  # refused, timed out, bad credentials, no such database
        message = (
            f"PostgreSQL not reachable at {admin.render_as_string(hide_password=True)}: "
            f"set CITYIOT_TEST_POSTGRES_URL ({type(e).__name__}: {e})"
        )
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        url = admin.set(drivername="postgresql+asyncpg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        # FORCE (PostgreSQL 13+) ends sessions a failed test left open.
        _run_async(_postgres_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty database, SQLite or PostgreSQL; removed afterwards."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[Any]:
    """A session factory on the migrated database at ``db_url``."""
    from cityiot.storage.engine import make_engine, migrate, sessionmaker

    await migrate(db_url)
    engine = make_engine(db_url)
    try:
        yield sessionmaker(engine)
    finally:
        await engine.dispose()
