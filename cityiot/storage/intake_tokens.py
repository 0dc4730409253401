"""Vendors' intake tokens: what the CTWing and OneNET push subscriptions present
(docs/design.md §4a).

A vendor has at most one active token; issuing another replaces it at once, so a leaked
token is withdrawn by issuing a new one. The token is shown once, to whoever issued it;
the database keeps only its SHA-256 and a salt.

CTWing presents the token itself (``?token=T``): its hash is compared. OneNET presents a
signature made over the token (base64(md5(T + nonce + msg))), which no hash can check: the
token is an HMAC of the vendor and its salt under the platform's secret
(cityiot/storage/secret.py), so it can be derived again to check a signature
(:func:`signing_token`), from the secret and the database together but from neither alone.

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

import asyncio
import datetime as dt
import hashlib
import hmac
import logging
import secrets
import string
import time
import weakref
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cityiot.storage.tables.audit import AuditEntry
from cityiot.storage.tables.intake import IntakeToken
from cityiot.storage.tables.registry import Vendor
from cityiot.storage.utc import utcnow

log = logging.getLogger("cityiot.storage.intake_tokens")

TOKEN_LENGTH = 32
_ALPHABET = string.ascii_letters + string.digits
# A token replaced by another process (the CLI, another API) keeps working here this long.
CACHE_S = 5.0
# A value read before serves this long while the database cannot be read (busy, away).
STALE_S = 300.0
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


@dataclass(frozen=True, slots=True)
class _Stored:
    token_hash: str
    salt: str  # "": issued before tokens were derived (the OneNET check cannot use it)


def derive_token(secret: bytes, vendor_id: str, salt: str) -> str:
    """The token of ``vendor_id`` issued with ``salt`` under ``secret``: HMAC-SHA256 written
    in :data:`TOKEN_LENGTH` letters and digits (about 190 of its 256 bits)."""
    digest = hmac.new(secret, f"intake-token\0{vendor_id}\0{salt}".encode(), "sha256").digest()
    number = int.from_bytes(digest, "big")
    out = []
    for _ in range(TOKEN_LENGTH):
        number, digit = divmod(number, len(_ALPHABET))
        out.append(_ALPHABET[digit])
    return "".join(out)


def token_hash(token: str) -> str:
    """What the database keeps of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


async def issue_intake_token(
    sessions: async_sessionmaker[AsyncSession],
    vendor_id: str,
    *,
    secret: bytes,
    actor: str = "cli",
    role: str = "admin",
) -> IssuedToken:
    """A new intake token for ``vendor_id`` under the platform's ``secret``, replacing its
    previous one; audited (``vendor.intake_token.issue``, never with the token). Raises
    :class:`UnknownVendor`."""
    salt = secrets.token_hex(16)
    token = derive_token(secret, vendor_id, salt)
    try:
        issued = await _store(sessions, vendor_id, token, salt, actor, role)
    except IntegrityError:  # a concurrent first issue inserted the row: replace it
        issued = await _store(sessions, vendor_id, token, salt, actor, role)
    forget_cached(sessions, vendor_id)
    return issued


async def _store(
    sessions: async_sessionmaker[AsyncSession],
    vendor_id: str,
    token: str,
    salt: str,
    actor: str,
    role: str,
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
        row.salt = salt
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
    stored = await _stored(sessions, vendor_id)
    if stored is None:
        return False
    return hmac.compare_digest(stored.token_hash, token_hash(token))


async def signing_token(
    sessions: async_sessionmaker[AsyncSession], vendor_id: str, secret: bytes
) -> str | None:
    """``vendor_id``'s active token, derived again to check a signature made over it (OneNET);
    None when the vendor has none, or when it cannot be derived: issued before tokens were
    derived, or under another secret (both logged, with what to do)."""
    stored = await _stored(sessions, vendor_id)
    if stored is None:
        return None
    if not stored.salt:
        log.warning(
            "event=intake_token_not_derivable vendor=%s reason=issued before signed pushes "
            "were supported; issue the vendor a new intake token",
            vendor_id,
        )
        return None
    token = derive_token(secret, vendor_id, stored.salt)
    if not hmac.compare_digest(stored.token_hash, token_hash(token)):
        log.warning(
            "event=intake_token_not_derivable vendor=%s reason=the token was issued under "
            "another platform secret (CITYIOT_SECRET_KEY or <run_dir>/platform-secret); give "
            "every process the same secret, or issue the vendor a new intake token",
            vendor_id,
        )
        return None
    return token


# The hash and salt (or None: no token) each vendor had when last read, and the reads under
# way, by session factory: tests and processes may hold several databases. Weak keys: a
# disposed factory takes its caches.
_caches: weakref.WeakKeyDictionary[Any, dict[str, tuple[float, _Stored | None]]] = (
    weakref.WeakKeyDictionary()
)
_reads: weakref.WeakKeyDictionary[Any, dict[str, asyncio.Future[_Stored | None]]] = (
    weakref.WeakKeyDictionary()
)


async def _stored(sessions: async_sessionmaker[AsyncSession], vendor_id: str) -> _Stored | None:
    """The vendor's token hash and salt, read at most every :data:`CACHE_S` per vendor:
    pushes arrive by the hundred a second, and forged ones should not each cost a query.

    One read a vendor at a time: the pushes that find the cached value expired together
    wait for the same read rather than each taking a pooled connection. When that read fails
    (the database busy or away), the value last read serves for up to :data:`STALE_S` more,
    logged, so a busy registry does not turn a vendor's pushes away."""
    cache = _caches.setdefault(sessions, {})
    now = time.monotonic()
    hit = cache.get(vendor_id)
    if hit is not None and now - hit[0] < CACHE_S:
        return hit[1]
    reads = _reads.setdefault(sessions, {})
    read = reads.get(vendor_id)
    if read is None:
        read = reads[vendor_id] = asyncio.ensure_future(_read(sessions, vendor_id))
        read.add_done_callback(lambda done: _read_done(sessions, vendor_id, done))
    try:
        return await asyncio.shield(read)
    except SQLAlchemyError as exc:
        if hit is None or now - hit[0] >= STALE_S:
            raise
        log.warning(
            "event=intake_token_stale vendor=%s age_s=%.0f reason=%s: %.200s",
            vendor_id,
            now - hit[0],
            type(exc).__name__,
            exc,
        )
        return hit[1]


async def _read(sessions: async_sessionmaker[AsyncSession], vendor_id: str) -> _Stored | None:
    async with sessions() as session:
        row = await session.get(IntakeToken, vendor_id)
    return _Stored(row.token_hash, row.salt or "") if row is not None else None


def _read_done(
    sessions: async_sessionmaker[AsyncSession],
    vendor_id: str,
    read: asyncio.Future[_Stored | None],
) -> None:
    """Cache what ``read`` found, unless :func:`forget_cached` dropped it meanwhile (a token
    issued here while it ran: it may have read the replaced one)."""
    failed = read.cancelled() or read.exception() is not None  # retrieved: never "unseen"
    reads = _reads.get(sessions)
    if reads is None or reads.get(vendor_id) is not read:
        return
    del reads[vendor_id]
    if failed:
        return
    cache = _caches.setdefault(sessions, {})
    cache.pop(vendor_id, None)
    cache[vendor_id] = (time.monotonic(), read.result())
    while len(cache) > MAX_CACHED:
        del cache[next(iter(cache))]


def forget_cached(sessions: async_sessionmaker[AsyncSession], vendor_id: str) -> None:
    """Drop the vendor's cached hash: a token issued in this process works (and the one it
    replaced stops) at once."""
    cache = _caches.get(sessions)
    if cache is not None:
        cache.pop(vendor_id, None)
    reads = _reads.get(sessions)
    if reads is not None:
        reads.pop(vendor_id, None)
