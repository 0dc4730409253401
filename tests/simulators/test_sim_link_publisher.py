"""The simulated networks on the wire: the ChirpStack's events through a real Mosquitto's
side listener (its own account, ``application/#`` only) to a platform account on the main
listener; CTWing's and OneNET's pushes as HTTP requests to a real HTTP server that answers
as the platform's intake does — 503 with Retry-After while it cannot store, then 200."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
import paho.mqtt.client as mqtt
import pytest
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion

from cityiot.platform.local_services import LocalBroker, SideListener, free_port
from cityiot.simulators import (
    LINK_VENDORS,
    ChirpStackTarget,
    Fleet,
    IntakeTarget,
    SimulationCounters,
    run_simulation,
)
from cityiot.storage.broker_access import mosquitto_hash
from tests.waiting import until

TOKENS = {
    "ct-nb-frame": "CtFrameToken000000000000000000A1",
    "ct-nb-model": "CtModelToken000000000000000000B2",
    "cm-nb-onenet": "OneNetToken0000000000000000000C3",
}
BUSY_ANSWERS = 3  # the intake's first answers: 503, as while InfluxDB and the spool refuse


class Intake:
    """An HTTP server that checks each push as the platform's intake does (the token for
    CTWing, the signature for OneNET) and records what it took."""

    def __init__(self) -> None:
        self.taken: list[tuple[str, Any]] = []
        self.refused: list[str] = []
        self.busy_left = BUSY_ANSWERS
        self.port = free_port()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        status, headers = self.answer(scope["path"], parse_qs(scope["query_string"].decode()), body)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    def answer(self, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, list[Any]]:
        _, _, _, _, link, vendor = path.split("/")
        if self.busy_left > 0:
            self.busy_left -= 1
            return 503, [(b"retry-after", b"0")]
        if link == "ctwing":
            if query.get("token") != [TOKENS[vendor]]:
                self.refused.append(path)
                return 401, []
            self.taken.append((vendor, orjson.loads(body)))
            return 200, []
        push = orjson.loads(body)
        signed = (TOKENS[vendor] + push["nonce"] + push["msg"]).encode()
        expected = base64.b64encode(hashlib.md5(signed, usedforsecurity=False).digest())
        if push["msg_signature"].encode() != expected:
            self.refused.append(path)
            return 401, []
        self.taken.append((vendor, orjson.loads(push["msg"])))
        return 200, []


@pytest.fixture
async def intake() -> AsyncIterator[Intake]:
    app = Intake()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=app.port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started, 10, "the intake server started")
    yield app
    server.should_exit = True
    await task


@pytest.fixture
def network_broker(tmp_path: Path) -> Any:
    """A broker as `cityiot run` starts it: the platform's account on the main listener, the
    simulated ChirpStack's on the side listener."""
    files = tmp_path / "access"
    files.mkdir()
    (files / "passwd").write_text(f"cityiot:{mosquitto_hash('platform-pw')}\n")
    (files / "acl").write_text("user cityiot\ntopic readwrite #\n")
    (files / "cs.passwd").write_text(f"chirpstack-sim:{mosquitto_hash('cs-pw')}\n")
    (files / "cs.acl").write_text("user chirpstack-sim\ntopic readwrite application/#\n")
    broker = LocalBroker(
        tmp_path,
        password_file=files / "passwd",
        acl_file=files / "acl",
        side_listener=SideListener(files / "cs.passwd", files / "cs.acl"),
    )
    with broker:
        yield broker


def _listen(port: int, topic_filter: str) -> tuple[mqtt.Client, list[mqtt.MQTTMessage]]:
    got: list[mqtt.MQTTMessage] = []
    ready = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cityiot-test-listener")
    client.username_pw_set("cityiot", "platform-pw")
    client.on_connect = lambda c, u, f, reason, p: c.subscribe(topic_filter, 1)
    client.on_subscribe = lambda *args: ready.set()
    client.on_message = lambda c, u, message: got.append(message)
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert ready.wait(10), "the listener did not subscribe"
    return client, got


async def test_every_network_message_arrives_once_through_its_link(
    network_broker: LocalBroker, intake: Intake
) -> None:
    fleet = Fleet.generate(40, seed=2, vendors=LINK_VENDORS)
    listener, got = _listen(network_broker.port, "#")
    counters = SimulationCounters()
    try:
        await run_simulation(
            "127.0.0.1",
            network_broker.port,  # no MQTT vendor in this fleet: nothing connects here
            fleet,
            rate=200.0,
            seed=2,
            duration_s=1.0,
            chirpstack=ChirpStackTarget(
                "127.0.0.1", network_broker.side_port, "chirpstack-sim", "cs-pw"
            ),
            intake=IntakeTarget(f"http://127.0.0.1:{intake.port}", TOKENS),
            counters=counters,
        )
        lora = [d for d in fleet if d.link == "chirpstack"]
        pushed = [d for d in fleet if d.link in ("ctwing", "onenet")]
        # ChirpStack's events, published on the side listener, reach the platform's account.
        expected_events = counters.by_link["chirpstack"] + len(lora)  # uplinks + status
        await until(lambda: len(got) >= expected_events, 10, "every ChirpStack event")
    finally:
        listener.disconnect()
        listener.loop_stop()
    assert counters.failed == 0 and counters.refused == 0, counters.as_dict()
    assert {m.topic.split("/")[-1] for m in got} == {"up", "status"}
    assert all(m.topic.startswith("application/") for m in got)
    ids = [orjson.loads(m.payload)["deduplicationId"] for m in got]
    assert len(ids) == len(set(ids)) == expected_events  # once each
    # Every push was taken exactly once, after the busy answers were waited out.
    assert counters.retries == BUSY_ANSWERS
    assert intake.refused == []
    assert len(intake.taken) == counters.by_link["ctwing"] + counters.by_link["onenet"] + len(
        pushed
    )
    taken = Counter(vendor for vendor, _ in intake.taken)
    sent = Counter(d.vendor for d in pushed)
    assert set(taken) == set(sent)
    for vendor, messages in ((v, [m for w, m in intake.taken if w == v]) for v in taken):
        if vendor.startswith("ct-"):
            sns = [(m["IMEI"], m.get("upPacketSN")) for m in messages]
            assert len(sns) == len(set(sns))  # no CTWing message taken twice
    assert counters.acknowledged == counters.published + counters.status


async def test_the_side_listener_keeps_the_chirpstack_account_to_its_topics(
    network_broker: LocalBroker,
) -> None:
    def connack(port: int, user: str, password: str, client_id: str) -> Any:
        answers: list[Any] = []
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        client.username_pw_set(user, password)
        client.on_connect = lambda c, u, f, reason, p: answers.append(reason)
        client.connect("127.0.0.1", port)
        for _ in range(100):
            client.loop(0.05)
            if answers:
                break
        client.disconnect()
        return answers[0]

    side, main = network_broker.side_port, network_broker.port
    assert not connack(side, "chirpstack-sim", "cs-pw", "chirpstack-1").is_failure
    # Not on the platform's listener, and not with the platform's client ids.
    assert connack(main, "chirpstack-sim", "cs-pw", "chirpstack-2").is_failure
    assert connack(side, "chirpstack-sim", "cs-pw", "cityiot-ingest").is_failure
    # Its ACL: application/# reaches the platform; telemetry topics do not.
    listener, got = _listen(main, "#")
    try:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="chirpstack-3")
        client.username_pw_set("chirpstack-sim", "cs-pw")
        client.connect("127.0.0.1", side)
        client.loop_start()
        for topic in ("city/acme/d1/telemetry", "application/x/device/y/event/up"):
            client.publish(topic, b"{}", qos=1).wait_for_publish(10)
        await until(lambda: len(got) >= 1, 10, "the application/ message")
        client.disconnect()
        client.loop_stop()
    finally:
        listener.disconnect()
        listener.loop_stop()
    assert [m.topic for m in got] == ["application/x/device/y/event/up"]
