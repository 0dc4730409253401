"""Rules put through the API, over the shipped catalogue."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from cityiot.storage.tables.base import Base, UTCDateTime
from cityiot.storage.utc import utcnow


class RuleOverride(Base):
    """A rule put through the API: replaces the catalogue rule of the same id (or adds one)."""

    __tablename__ = "rule_overrides"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)  # the rule's YAML mapping
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    updated_by: Mapped[str] = mapped_column(String(128), default="")
