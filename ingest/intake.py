"""Intake: deliveries taken from the broker link, decoded into line-protocol points (or dead
letters) in the open :class:`~cityiot.ingest.batches.Batch`, which is sealed when it is big
or old enough, or when nothing is being written.

:meth:`Intake.handle` runs for every MQTT message: it and what it calls stay in this one
object, with their attributes cached as they are.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from collections.abc import Mapping
from typing import Any, cast

import msgspec

from cityiot.domain.catalogue import KINDS, Kind, is_valid_id
from cityiot.domain.settings import Settings
from cityiot.ingest.batches import (
    RULES_EVERY_S,
    RULES_SLICE,
    SEAL_IDLE_S,
    Batch,
    IngestCounters,
    SealedBatches,
)
from cityiot.ingest.broker import BrokerLink, Delivery
from cityiot.ingest.codecs import Codec, CodecBook, PayloadError, RawReading, load_json
from cityiot.ingest.dead_letter_limit import (
    OTHER_VENDORS,
    DeadLetterLimit,
    DroppedSummary,
    reason_pattern,
)
from cityiot.ingest.devices import DeviceMap, KnownDevice
from cityiot.ingest.presence import Presence
from cityiot.ingest.relay import RELAY_PREFIX, unwrap
from cityiot.ingest.validate import Rejected, Validator
from cityiot.storage.deadletters import DeadLetterIn

log = logging.getLogger("cityiot.ingest")

SEQ_WINDOW = 64  # seqs remembered below a device's highest, for duplicate detection
# Messages handled between two turns of the event loop (about 4 ms): every await of the
# rules' database round trips waits for a turn, and an alert's recording takes several.
YIELD_EVERY = 128
_SEQ_MASK = (1 << SEQ_WINDOW) - 1


class Intake:
    """Fills the open batch from the broker link and seals it into :class:`SealedBatches`;
    rejects become dead letters (at most ``dead_letter_rate_per_s`` a vendor, the rest
    summarised)."""

    def __init__(
        self,
        settings: Settings,
        link: BrokerLink,
        devices: DeviceMap,
        presence: Presence,
        codec_book: CodecBook,
        counters: IngestCounters,
        sealed: SealedBatches,
    ) -> None:
        self.settings = settings
        self.link = link
        self.devices = devices
        self.presence = presence
        self.codec_book = codec_book
        self.codecs = codec_book.codecs  # name → codec, kept fresh in place by the book
        self.counters = counters
        self.sealed = sealed
        self.validator = Validator(settings.retention_s, settings.future_tolerance_s)
        self.dead_letter_limit = DeadLetterLimit(
            settings.dead_letter_rate_per_s, settings.dead_letter_rate_burst
        )
        self.batch = Batch()  # the open batch, being filled
        # Links other than ``link`` that fill the open batch too (ChirpStack's): their
        # in-flight windows count as well.
        self.other_links: list[BrokerLink] = []
        # More sessions of ``link``'s shared subscription (CITYIOT_MQTT_SESSIONS): each a
        # window of its own, filling the open batch too.
        self.members: list[BrokerLink] = []
        # device → (highest seq, latest ts_ms, bitmask of the seqs seen just below it)
        self._seqs: dict[str, tuple[int, int, int]] = {}
        self._max_unacked = sealed.max_messages
        self._flush_s = settings.flush_interval_ms / 1000
        self._encode = msgspec.json.Encoder()
        self._stopping = asyncio.Event()
        self._sealed_one = asyncio.Event()  # set when the open batch is sealed (or stopping)
        # While a link that answers its sender takes a message: (index, reason) of each reading
        # refused (the index in the message's batch; 0 for the whole message).
        self.refusals: list[tuple[int, str]] | None = None

    def stop(self) -> None:
        """Take no more deliveries: :meth:`run` returns after its current hand-over."""
        self._stopping.set()
        self._sealed_one.set()

    @property
    def stopping(self) -> bool:
        """:meth:`stop` was called: a message taken now would never be stored."""
        return self._stopping.is_set()

    def fit_windows(self) -> None:
        """Bound a batch's messages by the links' in-flight windows: a batch holds at most
        half the smallest window (:attr:`BrokerLink.slice`; the ingest's sessions of one
        shared subscription count together, a window each, while open), so the broker sends
        the next half while this one is stored, and its window never waits on an open batch."""
        open_ = [link for link in (self.link, *self.members) if not link.closing]
        own = sum(link.slice for link in open_) if self.link.slice else 0
        slices = [own] if own else []
        slices += [link.slice for link in self.other_links if link.slice]
        self._max_unacked = min([self.sealed.max_messages, *slices])

    @property
    def batch_bound(self) -> int:
        """Messages a batch holds at most: the writers' bound, or the open windows' slices."""
        return self._max_unacked

    def window_full(self) -> bool:
        """A link's in-flight window is full: its broker sends nothing more before an ack,
        so waiting for more to fill the open batch would only stall it. The ingest's own
        sessions count together: while one of them still has room, the batch grows (to its
        bound, half of every window) rather than be sealed small."""
        own = [link for link in (self.link, *self.members) if not link.closing]
        return all(link.full for link in own) or any(link.full for link in self.other_links)

    async def run(self, writers: list[asyncio.Task[None]]) -> None:
        """Take deliveries until :meth:`stop`; raises if one of ``writers`` died."""
        link = self.link
        sealed = self.sealed
        self.fit_windows()
        while not self._stopping.is_set():
            for writer in writers:
                if writer.done():
                    writer.result()  # a writer died: raise its error, ack nothing more
                    raise RuntimeError("an ingest writer stopped unexpectedly")
            timeout = self._flush_s
            if self.batch.started:
                # Looked at again every SEAL_IDLE_S while a batch is open: a write that
                # comes back wakes no one.
                left = self.batch.started + self._flush_s - time.monotonic()
                timeout = max(0.0, min(SEAL_IDLE_S, left))
            if self.batch.ruled < len(self.batch.readings):
                timeout = min(timeout, max(0.0, sealed.ruled_at + RULES_EVERY_S - time.monotonic()))
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
                        len(self.batch.lines) >= self.settings.batch_size
                        or len(self.batch.spans) >= self._max_unacked
                    ):
                        self.counters.sealed_by_reason["size"] += 1
                        await self.seal()
                    elif len(self.batch.readings) - self.batch.ruled >= RULES_SLICE:
                        await sealed.to_rules(self.batch)
            batch = self.batch
            reason = self._seal_reason(batch) if batch.started else ""
            if reason:
                self.counters.sealed_by_reason[reason] += 1
                await self.seal()
            elif (
                batch.ruled < len(batch.readings)
                and time.monotonic() - sealed.ruled_at >= RULES_EVERY_S
            ):
                await sealed.to_rules(batch)

    def _seal_reason(self, batch: Batch) -> str:
        """Why the open ``batch`` is to be sealed now; empty: it is not."""
        if len(batch.lines) >= self.settings.batch_size or len(batch.spans) >= self._max_unacked:
            return "size"
        if self.window_full():
            return "window"
        sealed = self.sealed
        batch_age = time.monotonic() - batch.started
        # Nothing is being written and the batch is SEAL_IDLE_S old, or a sender on the
        # HTTP link waits for it (one waits for each write, no longer): store now.
        if sealed.nothing_written and (batch.waiters or batch_age >= SEAL_IDLE_S):
            return "idle"
        # Old enough, unless the writers' queue is full: then it grows (to its size limit)
        # rather than stop the intake, and the rules go on getting readings.
        if batch_age >= self._flush_s and sealed.queue.has_room:
            return "age"
        return ""

    async def seal(self) -> None:
        """Seal the open batch, if it holds anything, and hand it on
        (:meth:`SealedBatches.seal`: waits while the rules or the writers are behind)."""
        if not self.batch.started:
            return
        batch, self.batch = self.batch, Batch()
        self._sealed_one.set()
        await self.sealed.seal(batch)

    async def room(self) -> None:
        """Wait while the open batch holds as many messages as a batch may: for another link
        that fills it (ChirpStack's), whose broker then holds the rest."""
        while len(self.batch.spans) >= self._max_unacked and not self.stopping:
            self._sealed_one.clear()
            self.link.wake()
            await self._sealed_one.wait()

    def open_batch(self) -> Batch:
        """The open batch, started if it was not: for points and dead letters that come
        from no delivery (presence sweeps, dead-letter summaries)."""
        batch = self.batch
        batch.started = batch.started or time.monotonic()
        return batch

    def handle(self, delivery: Delivery, received_ms: int) -> None:
        """Turn one delivery into points (or dead letters) in the open batch."""
        batch = self.batch
        if not batch.started:
            batch.started = time.monotonic()
        first, first_reading = len(batch.lines), len(batch.readings)
        self.counters.messages += 1
        try:
            if delivery.topic.startswith(RELAY_PREFIX):  # from an API apart (ingest/relay.py)
                refused = unwrap(delivery)
                if refused is not None:
                    raise Rejected(refused)
            self._decode(delivery, received_ms, batch)
        except (PayloadError, Rejected) as exc:
            self.dead_letter(batch, delivery, str(exc), received_ms)
        except Exception as exc:  # a decoder bug: one odd message must not stop the ingest
            log.exception("event=decode_crashed topic=%s", delivery.topic[:200])
            del batch.lines[first:], batch.readings[first_reading:]
            self.dead_letter(
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
            self._status(device, payload, received_ms, batch, delivery.link)
            return
        codec = self.codecs.get(self.devices.codecs.get(vendor, "json"))
        if codec is None:
            raise Rejected(
                f"vendor {vendor} is set to codec {self.devices.codecs[vendor]!r}, "
                f"which this ingest does not have ({', '.join(self.codecs)})"
            )
        kind = KINDS.get(device.kind)
        if kind is None:  # the registry knows a kind this process has not taken in yet
            raise Rejected(
                f"device {device.device_id} is of kind {device.kind!r}, which this ingest does "
                "not know (yet); check GET /api/v1/kinds and the kind files"
            )
        if delivery.decoded is not None:
            raws = [_mapped(codec, delivery.decoded, kind, device.attributes)]
        elif payload or delivery.link_metrics is None:
            raws = codec.decode(payload, kind, device.attributes, delivery.fport, received_ms)
        else:  # no frame: what the network measured is the reading (a battery level)
            raws = [RawReading(metrics={})]
        if delivery.link_metrics is not None:
            raws = _measured(raws, delivery.link_metrics, kind)
        if delivery.link_ts_ms is not None or delivery.link_seq is not None:
            _stamp(raws, delivery)
        batched = len(raws) > 1
        for index, raw in enumerate(raws):
            try:
                self._accept(device, raw, received_ms, batch)
            except Rejected as exc:
                if not batched:
                    raise
                # One bad reading in a batch is refused alone; its neighbours are stored.
                reason = f"readings[{index}]: {exc}"
                self.dead_letter(
                    batch, delivery, reason, received_ms, self._encode.encode(raw), index=index
                )
        self.presence.came_by(device.device_id, delivery.link)
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

    def _status(
        self, device: KnownDevice, payload: bytes, received_ms: int, batch: Batch, link: str
    ) -> None:
        try:
            message = load_json(payload, self.settings.max_payload_bytes)
        except PayloadError as exc:
            raise Rejected(f"status: {exc}") from None
        online = message.get("online") if isinstance(message, dict) else None
        if type(online) is not bool:
            raise Rejected('status must be {"online": true} or {"online": false}')
        presence = self.presence
        presence.came_by(device.device_id, link)
        if presence.says(device.device_id, online, received_ms, device.report_interval_s, link):
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

    def dead_letter(
        self,
        batch: Batch,
        delivery: Delivery,
        reason: str,
        received_ms: int,
        payload: bytes | None = None,
        index: int = 0,
        who: tuple[str | None, str | None] | None = None,
    ) -> None:
        """Count ``delivery`` rejected for ``reason`` and keep it (or ``payload``, the part
        refused: reading ``index`` of a batch) as a dead letter in ``batch``, unless its
        vendor is over its rate. ``who`` is the (vendor, device id) when the topic is not
        ours and does not name them (a network server's topic)."""
        if self.refusals is not None:
            self.refusals.append((index, reason))
        raw = delivery.payload if payload is None else payload
        if who is not None:
            vendor, device_id = who
        else:
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
                received_at=ms_to_dt(received_ms),
            )
        )
        log.debug("event=rejected topic=%s reason=%s", delivery.topic[:200], reason)

    def summarise_dropped(self) -> None:
        """One dead letter for each vendor whose dead letters were dropped over its rate in
        the last ``summary_every_s``: how many, and why (the reasons stay visible)."""
        summaries = self.dead_letter_limit.due(time.monotonic())
        if not summaries:
            return
        received_at = ms_to_dt(int(time.time() * 1000))
        batch = self.open_batch()
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


def _mapped(
    codec: Codec, decoded: dict[str, Any], kind: Kind, attributes: Mapping[str, Any]
) -> RawReading:
    """The reading of what a network server decoded already (ChirpStack's ``object``):
    mapped by the codec's ``metrics`` (no script runs), or, for the access standard's own
    codec, its fields taken as the metrics."""
    reading = getattr(codec, "reading", None)
    if reading is not None:
        return cast(RawReading, reading(decoded, kind, attributes))
    raws = codec.decode(msgspec.json.encode({"metrics": decoded}), kind, attributes)
    return raws[0]


def _measured(raws: list[RawReading], measured: dict[str, float], kind: Kind) -> list[RawReading]:
    """The readings with the network's measurements added where the device's kind has the
    metric and the codec gave none; a reading left with no metric at all is dropped (a
    status event of a kind without ``battery_pct``: presence only)."""
    wanted = {name: value for name, value in measured.items() if kind.metric(name) is not None}
    for raw in raws:
        for name, value in wanted.items():
            raw.metrics.setdefault(name, value)
    return [raw for raw in raws if raw.metrics]


def _stamp(raws: list[RawReading], delivery: Delivery) -> None:
    """Give the readings the link's time and sequence number where the codec gave none.
    The link's one sequence number goes to a single reading only: readings of one batch
    sharing it would be dropped as duplicates of the first."""
    for raw in raws:
        if raw.ts is None:
            raw.ts = delivery.link_ts_ms
    if len(raws) == 1 and raws[0].seq is None:
        raws[0].seq = delivery.link_seq


# Each time made once: the devices of one intake batch share their receive time, so
# 100,000 last-seen times hold a few thousand distinct ones.
@functools.lru_cache(maxsize=16_384)
def ms_to_dt(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
