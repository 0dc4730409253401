"""The live stream against issue 22: hostile payloads on the real broker leave every stream
alive (/readyz stays 200); a crashed hub task is restarted and reported; a retained reading
is not shown as live; revoking a key (through the API or in the database, as the CLI does)
ends its open streams."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityiot.api.keys import create_key, revoke_key
from cityiot.api.stream import StreamHub, WatchedDevice, city_time_ms
from cityiot.domain.settings import Settings
from cityiot.platform.local_services import LocalBroker, free_port
from tests.api.conftest import DEPARTMENT_DISTRICTS, DEPARTMENT_KINDS, Api
from tests.api.test_stream import Events, alert_event, publish, stream
from tests.payloads import HOSTILE
from tests.waiting import until

# Passes the grant filters but cannot be sent as JSON: the stream must skip it, not end.
BEYOND_64_BITS = (
    b'{"id": -9223372036854775809, "kind": "manhole", "district": "yicheng", "vendor": "acme"}'
)


async def test_a_nested_payload_leaves_every_stream_alive(api: Api, publisher: mqtt.Client) -> None:
    hub = api.server.app.state.ctx.hub
    now_ms = int(time.time() * 1000)
    async with (
        stream(api, "vendor", device_id="mh-1") as attacker,
        stream(api, "admin") as bystander,
    ):
        # The red team's attack, and its relatives, on the device's topic and the alerts'.
        for _, payload in HOSTILE:
            publish(publisher, "city/acme/mh-1/telemetry", payload)
            publish(publisher, "city/alerts/yicheng/manhole", payload)
        publish(publisher, "city/alerts/yicheng/manhole", BEYOND_64_BITS)
        reading = {"ts": now_ms, "metrics": {"tilt_deg": 3.5}}
        publish(publisher, "city/acme/mh-1/telemetry", reading)
        after = alert_event("yicheng", "manhole", "mh-1")
        publish(publisher, "city/alerts/yicheng/manhole", after)

        assert await attacker.next(10.0) == (
            "reading",
            {**reading_shown(now_ms), "kind": "manhole"},
        )
        assert await attacker.next(10.0) == ("alert", after)
        assert await bystander.next(10.0) == ("alert", after)
        async with stream(api, "field") as newcomer:
            later = alert_event("yicheng", "manhole", "mh-1")
            publish(publisher, "city/alerts/yicheng/manhole", later)
            assert await newcomer.next(10.0) == ("alert", later)
            assert await bystander.next(10.0) == ("alert", later)

    assert (await api.client(None).get("/readyz")).status_code == 200
    assert hub.restarts == 0 and not hub.message_errors, hub.message_errors
    assert hub.unreadable["alert"] == len(HOSTILE)
    scrape = (await api.client(None).get("/metrics")).text
    assert "cityiot_api_stream_restarts_total 0.0" in scrape
    assert "cityiot_api_stream_unreadable_messages_total" in scrape


def reading_shown(ts_ms: int) -> dict[str, Any]:
    return {
        "device_id": "mh-1",
        "ts": city_time_ms(ts_ms),
        "ts_ms": ts_ms,
        "metrics": {"tilt_deg": 3.5},
    }


class CrashingOnce(StreamHub):
    """A hub whose receiving loop fails once by surprise, as a bug would make it."""

    crashed = False

    async def _receive(self, client: Any) -> None:
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("a bug in the receiving loop")
        await super()._receive(client)


async def test_a_hub_task_that_dies_is_restarted_logged_and_counted(
    broker: LocalBroker, publisher: mqtt.Client, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.model_validate({"mqtt_url": broker.url})
    caplog.set_level(logging.ERROR, logger="cityiot.api.stream")
    async with CrashingOnce(settings, None, connect_wait_s=5.0) as hub:
        await until(lambda: hub.restarts == 1, 10.0)
        await until(lambda: hub.connected, 10.0)
        assert hub.metrics()["restarts_total"] == 1
        async with hub.subscribe(lambda event: True) as subscription:
            event = alert_event("yicheng", "manhole", "mh-1")
            publish(publisher, "city/alerts/yicheng/manhole", event)
            async with asyncio.timeout(10.0):
                assert await anext(aiter(subscription)) == ("alert", event)
    (record,) = [r for r in caplog.records if "stream_hub_restarting" in r.getMessage()]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert "a bug in the receiving loop" in record.getMessage()


async def test_a_retained_reading_is_not_shown_as_live(tmp_path: Path) -> None:
    # A broker of its own: a retained message on the shared one would reach other tests.
    own = LocalBroker(tmp_path, port=free_port()).start()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"retainer-{time.monotonic_ns()}")
    try:
        client.connect(own.host, own.port)
        client.loop_start()
        topic = "city/acme/mh-1/telemetry"
        now_ms = int(time.time() * 1000)
        old = orjson.dumps({"ts": now_ms - 60_000, "metrics": {"tilt_deg": 1.0}})
        client.publish(topic, old, qos=1, retain=True).wait_for_publish(5)
        settings = Settings.model_validate({"mqtt_url": own.url})
        device = WatchedDevice("mh-1", "acme", "manhole")
        async with (
            StreamHub(settings, None, connect_wait_s=5.0) as hub,
            hub.subscribe(lambda event: True, device) as subscription,
        ):
            live = {"ts": now_ms, "metrics": {"tilt_deg": 2.0}}
            publish(client, topic, live)
            async with asyncio.timeout(10.0):
                name, data = await anext(aiter(subscription))
            assert name == "reading" and data["metrics"] == {"tilt_deg": 2.0}, data
    finally:
        client.disconnect()
        client.loop_stop()
        own.stop()


@pytest.mark.parametrize("how", ["api", "database"])
async def test_revoking_a_key_ends_its_open_streams(
    api: Api, publisher: mqtt.Client, how: str
) -> None:
    row, key = await create_key(
        api.sessions,
        "department",
        name="to be revoked",
        kinds=DEPARTMENT_KINDS,
        districts=DEPARTMENT_DISTRICTS,
    )
    client = api.client(key=key)
    async with client.stream("GET", "/api/v1/stream") as response:
        assert response.status_code == 200
        events = Events(response)
        assert (await events.next(10.0))[0] == "ready"
        if how == "api":
            r = await api.client("admin").delete(f"/api/v1/keys/{row.id}")
            assert r.status_code == 200, r.text
        else:  # what cityiot keys revoke does: the API process is not told
            await revoke_key(api.sessions, row.id, "cli", "admin")
        name, data = await events.next(30.0)
        assert name == "revoked" and "revoked" in data["reason"]
        publish(publisher, "city/alerts/yicheng/manhole", alert_event("yicheng", "manhole", "mh-1"))
        with pytest.raises(StopAsyncIteration):  # the stream ended: the alert never comes
            await events.next(30.0)
    assert (await client.get("/api/v1/stream")).status_code == 401
