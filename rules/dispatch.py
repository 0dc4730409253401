"""The dispatcher: alert state changes in, grouped notifications out to the outbox, and work
orders for the teams — Alertmanager's dispatcher for the city.

Every alert state change goes to ``Dispatcher.handle``; ``Dispatcher.tick`` (about every
second, from ``Dispatcher.run``) sends what is due. For each route an alert matches
(``rules/routing.py``), the alert joins the group of that route and its ``group_by`` labels:

- a new group waits ``group_wait``, then sends one message with all its firing alerts;
- after that the group is looked at every ``group_interval``: new firing alerts or newly
  resolved ones send a message; an unchanged group with firing alerts is sent again once
  ``repeat_interval`` has passed since its last message;
- a resolved alert is told (status ``resolved``) when the route has ``send_resolved`` and
  the receiver had been told it was firing, then it leaves the group; an empty group ends;
- an acknowledged alert stays in the group but is not notified again (its resolution is),
  also when it was acknowledged elsewhere (the API): a due group looks its alerts up first;
- silences and maintenance windows (the routing file's and those made through the API,
  read with the silences on each tick) are checked when a message is made: a muted alert is
  left out (a message with nothing left is not sent) and, if it still fires when the mute
  ends, it is notified at the group's next interval.

A message is ``{"receiver", "status": "firing"|"resolved", "group_labels", "alerts",
"truncated"}``: firing alerts first (most severe first), then resolved ones, at most
``max_alerts`` of them, the rest counted in ``truncated``. It is written to the outbox
once per channel of the receiver through ``enqueue``; the outbox makes delivery durable.
When queueing fails the group keeps its state and tries again within ``RETRY_S``; the
channels already queued for that message then get it twice.

A firing alert whose severity is in the route's ``workorder`` list opens a work order for
the route's team, once per alert (the first such route wins); when the route has
``workorder_group_by``, the alert joins its group's open work order instead (one order for
the 42 dark streetlights of a district, not 42); given ``open_work_orders``, such alerts are
asked for at the next tick, all at once (an alert storm's thousands in one transaction, and
an alert's dispatch never waits for a work order). Muted alerts open none
until the mute ends while they still fire; a failed call is retried on the next tick.

Restarts: the groups live in memory only. On start-up, ``restore`` re-seeds them from the
open alerts so repeats and resolved notifications continue; each restored group then
sends its firing alerts once after ``group_wait``. So a restart re-notifies open firing
alerts at most once, and never loses a resolution of an alert it restored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cityiot.rules.events import SEVERITIES, STATES, Clock, wall_clock
from cityiot.rules.routing import Route, Router, alert_labels
from cityiot.rules.silences import Mutes, active_mutes, maintenance_window, silenced_by
from cityiot.storage.tables.alerts import Alert

log = logging.getLogger("cityiot.rules.dispatch")

SessionFactory = async_sessionmaker[AsyncSession]
# enqueue(session_factory, receiver, channel, group_key, message) -> outbox row id
Enqueue = Callable[[SessionFactory, str, str, str, dict[str, Any]], Awaitable[int]]
# open_work_order(event, team[, group=key]): idempotent per alert id; with a group key, the
# alert joins the group's open work order (rules/workorders.py)
OpenWorkOrder = Callable[..., Awaitable[Any]]
# open_work_orders([(event, team, group key), ...]): many grouped alerts at once
OpenWorkOrders = Callable[[list[tuple[dict[str, Any], str, str]]], Awaitable[Any]]

MAX_ALERTS_PER_MESSAGE = 50
RETRY_S = 10.0  # a group whose message could not be queued tries again this soon
_SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
_REQUIRED = ("id", "rule", "device_id", "kind", "district", "severity", "state")


@dataclass(eq=False)
class _Group:
    """The alerts of one route sharing the route's ``group_by`` labels."""

    key: str
    route: Route
    labels: dict[str, str]
    next_flush: float
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → latest event
    last_sent_at: float | None = None
    last_firing: frozenset[str] = frozenset()  # the firing alerts of the last message
    told_firing: set[str] = field(default_factory=set)  # their resolution is to be told


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """What one group holds, for the console and for tests."""

    key: str
    receiver: str
    labels: dict[str, str]
    alerts: dict[str, str]  # alert id → state
    next_flush: float
    last_sent_at: float | None


class Dispatcher:
    """Groups alert state changes per route and writes due notifications to the outbox."""

    def __init__(
        self,
        router: Router,
        session_factory: SessionFactory,
        enqueue: Enqueue,
        clock: Clock = wall_clock,
        open_work_order: OpenWorkOrder | None = None,
        *,
        open_work_orders: OpenWorkOrders | None = None,
        max_alerts: int = MAX_ALERTS_PER_MESSAGE,
    ) -> None:
        if max_alerts < 1:
            raise ValueError(f"max_alerts must be at least 1, got {max_alerts}")
        self._router = router
        self._session_factory = session_factory
        self._enqueue = enqueue
        self._clock = clock
        self._open_work_order = open_work_order
        # Grouped work orders, when given: asked for at the next tick, all due at once.
        self._open_work_orders = open_work_orders
        self._max_alerts = max_alerts
        self._groups: dict[str, _Group] = {}
        self._lock = asyncio.Lock()  # handle() and tick() run from different tasks
        self._work_orders_opened: set[str] = set()  # alert ids, until they resolve
        self._work_orders_due: dict[str, tuple[dict[str, Any], Route]] = {}  # muted or failed

    # --- input -------------------------------------------------------------------------

    async def handle(self, event: Mapping[str, Any]) -> None:
        """Take one alert state change (the alert event contract of ``rules/events.py``)."""
        _check(event)
        async with self._lock:
            alert, now = dict(event), self._clock()
            routes = self._place(alert, now, restoring=False)
            if alert["state"] == "firing":
                await self._work_order(alert, routes, now, None)

    def restore(self, open_alert_events: Iterable[Mapping[str, Any]]) -> int:
        """Re-seed the groups from the open alerts at start-up; returns how many were taken.

        Firing alerts are notified once more after ``group_wait`` and then repeat as usual;
        acknowledged ones are not, but their resolution will be. Work orders of firing
        alerts are asked for again at the next tick (the callee is idempotent), in case the
        last run stopped before opening them. Call it before the first ``handle``.
        """
        taken = 0
        now = self._clock()
        for raw in open_alert_events:
            _check(raw)
            if raw["state"] not in ("firing", "acknowledged"):
                continue
            alert = dict(raw)
            routes = self._place(alert, now, restoring=True)
            taken += 1
            route = self._work_order_route(alert, routes)
            if alert["state"] == "firing" and route is not None:
                self._work_orders_due[alert["id"]] = (alert, route)
        log.info("event=dispatch_restored alerts=%d groups=%d", taken, len(self._groups))
        return taken

    def _place(self, alert: dict[str, Any], now: float, *, restoring: bool) -> list[Route]:
        """Put the alert's new state in each of its groups; returns its routes."""
        alert_id, state = alert["id"], alert["state"]
        if state == "pending":
            return []  # not an alert for anyone yet
        routes = self._router.match(alert_labels(alert))
        for route in routes:
            labels = route.labels_of(alert)
            key = route.group_key(labels)
            group = self._groups.get(key)
            if group is None:
                if state != "firing" and not restoring:
                    continue  # an alert this dispatcher never saw firing: nothing to tell
                group = _Group(key, route, route.group_labels(labels), now + route.group_wait)
                self._groups[key] = group
            group.alerts[alert_id] = alert
            if restoring and state == "acknowledged":
                group.told_firing.add(alert_id)  # it was told before the restart
        if state != "firing":
            self._work_orders_due.pop(alert_id, None)
        if state == "resolved":
            self._work_orders_opened.discard(alert_id)
        return routes

    # --- work orders -------------------------------------------------------------------

    def _work_order_route(self, alert: Mapping[str, Any], routes: Sequence[Route]) -> Route | None:
        if self._open_work_order is None:
            return None
        return next((r for r in routes if alert["severity"] in r.workorder and r.team), None)

    async def _work_order(
        self,
        alert: dict[str, Any],
        routes: Sequence[Route],
        now: float,
        mutes: Mutes | None,
    ) -> None:
        alert_id = alert["id"]
        route = self._work_order_route(alert, routes)
        if route is None or route.team is None or alert_id in self._work_orders_opened:
            return
        self._work_orders_due[alert_id] = (alert, route)  # until it is opened
        if self._batched(route, alert):
            return  # the next tick asks for it, with the others due
        if mutes is None:
            try:
                mutes = await active_mutes(self._session_factory, now)
            except Exception as exc:  # database unreachable: the next tick tries again
                log.warning("event=silences_unreadable alert=%s error=%s", alert_id, exc)
                return
        if self._muted_by(route, alert, now, mutes):
            return
        try:
            assert self._open_work_order is not None
            group = route.workorder_group(route.labels_of(alert))
            if group is None:
                await self._open_work_order(dict(alert), route.team)
            else:
                await self._open_work_order(dict(alert), route.team, group=group)
        except Exception as exc:  # another stage's failure must not stop notifications
            log.warning(
                "event=work_order_failed alert=%s team=%s error=%s", alert_id, route.team, exc
            )
            return
        self._work_orders_due.pop(alert_id, None)
        self._work_orders_opened.add(alert_id)
        log.info("event=work_order_requested alert=%s team=%s", alert_id, route.team)

    # --- output ------------------------------------------------------------------------

    async def tick(self) -> int:
        """Send every group that is due; returns the number of outbox rows written."""
        async with self._lock:
            now = self._clock()
            due = [g for g in self._groups.values() if g.next_flush <= now]
            if not due and not self._work_orders_due:
                return 0
            try:
                mutes = await active_mutes(self._session_factory, now)
                await self._note_acknowledged(due)
            except Exception as exc:  # database unreachable: what is due stays due
                log.warning("event=silences_unreadable error=%s", exc)
                return 0
            rows = 0
            for group in due:
                rows += await self._flush(group, now, mutes)
            await self._grouped_work_orders(now, mutes)
            for event, route in list(self._work_orders_due.values()):
                if not self._batched(route, event):
                    await self._work_order(event, [route], now, mutes)
            return rows

    def _batched(self, route: Route, alert: Mapping[str, Any]) -> bool:
        return self._open_work_orders is not None and bool(route.workorder_group_by)

    async def _grouped_work_orders(self, now: float, mutes: Mutes) -> None:
        """Ask for the due alerts of grouping routes in one call (not the muted ones)."""
        asked: list[tuple[dict[str, Any], str, str]] = []
        for alert, route in self._work_orders_due.values():
            if not self._batched(route, alert) or self._muted_by(route, alert, now, mutes):
                continue
            group = route.workorder_group(route.labels_of(alert))
            assert route.team is not None and group is not None
            asked.append((dict(alert), route.team, group))
        if not asked:
            return
        try:
            assert self._open_work_orders is not None
            await self._open_work_orders(asked)
        except Exception as exc:  # another stage's failure must not stop notifications
            log.warning("event=work_orders_failed alerts=%d error=%s", len(asked), exc)
            return
        for alert, _, _ in asked:
            self._work_orders_due.pop(alert["id"], None)
            self._work_orders_opened.add(alert["id"])
        log.info("event=work_orders_requested alerts=%d", len(asked))

    async def _note_acknowledged(self, groups: Sequence[_Group]) -> None:
        """Alerts acknowledged by someone else (a person, through the API) since their last
        event here: they stay in their groups but are not notified again."""
        firing = sorted({i for g in groups for i, e in g.alerts.items() if e["state"] == "firing"})
        if not firing:
            return
        acknowledged: set[str] = set()
        async with self._session_factory() as session:
            for start in range(0, len(firing), 500):
                chunk = firing[start : start + 500]
                acknowledged.update(
                    await session.scalars(
                        select(Alert.id).where(Alert.id.in_(chunk), Alert.state == "acknowledged")
                    )
                )
        for group in groups:
            for alert_id in acknowledged & group.alerts.keys():
                group.alerts[alert_id] = {**group.alerts[alert_id], "state": "acknowledged"}

    async def run(self, every: float = 1.0) -> None:
        """Tick every ``every`` seconds until cancelled; a failed tick is logged and retried."""
        while True:
            try:
                await self.tick()
            except Exception as exc:  # e.g. the database briefly unreachable
                log.warning("event=dispatch_tick_failed error=%s", exc)
            await asyncio.sleep(every)

    async def _flush(self, group: _Group, now: float, mutes: Mutes) -> int:
        route = group.route
        group.next_flush = now + route.group_interval
        firing: list[dict[str, Any]] = []
        resolved: list[dict[str, Any]] = []
        for alert_id, event in group.alerts.items():
            state = event["state"]
            if state == "acknowledged" or self._muted_by(route, event, now, mutes):
                continue
            if state == "firing":
                firing.append(event)
            elif state == "resolved" and route.send_resolved and alert_id in group.told_firing:
                resolved.append(event)
        firing_ids = frozenset(e["id"] for e in firing)
        repeat_due = (
            group.last_sent_at is not None and now - group.last_sent_at >= route.repeat_interval
        )
        rows = 0
        if firing_ids - group.last_firing or resolved or (firing and repeat_due):
            try:
                rows = await self._send(group, firing, resolved)
            except Exception as exc:  # the outbox is unreachable: keep the group as it is
                log.warning("event=notify_failed group=%s error=%s", group.key, exc)
                group.next_flush = now + min(route.group_interval, RETRY_S)
                return 0
            group.last_sent_at = now
            group.last_firing = firing_ids
            group.told_firing |= firing_ids
        for alert_id in [i for i, e in group.alerts.items() if e["state"] == "resolved"]:
            del group.alerts[alert_id]
            group.told_firing.discard(alert_id)
        if not group.alerts:
            del self._groups[group.key]
        return rows

    async def _send(
        self, group: _Group, firing: list[dict[str, Any]], resolved: list[dict[str, Any]]
    ) -> int:
        receiver = group.route.receiver
        alerts = sorted(firing, key=_order) + sorted(resolved, key=_order)
        shown = alerts[: self._max_alerts]
        message = {
            "receiver": receiver.name,
            "status": "firing" if firing else "resolved",
            "group_labels": dict(group.labels),
            "alerts": [dict(a) for a in shown],
            "truncated": len(alerts) - len(shown),
        }
        if not receiver.channels:
            log.warning("event=no_channels receiver=%s group=%s", receiver.name, group.key)
        for channel in receiver.channels:
            await self._enqueue(
                self._session_factory, receiver.name, channel["name"], group.key, message
            )
        log.info(
            "event=notified receiver=%s group=%s status=%s firing=%d resolved=%d channels=%d",
            receiver.name,
            group.key,
            message["status"],
            len(firing),
            len(resolved),
            len(receiver.channels),
        )
        return len(receiver.channels)

    def _muted_by(self, route: Route, event: Mapping[str, Any], now: float, mutes: Mutes) -> bool:
        labels = route.labels_of(event)
        by = silenced_by(mutes.silences, labels)
        if by:
            log.debug("event=muted alert=%s silence=%s", event["id"], ",".join(by))
            return True
        windows = (*self._router.maintenance_windows, *mutes.windows)  # the file's, the API's
        window = maintenance_window(windows, labels, now)
        if window is not None:
            log.debug("event=muted alert=%s maintenance=%s", event["id"], window.name)
            return True
        return False

    # --- inspection --------------------------------------------------------------------

    def groups(self) -> list[GroupStatus]:
        """The groups held now, in creation order."""
        return [
            GroupStatus(
                g.key,
                g.route.receiver.name,
                dict(g.labels),
                {i: e["state"] for i, e in g.alerts.items()},
                g.next_flush,
                g.last_sent_at,
            )
            for g in self._groups.values()
        ]


def _check(event: Mapping[str, Any]) -> None:
    missing = [k for k in _REQUIRED if k not in event]
    if missing:
        raise ValueError(f"alert event lacks {', '.join(missing)}: {dict(event)!r:.200}")
    if event["state"] not in STATES:
        raise ValueError(f"alert event state {event['state']!r} is not one of {', '.join(STATES)}")


def _order(event: Mapping[str, Any]) -> tuple[int, str, str]:
    return (
        _SEVERITY_RANK.get(event["severity"], len(SEVERITIES)),
        event.get("started_at") or "",
        event["id"],
    )
