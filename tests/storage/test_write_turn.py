"""Writers of one process take turns on SQLite, in arrival order; PostgreSQL needs no turn."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import sqlite3

import pytest
from sqlalchemy import func, select

from cityiot.storage.deadletters import DeadLetterIn, add_dead_letters
from cityiot.storage.engine import SessionFactory, make_engine, migrate, sessionmaker
from cityiot.storage.tables.deadletters import DeadLetter
from cityiot.storage.wal import checkpoint
from cityiot.storage.writes import write_rows, write_turn


async def test_writers_take_turns_in_arrival_order_on_sqlite(
    sessions: SessionFactory, db_url: str
) -> None:
    order: list[str] = []

    async def writer(name: str, hold_s: float) -> None:
        async with write_turn(sessions):
            order.append(f"{name} in")
            async with sessions() as session, session.begin():
                session.add(
                    DeadLetter(
                        topic=name,
                        vendor=None,
                        device_id=None,
                        payload=b"{}",
                        payload_size=2,
                        reason="test",
                        received_at=dt.datetime.now(dt.UTC),
                    )
                )
                await session.flush()  # the write lock is held from here to the commit
                await asyncio.sleep(hold_s)
            order.append(f"{name} out")

    await asyncio.gather(writer("a", 0.2), writer("b", 0.0), writer("c", 0.0))
    if db_url.startswith("sqlite"):
        assert order == ["a in", "a out", "b in", "b out", "c in", "c out"]
    else:  # row locks only: all three write at once, the short ones finish first
        assert order[:3] == ["a in", "b in", "c in"]
        assert order[-1] == "a out"


async def test_a_turn_is_released_when_its_transaction_fails(sessions: SessionFactory) -> None:
    try:
        async with write_turn(sessions):
            raise RuntimeError("the writer failed")
    except RuntimeError:
        pass
    letter = DeadLetterIn("t", None, None, b"x", 1, "test")
    await asyncio.wait_for(add_dead_letters(sessions, [letter]), 10)
    async with sessions() as session:
        assert await session.get(DeadLetter, 1) is not None


async def test_an_urgent_writer_goes_before_the_waiting_others_and_a_cancelled_one_passes_on(
    sessions: SessionFactory, db_url: str
) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL takes no turns (the test above shows it)")
    order: list[str] = []
    release = asyncio.Event()

    async def writer(name: str, urgent: bool = False, hold: asyncio.Event | None = None) -> None:
        async with write_turn(sessions, urgent=urgent):
            order.append(name)
            if hold is not None:
                await hold.wait()

    first = asyncio.create_task(writer("bulk-1", hold=release))
    await asyncio.sleep(0.01)  # bulk-1 holds the turn
    queued = [asyncio.create_task(writer(f"bulk-{k}")) for k in (2, 3)]
    cancelled = asyncio.create_task(writer("alert-cancelled", urgent=True))
    await asyncio.sleep(0.01)
    alert = asyncio.create_task(writer("alert", urgent=True))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    release.set()
    await asyncio.gather(first, *queued, alert)
    assert cancelled.cancelled()
    assert order == ["bulk-1", "alert", "bulk-2", "bulk-3"]
    async with write_turn(sessions):  # free again
        order.append("after")
    assert order[-1] == "after"


# As the ingest's bulk writes are made for SQLite: one VALUES group, repeated per row.
RENAME = (
    "UPDATE dead_letters SET reason = v.column1 FROM (VALUES (?, ?)) AS v "
    "WHERE dead_letters.id = v.column2"
)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_bulk_write_on_sqlite_holds_the_loop_only_while_sqlite_works(
    sessions: SessionFactory, db_url: str
) -> None:
    """``write_rows`` runs on the loop's own thread: nothing else of the loop runs (and so
    no alert waits) between taking the turn and committing — and the loop gets a turn
    after each call, so a flush made of many calls does not hold it throughout."""
    await add_dead_letters(sessions, [DeadLetterIn("t", None, None, b"x", 1, "t")] * 1200)
    rows = [(f"letter {k}", k) for k in range(1, 1201)]  # three statements of ≤ 500 rows
    seen: list[int] = []

    def look() -> None:  # what another reader of the file sees at the loop's next turn
        other = sqlite3.connect(db_url.split("///", 1)[1])
        query = "SELECT count(*) FROM dead_letters WHERE reason LIKE 'letter %'"
        seen.append(other.execute(query).fetchone()[0])
        other.close()

    asyncio.get_running_loop().call_soon(look)
    await write_rows(sessions, RENAME, rows)
    assert seen == [1200]  # the loop came round after the commit, before write_rows returned
    async with sessions() as session:
        reasons = list(await session.scalars(select(DeadLetter.reason).order_by(DeadLetter.id)))
    assert reasons == [f"letter {k}" for k in range(1, 1201)]

    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    for start in range(0, 1200, 300):  # a flush in four slices, the turn free throughout
        await write_rows(sessions, RENAME, rows[start : start + 300])
    ticking.cancel()
    assert turns >= 4


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_bulk_write_waits_for_another_process_without_stopping_the_loop(
    sessions: SessionFactory, db_url: str
) -> None:
    await add_dead_letters(sessions, [DeadLetterIn("t", None, None, b"x", 1, "test")])
    other = sqlite3.connect(db_url.split("///", 1)[1], isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE dead_letters SET reason = 'theirs' WHERE id = 1")
    writing = asyncio.create_task(write_rows(sessions, RENAME, [("ours", 1)]))
    ticks = 0
    for _ in range(30):
        await asyncio.sleep(0.01)
        ticks += 1
    assert not writing.done() and ticks == 30
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(writing, 30)
    async with sessions() as session:
        letter = await session.get(DeadLetter, 1)
    assert letter is not None and letter.reason == "ours"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_checkpoint_lets_the_write_ahead_log_start_over(sessions: SessionFactory) -> None:
    """The ingest's writes go through connections that never checkpoint: without
    ``checkpoint`` the log only grows. After it, the next write starts the log over."""
    await add_dead_letters(sessions, [DeadLetterIn("t", None, None, b"x", 1, "t")] * 1200)
    rows = [(f"letter {k} " + "x" * 200, k) for k in range(1, 1201)]
    for _ in range(5):
        await write_rows(sessions, RENAME, rows)
    first = await checkpoint(sessions)
    assert first is not None
    frames, copied = first
    assert frames > 50 and copied == frames  # all of it is in the database file now
    await write_rows(sessions, RENAME, [("changed", k) for k in range(1, 11)])  # starts over
    second = await checkpoint(sessions)
    assert second is not None and second[0] < frames / 10
    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(DeadLetter).where(DeadLetter.reason.like("letter %"))
        )
    assert count == 1190


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_disposing_of_the_engine_closes_the_direct_connections_and_the_log(
    db_url: str,
) -> None:
    """A cleanly stopped process leaves no -wal file: the direct (loop-thread) connections
    close with the engine, and the last one to close folds the log into the database."""
    await migrate(db_url)
    engine = make_engine(db_url)
    sessions = sessionmaker(engine)
    await add_dead_letters(sessions, [DeadLetterIn("t", None, None, b"x", 1, "t")] * 10)
    await write_rows(sessions, RENAME, [("direct", k) for k in range(1, 11)])  # loop thread
    path = db_url.split("///", 1)[1]
    assert await asyncio.to_thread(os.path.exists, path + "-wal")
    await engine.dispose()
    assert not await asyncio.to_thread(os.path.exists, path + "-wal")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        reasons = conn.execute("SELECT DISTINCT reason FROM dead_letters").fetchall()
    assert reasons == [("direct",)]


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_no_checkpoint_on_postgresql(sessions: SessionFactory) -> None:
    assert await checkpoint(sessions) is None


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_checkpoint_while_writers_go_on_still_lets_the_log_start_over(
    sessions: SessionFactory, db_url: str
) -> None:
    """Writes come between the passes; the log still starts over (when the passes alongside
    never find it still, the last one is made in the write turn, which the writer waits for)."""
    await add_dead_letters(sessions, [DeadLetterIn("t", None, None, b"x", 1, "t")] * 1200)
    rows = [(f"letter {k} " + "x" * 200, k) for k in range(1, 1201)]
    for _ in range(5):
        await write_rows(sessions, RENAME, rows)
    wal = db_url.split("///", 1)[1] + "-wal"
    frames_before = (await asyncio.to_thread(os.path.getsize, wal) - 32) // (4096 + 24)
    stop = asyncio.Event()
    writes = 0

    async def writer() -> None:
        nonlocal writes
        while not stop.is_set():
            writes += 1
            await write_rows(sessions, RENAME, [(f"write {writes}", 1 + writes % 1200)])
            await asyncio.sleep(0.001)

    writing = asyncio.create_task(writer())
    await asyncio.sleep(0.05)
    result = await checkpoint(sessions)
    stop.set()
    await writing
    assert frames_before > 100 and writes > 10
    assert result is not None and result[0] == result[1]  # all of the log was copied
    # The next write starts the log over. (The writer may have stopped without one: when a
    # pass found the log still, it was asleep, and it saw the stop when it woke.)
    await write_rows(sessions, RENAME, [("after the checkpoint", 1)])
    after = await checkpoint(sessions)  # what was written since: the log started over
    assert after is not None and after[0] < frames_before / 10
