"""Batches: what the intake fills, seals and hands on — readings to the rules, the batch to
the writers through a bounded queue (:class:`~cityiot.ingest.writequeue.WriteQueue`).

When storage lags, the queue fills, :meth:`SealedBatches.seal` waits, the intake stops
taking deliveries, and the broker holds the rest: memory stays bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cityiot.domain.settings import Settings
from cityiot.ingest.broker import Delivery
from cityiot.ingest.validate import Reading
from cityiot.ingest.writequeue import WriteQueue
from cityiot.storage.deadletters import DeadLetterIn

# A batch is sealed at once when nothing is being written, but not before it is this old
# (s). Sealing whenever a writer was idle sent InfluxDB many small requests, each an HTTP
# round trip here and a WAL fsync there; what arrives while a write is out, or within these
# 20 ms, goes together, for a third less CPU in the ingest and InfluxDB. A reading stored in
# a quiet hour pays these 20 ms (the measurements: git log -S SEAL_IDLE_S).
SEAL_IDLE_S = 0.020
# Sealed batches may wait for a writer up to this many full batches' worth of readings and
# of messages. Four: the broker's in-flight window (40,000 in the local mosquitto.conf
# template) then holds the batches being written, those queued and the open one
# (3 + 4 + 1 of 5,000).
QUEUED_BATCHES = 4
# Readings reach the rules as they arrive, not when their batch is stored: in slices of this
# many, or what came within RULES_EVERY_S. A batch waits while InfluxDB is slow (a cache
# snapshot takes seconds on a small machine); an alert does not wait with it.
# The rules evaluate a slice in the intake's own turn (RulesEngine.submit), so a short
# interval costs a call, not a turn of the loop, and halves an alert's median latency.
RULES_SLICE = 1000
RULES_EVERY_S = 0.002

# Receives each sealed batch's readings; may be a coroutine function (awaited: backpressure).
ReadingsSink = Callable[[list[Reading]], Awaitable[None] | None]


@dataclass(slots=True)
class IngestCounters:
    """Running totals; the launcher turns them into per-second rates."""

    messages: int = 0  # deliveries taken from the broker
    readings: int = 0  # readings accepted (stored or about to be)
    stored: int = 0  # points InfluxDB confirmed
    rejected: int = 0  # rejected messages: dead letters stored or dropped over the rate
    duplicates: int = 0  # readings dropped by seq
    write_errors: int = 0
    spooled: int = 0  # points put in the spool while InfluxDB was down or behind
    replayed: int = 0  # spooled points InfluxDB has since taken
    spool_refusals: int = 0  # appends the spool refused (full, disk full)
    http_messages: int = 0  # messages taken from the HTTP link
    batches: int = 0
    # Batches sealed by the intake, by why: size (a full batch, or half a link's in-flight
    # window), window (a link's in-flight window is full), idle (nothing being written), age
    # (CITYIOT_FLUSH_INTERVAL_MS).
    sealed_by_reason: Counter[str] = field(default_factory=Counter)
    last_write_ms: float = 0.0
    stored_by_kind: Counter[str] = field(default_factory=Counter)
    # Dead letters not stored: over their vendor's rate (dead_letter_rate_per_s).
    dead_letters_dropped_by_vendor: Counter[str] = field(default_factory=Counter)
    dead_letters_pruned: int = 0  # the oldest, deleted to keep the table within its caps


@dataclass(slots=True)
class Batch:
    """Points, dead letters and the deliveries they came from, stored and acked together."""

    lines: list[bytes] = field(default_factory=list)  # line protocol, one point each
    status_lines: list[bytes] = field(default_factory=list)  # device_status points
    # (delivery, index of its first line, one past its last line)
    spans: list[tuple[Delivery, int, int]] = field(default_factory=list)
    dead_letters: list[DeadLetterIn] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)
    started: float = 0.0
    number: int = 0  # in sealing order: acks and readings are handed on in this order
    ruled: int = 0  # readings handed to the rules already
    count: int = 1  # sealed batches this one stands for (several, merged for one write)
    # Links that answer only once their messages are durable (HTTP): resolved when stored.
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    @classmethod
    def merged(cls, batches: list[Batch]) -> Batch:
        """One batch of consecutive sealed ``batches``, to be written and acked as one."""
        if len(batches) == 1:
            return batches[0]
        merged = cls(
            started=min(b.started for b in batches),
            number=batches[0].number,
            count=sum(b.count for b in batches),
        )
        for batch in batches:
            offset = len(merged.lines)
            merged.lines += batch.lines
            merged.status_lines += batch.status_lines
            merged.spans += [(d, first + offset, last + offset) for d, first, last in batch.spans]
            merged.dead_letters += batch.dead_letters
            merged.readings += batch.readings
            merged.waiters += batch.waiters
        merged.ruled = len(merged.readings)
        return merged


class SealedBatches:
    """Sealed batches on their way from the intake to the writers: numbered in sealing
    order, their readings handed to the rules, queued for a writer within a bound."""

    def __init__(self, settings: Settings, on_readings: ReadingsSink | None) -> None:
        self.on_readings = on_readings
        # Seal at this many messages too: the broker's in-flight window (40,000 in the
        # local mosquitto.conf template) must hold the batches being written, those queued
        # and this one (see QUEUED_BATCHES), or it, not storage, caps the rate.
        self.max_messages = max(1, min(settings.batch_size, 5000))
        full_batch = max(1, settings.batch_size)  # readings
        self.queue: WriteQueue[Batch] = WriteQueue(
            max_lines=QUEUED_BATCHES * full_batch,
            max_messages=QUEUED_BATCHES * self.max_messages,
            merge_lines=full_batch,
            merge_messages=self.max_messages,
        )
        self.unstored = 0  # sealed batches not yet stored
        self.writing = 0  # writers storing a batch now
        self.count = 0  # batches sealed so far
        self.ruled_at = 0.0  # when readings were last handed to the rules

    async def seal(self, batch: Batch) -> None:
        """Number ``batch``, hand the rest of its readings to ``on_readings`` and queue it
        for the writers; waits while the rules or the writers are behind.

        That wait is the backpressure: intake takes nothing more from the broker meanwhile.
        """
        batch.number = self.count
        self.count += 1
        self.unstored += 1
        await self.to_rules(batch)
        await self.queue.put(batch)

    async def to_rules(self, batch: Batch) -> None:
        """Hand ``batch``'s readings not handed yet to ``on_readings`` (waits while the
        rules are behind).

        The rules see readings before they are stored: an InfluxDB that is slow or down
        delays no alert. Their state changes are idempotent, so a reading the broker
        delivers again (not yet acked at a crash) only meets the same state again.
        """
        readings = batch.readings
        if self.on_readings is None or batch.ruled == len(readings):
            return
        fresh = readings[batch.ruled :]  # a copy: an open batch's list grows on
        batch.ruled = len(readings)
        self.ruled_at = time.monotonic()
        handed = self.on_readings(fresh)
        if handed is not None:
            await handed

    async def stored(self, count: int) -> None:
        """``count`` sealed batches, taken together by a writer, are stored."""
        self.unstored -= count
        await self.queue.done(count)

    @property
    def nothing_written(self) -> bool:
        """No writer is storing a batch and none is queued for one."""
        return self.writing + len(self.queue) == 0
