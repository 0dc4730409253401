"""The ingest's MQTT link (ingest/broker.py): its packet parser on byte streams cut anywhere,
and on the real Mosquitto a persistent session's backlog, acks, and our QoS 1 publishes."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityiot.api.metrics import counters_source
from cityiot.domain.settings import MqttTarget
from cityiot.ingest.broker import BrokerLink, Delivery, _packet, _Session, _string
from cityiot.platform.local_services import LocalBroker
from tests.waiting import until


def publish_packet(topic: str, payload: bytes, qos: int, mid: int = 0, dup: bool = False) -> bytes:
    first = 0x30 | (0x08 if dup else 0) | (qos << 1)
    body = _string(topic) + (mid.to_bytes(2, "big") if qos else b"") + payload
    return _packet(first, body)


STREAM = [
    ("city/acme/mh-1/telemetry", b'{"metrics":{"tilt_deg":2.5}}', 1, 7, False),
    ("city/acme/mh-2/status", b'{"online":true}', 0, 0, False),
    ("city/acme/mh-1/telemetry", b"x" * 20_000, 1, 8, True),  # 3-byte remaining length
    ("city/acme/\u4e95\u76d6-3/telemetry", b"", 1, 65535, False),  # empty payload, UTF-8 topic
    ("city/acme/wt-1/telemetry", b"y" * 200_000, 1, 1, False),
]


async def test_the_parser_gives_the_same_deliveries_however_the_stream_is_cut() -> None:
    data = b"".join(publish_packet(*p) for p in STREAM) + b"\xd0\x00"  # and a PINGRESP
    expected = [Delivery(t, p, m, q, 0) for t, p, q, m, _ in STREAM]
    for size in (1, 2, 3, 7, 1000, len(data)):
        link = BrokerLink(MqttTarget("mqtt://127.0.0.1:1"), "parser", ["city/#"])
        session = _Session(link)
        session.ping_sent = 1.0
        for start in range(0, len(data), size):
            session.data_received(data[start : start + size])
        assert link._pending == expected, size
        assert session.rest == b"" and session.ping_sent is None
        assert link.stats.received == len(STREAM) and link.stats.redelivered == 1


async def test_a_malformed_stream_closes_the_connection_with_a_reason() -> None:
    link = BrokerLink(MqttTarget("mqtt://127.0.0.1:1"), "parser", ["city/#"])
    session = _Session(link)
    session.data_received(b"\x30\xff\xff\xff\xff\x01")  # a 5-byte remaining length
    assert "malformed remaining length" in session.error
    session = _Session(link)
    session.data_received(b"\xf0\x00")  # AUTH: not MQTT 3.1.1
    assert "unexpected MQTT packet type 15" in session.error


async def turns_until_done(task: asyncio.Task[Any], limit: int = 20) -> int:
    """How many turns of the event loop ``task`` takes to finish from here."""
    for turn in range(1, limit + 1):
        await asyncio.sleep(0)
        if task.done():
            return turn
    raise AssertionError(f"still waiting after {limit} turns of the loop")


async def test_a_waiting_intake_gets_what_arrives_in_the_loops_next_turn() -> None:
    """next_batch with a timeout wakes one turn after a message is parsed: each turn of a
    busy loop is milliseconds that every alert would wait (asyncio.wait_for took three)."""
    link = BrokerLink(MqttTarget("mqtt://127.0.0.1:1"), "parser", ["city/#"])
    session = _Session(link)
    waiting = asyncio.create_task(link.next_batch(timeout_s=5.0))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not waiting.done()
    session.data_received(publish_packet(*STREAM[0]))
    assert await turns_until_done(waiting) == 1
    assert [d.topic for d in waiting.result()] == [STREAM[0][0]]
    started = time.monotonic()
    assert await link.next_batch(timeout_s=0.05) == []  # the timeout still ends the wait
    assert time.monotonic() - started >= 0.04


async def test_a_persistent_sessions_backlog_is_delivered_and_acked_on_reconnect(
    broker: LocalBroker,
) -> None:
    """Messages queued while the ingest was away arrive in the very read after CONNACK:
    they must belong to the new connection, so that their acks are sent (not skipped as
    stale) and the broker does not deliver them a third time."""
    target = MqttTarget(broker.url)
    topic = f"city/acme/backlog-{time.time_ns()}/telemetry"
    client_id = f"link-test-{time.time_ns()}"
    async with BrokerLink(target, client_id, [topic]):
        pass  # the session and its subscription now exist at the broker
    sender = mqtt.Client(CallbackAPIVersion.VERSION2)
    sender.connect(broker.host, broker.port)
    sender.loop_start()
    try:
        infos = [sender.publish(topic, f"{i}".encode(), qos=1) for i in range(500)]
        for info in infos:
            info.wait_for_publish(5)
    finally:
        sender.disconnect()
        sender.loop_stop()

    got: list[Delivery] = []
    async with BrokerLink(target, client_id, [topic]) as link:
        deadline = time.monotonic() + 10
        while len(got) < 500 and time.monotonic() < deadline:
            got += await link.next_batch(0.5)
        link.ack(got)
        assert link.stats.acked == 500 and link.stats.stale_acks == 0
        await asyncio.sleep(0.3)  # the acks reach the broker before the link closes
    assert sorted(int(d.payload) for d in got) == list(range(500))

    async with BrokerLink(target, client_id, [topic]) as again:
        assert await again.next_batch(1.0) == []  # nothing redelivered: all were acked


async def test_our_qos1_publishes_reach_a_subscriber(broker: LocalBroker) -> None:
    topic = f"city/alerts/yicheng/manhole-{time.time_ns()}"
    seen: list[bytes] = []
    lock = threading.Lock()

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with lock:
            seen.append(msg.payload)

    listener = mqtt.Client(CallbackAPIVersion.VERSION2)
    listener.on_message = on_message
    listener.connect(broker.host, broker.port)
    listener.subscribe(topic, qos=1)
    listener.loop_start()
    try:
        await asyncio.sleep(0.3)
        async with BrokerLink(MqttTarget(broker.url), f"pub-{time.time_ns()}", []) as link:
            for i in range(300):
                link.publish(topic, f"event-{i}".encode())
            await until(lambda: not link._outgoing, 5)  # every one acknowledged
        await until(lambda: len(seen) >= 300, 5)
    finally:
        listener.disconnect()
        listener.loop_stop()
    assert seen == [f"event-{i}".encode() for i in range(300)]


async def test_a_refused_login_says_why(broker: LocalBroker) -> None:
    """The session broker allows anonymous clients; a wrong client id length is refused."""
    link = BrokerLink(MqttTarget(broker.url), "", ["city/#"], clean_session=False)
    with pytest.raises(ConnectionError, match="cannot connect to the MQTT broker"):
        await link.connect(timeout_s=5)  # retried until then: room for the first refusal
    assert "identifier rejected" in link.stats.last_error


def take_over(broker: LocalBroker, client_id: str) -> None:
    """Connect with ``client_id`` and a clean session (what a takeover does), then leave."""
    other = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    answered = threading.Event()
    other.on_connect = lambda *a: answered.set()
    other.connect(broker.host, broker.port)
    other.loop_start()
    try:
        assert answered.wait(5), "no CONNACK"
    finally:
        other.disconnect()
        other.loop_stop()


async def test_a_lost_session_is_logged_and_counted(
    broker: LocalBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Another client with our id and a clean session wipes our persistent session: on its
    reconnect the link sees session_present 0, says so at ERROR and counts it (/metrics)."""
    client_id = f"link-lost-{time.time_ns()}"
    async with BrokerLink(MqttTarget(broker.url), client_id, ["city/#"]) as link:
        assert link.stats.sessions_lost == 0  # a first connect has no session to lose
        await asyncio.to_thread(take_over, broker, client_id)
        await until(lambda: link.stats.connects >= 2 and link.connected, 15)
        assert link.stats.disconnects == 1 and link.stats.sessions_lost == 1
        assert counters_source(link.stats)()["sessions_lost_total"] == 1
    lines = [r for r in caplog.records if "event=mqtt_session_lost" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelname == "ERROR"
    assert f"client_id={client_id}" in lines[0].getMessage()
    assert "another client connected with this client id" in lines[0].getMessage()


async def test_a_kept_session_is_not_reported_lost(broker: LocalBroker) -> None:
    """A reconnect that finds its session (broker restarted with its persistence) is fine."""
    client_id = f"link-kept-{time.time_ns()}"
    async with BrokerLink(MqttTarget(broker.url), client_id, ["city/#"]) as link:
        assert link._session is not None and link._session.transport is not None
        link._session.abort("test: connection cut")  # the broker keeps the session
        await until(lambda: link.stats.connects >= 2 and link.connected, 15)
        assert link.stats.disconnects == 1 and link.stats.sessions_lost == 0
