"""The audit log: who changed what. Written in the same transaction as the change itself."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from cityiot.api.keys import Principal
from cityiot.storage.tables.audit import AuditEntry


def audit(
    session: AsyncSession, principal: Principal, action: str, resource: str, **detail: Any
) -> None:
    """Record ``action`` on ``resource`` (e.g. ``device.update``, ``devices/mh-1``)."""
    session.add(
        AuditEntry(
            actor=principal.actor,
            role=principal.role,
            action=action,
            resource=resource,
            detail=detail,
        )
    )


def audited(sessions: Any, principal: Principal, action: str, resource: str, **detail: Any) -> Any:
    """A session factory (an ``async_sessionmaker`` look-alike) whose sessions add one audit
    entry to whatever they commit.

    For changes made by library code that opens its own transaction: the entry is written
    in that transaction, so it exists exactly when the change does.
    """

    def factory() -> AsyncSession:
        session: AsyncSession = sessions()

        def add_entry(_: Session) -> None:
            audit(session, principal, action, resource, **detail)

        event.listen(session.sync_session, "before_commit", add_entry, once=True)
        return session

    return factory
