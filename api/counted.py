"""Figures that cost a scan to count, counted at most every few seconds and served meanwhile.

The overview's lighting tally (a join of every light with its latest values) and its SLA
KPIs (every work order of 30 days) take hundreds of milliseconds at a million devices; the
console asks for them every few seconds from every screen. :class:`Counted` keeps the last
count of each key (a key's grant) and its time: a count younger than ``max_age_s`` is served
as it is; an older one is served while one task counts again in the background, so a key
asked for steadily never makes a request wait for a recount, and its count is at most
``max_age_s`` plus one counting old. A key nobody asked for in ``2 * max_age_s`` (or one
counted at a later clock time) is counted again before answering, by one count every
waiting request shares.

A caller passes ``keep=False`` where counting is cheap (a small registry): every request then
counts afresh (the concurrent ones sharing one count), so a small city's figures are always
exact, as the API's contract says ("now"); only a city whose counts cost a scan gets them a
few seconds old.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger("cityiot.api")

T = TypeVar("T")


@dataclass(slots=True)
class _Entry(Generic[T]):
    value: T
    at: float  # the clock's time when it was counted
    recount: asyncio.Task[None] | None = None


class Counted(Generic[T]):
    """The latest count per key, refreshed in the background once older than ``max_age_s``."""

    def __init__(self, max_age_s: float, max_keys: int = 1_000) -> None:
        self.max_age_s = max_age_s
        self.max_keys = max_keys
        self._entries: dict[Hashable, _Entry[T]] = {}
        self._first: dict[Hashable, asyncio.Future[T]] = {}

    async def get(
        self, key: Hashable, now: float, count: Callable[[], Awaitable[T]], keep: bool = True
    ) -> T:
        """The count of ``key`` as of ``now`` (the clock's time), within the bounds above;
        with ``keep`` false, counted now."""
        entry = self._entries.get(key)
        if entry is None or now < entry.at or not keep:
            return await self._fresh(key, now, count)
        if entry.recount is not None or now - entry.at <= self.max_age_s:
            return entry.value  # fresh enough, or a recount is under way
        if now - entry.at > 2 * self.max_age_s:
            return await self._fresh(key, now, count)
        entry.recount = asyncio.create_task(self._recount(key, entry, now, count))
        return entry.value

    async def _fresh(self, key: Hashable, now: float, count: Callable[[], Awaitable[T]]) -> T:
        waiting = self._first.get(key)
        if waiting is not None:
            return await asyncio.shield(waiting)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._first[key] = future
        try:
            value = await count()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, an unwaited one is not reported
            raise
        finally:
            self._first.pop(key, None)
        future.set_result(value)
        self._store(key, _Entry(value, now))
        return value

    async def _recount(
        self, key: Hashable, entry: _Entry[T], now: float, count: Callable[[], Awaitable[T]]
    ) -> None:
        try:
            value = await count()
        except Exception:
            log.exception("recounting %s failed; the last count is served meanwhile", key)
            entry.recount = None
            return
        self._store(key, _Entry(value, now))

    def _store(self, key: Hashable, entry: _Entry[T]) -> None:
        self._entries.pop(key, None)
        self._entries[key] = entry
        while len(self._entries) > self.max_keys:
            del self._entries[next(iter(self._entries))]

    def forget(self) -> None:
        """Drop every count: the next request of each key counts afresh."""
        self._entries.clear()
