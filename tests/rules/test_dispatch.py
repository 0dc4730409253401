"""The dispatcher against a real SQLite outbox, with a clock moved by hand: exactly which
rows it writes for grouping, intervals, repeats, acknowledgement, resolution, silences,
maintenance windows, truncation, restarts, and which work orders it asks for."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from cityiot.rules.delivery import enqueue
from cityiot.rules.dispatch import Dispatcher
from cityiot.rules.lifecycle import AlertStore, new_alert_row
from cityiot.rules.routing import DEFAULT_ROUTING_PATH, Router, load_routing, parse_routing
from cityiot.rules.silences import (
    SessionFactory,
    create_silence,
    create_window,
    end_window,
    expire_silence,
)
from cityiot.storage.engine import make_engine, migrate, sessionmaker
from cityiot.storage.tables.alerts import Notification
from tests.rules.conftest import HandClock

CST = dt.timezone(dt.timedelta(hours=8))
T0 = dt.datetime(2025, 11, 24, 10, 0, tzinfo=CST).timestamp()  # a Monday morning
MINUTE, HOUR = 60.0, 3600.0

ROUTING: dict[str, Any] = {
    "route": {
        "receiver": "ops",
        "group_by": ["rule", "district"],
        "group_wait": "10s",
        "group_interval": "1m",
        "repeat_interval": "4h",
        "send_resolved": True,
        "routes": [
            {"match": {"kind": "manhole"}, "receiver": "urban", "workorder": ["critical", "major"]},
            {"match": {"kind": "parking"}, "receiver": "traffic", "send_resolved": False},
        ],
    },
    "receivers": [
        {"name": "ops", "channels": [{"name": "ops-mqtt", "type": "mqtt"}]},
        {
            "name": "urban",
            "team": "urban",
            "channels": [
                {"name": "urban-mqtt", "type": "mqtt"},
                {"name": "urban-hook", "type": "webhook", "url": "https://urban.example/hook"},
            ],
        },
        {
            "name": "traffic",
            "team": "traffic",
            "channels": [{"name": "traffic-mqtt", "type": "mqtt"}],
        },
    ],
    "maintenance_windows": [
        {
            "name": "kaifaqu-night-works",
            "matchers": [{"label": "district", "op": "=", "value": "kaifaqu"}],
            "schedule": {"start": "01:00", "end": "05:00"},
        }
    ],
}
URBAN_KEY = 'route.routes[0]:{rule="manhole_cover_open",district="yicheng"}'


class Outbox:
    """The rows written since the last look, in order: (channel, status, alert ids, truncated)."""

    def __init__(self, session_factory: SessionFactory) -> None:
        self.session_factory = session_factory
        self.seen = 0

    async def rows(self) -> list[Notification]:
        async with self.session_factory() as session:
            result = await session.execute(
                select(Notification).where(Notification.id > self.seen).order_by(Notification.id)
            )
            rows = list(result.scalars())
        if rows:
            self.seen = rows[-1].id
        return rows

    async def new(self) -> list[tuple[str, str, list[str], int]]:
        return [
            (
                r.channel,
                r.payload["status"],
                [f"{a['id']}:{a['state']}" for a in r.payload["alerts"]],
                r.payload["truncated"],
            )
            for r in await self.rows()
        ]


def alert(
    alert_id: str,
    state: str = "firing",
    *,
    kind: str = "manhole",
    district: str = "yicheng",
    severity: str = "critical",
    rule: str = "manhole_cover_open",
) -> dict[str, Any]:
    return {
        "id": alert_id,
        "rule": rule,
        "device_id": f"dev-{alert_id}",
        "kind": kind,
        "district": district,
        "vendor": "acme",
        "severity": severity,
        "state": state,
        "started_at": "2025-11-24T10:00:00+08:00",
        "resolved_at": "2025-11-24T11:00:00+08:00" if state == "resolved" else None,
        "values": {"cover_open": True},
        "summary": "井盖打开 / manhole cover open",
    }


def urban(status: str, *alerts: str, truncated: int = 0) -> list[tuple[str, str, list[str], int]]:
    """The two rows (one per urban channel) of one message."""
    return [(channel, status, list(alerts), truncated) for channel in ("urban-mqtt", "urban-hook")]


class Rig:
    """A dispatcher, its clock, its outbox and the work orders it asked for."""

    def __init__(self, session_factory: SessionFactory, router: Router, **options: Any) -> None:
        self.session_factory = session_factory
        self.clock = HandClock(T0)
        self.work_orders: list[tuple[str, str]] = []
        self.work_order_groups: dict[str, str | None] = {}  # alert id → group key asked with
        self.fail_work_orders = False
        self.outbox = Outbox(session_factory)
        self.dispatcher = Dispatcher(
            router, session_factory, enqueue, self.clock, self.open_work_order, **options
        )

    async def open_work_order(
        self, event: dict[str, Any], team: str, group: str | None = None
    ) -> None:
        if self.fail_work_orders:
            raise RuntimeError("work order store unreachable")
        self.work_orders.append((event["id"], team))
        self.work_order_groups[event["id"]] = group

    async def until(self, seconds_after_t0: float, step: float = 1.0) -> None:
        """Move the clock to T0 + seconds, ticking every ``step`` on the way."""
        while self.clock.now + step <= T0 + seconds_after_t0:
            self.clock.now += step
            await self.dispatcher.tick()
        self.clock.now = T0 + seconds_after_t0
        await self.dispatcher.tick()

    async def new(self) -> list[tuple[str, str, list[str], int]]:
        return await self.outbox.new()


@pytest.fixture
async def session_factory(sqlite_url: str) -> AsyncIterator[SessionFactory]:
    await migrate(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        yield sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def rig(session_factory: SessionFactory) -> Rig:
    return Rig(session_factory, parse_routing(ROUTING))


async def test_group_wait_batches_alerts_into_one_message(rig: Rig) -> None:
    await rig.dispatcher.handle(alert("a1"))
    await rig.until(3)
    await rig.dispatcher.handle(alert("a2", severity="major"))
    await rig.dispatcher.handle(alert("b1", district="xiping"))  # another group
    await rig.until(9.9, step=0.1)
    assert await rig.new() == []
    await rig.until(10)
    assert await rig.new() == urban("firing", "a1:firing", "a2:firing")
    await rig.until(13)  # b1's group started 3 s later
    assert await rig.new() == urban("firing", "b1:firing")
    await rig.until(60)
    assert await rig.new() == []

    rows = await Outbox(rig.session_factory).rows()
    first = rows[0]
    assert (first.receiver, first.group_key, first.status) == ("urban", URBAN_KEY, "pending")
    assert first.payload["receiver"] == "urban"
    assert first.payload["group_labels"] == {"rule": "manhole_cover_open", "district": "yicheng"}
    assert first.payload["alerts"][0] == alert("a1")  # the event contract, unchanged
    assert rows[2].group_key == 'route.routes[0]:{rule="manhole_cover_open",district="xiping"}'


async def test_later_changes_wait_for_the_group_interval(rig: Rig) -> None:
    await rig.dispatcher.handle(alert("a1"))
    await rig.until(10)
    assert await rig.new() == urban("firing", "a1:firing")
    await rig.until(20)
    await rig.dispatcher.handle(alert("a2"))
    await rig.until(45)
    await rig.dispatcher.handle(alert("a3", severity="minor"))
    await rig.until(69)
    assert await rig.new() == []
    await rig.until(70)  # one message for both changes, the most severe first
    assert await rig.new() == urban("firing", "a1:firing", "a2:firing", "a3:firing")
    await rig.until(200)
    assert await rig.new() == []


async def test_an_unchanged_group_repeats_every_repeat_interval(rig: Rig) -> None:
    await rig.dispatcher.handle(alert("a1"))
    await rig.until(10)
    assert await rig.new() == urban("firing", "a1:firing")
    await rig.until(10 + 4 * HOUR - 1, step=5)
    assert await rig.new() == []
    await rig.until(10 + 4 * HOUR)
    assert await rig.new() == urban("firing", "a1:firing")
    await rig.until(10 + 8 * HOUR - 1, step=30)
    assert await rig.new() == []
    await rig.until(10 + 8 * HOUR)
    assert await rig.new() == urban("firing", "a1:firing")


async def test_acknowledged_alerts_stop_repeating_but_their_resolution_is_told(
    rig: Rig,
) -> None:
    await rig.dispatcher.handle(alert("a1"))
    await rig.dispatcher.handle(alert("a2"))
    await rig.until(10)
    assert await rig.new() == urban("firing", "a1:firing", "a2:firing")
    await rig.dispatcher.handle(alert("a1", "acknowledged"))
    await rig.until(10 + 4 * HOUR, step=30)  # the repeat leaves a1 out
    assert await rig.new() == urban("firing", "a2:firing")
    await rig.dispatcher.handle(alert("a2", "acknowledged"))
    await rig.until(10 + 12 * HOUR, step=60)
    assert await rig.new() == []  # nothing firing: no repeats at all
    await rig.dispatcher.handle(alert("a1", "resolved"))
    await rig.until(10 + 12 * HOUR + 60, step=60)
    assert await rig.new() == urban("resolved", "a1:resolved")
    assert [g.alerts for g in rig.dispatcher.groups()] == [{"a2": "acknowledged"}]


async def test_an_alert_acknowledged_through_the_api_stops_repeating_too(rig: Rig) -> None:
    """The API acknowledges in the database; the dispatcher never saw that event."""
    store = AlertStore(rig.session_factory)
    rows = []
    for n in (1, 2):
        row, _ = await store.open(
            new_alert_row(
                rule="manhole_cover_open",
                device_id=f"dev-{n}",
                kind="manhole",
                district="yicheng",
                vendor="acme",
                severity="critical",
                state="firing",
                started_ms=int(T0 * 1000),
                values={"cover_open": True},
                summary="井盖打开",
            )
        )
        rows.append(row)
        await rig.dispatcher.handle({**alert(row.id), "device_id": f"dev-{n}"})
    await rig.until(10)
    assert len(await rig.new()) == 2
    await store.acknowledge(rows[0].id, "crew 1", dt.datetime.now(dt.UTC))
    await rig.until(10 + 4 * HOUR, step=30)  # the repeat leaves the acknowledged one out
    assert await rig.new() == urban("firing", f"{rows[1].id}:firing")


async def test_resolved_alerts_are_told_once_then_leave_the_group(rig: Rig) -> None:
    await rig.dispatcher.handle(alert("a1"))
    await rig.dispatcher.handle(alert("a2"))
    await rig.until(10)
    assert await rig.new() == urban("firing", "a1:firing", "a2:firing")
    await rig.dispatcher.handle(alert("a1", "resolved"))
    await rig.until(70)  # a firing alert is left: the message is firing, with a1 resolved
    assert await rig.new() == urban("firing", "a2:firing", "a1:resolved")
    await rig.dispatcher.handle(alert("a2", "resolved"))
    await rig.until(130)
    assert await rig.new() == urban("resolved", "a2:resolved")
    assert rig.dispatcher.groups() == []
    await rig.until(5 * HOUR, step=60)
    assert await rig.new() == []


async def test_no_resolved_message_without_send_resolved_or_an_earlier_firing_one(
    rig: Rig,
) -> None:
    await rig.dispatcher.handle(alert("p1", kind="parking", rule="parking_overstay"))
    await rig.until(10)
    assert await rig.new() == [("traffic-mqtt", "firing", ["p1:firing"], 0)]
    await rig.dispatcher.handle(alert("p1", "resolved", kind="parking", rule="parking_overstay"))
    # fired and resolved within group_wait: the receiver never knew, so it is not told
    await rig.dispatcher.handle(alert("a1"))
    await rig.until(15)
    await rig.dispatcher.handle(alert("a1", "resolved"))
    await rig.dispatcher.handle(alert("a9", "resolved"))  # never seen firing
    await rig.until(10 * MINUTE)
    assert await rig.new() == []
    assert rig.dispatcher.groups() == []


async def test_a_silence_mutes_until_it_expires(rig: Rig) -> None:
    silence = await create_silence(
        rig.session_factory,
        [{"label": "device_id", "op": "=", "value": "dev-a1"}],
        T0,
        T0 + 30 * MINUTE,
        "operator-wang",
        "cover replaced tonight",
    )
    await rig.dispatcher.handle(alert("a1"))
    await rig.dispatcher.handle(alert("a2"))
    await rig.until(10)
    assert await rig.new() == urban("firing", "a2:firing")  # the other alert is not muted
    await rig.until(30 * MINUTE, step=5)
    assert await rig.new() == []
    await rig.until(30 * MINUTE + 10)  # next group interval after the silence ended
    assert await rig.new() == urban("firing", "a1:firing", "a2:firing")
    assert silence.id


async def test_an_expired_silence_lets_the_alert_through_at_the_next_interval(
    rig: Rig,
) -> None:
    silence = await create_silence(
        rig.session_factory,
        [{"label": "team", "op": "=", "value": "urban"}],
        T0,
        T0 + 8 * HOUR,
    )
    await rig.dispatcher.handle(alert("a1"))
    await rig.until(5 * MINUTE, step=5)
    assert await rig.new() == []
    assert rig.work_orders == []  # muted: no work order yet either
    await expire_silence(rig.session_factory, silence.id, T0 + 5 * MINUTE)
    await rig.until(5 * MINUTE + 1)
    assert rig.work_orders == [("a1", "urban")]
    await rig.until(5 * MINUTE + 9)
    assert await rig.new() == []
    await rig.until(5 * MINUTE + 10)
    assert await rig.new() == urban("firing", "a1:firing")


async def test_a_maintenance_window_mutes_its_hours(rig: Rig) -> None:
    rig.clock.now = T0 - 8.5 * HOUR  # 01:30 in Zhumadian: kaifaqu's night works
    await rig.dispatcher.handle(alert("k1", district="kaifaqu"))
    await rig.dispatcher.handle(alert("y1", district="yicheng"))
    await rig.until(-8.5 * HOUR + 10)
    assert await rig.new() == urban("firing", "y1:firing")
    assert rig.work_orders == [("y1", "urban")]
    await rig.until(-5 * HOUR - 1, step=10)  # until 04:59:59
    assert await rig.new() == []
    await rig.until(-5 * HOUR + 10, step=10)  # the window closed at 05:00
    assert await rig.new() == urban("firing", "k1:firing")
    assert rig.work_orders == [("y1", "urban"), ("k1", "urban")]


async def test_a_stored_window_mutes_while_in_force_and_its_end_lets_alerts_through(
    rig: Rig,
) -> None:
    """A window made through the API mutes like the file's; ended, it stops muting at once."""
    works = await create_window(
        rig.session_factory,
        "yicheng-day-works",
        [{"label": "district", "op": "=", "value": "yicheng"}],
        ["mon"],
        "09:00",
        "11:00",  # T0 is Monday 10:00: open
    )
    await create_window(  # Tuesday's hours: not open on Monday
        rig.session_factory,
        "xiping-tuesday-works",
        [{"label": "district", "op": "=", "value": "xiping"}],
        ["tue"],
        "09:00",
        "11:00",
    )
    await rig.dispatcher.handle(alert("y1", district="yicheng"))
    await rig.dispatcher.handle(alert("x1", district="xiping"))
    await rig.until(10)
    assert await rig.new() == urban("firing", "x1:firing")
    assert rig.work_orders == [("x1", "urban")]
    await rig.until(5 * MINUTE, step=5)
    assert await rig.new() == []
    assert rig.work_orders == [("x1", "urban")]  # muted: no work order either
    await end_window(rig.session_factory, works.id, T0 + 5 * MINUTE)
    await rig.until(5 * MINUTE + 1)
    assert rig.work_orders == [("x1", "urban"), ("y1", "urban")]
    await rig.until(5 * MINUTE + 10)  # the group's next interval
    assert await rig.new() == urban("firing", "y1:firing")


async def test_work_orders_once_per_alert_for_routed_severities(rig: Rig) -> None:
    await rig.dispatcher.handle(alert("a1", "pending"))
    await rig.dispatcher.handle(alert("a1"))
    await rig.dispatcher.handle(alert("a1"))  # the same state again
    await rig.dispatcher.handle(alert("a2", severity="major"))
    await rig.dispatcher.handle(alert("a3", severity="minor"))
    await rig.dispatcher.handle(alert("w1", kind="water", rule="water_ph"))  # ops: none
    await rig.dispatcher.handle(alert("p1", kind="parking", rule="parking_overstay"))
    await rig.until(10 + 5 * HOUR, step=60)
    assert rig.work_orders == [("a1", "urban"), ("a2", "urban")]
    await rig.dispatcher.handle(alert("a1", "acknowledged"))
    await rig.dispatcher.handle(alert("a1", "resolved"))
    await rig.until(10 + 6 * HOUR, step=60)
    assert rig.work_orders == [("a1", "urban"), ("a2", "urban")]


async def test_work_orders_are_asked_per_group_when_the_route_groups_them(
    session_factory: SessionFactory,
) -> None:
    """With ``workorder_group_by`` every alert still asks once, with the key of its group:
    the same for one team, district, kind and rule, another for any other."""
    routing = {**ROUTING, "route": {**ROUTING["route"], "workorder_group_by": ["district", "kind"]}}
    rig = Rig(session_factory, parse_routing(routing))
    await rig.dispatcher.handle(alert("a1"))
    await rig.dispatcher.handle(alert("a2", severity="major", rule="manhole_flooding"))
    await rig.dispatcher.handle(alert("b1", district="kaifaqu"))
    await rig.until(10)
    assert rig.work_orders == [("a1", "urban"), ("a2", "urban"), ("b1", "urban")]
    groups = rig.work_order_groups
    assert groups["a1"] == groups["a2"] != groups["b1"]
    assert all(g is not None and len(g) == 40 for g in groups.values())
    plain = Rig(session_factory, parse_routing(ROUTING))  # no grouping: one order per alert
    await plain.dispatcher.handle(alert("c1"))
    assert plain.work_order_groups == {"c1": None}


async def test_the_shipped_routing_groups_work_orders_by_district_kind_and_rule(
    session_factory: SessionFactory,
) -> None:
    rig = Rig(session_factory, load_routing(DEFAULT_ROUTING_PATH, env={}))
    lights = [alert(f"s{i}", kind="streetlight", rule="streetlight_off_at_night") for i in range(3)]
    for event in [*lights, alert("s9", kind="streetlight", rule="streetlight_leakage")]:
        await rig.dispatcher.handle({**event, "severity": "major"})
    groups = rig.work_order_groups
    assert groups["s0"] == groups["s1"] == groups["s2"] != groups["s9"]


async def test_grouped_work_orders_are_asked_all_at_once_at_the_next_tick(
    session_factory: SessionFactory,
) -> None:
    """Given a batch opener, a grouping route's alerts wait for the next tick and go in one
    call; a failed call is made again at the following tick."""
    routing = {**ROUTING, "route": {**ROUTING["route"], "workorder_group_by": ["district", "kind"]}}
    batches: list[list[tuple[str, str, str]]] = []
    failing = [True]

    async def open_all(asked: list[tuple[dict[str, Any], str, str]]) -> None:
        if failing[0]:
            failing[0] = False
            raise RuntimeError("work order store unreachable")
        batches.append([(event["id"], team, group) for event, team, group in asked])

    rig = Rig(session_factory, parse_routing(routing), open_work_orders=open_all)
    for i in range(5):
        await rig.dispatcher.handle(alert(f"a{i}"))
    await rig.dispatcher.handle(alert("k1", district="kaifaqu"))
    assert batches == [] and rig.work_orders == []  # nothing asked while handling
    await rig.dispatcher.tick()  # the first call fails
    assert batches == [] and not failing[0]
    await rig.dispatcher.tick()
    ((first, *rest, other),) = batches
    assert [a for a, _, _ in (first, *rest, other)] == ["a0", "a1", "a2", "a3", "a4", "k1"]
    assert {(team, group) for _, team, group in rest} == {first[1:]} != {other[1:]}
    await rig.until(60)
    assert len(batches) == 1 and rig.work_orders == []  # asked once, never one by one


async def test_a_failed_work_order_is_retried_on_the_next_tick(rig: Rig) -> None:
    rig.fail_work_orders = True
    await rig.dispatcher.handle(alert("a1"))
    await rig.until(2)
    assert rig.work_orders == []
    rig.fail_work_orders = False
    await rig.until(3)
    await rig.until(20)
    assert rig.work_orders == [("a1", "urban")]
    assert await rig.new() == urban("firing", "a1:firing")


async def test_long_groups_are_truncated(session_factory: SessionFactory) -> None:
    rig = Rig(session_factory, parse_routing(ROUTING), max_alerts=3)
    for i in range(5):
        await rig.dispatcher.handle(alert(f"a{i}", severity="minor" if i < 3 else "critical"))
    await rig.until(10)
    assert await rig.new() == urban("firing", "a3:firing", "a4:firing", "a0:firing", truncated=2)


async def test_restore_reseeds_groups_after_a_restart(session_factory: SessionFactory) -> None:
    rig = Rig(session_factory, parse_routing(ROUTING))
    taken = rig.dispatcher.restore(
        [
            alert("a1"),
            alert("a2", "acknowledged"),
            alert("a3", "pending"),
            alert("a4", severity="minor"),
        ]
    )
    assert taken == 3
    await rig.until(10)  # the open firing alerts are told once more
    assert await rig.new() == urban("firing", "a1:firing", "a4:firing")
    assert rig.work_orders == [("a1", "urban")]  # asked again; the callee is idempotent
    await rig.until(10 + 4 * HOUR, step=30)  # and repeats go on
    assert await rig.new() == urban("firing", "a1:firing", "a4:firing")
    await rig.dispatcher.handle(alert("a2", "resolved"))  # acknowledged before the restart
    await rig.until(10 + 4 * HOUR + 60)
    assert await rig.new() == urban("firing", "a1:firing", "a4:firing", "a2:resolved")


async def test_the_shipped_routing_tells_ops_and_the_team(session_factory: SessionFactory) -> None:
    router = load_routing(DEFAULT_ROUTING_PATH, env={"CITYIOT_URBAN_WECOM_KEY": "k"})
    rig = Rig(session_factory, router)
    await rig.dispatcher.handle(alert("a1"))
    await rig.dispatcher.handle(
        alert("h1", kind="hydrant", rule="hydrant_low_pressure", severity="minor")
    )
    await rig.until(5)  # the fire brigade's group_wait is 5 s
    assert [(r.receiver, r.channel) for r in await rig.outbox.rows()] == [
        ("fire-brigade", "fire-mqtt")
    ]
    await rig.until(10)
    assert [(r.receiver, r.channel) for r in await rig.outbox.rows()] == [
        ("ops-centre", "ops-mqtt"),  # a1
        ("urban-management", "urban-mqtt"),
        ("urban-management", "urban-wecom"),
        ("ops-centre", "ops-mqtt"),  # h1
    ]
    assert rig.work_orders == [("a1", "urban")]


async def test_the_shipped_routing_sends_lifeline_alerts_to_their_teams(
    session_factory: SessionFactory,
) -> None:
    router = load_routing(DEFAULT_ROUTING_PATH, env={})  # the MQTT channels need no secret
    rig = Rig(session_factory, router)
    events = [
        alert("u1", kind="waterlogging", rule="underpass_closing", severity="critical"),
        alert("d1", kind="drainage", rule="drainage_fill_high", severity="minor"),
        alert("g1", kind="gas", rule="gas_methane_first_alarm", severity="major"),
        alert("t1", kind="tunnel", rule="tunnel_h2s", severity="critical"),
    ]
    for event in events:
        await rig.dispatcher.handle(event)
    await rig.until(10)
    told = {
        (r.receiver, r.channel, tuple(a["id"] for a in r.payload["alerts"]))
        for r in await rig.outbox.rows()
    }
    assert told >= {
        ("flood-control", "flood-mqtt", ("u1",)),
        ("flood-control", "flood-mqtt", ("d1",)),
        ("gas-company", "gas-mqtt", ("g1",)),
        ("tunnel-operator", "tunnel-mqtt", ("t1",)),
    }, told
    assert {r for r, _, _ in told} == {
        "ops-centre",
        "flood-control",
        "gas-company",
        "tunnel-operator",
    }
    # Critical and major alerts open work orders for the team; a minor fill ratio does not.
    assert sorted(rig.work_orders) == [("g1", "gas"), ("t1", "tunnel"), ("u1", "flood")]


async def test_bad_events_are_refused(rig: Rig) -> None:
    with pytest.raises(ValueError, match="alert event lacks severity, state"):
        await rig.dispatcher.handle(
            {"id": "x", "rule": "r", "device_id": "d", "kind": "manhole", "district": "yicheng"}
        )
    with pytest.raises(ValueError, match="state 'open' is not one of pending, firing"):
        await rig.dispatcher.handle(alert("a1", "open"))
