"""The garbage-collection policy of long-running stages (cityiot/platform/gcpolicy.py)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator

import pytest

from cityiot.platform.gcpolicy import (
    NEVER,
    YOUNG_THRESHOLD,
    collect_on_schedule,
    settle,
    young_only,
)
from tests.waiting import until

WAIT_S = 10.0  # a safety net: the tests wait for each collection, not for a time


@pytest.fixture
def collector_state() -> Iterator[None]:
    """Put the collector back as it was (thresholds, nothing frozen) after a test."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycles(count: int) -> None:
    """``count`` pairs of objects referring to each other, dropped at once."""
    for _ in range(count):
        a, b = _Node(), _Node()
        a.other, b.other = b, a


def test_young_only_leaves_the_older_generations_to_the_schedule(collector_state: None) -> None:
    young_only(600)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, NEVER, NEVER)
    young_only(0)  # Python's own schedule, with the larger young generation
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 20, 20)


def test_cycles_that_outlive_a_young_collection_wait_for_the_full_one(
    collector_state: None,
) -> None:
    young_only(600)
    gc.collect()
    survivor = _Node()
    survivor.other = _Node()
    survivor.other.other = survivor
    gc.collect(0)  # the pair is older than the young generation now
    del survivor
    for _ in range(40):  # many young collections: the older generations are not collected
        gc.collect(0)
    assert sum(isinstance(o, _Node) for o in gc.get_objects()) == 2
    assert gc.collect() >= 2
    assert not any(isinstance(o, _Node) for o in gc.get_objects())


async def test_the_schedule_collects_everything_and_freezes_once(
    collector_state: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cityiot.gc")
    stop = asyncio.Event()
    young_only(0.2)
    gc.collect()

    def full_collections() -> list[str]:
        return [r.getMessage() for r in caplog.records if "event=gc_full" in r.getMessage()]

    task = asyncio.create_task(collect_on_schedule(stop, 0.2, first_s=0.05))
    _cycles(1000)
    # The first full collection: it froze what was alive.
    await until(lambda: len(full_collections()) >= 1, WAIT_S, "a first full collection", 0.01)
    frozen = gc.get_freeze_count()
    assert frozen > 0
    _cycles(1000)
    # The next collects, freezes nothing more.
    await until(lambda: len(full_collections()) >= 2, WAIT_S, "a second full collection", 0.01)
    stop.set()
    await asyncio.wait_for(task, WAIT_S)
    lines = full_collections()
    freed = [int(line.split("freed=")[1].split()[0]) for line in lines]
    assert freed[0] >= 2000 and freed[1] >= 2000  # each 1,000 pairs of garbage, at least
    assert gc.get_freeze_count() <= frozen  # frozen objects may die, none are added


async def test_no_schedule_when_python_collects_by_itself() -> None:
    stop = asyncio.Event()
    schedule = collect_on_schedule(stop, 0)
    with pytest.raises(StopIteration):  # returns at once: done without waiting once
        schedule.send(None)


def test_settle_collects_and_freezes_what_a_stage_keeps(
    collector_state: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cityiot.gc")
    young_only(600)
    gc.collect()
    kept = [_Node() for _ in range(1000)]  # what a stage loaded and keeps
    _cycles(500)  # and the garbage its loading left
    settle(600)
    assert gc.get_freeze_count() >= len(kept)
    line = next(r.getMessage() for r in caplog.records if "event=gc_settled" in r.getMessage())
    assert int(line.split("freed=")[1].split()[0]) >= 1000  # the 500 pairs, at least
    assert not any(isinstance(o, _Node) and o.other is not None for o in gc.get_objects())


def test_settle_does_nothing_when_python_collects_by_itself(collector_state: None) -> None:
    young_only(0)
    gc.collect()
    _cycles(10)
    settle(0)
    assert gc.get_freeze_count() == 0
    assert gc.collect() >= 20  # the pairs were left to Python's collector
