"""The ingest: MQTT deliveries → decoded, validated readings → InfluxDB, rejects → dead letters.

Tasks joined by a bounded queue (:class:`~cityiot.ingest.writequeue.WriteQueue`):

- *intake* takes batches of deliveries from the broker link, turns each into line-protocol
  points or dead letters, and seals a :class:`Batch` when it is big or old enough (or
  nothing is being written), handing its readings to the rules as it does;
- *writers* (``WRITES_IN_FLIGHT`` of them) store sealed batches (points to InfluxDB, dead
  letters to SQL; the batches queued behind one another together, up to one full batch)
  and only then acknowledge their deliveries to the broker (at-least-once), in sealing
  order.

When storage lags, the queue fills, intake stops taking deliveries, the link stops
reading its socket, and the broker holds the rest: memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import itertools
import logging
import operator
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from cityiot.domain.catalogue import KINDS, is_valid_id
from cityiot.domain.settings import Settings
from cityiot.ingest.broker import BrokerLink, Delivery
from cityiot.ingest.codecs import Codec, PayloadError, RawReading, default_codecs, load_json
from cityiot.ingest.dead_letter_limit import (
    OTHER_VENDORS,
    DeadLetterLimit,
    DroppedSummary,
    reason_pattern,
)
from cityiot.ingest.devices import DeviceMap, KnownDevice
from cityiot.ingest.latest import FLUSH_PACE, LatestValues
from cityiot.ingest.presence import Presence
from cityiot.ingest.spool import Spool, SpoolError
from cityiot.ingest.validate import Reading, Rejected, Validator
from cityiot.ingest.writequeue import WriteQueue
from cityiot.storage.deadletters import (
    DeadLetterCaps,
    DeadLetterIn,
    add_dead_letters,
    prune_dead_letters,
)
from cityiot.storage.influx import InfluxDB, InfluxError
from cityiot.storage.registry import online_devices, record_presence
from cityiot.storage.wal import CHECKPOINT_EVERY_S, checkpoint
from cityiot.storage.writes import ROWS_PER_TURN

log = logging.getLogger("cityiot.ingest")

TOPICS = ("city/+/+/telemetry", "city/+/+/status")
SEQ_WINDOW = 64  # seqs remembered below a device's highest, for duplicate detection
# Batches written to InfluxDB at once: InfluxDB works on one write per core, and while one
# request is parsed there the next can be on its way (a direct test on 2 cores: +25 %).
WRITES_IN_FLIGHT = 3
# A batch is sealed at once when nothing is being written, but not before it is this old
# (s). Sealing whenever one of the writers was idle sent InfluxDB 150-270 requests a second
# of 50-100 points at 10,000 readings/s, each an HTTP round trip here and a WAL fsync
# there; now what arrives while a write is out, or within these 20 ms, goes together: in
# the bench's latency runs 265-290 points a request, the ingest's CPU 0.51-0.56 of a core
# instead of 0.73-0.75 and InfluxDB's 0.36-0.37 instead of 0.42-0.44. It costs a reading
# stored in a quiet hour these 20 ms (publish → stored p50 25-28 ms instead of 15-17).
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
# interval costs a call, not a turn of the loop: 2 ms halved the alert's median (8.6-9.4
# -> 3.9-4.0 ms at 10,000 readings/s, two runs each) against 10 ms.
RULES_SLICE = 1000
RULES_EVERY_S = 0.002
# Messages handled between two turns of the event loop (about 4 ms): every await of the
# rules' database round trips waits for a turn, and an alert's recording takes several.
YIELD_EVERY = 128
HAND_ON_SLICE = 1000  # a stored batch's readings merged into the latest values at a time
_SEQ_MASK = (1 << SEQ_WINDOW) - 1
_KIND_OF = operator.attrgetter("kind")
# Devices' last-seen times go to the registry this often (status changes at every round, a
# few s): a fleet of 100,000 reporting devices is 100,000 rows each time, and the write
# turns they take are the ones an alert's recording waits for.
SEEN_EVERY_S = 30.0
# The dead-letter table is pruned to its caps whenever a twentieth of them was stored since
# the last prune: the table stays within 5 % over, and the byte count is read that rarely.
PRUNE_SLICES = 20
PRUNE_RETRY_S = 5.0

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
    batches: int = 0
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
        merged.ruled = len(merged.readings)
        return merged


class Ingest:
    """The ingest stage: ``async with Ingest(...) as ingest: await ingest.run()``.

    ``on_readings`` receives the validated readings as they arrive, in slices, before they
    are stored (the rules engine hangs here, or the scale-out partitioner in front of it).
    """

    def __init__(
        self,
        settings: Settings,
        influx: InfluxDB,
        session_factory: Any,
        link: BrokerLink,
        *,
        on_readings: ReadingsSink | None = None,
        codecs: dict[str, Codec] | None = None,
        store: bool = True,
        spool: Spool | None = None,
    ) -> None:
        self.settings = settings
        # False for a rules-only worker: it reads the stream, the ingest stores it.
        self.store = store
        self.influx = influx
        self.sessions = session_factory
        self.link = link
        self.on_readings = on_readings
        self.codecs = codecs or default_codecs(
            settings.max_batch_readings, settings.max_payload_bytes
        )
        self.devices = DeviceMap(session_factory)
        self.validator = Validator(settings.retention_s, settings.future_tolerance_s)
        self.presence = Presence()
        # The latest-value table is the storing ingest's to keep (a rules-only reader's not).
        self.latest = LatestValues(session_factory, settings.latest_flush_ms) if store else None
        # Where batches go while InfluxDB is down or slow (None: wait for it, holding them).
        self.spool = spool if store else None
        self._spool_after_s = settings.spool_after_s
        self.counters = IngestCounters()
        # device → (highest seq, latest ts_ms, bitmask of the seqs seen just below it)
        self._seqs: dict[str, tuple[int, int, int]] = {}
        # Seal at this many messages too: the broker's in-flight window (40,000 in the
        # local mosquitto.conf template) must hold the batches being written, those queued
        # and this one (see QUEUED_BATCHES), or it, not storage, caps the rate.
        self._max_unacked = max(1, min(settings.batch_size, 5000))
        full_batch = max(1, settings.batch_size)  # readings
        self._sealed: WriteQueue[Batch] = WriteQueue(
            max_lines=QUEUED_BATCHES * full_batch,
            max_messages=QUEUED_BATCHES * self._max_unacked,
            merge_lines=full_batch,
            merge_messages=self._max_unacked,
        )
        self._batch = Batch()
        self._unstored = 0  # sealed batches not yet stored
        self._writing = 0  # writers storing a batch now
        self._sealed_count = 0
        self._handed_on = 0  # batches whose acks and readings have been handed on
        self._turn = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._flush_s = settings.flush_interval_ms / 1000
        self._ruled_at = 0.0  # when readings were last handed to the rules
        self._encode = msgspec.json.Encoder()
        self.dead_letter_limit = DeadLetterLimit(
            settings.dead_letter_rate_per_s, settings.dead_letter_rate_burst
        )
        self._dead_letter_caps = DeadLetterCaps(
            settings.dead_letter_max_rows, settings.dead_letter_max_bytes
        )
        self._unpruned = (0, 0)  # dead letters and payload bytes stored since the last prune
        self._prune_wanted = asyncio.Event()
        self._pruning = False

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Ingest:
        await self.devices.refresh()
        log.info("event=ingest_starting devices=%d", len(self.devices))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """Run until :meth:`stop`; everything taken from the broker is stored before it returns."""
        if self.store:
            await self._resume_presence()
        writers = [
            asyncio.create_task(self._writer(), name=f"ingest-writer-{k}")
            for k in range(WRITES_IN_FLIGHT)
        ]
        upkeep = asyncio.create_task(self._upkeep(), name="ingest-upkeep")
        tasks = [*writers, upkeep]
        if self.latest is not None:
            tasks.append(asyncio.create_task(self.latest.run(), name="ingest-latest"))
        if self.spool is not None:
            tasks.append(asyncio.create_task(self._replay(), name="ingest-replay"))
        if self.store:
            tasks.append(asyncio.create_task(self._checkpoints(), name="ingest-checkpoints"))
            tasks.append(asyncio.create_task(self._prune(), name="ingest-dead-letter-prune"))
        try:
            await self._intake(writers)
            await self._seal()
            await self._sealed.join()
            log.info(
                "event=ingest_drained stored=%d rejected=%d",
                self.counters.stored,
                self.counters.rejected,
            )
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._flush_presence()
            if self.latest is not None:
                await self.latest.flush()

    async def stop(self) -> None:
        self._stopping.set()

    async def _resume_presence(self) -> None:
        """Take over the devices the registry holds online (of this worker's, with several):
        a restart writes no "came online" for each of them, and one that fell silent while no
        ingest ran goes offline 3 × its report interval from now."""
        now_ms = int(time.time() * 1000)
        resumed = 0
        for device_id in await online_devices(self.sessions):
            device = self.devices.get(device_id)
            if device is not None and not device.decommissioned:
                resumed += self.presence.resume(device_id, now_ms, device.report_interval_s)
        log.info("event=presence_resumed online=%d", resumed)

    def depths(self) -> dict[str, float]:
        """Queue depths and state now, for metrics (gauges)."""
        return {
            "batches_unstored": float(self._unstored),
            "messages_in_batch": float(len(self._batch.spans)),
            "deliveries_waiting": float(self.link.waiting),
            "broker_connected": float(self.link.stats.connected),
            "intake_paused": float(self.link.stats.paused),
            **(
                {
                    "spool_bytes": float(self.spool.bytes),
                    "spool_batches": float(self.spool.records),
                    "spool_max_bytes": float(self.spool.max_bytes),
                    "spool_near_full": float(self.spool.near_full),
                }
                if self.spool is not None
                else {}
            ),
        }

    @property
    def idle(self) -> bool:
        """Nothing taken from the broker is waiting to be stored (and acknowledged)."""
        return not self._batch.started and self._unstored == 0

    @property
    def pruned(self) -> bool:
        """No prune of the dead-letter table is due or under way: the dead letters stored
        so far have been held against the caps."""
        return not self._pruning and not self._prune_wanted.is_set()

    # -- intake ------------------------------------------------------------------------

    async def _intake(self, writers: list[asyncio.Task[None]]) -> None:
        link = self.link
        while not self._stopping.is_set():
            for writer in writers:
                if writer.done():
                    writer.result()  # a writer died: raise its error, ack nothing more
                    raise RuntimeError("an ingest writer stopped unexpectedly")
            timeout = self._flush_s
            if self._batch.started:
                # Looked at again every SEAL_IDLE_S while a batch is open: a write that
                # comes back wakes no one.
                left = self._batch.started + self._flush_s - time.monotonic()
                timeout = max(0.0, min(SEAL_IDLE_S, left))
            if self._batch.ruled < len(self._batch.readings):
                timeout = min(timeout, max(0.0, self._ruled_at + RULES_EVERY_S - time.monotonic()))
            deliveries = await link.next_batch(min(timeout, 0.5))
            if deliveries:
                received_ms = int(time.time() * 1000)
                for index, delivery in enumerate(deliveries, 1):
                    self.handle(delivery, received_ms)
                    if index % YIELD_EVERY == 0:
                        await asyncio.sleep(0)  # the rules' database turns wait meanwhile
                    # Seal as soon as the batch is full, not after the whole hand-over: with
                    # batched payloads one hand-over can hold millions of readings.
                    if (
                        len(self._batch.lines) >= self.settings.batch_size
                        or len(self._batch.spans) >= self._max_unacked
                    ):
                        await self._seal()
                    elif len(self._batch.readings) - self._batch.ruled >= RULES_SLICE:
                        await self._to_rules(self._batch)
            batch = self._batch
            batch_age = time.monotonic() - batch.started
            if batch.started and (
                # Nothing is being written and the batch is SEAL_IDLE_S old: store now.
                (self._writing + len(self._sealed) == 0 and batch_age >= SEAL_IDLE_S)
                or len(batch.lines) >= self.settings.batch_size
                or len(batch.spans) >= self._max_unacked
                # Old enough, unless the writers' queue is full: then it grows (to its size
                # limit) rather than stop the intake, and the rules go on getting readings.
                or (batch_age >= self._flush_s and self._sealed.has_room)
            ):
                await self._seal()
            elif (
                batch.ruled < len(batch.readings)
                and time.monotonic() - self._ruled_at >= RULES_EVERY_S
            ):
                await self._to_rules(batch)

    async def _seal(self) -> None:
        """Hand the rest of the current batch's readings to ``on_readings`` and the batch to
        the writers; waits while the rules or the writers are behind.

        That wait is the backpressure: intake takes nothing more from the broker meanwhile.
        """
        if not self._batch.started:
            return
        batch, self._batch = self._batch, Batch()
        batch.number = self._sealed_count
        self._sealed_count += 1
        self._unstored += 1
        await self._to_rules(batch)
        await self._sealed.put(batch)

    async def _to_rules(self, batch: Batch) -> None:
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
        self._ruled_at = time.monotonic()
        handed = self.on_readings(fresh)
        if handed is not None:
            await handed

    def handle(self, delivery: Delivery, received_ms: int) -> None:
        """Turn one delivery into points (or dead letters) in the current batch."""
        batch = self._batch
        if not batch.started:
            batch.started = time.monotonic()
        first, first_reading = len(batch.lines), len(batch.readings)
        self.counters.messages += 1
        try:
            self._decode(delivery, received_ms, batch)
        except (PayloadError, Rejected) as exc:
            self._dead_letter(batch, delivery, str(exc), received_ms)
        except Exception as exc:  # a decoder bug: one odd message must not stop the ingest
            log.exception("event=decode_crashed topic=%s", delivery.topic[:200])
            del batch.lines[first:], batch.readings[first_reading:]
            self._dead_letter(
                batch,
                delivery,
                f"the platform could not decode this message ({exc!r:.200})",
                received_ms,
            )
        batch.spans.append((delivery, first, len(batch.lines)))

    def _decode(self, delivery: Delivery, received_ms: int, batch: Batch) -> None:
        parts = delivery.topic.split("/")
        if len(parts) != 4:
            raise Rejected(f"topic {delivery.topic[:200]!r} is not city/{{vendor}}/{{device_id}}/…")
        _, vendor, device_id, channel = parts
        device = self.devices.devices.get(device_id)
        if device is None or device.vendor != vendor:
            raise Rejected(self._why_unknown(vendor, device_id, device))
        if device.decommissioned:
            raise Rejected(f"device {device_id} is decommissioned; re-register it to send data")
        payload = delivery.payload
        if len(payload) > self.settings.max_payload_bytes:
            raise Rejected(
                f"payload of {len(payload)} bytes exceeds {self.settings.max_payload_bytes}; "
                "split it into several messages"
            )
        if channel == "status":
            self._status(device, payload, received_ms, batch)
            return
        codec = self.codecs.get(self.devices.codecs.get(vendor, "json"))
        if codec is None:
            raise Rejected(
                f"vendor {vendor} is set to codec {self.devices.codecs[vendor]!r}, "
                f"which this ingest does not have ({', '.join(self.codecs)})"
            )
        raws = codec.decode(payload, KINDS[device.kind])
        batched = len(raws) > 1
        for index, raw in enumerate(raws):
            try:
                self._accept(device, raw, received_ms, batch)
            except Rejected as exc:
                if not batched:
                    raise
                # One bad reading in a batch is refused alone; its neighbours are stored.
                reason = f"readings[{index}]: {exc}"
                self._dead_letter(batch, delivery, reason, received_ms, self._encode.encode(raw))
        if self.presence.seen(device.device_id, received_ms, device.report_interval_s):
            batch.status_lines.append(f"{device.status_key} online=true {received_ms}\n".encode())

    def _accept(self, device: KnownDevice, raw: RawReading, received_ms: int, batch: Batch) -> None:
        reading = self.validator.reading(device.device_id, device.kind, raw, received_ms)
        if raw.seq is not None and self._repeated(device.device_id, raw.seq, reading.ts_ms):
            self.counters.duplicates += 1
            return
        # The metrics as JSON are line protocol's field set but for the punctuation: JSON
        # numbers are line-protocol floats (validation made every number a float) and
        # true/false its booleans; names are catalogue identifiers (no quote, colon or
        # comma). One encode and two replaces cost a fifth of formatting field by field.
        fields = (
            self._encode.encode(reading.metrics)[2:-1].replace(b'":', b"=").replace(b',"', b",")
        )
        if reading.ts_assumed:
            fields += b",ts_assumed=true"
        batch.lines.append(b"%s %s %d\n" % (device.series_bytes, fields, reading.ts_ms))
        batch.readings.append(reading)
        self.counters.readings += 1

    def _repeated(self, device_id: str, seq: int, ts_ms: int) -> bool:
        """Whether this (seq, time) of the device was seen already: a redelivery to drop.

        Seqs may arrive out of order (a publisher's queued messages resent after newer ones
        on reconnect): each of the last ``SEQ_WINDOW`` seqs below the highest is remembered
        in a bitmask, so only a seq actually seen counts. A seq that goes back while the
        time moves past everything seen is a rebooted device, not a repeat.
        """
        state = self._seqs.get(device_id)
        if state is None:
            self._seqs[device_id] = (seq, ts_ms, 1)
            return False
        top, latest, seen = state
        if seq > top:
            shift = seq - top
            seen = ((seen << shift) | 1) & _SEQ_MASK if shift < SEQ_WINDOW else 1
            self._seqs[device_id] = (seq, max(latest, ts_ms), seen)
            return False
        below = top - seq
        if ts_ms > latest:  # rebooted: its seq started again
            self._seqs[device_id] = (seq, ts_ms, 1)
            return False
        if below >= SEQ_WINDOW:
            return False  # too old to tell; storing it again only rewrites the same point
        if seen >> below & 1:
            return True
        self._seqs[device_id] = (top, latest, seen | 1 << below)
        return False

    def _status(self, device: KnownDevice, payload: bytes, received_ms: int, batch: Batch) -> None:
        try:
            message = load_json(payload, self.settings.max_payload_bytes)
        except PayloadError as exc:
            raise Rejected(f"status: {exc}") from None
        online = message.get("online") if isinstance(message, dict) else None
        if type(online) is not bool:
            raise Rejected('status must be {"online": true} or {"online": false}')
        if self.presence.says(device.device_id, online, received_ms, device.report_interval_s):
            flag = "true" if online else "false"
            batch.status_lines.append(f"{device.status_key} online={flag} {received_ms}\n".encode())

    def _why_unknown(self, vendor: str, device_id: str, device: KnownDevice | None) -> str:
        if not is_valid_id(vendor):
            return f"topic vendor id {vendor[:80]!r} is not valid: use [A-Za-z0-9_-]{{1,64}}"
        if not is_valid_id(device_id):
            return f"topic device id {device_id[:80]!r} is not valid: use [A-Za-z0-9_-]{{1,64}}"
        # The same words whether the device is missing or another vendor's: a vendor must
        # not learn other vendors' device ids, nor who owns them, from its dead letters.
        return (
            f"device {device_id} is not registered to vendor {vendor}: register it "
            "(cityiot devices import FILE.csv or POST /api/v1/devices), or check the device "
            "id in the topic"
        )

    def _dead_letter(
        self,
        batch: Batch,
        delivery: Delivery,
        reason: str,
        received_ms: int,
        payload: bytes | None = None,
    ) -> None:
        raw = delivery.payload if payload is None else payload
        parts = delivery.topic.split("/")
        vendor = parts[1][:64] if len(parts) > 1 else None
        device_id = parts[2][:64] if len(parts) > 2 else None
        self.counters.rejected += 1
        # Only registered vendors have a bucket of their own: a topic cannot add one.
        bucket = vendor if vendor is not None and vendor in self.devices.codecs else OTHER_VENDORS
        pattern = reason_pattern(reason, device_id)
        if not self.dead_letter_limit.take(bucket, pattern, time.monotonic()):
            self.counters.dead_letters_dropped_by_vendor[bucket] += 1
            return
        batch.dead_letters.append(
            DeadLetterIn(
                topic=delivery.topic[:1024],
                vendor=vendor,
                device_id=device_id,
                payload=raw[: self.settings.dead_letter_payload_bytes],
                payload_size=len(raw),
                reason=reason,
                received_at=_ms_to_dt(received_ms),
            )
        )
        log.debug("event=rejected topic=%s reason=%s", delivery.topic[:200], reason)

    def _summarise_dropped(self) -> None:
        """One dead letter for each vendor whose dead letters were dropped over its rate in
        the last ``summary_every_s``: how many, and why (the reasons stay visible)."""
        summaries = self.dead_letter_limit.due(time.monotonic())
        if not summaries:
            return
        received_at = _ms_to_dt(int(time.time() * 1000))
        batch = self._batch
        batch.started = batch.started or time.monotonic()
        for summary in summaries:
            batch.dead_letters.append(self._summary_letter(summary, received_at))

    def _summary_letter(self, summary: DroppedSummary, received_at: dt.datetime) -> DeadLetterIn:
        vendor = None if summary.bucket == OTHER_VENDORS else summary.bucket
        who = "of unregistered vendors" if vendor is None else f"of vendor {vendor}"
        top, top_count = summary.reasons[0] if summary.reasons else ("(not tallied)", 0)
        limit = self.dead_letter_limit
        reason = (
            f"{summary.dropped} more dead letters {who} were not stored in the last "
            f"{summary.window_s:.0f} s: over the limit of {limit.rate_per_s:g} a second in "
            f"bursts of {limit.burst} (CITYIOT_DEAD_LETTER_RATE_PER_S, "
            f"CITYIOT_DEAD_LETTER_RATE_BURST); most common reason ({top_count}×): {top}; "
            "the payload counts each reason"
        )
        tally = {
            "not_stored": summary.dropped,
            "window_s": round(summary.window_s, 1),
            "reasons": dict(summary.reasons),
            "other_reasons": summary.other_reasons,
        }
        payload = self._encode.encode(tally)
        return DeadLetterIn(
            topic="city/#" if vendor is None else f"city/{vendor}/#",
            vendor=vendor,
            device_id=None,
            payload=payload[: self.settings.dead_letter_payload_bytes],
            payload_size=len(payload),
            reason=reason,
            received_at=received_at,
        )

    # -- writer ------------------------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            batch = Batch.merged(await self._sealed.take())
            self._writing += 1
            try:
                await self._store(batch)
            finally:
                self._writing -= 1
            self._unstored -= batch.count
            await self._sealed.done(batch.count)

    async def _store(self, batch: Batch) -> None:
        started = time.perf_counter()
        if not self.store:
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
        self.link.ack(span[0] for span in batch.spans)
        readings = batch.readings
        # In slices, with a turn of the loop between them: a batch of 5,000 readings merged
        # at once held the loop (and the alerts of readings arriving meanwhile) for 60-90 ms.
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

    async def _write_points(self, batch: Batch) -> None:
        """Points to InfluxDB — or, while it is down or the spool holds older batches, to the
        spool. Returns once they are durable in one or the other (then the batch is acked)."""
        spool = self.spool
        if spool is not None and not spool.empty:
            # Behind what is spooled, so replay keeps the order.
            await self._to_spool(batch, "older batches are spooled")
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
        spool = self.spool
        assert spool is not None
        body = b"".join(batch.lines + batch.status_lines)
        delay = 0.5
        while True:
            try:
                await asyncio.to_thread(spool.append, body)
                self.counters.spooled += len(batch.lines)
                log.debug("event=spooled points=%d why=%s", len(batch.lines), why)
                return
            except SpoolError as exc:
                self.counters.spool_refusals += 1
                log.error("event=spool_refused retry_s=%.1f error=%s", delay, exc)
            try:  # InfluxDB may be back before the spool has room again
                await self.influx.write(body)
                return
            except InfluxError:
                pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _replay(self) -> None:
        """Send spooled batches to InfluxDB, oldest first, whenever it takes them."""
        spool = self.spool
        assert spool is not None
        delay = 0.5
        while True:
            record = await asyncio.to_thread(spool.peek)
            if record is None:
                await asyncio.sleep(0.2)
                continue
            try:
                await self.influx.write(record.body)
            except InfluxError as exc:
                if exc.is_client_error:
                    await self._replay_one_by_one(record.body, exc)
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
            await asyncio.to_thread(spool.consume, record)
            self.counters.replayed += record.body.count(b"\n")
            delay = 0.5

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
        """Store ``letters`` (retrying until the database takes them); a prune is due once
        a slice of the table's caps has been stored since the last one."""
        await self._retrying("dead letters", add_dead_letters, self.sessions, letters)
        rows, size = self._unpruned
        rows, size = rows + len(letters), size + sum(len(d.payload) for d in letters)
        self._unpruned = (rows, size)
        caps = self._dead_letter_caps
        if rows * PRUNE_SLICES >= caps.max_rows or size * PRUNE_SLICES >= caps.max_bytes:
            self._prune_wanted.set()

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

    # -- upkeep ------------------------------------------------------------------------

    async def _upkeep(self) -> None:
        refresh_every = self.settings.registry_refresh_s
        last_refresh = last_presence = last_seen = time.monotonic()
        presence_s = 0.0
        while True:
            await asyncio.sleep(min(refresh_every, 1.0))
            now = time.monotonic()
            self._summarise_dropped()
            if now - last_refresh >= refresh_every:
                last_refresh = now
                try:
                    await self.devices.refresh()
                except Exception as exc:  # keep ingesting with the map we have
                    log.warning("event=registry_refresh_failed error=%s", exc)
            # Presence is state, not data: at most a tenth of the time goes to writing it.
            if now - last_presence >= max(5.0, FLUSH_PACE * presence_s):
                last_presence = now
                self._sweep_silent()
                presence_s = time.monotonic() - now
                with_seen = now - last_seen >= SEEN_EVERY_S
                if with_seen:
                    last_seen = now
                presence_s += await self._flush_presence(with_seen)

    async def _checkpoints(self) -> None:
        """The registry's write-ahead log (SQLite) copied back into the database every
        ``CHECKPOINT_EVERY_S``, so that it starts over instead of growing (:func:`checkpoint`)."""
        while True:
            await asyncio.sleep(CHECKPOINT_EVERY_S)
            try:
                await checkpoint(self.sessions)
            except Exception as exc:  # the next round tries again
                log.warning("event=checkpoint_failed error=%s", exc)

    async def _prune(self) -> None:
        """Keep the dead-letter table within its caps (:func:`prune_dead_letters`): at start
        (it may hold more from before), then whenever :meth:`_add_dead_letters` asks."""
        while True:
            self._prune_wanted.clear()
            self._unpruned = (0, 0)
            self._pruning = True
            try:
                pruned = await prune_dead_letters(self.sessions, self._dead_letter_caps)
            except Exception as exc:  # the table grows a little more until the next try
                log.warning(
                    "event=dead_letter_prune_failed retry_s=%.0f error=%s", PRUNE_RETRY_S, exc
                )
                await asyncio.sleep(PRUNE_RETRY_S)
                continue
            finally:
                self._pruning = False
            self.counters.dead_letters_pruned += pruned
            if pruned:
                log.info("event=dead_letters_pruned rows=%d", pruned)
            await self._prune_wanted.wait()

    def _sweep_silent(self) -> None:
        now_ms = int(time.time() * 1000)
        batch = self._batch
        for device_id in self.presence.silent(now_ms):
            device = self.devices.get(device_id)
            if device is not None:
                batch.started = batch.started or time.monotonic()
                batch.status_lines.append(f"{device.status_key} online=false {now_ms}\n".encode())

    async def _flush_presence(self, with_seen: bool = True) -> float:
        """Write presence to the registry; returns the seconds it was busy doing so (the
        turns of the loop between its slices not counted)."""
        seen, online, offline = self.presence.take_changes(with_seen)
        busy = 0.0
        if not self.store or not (seen or online or offline):
            return busy
        try:
            # A slice at a time: 100,000 devices' times made at once would hold the event
            # loop (and every alert's next database round trip) for a tenth of a second.
            built = time.perf_counter()
            in_order, went_offline, went_online = self.devices.in_table_order(seen, offline, online)
            ids = iter(in_order)
            busy += time.perf_counter() - built
            while chunk := list(itertools.islice(ids, ROWS_PER_TURN)):
                built = time.perf_counter()
                times = {d: _ms_to_dt(seen[d]) for d in chunk}
                busy += time.perf_counter() - built
                busy += await record_presence(self.sessions, times, offline=(), online=())
            busy += await record_presence(
                self.sessions, {}, offline=went_offline, online=went_online
            )
        except Exception as exc:  # presence is state, not data: the next round retries
            log.warning("event=presence_flush_failed error=%s", exc)
            self.presence.dirty_seen.update(seen)
            self.presence.went_online |= online
            self.presence.went_offline |= offline
        return busy


# Each time made once: the devices of one intake batch share their receive time, so
# 100,000 last-seen times hold a few thousand distinct ones.
@functools.lru_cache(maxsize=16_384)
def _ms_to_dt(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
