"""The ingest: MQTT deliveries → decoded, validated readings → InfluxDB, rejects → dead letters.

:class:`Ingest` wires the parts and owns their tasks:

- :class:`~cityiot.ingest.intake.Intake` takes batches of deliveries from the broker link,
  turns each into line-protocol points or dead letters, and seals a batch when it is big or
  old enough (or nothing is being written);
- :class:`~cityiot.ingest.batches.SealedBatches` hands a batch's readings to the rules as
  they arrive and queues the sealed batch, within a bound, for the writers;
- :class:`~cityiot.ingest.storing.Store` runs the writers (``WRITES_IN_FLIGHT`` of them):
  they store sealed batches (points to InfluxDB or the spool, dead letters to SQL) and only
  then acknowledge their deliveries to the broker (at-least-once), in sealing order;
- :class:`~cityiot.ingest.upkeep.Upkeep` keeps presence, the device map and the registry.

When storage lags, the queue fills, intake stops taking deliveries, the link stops
reading its socket, and the broker holds the rest: memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from cityiot.domain.settings import Settings
from cityiot.ingest.batches import (
    QUEUED_BATCHES,
    SEAL_IDLE_S,
    Batch,
    IngestCounters,
    ReadingsSink,
    SealedBatches,
)
from cityiot.ingest.broker import BrokerLink, Delivery, LinkStats
from cityiot.ingest.chirpstack import LINK, ChirpStackLink
from cityiot.ingest.codecs import Codec, CodecBook
from cityiot.ingest.dead_letter_limit import DeadLetterLimit
from cityiot.ingest.devices import DeviceMap
from cityiot.ingest.http_link import HttpLink
from cityiot.ingest.intake import SEQ_WINDOW, Intake
from cityiot.ingest.latest import LatestValues
from cityiot.ingest.presence import Presence
from cityiot.ingest.relay import RELAY_TOPIC
from cityiot.ingest.spool import Spool
from cityiot.ingest.storing import WRITES_IN_FLIGHT, Store
from cityiot.ingest.upkeep import PRUNE_SLICES, Upkeep
from cityiot.storage.influx import InfluxDB

# What importers take from here: the stage, and the names of its parts they tune or test.
__all__ = [
    "PRUNE_SLICES",
    "QUEUED_BATCHES",
    "SEAL_IDLE_S",
    "SEQ_WINDOW",
    "TOPICS",
    "WRITES_IN_FLIGHT",
    "Batch",
    "Ingest",
    "IngestCounters",
    "ReadingsSink",
]

log = logging.getLogger("cityiot.ingest")

# A retiring session is drained once nothing of it is unacknowledged and nothing has come
# for this long (s): a broker sends what it queued at once, within its window.
RETIRE_QUIET_S = 2.0
# While a stop waits for batches that cannot be stored yet, say so this often (s).
DRAIN_REPORT_S = 5.0

# The devices' own topics, and what an API apart from the ingest relays (ingest/relay.py).
TOPICS = ("city/+/+/telemetry", "city/+/+/status", RELAY_TOPIC)


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
        # The latest-value table is the storing ingest's to keep (a rules-only reader's not).
        self.latest = LatestValues(session_factory, settings.latest_flush_ms) if store else None
        # Where batches go while InfluxDB is down or slow (None: wait for it, holding them).
        self.spool = spool if store else None
        self.counters = IngestCounters()
        # The codecs in force (given: tests and the benchmark's, fixed).
        self.codec_book = CodecBook.of(settings)
        if codecs is None:
            self.codec_book.load()
        else:
            self.codec_book.codecs.update(codecs)
        self.sealed = SealedBatches(settings, on_readings)
        self.intake = Intake(
            settings,
            link,
            DeviceMap(session_factory),
            Presence(),
            self.codec_book,
            self.counters,
            self.sealed,
        )
        # Decodes one delivery into the open batch (no broker needed): the intake's own.
        self.handle: Callable[[Delivery, int], None] = self.intake.handle
        self.upkeep = Upkeep(settings, session_factory, self.intake, self.counters, store=store)
        self.storing = Store(
            settings,
            influx,
            session_factory,
            link,
            self.sealed,
            self.counters,
            store=store,
            spool=self.spool,
            latest=self.latest,
            dead_letter=self.intake.dead_letter,
            on_dead_letters=self.upkeep.dead_letters_stored,
        )
        # Messages posted to the API (POST /telemetry/…), answered once durable; None for a
        # rules-only worker, which stores nothing.
        self.http_link = HttpLink(self.intake, self.storing) if store else None
        # LoRaWAN through ChirpStack (CITYIOT_CHIRPSTACK_MQTT_URL): see link_chirpstack.
        self.chirpstack: ChirpStackLink | None = None
        # Sessions of the shared subscription being retired (add_members), and whether done.
        self._retiring: list[BrokerLink] = []
        self._on_retired: Callable[[list[BrokerLink]], Awaitable[None]] | None = None
        self.retired = False

    def link_chirpstack(self, uplinks: BrokerLink, commands: BrokerLink | None) -> ChirpStackLink:
        """Take ChirpStack's events from ``uplinks`` (acknowledged there once durable) and
        send LoRaWAN devices' commands, taken from ``commands``, down through it."""
        self.chirpstack = ChirpStackLink(
            self.intake, uplinks, commands, self.codec_book, self.sessions
        )
        self.storing.links[LINK] = uplinks
        self.intake.other_links.append(uplinks)
        self.intake.fit_windows()
        return self.chirpstack

    def add_members(
        self,
        members: list[BrokerLink],
        retiring: list[BrokerLink] | None = None,
        on_retired: Callable[[list[BrokerLink]], Awaitable[None]] | None = None,
    ) -> None:
        """Take deliveries from ``members`` too: more sessions of the ingest's shared
        subscription on the same broker (CITYIOT_MQTT_SESSIONS), each made ``into`` the
        ingest's link (their deliveries come with its own), numbered by its place
        (:attr:`BrokerLink.member`, from 1) and acknowledged on its own session.

        ``retiring`` sessions (after them in number) are no longer wanted: they take what the
        broker queued for them until they are drained (nothing unacknowledged, nothing
        received for ``RETIRE_QUIET_S``), then close, and ``on_retired`` gets them."""
        retiring = retiring or []
        for number, member in enumerate([*members, *retiring], len(self.intake.members) + 1):
            if member.member != number:
                raise ValueError(f"{member.client_id} is session {member.member}, not {number}")
            if member not in self.link.feeders:
                raise ValueError(f"{member.client_id} was not made into the ingest's link")
        self.intake.members += [*members, *retiring]
        self.storing.members += [*members, *retiring]
        self._retiring += retiring
        self._on_retired = on_retired
        self.intake.fit_windows()

    def _open_links(self) -> list[BrokerLink]:
        """The ingest's sessions of the devices' topics, but those retired."""
        return [self.link, *(link for link in self.intake.members if not link.closing)]

    async def _retire(self) -> None:
        """Close each retiring session once drained; then hand them to ``_on_retired``."""
        left = list(self._retiring)
        quiet: dict[str, tuple[int, float]] = {}
        while left:
            await asyncio.sleep(RETIRE_QUIET_S / 10)
            now = time.monotonic()
            for link in list(left):
                received, since = quiet.get(link.client_id, (-1, now))
                busy = not link.connected or link.unacked or link.waiting
                if busy or link.stats.received != received:
                    quiet[link.client_id] = (link.stats.received, now)
                elif now - since >= RETIRE_QUIET_S:
                    await link.close()
                    left.remove(link)
                    self.intake.fit_windows()  # its window no longer counts in a batch's bound
                    log.info("event=mqtt_session_drained client_id=%s", link.client_id)
        if self._on_retired is not None:
            await self._on_retired(self._retiring)
        self.retired = True

    def broker_stats(self) -> LinkStats:
        """The broker link's counters, summed over the ingest's sessions."""
        links = self._open_links()
        if len(links) == 1:
            return self.link.stats
        total = LinkStats()
        for field in dataclasses.fields(LinkStats):
            values = [getattr(link.stats, field.name) for link in links]
            if field.type in ("int", int):
                setattr(total, field.name, sum(values))
        total.connected = all(link.stats.connected for link in links)
        total.paused = any(link.stats.paused for link in links)
        total.last_error = next((lk.stats.last_error for lk in links if lk.stats.last_error), "")
        return total

    # The parts' shared objects, replaceable before run (tests, bench, the partitioner).

    @property
    def link(self) -> BrokerLink:
        return self.intake.link

    @link.setter
    def link(self, link: BrokerLink) -> None:
        self.intake.link = self.storing.link = link

    @property
    def on_readings(self) -> ReadingsSink | None:
        return self.sealed.on_readings

    @on_readings.setter
    def on_readings(self, sink: ReadingsSink | None) -> None:
        self.sealed.on_readings = sink

    @property
    def devices(self) -> DeviceMap:
        return self.intake.devices

    @devices.setter
    def devices(self, devices: DeviceMap) -> None:
        self.intake.devices = devices

    @property
    def presence(self) -> Presence:
        return self.intake.presence

    @presence.setter
    def presence(self, presence: Presence) -> None:
        self.intake.presence = presence

    @property
    def codecs(self) -> dict[str, Codec]:
        return self.codec_book.codecs

    @property
    def dead_letter_limit(self) -> DeadLetterLimit:
        return self.intake.dead_letter_limit

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Ingest:
        # The kinds put through the API before the start: their readings are not refused.
        await self.upkeep.refresh_kinds()
        await self.devices.refresh()
        log.info("event=ingest_starting devices=%d", len(self.devices))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """Run until :meth:`stop`; everything taken from the broker is stored before it returns."""
        if self.store:
            await self.upkeep.resume_presence()
        writers = [
            asyncio.create_task(self.storing.writer(), name=f"ingest-writer-{k}")
            for k in range(WRITES_IN_FLIGHT)
        ]
        upkeep = asyncio.create_task(self.upkeep.run(), name="ingest-upkeep")
        tasks = [*writers, upkeep]
        watched = list(writers)  # the intake stops when one of these dies
        if self._retiring:
            tasks.append(asyncio.create_task(self._retire(), name="ingest-retire-sessions"))
        if self.chirpstack is not None:
            await self.chirpstack.load()
            watched.append(asyncio.create_task(self.chirpstack.run(), name="ingest-chirpstack"))
            tasks.append(watched[-1])
        if self.latest is not None:
            tasks.append(asyncio.create_task(self.latest.run(), name="ingest-latest"))
        if self.spool is not None:
            tasks.append(asyncio.create_task(self.storing.replay(), name="ingest-replay"))
        if self.store:
            tasks.append(asyncio.create_task(self.upkeep.checkpoints(), name="ingest-checkpoints"))
            tasks.append(asyncio.create_task(self.upkeep.prune(), name="ingest-dead-letter-prune"))
        try:
            await self.intake.run(watched)
            await self.intake.seal()
            await self._drained()
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
            await self.upkeep.flush_presence()
            if self.latest is not None:
                await self.latest.flush()

    async def stop(self) -> None:
        self.intake.stop()

    async def _drained(self) -> None:
        """Wait until every sealed batch is stored; say every DRAIN_REPORT_S what is left,
        and how to stop at once, while it cannot be (InfluxDB and the spool refusing)."""
        drained = asyncio.ensure_future(self.sealed.queue.join())
        try:
            while True:
                done, _ = await asyncio.wait({drained}, timeout=DRAIN_REPORT_S)
                if done:
                    return
                log.warning(
                    "event=ingest_draining unstored_batches=%d spool_refusals=%d hint=stopping "
                    "once what was taken is stored; a second SIGTERM stops now, and the "
                    "broker sends what was not acknowledged again",
                    self.sealed.unstored,
                    self.counters.spool_refusals,
                )
        finally:
            drained.cancel()

    def depths(self) -> dict[str, float]:
        """Queue depths and state now, for metrics (gauges)."""
        links = self._open_links()
        return {
            "batches_unstored": float(self.sealed.unstored),
            "messages_in_batch": float(len(self.intake.batch.spans)),
            "deliveries_waiting": float(sum(link.waiting for link in links)),
            "broker_connected": float(all(link.stats.connected for link in links)),
            "intake_paused": float(any(link.stats.paused for link in links)),
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
            **(
                {
                    "chirpstack_connected": float(self.chirpstack.uplinks.stats.connected),
                    "chirpstack_waiting": float(self.chirpstack.uplinks.waiting),
                }
                if self.chirpstack is not None
                else {}
            ),
        }

    @property
    def idle(self) -> bool:
        """Nothing taken from the broker is waiting to be stored (and acknowledged)."""
        return not self.intake.batch.started and self.sealed.unstored == 0

    @property
    def pruned(self) -> bool:
        """No prune of the dead-letter table is due or under way: the dead letters stored
        so far have been held against the caps."""
        return self.upkeep.pruned
