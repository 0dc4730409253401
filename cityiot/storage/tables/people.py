"""People's accounts and their sign-in sessions (DESIGN §10: people sign in as people)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from cityiot.storage.tables.base import Base, UTCDateTime
from cityiot.storage.utc import utcnow


class User(Base):
    """A person's account: the role and grant of an API key, and a password kept only as a
    memory-hard hash (Argon2id, in the PHC string form that names its parameters)."""

    __tablename__ = "users"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(16))
    kinds: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    districts: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    vendor_id: Mapped[str | None] = mapped_column(String(64), default=None)
    teams: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    password_hash: Mapped[str] = mapped_column(String(256))
    password_changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    # Failed sign-ins within the lockout window (epoch seconds, newest last, at most the
    # number that locks), and the end of a lock in force.
    failures: Mapped[list[float]] = mapped_column(JSON, default=list)
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)


class UserSession(Base):
    """A signed-in session, known by the SHA-256 of its cookie's token (the token itself is
    never stored; the CSRF token is derived from it)."""

    __tablename__ = "user_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the token
    username: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    ended_why: Mapped[str] = mapped_column(String(32), default="")  # sign_out, idle, …
    address: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(200), default="")
