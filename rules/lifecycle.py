"""Alert lifecycle in SQL: pending → firing → (acknowledged) → resolved.

One open alert per (rule, device) is enforced by the database (``alerts.open_key`` is
unique while open), so two evaluators racing on the same device cannot raise it twice:
the loser of the race adopts the winner's alert.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cityiot.rules.events import alert_event, row_event
from cityiot.storage.registry import dialect_insert, in_chunks
from cityiot.storage.tables.alerts import Alert
from cityiot.storage.utc import utcnow
from cityiot.storage.writes import write_now, write_turn

log = logging.getLogger("cityiot.rules")

# Steps recorded on the event loop's thread at most (a fraction of a ms each): a larger
# batch (an absence scan finding a district silent) goes through the async session.
DIRECT_MAX_STEPS = 200


class AlertNotFound(LookupError):
    pass


class IllegalAlertTransition(ValueError):
    pass


def _ms(at_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC)


def open_key(rule: str, device_id: str) -> str:
    """What ``alerts.open_key`` holds while the alert of ``rule`` on ``device_id`` is open."""
    return f"{rule}/{device_id}"


def new_alert_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class Step:
    """One alert state change for :meth:`AlertStore.record`.

    ``new`` is the row of an alert to open (``pending`` or ``firing``) under ``alert_id``;
    without it the step fires (``firing``) or resolves (``resolved``) alert ``alert_id``.
    After recording, ``alert_id`` is the alert the step ended on: another evaluator's when
    that one had opened it first, None when it vanished meanwhile.
    """

    to: str
    key: str  # the (rule, device) as ``alerts.open_key`` holds it: ``rule/device_id``
    alert_id: str | None
    at_ms: int
    values: dict[str, Any]
    summary: str | None = None
    new: dict[str, Any] | None = None


def new_alert_row(
    *,
    alert_id: str | None = None,
    rule: str,
    device_id: str,
    kind: str,
    district: str,
    vendor: str,
    severity: str,
    state: str,
    started_ms: int,
    values: dict[str, Any],
    summary: str,
) -> dict[str, Any]:
    """The ``alerts`` row of an alert opened pending or firing (a new id unless given)."""
    started = _ms(started_ms)
    return {
        "id": alert_id or new_alert_id(),
        "rule": rule,
        "device_id": device_id,
        "kind": kind,
        "district": district,
        "vendor": vendor,
        "severity": severity,
        "state": state,
        "started_at": started,
        "fired_at": started if state == "firing" else None,
        "acknowledged_at": None,
        "acknowledged_by": None,
        "resolved_at": None,
        "values": values,
        "summary": summary,
        "open_key": open_key(rule, device_id),
        "updated_at": utcnow(),
    }


class AlertStore:
    def __init__(self, session_factory: Any) -> None:
        self.sessions = session_factory

    async def open(self, row: dict[str, Any]) -> tuple[Alert, bool]:
        """Open the alert of ``row`` (:func:`new_alert_row`, pending or firing) in its own
        transaction; (the open alert, False) when one is already open for its rule and device."""
        key = row["open_key"]
        alert = Alert(**row)
        async with write_turn(self.sessions), self.sessions() as session:
            session.add(alert)
            try:
                await session.commit()
                return alert, True
            except IntegrityError:
                await session.rollback()
        async with self.sessions() as session:
            existing = await session.scalar(select(Alert).where(Alert.open_key == key))
        if existing is None:  # resolved in between: the caller may try again
            raise AlertNotFound(f"alert {key} vanished while opening")
        return existing, False

    async def record(self, steps: Sequence[Step]) -> list[dict[str, Any] | None]:
        """Record ``steps`` in order, in one transaction; returns the alert event of each
        (None for a step that changed nothing: already firing, resolved, or opened first by
        another evaluator — which the step then adopts, moving it to firing if it must).

        One commit for a whole batch of readings' transitions: a commit per alert capped the
        ingest at a few thousand readings/s when every parked car opened a pending alert.
        Opens are one multi-row INSERT … ON CONFLICT (open_key) DO NOTHING, so the database
        still guarantees one open alert per (rule, device).

        On SQLite a batch of up to ``DIRECT_MAX_STEPS`` runs on the event loop's own thread
        (:func:`~cityiot.storage.writes.write_now`): an alert reaches its topic without waiting
        for the loop to come round between statements. When another process holds the database, or
        the batch is larger, it goes through the async session.
        """
        ids = [s.alert_id for s in steps]

        async def through_driver(session: Any) -> list[dict[str, Any] | None]:
            for step, alert_id in zip(steps, ids, strict=True):
                step.alert_id = alert_id  # as before the attempt, which rolled back
            return await session.run_sync(_record, steps)

        return await write_now(
            self.sessions,
            lambda session: _record(session, steps),
            through_driver,
            urgent=True,
            direct=len(steps) <= DIRECT_MAX_STEPS,
            what=f"{len(steps)} alert steps",
        )

    async def resolve(
        self,
        alert_id: str,
        at_ms: int,
        values: dict[str, Any] | None = None,
    ) -> Alert | None:
        """Any open state → resolved; None when it was resolved already."""
        async with write_turn(self.sessions), self.sessions() as session:
            alert = await session.get(Alert, alert_id)
            if alert is None or alert.state == "resolved":
                return None
            _resolve(alert, at_ms, values)
            await session.commit()
            return alert

    async def acknowledge(self, alert_id: str, by: str, at: dt.datetime) -> Alert:
        """firing → acknowledged by a person; refused for pending or resolved alerts.

        One compare-and-set UPDATE: an evaluator resolving the alert at the same moment wins
        or loses cleanly, never leaving a resolved alert marked acknowledged.
        """
        async with self.sessions() as session, session.begin():
            result = await session.execute(
                update(Alert)
                .where(Alert.id == alert_id, Alert.state == "firing")
                .values(state="acknowledged", acknowledged_at=at, acknowledged_by=by)
                .execution_options(synchronize_session=False)
            )
            alert = await session.get(Alert, alert_id, populate_existing=True)
        if alert is None:
            raise AlertNotFound(f"no alert {alert_id}")
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise IllegalAlertTransition(
                f"alert {alert_id} is {alert.state}; only a firing alert can be acknowledged"
            )
        return alert

    async def open_alerts(self) -> Sequence[Alert]:
        async with self.sessions() as session:
            result = await session.scalars(select(Alert).where(Alert.open_key.is_not(None)))
            return result.all()

    async def get(self, alert_id: str) -> Alert | None:
        async with self.sessions() as session:
            return await session.get(Alert, alert_id)


def _record(session: Session, steps: Sequence[Step]) -> list[dict[str, Any] | None]:
    """:meth:`AlertStore.record`'s work, in ``session``'s transaction."""
    events: list[dict[str, Any] | None] = [None] * len(steps)
    start = 0
    while start < len(steps):
        # A round's opens are inserted before its other steps are applied, so it ends
        # before an open of a (rule, device) that an earlier step of the round touches
        # (resolved, then opened again within one batch): that INSERT must follow the
        # resolve, which frees the key.
        keys: set[str] = set()
        end = start
        while end < len(steps):
            key = steps[end].key
            if steps[end].new is not None and key in keys:
                break
            keys.add(key)
            end += 1
        _record_round(session, steps, start, end, events)
        start = end
    return events


def _record_round(
    session: Session,
    steps: Sequence[Step],
    start: int,
    end: int,
    events: list[dict[str, Any] | None],
) -> None:
    session.flush()  # the previous round's resolves free their open keys first
    round_ = steps[start:end]
    created: set[str] = set()
    opens = {s.key: s for s in round_ if s.new is not None}
    if opens:
        insert = dialect_insert(session)(Alert.__table__)
        rows_in: list[dict[str, Any]] = [s.new for s in opens.values() if s.new is not None]
        # RETURNING names the rows inserted; only keys held by an alert opened elsewhere
        # need a look-up (each statement is several round trips to the driver).
        inserted = session.execute(
            insert.on_conflict_do_nothing(index_elements=["open_key"]).returning(
                Alert.open_key, Alert.id
            ),
            rows_in,
        )
        holder: dict[str, str] = {str(key): alert_id for key, alert_id in inserted}
        for chunk in in_chunks(sorted(k for k in opens if k not in holder)):
            rows = session.execute(
                select(Alert.open_key, Alert.id).where(Alert.open_key.in_(chunk))
            )
            holder.update({str(key): alert_id for key, alert_id in rows})
        for key, step in opens.items():
            ours = step.alert_id
            if holder.get(key) == ours:
                created.add(ours)  # type: ignore[arg-type]
                continue
            # Opened first elsewhere: adopt that alert (None: resolved meanwhile).
            theirs = holder.get(key)
            for later in round_:
                if later.alert_id == ours:
                    later.alert_id = theirs
    # Rows to move on: all but those just inserted by an open step of this round.
    wanted = {
        s.alert_id
        for s in round_
        if s.alert_id is not None and (s.new is None or s.alert_id not in created)
    }
    alerts: dict[str, Alert] = {}
    for chunk in in_chunks(sorted(wanted)):
        found = session.scalars(select(Alert).where(Alert.id.in_(chunk)))
        alerts.update({alert.id: alert for alert in found})
    for offset, s in enumerate(round_):
        if s.alert_id is None:
            continue  # opened elsewhere and resolved meanwhile
        if s.new is not None and s.alert_id in created:
            events[start + offset] = row_event(s.new)
            continue
        alert = alerts.get(s.alert_id)
        if alert is None:
            continue
        if s.to == "resolved":
            if alert.state != "resolved":
                _resolve(alert, s.at_ms, s.values)
                events[start + offset] = alert_event(alert)
        elif s.to == "firing" and alert.state == "pending":
            _fire(alert, s.at_ms, s.values, s.summary or alert.summary)
            events[start + offset] = alert_event(alert)


def _fire(alert: Alert, at_ms: int, values: dict[str, Any], summary: str) -> None:
    alert.state = "firing"
    alert.fired_at = _ms(at_ms)
    alert.values = values
    alert.summary = summary


def _resolve(alert: Alert, at_ms: int, values: dict[str, Any] | None) -> None:
    alert.state = "resolved"
    alert.resolved_at = max(_ms(at_ms), alert.started_at)
    alert.open_key = None
    if values:
        alert.values = {**(alert.values or {}), **values}
