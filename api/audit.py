"""The audit log: who changed what. Written in the same transaction as the change itself."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.keys import Principal
from cityiot.db import AuditEntry


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
