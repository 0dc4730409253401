"""Work orders for the field teams."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cityiot.storage.tables.base import Base, UTCDateTime
from cityiot.storage.utc import utcnow


class WorkOrder(Base):
    """A task for a field team: dispatched → accepted → on_site → resolved → closed.

    ``alert_id`` is the alert that opened it. A route that groups work orders
    (``workorder_group_by``) gathers the alerts of one group into the group's open order:
    ``open_group`` is the group's key until the order is resolved (NULL after, and for an
    order of one alert); its unique index makes one open order per group, whoever opens it.
    The alerts that joined are the order's ``WorkOrderAlert`` rows; ``alert_count`` counts
    them with the first.
    """

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
    open_group: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    alert_count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class WorkOrderAlert(Base):
    """An alert that joined a grouped work order after the one that opened it."""

    __tablename__ = "work_order_alerts"

    alert_id: Mapped[str] = mapped_column(ForeignKey("alerts.id"), primary_key=True)
    work_order_id: Mapped[str] = mapped_column(ForeignKey("work_orders.id"), index=True)
    added_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
