"""Storing: the writers take sealed batches, store them — points to InfluxDB, or to the
spool while it is down or slow; dead letters to SQL — and only then acknowledge their
deliveries to the broker (at-least-once), in sealing order. The spool is replayed to
InfluxDB, oldest first, whenever it takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import time
from collections.abc import Callable
from typing import Any

from cityiot.domain.settings import Settings
from cityiot.ingest.batches import Batch, IngestCounters, SealedBatches
from cityiot.ingest.broker import BrokerLink, Delivery
from cityiot.ingest.latest import LatestValues
from cityiot.ingest.spool import Spool, SpoolError
from cityiot.ingest.spool_commit import SpoolCommits
from cityiot.storage.deadletters import DeadLetterIn, add_dead_letters
from cityiot.storage.influx import InfluxDB, InfluxError

log = logging.getLogger("cityiot.ingest")

# Batches written to InfluxDB at once: InfluxDB works on one write per core, and while one
# request is parsed there the next can be on its way.
WRITES_IN_FLIGHT = 3
HAND_ON_SLICE = 1000  # a stored batch's readings merged into the latest values at a time
REPLAY_BYTES = 2 * 1024 * 1024  # spooled batches sent to InfluxDB in one write, about
REPLAY_GATHER_BYTES = 256 * 1024  # a replay write under this waits REPLAY_GATHER_S for more
REPLAY_GATHER_S = 0.02
_KIND_OF = operator.attrgetter("kind")

# Makes a dead letter of a delivery in a batch: (batch, delivery, reason, received_ms).
DeadLetterMaker = Callable[[Batch, Delivery, str, int], None]


class Store:
    """Stores sealed batches (run :meth:`writer` ``WRITES_IN_FLIGHT`` times) and acks them.

    ``store=False`` (a rules-only worker: another ingest stores the stream) stores nothing
    and only acknowledges. ``dead_letter`` makes the dead letter of a message InfluxDB
    refuses; ``on_dead_letters`` hears of every dead letter stored.
    """

    def __init__(
        self,
        settings: Settings,
        influx: InfluxDB,
        session_factory: Any,
        link: BrokerLink,
        sealed: SealedBatches,
        counters: IngestCounters,
        *,
        store: bool,
        spool: Spool | None,
        latest: LatestValues | None,
        dead_letter: DeadLetterMaker,
        on_dead_letters: Callable[[list[DeadLetterIn]], None],
    ) -> None:
        self.settings = settings
        self.influx = influx
        self.sessions = session_factory
        self.link = link
        # Links other than ``link`` whose deliveries share the batches, by Delivery.link
        # (chirpstack): each delivery is acknowledged on the link it came from.
        self.links: dict[str, BrokerLink] = {}
        # More sessions of ``link``'s shared subscription, by Delivery.member - 1.
        self.members: list[BrokerLink] = []
        self.sealed = sealed
        self.counters = counters
        self._stores = store
        self.spool = spool
        self.latest = latest
        self._dead_letter = dead_letter
        self._on_dead_letters = on_dead_letters
        self._spool_after_s = settings.spool_after_s
        self._handed_on = 0  # batches whose acks and readings have been handed on
        # Since when InfluxDB and the spool both refuse (None: storing works): the HTTP link
        # answers 503 at once meanwhile, instead of holding its callers.
        self.refusing_since: float | None = None
        self._turn = asyncio.Condition()
        # A small in-flight window (CITYIOT_MQTT_INFLIGHT): acknowledge once spooled and let
        # the replayer write many slices to InfluxDB at once, so storing a slice costs an
        # append, not an InfluxDB write each (docs/brokers.en.md).
        self.spool_first = spool is not None and store and settings.mqtt_inflight > 0
        self._spooled = asyncio.Event()
        self.commits = SpoolCommits(spool) if spool is not None else None

    async def writer(self) -> None:
        """One writer: store what is sealed, taken together up to a full batch, forever."""
        sealed = self.sealed
        while True:
            batch = Batch.merged(await sealed.queue.take())
            sealed.writing += 1
            try:
                await self.store(batch)
            finally:
                sealed.writing -= 1
            await sealed.stored(batch.count)

    async def store(self, batch: Batch) -> None:
        """Store ``batch``, then, in its turn in sealing order, acknowledge and count it."""
        started = time.perf_counter()
        if not self._stores:
            batch.lines, batch.status_lines, batch.dead_letters = [], [], []
        if batch.lines or batch.status_lines:
            await self._write_points(batch)
        if batch.dead_letters:
            await self._add_dead_letters(batch.dead_letters)
        # Stored; the rest in sealing order, so the rules see each device's readings as
        # they arrived even when a later batch's write finished first.
        async with self._turn:
            await self._turn.wait_for(lambda: self._handed_on == batch.number)
        try:
            await self._hand_on(batch, started)
        finally:
            async with self._turn:
                self._handed_on += batch.count
                self._turn.notify_all()

    async def _hand_on(self, batch: Batch, started: float) -> None:
        """Acknowledge a stored batch and count it."""
        if self.links or self.members:
            self._ack_by_link(batch)
        else:
            self.link.ack(span[0] for span in batch.spans)
        for waiter in batch.waiters:
            if not waiter.done():
                waiter.set_result(None)
        readings = batch.readings
        # In slices, with a turn of the loop between them: a whole batch merged at once holds
        # the loop, and the alerts of readings arriving meanwhile.
        for start in range(0, len(readings), HAND_ON_SLICE):
            part = readings[start : start + HAND_ON_SLICE]
            if self.latest is not None:
                self.latest.merge(part)
            self.counters.stored_by_kind.update(map(_KIND_OF, part))
            if start + HAND_ON_SLICE < len(readings):
                await asyncio.sleep(0)
        self.counters.stored += len(batch.lines)
        self.counters.batches += batch.count
        self.counters.last_write_ms = (time.perf_counter() - started) * 1000
        log.debug(
            "event=stored points=%d dead_letters=%d ms=%.1f",
            len(batch.lines),
            len(batch.dead_letters),
            self.counters.last_write_ms,
        )

    def _ack_by_link(self, batch: Batch) -> None:
        """Acknowledge each of ``batch``'s deliveries on the link (and session) it came by."""
        own = [self.link, *self.members]
        by_member: list[list[Delivery]] = [[] for _ in own]
        others: dict[str, list[Delivery]] = {name: [] for name in self.links}
        for delivery, _, _ in batch.spans:
            other = others.get(delivery.link)
            if other is not None:
                other.append(delivery)
            else:
                by_member[delivery.member].append(delivery)
        for link, deliveries in zip(own, by_member, strict=True):
            if deliveries:
                link.ack(deliveries)
        for name, deliveries in others.items():
            if deliveries:
                self.links[name].ack(deliveries)

    async def _write_points(self, batch: Batch) -> None:
        """Points to InfluxDB — or, while it is down or the spool holds older batches, to the
        spool. Returns once they are durable in one or the other (then the batch is acked)."""
        spool = self.spool
        if spool is not None and (self.spool_first or not spool.empty):
            # Behind what is spooled, so replay keeps the order.
            await self._to_spool(batch, "window" if self.spool_first else "older batches spooled")
            return
        # One request for readings and presence points: a second round trip per batch
        # would leave InfluxDB idle for as long.
        body = b"".join(batch.lines + batch.status_lines)
        started = time.perf_counter()
        try:
            await self._retrying("points", self.influx.write, body, give_up_s=self._spool_after_s)
            log.debug(
                "event=influx_write bytes=%d ms=%.1f",
                len(body),
                (time.perf_counter() - started) * 1000,
            )
        except InfluxError as exc:
            if not exc.is_client_error:  # give_up_s ran out: InfluxDB is down or slow
                await self._to_spool(batch, str(exc))
                return
            # InfluxDB refused the data itself (a 4xx): find the messages it refuses and
            # dead-letter those; the rest is written.
            log.warning("event=write_refused error=%s; retrying message by message", exc)
            await self._write_one_by_one(batch)
            if batch.status_lines:
                try:
                    status = b"".join(batch.status_lines)
                    await self._retrying("points", self.influx.write, status)
                except InfluxError as status_exc:  # our own points: a bug, not the vendor's
                    log.error("event=presence_points_refused error=%s", status_exc)

    async def _to_spool(self, batch: Batch, why: str) -> None:
        """Append the batch's points to the spool (durable when it returns). When the spool
        refuses (full, disk full), keep trying it and InfluxDB, acking nothing meanwhile:
        the broker holds the messages."""
        assert self.commits is not None
        body = b"".join(batch.lines + batch.status_lines)
        delay = 0.5
        while True:
            try:
                await self.commits.append(body)
                self._spooled.set()
                self.refusing_since = None
                self.counters.spooled += len(batch.lines)
                log.debug("event=spooled points=%d why=%s", len(batch.lines), why)
                return
            except SpoolError as exc:
                self.refusing_since = self.refusing_since or time.monotonic()
                self.counters.spool_refusals += 1
                log.error("event=spool_refused retry_s=%.1f error=%s", delay, exc)
            try:  # InfluxDB may be back before the spool has room again
                await self.influx.write(body)
                self.refusing_since = None
                return
            except InfluxError:
                pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def replay(self) -> None:
        """Send spooled batches to InfluxDB, oldest first, whenever it takes them."""
        spool = self.spool
        assert spool is not None
        delay = 0.5
        while True:
            records = await asyncio.to_thread(spool.peek_many, REPLAY_BYTES)
            if not records:
                self._spooled.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._spooled.wait(), 0.2)
                continue
            body = b"".join(r.body for r in records)
            try:
                await self.influx.write(body)
            except InfluxError as exc:
                if exc.is_client_error:
                    await self._replay_one_by_one(body, exc)
                else:
                    log.warning("event=replay_waiting retry_s=%.1f error=%s", delay, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
            except Exception as exc:  # e.g. connection refused: wait for InfluxDB
                log.warning("event=replay_waiting retry_s=%.1f error=%s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            await asyncio.to_thread(spool.consume_many, records)
            self.counters.replayed += body.count(b"\n")
            delay = 0.5
            if self.spool_first and len(body) < REPLAY_GATHER_BYTES:
                # Slices of a small window arrive a few at a time: gather some before the
                # next write, which costs InfluxDB as much for 16 points as for thousands.
                await asyncio.sleep(REPLAY_GATHER_S)

    async def _replay_one_by_one(self, body: bytes, exc: InfluxError) -> None:
        """A spooled batch InfluxDB refuses as data: store its points one by one; the ones
        it refuses become dead letters (topic ``spool``)."""
        log.warning("event=replay_refused error=%s; replaying point by point", exc)
        refused: list[DeadLetterIn] = []
        for line in body.splitlines(keepends=True):
            try:
                await self._retrying("points", self.influx.write, line)
            except InfluxError as point_exc:
                refused.append(
                    DeadLetterIn(
                        topic="spool",
                        vendor=None,
                        device_id=None,
                        payload=line[: self.settings.dead_letter_payload_bytes],
                        payload_size=len(line),
                        reason=f"InfluxDB refused a spooled point: {point_exc}",
                    )
                )
        if refused:
            self.counters.rejected += len(refused)
            await self._add_dead_letters(refused)

    async def _write_one_by_one(self, batch: Batch) -> None:
        received_ms = int(time.time() * 1000)
        for delivery, first, last in batch.spans:
            if first == last:
                continue
            try:
                await self._retrying("points", self.influx.write, b"".join(batch.lines[first:last]))
            except InfluxError as exc:
                self._dead_letter(batch, delivery, f"InfluxDB refused: {exc}", received_ms)
                batch.lines[first:last] = [b""] * (last - first)
        if batch.dead_letters:
            await self._add_dead_letters(batch.dead_letters)
            batch.dead_letters = []
        batch.lines = [line for line in batch.lines if line]

    async def _add_dead_letters(self, letters: list[DeadLetterIn]) -> None:
        """Store ``letters``, retrying until the database takes them."""
        await self._retrying("dead letters", add_dead_letters, self.sessions, letters)
        self._on_dead_letters(letters)

    async def _retrying(
        self, what: str, fn: Callable[..., Any], *args: Any, give_up_s: float | None = None
    ) -> Any:
        """Call ``fn`` until it works; a refusal of the data itself (4xx) is raised at once.

        With ``give_up_s``, an InfluxDB still failing after that long raises its last error
        (the caller spools the batch instead).
        """
        delay = 0.1
        deadline = None if give_up_s is None else time.monotonic() + give_up_s
        while True:
            try:
                return await fn(*args)
            except InfluxError as exc:
                if exc.is_client_error or (deadline is not None and time.monotonic() >= deadline):
                    raise
                error: Exception = exc
            except Exception as exc:  # the SQL store: any driver error is worth a retry
                error = exc
            self.counters.write_errors += 1
            log.warning("event=store_failed what=%s retry_s=%.1f error=%s", what, delay, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
