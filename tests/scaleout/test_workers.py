"""Three ``cityiot ingest --rules`` workers sharing one subscription on a real Mosquitto and
InfluxDB: every reading stored exactly once, nothing lost when a worker is SIGKILLed, and a
device's rule state in one worker only (docs/design.md §9)."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cityiot.ingest.partition import owner, rules_topic, shared_topics
from cityiot.ingest.pipeline import TOPICS
from cityiot.ingest.relay import relay_topic
from cityiot.platform.local_services import LocalBroker
from cityiot.storage.broker_access import mosquitto_hash, render_acl, render_password_file
from tests.scaleout.conftest import (
    FLEETS,
    KINDS,
    RULE_DEVICE,
    RULE_DEVICE_OWNER,
    RULE_ID,
    WORKERS,
    AlertWatcher,
    Cluster,
    Publisher,
)
from tests.waiting import wait_for


def origin_ms() -> int:
    return (int(time.time()) - 3600) * 1000


def expected(prefix: str, rounds: int) -> dict[str, int]:
    counts = dict.fromkeys(KINDS, 0)
    for _, kind in FLEETS[prefix]:
        counts[kind] += rounds
    return counts


def delta(after: list[float], before: list[float]) -> list[int]:
    return [int(a - b) for a, b in zip(after, before, strict=True)]


def test_three_workers_store_every_reading_exactly_once(cluster: Cluster) -> None:
    """3,000 QoS 1 readings of 300 devices: InfluxDB holds exactly 3,000 points, the
    workers' stored counters add up to 3,000 and each worker stored a share."""
    stored_before = cluster.counter("ingest_stored")
    forwarded_before = cluster.counter("partition_forwarded")
    received_before = cluster.counter("partition_received")
    publisher = Publisher(cluster.broker)
    origin = origin_ms()
    order = list(enumerate(FLEETS["so1"]))
    shuffle = random.Random(7).shuffle  # a new order each round: a device meets every worker
    try:
        for round_ in range(10):
            shuffle(order)
            for i, (device_id, kind) in order:
                publisher.reading(device_id, kind, origin + round_ * 1000 + i)
        publisher.wait_acked()
    finally:
        publisher.close()
    assert publisher.sent == 3000
    want = expected("so1", 10)
    wait_for(
        lambda: cluster.count("so1") == want,
        30,
        f"InfluxDB holding {want}",
        lambda: f"holds {cluster.count('so1')}\n{cluster.logs()}",
    )
    wait_for(
        lambda: sum(delta(cluster.counter("ingest_stored"), stored_before)) >= 3000,
        10,
        "the workers' stored counters reaching 3,000",
    )
    time.sleep(1.0)  # anything stored twice would show by now
    stored = delta(cluster.counter("ingest_stored"), stored_before)
    assert cluster.count("so1") == want
    assert sum(stored) == 3000, f"stored per worker {stored}: a reading was stored twice"
    assert all(n > 0 for n in stored), f"the share did not spread: stored per worker {stored}"
    # Readings of another worker's devices went to it, in batches, and all arrived.
    forwarded = delta(cluster.counter("partition_forwarded"), forwarded_before)
    wait_for(
        lambda: (
            sum(delta(cluster.counter("partition_received"), received_before)) == sum(forwarded)
        ),
        10,
        "every forwarded reading received by its owner",
    )
    assert 1500 < sum(forwarded) < 2500, f"forwarded per worker {forwarded}: expected ~2/3"
    # Presence lives with the owner: one "came online" point per device, not one per worker.
    wait_for(lambda: cluster.status_points("so1") >= 300, 10, "300 device_status points")
    time.sleep(1.2)
    assert cluster.status_points("so1") == 300


def publish_steadily(
    cluster: Cluster,
    prefix: str,
    rounds: int,
    at: int,
    action: Callable[[], None],
    *,
    during: int = 600,
    rate: float = 600.0,
) -> None:
    """Publish ``rounds`` readings of every device of ``prefix`` at ``rate`` per second and
    run ``action`` once ``at`` are published: ``during`` more are published while it runs,
    the rest after it has returned. Returns when the broker acknowledged every reading."""
    publisher = Publisher(cluster.broker)
    origin = origin_ms()
    messages = [
        (device_id, kind, origin + round_ * 1000 + i)
        for round_ in range(rounds)
        for i, (device_id, kind) in enumerate(FLEETS[prefix])
    ]
    assert at + during < len(messages)
    reached, acted, done = threading.Event(), threading.Event(), threading.Event()

    def publish() -> None:
        started = time.monotonic()
        for n, message in enumerate(messages):
            if n == at:
                reached.set()
            if n == at + during:
                acted.wait(60)
                started = time.monotonic() - n / rate
            while n > (time.monotonic() - started) * rate:
                time.sleep(0.002)
            publisher.reading(*message)
        done.set()

    thread = threading.Thread(target=publish, name="so-publisher", daemon=True)
    try:
        thread.start()
        assert reached.wait(20), "publishing stalled"
        action()
        acted.set()
        assert done.wait(30), "publishing stalled"
        publisher.wait_acked()
    finally:
        acted.set()
        thread.join(10)
        publisher.close()


def assert_stored_exactly(cluster: Cluster, prefix: str, rounds: int) -> None:
    want = expected(prefix, rounds)
    wait_for(
        lambda: cluster.count(prefix) == want,
        40,
        f"InfluxDB holding {want}",
        lambda: f"holds {cluster.count(prefix)}\n{cluster.logs()}",
    )
    time.sleep(1.0)
    assert cluster.count(prefix) == want, "more points than readings: one was stored twice"


def test_a_worker_killed_mid_stream_loses_nothing(cluster: Cluster) -> None:
    """SIGKILL one of three workers while 3,000 readings arrive, start it again: InfluxDB
    holds every reading exactly once (its unacked and queued share is redelivered)."""
    victim = 1

    def crash_and_restart() -> None:
        cluster.kill(victim)
        time.sleep(0.3)
        cluster.start(victim)

    # 900 readings, then 600 while it is down or starting, then the other 1,500.
    publish_steadily(cluster, "so2", 20, 900, crash_and_restart)
    assert_stored_exactly(cluster, "so2", 20)
    assert cluster.counter("ingest_stored")[victim] > 0, "the restarted worker stored nothing"


def test_a_worker_stops_cleanly_while_the_others_forward_to_it(cluster: Cluster) -> None:
    """SIGTERM one worker while readings of its devices keep arriving from the other two:
    it drains and exits at once (what is forwarded later waits in its session), and once
    it is back InfluxDB holds every reading exactly once."""
    victim = 2
    exits: list[int] = []

    def stop_and_restart() -> None:
        exits.append(cluster.terminate(victim, timeout_s=10))
        cluster.start(victim)

    publish_steadily(cluster, "so4", 20, 600, stop_and_restart)
    assert exits == [0], f"exit code {exits}:\n{cluster.log(victim)[-3000:]}"
    assert_stored_exactly(cluster, "so4", 20)


def test_a_for_rule_fires_once_in_the_owning_worker(cluster: Cluster) -> None:
    """One device's readings spread over the three workers: its `for: 2s` rule fires exactly
    once (one pending and one firing event, one open alert), and in its owner."""
    assert owner(RULE_DEVICE, WORKERS) == RULE_DEVICE_OWNER
    watcher = AlertWatcher(cluster.broker)
    publisher = Publisher(cluster.broker)
    events_before = cluster.counter("rules_events")
    received_before = cluster.counter("partition_received")
    readings_before = cluster.counter("rules_readings")
    origin = origin_ms()
    try:
        time.sleep(0.3)  # the watcher's SUBACK
        for i in range(12):  # 11 s of deep water, one message each: round-robin to all three
            publisher.reading(RULE_DEVICE, "manhole", origin + i * 1000, water_level_cm=150.0)
        publisher.wait_acked()
        mine = lambda: [e for e in watcher.events if e["device_id"] == RULE_DEVICE]  # noqa: E731
        wait_for(
            lambda: any(e["state"] == "firing" for e in mine()),
            20,
            "the firing event",
            lambda: f"events {mine()}\n{cluster.logs()}",
        )
        wait_for(
            lambda: sum(delta(cluster.counter("rules_readings"), readings_before)) >= 12,
            10,
            "every reading evaluated",
        )
        time.sleep(1.0)  # a second firing would show by now
        events = mine()
    finally:
        publisher.close()
        watcher.close()
    assert [e["state"] for e in events] == ["pending", "firing"], events
    assert len({e["id"] for e in events}) == 1
    assert all(e["rule"] == RULE_ID for e in events)
    with sqlite3.connect(Path(cluster.database_url.split("///", 1)[1])) as db:
        rows = db.execute(
            "SELECT rule, state FROM alerts WHERE device_id = ? AND open_key IS NOT NULL",
            (RULE_DEVICE,),
        ).fetchall()
    assert rows == [(RULE_ID, "firing")]
    # All twelve readings were evaluated by the owner, most of them forwarded to it.
    evaluated = delta(cluster.counter("rules_readings"), readings_before)
    assert evaluated == [12 if k == RULE_DEVICE_OWNER else 0 for k in range(WORKERS)], evaluated
    events_by_worker = delta(cluster.counter("rules_events"), events_before)
    assert events_by_worker == [2 if k == RULE_DEVICE_OWNER else 0 for k in range(WORKERS)]
    received = delta(cluster.counter("partition_received"), received_before)
    assert received[RULE_DEVICE_OWNER] > 0, f"nothing forwarded to the owner: {received}"


def test_the_platform_account_may_share_and_forward(tmp_path: Path) -> None:
    """The broker ACL the platform writes lets its own account subscribe to the shared
    telemetry and relay topics and use the internal ``cityiot/rules/{k}`` topics."""
    (tmp_path / "passwd").write_text(render_password_file([("cityiot", mosquitto_hash("pw"))]))
    (tmp_path / "acl").write_text(render_acl(["cityiot"], []))
    broker = LocalBroker(
        tmp_path / "broker", password_file=tmp_path / "passwd", acl_file=tmp_path / "acl"
    ).start()
    received: list[str] = []
    granted: list[int] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="acl-worker")
    client.username_pw_set("cityiot", "pw")
    client.on_message = lambda _c, _u, m: received.append(m.topic)
    client.on_subscribe = lambda _c, _u, _m, codes, _p: granted.extend(c.value for c in codes)
    try:
        client.connect(broker.host, broker.port)
        client.loop_start()
        topics = [*shared_topics(TOPICS, "cityiot"), rules_topic(0)]
        client.subscribe([(t, 1) for t in topics])
        wait_for(lambda: len(granted) == len(topics), 5, "the SUBACK")
        assert granted == [1] * len(topics), (
            f"refused subscriptions: {dict(zip(topics, granted, strict=True))}"
        )
        sent = (
            "city/acme/mh-1/telemetry",
            "city/acme/mh-1/status",
            relay_topic("http", "acme", "mh-1", "telemetry"),
            rules_topic(0),
        )
        for topic in sent:
            client.publish(topic, b"{}", qos=1).wait_for_publish(5)
        wait_for(lambda: len(received) == len(sent), 5, "every message", lambda: str(received))
    finally:
        client.disconnect()
        client.loop_stop()
        broker.stop()
