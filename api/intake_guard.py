"""Repeated wrong intake tokens or signatures, audit-logged (docs/design.md §4a, §10).

A push with a wrong token is answered 401 and nothing else happens to it; one mistyped URL
is not worth an audit entry, a stream of them is (a guessing attack, or a push subscription
left pointing at a withdrawn token). After :data:`THRESHOLD` failures from one address for
one vendor within :data:`WINDOW_S`, one entry ``intake.token_failures`` is written naming
the link, the vendor, the address and the count; then at most one more per window while
they go on, so a flood of forged requests cannot flood the audit log.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cityiot.storage.tables.audit import AuditEntry

log = logging.getLogger("cityiot.api.intake")

THRESHOLD = 5
WINDOW_S = 600.0
MAX_TRACKED = 4096  # (vendor, address) pairs remembered; the oldest are forgotten first


@dataclass(slots=True)
class _Count:
    since: float  # start of the current window
    failures: int = 0
    audited: bool = False  # an entry was written in this window


class TokenFailures:
    """Counts wrong tokens per (vendor, address) and audits the repeated ones."""

    def __init__(self, threshold: int = THRESHOLD, window_s: float = WINDOW_S) -> None:
        self.threshold = threshold
        self.window_s = window_s
        self._counts: OrderedDict[tuple[str, str], _Count] = OrderedDict()

    async def failed(
        self,
        sessions: async_sessionmaker[AsyncSession],
        link: str,
        vendor: str,
        address: str,
        what: str,
    ) -> None:
        """Count one failure (``what``: ``token`` or ``signature``); audit when repeated."""
        key = (vendor, address)
        now = time.monotonic()
        count = self._counts.get(key)
        if count is None or now - count.since > self.window_s:
            count = _Count(since=now)
        self._counts[key] = count
        self._counts.move_to_end(key)
        while len(self._counts) > MAX_TRACKED:
            self._counts.popitem(last=False)
        count.failures += 1
        if count.failures < self.threshold or count.audited:
            return
        count.audited = True
        detail: dict[str, Any] = {
            "link": link,
            "vendor": vendor,
            "address": address,
            "failures": count.failures,
            "window_s": self.window_s,
            "wrong": what,
        }
        log.warning(
            "event=intake_token_failures link=%s vendor=%s address=%s failures=%d",
            link,
            vendor,
            address,
            count.failures,
        )
        try:
            async with sessions() as session, session.begin():
                session.add(
                    AuditEntry(
                        actor=f"{link}@{address}"[:128],
                        role="intake",
                        action="intake.token_failures",
                        resource=f"vendors/{vendor}/intake-token"[:200],
                        detail=detail,
                    )
                )
        except Exception as exc:  # the 401 stands; the log line above keeps the record
            log.warning("event=intake_audit_failed vendor=%s error=%s", vendor, exc)
