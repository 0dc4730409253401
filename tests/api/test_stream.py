"""The live SSE stream: alert events pushed from the broker as they come, filtered by the
key's grant; a device's decoded readings; an ack travelling API → broker → stream; a slow
client dropped; the hub's own events kept while the broker is down and sent on reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cityiot.api.stream import QUEUE_SIZE, StreamHub, Subscription
from cityiot.domain.settings import Settings
from cityiot.ingest.codecs.hexframe import encode
from cityiot.platform.local_services import LocalBroker, free_port
from tests.api.conftest import Api
from tests.api.test_alerts import CONTRACT_KEYS, raise_alert
from tests.waiting import until


def alert_event(district: str, kind: str, device_id: str, vendor: str = "acme") -> dict[str, Any]:
    """An alert event as the rules engine publishes it."""
    return {
        "id": f"evt-{device_id}-{time.monotonic_ns()}",
        "rule": "test_rule",
        "device_id": device_id,
        "kind": kind,
        "district": district,
        "vendor": vendor,
        "severity": "major",
        "state": "firing",
        "started_at": "2026-11-23T10:00:00+08:00",
        "resolved_at": None,
        "values": {"tilt_deg": 31.0},
        "summary": "测试 / test",
    }


def publish(client: mqtt.Client, topic: str, payload: Any) -> None:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    client.publish(topic, data, qos=1).wait_for_publish(5)


class Events:
    """Server-sent events read off a streaming response."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()

    async def next(self, timeout_s: float = 10.0) -> tuple[str, dict[str, Any]]:
        """The next event; ``timeout_s`` is a safety net for one that never comes."""
        name = "message"
        data: list[str] = []
        async with asyncio.timeout(timeout_s):
            while True:
                line = await anext(self.lines)
                if line == "":
                    if data:
                        return name, orjson.loads("\n".join(data))
                    name = "message"
                elif not line.startswith(":"):  # ":" starts a comment (the heartbeat)
                    field, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if field == "event":
                        name = value
                    elif field == "data":
                        data.append(value)


@contextlib.asynccontextmanager
async def stream(api: Api, role: str, **params: Any) -> AsyncIterator[Events]:
    """An open stream, past its ``ready`` event."""
    client = api.client(role)
    async with client.stream("GET", "/api/v1/stream", params=params) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        events = Events(response)
        name, ready = await events.next()
        assert name == "ready" and ready["connected"] is True
        yield events


async def test_an_alert_published_on_the_broker_reaches_the_stream_as_its_next_event(
    api: Api, publisher: mqtt.Client
) -> None:
    # The hub pushes each message on as it comes (no polling); how fast is the benchmark's.
    async with stream(api, "admin") as events:
        event = alert_event("yicheng", "manhole", "mh-1")
        publish(publisher, "city/alerts/yicheng/manhole", event)
        name, data = await events.next()
    assert name == "alert" and data == event


async def test_a_department_stream_carries_only_its_granted_kinds_and_districts(
    api: Api, publisher: mqtt.Client
) -> None:
    async with stream(api, "department") as department, stream(api, "field") as field:
        outside = alert_event("xiping", "streetlight", "sl-2", vendor="oldco")
        wrong_kind = alert_event("yicheng", "streetlight", "sl-9")
        inside = alert_event("yicheng", "manhole", "mh-1")
        publish(publisher, "city/alerts/xiping/streetlight", outside)
        publish(publisher, "city/alerts/yicheng/streetlight", wrong_kind)
        publish(publisher, "city/alerts/yicheng/manhole", inside)
        # The field key sees all three, in order; the department only the last.
        assert [(await field.next())[1]["id"] for _ in range(3)] == [
            outside["id"], wrong_kind["id"], inside["id"],
        ]  # fmt: skip
        name, data = await department.next()
        assert name == "alert" and data["id"] == inside["id"]


async def test_a_vendor_stream_carries_only_its_own_devices_alerts(
    api: Api, publisher: mqtt.Client
) -> None:
    async with stream(api, "vendor") as events:
        publish(
            publisher,
            "city/alerts/xiping/manhole",
            alert_event("xiping", "manhole", "mh-2", "oldco"),
        )
        mine = alert_event("yicheng", "manhole", "mh-1", "acme")
        publish(publisher, "city/alerts/yicheng/manhole", mine)
        assert (await events.next())[1]["id"] == mine["id"]


async def test_a_device_stream_carries_its_decoded_readings(
    api: Api, publisher: mqtt.Client
) -> None:
    now_ms = int(time.time() * 1000)
    async with stream(api, "department", device_id="mh-1") as events:
        publish(publisher, "city/acme/mh-1/telemetry", {"ts": now_ms, "metrics": {"tilt_deg": 7}})
        name, data = await events.next()
        assert name == "reading"
        assert data["device_id"] == "mh-1" and data["ts_ms"] == now_ms
        assert data["metrics"] == {"tilt_deg": 7.0} and data["ts"].endswith("+08:00")
        # Invalid readings (the ingest dead-letters them) and other devices are not shown.
        publish(publisher, "city/acme/mh-1/telemetry", {"metrics": {"tilt_deg": "seven"}})
        publish(publisher, "city/acme/pk-1/telemetry", {"metrics": {"occupied": True}})
        publish(publisher, "city/acme/mh-1/telemetry", {"metrics": {"cover_open": True}})
        name, data = await events.next()
        assert name == "reading" and data["metrics"] == {"cover_open": True}
    # A vendor with a legacy codec: the frame is decoded like the ingest does.
    async with stream(api, "admin", device_id="mh-2") as events:
        frame = encode("manhole", {"tilt_deg": 2.5, "cover_open": False}, now_ms, seq=1)
        publish(publisher, "city/oldco/mh-2/telemetry", frame)
        name, data = await events.next()
        assert name == "reading" and data["metrics"] == {"tilt_deg": 2.5, "cover_open": False}
    # Closed streams leave nothing behind: no subscriber, no device topic subscribed.
    hub = api.server.app.state.ctx.hub
    await until(lambda: not hub.subscriptions and not hub._watched, 5.0)


async def test_a_device_stream_outside_the_grant_is_404_like_an_unknown_one(api: Api) -> None:
    department = api.client("department")
    r = await department.get("/api/v1/stream", params={"device_id": "sl-2"})
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem")
    gone = await department.get("/api/v1/stream", params={"device_id": "nope"})
    assert r.json()["detail"].replace("sl-2", "ID") == gone.json()["detail"].replace("nope", "ID")
    r = await api.client("vendor").get("/api/v1/stream", params={"device_id": "mh-2"})
    assert r.status_code == 404
    r = await api.client("admin").get("/api/v1/stream", params={"device_id": "nope"})
    assert r.status_code == 404
    r = await api.client("admin").get("/api/v1/stream", params={"device_id": "no/such"})
    assert r.status_code == 422
    assert (await api.client(None).get("/api/v1/stream")).status_code == 401


async def test_an_ack_through_the_api_reaches_the_stream(api: Api) -> None:
    alert = await raise_alert(api, "mh-1")
    async with stream(api, "department") as events:
        r = await api.client("field").post(f"/api/v1/alerts/{alert.id}/ack")
        assert r.status_code == 200
        name, data = await events.next()
    assert name == "alert" and set(data) == CONTRACT_KEYS
    assert data["id"] == alert.id and data["state"] == "acknowledged"


async def test_a_client_that_falls_behind_is_dropped_not_buffered() -> None:
    subscription = Subscription(lambda event: True)
    for i in range(QUEUE_SIZE):
        assert subscription.offer("alert", {"n": i})
    assert not subscription.offer("alert", {"n": QUEUE_SIZE})
    assert not subscription.offer("alert", {"n": QUEUE_SIZE + 1})  # stays dropped
    received = [item async for item in subscription]
    assert received == [
        ("dropped", {"reason": f"the client fell {QUEUE_SIZE} events behind; reconnect"})
    ]


async def test_the_hubs_events_wait_for_the_broker_and_go_out_on_reconnect(tmp_path: Path) -> None:
    own = LocalBroker(tmp_path, port=free_port()).start()
    watcher_id = f"watcher-{time.monotonic_ns()}"

    def watcher() -> tuple[mqtt.Client, list[bytes]]:
        received: list[bytes] = []
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=watcher_id, clean_session=False)
        client.on_message = lambda _c, _u, msg: received.append(bytes(msg.payload))
        client.connect(own.host, own.port)
        client.subscribe("city/alerts/#", qos=1)
        client.loop_start()
        return client, received

    try:
        # A persistent watcher session, so what the hub sends while it is away is kept for it.
        client, _ = watcher()
        await asyncio.sleep(0.3)
        client.disconnect()
        client.loop_stop()
        own.stop()
        settings = Settings.model_validate({"mqtt_url": own.url})
        async with StreamHub(settings, None, connect_wait_s=0.2) as hub:
            assert not hub.connected
            payload = orjson.dumps(alert_event("yicheng", "manhole", "mh-1"))
            hub.publish("city/alerts/yicheng/manhole", payload)
            await asyncio.sleep(0.3)
            assert list(hub.outbox) == [("city/alerts/yicheng/manhole", payload)]
            own.start()  # the same port and data
            await until(lambda: hub.connected and not hub.outbox, 10.0)
        client, received = watcher()
        try:
            await until(lambda: received == [payload], 5.0)
        finally:
            client.disconnect()
            client.loop_stop()
    finally:
        own.stop()
