"""An API whose port is taken fails with an OSError saying what to change, and the event
loop it ran in goes on: uvicorn's own answer is SystemExit, which the event loop re-raises
and which broke every later test of a pytest worker after a port race."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from cityiot.platform.local_services import LocalBroker, LocalInflux
from tests.api.conftest import running_api


async def test_a_taken_port_is_an_oserror_and_the_loop_goes_on(
    sqlite_url: str, influx: LocalInflux, influx_db: str, broker: LocalBroker, tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as raised:
            async with running_api(sqlite_url, influx, influx_db, broker, tmp_path, api_port=port):
                pass
    assert str(raised.value) == (
        f"the API could not listen on 127.0.0.1:{port}; set CITYIOT_API_PORT to a free port"
    )
    # The same loop serves the next API (the next test of the worker) as before.
    async with (
        running_api(sqlite_url, influx, influx_db, broker, tmp_path / "next") as api,
        httpx.AsyncClient(base_url=api.url) as client,
    ):
        assert (await client.get("/api/v1/healthz")).status_code == 200
