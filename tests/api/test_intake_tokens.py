"""``POST /vendors/{id}/intake-token``: the token the vendor's CTWing and OneNET pushes
present — issued by an admin, shown once, kept only as its hash, replaced by the next one;
checked with :func:`cityiot.storage.intake_tokens.verify` (what the push receivers call),
on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from cityiot.storage import intake_tokens
from cityiot.storage.engine import make_engine
from cityiot.storage.intake_tokens import (
    derive_token,
    forget_cached,
    issue_intake_token,
    signing_token,
    verify,
)
from cityiot.storage.tables.audit import AuditEntry
from cityiot.storage.tables.intake import IntakeToken
from tests.api.conftest import Api

V = "/api/v1/vendors"


def intake(api: Api) -> Any:
    """The API's own session factory: what its push receivers check tokens with."""
    return api.server.app.state.ctx.sessions


async def stored_rows(api: Api) -> dict[str, tuple[str, str]]:
    """vendor → (token_hash, created_by) as the database holds them."""
    async with api.sessions() as session:
        rows = (await session.execute(select(IntakeToken))).scalars().all()
    return {row.vendor_id: (row.token_hash, row.created_by) for row in rows}


async def test_issuing_a_token_that_the_pushes_can_present(api: Api) -> None:
    r = await api.client("admin").post(f"{V}/acme/intake-token")
    assert r.status_code == 201
    body = r.json()
    token = body["token"]
    assert body["vendor"] == "acme" and body["replaced"] is False
    assert body["created_at"].endswith("+08:00")
    assert body["note"].startswith("shown once")
    assert "/api/v1/intake/ctwing/acme?token=TOKEN" in body["note"]
    assert len(token) == 32 and token.isalnum()

    assert await verify(intake(api), "acme", token)
    assert not await verify(intake(api), "acme", token[:-1] + ("a" if token[-1] != "a" else "b"))
    assert not await verify(intake(api), "acme", "")
    assert not await verify(intake(api), "acme", None)
    assert not await verify(intake(api), "acme", token * 10)  # over the length any token has
    # The token is acme's: it opens no other vendor's intake, registered or not.
    assert not await verify(intake(api), "oldco", token)
    assert not await verify(intake(api), "nosuch", token)

    rows = await stored_rows(api)
    assert rows["acme"][0] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in rows["acme"][0]
    assert rows["acme"][1].startswith("key:")


async def test_issuing_again_replaces_the_token(api: Api) -> None:
    admin = api.client("admin")
    first = (await admin.post(f"{V}/acme/intake-token")).json()["token"]
    other = (await admin.post(f"{V}/oldco/intake-token")).json()["token"]
    assert await verify(intake(api), "acme", first)
    r = await admin.post(f"{V}/acme/intake-token")
    assert r.status_code == 201 and r.json()["replaced"] is True
    second = r.json()["token"]
    assert second != first
    assert await verify(intake(api), "acme", second)
    # Issued through this process's API, the old one stops at once (no cache delay).
    assert not await verify(intake(api), "acme", first)
    # oldco's token is untouched, and neither vendor's opens the other's intake.
    assert await verify(intake(api), "oldco", other)
    assert not await verify(intake(api), "oldco", second)
    assert not await verify(intake(api), "acme", other)
    rows = await stored_rows(api)
    assert set(rows) == {"acme", "oldco"}  # one row a vendor: replaced, not added

    async with api.sessions() as session:
        entries = (
            await session.scalars(
                select(AuditEntry)
                .where(AuditEntry.action == "vendor.intake_token.issue")
                .order_by(AuditEntry.id)
            )
        ).all()
    assert [(e.resource, e.detail["replaced"], e.role) for e in entries] == [
        ("vendors/acme/intake-token", False, "admin"),
        ("vendors/oldco/intake-token", False, "admin"),
        ("vendors/acme/intake-token", True, "admin"),
    ]
    for entry in entries:  # the token itself is never logged
        assert all(t not in str(entry.detail) for t in (first, second, other))


async def test_a_vendor_without_a_token_gets_one_from_the_library(api: Api) -> None:
    """What the CLI calls: a vendor with no token is refused anything, then its token
    works at once in the process that issued it."""
    assert not await verify(api.sessions, "oldco", "x" * 32)  # no token yet
    issued = await issue_intake_token(api.sessions, "oldco", secret=b"s" * 32, actor="cli")
    assert issued.replaced is False
    assert await verify(api.sessions, "oldco", issued.token)


async def test_only_admins_issue_tokens_for_registered_vendors(api: Api) -> None:
    for role in ("operator", "field", "department", "vendor"):
        r = await api.client(role).post(f"{V}/acme/intake-token")
        assert r.status_code == 403, role
        assert r.headers["content-type"].startswith("application/problem+json")
    assert (await api.client(None).post(f"{V}/acme/intake-token")).status_code == 401
    r = await api.client("admin").post(f"{V}/nosuch/intake-token")
    assert r.status_code == 404
    assert "no vendor 'nosuch'" in r.json()["detail"]
    assert "POST /api/v1/vendors" in r.json()["detail"]
    assert await stored_rows(api) == {}  # nothing issued by any of these


async def test_a_token_is_derived_again_for_signatures_only_under_its_secret(api: Api) -> None:
    """OneNET signs over the token itself: the API derives it from its secret and the stored
    salt. A token issued elsewhere under another secret, or before tokens were derived, is
    refused for signatures (and still verifies as itself for CTWing)."""
    ctx = api.server.app.state.ctx
    r = await api.client("admin").post(f"{V}/oldco/intake-token")
    token = r.json()["token"]
    assert await signing_token(intake(api), "oldco", ctx.secret) == token
    # The database holds a hash and a salt: neither is the token, nor gives it without the
    # secret.
    async with api.sessions() as session:
        row = await session.get(IntakeToken, "oldco")
    assert row is not None and token not in (row.token_hash, row.salt)
    assert derive_token(b"another secret of 32 characters!", "oldco", row.salt) != token
    # Issued by a CLI that had another secret: CTWing's check passes, OneNET's cannot.
    other = await issue_intake_token(intake(api), "oldco", secret=b"o" * 32, actor="cli")
    assert await verify(intake(api), "oldco", other.token)
    assert await signing_token(intake(api), "oldco", ctx.secret) is None
    # A token issued before tokens were derived (no salt).
    async with api.sessions() as session, session.begin():
        row = await session.get(IntakeToken, "oldco")
        assert row is not None
        row.salt = ""
    forget_cached(intake(api), "oldco")
    assert await signing_token(intake(api), "oldco", ctx.secret) is None


def counting_queries(engine: AsyncEngine) -> list[str]:
    """The statements ``engine`` sends from now on, as the driver receives them."""
    sent: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    return sent


async def test_pushes_that_find_the_token_expired_together_share_one_read(api: Api) -> None:
    """A burst of pushes arriving as the cached token expires costs the database one query,
    not one pooled connection each (a burst of CTWing retries once exhausted the pool)."""
    token = (await api.client("admin").post(f"{V}/acme/intake-token")).json()["token"]
    engine = make_engine(api.settings.database_url)
    try:
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        sent = counting_queries(engine)
        checks = await asyncio.gather(*(verify(sessions, "acme", token) for _ in range(50)))
        assert checks == [True] * 50
        assert len([s for s in sent if "intake_tokens" in s]) == 1, sent
        # A token issued here meanwhile is read again at once, by one query.
        forget_cached(sessions, "acme")
        checks = await asyncio.gather(*(verify(sessions, "acme", "x" * 32) for _ in range(20)))
        assert checks == [False] * 20
        assert len([s for s in sent if "intake_tokens" in s]) == 2, sent
    finally:
        await engine.dispose()


async def test_a_busy_database_does_not_turn_a_known_token_away(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every pooled connection in use when the cached token is due to be read again: the
    value read before serves (for up to STALE_S, logged); with none read before, the check
    fails as the database did (the receiver answers 503)."""
    token = (await api.client("admin").post(f"{V}/acme/intake-token")).json()["token"]
    monkeypatch.setattr(intake_tokens, "CACHE_S", 0.0)  # every check reads again
    engine = create_async_engine(
        api.settings.database_url, pool_size=1, max_overflow=0, pool_timeout=0.2
    )
    try:
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        assert await verify(sessions, "acme", token)  # read, and cached
        async with engine.connect() as held:  # the pool's only connection
            await held.execute(select(1))
            caplog.set_level(logging.WARNING, "cityiot.storage.intake_tokens")
            assert await verify(sessions, "acme", token)
            assert not await verify(sessions, "acme", "x" * 32)
            assert "event=intake_token_stale vendor=acme" in caplog.text
            assert "TimeoutError" in caplog.text
            with pytest.raises(SQLAlchemyError):  # never read: nothing to serve
                await verify(sessions, "oldco", "x" * 32)
            monkeypatch.setattr(intake_tokens, "STALE_S", 0.0)
            with pytest.raises(SQLAlchemyError):  # read too long ago
                await verify(sessions, "acme", token)
        assert await verify(sessions, "acme", token)  # the database answers again
    finally:
        await engine.dispose()
