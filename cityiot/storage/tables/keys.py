"""API keys."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from cityiot.storage.tables.base import Base, UTCDateTime
from cityiot.storage.utc import utcnow


class ApiKey(Base):
    """An API key: role and grant; the secret is kept only as its SHA-256."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # the key's visible part
    secret_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(16))
    # Grant of a department key (None: every kind / district); the vendor of a vendor key.
    kinds: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    districts: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    vendor_id: Mapped[str | None] = mapped_column(String(64), default=None)
    # The field teams (routing file's receivers) whose work orders and alerts a field key
    # acts on; None for other roles and for field keys made before teams existed.
    teams: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    # After this the key is refused like a revoked one; None: it never expires.
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
