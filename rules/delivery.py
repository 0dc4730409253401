"""The notification outbox: every message a channel must deliver is a ``Notification`` row,
retried with backoff until delivered, refused, or given up on (docs/design.md §5).

Being in SQL, a message not delivered before a crash or restart is delivered afterwards:
``enqueue`` commits the row, and any ``Deliverer`` on the same database picks it up.
Delivery is at least once: a crash between a receiver taking a message and the row being
marked ``sent`` sends it again.

Row life: ``pending`` → ``sent`` (``sent_at``) | ``failed`` (``last_error`` says why).
A retryable failure keeps the row ``pending`` with ``attempts`` + 1, ``last_error`` and
``next_attempt_at`` pushed back by 1 s, 2 s, 4 s, … capped at 5 min; after ``max_attempts``
(by default as many as take 24 h) it is ``failed``. A non-retryable failure, or a row whose
channel is no longer configured, is ``failed`` at once.

Several deliverers may share a database: each claims a due row (a short lease on
``next_attempt_at``) before sending it, so a row goes out once per attempt.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from cityiot.rules.notifiers import Channel, DeliveryError, NotificationMessage
from cityiot.storage.tables.alerts import Notification
from cityiot.storage.writes import write_now

log = logging.getLogger("cityiot.rules.delivery")

Clock = Callable[[], float]  # seconds since the epoch
SessionFactory = Callable[[], AsyncSession]

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 300.0
GIVE_UP_AFTER_S = 24 * 3600.0


def backoff_s(attempts: int, base_s: float = BACKOFF_BASE_S, cap_s: float = BACKOFF_CAP_S) -> float:
    """The wait after the ``attempts``-th failed attempt: base, 2×base, 4×base, … ≤ cap."""
    return min(cap_s, base_s * 2.0 ** min(attempts - 1, 64))


def attempts_within(
    window_s: float, base_s: float = BACKOFF_BASE_S, cap_s: float = BACKOFF_CAP_S
) -> int:
    """The number of attempts whose backoff spans ``window_s``: the last one comes once
    ``window_s`` has passed since the first (297 for 24 h at 1 s doubling to 5 min)."""
    attempts, waited = 1, 0.0
    while waited < window_s:
        waited += backoff_s(attempts, base_s, cap_s)
        attempts += 1
    return attempts


def utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def outbox_row(
    receiver: str, channel: str, group_key: str, message: Mapping[str, Any], now: float
) -> Notification:
    """A new pending row, due at once, for a caller adding it in its own transaction."""
    return Notification(
        receiver=receiver,
        channel=channel,
        group_key=group_key,
        status="pending",
        payload=dict(message),
        attempts=0,
        next_attempt_at=utc(now),
        last_error="",
        created_at=utc(now),
    )


async def enqueue(
    session_factory: SessionFactory,
    receiver: str,
    channel: str,
    group_key: str,
    message: Mapping[str, Any],
    *,
    clock: Clock = time.time,
) -> int:
    """Store ``message`` for ``channel`` (one row per channel) and return the row's id.

    Call the deliverer's ``notify()`` afterwards to have it sent without waiting for a poll.
    """
    now = clock()

    def add(session: Session) -> int:
        # A fresh row each time: write_now may run this again after a rollback.
        row = outbox_row(receiver, channel, group_key, message, now)
        session.add(row)
        session.flush()  # assigns the id
        return int(row.id)

    # On the loop's own thread (write_now): through the async session every statement and
    # the commit waited for a turn of the busy loop while holding the write turn, and an
    # alert's recording queued behind it.
    return await write_now(session_factory, add, what="outbox row")


@dataclass(slots=True)
class DeliveryCounters:
    """Running totals for metrics."""

    sent: int = 0
    failed: int = 0  # rows given up on (refused, out of attempts, unknown channel)
    retries: int = 0  # retryable failures, each scheduling another attempt


@dataclass(frozen=True, slots=True)
class _Due:
    id: int
    channel: str
    receiver: str
    payload: dict[str, Any]
    attempts: int


class Deliverer:
    """Sends due outbox rows through their channels (``channels`` by name, as in the
    routing file) and records each outcome on the row.

    Run ``await deliverer.run(stop)`` as a task, or call ``deliver_due()`` for one pass.
    ``clock`` drives due times and backoff (tests pass a controllable one); waiting between
    passes uses the event loop's own time.
    """

    def __init__(
        self,
        session_factory: SessionFactory,
        channels: Mapping[str, Channel],
        *,
        clock: Clock = time.time,
        max_attempts: int | None = None,
        backoff_base_s: float = BACKOFF_BASE_S,
        backoff_cap_s: float = BACKOFF_CAP_S,
        batch_size: int = 100,
        poll_interval_s: float = 1.0,
        send_timeout_s: float = 60.0,
    ) -> None:
        if max_attempts is not None and max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.sessions = session_factory
        self.channels = dict(channels)
        self.clock = clock
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.max_attempts = (
            max_attempts
            if max_attempts is not None
            else attempts_within(GIVE_UP_AFTER_S, backoff_base_s, backoff_cap_s)
        )
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.send_timeout_s = send_timeout_s
        # A claimed row is left alone by other deliverers this long; past it, a crash
        # mid-send is retried.
        self.lease_s = send_timeout_s + 60.0
        self.counters = DeliveryCounters()
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """Something was enqueued: run a pass now rather than at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set: a pass on ``notify()`` or every poll interval."""
        log.info("event=delivery_starting channels=%s", ",".join(sorted(self.channels)))
        while not stop.is_set():
            self._wake.clear()  # before the pass: a notify() during it means another pass
            try:
                handled = await self.deliver_due()
            except Exception:  # the database may be away for a while; keep the loop alive
                log.exception("event=delivery_pass_failed")
                handled = 0
            if handled < self.batch_size:
                await self._idle(stop)
        log.info("event=delivery_stopped")

    async def _idle(self, stop: asyncio.Event) -> None:
        waits = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())}
        try:
            await asyncio.wait(waits, timeout=self.poll_interval_s, return_when="FIRST_COMPLETED")
        finally:
            for waiting in waits:
                waiting.cancel()

    async def deliver_due(self) -> int:
        """One pass: claim the due rows (oldest first, at most ``batch_size``), send each
        through its channel — channels concurrently, each channel's rows in order — and
        record the outcomes. Returns how many rows were claimed."""
        due = await self._claim(self.clock())
        by_channel: dict[str, list[_Due]] = {}
        for item in due:
            by_channel.setdefault(item.channel, []).append(item)
        async with asyncio.TaskGroup() as tasks:
            for name, items in by_channel.items():
                tasks.create_task(self._deliver_channel(name, items))
        return len(due)

    async def _claim(self, now: float) -> list[_Due]:
        return await write_now(
            self.sessions, lambda session: self._claim_in(session, now), what="outbox claim"
        )

    def _claim_in(self, session: Session, now: float) -> list[_Due]:
        lease_until = utc(now + self.lease_s)
        claimed = []
        rows = session.scalars(
            select(Notification)
            .where(Notification.status == "pending", Notification.next_attempt_at <= utc(now))
            .order_by(Notification.next_attempt_at, Notification.id)
            .limit(self.batch_size)
        )
        for row in rows.all():
            # Conditional: another deliverer may have claimed it since our select.
            result = session.execute(
                update(Notification)
                .where(
                    Notification.id == row.id,
                    Notification.status == "pending",
                    Notification.next_attempt_at <= utc(now),
                )
                .values(next_attempt_at=lease_until)
                .execution_options(synchronize_session=False)
            )
            if cast(Any, result).rowcount == 1:
                claimed.append(
                    _Due(row.id, row.channel, row.receiver, dict(row.payload), row.attempts)
                )
        return claimed

    async def _deliver_channel(self, name: str, items: list[_Due]) -> None:
        channel = self.channels.get(name)
        for index, item in enumerate(items):
            if channel is None:
                configured = ", ".join(sorted(self.channels)) or "none"
                reason = f"channel {name!r} is not configured (configured: {configured})"
                await self._fail(item, item.attempts, reason)
                continue
            try:
                async with asyncio.timeout(self.send_timeout_s):
                    await channel.send(cast(NotificationMessage, item.payload))
            except DeliveryError as e:
                retryable, reason = e.retryable, e.reason
            except TimeoutError:
                retryable, reason = True, f"no outcome within {self.send_timeout_s:g} s"
            except Exception as e:  # a channel bug must not stop the outbox; retry it
                log.exception("event=channel_crashed channel=%s id=%d", name, item.id)
                retryable, reason = True, f"{type(e).__name__}: {e}"
            else:
                await self._sent(item)
                continue
            attempts = item.attempts + 1
            if not retryable:
                await self._fail(item, attempts, reason)
            elif attempts >= self.max_attempts:
                await self._fail(item, attempts, f"gave up after {attempts} attempts: {reason}")
            else:
                await self._retry(item, attempts, reason)
                # The receiver is struggling: the channel's other rows wait for the next pass.
                await self._release(items[index + 1 :])
                return

    async def _update(self, row_id: int, **values: Any) -> None:
        await self._execute(
            update(Notification)
            .where(Notification.id == row_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    async def _execute(self, statement: Any) -> None:
        """One statement on the outbox, in a transaction of its own (:func:`write_now`)."""
        await write_now(self.sessions, lambda session: session.execute(statement), what="outbox")

    async def _sent(self, item: _Due) -> None:
        now = self.clock()
        await self._update(item.id, status="sent", sent_at=utc(now), attempts=item.attempts + 1)
        self.counters.sent += 1
        log.info(
            "event=notification_sent id=%d channel=%s receiver=%s attempts=%d",
            item.id, item.channel, item.receiver, item.attempts + 1,
        )  # fmt: skip

    async def _retry(self, item: _Due, attempts: int, reason: str) -> None:
        wait_s = backoff_s(attempts, self.backoff_base_s, self.backoff_cap_s)
        await self._update(
            item.id,
            attempts=attempts,
            last_error=reason,
            next_attempt_at=utc(self.clock() + wait_s),
        )
        self.counters.retries += 1
        log.warning(
            "event=notification_retry id=%d channel=%s attempts=%d retry_in_s=%g error=%r",
            item.id, item.channel, attempts, wait_s, reason,
        )  # fmt: skip

    async def _fail(self, item: _Due, attempts: int, reason: str) -> None:
        await self._update(item.id, status="failed", attempts=attempts, last_error=reason)
        self.counters.failed += 1
        log.error(
            "event=notification_failed id=%d channel=%s receiver=%s attempts=%d error=%r",
            item.id, item.channel, item.receiver, attempts, reason,
        )  # fmt: skip

    async def _release(self, items: list[_Due]) -> None:
        if not items:
            return
        await self._execute(
            update(Notification)
            .where(Notification.id.in_([i.id for i in items]), Notification.status == "pending")
            .values(next_attempt_at=utc(self.clock()))
            .execution_options(synchronize_session=False)
        )
