"""Rejected messages kept for the vendors and operators to inspect."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cityiot.storage.tables.base import Base, UTCDateTime
from cityiot.storage.utc import utcnow


class DeadLetter(Base):
    __tablename__ = "dead_letters"
    __table_args__ = (Index("ix_dead_letters_received_at", "received_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    topic: Mapped[str] = mapped_column(Text)
    vendor: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    device_id: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # first N bytes of the raw payload
    payload_size: Mapped[int] = mapped_column(Integer)  # size of the whole raw payload
    reason: Mapped[str] = mapped_column(Text)
