"""Schemathesis against the running API's own OpenAPI document: whatever it sends — valid,
invalid, odd — nothing answers 5xx and every answer matches the schema."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cityiot.api.keys import create_key
from cityiot.api.server import ApiServer
from cityiot.platform.local_services import LocalBroker, LocalInflux
from tests.api.conftest import REGISTRY_VENDORS, Api, api_settings
from tests.ingest.conftest import REGISTRY_CSV
from tests.seeding import open_seeded

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,response_headers_conformance,negative_data_rejection"
)


@pytest.fixture
async def api_on_sqlite(
    sqlite_url: str, influx: LocalInflux, influx_db: str, broker: LocalBroker, tmp_path: Path
) -> AsyncIterator[Api]:
    from cityiot.storage.influx import InfluxDB

    # Broker files managed (no broker reads them here): the credential endpoints answer.
    settings = api_settings(
        sqlite_url,
        influx,
        influx_db,
        broker,
        api_rate_per_s=10_000.0,
        api_rate_burst=10_000,
        run_dir=tmp_path,
        broker_password_file=tmp_path / "passwd",
        broker_acl_file=tmp_path / "acl",
    )
    engine, sessions = await open_seeded(sqlite_url, REGISTRY_CSV, REGISTRY_VENDORS)
    try:
        async with InfluxDB(influx.url, influx_db) as client, ApiServer(settings) as server:
            await client.setup(settings.retention)
            harness = Api(server.url, settings, sessions, client, server)
            _, harness.keys["admin"] = await create_key(sessions, "admin", name="schemathesis")
            yield harness
    finally:
        await engine.dispose()


async def _schemathesis(api: Api, key: str, paths: list[str], log: Path) -> tuple[int, str]:
    schemathesis = Path(sys.executable).parent / "schemathesis"
    process = await asyncio.create_subprocess_exec(
        str(schemathesis),
        "run",
        f"{api.url}/openapi.json",
        "--checks",
        CHECKS,
        "--header",
        f"Authorization: Bearer {key}",
        "--max-examples",
        os.environ.get("CITYIOT_SCHEMATHESIS_EXAMPLES", "25"),
        "--phases",
        "examples,coverage,fuzzing",
        *paths,
        "--seed",
        "1",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--no-color",
        "--generation-database",
        "none",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=log.parent,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=600)
    text = output.decode(errors="replace")
    await asyncio.to_thread(log.write_text, text)
    assert process.returncode is not None
    return process.returncode, text


@pytest.mark.slow
async def test_no_5xx_and_every_answer_matches_the_schema(
    api_on_sqlite: Api, tmp_path: Path
) -> None:
    api = api_on_sqlite
    # The stream never ends by design. Revoking keys runs apart, with a key of its own, so
    # whatever key it revokes, the main run's key keeps working. The HTTP link is fuzzed
    # on a platform with its ingest (tests/api/test_telemetry_link.py).
    code, text = await _schemathesis(
        api,
        api.keys["admin"],
        ["--exclude-path-regex", "/stream$|/keys/|/telemetry/"],
        tmp_path / "schemathesis.log",
    )
    assert code == 0, text[-12000:]
    assert "passed" in text.lower()
    _, keys_admin = await create_key(api.sessions, "admin", name="schemathesis keys")
    code, text = await _schemathesis(
        api,
        keys_admin,
        ["--include-path-regex", "/keys"],
        tmp_path / "schemathesis-keys.log",
    )
    assert code == 0, text[-12000:]
    assert "passed" in text.lower()
