"""The writers' queue: sealed batches waiting for a writer, bounded by what they hold.

The bound is in readings and messages, not in batches: a batch sealed on time at a low
rate holds a few hundred, one sealed full holds ``batch_size``. Counting batches let a
short stall of InfluxDB fill the queue with small batches and stop the intake — and the
readings the rules wait for — long before memory or the broker's in-flight window was
anywhere near its limit.

A writer takes what is queued together, up to one full batch, as one request: after a
stall, the small batches that piled up go to InfluxDB as one write, not one each.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sized
from typing import Generic, Protocol, TypeVar


class Sealed(Protocol):
    """What the queue reads of a batch (``cityiot.ingest.pipeline.Batch``): its points and its
    messages, counted."""

    @property
    def lines(self) -> Sized: ...

    @property
    def spans(self) -> Sized: ...


Batch = TypeVar("Batch", bound=Sealed)


class WriteQueue(Generic[Batch]):
    """FIFO of sealed batches; ``put`` waits while the queue holds ``max_lines`` readings
    or ``max_messages`` messages (a batch always fits into an empty queue)."""

    def __init__(
        self, max_lines: int, max_messages: int, merge_lines: int, merge_messages: int
    ) -> None:
        self.max_lines, self.max_messages = max_lines, max_messages
        self.merge_lines, self.merge_messages = merge_lines, merge_messages
        self._batches: deque[Batch] = deque()
        self.lines = 0  # readings queued
        self.messages = 0  # messages queued
        self.unfinished = 0  # batches put and not yet marked done
        self._changed = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._batches)

    @property
    def has_room(self) -> bool:
        return not self._batches or (
            self.lines < self.max_lines and self.messages < self.max_messages
        )

    async def put(self, batch: Batch) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.has_room)
            self._batches.append(batch)
            self.lines += len(batch.lines)
            self.messages += len(batch.spans)
            self.unfinished += 1
            self._changed.notify_all()

    async def take(self) -> list[Batch]:
        """The oldest batch and those queued right behind it, up to one merged write's size."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._batches))
            taken = [self._batches.popleft()]
            lines, messages = len(taken[0].lines), len(taken[0].spans)
            while self._batches:
                after = self._batches[0]
                if (
                    lines + len(after.lines) > self.merge_lines
                    or messages + len(after.spans) > self.merge_messages
                ):
                    break
                taken.append(self._batches.popleft())
                lines += len(after.lines)
                messages += len(after.spans)
            self.lines -= lines
            self.messages -= messages
            self._changed.notify_all()
            return taken

    async def done(self, count: int) -> None:
        """``count`` batches taken are stored."""
        async with self._changed:
            self.unfinished -= count
            self._changed.notify_all()

    async def join(self) -> None:
        """Wait until every batch put is stored."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.unfinished == 0)
