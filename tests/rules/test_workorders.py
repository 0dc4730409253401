"""Work orders on a real SQLite file and a real PostgreSQL database: lifecycle, refusals,
idempotent opening, listing, SLA clocks and the KPIs computed from timestamps."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest
from sqlalchemy import func, select, update

from cityiot.rules import workorders
from cityiot.rules.events import alert_event
from cityiot.rules.workorders import (
    CLOSURE_TARGET,
    STATES,
    VERIFICATION_TARGET,
    AlertNotFound,
    IllegalTransition,
    SessionFactory,
    SlaPolicy,
    SlaTarget,
    WorkOrderNotFound,
    get_work_order,
    kpis,
    list_work_orders,
    open_grouped_work_orders,
    open_work_order,
    transition,
    work_order_alerts,
)
from cityiot.storage.tables.alerts import Alert
from cityiot.storage.tables.workorders import WorkOrder
from tests.rules.conftest import HandClock

UTC = dt.UTC
CST = dt.timezone(dt.timedelta(hours=8))
T0 = dt.datetime(2025, 11, 23, 21, 0, tzinfo=CST)
MIN = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)


async def _alert(
    sessions: SessionFactory,
    severity: str = "critical",
    device_id: str = "MH-1",
    started_at: dt.datetime = T0,
) -> dict[str, object]:
    """Store a firing alert and return its event (the contract object)."""
    alert = Alert(
        id=uuid.uuid4().hex,
        rule="manhole_cover_open",
        device_id=device_id,
        kind="manhole",
        district="yicheng",
        vendor="acme",
        severity=severity,
        state="firing",
        started_at=started_at,
        fired_at=started_at,
        values={"cover_open": True},
        summary=f"井盖打开 / manhole cover open: {device_id}",
        open_key=None,
    )
    async with sessions() as session, session.begin():
        session.add(alert)
    return alert_event(alert)


async def _open(sessions: SessionFactory, clock: HandClock, **alert: object) -> WorkOrder:
    event = await _alert(sessions, **alert)  # type: ignore[arg-type]
    return await open_work_order(sessions, event, "drainage-yicheng", SlaPolicy(), clock)


async def _count(sessions: SessionFactory) -> int:
    async with sessions() as session:
        return (await session.execute(select(func.count()).select_from(WorkOrder))).scalar_one()


# --- lifecycle ----------------------------------------------------------------------------------


async def test_full_lifecycle_stamps_every_step(sessions: SessionFactory) -> None:
    clock = HandClock(T0)
    order = await _open(sessions, clock)
    assert order.state == "dispatched"
    assert order.created_at == T0
    assert order.verify_due_at == T0 + 30 * MIN  # critical
    assert order.close_due_at == T0 + 4 * HOUR
    assert (order.team, order.device_id, order.kind, order.district, order.severity) == (
        "drainage-yicheng",
        "MH-1",
        "manhole",
        "yicheng",
        "critical",
    )
    assert order.title == "井盖打开 / manhole cover open: MH-1"

    t_accept = clock.advance(5 * MIN)
    order = await transition(sessions, order.id, "accept", clock, by="zhang.wei")
    assert (order.state, order.accepted_at, order.assignee) == ("accepted", t_accept, "zhang.wei")

    t_site = clock.advance(20 * MIN)
    order = await transition(
        sessions, order.id, "on_site", clock, by="zhang.wei", note="cover displaced"
    )
    assert (order.state, order.on_site_at) == ("on_site", t_site)

    t_resolved = clock.advance(HOUR)
    order = await transition(sessions, order.id, "resolve", clock, note="cover reseated and locked")
    assert (order.state, order.resolved_at) == ("resolved", t_resolved)

    t_closed = clock.advance(30 * MIN)
    order = await transition(sessions, order.id, "close", clock, by="li.na")
    assert (order.state, order.closed_at) == ("closed", t_closed)

    stored = await get_work_order(sessions, order.id)
    assert (stored.created_at, stored.accepted_at, stored.on_site_at) == (T0, t_accept, t_site)
    assert (stored.resolved_at, stored.closed_at) == (t_resolved, t_closed)
    assert stored.assignee == "zhang.wei"  # accepting names the assignee; closing does not
    assert stored.updated_at == t_closed
    assert stored.note.splitlines() == [
        "2025-11-23T21:05:00+08:00 accept by zhang.wei",
        "2025-11-23T21:25:00+08:00 on_site by zhang.wei: cover displaced",
        "2025-11-23T22:25:00+08:00 resolve: cover reseated and locked",
        "2025-11-23T22:55:00+08:00 close by li.na",
    ]


# What each state allows, and how the refusal of anything else reads.
NEXT = {
    "dispatched": ("accept", "accepted"),
    "accepted": ("on_site", "verified on site"),
    "on_site": ("resolve", "resolved"),
    "resolved": ("close", "closed"),
    "closed": None,
}
SAID = {
    "accept": "accepted",
    "on_site": "verified on site",
    "resolve": "resolved",
    "close": "closed",
}


async def test_every_illegal_transition_is_refused_with_its_message(
    sessions: SessionFactory,
) -> None:
    clock = HandClock(T0)
    order = await _open(sessions, clock)
    refused = 0
    for state in STATES:
        assert (await get_work_order(sessions, order.id)).state == state
        allowed = NEXT[state]
        for action, said in SAID.items():
            if allowed is not None and action == allowed[0]:
                continue
            with pytest.raises(IllegalTransition) as caught:
                await transition(sessions, order.id, action, clock)
            if allowed is None:
                expected = f"work order {order.id} is closed; nothing more can be done, not {said}"
            else:
                expected = f"work order {order.id} is {state}; it can be {allowed[1]}, not {said}"
            if action == "close" and state in ("dispatched", "accepted"):
                expected += " (closing needs the on-site verification first)"
            assert str(caught.value) == expected
            assert (caught.value.state, caught.value.action) == (state, action)
            assert caught.value.allowed == (() if allowed is None else (allowed[0],))
            unchanged = await get_work_order(sessions, order.id)
            assert unchanged.state == state  # a refusal changes nothing
            refused += 1
        if allowed is not None:
            clock.advance(MIN)
            await transition(sessions, order.id, allowed[0], clock)
    assert refused == 3 * 4 + 4  # three wrong actions in each open state, all four once closed


async def test_close_needs_on_site_verification_even_when_the_alert_is_resolved(
    sessions: SessionFactory,
) -> None:
    clock = HandClock(T0)
    order = await _open(sessions, clock)
    async with sessions() as session, session.begin():
        await session.execute(
            update(Alert)
            .where(Alert.id == order.alert_id)
            .values(state="resolved", resolved_at=T0 + 10 * MIN)
        )
    clock.advance(10 * MIN)
    with pytest.raises(IllegalTransition, match="is dispatched; it can be accepted, not closed"):
        await transition(sessions, order.id, "close", clock)
    await transition(sessions, order.id, "accept", clock)
    with pytest.raises(IllegalTransition, match="needs the on-site verification first"):
        await transition(sessions, order.id, "close", clock)
    stored = await get_work_order(sessions, order.id)
    assert (stored.state, stored.on_site_at, stored.closed_at) == ("accepted", None, None)


async def test_unknown_work_order_and_unknown_action(sessions: SessionFactory) -> None:
    clock = HandClock(T0)
    with pytest.raises(WorkOrderNotFound, match="work order 'nope' does not exist"):
        await transition(sessions, "nope", "accept", clock)
    with pytest.raises(WorkOrderNotFound):
        await get_work_order(sessions, "nope")
    order = await _open(sessions, clock)
    with pytest.raises(ValueError, match="unknown work order action 'reopen'"):
        await transition(sessions, order.id, "reopen", clock)


async def test_concurrent_accepts_move_the_order_once(sessions: SessionFactory) -> None:
    clock = HandClock(T0)
    order = await _open(sessions, clock)
    results = await asyncio.gather(
        transition(sessions, order.id, "accept", clock, by="team-a"),
        transition(sessions, order.id, "accept", clock, by="team-b"),
        return_exceptions=True,
    )
    accepted = [r for r in results if isinstance(r, WorkOrder)]
    refused = [r for r in results if isinstance(r, IllegalTransition)]
    assert (len(accepted), len(refused)) == (1, 1), results
    assert (await get_work_order(sessions, order.id)).assignee == accepted[0].assignee


# --- opening --------------------------------------------------------------------------------


async def test_open_is_idempotent_per_alert(sessions: SessionFactory) -> None:
    clock = HandClock(T0)
    event = await _alert(sessions)
    first = await open_work_order(sessions, event, "drainage-yicheng", SlaPolicy(), clock)
    clock.advance(HOUR)
    again = await open_work_order(sessions, event, "another-team", SlaPolicy(), clock)
    assert again.id == first.id
    assert (again.team, again.created_at) == ("drainage-yicheng", T0)
    assert await _count(sessions) == 1


async def test_concurrent_opens_make_one_work_order(sessions: SessionFactory) -> None:
    clock = HandClock(T0)
    event = await _alert(sessions)
    orders = await asyncio.gather(
        *(
            open_work_order(sessions, event, "drainage-yicheng", SlaPolicy(), clock)
            for _ in range(5)
        )
    )
    assert len({o.id for o in orders}) == 1
    assert await _count(sessions) == 1


async def test_open_that_loses_the_insert_race_returns_the_winner(
    sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite serialises the gather above before the insert; force the race on every database:
    # the pre-check misses the winner's row, so the unique alert_id must decide.
    clock = HandClock(T0)
    event = await _alert(sessions)
    winner = await open_work_order(sessions, event, "drainage-yicheng", SlaPolicy(), clock)
    real = workorders._by_alert
    calls: list[str] = []

    async def blind_first_look(factory: SessionFactory, alert_id: str) -> WorkOrder | None:
        calls.append(alert_id)
        return None if len(calls) == 1 else await real(factory, alert_id)

    monkeypatch.setattr(workorders, "_by_alert", blind_first_look)
    loser = await open_work_order(sessions, event, "drainage-yicheng", SlaPolicy(), clock)
    assert loser.id == winner.id
    assert len(calls) == 2  # looked, inserted, hit the constraint, read the winner's row
    assert await _count(sessions) == 1


async def test_open_for_a_missing_alert_is_refused(sessions: SessionFactory) -> None:
    event = alert_event(
        Alert(
            id="0" * 32,
            rule="r",
            device_id="MH-1",
            kind="manhole",
            district="yicheng",
            vendor="acme",
            severity="major",
            state="firing",
            started_at=T0,
            values={},
            summary="",
        )
    )
    with pytest.raises(AlertNotFound, match="alert '0{32}' is not in the database"):
        await open_work_order(sessions, event, "t", SlaPolicy(), HandClock(T0))
    assert await _count(sessions) == 0


# --- grouped work orders ---------------------------------------------------------------------

GROUP = "a" * 40  # a route's key of (team, district, kind, rule)


async def _open_grouped(
    sessions: SessionFactory, clock: HandClock, group: str = GROUP, **alert: object
) -> WorkOrder:
    event = await _alert(sessions, **alert)  # type: ignore[arg-type]
    return await open_work_order(sessions, event, "urban", SlaPolicy(), clock, group)


async def test_alerts_of_one_group_gather_in_one_open_work_order(sessions: SessionFactory) -> None:
    """A district's 42 dark streetlights make one work order for the team, not 42; it keeps
    its first alert and SLA clocks, and counts and lists every alert it gathered."""
    clock = HandClock(T0)
    first = await _open_grouped(sessions, clock, device_id="SL-0")
    orders = [first]
    for i in range(1, 42):
        clock.advance(MIN)
        orders.append(await _open_grouped(sessions, clock, device_id=f"SL-{i}"))
    assert {o.id for o in orders} == {first.id}
    order = await get_work_order(sessions, first.id)
    assert (order.alert_count, order.alert_id, order.created_at) == (42, first.alert_id, T0)
    assert order.verify_due_at == first.verify_due_at
    assert order.updated_at == T0 + 41 * MIN
    alerts = await work_order_alerts(sessions, first.id)
    assert len(alerts) == len(set(alerts)) == 42 and alerts[0] == first.alert_id
    other = await _open_grouped(sessions, clock, group="b" * 40, device_id="SL-99")
    assert other.id != first.id and other.alert_count == 1
    assert await _count(sessions) == 2


async def test_opening_a_gathered_alert_again_changes_nothing(sessions: SessionFactory) -> None:
    clock = HandClock(T0)
    first = await _open_grouped(sessions, clock, device_id="SL-0")
    event = await _alert(sessions, device_id="SL-1")
    joined = await open_work_order(sessions, event, "urban", SlaPolicy(), clock, GROUP)
    again = await open_work_order(sessions, event, "urban", SlaPolicy(), clock, GROUP)
    plain = await open_work_order(sessions, event, "urban", SlaPolicy(), clock)
    assert joined.id == again.id == first.id
    assert plain.id == first.id  # idempotent per alert, grouped or not
    assert (await get_work_order(sessions, first.id)).alert_count == 2
    assert await _count(sessions) == 1


async def test_a_resolved_group_order_takes_no_more_alerts(sessions: SessionFactory) -> None:
    """Once the team resolved the site, the group's next alert opens a new order."""
    clock = HandClock(T0)
    first = await _open_grouped(sessions, clock, device_id="SL-0")
    for action in ("accept", "on_site"):
        await transition(sessions, first.id, action, clock)
    assert (await _open_grouped(sessions, clock, device_id="SL-1")).id == first.id  # on site
    await transition(sessions, first.id, "resolve", clock)
    assert (await get_work_order(sessions, first.id)).open_group is None
    clock.advance(HOUR)
    second = await _open_grouped(sessions, clock, device_id="SL-2")
    assert second.id != first.id
    assert (second.alert_count, second.created_at, second.open_group) == (1, T0 + HOUR, GROUP)
    assert (await get_work_order(sessions, first.id)).alert_count == 2


async def test_concurrent_alerts_of_a_group_make_one_work_order(sessions: SessionFactory) -> None:
    clock = HandClock(T0)
    events = [await _alert(sessions, device_id=f"SL-{i}") for i in range(12)]
    orders = await asyncio.gather(
        *(open_work_order(sessions, e, "urban", SlaPolicy(), clock, GROUP) for e in events)
    )
    assert len({o.id for o in orders}) == 1
    assert (await get_work_order(sessions, orders[0].id)).alert_count == 12
    assert len(await work_order_alerts(sessions, orders[0].id)) == 12
    assert await _count(sessions) == 1


async def test_a_missing_alert_joins_no_group(sessions: SessionFactory) -> None:
    clock = HandClock(T0)
    first = await _open_grouped(sessions, clock, device_id="SL-0")
    event = {**(await _alert(sessions, device_id="SL-1")), "id": "0" * 32}
    with pytest.raises(AlertNotFound, match="alert '0{32}' is not in the database"):
        await open_work_order(sessions, event, "urban", SlaPolicy(), clock, GROUP)
    assert (await get_work_order(sessions, first.id)).alert_count == 1


async def test_a_storm_of_alerts_is_grouped_in_one_call(sessions: SessionFactory) -> None:
    """Many alerts of a few groups at once: the same orders as one call per alert."""
    clock = HandClock(T0)
    first = await _open_grouped(sessions, clock, device_id="SL-0")  # the group's open order
    events = [await _alert(sessions, device_id=f"SL-{i}") for i in range(1, 121)]
    others = [await _alert(sessions, device_id=f"MH-{i}") for i in range(30)]
    asked = [(e, "urban", GROUP) for e in events] + [(e, "urban", "b" * 40) for e in others]
    clock.advance(MIN)
    assert await open_grouped_work_orders(sessions, asked, SlaPolicy(), clock) == 150
    assert await open_grouped_work_orders(sessions, asked, SlaPolicy(), clock) == 0  # again
    assert (await get_work_order(sessions, first.id)).alert_count == 121
    assert len(await work_order_alerts(sessions, first.id)) == 121
    orders = await list_work_orders(sessions)
    assert [(o.alert_count, o.open_group) for o in orders] == [(121, GROUP), (30, "b" * 40)]
    assert orders[1].alert_id == others[0]["id"] and orders[1].created_at == T0 + MIN
    one_more = await _open_grouped(sessions, clock, group="b" * 40, device_id="MH-99")
    assert one_more.id == orders[1].id and one_more.alert_count == 31


async def test_a_grouped_call_with_a_missing_alert_is_refused(sessions: SessionFactory) -> None:
    clock = HandClock(T0)
    stored = await _alert(sessions, device_id="SL-1")
    missing = {**stored, "id": "0" * 32}
    with pytest.raises(AlertNotFound):
        await open_grouped_work_orders(
            sessions, [(missing, "urban", GROUP), (stored, "urban", GROUP)], SlaPolicy(), clock
        )
    assert await _count(sessions) == 0


# --- SLA ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("severity", "verify", "close_"),
    [
        ("critical", 30 * MIN, 4 * HOUR),
        ("major", 2 * HOUR, 24 * HOUR),
        ("minor", 8 * HOUR, 72 * HOUR),
        ("warning", 24 * HOUR, 7 * 24 * HOUR),
    ],
)
async def test_sla_clocks_per_severity(
    sessions: SessionFactory, severity: str, verify: dt.timedelta, close_: dt.timedelta
) -> None:
    order = await _open(sessions, HandClock(T0), severity=severity)
    assert (order.verify_due_at - order.created_at, order.close_due_at - order.created_at) == (
        verify,
        close_,
    )


def test_sla_policy_is_checked() -> None:
    custom = SlaPolicy({**SlaPolicy().targets, "critical": SlaTarget(15 * MIN, 2 * HOUR)})
    assert custom.due("critical", T0) == (T0 + 15 * MIN, T0 + 2 * HOUR)
    with pytest.raises(ValueError, match="no target for severity warning"):
        SlaPolicy({k: v for k, v in SlaPolicy().targets.items() if k != "warning"})
    with pytest.raises(ValueError, match="closing cannot be due before the verification"):
        SlaTarget(verify=2 * HOUR, close=HOUR)
    with pytest.raises(ValueError, match="severity 'urgent' has no SLA target"):
        SlaPolicy().due("urgent", T0)


# --- listing --------------------------------------------------------------------------------


async def test_list_filters_and_pages_oldest_first(sessions: SessionFactory) -> None:
    clock = HandClock(T0)
    ids = []
    for i in range(5):
        event = await _alert(sessions, device_id=f"MH-{i}")
        team = "lights" if i % 2 else "drainage"
        ids.append((await open_work_order(sessions, event, team, SlaPolicy(), clock)).id)
        clock.advance(MIN)
    await transition(sessions, ids[0], "accept", clock)

    everything = await list_work_orders(sessions)
    assert [o.id for o in everything] == ids
    page1 = await list_work_orders(sessions, limit=2)
    page2 = await list_work_orders(sessions, limit=2, after_id=page1[-1].id)
    page3 = await list_work_orders(sessions, limit=2, after_id=page2[-1].id)
    assert [o.id for o in page1 + page2 + page3] == ids
    assert await list_work_orders(sessions, after_id=ids[-1]) == []
    assert [o.id for o in await list_work_orders(sessions, team="lights")] == [ids[1], ids[3]]
    assert [o.id for o in await list_work_orders(sessions, state="accepted")] == [ids[0]]
    drainage_dispatched = await list_work_orders(sessions, team="drainage", state="dispatched")
    assert [o.id for o in drainage_dispatched] == [ids[2], ids[4]]
    with pytest.raises(ValueError, match="unknown work order state 'open'"):
        await list_work_orders(sessions, state="open")
    with pytest.raises(ValueError, match="limit 0 is out of range"):
        await list_work_orders(sessions, limit=0)
    with pytest.raises(WorkOrderNotFound):
        await list_work_orders(sessions, after_id="nope")


# --- KPIs -----------------------------------------------------------------------------------

NOV = dt.datetime(2025, 11, 1, tzinfo=CST)
DEC = dt.datetime(2025, 12, 1, tzinfo=CST)


async def _stored(
    sessions: SessionFactory,
    created: dt.datetime,
    *,
    team: str = "lights",
    accepted: dt.timedelta | None = None,
    on_site_: dt.timedelta | None = None,
    resolved: dt.timedelta | None = None,
    closed: dt.timedelta | None = None,
) -> None:
    """A hand-built critical work order (30 min to verify, 4 h to close), times from creation."""
    event = await _alert(sessions, started_at=created)

    def at(delta: dt.timedelta | None) -> dt.datetime | None:
        return None if delta is None else created + delta

    states = ["closed", "resolved", "on_site", "accepted"]
    stamps = [closed, resolved, on_site_, accepted]
    state = next((s for s, t in zip(states, stamps, strict=True) if t is not None), "dispatched")
    async with sessions() as session, session.begin():
        session.add(
            WorkOrder(
                id=uuid.uuid4().hex,
                alert_id=event["id"],
                team=team,
                state=state,
                device_id="MH-1",
                kind="manhole",
                district="yicheng",
                severity="critical",
                created_at=created,
                accepted_at=at(accepted),
                on_site_at=at(on_site_),
                resolved_at=at(resolved),
                closed_at=at(closed),
                verify_due_at=created + 30 * MIN,
                close_due_at=created + 4 * HOUR,
            )
        )


async def test_kpis_of_forty_orders_meet_the_city_targets(sessions: SessionFactory) -> None:
    for i in range(40):
        created = NOV + i * HOUR
        if i < 38:  # verified in 20 min, closed in 3 h
            await _stored(
                sessions,
                created,
                accepted=5 * MIN,
                on_site_=20 * MIN,
                resolved=2 * HOUR,
                closed=3 * HOUR,
            )
        elif i == 38:  # verified in time, resolved, not closed yet
            await _stored(sessions, created, accepted=5 * MIN, on_site_=20 * MIN, resolved=2 * HOUR)
        else:  # on site 15 min late
            await _stored(sessions, created, accepted=5 * MIN, on_site_=45 * MIN)
    # Outside the population: before the period, at its (exclusive) end, another team.
    await _stored(sessions, NOV - HOUR)
    await _stored(sessions, DEC)
    await _stored(sessions, NOV + HOUR, team="drainage")

    k = await kpis(sessions, NOV, DEC, team="lights")
    assert (k.start, k.end, k.team, k.created) == (NOV, DEC, "lights", 40)
    assert (k.verification_due, k.verified_on_time) == (40, 39)
    assert k.on_time_verification_rate == 0.975
    assert k.meets_verification_target is True
    assert (k.closure_due, k.closed, k.closed_on_time) == (40, 38, 38)
    assert k.closure_rate == 0.95  # exactly the target: met
    assert k.meets_closure_target is True
    assert k.on_time_closure_rate == 0.95
    assert k.by_state == {"dispatched": 0, "accepted": 0, "on_site": 1, "resolved": 1, "closed": 38}
    assert k.mean_time_to_verify == dt.timedelta(seconds=(39 * 20 + 45) * 60 / 40)  # 20.625 min
    assert k.mean_time_to_close == 3 * HOUR
    assert (VERIFICATION_TARGET, CLOSURE_TARGET) == (0.97, 0.95)

    everyone = await kpis(sessions, NOV, DEC)
    assert (everyone.created, everyone.verification_due, everyone.verified_on_time) == (41, 41, 39)
    assert (everyone.closure_due, everyone.closed) == (41, 38)
    assert everyone.by_state["dispatched"] == 1
    assert everyone.meets_verification_target is False  # 39/41 = 95.1%
    assert everyone.meets_closure_target is False  # 38/41 = 92.7%

    d = k.as_dict()
    assert d["start"] == "2025-11-01T00:00:00+08:00"
    assert (d["closure_due"], d["closure_rate"], d["on_time_closure_rate"]) == (40, 0.95, 0.95)
    assert (d["on_time_verification_rate"], d["verification_target"]) == (0.975, 0.97)
    assert d["mean_time_to_close_s"] == 3 * 3600.0


async def test_kpis_judge_the_books_as_they_stood_at_the_end(sessions: SessionFactory) -> None:
    end = DEC
    # A: 10 min old at the end, not verified, due after the end: not judged yet.
    await _stored(sessions, end - 10 * MIN)
    # B: never accepted, overdue since 1.5 h.
    await _stored(sessions, end - 2 * HOUR)
    # C: accepted before the end, on site only after it (late anyway).
    await _stored(sessions, end - 3 * HOUR, accepted=HOUR, on_site_=4 * HOUR)
    # D: verified 10 min after creation, before the end.
    await _stored(sessions, end - 20 * MIN, accepted=5 * MIN, on_site_=10 * MIN)
    # E: verified and resolved in the period, closed only an hour after the end.
    await _stored(
        sessions,
        NOV + HOUR,
        accepted=5 * MIN,
        on_site_=20 * MIN,
        resolved=HOUR,
        closed=30 * 24 * HOUR,
    )

    k = await kpis(sessions, NOV, end)
    assert k.created == 5
    assert (k.verification_due, k.verified_on_time) == (4, 2)  # B, C, D, E; on time: D, E
    assert k.on_time_verification_rate == 0.5
    assert k.meets_verification_target is False
    assert (k.closure_due, k.closed) == (1, 0)  # only E was due to close; A-D are not yet
    assert (k.closure_rate, k.meets_closure_target, k.on_time_closure_rate) == (0.0, False, 0.0)
    assert k.by_state == {"dispatched": 2, "accepted": 1, "on_site": 1, "resolved": 1, "closed": 0}
    assert k.mean_time_to_verify == 15 * MIN  # D 10 min, E 20 min
    assert k.mean_time_to_close is None

    later = await kpis(sessions, NOV, end + 2 * 24 * HOUR)  # the late work is now in the books
    assert (later.created, later.closed, later.closed_on_time) == (5, 1, 0)
    assert (later.closure_due, later.closure_rate, later.on_time_closure_rate) == (5, 0.2, 0.0)
    assert (later.verification_due, later.verified_on_time) == (5, 2)


async def test_kpis_of_an_empty_period_and_bad_periods(sessions: SessionFactory) -> None:
    k = await kpis(sessions, NOV, DEC, team="nobody")
    assert (k.created, k.on_time_verification_rate, k.closure_rate) == (0, None, None)
    assert (k.closure_due, k.on_time_closure_rate) == (0, None)
    assert (k.meets_verification_target, k.meets_closure_target) == (True, True)
    assert k.by_state == dict.fromkeys(STATES, 0)
    assert (k.mean_time_to_verify, k.mean_time_to_close) == (None, None)
    with pytest.raises(ValueError, match="timezone-aware"):
        await kpis(sessions, dt.datetime(2025, 11, 1), DEC)
    with pytest.raises(ValueError, match="the period is empty"):
        await kpis(sessions, DEC, NOV)


async def test_kpis_do_not_judge_an_order_before_it_is_due(sessions: SessionFactory) -> None:
    # Dispatched a minute before the end: 29 min to verify, 3 h 59 min to close.
    await _stored(sessions, DEC - MIN)

    k = await kpis(sessions, NOV, DEC)
    assert (k.created, k.verification_due, k.closure_due, k.closed) == (1, 0, 0, 0)
    assert (k.closure_rate, k.on_time_closure_rate, k.on_time_verification_rate) == (
        None,
        None,
        None,
    )
    assert (k.meets_closure_target, k.meets_verification_target) == (True, True)
    d = k.as_dict()
    assert (d["closure_due"], d["closure_rate"], d["meets_closure_target"]) == (0, None, True)


async def test_kpis_count_closure_over_the_orders_due(sessions: SessionFactory) -> None:
    for i in range(3):  # closed in 3 h: on time
        await _stored(
            sessions, NOV + i * HOUR, accepted=5 * MIN, on_site_=20 * MIN, closed=3 * HOUR
        )
    await _stored(sessions, NOV + 3 * HOUR, accepted=5 * MIN, on_site_=20 * MIN, closed=6 * HOUR)
    await _stored(sessions, NOV + 4 * HOUR, accepted=5 * MIN, on_site_=20 * MIN)  # overdue, open
    # Closed an hour after dispatch, three hours before it was due to close: early counts.
    await _stored(
        sessions,
        DEC - 2 * HOUR,
        accepted=5 * MIN,
        on_site_=10 * MIN,
        resolved=30 * MIN,
        closed=HOUR,
    )
    await _stored(sessions, DEC - HOUR, accepted=5 * MIN)  # open, not due yet: not judged

    k = await kpis(sessions, NOV, DEC)
    assert k.created == 7
    assert (k.closure_due, k.closed, k.closed_on_time) == (6, 5, 4)
    assert k.closure_rate == 5 / 6
    assert k.meets_closure_target is False  # 83.3% < 95%
    assert k.on_time_closure_rate == 4 / 6
    assert k.by_state["closed"] == 5
    d = k.as_dict()
    assert (d["closure_due"], d["closed"], d["closed_on_time"]) == (6, 5, 4)
    assert (d["closure_rate"], d["on_time_closure_rate"], d["closure_target"]) == (
        5 / 6,
        4 / 6,
        0.95,
    )

    # A day later the last order is due too and, still open, counts against the rate.
    later = await kpis(sessions, NOV, DEC + 24 * HOUR)
    assert (later.created, later.closure_due, later.closed) == (7, 7, 5)
