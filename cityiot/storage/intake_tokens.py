"""Vendors' intake tokens: what the CTWing and OneNET push subscriptions present
(docs/design.md §4a).

A vendor has at most one active token; issuing another replaces it at once, so a leaked
token is withdrawn by issuing a new one. The token is shown once, to whoever issued it;
the database keeps only its SHA-256.

Why a plain SHA-256 and not a password hash: the token is 32 characters drawn at random
from 62 (about 190 bits), so no dictionary or brute force can find it from its hash, however
fast the hash is. A slow, memory-hard hash protects low-entropy secrets that people choose;
here it would only cost every push (up to hundreds a second) a deliberate delay, and give
anyone posting forged tokens a cheap way to load the API. The comparison is
constant-time (:func:`hmac.compare_digest`).

The token is letters and digits only: it goes into a query string (CTWing's
``?token=T``) with no escaping, and into OneNET's push configuration, which takes letters
and digits.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import string
import time
import weakref
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cityiot.storage.tables.audit import AuditEntry
from cityiot.storage.tables.intake import IntakeToken
from cityiot.storage.tables.registry import Vendor
from cityiot.storage.utc import utcnow

TOKEN_LENGTH = 32
_ALPHABET = string.ascii_letters + string.digits
# A token replaced by another process (the CLI, another API) keeps working here this long.
CACHE_S = 5.0
MAX_CACHED = 1024  # vendors remembered; forged requests naming random vendors cannot grow it
MAX_PRESENTED = 256  # longer "tokens" are refused unhashed


class UnknownVendor(LookupError):
    """No vendor with this id is registered."""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    vendor: str
    token: str  # shown once: only its hash is kept
    created_at: dt.datetime
    replaced: bool  # the vendor had a token, which no longer works


def new_token() -> str:
    """A random token of letters and digits (:data:`TOKEN_LENGTH`)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(TOKEN_LENGTH))


def token_hash(token: str) -> str:
    """What the database keeps of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


async def issue_intake_token(
    sessions: async_sessionmaker[AsyncSession],
    vendor_id: str,
    *,
    actor: str = "cli",
    role: str = "admin",
) -> IssuedToken:
    """A new intake token for ``vendor_id``, replacing its previous one; audited
    (``vendor.intake_token.issue``, never with the token). Raises :class:`UnknownVendor`."""
    token = new_token()
    try:
        issued = await _store(sessions, vendor_id, token, actor, role)
    except IntegrityError:  # a concurrent first issue inserted the row: replace it
        issued = await _store(sessions, vendor_id, token, actor, role)
    _forget(sessions, vendor_id)
    return issued


async def _store(
    sessions: async_sessionmaker[AsyncSession], vendor_id: str, token: str, actor: str, role: str
) -> IssuedToken:
    async with sessions() as session, session.begin():
        # Locking the vendor serialises concurrent issues for it (PostgreSQL).
        if await session.get(Vendor, vendor_id, with_for_update=True) is None:
            raise UnknownVendor(vendor_id)
        row = await session.get(IntakeToken, vendor_id, with_for_update=True)
        replaced = row is not None
        now = utcnow()
        if row is None:
            row = IntakeToken(vendor_id=vendor_id)
            session.add(row)
        row.token_hash = token_hash(token)
        row.created_at = now
        row.created_by = actor[:128]
        session.add(
            AuditEntry(
                actor=actor,
                role=role,
                action="vendor.intake_token.issue",
                resource=f"vendors/{vendor_id}/intake-token",
                detail={"vendor": vendor_id, "replaced": replaced},
            )
        )
    return IssuedToken(vendor_id, token, now, replaced)


async def verify(
    sessions: async_sessionmaker[AsyncSession], vendor_id: str, token: str | None
) -> bool:
    """Whether ``token`` is ``vendor_id``'s active intake token. False for a missing token,
    an unknown vendor, a vendor with no token, another vendor's token or a replaced one
    (replaced in another process: after at most :data:`CACHE_S`)."""
    if not token or len(token) > MAX_PRESENTED:
        return False
    stored = await _stored_hash(sessions, vendor_id)
    if stored is None:
        return False
    return hmac.compare_digest(stored, token_hash(token))


# The hash (or None: no token) each vendor had when last read, by session factory: tests
# and processes may hold several databases. Weak keys: a disposed factory takes its cache.
_caches: weakref.WeakKeyDictionary[Any, dict[str, tuple[float, str | None]]] = (
    weakref.WeakKeyDictionary()
)


async def _stored_hash(sessions: async_sessionmaker[AsyncSession], vendor_id: str) -> str | None:
    """The vendor's token hash, read at most every :data:`CACHE_S` per vendor: pushes arrive
    by the hundred a second, and forged ones should not each cost a query."""
    cache = _caches.setdefault(sessions, {})
    now = time.monotonic()
    hit = cache.get(vendor_id)
    if hit is not None and now - hit[0] < CACHE_S:
        return hit[1]
    async with sessions() as session:
        row = await session.get(IntakeToken, vendor_id)
    stored = row.token_hash if row is not None else None
    cache.pop(vendor_id, None)
    cache[vendor_id] = (now, stored)
    while len(cache) > MAX_CACHED:
        del cache[next(iter(cache))]
    return stored


def _forget(sessions: async_sessionmaker[AsyncSession], vendor_id: str) -> None:
    """Drop the vendor's cached hash: a token issued in this process works (and the one it
    replaced stops) at once."""
    cache = _caches.get(sessions)
    if cache is not None:
        cache.pop(vendor_id, None)
