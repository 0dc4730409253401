"""Several MQTT sessions of one ingest (CITYIOT_MQTT_SESSIONS), members of one shared
subscription: each holds a window of its own and acknowledges what came by it; sessions no
longer wanted are drained and removed, so nothing the broker queued for them is stranded."""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityiot.domain.settings import Settings
from cityiot.platform.local_services import LocalBroker, LocalInflux
from tests.ingest.conftest import REGISTRY_CSV, running_ingest
from tests.ingest.test_inflight_window import (
    BACKLOG,
    WINDOW,
    backlog_drained,
    parking_points,
    publish_backlog,
    window_settings,
)
from tests.seeding import open_seeded
from tests.waiting import until


async def test_sessions_of_a_shared_subscription_each_hold_a_window(
    broker: LocalBroker,
    influx: LocalInflux,
    influx_db: str,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    """CITYIOT_MQTT_SESSIONS=3 behind a strict window of 32 (bench/window_proxy.py, as EMQX
    holds it): three sessions of one shared subscription split the backlog, each holds at
    most its window and acknowledges exactly what it received, batches hold more than one
    window's slice, and every reading is stored once."""
    from bench.window import start_relay

    relay, port = start_relay(broker, WINDOW, tmp_path / "relay.log")
    try:
        engine, _ = await open_seeded(sqlite_url, REGISTRY_CSV, [("acme", "ACME Sensors", "json")])
        settings = window_settings(
            tmp_path,
            f"mqtt://{broker.host}:{port}",
            influx,
            influx_db,
            sqlite_url,
            mqtt_inflight=WINDOW,
            mqtt_sessions=3,
            share_group=f"g{uuid.uuid4().hex[:8]}",
        )
        async with backlog_drained(settings, broker, BACKLOG) as ingest:
            c = ingest.counters
            links = [ingest.link, *ingest.intake.members]
            client_ids = [link.client_id for link in links]
            seen = [(link.stats.received, link.stats.acked, link.max_unacked) for link in links]
            total = ingest.broker_stats()
        await engine.dispose()
    finally:
        relay.terminate()
        relay.wait(10)

    stored = await parking_points(influx, influx_db)
    assert stored == BACKLOG == c.stored, (stored, c.stored)
    assert c.duplicates == 0, c
    print(f"sessions={seen} batches={c.batches} sealed_by={dict(c.sealed_by_reason)}")
    assert client_ids == [
        settings.mqtt_client_id,
        *(f"{settings.mqtt_client_id}-s{n}" for n in (2, 3)),
    ]
    for client_id, (received, acked, max_unacked) in zip(client_ids, seen, strict=True):
        assert received > 0, f"{client_id} received nothing of the shared subscription: {seen}"
        assert received == acked, f"{client_id} acked {acked} of {received} received"
        assert max_unacked <= WINDOW, f"{client_id} held {max_unacked} with a window of 32"
    assert sum(received for received, _, _ in seen) == BACKLOG == total.received == total.acked
    # Batches of the three windows' slices together: fewer than one window's slices would be.
    assert c.batches < BACKLOG // (WINDOW // 2), c.sealed_by_reason


def test_sessions_need_a_share_group() -> None:
    with pytest.raises(ValueError, match="CITYIOT_MQTT_SESSIONS=2 needs CITYIOT_SHARE_GROUP"):
        Settings(mqtt_sessions=2, share_group="")
    assert Settings(mqtt_sessions=2, share_group="cityiot").mqtt_sessions == 2


def session_present(broker: LocalBroker, client_id: str) -> bool:
    """Whether the broker holds a persistent session for ``client_id``. The probe's own
    connect makes one if there was none: a clean connect removes it again."""
    answers = []
    for clean in (False, True):
        connected = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        client.on_connect = lambda c, u, flags, rc, p, connected=connected: (
            answers.append(flags.session_present),
            connected.set(),
        )
        client.connect(broker.host, broker.port)
        client.loop_start()
        try:
            assert connected.wait(10), f"no CONNACK for {client_id}"
        finally:
            client.disconnect()
            client.loop_stop()
    return answers[0]


async def test_sessions_no_longer_wanted_are_drained_then_removed(
    broker: LocalBroker,
    influx: LocalInflux,
    influx_db: str,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    """Three sessions, then one: what the broker queued for the two dropped while the ingest
    was away is stored, they leave the subscription and the broker, and later readings all
    reach the one left (a member merely left away would take two in three of them)."""
    engine, _ = await open_seeded(sqlite_url, REGISTRY_CSV, [("acme", "ACME Sensors", "json")])
    three = window_settings(
        tmp_path,
        broker.url,
        influx,
        influx_db,
        sqlite_url,
        mqtt_sessions=3,
        mqtt_inflight=WINDOW,
        share_group=f"g{uuid.uuid4().hex[:8]}",
    )
    client_id = three.mqtt_client_id
    async with running_ingest(three):  # three sessions, then a backlog queued for them
        pass
    assert (tmp_path / f"mqtt-sessions-{client_id}").read_text().strip() == "3"
    publish_backlog(broker, BACKLOG)

    one = three.model_copy(update={"mqtt_sessions": 1})
    async with running_ingest(one) as ingest:
        c = ingest.counters
        await until(
            lambda: c.stored >= BACKLOG and ingest.retired and ingest.idle,
            120,
            lambda: f"the backlog stored and two sessions retired; counters {c}",
        )
        retired = [(link.client_id, link.stats.received) for link in ingest.intake.members]
        # A batch holds half of the one window left, no longer of three.
        assert ingest.intake.batch_bound == ingest.link.slice == WINDOW // 2
        # Every later reading comes by the one session left.
        before = ingest.link.stats.received
        publish_backlog(broker, 60, hours_ago=3)  # before the backlog's times: new points
        await until(lambda: c.stored >= BACKLOG + 60 and ingest.idle, 60, lambda: f"{c}")
        assert ingest.link.stats.received - before == 60
        assert ingest.broker_stats().connected
    await engine.dispose()

    assert [cid for cid, _ in retired] == [f"{client_id}-s2", f"{client_id}-s3"]
    assert all(received > 0 for _, received in retired), retired  # each had its share queued
    stored = await parking_points(influx, influx_db)
    assert stored == BACKLOG + 60 == c.stored, (stored, c.stored)
    assert (tmp_path / f"mqtt-sessions-{client_id}").read_text().strip() == "1"
    for cid, _ in retired:
        assert not await asyncio.to_thread(session_present, broker, cid), f"{cid} still held"
    assert await asyncio.to_thread(session_present, broker, client_id)
