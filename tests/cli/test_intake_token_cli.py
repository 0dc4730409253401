"""``cityiot vendors intake-token ID`` as an operator runs it: the token alone on stdout,
one line that the push receivers' check accepts; issuing again replaces it; an unknown
vendor is an error naming it. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib

from sqlalchemy import select

from cityiot.storage.engine import make_engine, sessionmaker
from cityiot.storage.intake_tokens import verify
from cityiot.storage.tables.audit import AuditEntry
from cityiot.storage.tables.intake import IntakeToken
from tests.cli.test_codecs_cli import cityiot


def check(database_url: str, vendor_id: str, *tokens: str) -> list[bool]:
    """Whether each token opens ``vendor_id``'s intake, read by a fresh process's check."""

    async def run() -> list[bool]:
        engine = make_engine(database_url)
        try:
            sessions = sessionmaker(engine)
            return [await verify(sessions, vendor_id, token) for token in tokens]
        finally:
            await engine.dispose()

    return asyncio.run(run())


def stored(database_url: str) -> tuple[dict[str, str], list[tuple[str, str, bool]]]:
    """vendor → token hash; and (actor, resource, replaced) of each issue in the audit log."""

    async def read() -> tuple[dict[str, str], list[tuple[str, str, bool]]]:
        engine = make_engine(database_url)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(select(IntakeToken.vendor_id, IntakeToken.token_hash))
                hashes = {r.vendor_id: r.token_hash for r in rows}
                entries = await conn.execute(
                    select(AuditEntry.actor, AuditEntry.resource, AuditEntry.detail)
                    .where(AuditEntry.action == "vendor.intake_token.issue")
                    .order_by(AuditEntry.id)
                )
                audit = [(e.actor, e.resource, e.detail["replaced"]) for e in entries]
                return hashes, audit
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_the_token_printed_alone_opens_the_vendors_intake(db_url: str) -> None:
    added = cityiot(db_url, "vendors", "add", "nbco", "--name", "NB Co")
    assert added.returncode == 0, added.stderr
    assert cityiot(db_url, "vendors", "add", "loraco").returncode == 0

    first = cityiot(db_url, "vendors", "intake-token", "nbco")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert len(lines) == 1
    token = lines[0]
    assert len(token) == 32 and token.isalnum()
    assert "intake token issued for vendor nbco" in first.stderr
    assert "not shown again" in first.stderr
    assert "/api/v1/intake/ctwing/nbco?token=TOKEN" in first.stderr
    assert token not in first.stderr
    assert check(db_url, "nbco", token, token.swapcase(), "") == [True, False, False]
    assert check(db_url, "loraco", token) == [False]  # another vendor's intake stays shut

    again = cityiot(db_url, "vendors", "intake-token", "nbco")
    assert again.returncode == 0, again.stderr
    new = again.stdout.strip()
    assert new != token
    assert "the previous one stops working" in again.stderr
    assert check(db_url, "nbco", new, token) == [True, False]

    hashes, audit = stored(db_url)
    assert hashes == {"nbco": hashlib.sha256(new.encode()).hexdigest()}
    assert audit == [
        ("cli", "vendors/nbco/intake-token", False),
        ("cli", "vendors/nbco/intake-token", True),
    ]


def test_an_unknown_vendor_is_named(db_url: str) -> None:
    r = cityiot(db_url, "vendors", "intake-token", "nosuch")
    assert r.returncode != 0
    assert r.stdout == ""
    assert "no vendor 'nosuch'" in r.stderr
    assert "cityiot vendors add nosuch" in r.stderr
    assert stored(db_url) == ({}, [])
