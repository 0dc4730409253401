"""The rules engine on the real database and broker: one alert per (rule, device) under
concurrency, state that survives a restart, events on the MQTT alert topic."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from cityiot.ingest.devices import DeviceMap
from cityiot.ingest.validate import Reading
from cityiot.platform.local_services import LocalBroker
from cityiot.rules import engine as engine_module
from cityiot.rules import lifecycle as lifecycle_module
from cityiot.rules.definitions import load_rules
from cityiot.rules.engine import RulesEngine
from cityiot.rules.events import Clock, wall_clock
from cityiot.rules.lifecycle import IllegalAlertTransition
from cityiot.storage.device_csv import parse_device_csv
from cityiot.storage.registry import import_devices
from cityiot.storage.tables.alerts import Alert
from tests.waiting import until

CATALOGUE = Path(__file__).resolve().parents[2] / "rules" / "catalogue"
CSV = """device_id,vendor,kind,district,lat,lon,address,report_interval_s,depth_cm
mh-1,acme,manhole,yicheng,32.98,114.02,解放路 1 号,300,200
"""
CONTRACT = {
    "id",
    "rule",
    "device_id",
    "kind",
    "district",
    "vendor",
    "severity",
    "state",
    "started_at",
    "resolved_at",
    "values",
    "summary",
}


class Subscriber:
    """A paho client collecting what arrives on a topic filter."""

    def __init__(self, broker: LocalBroker, *topics: str) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        for topic in topics:
            self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        time.sleep(0.2)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, orjson.loads(msg.payload)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def engine_on(
    sessions: Any, publisher: mqtt.Client | None, *, clock: Clock = wall_clock
) -> RulesEngine:
    """A started engine with the catalogue's rules; its events go to ``publisher`` (or
    nowhere)."""
    devices = DeviceMap(sessions)
    await devices.refresh()

    def publish(topic: str, payload: bytes) -> None:
        if publisher is not None:
            publisher.publish(topic, payload, qos=1)

    engine = RulesEngine(load_rules(CATALOGUE), devices, sessions, publish=publish, clock=clock)
    await engine.start()
    return engine


@pytest.fixture
async def registered(sessions: Any) -> Any:
    parsed = parse_device_csv(CSV)
    await import_devices(sessions, parsed.rows)
    return sessions


def flooding(ts_ms: int, level: float) -> list[Reading]:
    return [Reading("mh-1", "manhole", ts_ms, {"water_level_cm": level})]


async def open_alerts(sessions: Any) -> list[Alert]:
    async with sessions() as session:
        return list((await session.scalars(select(Alert).where(Alert.open_key.is_not(None)))).all())


async def test_concurrent_evaluation_raises_one_alert(
    registered: Any, publisher: mqtt.Client
) -> None:
    engines = [await engine_on(registered, publisher) for _ in range(4)]
    ts = int(time.time() * 1000)
    cover = [Reading("mh-1", "manhole", ts, {"cover_open": True, "tilt_deg": 40.0})]
    await asyncio.gather(*(e.evaluate(cover) for e in engines))
    alerts = await open_alerts(registered)
    assert [(a.rule, a.state) for a in alerts] == [("manhole_cover_open", "firing")]
    assert {e.evaluator.tracks[("manhole_cover_open", "mh-1")].alert_id for e in engines} == {
        alerts[0].id
    }
    assert sum(e.counters.adopted for e in engines) == 3


async def test_one_batch_opens_fires_resolves_and_reopens_in_order(
    registered: Any, publisher: mqtt.Client, broker: LocalBroker
) -> None:
    """A batch's transitions go to the database in one transaction and come out in order:
    pending → firing → resolved → pending again for one (rule, device) in one batch."""
    subscriber = Subscriber(broker, "city/alerts/#")
    try:
        engine = await engine_on(registered, publisher)
        t0 = int(time.time() * 1000) - 600_000
        batch = (
            flooding(t0, 170.0)
            + flooding(t0 + 121_000, 171.0)
            + flooding(t0 + 150_000, 90.0)
            + flooding(t0 + 160_000, 175.0)
        )
        await engine.evaluate(batch)
        await until(lambda: len(subscriber.messages) >= 4, 5)
    finally:
        subscriber.close()
    states = [(e["state"], e["values"]["water_level_cm"]) for _, e in subscriber.messages]
    assert states == [("pending", 170.0), ("firing", 171.0), ("resolved", 90.0), ("pending", 175.0)]
    events = [e for _, e in subscriber.messages]
    assert events[0]["id"] == events[1]["id"] == events[2]["id"] != events[3]["id"]
    async with registered() as session:
        rows = {a.id: (a.state, a.open_key) for a in await session.scalars(select(Alert))}
    assert rows == {
        events[0]["id"]: ("resolved", None),
        events[3]["id"]: ("pending", "manhole_flooding/mh-1"),
    }
    assert engine.evaluator.tracks[("manhole_flooding", "mh-1")].alert_id == events[3]["id"]


async def test_a_batch_that_resolves_an_alert_and_raises_it_again_records_both(
    registered: Any, publisher: mqtt.Client, broker: LocalBroker
) -> None:
    """The cover closes and opens again within one batch: the new alert's INSERT must wait
    for the old one's resolve, which frees the (rule, device) key."""
    subscriber = Subscriber(broker, "city/alerts/#")
    try:
        engine = await engine_on(registered, publisher)
        ts = int(time.time() * 1000) - 60_000

        def cover(at: int, is_open: bool, tilt: float) -> Reading:
            return Reading("mh-1", "manhole", at, {"cover_open": is_open, "tilt_deg": tilt})

        await engine.evaluate([cover(ts, True, 40.0)])
        await engine.evaluate([cover(ts + 100, False, 1.0), cover(ts + 200, True, 41.0)])
        await until(lambda: len(subscriber.messages) >= 3, 5)
    finally:
        subscriber.close()
    events = [e for _, e in subscriber.messages]
    assert [(e["state"], e["values"]["tilt_deg"]) for e in events] == [
        ("firing", 40.0),
        ("resolved", 1.0),
        ("firing", 41.0),
    ]
    assert events[0]["id"] == events[1]["id"] != events[2]["id"]
    (open_now,) = await open_alerts(registered)
    assert (open_now.id, open_now.state) == (events[2]["id"], "firing")


async def test_a_batch_adopts_an_alert_opened_by_another_evaluator(
    registered: Any, publisher: mqtt.Client
) -> None:
    t0 = int(time.time() * 1000) - 600_000
    first, second = await engine_on(registered, publisher), await engine_on(registered, publisher)
    await first.evaluate(flooding(t0, 170.0))
    (pending,) = await open_alerts(registered)
    # The second evaluator never saw the first reading: it opens, finds the row, adopts it,
    # and in the same batch moves it to firing.
    await second.evaluate(flooding(t0 + 1_000, 170.0) + flooding(t0 + 122_000, 171.0))
    (fired,) = await open_alerts(registered)
    assert (fired.id, fired.state) == (pending.id, "firing")
    assert second.counters.adopted == 1
    assert second.evaluator.tracks[("manhole_flooding", "mh-1")].alert_id == pending.id


async def test_restart_keeps_a_for_timer_and_a_firing_alert(
    registered: Any, publisher: mqtt.Client
) -> None:
    t0 = int(time.time() * 1000) - 600_000
    first = await engine_on(registered, publisher)
    await first.evaluate(flooding(t0, 170.0))
    (pending,) = await open_alerts(registered)
    assert pending.state == "pending"

    second = await engine_on(registered, publisher)  # a restart in the middle of the `for`
    await second.evaluate(flooding(t0 + 121_000, 171.0))
    (fired,) = await open_alerts(registered)
    assert (fired.id, fired.state) == (pending.id, "firing")
    assert fired.started_at == pending.started_at  # the timer did not start over

    third = await engine_on(registered, publisher)  # a restart while firing
    before = third.counters.events
    await third.evaluate(flooding(t0 + 200_000, 175.0))
    async with registered() as session:
        assert await session.scalar(select(func.count()).select_from(Alert)) == 1
    assert third.counters.events == before  # not raised twice
    await third.evaluate(flooding(t0 + 260_000, 100.0))
    assert await open_alerts(registered) == []


async def test_every_state_change_is_published_with_the_contract(
    registered: Any, publisher: mqtt.Client, broker: LocalBroker
) -> None:
    subscriber = Subscriber(broker, "city/alerts/#")
    try:
        engine = await engine_on(registered, publisher)
        t0 = int(time.time() * 1000) - 600_000
        await engine.evaluate(flooding(t0, 170.0))
        await engine.evaluate(flooding(t0 + 130_000, 172.0))
        (alert,) = await open_alerts(registered)
        await engine.acknowledge(alert.id, "duty-officer-li")
        with pytest.raises(IllegalAlertTransition):
            await engine.acknowledge(alert.id, "again")
        await engine.evaluate(flooding(t0 + 190_000, 90.0))
        await until(lambda: len(subscriber.messages) >= 4, 5)
    finally:
        subscriber.close()
    topics = {t for t, _ in subscriber.messages}
    events = [e for _, e in subscriber.messages]
    assert topics == {"city/alerts/yicheng/manhole"}
    assert [e["state"] for e in events] == ["pending", "firing", "acknowledged", "resolved"]
    for event in events:
        assert set(event) == CONTRACT
        assert event["started_at"].endswith("+08:00")
        assert event["vendor"] == "acme" and event["severity"] == "major"
    assert events[1]["values"] == {"depth_cm": 200.0, "water_level_cm": 172.0}
    assert "超过井深的 80%" in events[1]["summary"] and "above 80%" in events[1]["summary"]
    resolved_at = dt.datetime.fromisoformat(events[-1]["resolved_at"])
    assert resolved_at.timestamp() == pytest.approx((t0 + 190_000) / 1000, abs=1)


async def test_a_rule_action_commands_the_district_group(
    registered: Any, publisher: mqtt.Client
) -> None:
    from cityiot.rules.control import CommandSender, group_targets
    from cityiot.storage.tables.control import Command

    extra = parse_device_csv(
        "device_id,vendor,kind,district,lat,lon,address,report_interval_s\n"
        "sl-1,acme,streetlight,yicheng,32.98,114.02,a,60\n"
        "sl-2,acme,streetlight,yicheng,32.98,114.03,b,60\n"
        "sl-3,acme,streetlight,xiping,33.38,114.03,c,60\n"
    )
    await import_devices(registered, extra.rows)
    devices = DeviceMap(registered)
    await devices.refresh()
    sent: list[tuple[str, bytes]] = []
    commands = CommandSender(registered, lambda t, p, q: sent.append((t, p)), time.time)
    engine = RulesEngine(
        load_rules(CATALOGUE),
        devices,
        registered,
        publish=lambda t, p: None,
        commands=commands,
        group_targets=lambda kind, district: group_targets(registered, kind, district),
    )
    await engine.start()
    t0 = int(time.time() * 1000) - 600_000
    dark = {"lux": 3.0, "power_on": False}
    await engine.evaluate([Reading("sl-1", "streetlight", t0, dark)])
    await engine.evaluate([Reading("sl-1", "streetlight", t0 + 130_000, dark)])
    assert sorted(t for t, _ in sent) == ["city/acme/sl-1/command", "city/acme/sl-2/command"]
    assert orjson.loads(sent[0][1])["name"] == "switch_on"
    async with registered() as session:
        rows = (await session.scalars(select(Command))).all()
    assert {(c.device_id, c.rule) for c in rows} == {
        ("sl-1", "streetlight_switch_on_when_dark"),
        ("sl-2", "streetlight_switch_on_when_dark"),
    }


class StalledDispatcher:
    """Takes alert changes, in order, only once ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.handled: list[tuple[str, str]] = []

    async def handle(self, event: dict[str, Any]) -> None:
        await self.release.wait()
        self.handled.append((event["device_id"], event["state"]))


async def test_a_slow_dispatch_holds_up_no_alert(registered: Any) -> None:
    """While run() runs, work orders and notifications follow in a task of their own: the
    next readings' alerts are published without waiting for them, and every change is
    still dispatched, in order, before run() returns."""
    extra = parse_device_csv(
        "device_id,vendor,kind,district,lat,lon,address,report_interval_s,depth_cm\n"
        "mh-2,acme,manhole,yicheng,32.98,114.03,b,300,200\n"
    )
    await import_devices(registered, extra.rows)
    devices = DeviceMap(registered)
    await devices.refresh()
    published: list[str] = []
    dispatcher = StalledDispatcher()
    engine = RulesEngine(
        load_rules(CATALOGUE),
        devices,
        registered,
        publish=lambda topic, payload: published.append(orjson.loads(payload)["device_id"]),
        dispatcher=dispatcher,
    )
    await engine.start()
    stop = asyncio.Event()
    running = asyncio.create_task(engine.run(stop))
    ts = int(time.time() * 1000)
    for device in ("mh-1", "mh-2"):
        await engine.submit(
            [Reading(device, "manhole", ts, {"cover_open": True, "tilt_deg": 40.0})]
        )
        await until(lambda d=device: d in published, 10)  # type: ignore[misc]
    assert published == ["mh-1", "mh-2"] and dispatcher.handled == []
    stop.set()
    await asyncio.sleep(0.6)
    assert not running.done()  # run() waits for the dispatch of what it published
    dispatcher.release.set()
    await asyncio.wait_for(running, 10)
    assert dispatcher.handled == [("mh-1", "firing"), ("mh-2", "firing")]


async def test_absence_is_checked_on_every_due_tick_and_again_after_a_recovery(
    registered: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running engine scans for silence whenever a device can have fallen silent, not
    only on its first tick; a device heard from again can fall silent again. The scan runs
    in slices (one device each here), readings evaluated between them."""

    monkeypatch.setattr(engine_module, "TICK_SLICE", 1)
    second = "mh-2,acme,manhole,yicheng,32.98,114.02,解放路 2 号,300,200\n"
    await import_devices(registered, parse_device_csv(CSV + second).rows)
    now = [1_000_000.0]
    engine = await engine_on(registered, None, clock=lambda: now[0])
    limit_s = 3 * 300  # factor 3 × the report interval

    def offline() -> list[str]:
        tracks = engine.evaluator.tracks.items()
        return sorted(d for (rule, d), t in tracks if rule == "device_offline" and t.firing)

    await engine.tick()  # the first tick: nobody is silent yet
    now[0] += limit_s / 2
    await engine.tick()
    assert offline() == []
    now[0] += limit_s / 2 + 1
    await engine.tick()  # due now: found on this tick, not only on a first one
    assert offline() == ["mh-1", "mh-2"]
    assert sorted(a.device_id for a in await open_alerts(registered)) == ["mh-1", "mh-2"]

    # mh-1 heard from again: resolved; silent for as long again: raised again.
    await engine.evaluate(flooding(int(now[0] * 1000), 10.0))
    assert offline() == ["mh-2"]
    now[0] += limit_s + 1
    await engine.tick()
    assert offline() == ["mh-1", "mh-2"]
    assert sorted(a.device_id for a in await open_alerts(registered)) == ["mh-1", "mh-2"]


def cover_opened(ts_ms: int) -> list[Reading]:
    return [Reading("mh-1", "manhole", ts_ms, {"cover_open": True, "tilt_deg": 40.0})]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_on_sqlite_an_alert_is_recorded_and_published_within_one_turn_of_the_loop(
    registered: Any,
) -> None:
    """Recorded on the loop's own thread: no statement waits for the busy loop to come
    round (through the async driver each would), so the event is out before anything else
    the loop has to do runs."""
    published: list[str] = []
    engine = await engine_on(registered, None)
    engine.publish = lambda topic, payload: published.append(orjson.loads(payload)["state"])
    others_ran = asyncio.Event()
    asyncio.get_running_loop().call_soon(others_ran.set)
    await engine.evaluate(cover_opened(int(time.time() * 1000)))
    assert published == ["firing"]
    assert not others_ran.is_set()
    (alert,) = await open_alerts(registered)
    assert (alert.rule, alert.state) == ("manhole_cover_open", "firing")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_submitted_readings_are_evaluated_at_once_and_recorded_in_the_next_turn(
    registered: Any,
) -> None:
    """submit() evaluates in the caller's turn of the loop (a firing waits for no queue of
    readings); run() is woken in the loop's next turn and records it then."""
    published: list[str] = []
    engine = await engine_on(registered, None)
    engine.publish = lambda topic, payload: published.append(orjson.loads(payload)["state"])
    stop = asyncio.Event()
    running = asyncio.create_task(engine.run(stop))
    for _ in range(5):
        await asyncio.sleep(0)  # run() is waiting now
    others_ran = asyncio.Event()
    asyncio.get_running_loop().call_soon(others_ran.set)
    await engine.submit(cover_opened(int(time.time() * 1000)))
    assert not others_ran.is_set()  # evaluated without a turn of the loop
    assert engine.counters.readings == 1 and [t.to for t in engine.waiting] == ["firing"]
    assert published == []
    await asyncio.sleep(0)
    assert published == ["firing"] and engine.waiting == []
    stop.set()
    await asyncio.wait_for(running, 10)
    (alert,) = await open_alerts(registered)
    assert (alert.rule, alert.state) == ("manhole_cover_open", "firing")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_changes_that_keep_coming_are_recorded_together_not_a_transaction_each(
    registered: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a quiet spell a change is recorded in the loop's next turn; one that follows
    within RECORD_EVERY_S waits for it, with whatever else comes meanwhile."""

    monkeypatch.setattr(engine_module, "RECORD_EVERY_S", 1.0)
    published: list[str] = []
    engine = await engine_on(registered, None)
    engine.publish = lambda topic, payload: published.append(orjson.loads(payload)["state"])
    recordings: list[int] = []
    apply = engine.apply

    async def counting(transitions: Any) -> None:
        recordings.append(len(transitions))
        await apply(transitions)

    engine.apply = counting  # type: ignore[method-assign]
    stop = asyncio.Event()
    running = asyncio.create_task(engine.run(stop))
    for _ in range(5):
        await asyncio.sleep(0)
    ts = int(time.time() * 1000)
    await engine.submit(cover_opened(ts))
    await asyncio.sleep(0)
    assert published == ["firing"] and recordings == [1]
    closed = {"cover_open": False, "tilt_deg": 1.0}
    await engine.submit([Reading("mh-1", "manhole", ts + 100, closed)])
    await engine.submit(cover_opened(ts + 200))
    for _ in range(5):
        await asyncio.sleep(0)
    assert published == ["firing"]  # within RECORD_EVERY_S of the last recording: waits
    await until(lambda: len(published) == 3, 10)
    assert published == ["firing", "resolved", "firing"] and recordings == [1, 2]
    stop.set()
    await asyncio.wait_for(running, 10)


async def test_a_change_evaluated_before_its_rule_is_removed_is_not_recorded_after(
    registered: Any,
) -> None:
    """A firing waiting to be recorded when its rule goes away (a reload) goes with the
    rule: recorded, it would stay open with nothing left to resolve it."""
    engine = await engine_on(registered, None)
    await engine.submit(cover_opened(int(time.time() * 1000)))
    assert [t.rule.id for t in engine.waiting] == ["manhole_cover_open"]
    kept = [r for r in load_rules(CATALOGUE) if r.id != "manhole_cover_open"]
    await engine.replace_rules(kept)
    assert engine.waiting == []
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(engine.run(stop), 10)
    assert await open_alerts(registered) == []


async def test_an_absence_scan_gives_the_loop_a_turn_between_slices(
    registered: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readings arrive while the fleet is scanned for silence: each slice ends with a turn
    of the loop, also when nothing was found and nothing was waiting."""

    monkeypatch.setattr(engine_module, "TICK_SLICE", 1)
    engine = await engine_on(registered, None)
    turns: list[int] = []
    loop = asyncio.get_running_loop()

    def count() -> None:
        turns.append(1)
        if len(turns) < 100:
            loop.call_soon(count)

    loop.call_soon(count)
    await engine.tick()  # the first scan: nobody is silent, no reading waiting
    assert engine.counters.transitions == 0
    assert len(turns) >= 1  # without a turn per slice, the scan ran to the end first


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_an_alert_waits_for_another_process_writing_to_sqlite_and_is_recorded_after(
    registered: Any, db_url: str
) -> None:
    """Another process holding SQLite's write lock: recording falls back to the async
    session, which waits for the lock without stopping the loop, then records the alert."""
    other = sqlite3.connect(db_url.split("///", 1)[1], isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE devices SET address = 'moved' WHERE id = 'mh-1'")
    engine = await engine_on(registered, None)
    recording = asyncio.create_task(engine.evaluate(cover_opened(int(time.time() * 1000))))
    ticks = 0
    for _ in range(30):
        await asyncio.sleep(0.01)
        ticks += 1
    assert not recording.done() and ticks == 30  # the loop ran on meanwhile
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(recording, 30)
    (alert,) = await open_alerts(registered)
    assert alert.state == "firing"
    assert engine.evaluator.tracks[("manhole_cover_open", "mh-1")].alert_id == alert.id


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_on_sqlite_a_large_batch_of_steps_goes_through_the_async_session(
    registered: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a batch of up to DIRECT_MAX_STEPS holds the loop while SQLite works; a larger
    one (an absence scan finding a district silent) is recorded through aiosqlite."""

    monkeypatch.setattr(lifecycle_module, "DIRECT_MAX_STEPS", 0)
    drivers: list[str] = []
    record = lifecycle_module._record

    def spy(session: Any, steps: Any) -> Any:
        drivers.append(session.get_bind().url.drivername)
        return record(session, steps)

    monkeypatch.setattr(lifecycle_module, "_record", spy)
    published: list[str] = []
    engine = await engine_on(registered, None)
    engine.publish = lambda topic, payload: published.append(orjson.loads(payload)["state"])
    await engine.evaluate(cover_opened(int(time.time() * 1000)))
    assert published == ["firing"]
    assert drivers == ["sqlite+aiosqlite"]
    (alert,) = await open_alerts(registered)
    assert (alert.rule, alert.state) == ("manhole_cover_open", "firing")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_firing_early_in_a_large_batch_is_published_before_the_rest_is_evaluated(
    registered: Any,
) -> None:
    """A large batch is evaluated a slice at a time with a turn of the loop between, in
    which run() records and publishes what the slices so far changed."""

    engine = await engine_on(registered, None)
    fed = 0
    feed = engine.evaluator.feed

    def counting(*args: Any) -> Any:
        nonlocal fed
        fed += 1
        return feed(*args)

    engine.evaluator.feed = counting  # type: ignore[method-assign,assignment]
    published: list[tuple[str, int]] = []
    engine.publish = lambda topic, payload: published.append((orjson.loads(payload)["state"], fed))
    stop = asyncio.Event()
    running = asyncio.create_task(engine.run(stop))
    for _ in range(5):
        await asyncio.sleep(0)  # run() is waiting now
    now = int(time.time() * 1000)
    rest = [Reading("mh-1", "manhole", now + k, {"battery_pct": 80.0}) for k in range(1, 1000)]
    await engine.submit(cover_opened(now) + rest)
    assert fed == 1000
    assert published == [("firing", engine_module.YIELD_EVERY)]  # after the first slice
    stop.set()
    await asyncio.wait_for(running, 10)
    (alert,) = await open_alerts(registered)
    assert alert.state == "firing"
