"""Alert lifecycle in SQL: pending → firing → (acknowledged) → resolved.

One open alert per (rule, device) is enforced by the database (``alerts.open_key`` is
unique while open), so two evaluators racing on the same device cannot raise it twice:
the loser of the race adopts the winner's alert.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from cityiot.db import Alert


class AlertNotFound(LookupError):
    pass


class IllegalAlertTransition(ValueError):
    pass


def _ms(at_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC)


class AlertStore:
    def __init__(self, session_factory: Any) -> None:
        self.sessions = session_factory

    async def open(
        self,
        *,
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
    ) -> tuple[Alert, bool]:
        """Open the alert (pending or firing); (alert, False) when one is already open."""
        open_key = f"{rule}/{device_id}"
        started = _ms(started_ms)
        alert = Alert(
            id=uuid.uuid4().hex,
            rule=rule,
            device_id=device_id,
            kind=kind,
            district=district,
            vendor=vendor,
            severity=severity,
            state=state,
            started_at=started,
            fired_at=started if state == "firing" else None,
            values=values,
            summary=summary,
            open_key=open_key,
        )
        async with self.sessions() as session:
            session.add(alert)
            try:
                await session.commit()
                return alert, True
            except IntegrityError:
                await session.rollback()
        async with self.sessions() as session:
            existing = await session.scalar(select(Alert).where(Alert.open_key == open_key))
        if existing is None:  # resolved in between: the caller may try again
            raise AlertNotFound(f"alert {open_key} vanished while opening")
        return existing, False

    async def fire(
        self, alert_id: str, at_ms: int, values: dict[str, Any], summary: str
    ) -> Alert | None:
        """pending → firing; None when it is not pending (already firing, or resolved)."""
        async with self.sessions() as session:
            alert = await session.get(Alert, alert_id)
            if alert is None or alert.state != "pending":
                return None
            alert.state = "firing"
            alert.fired_at = _ms(at_ms)
            alert.values = values
            alert.summary = summary
            await session.commit()
            return alert

    async def resolve(
        self,
        alert_id: str,
        at_ms: int,
        values: dict[str, Any] | None = None,
    ) -> Alert | None:
        """Any open state → resolved; None when it was resolved already."""
        async with self.sessions() as session:
            alert = await session.get(Alert, alert_id)
            if alert is None or alert.state == "resolved":
                return None
            alert.state = "resolved"
            alert.resolved_at = max(_ms(at_ms), alert.started_at)
            alert.open_key = None
            if values:
                alert.values = {**(alert.values or {}), **values}
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
