"""Offline detection over a fleet in simulated time: the real engine on a real database, its
clock moved by hand one check period at a time. Every silent device raises one offline alert
within one check period of its deadline (3 × its report interval after its last reading); a
device that keeps reporting raises none; a device changed or added in the registry is judged
by what the registry says now."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from cityiot.ingest.devices import DeviceMap, KnownDevice
from cityiot.ingest.validate import Reading
from cityiot.rules.deadlines import SilenceWheel
from cityiot.rules.definitions import load_rules
from cityiot.rules.engine import RulesEngine
from cityiot.storage.registry import DeviceEntry
from cityiot.storage.tables.alerts import Alert

CATALOGUE = Path(__file__).resolve().parents[2] / "rules" / "catalogue"
T0 = dt.datetime(2026, 12, 7, tzinfo=dt.UTC).timestamp()
# 60 s to 24 h, long intervals more often (a fleet's readings stay few over three days).
INTERVALS = (60, 300, 900, 3600, 3600, 21600, 21600, 86400, 86400, 86400)
FACTOR = 3
ON_SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def known(device_id: str, interval: int) -> KnownDevice:
    return KnownDevice.from_entry(
        DeviceEntry(
            device_id=device_id,
            vendor="acme",
            kind="manhole",
            district="yicheng",
            report_interval_s=interval,
            attributes={"depth_cm": 200.0},
            decommissioned=False,
            updated_at=dt.datetime.now(dt.UTC),
        )
    )


class Fleet:
    """A registry, an engine on a hand-moved clock, and every offline firing it recorded."""

    def __init__(self, sessions: Any, devices: dict[str, int], tick_s: float) -> None:
        self.registry = DeviceMap(None)
        for device_id, interval in devices.items():
            self.registry.devices[device_id] = known(device_id, interval)
        self.now = T0
        self.tick_s = tick_s
        self.engine = RulesEngine(
            load_rules(CATALOGUE),
            self.registry,
            sessions,
            publish=self._published,
            clock=lambda: self.now,
            tick_s=tick_s,
        )
        self.sessions = sessions
        self.fired: dict[str, list[float]] = {}  # device → when (simulated) it went offline

    def _published(self, _topic: str, payload: bytes) -> None:
        event = orjson.loads(payload)
        if event["rule"] == "device_offline" and event["state"] == "firing":
            self.fired.setdefault(event["device_id"], []).append(self.now)

    def heard(self, device_id: str, at: float) -> None:
        """A reading of ``device_id`` that arrived at ``at`` (before the run)."""
        facts = self.engine._facts_of(device_id)
        assert facts is not None
        self.engine.evaluator.feed(facts, int(at * 1000), {}, at)

    async def offline(self) -> list[str]:
        """The devices with an open offline alert in the database."""
        async with self.sessions() as session:
            rows = await session.scalars(
                select(Alert.device_id).where(
                    Alert.rule == "device_offline", Alert.state == "firing"
                )
            )
            return sorted(rows)


@ON_SQLITE
async def test_every_silent_device_fires_once_within_a_check_period_and_no_reporter_does(
    sessions: Any,
) -> None:
    tick_s = 60.0
    horizon_s = FACTOR * 86400 + 3600  # every interval's silence comes due
    devices = {f"d{i}": INTERVALS[i % len(INTERVALS)] for i in range(2000)}
    fleet = Fleet(sessions, devices, tick_s)
    deadline: dict[str, float] = {}
    next_report: dict[int, list[str]] = {}  # check → devices whose reading is due by then
    for i, (device_id, interval) in enumerate(devices.items()):
        if (i // len(INTERVALS)) % 2:  # silent: its last reading puts its deadline in the run
            due = T0 + (i * 7919 % 1000) / 1000 * (horizon_s - 2 * tick_s)
            fleet.heard(device_id, due - FACTOR * interval)
            deadline[device_id] = due
        else:  # reporting, on schedule from a phase within its interval
            last = T0 - (i * 104729 % interval)
            fleet.heard(device_id, last)
            next_report.setdefault(int((last + interval - T0) // tick_s) + 1, []).append(device_id)

    await fleet.engine.tick()
    submitted = 0
    for k in range(1, int(horizon_s // tick_s) + 1):
        fleet.now = T0 + k * tick_s
        due_now = next_report.pop(k, [])
        if due_now:
            await fleet.engine.submit(
                [Reading(d, "manhole", int(fleet.now * 1000), {}) for d in due_now]
            )
            submitted += len(due_now)
            for device_id in due_now:
                step = int(devices[device_id] // tick_s) or 1
                next_report.setdefault(k + step, []).append(device_id)
        await fleet.engine.tick()
    await fleet.engine.evaluate([])  # nothing left waiting to be recorded

    fired = fleet.fired
    assert set(fired) == set(deadline)  # every silent device, no reporting one
    assert await fleet.offline() == sorted(deadline)
    assert all(len(times) == 1 for times in fired.values())
    lateness = {d: fired[d][0] - max(due, T0) for d, due in deadline.items()}
    assert all(0 < late <= tick_s for late in lateness.values()), max(lateness.values())
    assert {devices[d] for d in deadline} == set(INTERVALS)  # every interval was judged
    assert fleet.engine.counters.readings == submitted  # the reporters were heard from


@ON_SQLITE
async def test_a_changed_or_new_device_is_judged_by_the_registry_as_it_is_now(
    sessions: Any,
) -> None:
    fleet = Fleet(sessions, {"slow": 86400, "kept": 86400}, tick_s=5.0)
    for device_id in ("slow", "kept"):
        fleet.heard(device_id, T0)
    await fleet.engine.tick()
    # "slow" now reports every minute (its deadline is 3 min after its last reading); a new
    # device, never heard from, is due 3 intervals after the engine started.
    fleet.registry.devices["slow"] = known("slow", 60)
    fleet.registry.devices["new"] = known("new", 120)
    fleet.registry.version += 1
    for k in range(1, 80):
        fleet.now = T0 + k * 5.0
        await fleet.engine.tick()
    fired = fleet.fired
    assert sorted(fired) == await fleet.offline() == ["new", "slow"]
    assert 180 < fired["slow"][0] - T0 <= 185
    assert 360 < fired["new"][0] - T0 <= 365


def test_the_wheel_hands_over_what_is_due_once() -> None:
    wheel = SilenceWheel()
    wheel.file("a", 100.4)
    wheel.file("b", 100.9)
    wheel.file("c", 250.0)
    wheel.file("never", float("inf"))
    assert len(wheel) == 3
    assert wheel.take(99.9) == []
    assert sorted(wheel.take(100.5)) == ["a", "b"]  # the current second is taken whole
    assert wheel.take(101.0) == []
    wheel.file("late", 50.0)  # a deadline already past goes to the next take
    assert wheel.take(102.0) == ["late"]
    assert wheel.take(10_000.0) == ["c"]
    assert len(wheel) == 0
