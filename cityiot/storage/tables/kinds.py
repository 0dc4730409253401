"""Kinds put through the API (``PUT /kinds/{kind}``), over the kind files."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from cityiot.storage.tables.base import Base, UTCDateTime
from cityiot.storage.utc import utcnow


class KindOverride(Base):
    """A kind put through the API: replaces the file's kind of the same id (or adds one)."""

    __tablename__ = "kind_overrides"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # the kind file's mapping
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    updated_by: Mapped[str] = mapped_column(String(128), default="")
