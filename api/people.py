"""People's accounts and sessions (DESIGN §10): people sign in as people, keys are for machines.

An account carries the role and grant of an API key (:func:`cityiot.api.keys.check_grant`)
and a password of at least :data:`MIN_PASSWORD` characters, kept only as an Argon2id hash
(memory-hard: 64 MiB and three passes per guess, RFC 9106's second recommended setting).

Signing in (:meth:`SessionBook.sign_in`) opens a session known by the SHA-256 of a random
token the browser holds in an HttpOnly cookie; the CSRF token the page sends with every
state-changing request is derived from that token (:func:`csrf_token`), so nothing but the
hash is stored. :data:`LOCK_AFTER` failed sign-ins within :data:`LOCK_WINDOW` lock the
account for :data:`LOCK_FOR`; a session not used for :data:`IDLE` ends. Every sign-in,
failure, lock and sign-out is written to the audit log, in the same transaction as the
change it records.

Sessions are looked up in the database on every request (no cache): a sign-out or an idle
end made through any API process takes effect in every other at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update

from cityiot.api.keys import Grant, KeyRequestError, Principal, check_grant
from cityiot.rules.events import city_time
from cityiot.storage.tables.audit import AuditEntry
from cityiot.storage.tables.people import User, UserSession
from cityiot.storage.tables.registry import Vendor
from cityiot.storage.utc import as_utc, utcnow

MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # longer ones are refused before hashing: the hash's cost is the point
LOCK_AFTER = 5  # failed sign-ins ...
LOCK_WINDOW = dt.timedelta(minutes=15)  # ... within this time ...
LOCK_FOR = dt.timedelta(minutes=15)  # ... lock the account this long
IDLE = dt.timedelta(minutes=30)  # a session not used this long ends
TOUCH = dt.timedelta(seconds=30)  # a session's last use is written at most this often

COOKIE = "cityiot_session"
CSRF_HEADER = "X-CSRF-Token"
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
USERNAME_RULE = "1–64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"

# Argon2id with the library's defaults (64 MiB, t=3, p=4). At most two hashes run at once,
# so a burst of sign-ins cannot take the API's memory.
_hasher = PasswordHasher()
_hashing = threading.BoundedSemaphore(2)
_unknown_hash: str | None = None  # checked for unknown names, so they take as long


class AccountError(ValueError):
    """An account that cannot be made or changed as asked; the message says what to change."""


class SignInRefused(Exception):
    """A refused sign-in: ``status`` 401 (wrong name or password) or 423 (locked)."""

    def __init__(self, status: int, detail: str, retry_after_s: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after_s = retry_after_s


def check_password(password: str, username: str) -> None:
    """:class:`AccountError` unless ``password`` is one the platform accepts."""
    if len(password) < MIN_PASSWORD:
        raise AccountError(
            f"the password has {len(password)} characters; it needs at least {MIN_PASSWORD} "
            "(a few words make a long password easy to remember)"
        )
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password is longer than {MAX_PASSWORD} characters; shorten it")
    if password.strip().lower() == username.lower() or len(set(password)) < 4:
        raise AccountError("the password is too easy to guess (the username, or a repetition)")


def new_password() -> str:
    """A password for someone who gets one made (about 130 bits, 22 characters)."""
    return secrets.token_urlsafe(16)


def _hash_now(password: str) -> str:
    with _hashing:
        return _hasher.hash(password)


def _verify_now(stored: str, password: str) -> bool:
    with _hashing:
        try:
            return _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hash_now, password)


async def _verify(stored: str, password: str) -> bool:
    return await asyncio.to_thread(_verify_now, stored, password)


async def password_ok(row: User, password: str) -> bool:
    """Whether ``password`` is the account's (no sign-in: nothing counted or audited)."""
    return await _verify(row.password_hash, password)


async def _waste_a_verify(password: str) -> None:
    """As long as checking a real account's password, so a name's existence is not timed."""
    global _unknown_hash
    if _unknown_hash is None:
        _unknown_hash = await hash_password(secrets.token_urlsafe(16))
    await _verify(_unknown_hash, password)


def check_username(username: str) -> str:
    if not USERNAME.fullmatch(username):
        raise AccountError(f"the username {username!r} is not {USERNAME_RULE}")
    return username


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(token: str) -> str:
    """The CSRF token of the session whose cookie holds ``token``. Another site's page can
    make the browser send the cookie but can read neither it nor this."""
    return hmac.new(token.encode(), b"cityiot csrf", hashlib.sha256).hexdigest()


def csrf_matches(token: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(csrf_token(token), presented)


def principal_of_user(user: User) -> Principal:
    return Principal(
        key_id="",
        name=user.display_name,
        role=user.role,
        kinds=frozenset(user.kinds) if user.kinds is not None else None,
        districts=frozenset(user.districts) if user.districts is not None else None,
        vendor=user.vendor_id,
        teams=frozenset(user.teams) if user.teams is not None else None,
        user=user.username,
    )


def _grant(
    role: str,
    kinds: Iterable[str] | None,
    districts: Iterable[str] | None,
    vendor: str | None,
    teams: Iterable[str] | None,
    known_teams: Iterable[str],
) -> Grant:
    try:
        return check_grant(role, kinds, districts, vendor, teams, known_teams, holder="account")
    except KeyRequestError as exc:
        raise AccountError(str(exc)) from None


async def create_user(
    sessions: Any,
    username: str,
    role: str,
    password: str,
    *,
    display_name: str = "",
    kinds: Iterable[str] | None = None,
    districts: Iterable[str] | None = None,
    vendor: str | None = None,
    teams: Iterable[str] | None = None,
    known_teams: Iterable[str] = (),
    created_by: str = "cli",
    creator_role: str = "admin",
) -> User:
    """A new account (audited ``user.create``); :class:`AccountError` says what to change."""
    check_username(username)
    check_password(password, username)
    grant = _grant(role, kinds, districts, vendor, teams, known_teams)
    row = User(
        username=username,
        display_name=display_name[:200],
        role=grant.role,
        kinds=grant.kinds,
        districts=grant.districts,
        vendor_id=grant.vendor,
        teams=grant.teams,
        password_hash=await hash_password(password),
        created_by=created_by[:128],
        failures=[],
    )
    async with sessions() as session, session.begin():
        if await session.get(User, username) is not None:
            raise AccountError(f"there is already an account {username!r}; choose another name")
        if grant.vendor and await session.get(Vendor, grant.vendor) is None:
            raise AccountError(f"no vendor {grant.vendor!r}; register it first")
        session.add(row)
        session.add(
            AuditEntry(
                actor=created_by[:128],
                role=creator_role,
                action="user.create",
                resource=f"users/{username}",
                detail={"role": grant.role, "display_name": row.display_name, **_grant_of(row)},
            )
        )
    return row


@dataclass(frozen=True)
class Change:
    """What :func:`update_user` changes; None leaves a field as it is."""

    display_name: str | None = None
    role: str | None = None
    kinds: list[str] | None = None
    districts: list[str] | None = None
    vendor: str | None = None
    teams: list[str] | None = None
    grant_given: bool = False  # role, kinds, districts, vendor, teams given: set them all
    password: str | None = None
    disabled: bool | None = None
    unlock: bool = False


async def update_user(
    sessions: Any,
    username: str,
    change: Change,
    *,
    known_teams: Iterable[str] = (),
    by: str = "cli",
    by_role: str = "admin",
) -> User | None:
    """Change an account (None: no such account); audited ``user.update``. A new password,
    a new role or grant, or disabling ends the account's sessions."""
    hashed = None
    if change.password is not None:
        check_password(change.password, username)
        hashed = await hash_password(change.password)
    async with sessions() as session, session.begin():
        row = await session.get(User, username)
        if row is None:
            return None
        detail: dict[str, Any] = {}
        if change.display_name is not None and change.display_name != row.display_name:
            row.display_name = change.display_name[:200]
            detail["display_name"] = row.display_name
        if change.grant_given:
            grant = _grant(
                change.role or row.role,
                change.kinds,
                change.districts,
                change.vendor,
                change.teams,
                known_teams,
            )
            if grant.vendor and await session.get(Vendor, grant.vendor) is None:
                raise AccountError(f"no vendor {grant.vendor!r}; register it first")
            row.role, row.kinds, row.districts = grant.role, grant.kinds, grant.districts
            row.vendor_id, row.teams = grant.vendor, grant.teams
            detail.update(role=row.role, **_grant_of(row))
        if hashed is not None:
            row.password_hash = hashed
            row.password_changed_at = utcnow()
            detail["password"] = "changed"
        if change.disabled is not None and change.disabled != (row.disabled_at is not None):
            row.disabled_at = utcnow() if change.disabled else None
            detail["disabled"] = change.disabled
        if change.unlock and (row.locked_until is not None or row.failures):
            row.locked_until, row.failures = None, []
            detail["unlocked"] = True
        if not detail:
            return row
        if change.grant_given or hashed is not None or change.disabled:
            await _end_sessions(session, username, "account_changed")
        session.add(
            AuditEntry(
                actor=by[:128],
                role=by_role,
                action="user.update",
                resource=f"users/{username}",
                detail=detail,
            )
        )
    return row


async def _end_sessions(session: Any, username: str, why: str) -> None:
    await session.execute(
        update(UserSession)
        .where(UserSession.username == username, UserSession.ended_at.is_(None))
        .values(ended_at=utcnow(), ended_why=why)
    )


def _grant_of(row: User) -> dict[str, Any]:
    return {
        "kinds": row.kinds,
        "districts": row.districts,
        "vendor": row.vendor_id,
        "teams": row.teams,
    }


async def list_users(sessions: Any) -> list[User]:
    async with sessions() as session:
        return list(await session.scalars(select(User).order_by(User.username)))


async def get_user(sessions: Any, username: str) -> User | None:
    async with sessions() as session:
        return await session.get(User, username)


def locked_until(row: User, now: dt.datetime) -> dt.datetime | None:
    """The end of the lock in force on ``row`` at ``now``; None when it is not locked."""
    if row.locked_until is None:
        return None
    until = as_utc(row.locked_until)
    return until if until > now else None


@dataclass(frozen=True)
class SignedIn:
    """A session just opened: the cookie's token (shown once) and who it is."""

    token: str
    principal: Principal
    user: User

    @property
    def csrf_token(self) -> str:
        return csrf_token(self.token)


class SessionEnded(Exception):
    """The presented session cannot be used; the message says why and what to do."""


class SessionBook:
    """Opens, finds and ends people's sessions in the SQL store."""

    def __init__(self, sessions: Any) -> None:
        self.sessions = sessions

    async def sign_in(
        self, username: str, password: str, address: str, user_agent: str = ""
    ) -> SignedIn:
        """A new session for ``username``, or :class:`SignInRefused` (401 wrong name or
        password, 423 locked). Every outcome is audit-logged with the caller's address."""
        now = utcnow()
        where = {"address": address}
        name = username[:64]
        refusal: SignInRefused | None = None
        async with self.sessions() as session, session.begin():
            # Locked (PostgreSQL): concurrent failures of one account are all counted.
            row = (
                await session.scalars(select(User).where(User.username == name).with_for_update())
            ).first()
            until = locked_until(row, now) if row is not None else None
            if row is None or row.disabled_at is not None or len(password) > MAX_PASSWORD:
                await _waste_a_verify(password[:MAX_PASSWORD])
                why = "disabled" if row is not None and row.disabled_at else "unknown account"
                if len(password) > MAX_PASSWORD:
                    why = "password too long"
                session.add(_entry(name, "", "session.fail", {**where, "reason": why}))
                refusal = SignInRefused(401, WRONG)
            elif until is not None:
                session.add(_entry(name, row.role, "session.fail", {**where, "reason": "locked"}))
                refusal = SignInRefused(
                    423,
                    f"the account {name} is locked after {LOCK_AFTER} failed sign-ins until "
                    f"{city_time(until)}; try again then, or ask an administrator to unlock "
                    f"it (cityiot users unlock {name})",
                    retry_after_s=max(1, int((until - now).total_seconds() + 0.999)),
                )
            elif not await _verify(row.password_hash, password):
                cutoff = (now - LOCK_WINDOW).timestamp()
                failures = [t for t in (row.failures or []) if t > cutoff] + [now.timestamp()]
                detail = {**where, "reason": "wrong password", "failures": len(failures)}
                session.add(_entry(name, row.role, "session.fail", detail))
                if len(failures) >= LOCK_AFTER:
                    row.locked_until, row.failures = now + LOCK_FOR, []
                    lock = {**where, "until": row.locked_until.isoformat()}
                    session.add(_entry(name, row.role, "session.lock", lock))
                else:
                    row.failures = failures
                refusal = SignInRefused(401, WRONG)
            else:
                if _hasher.check_needs_rehash(row.password_hash):
                    row.password_hash = await hash_password(password)
                row.failures, row.locked_until = [], None
                token = secrets.token_urlsafe(32)
                session.add(
                    UserSession(
                        id=_token_hash(token),
                        username=name,
                        created_at=now,
                        last_seen_at=now,
                        address=address[:64],
                        user_agent=user_agent[:200],
                    )
                )
                session.add(_entry(name, row.role, "session.sign_in", where))
        if refusal is not None:  # raised once the failure and its audit are committed
            raise refusal
        assert row is not None
        return SignedIn(token, principal_of_user(row), row)

    async def identify(self, token: str, *, touch: bool = True) -> Principal:
        """The person whose session the cookie's ``token`` is, or :class:`SessionEnded`.
        A session idle for :data:`IDLE` ends here; ``touch`` counts this as a use."""
        now = utcnow()
        async with self.sessions() as session:
            found = (
                await session.execute(
                    select(UserSession, User)
                    .join(User, User.username == UserSession.username)
                    .where(UserSession.id == _token_hash(token))
                )
            ).first()
            if found is None:
                raise SessionEnded(ENDED)
            row, user = found
            if row.ended_at is not None:
                raise SessionEnded(
                    IDLE_ENDED if row.ended_why == "idle" else ENDED_WHY.get(row.ended_why, ENDED)
                )
            if user.disabled_at is not None:
                raise SessionEnded(ENDED_WHY["account_changed"])
            if now - as_utc(row.last_seen_at) >= IDLE:
                await session.execute(
                    update(UserSession)
                    .where(UserSession.id == row.id, UserSession.ended_at.is_(None))
                    .values(ended_at=now, ended_why="idle")
                )
                session.add(_entry(user.username, user.role, "session.idle_end", {}))
                await session.commit()
                raise SessionEnded(IDLE_ENDED)
            if touch and now - as_utc(row.last_seen_at) >= TOUCH:
                await session.execute(
                    update(UserSession).where(UserSession.id == row.id).values(last_seen_at=now)
                )
                await session.commit()
            return principal_of_user(user)

    async def sign_out(self, token: str, address: str) -> bool:
        """End the session of ``token``; False when it had already ended."""
        async with self.sessions() as session, session.begin():
            row = await session.get(UserSession, _token_hash(token))
            if row is None or row.ended_at is not None:
                return False
            row.ended_at, row.ended_why = utcnow(), "sign_out"
            user = await session.get(User, row.username)
            role = user.role if user is not None else ""
            session.add(_entry(row.username, role, "session.sign_out", {"address": address}))
            return True

    async def change_password(self, principal: Principal, current: str, new: str) -> None:
        """A person's own password change; :class:`SignInRefused` (401) when ``current`` is
        wrong, :class:`AccountError` when ``new`` is not accepted. Every session of the
        account ends, this one too: the person signs in again with the new password."""
        assert principal.user is not None
        check_password(new, principal.user)
        async with self.sessions() as session:
            row = await session.get(User, principal.user)
        if row is None or not await _verify(row.password_hash, current):
            raise SignInRefused(401, "the current password is wrong; nothing was changed")
        await update_user(
            self.sessions,
            principal.user,
            Change(password=new),
            by=principal.actor,
            by_role=principal.role,
        )


WRONG = "wrong username or password"
ENDED = "the session has ended (signed out, or never opened); sign in again"
IDLE_ENDED = (
    f"the session ended after {int(IDLE.total_seconds() // 60)} minutes without use; sign in again"
)
ENDED_WHY = {
    "sign_out": "the session was signed out; sign in again",
    "account_changed": "the account was changed or disabled by an administrator; sign in again",
}


def _entry(username: str, role: str, action: str, detail: dict[str, Any]) -> AuditEntry:
    return AuditEntry(
        actor=f"user:{username}",
        role=role or "none",
        action=action,
        resource=f"users/{username}",
        detail=detail,
    )
