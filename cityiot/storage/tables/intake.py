"""Vendors' intake tokens: what the NB-IoT platforms' pushes (CTWing, OneNET) present."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from cityiot.storage.tables.base import Base, UTCDateTime
from cityiot.storage.utc import utcnow


class IntakeToken(Base):
    """A vendor's one active intake token, kept only as the SHA-256 of the token (hex) and
    the salt it was derived with (cityiot/storage/intake_tokens.py); issuing another replaces
    the row."""

    __tablename__ = "intake_tokens"

    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    # Empty for a token issued before tokens were derived (migration 0010).
    salt: Mapped[str] = mapped_column(String(32), default="", server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")
