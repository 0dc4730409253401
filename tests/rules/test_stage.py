"""The whole chain as `cityiot run` wires it: a reading published over MQTT → ingest →
rules → alert event on city/alerts/{district}/{kind} → routed notification delivered on the
team's MQTT channel → work order for the team; then resolved."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select

from cityiot.domain.settings import Settings
from cityiot.platform.local_services import LocalBroker, LocalInflux
from cityiot.platform.wiring import platform
from cityiot.rules.workorders import work_order_alerts
from cityiot.storage.tables.alerts import Alert, Notification
from cityiot.storage.tables.workorders import WorkOrder
from tests.ingest.conftest import REGISTRY_CSV, publisher_for
from tests.rules.test_engine import Subscriber
from tests.seeding import open_seeded
from tests.waiting import until


async def test_a_published_reading_raises_notifies_and_dispatches(
    broker: LocalBroker, influx: LocalInflux, influx_db: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        run_dir=tmp_path,
        mqtt_url=broker.url,
        influx_url=influx.url,
        influx_db=influx_db,
        database_url=sqlite_url,
        mqtt_client_id=f"stage-{uuid.uuid4().hex[:8]}",
        flush_interval_ms=50,
    )
    engine, sessions = await open_seeded(
        sqlite_url, REGISTRY_CSV, [("acme", "ACME", "json"), ("oldco", "Old Co", "hexframe")]
    )
    # Alert events (the contract topic) and team notifications (the MQTT channel's own tree).
    subscriber = Subscriber(broker, "city/alerts/#", "cityiot/teams/#")
    publisher = publisher_for(broker)
    try:
        async with platform(settings, rules=True) as running:
            running.start()
            now = int(time.time() * 1000)
            publish = publisher.publish
            publish(
                "city/acme/mh-1/telemetry",
                orjson.dumps({"ts": now, "metrics": {"cover_open": True, "tilt_deg": 35.0}}),
                qos=1,
            )
            await until(lambda: len(topics_of(subscriber)) >= 3, 15)
            publish(
                "city/acme/mh-1/telemetry",
                orjson.dumps({"ts": now + 1000, "metrics": {"cover_open": False, "tilt_deg": 1.0}}),
                qos=1,
            )
            await until(
                lambda: (
                    [
                        e["state"]
                        for t, e in subscriber.messages
                        if t == "city/alerts/yicheng/manhole"
                    ][-1:]
                    == ["resolved"]
                ),
                15,
            )
    finally:
        subscriber.close()
        publisher.loop_stop()

    events = [e for t, e in subscriber.messages if t == "city/alerts/yicheng/manhole"]
    assert [e["state"] for e in events] == ["firing", "resolved"]
    assert events[0]["rule"] == "manhole_cover_open" and events[0]["severity"] == "critical"
    team_messages = {t: e for t, e in subscriber.messages if t.startswith("cityiot/teams/")}
    assert all(
        t.startswith("city/alerts/") or t.startswith("cityiot/teams/")
        for t, _ in subscriber.messages
    )
    # The ops centre sees everything; the manhole goes to urban management too.
    assert {"cityiot/teams/ops-centre", "cityiot/teams/urban-management"} <= set(team_messages)
    message = team_messages["cityiot/teams/urban-management"]
    assert message["status"] == "firing" and message["alerts"][0]["device_id"] == "mh-1"
    async with sessions() as session:
        (alert,) = (await session.scalars(select(Alert))).all()
        (order,) = (await session.scalars(select(WorkOrder))).all()
        sent = (await session.scalars(select(Notification.status))).all()
    assert alert.state == "resolved" and alert.open_key is None
    assert (order.alert_id, order.team, order.state) == (alert.id, "urban", "dispatched")
    assert sent and set(sent) == {"sent"}
    await engine.dispose()


def topics_of(subscriber: Subscriber) -> set[str]:
    return {t for t, _ in subscriber.messages}


async def test_a_district_storm_makes_one_work_order_and_few_notifications(
    broker: LocalBroker, influx: LocalInflux, influx_db: str, sqlite_url: str, tmp_path: Path
) -> None:
    """Forty streetlights of one district leak at once: every alert is raised and listed, the
    teams hear of them in one grouped message each, and urban management gets one work order
    gathering all forty (the shipped routing groups per district, kind and rule)."""
    lights = [f"st-{i}" for i in range(40)]
    rows = "".join(
        f"{d},acme,streetlight,kaifaqu,32.97,114.05,开发区 {i} 号,60,,,,\n"
        for i, d in enumerate(lights)
    )
    settings = Settings(
        run_dir=tmp_path,
        mqtt_url=broker.url,
        influx_url=influx.url,
        influx_db=influx_db,
        database_url=sqlite_url,
        mqtt_client_id=f"stage-{uuid.uuid4().hex[:8]}",
        flush_interval_ms=50,
    )
    engine, sessions = await open_seeded(
        sqlite_url, REGISTRY_CSV + rows, [("acme", "ACME", "json"), ("oldco", "Old Co", "hexframe")]
    )
    subscriber = Subscriber(broker, "city/alerts/#", "cityiot/teams/#")
    publisher = publisher_for(broker)

    def firing() -> set[str]:
        return {
            e["device_id"]
            for t, e in subscriber.messages
            if t.startswith("city/alerts/") and e["state"] == "firing"
        }

    async def gathered() -> bool:
        async with sessions() as session:
            counts = (await session.scalars(select(WorkOrder.alert_count))).all()
        return sum(counts) >= len(lights)

    try:
        async with platform(settings, rules=True) as running:
            running.start()
            now = int(time.time() * 1000)
            for device_id in lights:
                publisher.publish(
                    f"city/acme/{device_id}/telemetry",
                    orjson.dumps({"ts": now, "metrics": {"leakage_ma": 45.0}}),
                    qos=1,
                )
            await until(lambda: firing() == set(lights), 30)
            # The shipped routing's group_wait for streetlights is 10 s.
            await until(lambda: len(team_messages(subscriber)) >= 2, 30)
            await until(lambda: gathered(), 30, "every alert in a work order", every_s=0.2)
    finally:
        subscriber.close()
        publisher.loop_stop()

    async with sessions() as session:
        orders = (await session.scalars(select(WorkOrder))).all()
    assert [(o.team, o.kind, o.district, o.alert_count) for o in orders] == [
        ("urban", "streetlight", "kaifaqu", 40)
    ]
    assert len(await work_order_alerts(sessions, orders[0].id)) == 40
    messages = team_messages(subscriber)
    receivers = sorted(topic.rsplit("/", 1)[1] for topic, _ in messages)
    assert receivers == ["ops-centre", "urban-management"]  # one grouped message each
    assert all(len(m["alerts"]) == 40 and m["truncated"] == 0 for _, m in messages)
    await engine.dispose()


def team_messages(subscriber: Subscriber) -> list[tuple[str, dict[str, Any]]]:
    return [(t, e) for t, e in subscriber.messages if t.startswith("cityiot/teams/")]
