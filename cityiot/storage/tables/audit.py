"""The audit log of changes made through the API or the CLI."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from cityiot.storage.tables.base import Base, UTCDateTime
from cityiot.storage.utc import utcnow


class AuditEntry(Base):
    """Who changed what, through the API or the CLI."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))  # "key:<id> (<name>)" or "cli"
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))  # e.g. device.update, alert.ack
    resource: Mapped[str] = mapped_column(String(200))  # e.g. devices/mh-0001
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
