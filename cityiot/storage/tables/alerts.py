"""The rules stage's alert tables: alerts, silences, maintenance windows and the notification
outbox."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cityiot.storage.tables.base import Base, UTCDateTime
from cityiot.storage.utc import utcnow


class Alert(Base):
    """One alert of one rule on one device, through pending → firing → acknowledged → resolved.

    ``open_key`` is ``rule/device_id`` while the alert is open and NULL once resolved; its
    unique constraint is what guarantees one open alert per (rule, device), whoever
    evaluates (NULLs never collide, on SQLite and PostgreSQL alike).
    """

    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_state_severity", "state", "severity"),
        # The listing's order (newest first), so a page stops after its rows.
        Index("ix_alerts_started_at_id", "started_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    rule: Mapped[str] = mapped_column(String(128), index=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    district: Mapped[str] = mapped_column(String(32), index=True)
    vendor: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())  # condition first held
    fired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    acknowledged_by: Mapped[str | None] = mapped_column(String(128), default=None)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    values: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    summary: Mapped[str] = mapped_column(Text, default="")
    open_key: Mapped[str | None] = mapped_column(String(200), unique=True, default=None)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Silence(Base):
    """Mutes notifications of alerts whose labels match every matcher, until ``ends_at``."""

    __tablename__ = "silences"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # [{"label": "district", "op": "=", "value": "yicheng"}, ...]; ops: = != =~ !~
    matchers: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    starts_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MaintenanceWindowRow(Base):
    """A maintenance window made through the API: weekly hours, in the city's time zone, when
    the matching alerts are not notified; in force until ``ended_at``.

    Beside the routing file's windows (``rules/routing.yaml``), which the dispatcher also reads.
    """

    __tablename__ = "maintenance_windows"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    # [{"label": "district", "op": "=", "value": "yicheng"}, ...]; as a silence's
    matchers: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    weekdays: Mapped[list[str]] = mapped_column(JSON)  # ["mon", ...]: the days it starts
    start: Mapped[str] = mapped_column(String(5))  # local "HH:MM"
    end: Mapped[str] = mapped_column(String(5))  # local "HH:MM"; not after start: next day
    comment: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None, index=True)


class Notification(Base):
    """The durable outbox: one message for one channel, retried until delivered."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    receiver: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(128))  # the channel's name in the routing file
    group_key: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|sent|failed
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)  # the alert group to deliver
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
