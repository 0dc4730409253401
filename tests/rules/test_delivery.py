"""The notification outbox against a real database and real HTTP receivers: retries with
backoff, refusals, give-ups, restarts and concurrent deliverers, on a controllable clock."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from cityiot.rules.delivery import (
    BACKOFF_CAP_S,
    Deliverer,
    attempts_within,
    backoff_s,
    enqueue,
)
from cityiot.rules.notifiers import build_channel
from cityiot.rules.notifiers.webhook import WebhookChannel
from cityiot.storage.engine import make_engine, migrate, sessionmaker
from cityiot.storage.tables.alerts import Notification
from tests.rules.conftest import HandClock
from tests.rules.test_notifiers import Receiver, free_port, sample_message
from tests.waiting import until


@contextlib.asynccontextmanager
async def database(url: str) -> AsyncIterator[async_sessionmaker[Any]]:
    await migrate(url)
    engine = make_engine(url)
    try:
        yield sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def sessions(sqlite_url: str) -> AsyncIterator[async_sessionmaker[Any]]:
    async with database(sqlite_url) as factory:
        yield factory


@pytest.fixture
def clock() -> HandClock:
    return HandClock()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(default=(200, b"{}")).start()
    try:
        yield server
    finally:
        server.stop()


async def row(sessions: async_sessionmaker[Any], row_id: int) -> Notification:
    async with sessions() as session:
        found = await session.get(Notification, row_id)
        assert found is not None
        return found


def at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


async def put(
    sessions: async_sessionmaker[Any], clock: HandClock, channel: str = "ops-hook"
) -> int:
    return await enqueue(
        sessions, "urban-management", channel, "{}:{rule=manhole_cover_open}", sample_message(),
        clock=clock,
    )  # fmt: skip


# --- the schedule ------------------------------------------------------------------------


def test_backoff_doubles_from_one_second_to_five_minutes() -> None:
    assert [backoff_s(n) for n in range(1, 12)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert backoff_s(10_000) == BACKOFF_CAP_S


def test_default_max_attempts_keeps_trying_for_a_day(sessions: async_sessionmaker[Any]) -> None:
    attempts = attempts_within(24 * 3600)
    waited = sum(backoff_s(n) for n in range(1, attempts))  # between the first and the last
    assert 24 * 3600 <= waited < 24 * 3600 + BACKOFF_CAP_S
    assert Deliverer(sessions, {}).max_attempts == attempts == 297


# --- outcomes ----------------------------------------------------------------------------


async def test_enqueued_message_is_delivered_once(
    sessions: async_sessionmaker[Any], clock: HandClock, receiver: Receiver
) -> None:
    channel = WebhookChannel("ops-hook", receiver.url, allow_http=True, secret="s")
    deliverer = Deliverer(sessions, {"ops-hook": channel}, clock=clock)
    row_id = await put(sessions, clock)
    pending = await row(sessions, row_id)
    assert (pending.status, pending.attempts, pending.receiver) == (
        "pending",
        0,
        "urban-management",
    )

    assert await deliverer.deliver_due() == 1
    sent = await row(sessions, row_id)
    assert (sent.status, sent.attempts, sent.sent_at) == ("sent", 1, at(clock.now))
    assert [r.json() for r in receiver.requests] == [sample_message()]
    assert await deliverer.deliver_due() == 0
    assert len(receiver.requests) == 1
    assert (deliverer.counters.sent, deliverer.counters.failed, deliverer.counters.retries) == (
        1,
        0,
        0,
    )


async def test_retried_with_backoff_until_the_receiver_recovers(
    db_url: str, clock: HandClock, receiver: Receiver
) -> None:
    receiver.answer(500, b"db down").answer(503, b"still down")
    async with database(db_url) as sessions:
        channels = {"ops-hook": WebhookChannel("ops-hook", receiver.url, allow_http=True)}
        deliverer = Deliverer(sessions, channels, clock=clock)
        row_id = await put(sessions, clock)
        start = clock.now

        assert await deliverer.deliver_due() == 1
        first = await row(sessions, row_id)
        assert (first.status, first.attempts) == ("pending", 1)
        assert "HTTP 500: db down" in first.last_error
        assert first.next_attempt_at == at(start + 1)

        clock.advance(0.9)  # not due yet
        assert await deliverer.deliver_due() == 0
        clock.advance(0.1)
        assert await deliverer.deliver_due() == 1
        second = await row(sessions, row_id)
        assert (second.status, second.attempts) == ("pending", 2)
        assert "HTTP 503: still down" in second.last_error
        assert second.next_attempt_at == at(start + 1 + 2)

        clock.advance(2)
        assert await deliverer.deliver_due() == 1
        done = await row(sessions, row_id)
        assert (done.status, done.attempts, done.sent_at) == ("sent", 3, at(start + 3))
        assert len(receiver.requests) == 3
        assert (deliverer.counters.sent, deliverer.counters.retries) == (1, 2)


async def test_receiver_down_then_started_gets_the_message(
    sessions: async_sessionmaker[Any], clock: HandClock
) -> None:
    port = free_port()  # nothing listens here yet
    late = Receiver(port=port, default=(200, b"{}"))
    channel = build_channel(
        {"type": "webhook", "name": "ops-hook", "url": late.url, "allow_http": True}
    )
    deliverer = Deliverer(sessions, {"ops-hook": channel}, clock=clock)
    row_id = await put(sessions, clock)

    for attempt, wait_s in [(1, 1), (2, 2), (3, 4)]:
        assert await deliverer.deliver_due() == 1
        down = await row(sessions, row_id)
        assert (down.status, down.attempts) == ("pending", attempt)
        assert "ConnectError" in down.last_error
        assert down.next_attempt_at == at(clock.now + wait_s)
        clock.advance(wait_s)

    late.start()
    try:
        assert await deliverer.deliver_due() == 1
        assert (await row(sessions, row_id)).status == "sent"
        assert [r.json() for r in late.requests] == [sample_message()]
    finally:
        late.stop()


async def test_refused_message_fails_at_once_with_the_error_visible(
    sessions: async_sessionmaker[Any], clock: HandClock, receiver: Receiver
) -> None:
    receiver.answer(400, b'{"error": "unknown team"}')
    deliverer = Deliverer(
        sessions,
        {"ops-hook": WebhookChannel("ops-hook", receiver.url, allow_http=True)},
        clock=clock,
    )
    row_id = await put(sessions, clock)
    assert await deliverer.deliver_due() == 1
    failed = await row(sessions, row_id)
    assert (failed.status, failed.attempts, failed.sent_at) == ("failed", 1, None)
    assert "HTTP 400" in failed.last_error and "unknown team" in failed.last_error
    clock.advance(3600)
    assert await deliverer.deliver_due() == 0
    assert len(receiver.requests) == 1
    assert (deliverer.counters.failed, deliverer.counters.retries) == (1, 0)


async def test_gives_up_after_max_attempts(
    sessions: async_sessionmaker[Any], clock: HandClock, receiver: Receiver
) -> None:
    receiver.default = (502, b"bad gateway")
    channels = {"ops-hook": WebhookChannel("ops-hook", receiver.url, allow_http=True)}
    deliverer = Deliverer(sessions, channels, clock=clock, max_attempts=3)
    row_id = await put(sessions, clock)
    for _ in range(3):
        assert await deliverer.deliver_due() == 1
        clock.advance(BACKOFF_CAP_S)
    given_up = await row(sessions, row_id)
    assert (given_up.status, given_up.attempts) == ("failed", 3)
    assert given_up.last_error.startswith("gave up after 3 attempts: POST ")
    assert "HTTP 502" in given_up.last_error
    assert await deliverer.deliver_due() == 0
    assert (deliverer.counters.retries, deliverer.counters.failed) == (2, 1)


async def test_row_of_a_channel_no_longer_configured_fails(
    sessions: async_sessionmaker[Any], clock: HandClock, receiver: Receiver
) -> None:
    row_id = await put(sessions, clock, channel="old-pager")
    deliverer = Deliverer(
        sessions,
        {"ops-hook": WebhookChannel("ops-hook", receiver.url, allow_http=True)},
        clock=clock,
    )
    assert await deliverer.deliver_due() == 1
    orphan = await row(sessions, row_id)
    assert orphan.status == "failed"
    assert orphan.last_error == "channel 'old-pager' is not configured (configured: ops-hook)"
    assert receiver.requests == []


async def test_a_failing_receiver_does_not_hold_up_the_others(
    sessions: async_sessionmaker[Any], clock: HandClock, receiver: Receiver
) -> None:
    down_url = f"http://127.0.0.1:{free_port()}/hook"
    channels = {
        "ops-hook": WebhookChannel("ops-hook", receiver.url, allow_http=True),
        "down-hook": WebhookChannel("down-hook", down_url, allow_http=True),
    }
    deliverer = Deliverer(sessions, channels, clock=clock)
    down_ids = [await put(sessions, clock, channel="down-hook") for _ in range(3)]
    up_ids = [await put(sessions, clock) for _ in range(2)]

    assert await deliverer.deliver_due() == 5
    assert [(await row(sessions, i)).status for i in up_ids] == ["sent", "sent"]
    # The first of the down channel was tried; the others wait, still due, untried.
    tried, *waiting = [await row(sessions, i) for i in down_ids]
    assert (tried.status, tried.attempts) == ("pending", 1)
    assert [(w.status, w.attempts, w.next_attempt_at) for w in waiting] == [
        ("pending", 0, at(clock.now))
    ] * 2


# --- restarts and concurrency ------------------------------------------------------------


async def test_pending_rows_are_delivered_after_a_restart(
    sqlite_url: str, clock: HandClock, receiver: Receiver
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"  # the receiver is down before the crash
    async with database(sqlite_url) as sessions:
        before = Deliverer(
            sessions, {"ops-hook": WebhookChannel("ops-hook", url, allow_http=True)}, clock=clock
        )
        tried = await put(sessions, clock)
        assert await before.deliver_due() == 1
        untried = await put(sessions, clock)  # enqueued, then the process dies

    clock.advance(1)
    async with database(sqlite_url) as sessions:  # a fresh process: new engine, new deliverer
        after = Deliverer(
            sessions,
            {"ops-hook": WebhookChannel("ops-hook", receiver.url, allow_http=True)},
            clock=clock,
        )
        assert await after.deliver_due() == 2
        assert [(await row(sessions, i)).status for i in (tried, untried)] == ["sent", "sent"]
        assert (await row(sessions, tried)).attempts == 2
    assert len(receiver.requests) == 2


async def test_a_crash_mid_send_is_retried_once_the_lease_ends(
    sqlite_url: str, clock: HandClock, receiver: Receiver
) -> None:
    receiver.answer(200, b"{}", delay_s=10.0)  # the crash comes first, however busy the machine
    async with database(sqlite_url) as sessions:
        channels = {"ops-hook": WebhookChannel("ops-hook", receiver.url, allow_http=True)}
        crashing = Deliverer(sessions, channels, clock=clock, send_timeout_s=30)
        row_id = await put(sessions, clock)
        task = asyncio.create_task(crashing.deliver_due())
        # Out; it dies before the answer.
        await until(lambda: receiver.requests, 5.0, "the request at the receiver", 0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

        fresh = Deliverer(sessions, channels, clock=clock, send_timeout_s=30)
        assert await fresh.deliver_due() == 0  # still leased to the one that died
        clock.advance(fresh.lease_s)
        assert await fresh.deliver_due() == 1
        assert (await row(sessions, row_id)).status == "sent"
    assert len(receiver.requests) == 2  # at least once


async def test_two_deliverers_send_each_row_once(
    sessions: async_sessionmaker[Any], clock: HandClock, receiver: Receiver
) -> None:
    channels = {"ops-hook": WebhookChannel("ops-hook", receiver.url, allow_http=True)}
    ids = [await put(sessions, clock) for _ in range(10)]
    one, two = (Deliverer(sessions, channels, clock=clock) for _ in range(2))
    handled = await asyncio.gather(one.deliver_due(), two.deliver_due())
    assert sum(handled) == 10
    assert len(receiver.requests) == 10
    assert {(await row(sessions, i)).status for i in ids} == {"sent"}


async def test_run_wakes_on_notify_and_stops_on_request(
    sessions: async_sessionmaker[Any], receiver: Receiver
) -> None:
    channels = {"ops-hook": WebhookChannel("ops-hook", receiver.url, allow_http=True)}
    deliverer = Deliverer(sessions, channels, poll_interval_s=60)  # the real clock
    stop = asyncio.Event()
    task = asyncio.create_task(deliverer.run(stop))
    await asyncio.sleep(0.1)  # the first pass found nothing; now it waits up to 60 s
    await enqueue(sessions, "urban-management", "ops-hook", "g", sample_message())
    deliverer.notify()
    await until(lambda: deliverer.counters.sent == 1, 5.0, "the notified row sent", 0.01)
    assert len(receiver.requests) == 1
    stop.set()
    async with asyncio.timeout(10):  # a safety net, well under the 60 s poll it would sleep
        await task


async def test_run_polls_for_rows_due_later(
    sessions: async_sessionmaker[Any], receiver: Receiver
) -> None:
    receiver.answer(500, b"once")
    channels = {"ops-hook": WebhookChannel("ops-hook", receiver.url, allow_http=True)}
    deliverer = Deliverer(sessions, channels, poll_interval_s=0.05, backoff_base_s=0.2)
    stop = asyncio.Event()
    row_id = await enqueue(sessions, "urban-management", "ops-hook", "g", sample_message())
    task = asyncio.create_task(deliverer.run(stop))  # no notify: the poll finds it, and the retry
    try:
        await until(lambda: deliverer.counters.sent == 1, 5.0, "the polled row sent", 0.01)
    finally:
        stop.set()
        await task
    assert (await row(sessions, row_id)).attempts == 2
    assert deliverer.counters.retries == 1


async def test_enqueue_on_sqlite_commits_before_the_loop_comes_round(
    sessions: async_sessionmaker[Any], sqlite_url: str
) -> None:
    """An outbox row is written on the loop's own thread: the write turn is not held across
    turns of a busy loop, where an alert's recording would wait behind it."""
    seen: list[int] = []

    def look() -> None:  # what another reader of the file sees at the loop's next turn
        other = sqlite3.connect(sqlite_url.split("///", 1)[1])
        seen.append(other.execute("SELECT count(*) FROM notifications").fetchone()[0])
        other.close()

    asyncio.get_running_loop().call_soon(look)
    row_id = await enqueue(sessions, "urban-management", "ops-hook", "g", sample_message())
    assert seen == []  # the loop did not come round while the row was written
    await asyncio.sleep(0)
    assert seen == [1]
    assert (await row(sessions, row_id)).status == "pending"
