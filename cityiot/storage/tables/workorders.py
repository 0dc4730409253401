"""Work orders for the field teams."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cityiot.storage.tables.base import Base, UTCDateTime
from cityiot.storage.utc import utcnow


class WorkOrder(Base):
    """A task for a field team: dispatched → accepted → on_site → resolved → closed."""

    __tablename__ = "work_orders"
    __table_args__ = (Index("ix_work_orders_team_state", "team", "state"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    alert_id: Mapped[str] = mapped_column(ForeignKey("alerts.id"), unique=True)
    team: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), default="dispatched")
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    district: Mapped[str] = mapped_column(String(32), index=True)
    severity: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    accepted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    on_site_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    verify_due_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())  # SLA: on site by
    close_due_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())  # SLA: closed by
    assignee: Mapped[str | None] = mapped_column(String(128), default=None)
    note: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
