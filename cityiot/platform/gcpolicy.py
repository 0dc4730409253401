"""How a long-running stage uses Python's garbage collector: the young generation as
objects are made, everything else on a schedule.

Reference counting frees almost everything a stage makes (a reading's objects die as its
batch is stored); the collector is only for cycles. Left to Python, it also collects the
older generations by itself, and those hold what lives long: the registry, every device's
rule state and latest values, a million objects with 100,000 devices. Such a collection
walked them all and held the event loop while readings and alerts waited: in the bench's
latency runs on the 2-core machine, 90–440 ms for the middle generation and 240–490 ms for
the oldest (timed by a ``gc.callbacks`` hook), several times a minute.

So, once a stage has loaded what it keeps and before it takes readings, everything is
collected and frozen (:func:`settle`); and while it runs (:func:`collect_on_schedule`):

- the young generation is collected after ``YOUNG_THRESHOLD`` new objects (a few ms: it
  holds only what was made since the last one);
- the older generations are never collected by Python itself. What survives a young
  collection and later becomes cyclic garbage waits for
- a full collection every ``CITYIOT_GC_FULL_EVERY_S`` (default 600 s), logged with how
  long it took and what it freed (``event=gc_full``). The first one, a minute after the
  start, also freezes what is alive then (``gc.freeze``: the registry and the modules, never
  walked again), so the later ones walk only what was made since.

``CITYIOT_GC_FULL_EVERY_S=0`` leaves Python's own collector in charge of every generation
(with the young one at ``YOUNG_THRESHOLD``, not Python's 700).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time

log = logging.getLogger("cityiot.gc")

# The young generation is collected after this many new objects, not Python's 700: a stage
# allocates a few objects per message and keeps little, so a larger young generation means
# fewer collections without a longer pause (measurements in the commit history).
YOUNG_THRESHOLD = 10_000
# Older generations: collected by Python only past this many younger collections (never).
NEVER = 1 << 30
FIRST_FULL_S = 60.0  # the first full collection (and the freeze) after the start


def young_only(full_every_s: float) -> None:
    """Set the thresholds: the young generation only when ``full_every_s`` > 0, else
    Python's generational collector with a larger young generation."""
    if full_every_s > 0:
        gc.set_threshold(YOUNG_THRESHOLD, NEVER, NEVER)
    else:
        gc.set_threshold(YOUNG_THRESHOLD, 20, 20)


def full_collection(*, freeze: bool = False) -> tuple[int, float]:
    """Collect every generation (then freeze what is alive, when asked); returns the
    objects freed and the ms it took."""
    started = time.perf_counter()
    freed = gc.collect()
    if freeze:
        gc.freeze()
    return freed, (time.perf_counter() - started) * 1000


def settle(full_every_s: float) -> None:
    """Collect every generation and freeze what is alive, once a stage has loaded what it
    keeps (the registry, the rules' state) and before it takes readings; nothing when
    ``full_every_s`` is 0 (Python's own collector is in charge).

    That first walk of everything held the loop 200–310 ms when the schedule made it, a
    minute into taking readings (timed in the bench's latency runs); here nothing waits for
    it but the broker, which holds the messages meanwhile. The schedule's first collection
    then walks only what came since.
    """
    if full_every_s <= 0:
        return
    freed, ms = full_collection(freeze=True)
    log.info("event=gc_settled freed=%d ms=%.0f frozen=%d", freed, ms, gc.get_freeze_count())


async def collect_on_schedule(
    stop: asyncio.Event, full_every_s: float, *, first_s: float = FIRST_FULL_S
) -> None:
    """Until ``stop``: a full collection ``first_s`` after the start (freezing what lives
    then), and every ``full_every_s`` after it. Returns at once when ``full_every_s`` is 0."""
    if full_every_s <= 0:
        return
    wait_s, freeze = min(first_s, full_every_s), True
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait_s)
        if stop.is_set():
            return
        freed, ms = full_collection(freeze=freeze)
        log.info("event=gc_full freed=%d ms=%.0f frozen=%d", freed, ms, gc.get_freeze_count())
        wait_s, freeze = full_every_s, False
