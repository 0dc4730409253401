"""Work orders: the field team's task for a firing alert, its SLA clocks and the KPIs over any
period (docs/design.md §5).

Lifecycle, strictly in order (the API exposes ``POST /workorders/{id}/{action}``)::

    dispatched --accept--> accepted --on_site--> on_site --resolve--> resolved --close--> closed

Every transition stamps its own time from the injected clock, so a work order's history is its
timestamps and the KPIs are computed from them.

A work order belongs to one alert, or, when its route groups work orders
(``workorder_group_by``), to a group of alerts: the group's open order (not yet resolved)
gathers every alert of the group, so a district's power cut is one order for the field team,
not one per dark streetlight.

Closing needs the on-site verification first: a resolved *alert* never closes a work order by
itself, only a team that went to look does.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from sqlalchemy import ColumnElement, and_, case, extract, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from cityiot.rules.events import SEVERITIES, Clock, city_time
from cityiot.storage.tables.alerts import Alert
from cityiot.storage.tables.workorders import WorkOrder, WorkOrderAlert
from cityiot.storage.writes import write_now, writing

log = logging.getLogger("cityiot.rules.workorders")

SessionFactory = async_sessionmaker[AsyncSession]

STATES = ("dispatched", "accepted", "on_site", "resolved", "closed")

# The city's targets for city-management cases (docs/design.md §1).
VERIFICATION_TARGET = 0.97  # on-time verification rate
CLOSURE_TARGET = 0.95  # closure rate


@dataclass(frozen=True, slots=True)
class _Transition:
    action: str
    source: str
    target: str
    stamp: str  # the WorkOrder column that records when it happened
    done: str  # how a message says it: "it can be <done>"


TRANSITIONS: dict[str, _Transition] = {
    t.action: t
    for t in (
        _Transition("accept", "dispatched", "accepted", "accepted_at", "accepted"),
        _Transition("on_site", "accepted", "on_site", "on_site_at", "verified on site"),
        _Transition("resolve", "on_site", "resolved", "resolved_at", "resolved"),
        _Transition("close", "resolved", "closed", "closed_at", "closed"),
    )
}
ACTIONS = tuple(TRANSITIONS)


class WorkOrderNotFound(LookupError):
    """No work order has this id."""

    def __init__(self, work_order_id: str) -> None:
        super().__init__(f"work order {work_order_id!r} does not exist")
        self.work_order_id = work_order_id


class AlertNotFound(LookupError):
    """A work order was asked for an alert that is not in the database."""

    def __init__(self, alert_id: str) -> None:
        super().__init__(
            f"alert {alert_id!r} is not in the database: a work order can only be opened "
            "for a stored alert"
        )
        self.alert_id = alert_id


class IllegalTransition(ValueError):
    """The work order's current state does not allow the asked action."""

    def __init__(self, work_order_id: str, state: str, action: str) -> None:
        allowed = [t for t in TRANSITIONS.values() if t.source == state]
        asked = TRANSITIONS[action].done
        if allowed:
            message = (
                f"work order {work_order_id} is {state}; it can be {allowed[0].done}, not {asked}"
            )
        else:
            message = (
                f"work order {work_order_id} is {state}; nothing more can be done, not {asked}"
            )
        if action == "close" and state in ("dispatched", "accepted"):
            message += " (closing needs the on-site verification first)"
        super().__init__(message)
        self.work_order_id = work_order_id
        self.state = state
        self.action = action
        self.allowed = tuple(t.action for t in allowed)


# ---------------------------------------------------------------------------------------------
# SLA


@dataclass(frozen=True, slots=True)
class SlaTarget:
    """How long a team has, from dispatch, to be on site (verify) and to close."""

    verify: dt.timedelta
    close: dt.timedelta

    def __post_init__(self) -> None:
        if self.verify <= dt.timedelta(0) or self.close < self.verify:
            raise ValueError(
                f"SLA target verify={self.verify} close={self.close} is not valid: both must be "
                "positive and closing cannot be due before the verification"
            )


# Why these numbers: critical alerts (open or tilted manhole cover, gas, a burst main) endanger
# people on the street now, so a team must be there within half an hour and make the site safe
# within a shift's half (4 h). Major ones (low hydrant pressure, streetlight leakage, a dark
# street at night) degrade a safety service: on site within 2 h, fixed within a working day
# (24 h). Minor ones (a lamp burning by day, water quality drifting) can wait for the next
# round: 8 h / 3 days. Warnings (low battery, a quiet device) go into the weekly maintenance
# round: 24 h / 7 days. The city can override them per severity.
DEFAULT_SLA_TARGETS: Mapping[str, SlaTarget] = {
    "critical": SlaTarget(verify=dt.timedelta(minutes=30), close=dt.timedelta(hours=4)),
    "major": SlaTarget(verify=dt.timedelta(hours=2), close=dt.timedelta(hours=24)),
    "minor": SlaTarget(verify=dt.timedelta(hours=8), close=dt.timedelta(hours=72)),
    "warning": SlaTarget(verify=dt.timedelta(hours=24), close=dt.timedelta(days=7)),
}


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    """SLA targets per alert severity; every severity must have one."""

    targets: Mapping[str, SlaTarget] = field(default_factory=lambda: dict(DEFAULT_SLA_TARGETS))

    def __post_init__(self) -> None:
        missing = [s for s in SEVERITIES if s not in self.targets]
        if missing:
            raise ValueError(f"SLA policy has no target for severity {', '.join(missing)}")

    def due(self, severity: str, dispatched_at: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        """``(verify_due_at, close_due_at)`` of a work order of ``severity`` dispatched then."""
        target = self.targets.get(severity)
        if target is None:
            raise ValueError(
                f"severity {severity!r} has no SLA target: use one of {', '.join(self.targets)}"
            )
        return dispatched_at + target.verify, dispatched_at + target.close


def _now(clock: Clock) -> dt.datetime:
    return dt.datetime.fromtimestamp(clock(), dt.UTC)


# ---------------------------------------------------------------------------------------------
# Opening, reading, transitions


async def open_work_order(
    session_factory: SessionFactory,
    event: Mapping[str, Any],
    team: str,
    sla: SlaPolicy,
    clock: Clock,
    group: str | None = None,
) -> WorkOrder:
    """The work order of the alert ``event`` (the alert event contract), opened for ``team``.

    Idempotent per alert: when the alert already has a work order, that one is returned
    unchanged, also when several callers race (the unique ``alert_id`` decides; the losers
    read the winner's row). Raises ``AlertNotFound`` when the alert is not stored.

    With ``group`` (a key of at most 64 characters, e.g. from the route's
    ``workorder_group_by`` labels) the alert joins the group's open work order — one not yet
    resolved — when there is one: it is added to the order's alerts and ``alert_count``
    grows; the order keeps its first alert, team, severity and SLA clocks. Otherwise it opens
    the group's order. Racing callers make one open order per group (its unique
    ``open_group`` decides; the losers join the winner's).
    """
    if group is not None:
        return await _open_in_group(session_factory, event, team, sla, clock, group)
    alert_id = str(event["id"])
    existing = await _by_alert(session_factory, alert_id)
    if existing is not None:
        return existing
    order = _new_order(event, team, sla, _now(clock), None)
    try:
        # On the loop's thread on SQLite (write_now): an alert waiting for its write turn
        # behind this order waits a fraction of a ms, not several trips through the loop.
        await write_now(session_factory, lambda session: session.add(order), what="work order")
    except IntegrityError as exc:
        # Another caller opened it first (unique alert_id) or the alert is missing (FK).
        existing = await _by_alert(session_factory, alert_id)
        if existing is not None:
            return existing
        raise AlertNotFound(alert_id) from exc
    log.info(
        "event=work_order_opened id=%s alert=%s team=%s severity=%s",
        order.id,
        alert_id,
        team,
        order.severity,
    )
    return order


def _new_order(
    event: Mapping[str, Any], team: str, sla: SlaPolicy, now: dt.datetime, group: str | None
) -> WorkOrder:
    verify_due, close_due = sla.due(str(event["severity"]), now)
    return WorkOrder(
        id=uuid.uuid4().hex,
        alert_id=str(event["id"]),
        team=team,
        state="dispatched",
        device_id=str(event["device_id"]),
        kind=str(event["kind"]),
        district=str(event["district"]),
        severity=str(event["severity"]),
        title=str(event.get("summary") or f"{event.get('rule', 'alert')} on {event['device_id']}"),
        created_at=now,
        verify_due_at=verify_due,
        close_due_at=close_due,
        note="",
        updated_at=now,
        open_group=group,
        alert_count=1,
    )


GROUP_TRIES = 5  # a join or open that lost a race tries again this often


async def _open_in_group(
    session_factory: SessionFactory,
    event: Mapping[str, Any],
    team: str,
    sla: SlaPolicy,
    clock: Clock,
    group: str,
) -> WorkOrder:
    if len(group) > 64:
        raise ValueError(f"work order group key {group!r} is longer than 64 characters")
    alert_id = str(event["id"])
    now = _now(clock)

    def join_or_open(session: Session) -> tuple[str, bool]:
        """(the order's id, whether this call opened it)."""
        existing = session.scalar(
            select(WorkOrder.id).where(WorkOrder.alert_id == alert_id)
        ) or session.scalar(
            select(WorkOrderAlert.work_order_id).where(WorkOrderAlert.alert_id == alert_id)
        )
        if existing is not None:
            return existing, False
        order_id = session.scalar(select(WorkOrder.id).where(WorkOrder.open_group == group))
        if order_id is None:
            order = _new_order(event, team, sla, now, group)
            session.add(order)
            return order.id, True
        session.add(WorkOrderAlert(alert_id=alert_id, work_order_id=order_id, added_at=now))
        session.execute(
            update(WorkOrder)
            .where(WorkOrder.id == order_id)
            .values(alert_count=WorkOrder.alert_count + 1, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return order_id, False

    for attempt in range(GROUP_TRIES):
        try:
            order_id, opened = await write_now(session_factory, join_or_open, what="work order")
            break
        except IntegrityError as exc:
            # Another caller opened the group's order (unique open_group) or took this alert
            # first (unique alert ids): look again. Or the alert is missing (FK).
            if not await _alert_stored(session_factory, alert_id):
                raise AlertNotFound(alert_id) from exc
            if attempt == GROUP_TRIES - 1:
                raise
    log.info(
        "event=%s id=%s alert=%s team=%s group=%s",
        "work_order_opened" if opened else "work_order_joined",
        order_id,
        alert_id,
        team,
        group,
    )
    return await get_work_order(session_factory, order_id)


# (alert event, team, group key): one work-order request of the dispatcher
WorkOrderRequest = tuple[Mapping[str, Any], str, str]
BATCH_CHUNK = 500  # alert ids per IN (...) list


async def open_grouped_work_orders(
    session_factory: SessionFactory,
    requests: Sequence[WorkOrderRequest],
    sla: SlaPolicy,
    clock: Clock,
) -> int:
    """:func:`open_work_order` with a group for many alerts at once, in one transaction: what
    an alert storm asks for (thousands of alerts of a few groups) costs a few statements, not
    a few per alert. Returns the number of alerts this call placed in a work order (in the
    fallback below: the number of requests).

    The same outcome as one call per request: an alert already in a work order is left where
    it is; each group's open order gathers its alerts, or one is opened for the first. When a
    concurrent caller gets in the way (the unique keys), or an alert is not stored, each
    request is made on its own instead (:func:`open_work_order`; ``AlertNotFound`` raised).
    """
    if not requests:
        return 0
    for _, _, group in requests:
        if len(group) > 64:
            raise ValueError(f"work order group key {group!r} is longer than 64 characters")
    now = _now(clock)

    def place(session: Session) -> int:
        ids = list(dict.fromkeys(str(event["id"]) for event, _, _ in requests))
        placed: set[str] = set()
        for start in range(0, len(ids), BATCH_CHUNK):
            chunk = ids[start : start + BATCH_CHUNK]
            placed.update(
                session.scalars(select(WorkOrder.alert_id).where(WorkOrder.alert_id.in_(chunk)))
            )
            placed.update(
                session.scalars(
                    select(WorkOrderAlert.alert_id).where(WorkOrderAlert.alert_id.in_(chunk))
                )
            )
        groups = sorted({group for _, _, group in requests})
        found = session.execute(
            select(WorkOrder.open_group, WorkOrder.id).where(WorkOrder.open_group.in_(groups))
        )
        open_orders = {str(group): order_id for group, order_id in found}
        joined: dict[str, int] = {}
        opened = 0
        for event, team, group in requests:
            alert_id = str(event["id"])
            if alert_id in placed:
                continue
            placed.add(alert_id)
            order_id = open_orders.get(group)
            if order_id is None:
                order = _new_order(event, team, sla, now, group)
                session.add(order)
                open_orders[group] = order.id
                opened += 1
                continue
            session.add(WorkOrderAlert(alert_id=alert_id, work_order_id=order_id, added_at=now))
            joined[order_id] = joined.get(order_id, 0) + 1
        session.flush()
        for order_id, count in joined.items():
            session.execute(
                update(WorkOrder)
                .where(WorkOrder.id == order_id)
                .values(alert_count=WorkOrder.alert_count + count, updated_at=now)
                .execution_options(synchronize_session=False)
            )
        return sum(joined.values()) + opened

    try:
        placed = await write_now(
            session_factory, place, what="work orders", direct=len(requests) <= 2000
        )
    except IntegrityError:
        placed = 0
        for event, team, group in requests:
            await open_work_order(session_factory, event, team, sla, clock, group)
            placed += 1
        return placed
    log.info("event=work_orders_grouped alerts=%d placed=%d", len(requests), placed)
    return placed


async def _alert_stored(session_factory: SessionFactory, alert_id: str) -> bool:
    async with session_factory() as session:
        return await session.get(Alert, alert_id) is not None


async def _by_alert(session_factory: SessionFactory, alert_id: str) -> WorkOrder | None:
    """The work order the alert opened or joined, if any."""
    async with session_factory() as session:
        result = await session.execute(select(WorkOrder).where(WorkOrder.alert_id == alert_id))
        order = result.scalar_one_or_none()
        if order is not None:
            return order
        joined = select(WorkOrderAlert.work_order_id).where(WorkOrderAlert.alert_id == alert_id)
        result = await session.execute(select(WorkOrder).where(WorkOrder.id.in_(joined)))
        return result.scalar_one_or_none()


async def work_order_alerts(session_factory: SessionFactory, work_order_id: str) -> list[str]:
    """The ids of the alerts a work order gathered: the one that opened it, then those that
    joined it, in the order they came. ``WorkOrderNotFound`` for an unknown id."""
    order = await get_work_order(session_factory, work_order_id)
    async with session_factory() as session:
        joined = await session.scalars(
            select(WorkOrderAlert.alert_id)
            .where(WorkOrderAlert.work_order_id == work_order_id)
            .order_by(WorkOrderAlert.added_at, WorkOrderAlert.alert_id)
        )
        return [order.alert_id, *joined]


async def get_work_order(session_factory: SessionFactory, work_order_id: str) -> WorkOrder:
    """The work order with this id; ``WorkOrderNotFound`` otherwise."""
    async with session_factory() as session:
        order = await session.get(WorkOrder, work_order_id)
    if order is None:
        raise WorkOrderNotFound(work_order_id)
    return order


async def list_work_orders(
    session_factory: SessionFactory,
    team: str | None = None,
    state: str | None = None,
    limit: int = 100,
    after_id: str | None = None,
) -> list[WorkOrder]:
    """Work orders oldest first (the order a team works through its queue), one page.

    ``after_id`` is the last id of the previous page (keyset pagination on
    ``(created_at, id)``, stable while orders are added). Raises ``ValueError`` for an unknown
    state or a limit outside 1..1000, ``WorkOrderNotFound`` for an unknown cursor.
    """
    if state is not None and state not in STATES:
        raise ValueError(f"unknown work order state {state!r}: use one of {', '.join(STATES)}")
    if not 1 <= limit <= 1000:
        raise ValueError(f"limit {limit} is out of range: use 1 to 1000")
    query = select(WorkOrder)
    if team is not None:
        query = query.where(WorkOrder.team == team)
    if state is not None:
        query = query.where(WorkOrder.state == state)
    async with session_factory() as session:
        if after_id is not None:
            cursor = await session.get(WorkOrder, after_id)
            if cursor is None:
                raise WorkOrderNotFound(after_id)
            query = query.where(
                or_(
                    WorkOrder.created_at > cursor.created_at,
                    and_(WorkOrder.created_at == cursor.created_at, WorkOrder.id > cursor.id),
                )
            )
        query = query.order_by(WorkOrder.created_at, WorkOrder.id).limit(limit)
        return list((await session.execute(query)).scalars())


async def transition(
    session_factory: SessionFactory,
    work_order_id: str,
    action: str,
    clock: Clock,
    by: str | None = None,
    note: str | None = None,
) -> WorkOrder:
    """Apply ``action`` (accept, on_site, resolve, close) and return the updated work order.

    Stamps the action's time from ``clock``. ``by`` becomes the assignee when the order is
    accepted (or when it has none yet); ``by`` and ``note`` are also appended to the order's
    note as one journal line. Raises ``IllegalTransition`` when the current state does not
    allow the action (also when a concurrent caller moved it first), ``WorkOrderNotFound`` for
    an unknown id, ``ValueError`` for an unknown action.
    """
    step = TRANSITIONS.get(action)
    if step is None:
        raise ValueError(f"unknown work order action {action!r}: use one of {', '.join(ACTIONS)}")
    now = _now(clock)
    async with writing(session_factory) as session:
        order = await session.get(WorkOrder, work_order_id)
        if order is None:
            raise WorkOrderNotFound(work_order_id)
        if order.state != step.source:
            raise IllegalTransition(work_order_id, order.state, action)
        values: dict[str, Any] = {"state": step.target, step.stamp: now, "updated_at": now}
        if step.target == "resolved":
            values["open_group"] = None  # the group's next alert opens a new order
        if by and (action == "accept" or order.assignee is None):
            values["assignee"] = by
        if by or note:
            line = f"{city_time(now)} {action}" + (f" by {by}" if by else "")
            line += f": {note}" if note else ""
            values["note"] = f"{order.note}\n{line}" if order.note else line
        # Compare-and-set on the state: of two concurrent callers only one moves it.
        result = await session.execute(
            update(WorkOrder)
            .where(WorkOrder.id == work_order_id, WorkOrder.state == step.source)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            await session.refresh(order)
            raise IllegalTransition(work_order_id, order.state, action)
    log.info("event=work_order_%s id=%s by=%s", step.target, work_order_id, by or "-")
    return await get_work_order(session_factory, work_order_id)


# ---------------------------------------------------------------------------------------------
# KPIs


@dataclass(frozen=True, slots=True)
class Kpis:
    """Work-order KPIs of the period ``[start, end)``, as the books stood at ``end``.

    The population is the work orders **created** in ``[start, end)`` (of ``team`` if given).
    Every event is counted only if its timestamp is before ``end``, so a past period's KPIs do
    not change when late work is done afterwards (and a period ending in the future is "now").
    As in CJJ/T 106, a rate is judged over the orders that were **due** by ``end``: an order
    still inside its deadline and not yet done is not counted against anyone.

    - ``verification_due`` (应核查数): orders of the population whose verification was due
      before the end (``verify_due_at < end``) or was done before the end (``on_site_at < end``).
    - ``verified_on_time`` (按时核查数): of those, orders with ``on_site_at <= verify_due_at``.
    - ``on_time_verification_rate`` (按时核查率) = verified_on_time / verification_due
      (target 97%).
    - ``closure_due`` (应结案数): orders of the population whose closure was due before the
      end (``close_due_at < end``) or that were closed before the end (closing early counts).
    - ``closed`` (结案数): of those, orders with ``closed_at < end``;
      ``closed_on_time`` (按期结案数): of those, ``closed_at <= close_due_at``.
    - ``closure_rate`` (结案率) = closed / closure_due (target 95%).
    - ``on_time_closure_rate`` (按期结案率) = closed_on_time / closure_due (no target).
    - ``by_state``: the population's state at ``end``, rebuilt from the timestamps.
    - ``mean_time_to_verify`` / ``mean_time_to_close``: mean of ``on_site_at - created_at`` /
      ``closed_at - created_at`` over the orders verified / closed before ``end``,
      to the millisecond.

    A rate with nothing due (无到期案件) is ``None`` and its ``meets_*`` flag is ``True`` (no
    order missed its target). Targets are met when the rate is at least the target, exactly.
    """

    start: dt.datetime
    end: dt.datetime
    team: str | None
    created: int
    by_state: dict[str, int]
    verification_due: int
    verified_on_time: int
    on_time_verification_rate: float | None
    meets_verification_target: bool
    closure_due: int
    closed: int
    closed_on_time: int
    closure_rate: float | None
    meets_closure_target: bool
    on_time_closure_rate: float | None
    mean_time_to_verify: dt.timedelta | None
    mean_time_to_close: dt.timedelta | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: times in RFC 3339 (+08:00), durations in seconds."""

        def seconds(value: dt.timedelta | None) -> float | None:
            return None if value is None else value.total_seconds()

        return {
            "start": city_time(self.start),
            "end": city_time(self.end),
            "team": self.team,
            "created": self.created,
            "by_state": dict(self.by_state),
            "verification_due": self.verification_due,
            "verified_on_time": self.verified_on_time,
            "on_time_verification_rate": self.on_time_verification_rate,
            "verification_target": VERIFICATION_TARGET,
            "meets_verification_target": self.meets_verification_target,
            "closure_due": self.closure_due,
            "closed": self.closed,
            "closed_on_time": self.closed_on_time,
            "closure_rate": self.closure_rate,
            "closure_target": CLOSURE_TARGET,
            "meets_closure_target": self.meets_closure_target,
            "on_time_closure_rate": self.on_time_closure_rate,
            "mean_time_to_verify_s": seconds(self.mean_time_to_verify),
            "mean_time_to_close_s": seconds(self.mean_time_to_close),
        }


def _rate(part: int, whole: int, target: float) -> tuple[float | None, bool]:
    if whole == 0:
        return None, True
    # Exact comparison: 97 of 100 meets 97% whatever the float rounding.
    return part / whole, Fraction(part, whole) >= Fraction(str(target))


def _seconds_between(dialect: str, later: Any, earlier: Any) -> ColumnElement[Any]:
    if dialect == "sqlite":  # UTCDateTime stores offset-free ISO text there
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0
    return extract("epoch", later - earlier)


def _mean(value: Any) -> dt.timedelta | None:
    if value is None:
        return None
    return dt.timedelta(milliseconds=round(float(value) * 1000))


def _state_at(end: dt.datetime) -> ColumnElement[str]:
    """The state a work order was in at ``end``, from its timestamps."""
    whens: Sequence[tuple[ColumnElement[bool], str]] = [
        (WorkOrder.closed_at < end, "closed"),
        (WorkOrder.resolved_at < end, "resolved"),
        (WorkOrder.on_site_at < end, "on_site"),
        (WorkOrder.accepted_at < end, "accepted"),
    ]
    return case(*whens, else_="dispatched")


async def kpis(
    session_factory: SessionFactory,
    start: dt.datetime,
    end: dt.datetime,
    team: str | None = None,
    *,
    kinds: Sequence[str] | frozenset[str] | None = None,
    districts: Sequence[str] | frozenset[str] | None = None,
) -> Kpis:
    """The KPIs of work orders created in ``[start, end)``; see ``Kpis`` for the definitions.

    ``kinds`` / ``districts`` narrow the population to work orders of those device kinds and
    districts (a department's grant); None: every one. Computed in the database from the
    timestamps (SQLite and PostgreSQL).
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware datetimes")
    if end <= start:
        raise ValueError(f"the period is empty: end {end} is not after start {start}")

    wo = WorkOrder
    verified = and_(wo.on_site_at.is_not(None), wo.on_site_at < end)
    closed = and_(wo.closed_at.is_not(None), wo.closed_at < end)
    due = or_(wo.verify_due_at < end, verified)
    on_time = and_(verified, wo.on_site_at <= wo.verify_due_at)
    closure_due = or_(wo.close_due_at < end, closed)
    closed_on_time = and_(closed, wo.closed_at <= wo.close_due_at)

    def count_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    population = [wo.created_at >= start, wo.created_at < end]
    if team is not None:
        population.append(wo.team == team)
    if kinds is not None:
        population.append(wo.kind.in_(sorted(kinds)))
    if districts is not None:
        population.append(wo.district.in_(sorted(districts)))

    async with session_factory() as session:
        dialect = (await session.connection()).dialect.name
        verify_s = _seconds_between(dialect, wo.on_site_at, wo.created_at)
        close_s = _seconds_between(dialect, wo.closed_at, wo.created_at)
        totals = (
            await session.execute(
                select(
                    func.count(),
                    count_if(due),
                    count_if(on_time),
                    count_if(closure_due),
                    count_if(closed),
                    count_if(closed_on_time),
                    func.avg(case((verified, verify_s), else_=None)),
                    func.avg(case((closed, close_s), else_=None)),
                ).where(*population)
            )
        ).one()
        state = _state_at(end).label("state_at_end")
        states = await session.execute(
            select(state, func.count()).where(*population).group_by(state)
        )
        by_state = dict.fromkeys(STATES, 0)
        for name, count in states:
            by_state[name] = int(count)

    created, n_due, n_on_time, n_closure_due, n_closed, n_closed_on_time = map(int, totals[:6])
    mean_verify, mean_close = totals[6:]
    verification_rate, meets_verification = _rate(n_on_time, n_due, VERIFICATION_TARGET)
    closure_rate, meets_closure = _rate(n_closed, n_closure_due, CLOSURE_TARGET)
    return Kpis(
        start=start,
        end=end,
        team=team,
        created=created,
        by_state=by_state,
        verification_due=n_due,
        verified_on_time=n_on_time,
        on_time_verification_rate=verification_rate,
        meets_verification_target=meets_verification,
        closure_due=n_closure_due,
        closed=n_closed,
        closed_on_time=n_closed_on_time,
        closure_rate=closure_rate,
        meets_closure_target=meets_closure,
        on_time_closure_rate=n_closed_on_time / n_closure_due if n_closure_due else None,
        mean_time_to_verify=_mean(mean_verify),
        mean_time_to_close=_mean(mean_close),
    )


__all__ = [
    "ACTIONS",
    "CLOSURE_TARGET",
    "DEFAULT_SLA_TARGETS",
    "STATES",
    "VERIFICATION_TARGET",
    "AlertNotFound",
    "IllegalTransition",
    "Kpis",
    "SlaPolicy",
    "SlaTarget",
    "WorkOrderNotFound",
    "get_work_order",
    "kpis",
    "list_work_orders",
    "open_grouped_work_orders",
    "open_work_order",
    "transition",
    "work_order_alerts",
]
