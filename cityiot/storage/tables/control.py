"""Commands sent to devices by linked control, and their acknowledgements."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cityiot.storage.tables.base import Base, UTCDateTime
from cityiot.storage.utc import utcnow


class Command(Base):
    """A command sent to a device (linked control) and the device's acknowledgement."""

    __tablename__ = "commands"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    vendor: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    rule: Mapped[str | None] = mapped_column(String(128), default=None)
    alert_id: Mapped[str | None] = mapped_column(String(32), default=None)
    sent_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    acked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    ok: Mapped[bool | None] = mapped_column(default=None)
    message: Mapped[str] = mapped_column(Text, default="")
