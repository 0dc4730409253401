"""The dead-letter table stays within its caps while the running ingest adds to it (issue 22,
finding 6): the oldest rows are pruned, the newest kept, the pruned counted, and the SQLite
file stops growing."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select, text

from cityiot.api.metrics import PlatformMetrics, counters_source
from cityiot.ingest.pipeline import PRUNE_SLICES
from cityiot.storage.tables.deadletters import DeadLetter
from tests.ingest.conftest import Platform
from tests.ingest.test_dead_letter_flood import publish_all

MAX_ROWS = 100
MAX_BYTES = 64 * 1024
ROW_SLICE = MAX_ROWS // PRUNE_SLICES
BYTE_SLICE = MAX_BYTES // PRUNE_SLICES


@pytest.fixture
def platform_settings() -> dict[str, Any]:
    return {
        "dead_letter_max_rows": MAX_ROWS,
        "dead_letter_max_bytes": MAX_BYTES,
        "dead_letter_rate_burst": 100_000,  # the caps alone are under test
    }


def broken(number: int, size: int) -> bytes:
    """Invalid JSON of ``size`` bytes that says which message it was."""
    return f"{{{number:06d}".encode().ljust(size, b"x")


async def table(platform: Platform) -> tuple[int, int, list[int]]:
    """Rows, stored payload bytes, and the message numbers kept, oldest first."""
    async with platform.sessions() as session:
        rows = (await session.scalars(select(DeadLetter.payload).order_by(DeadLetter.id))).all()
    return len(rows), sum(map(len, rows)), [int(p[1:7]) for p in rows]


async def settled(platform: Platform, published: int) -> tuple[int, int, list[int]]:
    """The table once the ingest has stored everything and held it against the caps; every
    published dead letter is in it or was pruned."""
    ingest = platform.ingest
    await platform.settle(published, timeout_s=60)
    await platform.wait_for(lambda: ingest.idle and ingest.pruned)
    rows, size, kept = await table(platform)
    assert rows + ingest.counters.dead_letters_pruned == published
    return rows, size, kept


async def test_the_table_keeps_the_newest_rows_up_to_max_rows(platform: Platform) -> None:
    published = 4 * MAX_ROWS
    publish_all(platform, [("city/acme/mh-1/telemetry", broken(n, 20)) for n in range(published)])
    rows, _, kept = await settled(platform, published)
    assert MAX_ROWS <= rows <= MAX_ROWS + ROW_SLICE
    assert kept == list(range(published - rows, published))  # the newest, none missing
    pruned = platform.ingest.counters.dead_letters_pruned
    assert pruned == published - rows
    scrape = PlatformMetrics(lambda: {"ingest": counters_source(platform.ingest.counters)})
    exposition = scrape.exposition("")[0].decode().splitlines()
    assert f"cityiot_ingest_dead_letters_pruned_total {pruned}.0" in exposition


async def test_the_table_keeps_the_newest_rows_up_to_max_bytes(platform: Platform) -> None:
    size = 4096  # the stored bound: 16 of them fill the byte cap
    published = 60
    publish_all(platform, [("city/acme/mh-1/telemetry", broken(n, size)) for n in range(published)])
    rows, stored, kept = await settled(platform, published)
    assert MAX_BYTES - size < stored <= MAX_BYTES + BYTE_SLICE
    assert kept == list(range(published - rows, published))


async def test_the_sqlite_file_stops_growing(platform: Platform) -> None:
    """Pruned pages are reused: round after round of 4 KB dead letters, the database holds
    about one round's worth of pages, not one more per round."""
    size, per_round = 4096, 200

    async def pages() -> int:
        async with platform.sessions() as session:
            return int((await session.execute(text("PRAGMA page_count"))).scalar_one())

    async def round_of(number: int) -> int:
        first = number * per_round
        batch = [("city/acme/mh-1/telemetry", broken(first + n, size)) for n in range(per_round)]
        publish_all(platform, batch)
        await settled(platform, first + per_round)
        return await pages()

    after_first = await round_of(0)
    for number in range(1, 4):
        last = await round_of(number)
    round_pages = per_round * size // 4096
    assert last - after_first < round_pages * 1.5, (after_first, last, round_pages)
    async with platform.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(DeadLetter)) <= 16
