"""API keys: created with a role (and a grant), shown once, stored as a SHA-256 hash.

A key reads ``cik_<id>_<secret>``; the id is looked up, the secret's hash compared in
constant time. Keys are long random strings, so a fast hash is enough (no password
stretching needed). A key may carry an expiry (``expires_at``): after it the key is refused
like a revoked one, so a key handed to a contractor does not outlive the contract.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from cityiot.domain.catalogue import DISTRICTS, KINDS, is_valid_id
from cityiot.storage.tables.audit import AuditEntry
from cityiot.storage.tables.keys import ApiKey
from cityiot.storage.tables.registry import Vendor
from cityiot.storage.utc import as_utc, utcnow

ROLES = ("admin", "operator", "field", "department", "vendor")
PREFIX = "cik_"


class KeyRequestError(ValueError):
    """A key that cannot be created as asked; the message says what to change."""


class LastAdminKey(ValueError):
    """Revoking this key would leave no active admin key; the message says what to do."""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key's role and grant."""

    key_id: str
    name: str
    role: str
    kinds: frozenset[str] | None = None  # None: every kind
    districts: frozenset[str] | None = None  # None: every district
    vendor: str | None = None  # a vendor key sees only this vendor's devices
    # Field keys (and people of role field): the teams whose work orders and alerts they act
    # on; None for other roles, and for field keys made before keys carried teams.
    teams: frozenset[str] | None = None
    expires_at: dt.datetime | None = None  # UTC; None: the key never expires
    # A person signed in with a password (DESIGN §10): their username; None for a key.
    user: str | None = None

    def expired(self, at: dt.datetime) -> bool:
        """Whether the key has expired at ``at`` (an aware datetime)."""
        return self.expires_at is not None and self.expires_at <= at

    @property
    def actor(self) -> str:
        if self.user is not None:
            return f"user:{self.user}" + (f" ({self.name})" if self.name else "")
        return f"key:{self.key_id}" + (f" ({self.name})" if self.name else "")

    @property
    def holder(self) -> str:
        """What the caller presented, in messages: "key" or "account"."""
        return "account" if self.user is not None else "key"

    @property
    def restricted(self) -> bool:
        return self.kinds is not None or self.districts is not None or self.vendor is not None

    def sees(self, kind: str | None, district: str | None, vendor: str | None = None) -> bool:
        """Whether data of this kind, district and vendor is within the key's grant."""
        if self.kinds is not None and kind not in self.kinds:
            return False
        if self.districts is not None and district not in self.districts:
            return False
        return self.vendor is None or vendor == self.vendor

    @property
    def team_bound(self) -> bool:
        """Whether work orders and acknowledgements are limited to the caller's teams."""
        return self.role == "field"

    def acts_for(self, teams: Iterable[str | None]) -> bool:
        """Whether an item routed to any of ``teams`` is the caller's to act on."""
        if not self.team_bound:
            return True
        return self.teams is not None and any(t in self.teams for t in teams)

    def grant(self) -> dict[str, Any]:
        grant: dict[str, Any] = {
            "kinds": sorted(self.kinds) if self.kinds is not None else None,
            "districts": sorted(self.districts) if self.districts is not None else None,
            "vendor": self.vendor,
        }
        if self.teams is not None:
            grant["teams"] = sorted(self.teams)
        return grant


def _check_list(values: Iterable[str] | None, known: Iterable[str], what: str) -> list[str] | None:
    if values is None:
        return None
    values = sorted(set(values))
    allowed = set(known)
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise KeyRequestError(f"unknown {what} {unknown}; use {', '.join(sorted(allowed))}")
    if not values:
        raise KeyRequestError(f"an empty list of {what} grants nothing; omit it to grant every one")
    return values


async def create_key(
    sessions: Any,
    role: str,
    *,
    name: str = "",
    kinds: Iterable[str] | None = None,
    districts: Iterable[str] | None = None,
    vendor: str | None = None,
    teams: Iterable[str] | None = None,
    known_teams: Iterable[str] = (),
    created_by: str = "cli",
    creator_role: str = "admin",
    expires_at: dt.datetime | None = None,
) -> tuple[ApiKey, str]:
    """A new key; returns the row and the key itself (shown once, never stored).

    A field key names at least one of ``known_teams`` (the routing file's teams); no other
    role carries teams. ``expires_at`` (aware, in the future) ends the key; None: never.
    """
    if expires_at is not None:
        expires_at = check_expiry(expires_at)
    grant = check_grant(role, kinds, districts, vendor, teams, known_teams)
    kind_list, district_list, team_list = grant.kinds, grant.districts, grant.teams
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    row = ApiKey(
        id=key_id,
        secret_hash=_hash(secret),
        name=name[:200],
        role=role,
        kinds=kind_list,
        districts=district_list,
        vendor_id=vendor if role == "vendor" else None,
        teams=team_list,
        created_by=created_by,
        expires_at=expires_at,
    )
    async with sessions() as session, session.begin():
        if vendor and await session.get(Vendor, vendor) is None:
            raise KeyRequestError(f"no vendor {vendor!r}; register it first (cityiot vendors add)")
        session.add(row)
        session.add(
            AuditEntry(
                actor=created_by,
                role=creator_role,
                action="key.create",
                resource=f"keys/{key_id}",
                detail={
                    "role": role,
                    "name": row.name,
                    "kinds": kind_list,
                    "districts": district_list,
                    "vendor": row.vendor_id,
                    "teams": team_list,
                    "expires_at": expires_at.isoformat() if expires_at else None,
                },
            )
        )
    return row, f"{PREFIX}{key_id}_{secret}"


EXPIRY_FORMS = (
    "a duration (90d, 12w, 36h) or an ISO date or time (2027-03-31, 2027-03-31T18:00+08:00)"
)
_DURATION = re.compile(r"^(\d+)\s*([hdw])$")
_UNIT_S = {"h": 3600, "d": 86400, "w": 7 * 86400}


def check_expiry(expires_at: dt.datetime, now: dt.datetime | None = None) -> dt.datetime:
    """``expires_at`` in UTC; :class:`KeyRequestError` when it has no time zone or is past."""
    if expires_at.tzinfo is None:
        raise KeyRequestError(
            f"the expiry {expires_at.isoformat()} has no time zone; add one "
            "(e.g. 2027-03-31T18:00:00+08:00 or ...Z)"
        )
    expires_at = as_utc(expires_at)
    if expires_at <= (now or utcnow()):
        raise KeyRequestError(
            f"the expiry {expires_at.isoformat()} is already past; give a future time"
        )
    return expires_at


def parse_expiry(text: str, now: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """An expiry as the command line takes it: ``90d`` (from ``now``) or an ISO date or time;
    a date alone means its end of day, and a time without zone is in ``zone`` (the city's)."""
    text = text.strip()
    duration = _DURATION.match(text.lower())
    if duration:
        count, unit = int(duration.group(1)), duration.group(2)
        if count == 0:
            raise KeyRequestError(f"--expires {text!r} is no time at all; give e.g. 90d")
        return check_expiry(now + dt.timedelta(seconds=count * _UNIT_S[unit]), now)
    try:
        if len(text) == 10:  # a date: the key works through that whole day
            day = dt.date.fromisoformat(text)
            at = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone)
        else:
            at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise KeyRequestError(f"--expires {text!r} is not {EXPIRY_FORMS}") from None
    return check_expiry(at if at.tzinfo is not None else at.replace(tzinfo=zone), now)


@dataclass(frozen=True, slots=True)
class Grant:
    """A role's checked grant, as a key or a person's account stores it."""

    role: str
    kinds: list[str] | None
    districts: list[str] | None
    vendor: str | None
    teams: list[str] | None


def check_grant(
    role: str,
    kinds: Iterable[str] | None,
    districts: Iterable[str] | None,
    vendor: str | None,
    teams: Iterable[str] | None,
    known_teams: Iterable[str],
    holder: str = "key",
) -> Grant:
    """The grant of a ``holder`` (a key or an account) of ``role``, or a
    :class:`KeyRequestError` saying what to change: kinds and districts restrict department
    ones, a vendor one names its vendor, a field one acts for teams of the routing file."""
    if role not in ROLES:
        raise KeyRequestError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    kind_list = _check_list(kinds, KINDS, "kinds")
    district_list = _check_list(districts, DISTRICTS, "districts")
    if (kind_list or district_list) and role != "department":
        raise KeyRequestError(
            f"kinds and districts restrict department {holder}s only; use --role department"
        )
    if role == "vendor":
        if not vendor or not is_valid_id(vendor):
            raise KeyRequestError(
                f"a vendor {holder} needs the vendor id it belongs to (--vendor ID)"
            )
    elif vendor:
        raise KeyRequestError(f"--vendor belongs to vendor {holder}s only; use --role vendor")
    team_list = check_teams(role, teams, known_teams, holder)
    return Grant(role, kind_list, district_list, vendor if role == "vendor" else None, team_list)


def check_teams(
    role: str, teams: Iterable[str] | None, known_teams: Iterable[str], holder: str = "key"
) -> list[str] | None:
    """The teams a key (or account) of ``role`` carries, checked against the routing file's."""
    team_list = sorted(set(teams)) if teams is not None else None
    known = ", ".join(sorted(set(known_teams))) or "none: the routing file names no team"
    if role != "field":
        if team_list:
            raise KeyRequestError(f"teams belong to field {holder}s only; use --role field")
        return None
    if not team_list:
        raise KeyRequestError(
            f"a field {holder} acts for a team; name at least one with --team (teams: {known})"
        )
    unknown = [t for t in team_list if t not in set(known_teams)]
    if unknown:
        raise KeyRequestError(
            f"unknown team(s) {', '.join(unknown)}; the routing file's teams are {known}"
        )
    return team_list


def principal_of(row: ApiKey) -> Principal:
    return Principal(
        key_id=row.id,
        name=row.name,
        role=row.role,
        kinds=frozenset(row.kinds) if row.kinds is not None else None,
        districts=frozenset(row.districts) if row.districts is not None else None,
        vendor=row.vendor_id,
        teams=frozenset(row.teams) if row.teams is not None else None,
        expires_at=as_utc(row.expires_at) if row.expires_at is not None else None,
    )


# Issued keys are about 60 characters; anything much longer is refused before any lookup.
MAX_KEY_CHARS = 200


class KeyRing:
    """Resolves presented keys, remembering keys that resolve for ``ttl_s`` (so a revocation
    made by another process takes effect within that time; in this process, at once). An
    expiry is checked on every use, remembered or not, so it takes effect to the second.

    Only real keys are remembered, at most ``max_cached`` of them (least recently used go
    first): strings that resolve to no one are looked up each time, so made-up keys cannot
    fill the memory. Keys over :data:`MAX_KEY_CHARS` are refused unread.
    """

    def __init__(self, sessions: Any, ttl_s: float = 2.0, max_cached: int = 10_000) -> None:
        self.sessions = sessions
        self.ttl_s = ttl_s
        self.max_cached = max_cached
        self._cache: dict[str, tuple[float, Principal]] = {}  # insertion order: LRU first

    def cached(self, presented: str, now: float) -> Principal | None:
        """The principal of a key that resolved within ``ttl_s``, without a lookup (an
        expired key's too: the caller checks :meth:`Principal.expired`)."""
        hit = self._cache.pop(presented, None)
        if hit is None or now - hit[0] >= self.ttl_s:
            return None
        self._cache[presented] = hit  # most recently used last
        return hit[1]

    async def resolve(self, presented: str, now: float) -> Principal | None:
        """The principal of a usable key; None for an unknown, revoked or expired one."""
        principal = await self.identify(presented, now)
        if principal is None or principal.expired(utcnow()):
            return None
        return principal

    async def identify(self, presented: str, now: float) -> Principal | None:
        """The principal of a real, unrevoked key, expired or not (so the refusal can say
        when it expired)."""
        known = self.cached(presented, now)
        if known is not None:
            return known
        if len(presented) > MAX_KEY_CHARS:
            return None
        principal = await self._lookup(presented)
        if principal is not None:
            self._cache[presented] = (now, principal)
            while len(self._cache) > self.max_cached:
                del self._cache[next(iter(self._cache))]
        return principal

    async def _lookup(self, presented: str) -> Principal | None:
        if not presented.startswith(PREFIX):
            return None
        key_id, _, secret = presented[len(PREFIX) :].partition("_")
        if not key_id or not secret or len(key_id) > 16:
            return None
        async with self.sessions() as session:
            row = await session.get(ApiKey, key_id)
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.secret_hash, _hash(secret)):
            return None
        return principal_of(row)

    def __len__(self) -> int:
        return len(self._cache)

    def forget(self) -> None:
        self._cache.clear()


async def revoke_key(sessions: Any, key_id: str, by: str, role: str) -> ApiKey | None:
    """Revoke a key (None: no such key); raises :class:`LastAdminKey` rather than revoke
    the last active admin key, which would lock every administrator out of the API."""
    async with sessions() as session, session.begin():
        row = await session.get(ApiKey, key_id)
        if row is None:
            return None
        if row.revoked_at is None and row.role == "admin":
            # Locked rows (PostgreSQL): two admins revoking each other's keys cannot both win.
            active = await session.scalars(
                select(ApiKey.id)
                .where(ApiKey.role == "admin", ApiKey.revoked_at.is_(None))
                .with_for_update()
            )
            if set(active) <= {key_id}:
                raise LastAdminKey(
                    f"key {key_id} is the last active admin key; create another admin key "
                    "first (POST /api/v1/keys with role admin, or cityiot keys create --role "
                    "admin), then revoke this one"
                )
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            session.add(
                AuditEntry(actor=by, role=role, action="key.revoke", resource=f"keys/{key_id}")
            )
    return row


async def list_keys(sessions: Any) -> list[ApiKey]:
    async with sessions() as session:
        return list(await session.scalars(select(ApiKey).order_by(ApiKey.created_at)))
