"""Every refused request (401, 403) in the audit log, with the caller's address: an
assessment (等保 2.0) asks that failed access be recorded, and an attacker must not be able
to flood the log by failing on purpose.

:class:`DenialAudit` is a pure ASGI middleware: it sees each answer's status, whoever
raised it (a route, the edge, the intake's token check). Each address may write
:data:`PER_ADDRESS` entries a minute and the whole process :data:`IN_ALL` a minute; what
is held back is counted and reported by the next entry written for that address
(``suppressed``), and in ``cityiot_api_denials_*`` at ``/metrics``. The entries are written
off the request's path (the answer does not wait for the database).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cityiot.api.limits import client_address
from cityiot.api.ratelimit import RateLimiter
from cityiot.storage.tables.audit import AuditEntry

log = logging.getLogger("cityiot.api.audit")

PER_ADDRESS = 10  # entries a minute for one address (bursts of as many)
IN_ALL = 120  # entries a minute for the whole process
DENIED = frozenset({401, 403})


@dataclass
class DenialCounters:
    denied: int = 0  # 401/403 answers since the start
    audited: int = 0  # of which written to the audit log
    suppressed: int = 0  # held back by the limits
    write_failures: int = 0
    _held: dict[str, int] = field(default_factory=dict)  # address → suppressed since last entry

    def metrics(self) -> dict[str, Any]:
        return {
            "denied_total": self.denied,
            "audited_total": self.audited,
            "suppressed_total": self.suppressed,
            "write_failures_total": self.write_failures,
        }


class DenialAudit:
    """Writes an ``access.denied`` audit entry for each 401/403 answer, within the limits."""

    def __init__(self, app: ASGIApp, sessions: Callable[[], Any], counters: DenialCounters) -> None:
        self.app = app
        self.sessions = sessions  # the SQL store's session factory, once the app has started
        self.counters = counters
        self.per_address = RateLimiter(PER_ADDRESS / 60.0, PER_ADDRESS, max_buckets=10_000)
        self.in_all = RateLimiter(IN_ALL / 60.0, IN_ALL)
        self._writing: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in DENIED:
                self._denied(scope, message["status"])
            await send(message)

        await self.app(scope, receive, watch)

    def _denied(self, scope: Scope, status: int) -> None:
        counters = self.counters
        counters.denied += 1
        address = client_address(scope)
        now = time.monotonic()
        if self.per_address.take(address, now) or self.in_all.take("", now):
            counters.suppressed += 1
            held = counters._held
            if address in held or len(held) < 10_000:
                held[address] = held.get(address, 0) + 1
            return
        principal = scope.get("state", {}).get("principal")
        entry = AuditEntry(
            actor=(principal.actor if principal is not None else f"anonymous@{address}")[:128],
            role=principal.role if principal is not None else "none",
            action="access.denied",
            resource=str(scope.get("path", ""))[:200],
            detail={
                "status": status,
                "method": scope.get("method", ""),
                "address": address,
                "suppressed_before": counters._held.pop(address, 0),
            },
        )
        task = asyncio.get_running_loop().create_task(self._write(entry))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _write(self, entry: AuditEntry) -> None:
        try:
            async with self.sessions()() as session, session.begin():
                session.add(entry)
            self.counters.audited += 1
        except Exception as exc:  # the database is away: the answer went out regardless
            self.counters.write_failures += 1
            log.warning("event=denial_audit_failed error=%s", type(exc).__name__)
