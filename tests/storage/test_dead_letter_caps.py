"""The dead-letter table's caps: the oldest rows go once the table holds more rows or payload
bytes than allowed, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import func, select

from cityiot.storage.deadletters import (
    PRUNE_CHUNK,
    DeadLetterCaps,
    DeadLetterIn,
    add_dead_letters,
    prune_dead_letters,
)
from cityiot.storage.engine import SessionFactory
from cityiot.storage.tables.deadletters import DeadLetter

NO_BYTE_CAP = 2**40


def letter(number: int, size: int = 10) -> DeadLetterIn:
    payload = str(number).encode().ljust(size, b".")
    return DeadLetterIn(
        f"city/acme/mh-{number}/telemetry", "acme", f"mh-{number}", payload, size, "x"
    )


async def kept(sessions: SessionFactory) -> list[str]:
    """The device ids of the stored dead letters, oldest first."""
    async with sessions() as session:
        rows = await session.scalars(select(DeadLetter.device_id).order_by(DeadLetter.id))
        return [str(d) for d in rows]


async def test_the_newest_rows_are_kept_up_to_max_rows(sessions: SessionFactory) -> None:
    await add_dead_letters(sessions, [letter(n) for n in range(300)])
    assert await prune_dead_letters(sessions, DeadLetterCaps(100, NO_BYTE_CAP)) == 200
    assert await kept(sessions) == [f"mh-{n}" for n in range(200, 300)]
    # Within the caps: nothing more goes.
    assert await prune_dead_letters(sessions, DeadLetterCaps(100, NO_BYTE_CAP)) == 0
    await add_dead_letters(sessions, [letter(n) for n in range(300, 310)])
    assert await prune_dead_letters(sessions, DeadLetterCaps(100, NO_BYTE_CAP)) == 10
    assert await kept(sessions) == [f"mh-{n}" for n in range(210, 310)]


async def test_the_newest_rows_are_kept_up_to_max_bytes(sessions: SessionFactory) -> None:
    # 50 letters of 1,000 stored bytes, then 5 of 4,000: 20,000 bytes allowed.
    await add_dead_letters(sessions, [letter(n, 1000) for n in range(50)])
    await add_dead_letters(sessions, [letter(n, 4000) for n in range(50, 55)])
    assert await prune_dead_letters(sessions, DeadLetterCaps(10_000, 20_000)) == 50
    assert await kept(sessions) == [f"mh-{n}" for n in range(50, 55)]
    async with sessions() as session:
        stored = await session.scalar(select(func.sum(func.length(DeadLetter.payload))))
    assert stored == 20_000
    # One byte less: the oldest of the five goes too.
    assert await prune_dead_letters(sessions, DeadLetterCaps(10_000, 19_999)) == 1
    assert await kept(sessions) == [f"mh-{n}" for n in range(51, 55)]


async def test_a_table_far_over_its_caps_is_pruned_in_chunks(sessions: SessionFactory) -> None:
    total = 2 * PRUNE_CHUNK + 150
    await add_dead_letters(sessions, [letter(n) for n in range(total)])
    assert await prune_dead_letters(sessions, DeadLetterCaps(100, NO_BYTE_CAP)) == total - 100
    assert await kept(sessions) == [f"mh-{n}" for n in range(total - 100, total)]


async def test_an_empty_table_prunes_nothing(sessions: SessionFactory) -> None:
    assert await prune_dead_letters(sessions, DeadLetterCaps(100, 65536)) == 0
