"""Codecs put through the API (``PUT /codecs/{name}``), over the codec files."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from cityiot.storage.tables.base import Base, UTCDateTime
from cityiot.storage.utc import utcnow


class CodecOverride(Base):
    """A codec put through the API: replaces the file's codec of the same name (or adds one)."""

    __tablename__ = "codec_overrides"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # the codec file's mapping
    scripts: Mapped[dict[str, str]] = mapped_column(JSON)  # file name → JavaScript
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    updated_by: Mapped[str] = mapped_column(String(128), default="")
