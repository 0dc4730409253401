"""The bench's broker window and TLS section (bench/window.py): its drains carry the same
readings, the relay (bench/window_proxy.py) holds a strict window, and end to end on a tiny
configuration (five real Mosquittos — the default window, a window of 32, two behind the
relay, a TLS listener — and two NATS servers holding windows of 65,535 and 32, real
InfluxDB, one ingest on each, one round) every drain is stored whole, with
its figures and ratios printed. Never how fast."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bench.launch import stop_processes
from bench.window import (
    BROKERS,
    DEFAULT,
    NATS,
    NATS_SMALL,
    RELAY,
    SMALL,
    STRICT,
    STRICT_ONE,
    TLS,
    WindowLoad,
    start_relay,
)
from cityiot.platform.local_services import LocalBroker
from tests.bench import NO_SCALE

REPO = Path(__file__).resolve().parents[2]


def test_every_drain_carries_the_same_readings_later_in_event_time() -> None:
    load = WindowLoad.generate(devices=10, messages=100)
    first = load.backlog(1_763_856_000)
    second = load.backlog(1_763_856_000 + load.span_s)
    assert len(first) == len(second) == 100
    last_first = max(orjson.loads(m.payload)["ts"] for m in first)
    for a, b in zip(first, second, strict=True):
        one, two = orjson.loads(a.payload), orjson.loads(b.payload)
        assert a.topic == b.topic and one["metrics"] == two["metrics"]
        assert two["ts"] == one["ts"] + load.span_s * 1000 > last_first  # windows never overlap
        assert two["seq"] == one["seq"] + load.span_s
    # One point per device and second: nothing in a drain overwrites another.
    assert len({(m.topic, orjson.loads(m.payload)["ts"]) for m in first}) == 100
    assert len(load.warm_up(1_763_855_000)) == len(load.fleet) == 10 + 16


class ManualAcker:
    """A subscriber that acknowledges only when told, with a round trip through the relay
    (SUBSCRIBE → SUBACK) to know that everything sent before has arrived."""

    def __init__(self, host: str, port: int) -> None:
        self.received: list[mqtt.MQTTMessage] = []
        self._subacks = threading.Semaphore(0)
        self._arrived = threading.Condition()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"acker-{uuid.uuid4().hex[:8]}",
            clean_session=False, manual_ack=True,
        )  # fmt: skip
        client.on_message = self._on_message
        client.on_subscribe = lambda *_: self._subacks.release()
        client.connect(host, port)
        client.loop_start()
        self.client = client
        self.round_trip("t/#")

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with self._arrived:
            self.received.append(message)
            self._arrived.notify_all()

    def round_trip(self, topic: str = "sync/#") -> int:
        self.client.subscribe(topic, 1)
        assert self._subacks.acquire(timeout=10), "no SUBACK"
        return len(self.received)

    def wait_for(self, count: int) -> None:
        with self._arrived:
            assert self._arrived.wait_for(lambda: len(self.received) >= count, 10), count

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_the_relay_holds_a_strict_window_of_unacknowledged_deliveries(tmp_path: Path) -> None:
    with LocalBroker(tmp_path / "broker") as broker:
        relay, port = start_relay(broker, 4, tmp_path / "relay.log")
        acker = ManualAcker("127.0.0.1", port)
        publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="relay-test-pub")
        publisher.connect(broker.host, broker.port)
        publisher.loop_start()
        try:
            for i in range(20):
                publisher.publish("t/x", str(i).encode(), qos=1).wait_for_publish(5)
            acker.wait_for(4)
            assert acker.round_trip() == 4  # the broker sent on; the relay held the rest
            for n in range(1, 4):
                acker.client.ack(acker.received[n - 1].mid, 1)
                acker.wait_for(4 + n)
                assert acker.round_trip() == 4 + n  # one acknowledgement, one more
            for message in list(acker.received[3:]):
                acker.client.ack(message.mid, 1)
            acker.wait_for(11)
            assert acker.round_trip() == 11
            assert [int(m.payload) for m in acker.received] == list(range(11))  # in order
        finally:
            acker.close()
            publisher.disconnect()
            publisher.loop_stop()
            stop_processes([relay])


@pytest.mark.slow
def test_window_section_stores_every_drain_on_each_broker_and_prints_the_ratios(
    tmp_path: Path,
) -> None:
    out = tmp_path / "bench.json"
    argv = [
        sys.executable, "-m", "bench",
        "--systems", "none", "--skip-latency", "--state-devices", "0", *NO_SCALE, "--codec-messages", "0",
        "--links-messages", "0",
        "--window-devices", "20", "--window-messages", "300", "--window-rounds", "1",
        "--window-sessions", "2", "--map-devices", "0",
        "--timeout", "60", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["systems"] == [] and report["links"] is None and report["ok"]
    section = report["window"]
    assert section["ok"] and section["error"] is None and section["notes"] == []
    assert section["small_window"] == 32 and section["default_window"] > 32
    urls = section["urls"]
    assert urls[TLS].startswith("mqtts://localhost:")
    plain = (DEFAULT, SMALL, STRICT, STRICT_ONE, RELAY)
    assert all(urls[b].startswith("mqtt://127.0.0.1:") for b in plain)
    # The strict window's and the relay's ingests reach their brokers through the relay.
    assert len({urls[b] for b in BROKERS}) == len(BROKERS)
    order = [(d["broker"], d["round"]) for d in section["drains"]]
    assert order == [(b, 1) for b in BROKERS]
    for drain in section["drains"]:
        assert drain["ok"] and drain["sent"] == drain["stored"] == 300, drain
        assert drain["rate"] > 0 and drain["seconds"] > 0
        assert drain["end_by"] in ("sentinel", "count")
        assert drain["cpu_s"] is not None and drain["broker_cpu_s"] is not None
        relayed = drain["broker"] in (STRICT, STRICT_ONE, RELAY)
        assert (drain["relay_cpu_s"] is not None) == relayed
    rates = section["rates"]
    assert all(rates[b] > 0 for b in BROKERS)
    assert section["ratios"][DEFAULT] == 1.0
    for broker in (SMALL, STRICT, STRICT_ONE, RELAY, TLS):
        assert section["ratios"][broker] == round(rates[broker] / rates[DEFAULT], 3)
    assert section["strict_ratio"] == round(rates[STRICT] / rates[RELAY], 3)
    assert section["strict_one_ratio"] == round(rates[STRICT_ONE] / rates[RELAY], 3)
    assert section["sessions"] == 2 == report["settings"]["window_sessions"]
    assert section["nats_ratio"] == round(rates[NATS_SMALL] / rates[NATS], 3)
    assert section["goal"] == 0.8
    assert section["goal_met"] == (section["ratios"][SMALL] >= 0.8)
    assert section["strict_goal_met"] == (section["strict_ratio"] >= 0.8)
    assert report["settings"]["window_messages"] == 300
    assert "max_inflight_messages 32" in report["method"]["window"]

    printed = " ".join(done.stdout.split())  # rich wraps lines
    assert "broker window and TLS: one ingest per broker, QoS 1" in printed
    assert "Mosquitto 32 ×2" in printed and "strict 32 ×2" in printed
    assert "strict 32 ×1" in printed
    assert "relay" in printed and "mqtts://" in printed and "NATS 32" in printed
    assert "× default window" in printed and "CPU s relay" in printed
    assert "Mosquitto window 32, 2 sessions:" in printed and "(goal ≥ 0.80)" in printed
    assert "strict window 32, 2 sessions:" in printed
    assert "× the relay's rate without a window" in printed
    assert "strict window 32, 1 session:" in printed
    assert "mqtts://:" in printed and "× plain MQTT's rate" in printed
    assert "NATS window 32:" in printed and "× the same NATS's rate" in printed


def test_a_window_section_too_small_is_refused() -> None:
    argv = [sys.executable, "-m", "bench", "--window-messages", "10"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "--window-messages must be 0 (skip the window section) or at least 32" in done.stderr


@pytest.mark.parametrize("brokers", ["relay,strict-32", "default,emqx"])
def test_window_brokers_without_the_default_or_unknown_are_refused(brokers: str) -> None:
    argv = [sys.executable, "-m", "bench", "--window-brokers", brokers]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    said = " ".join(done.stderr.split())
    assert "--window-brokers: a comma list of default,window-32,strict-32" in said
    assert "with default in it" in said and f"not {brokers}" in said
