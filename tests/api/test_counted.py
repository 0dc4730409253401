"""``Counted``: one count per key at a time, the last count served while it is recounted."""

from __future__ import annotations

import asyncio

from cityiot.api.counted import Counted


class Counter:
    """A count that waits for its release and tells how often it ran."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def __call__(self) -> int:
        self.calls += 1
        await self.release.wait()
        return self.calls


async def test_the_first_count_is_shared_by_every_waiting_request() -> None:
    counted: Counted[int] = Counted(max_age_s=5)
    count = Counter()
    waiting = [asyncio.create_task(counted.get("k", 100.0, count)) for _ in range(10)]
    await asyncio.sleep(0)
    count.release.set()
    assert await asyncio.gather(*waiting) == [1] * 10
    assert count.calls == 1


async def test_a_fresh_count_is_served_and_a_stale_one_recounted_in_the_background() -> None:
    counted: Counted[int] = Counted(max_age_s=5)
    count = Counter()
    count.release.set()
    assert await counted.get("k", 100.0, count) == 1
    assert await counted.get("k", 104.0, count) == 1  # young enough
    assert count.calls == 1
    count.release.clear()
    # Stale: served at once while one recount runs, however many ask meanwhile.
    assert [await counted.get("k", 106.0, count) for _ in range(5)] == [1] * 5
    await asyncio.sleep(0)
    assert count.calls == 2
    count.release.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert await counted.get("k", 106.5, count) == 2
    assert count.calls == 2


async def test_keys_are_counted_apart_and_a_clock_moved_back_recounts() -> None:
    counted: Counted[int] = Counted(max_age_s=5)
    count = Counter()
    count.release.set()
    assert await counted.get("a", 100.0, count) == 1
    assert await counted.get("b", 100.0, count) == 2
    # a clock set back (tests set the hour of day): never a count from its future
    assert await counted.get("a", 50.0, count) == 3


async def test_a_slow_recount_is_waited_for_by_no_request() -> None:
    counted: Counted[int] = Counted(max_age_s=5)
    count = Counter()
    count.release.set()
    assert await counted.get("k", 100.0, count) == 1
    count.release.clear()
    assert await counted.get("k", 106.0, count) == 1  # recount started, still running…
    assert await counted.get("k", 130.0, count) == 1  # …long past twice the age
    count.release.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert await counted.get("k", 107.0, count) == 2  # the recount, dated when it began
    assert count.calls == 2


async def test_a_count_nobody_asked_for_meanwhile_is_counted_before_answering() -> None:
    counted: Counted[int] = Counted(max_age_s=5)
    count = Counter()
    count.release.set()
    assert await counted.get("k", 100.0, count) == 1
    assert await counted.get("k", 110.5, count) == 2  # over twice the age: not served


async def test_a_failed_first_count_reaches_every_waiter_and_is_not_kept() -> None:
    counted: Counted[int] = Counted(max_age_s=5)
    release = asyncio.Event()

    async def broken() -> int:
        await release.wait()
        raise RuntimeError("database down")

    waiting = [asyncio.create_task(counted.get("k", 1.0, broken)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    count = Counter()
    count.release.set()
    assert await counted.get("k", 1.0, count) == 1


async def test_a_failed_recount_keeps_the_last_count() -> None:
    counted: Counted[int] = Counted(max_age_s=5)
    count = Counter()
    count.release.set()
    assert await counted.get("k", 0.0, count) == 1

    async def broken() -> int:
        raise RuntimeError("database down")

    assert await counted.get("k", 6.0, broken) == 1
    for _ in range(5):
        await asyncio.sleep(0)
    assert await counted.get("k", 6.0, count) == 1  # still the last; a recount starts again
    for _ in range(5):
        await asyncio.sleep(0)
    assert await counted.get("k", 6.0, count) == 2


async def test_the_oldest_keys_are_dropped_beyond_max_keys() -> None:
    keys = 3
    counted: Counted[int] = Counted(max_age_s=5, max_keys=keys)
    count = Counter()
    count.release.set()
    for key in range(keys + 1):
        await counted.get(key, 0.0, count)
    assert await counted.get(0, 0.0, count) == keys + 2  # key 0 was dropped: counted again


async def test_a_count_not_kept_is_counted_at_every_request() -> None:
    counted: Counted[int] = Counted(max_age_s=5)
    count = Counter()
    count.release.set()
    assert await counted.get("k", 100.0, count) == 1
    assert await counted.get("k", 101.0, count) == 1  # kept: young enough
    answers = [await counted.get("k", 102.0 + i, count, keep=False) for i in range(3)]
    assert answers == [2, 3, 4]  # each a new count
    assert count.calls == 4
