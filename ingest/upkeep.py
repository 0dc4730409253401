"""Upkeep beside the stream: the kinds and the registry's device map refreshed, presence
swept and written to the registry, the SQLite write-ahead log checkpointed, the dead-letter
table kept within its caps, and dead-letter summaries made on time.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

from cityiot.domain.settings import Settings
from cityiot.ingest.batches import IngestCounters
from cityiot.ingest.intake import Intake, ms_to_dt
from cityiot.ingest.latest import FLUSH_PACE
from cityiot.storage.deadletters import DeadLetterCaps, DeadLetterIn, prune_dead_letters
from cityiot.storage.kinds import refresh_kinds
from cityiot.storage.registry import online_devices, record_links, record_presence
from cityiot.storage.wal import CHECKPOINT_EVERY_S, checkpoint
from cityiot.storage.writes import ROWS_PER_TURN

log = logging.getLogger("cityiot.ingest")

# Devices' last-seen times go to the registry this often (status changes at every round, a
# few s): a fleet of 100,000 reporting devices is 100,000 rows each time, and the write
# turns they take are the ones an alert's recording waits for.
SEEN_EVERY_S = 30.0
# The dead-letter table is pruned to its caps whenever a twentieth of them was stored since
# the last prune: the table stays within 5 % over, and the byte count is read that rarely.
PRUNE_SLICES = 20
PRUNE_RETRY_S = 5.0


class Upkeep:
    """The intake's devices and presence kept with the registry, and the registry kept
    small. ``store=False`` (a rules-only worker) writes no presence."""

    def __init__(
        self,
        settings: Settings,
        session_factory: Any,
        intake: Intake,
        counters: IngestCounters,
        *,
        store: bool,
    ) -> None:
        self.settings = settings
        self.sessions = session_factory
        self.intake = intake
        self.counters = counters
        self._stores = store
        self._dead_letter_caps = DeadLetterCaps(
            settings.dead_letter_max_rows, settings.dead_letter_max_bytes
        )
        self._unpruned = (0, 0)  # dead letters and payload bytes stored since the last prune
        self._prune_wanted = asyncio.Event()
        self._pruning = False

    @property
    def pruned(self) -> bool:
        """No prune of the dead-letter table is due or under way: the dead letters stored
        so far have been held against the caps."""
        return not self._pruning and not self._prune_wanted.is_set()

    def dead_letters_stored(self, letters: list[DeadLetterIn]) -> None:
        """Count ``letters`` stored: a prune is due once a slice of the table's caps has
        been stored since the last one."""
        rows, size = self._unpruned
        rows, size = rows + len(letters), size + sum(len(d.payload) for d in letters)
        self._unpruned = (rows, size)
        caps = self._dead_letter_caps
        if rows * PRUNE_SLICES >= caps.max_rows or size * PRUNE_SLICES >= caps.max_bytes:
            self._prune_wanted.set()

    async def resume_presence(self) -> None:
        """Take over the devices the registry holds online (of this worker's, with several):
        a restart writes no "came online" for each of them, and one that fell silent while no
        ingest ran goes offline 3 × its report interval from now."""
        now_ms = int(time.time() * 1000)
        resumed = 0
        devices, presence = self.intake.devices, self.intake.presence
        for device_id in await online_devices(self.sessions):
            device = devices.get(device_id)
            if device is not None and not device.decommissioned:
                resumed += presence.resume(device_id, now_ms, device.report_interval_s)
        log.info("event=presence_resumed online=%d", resumed)

    async def run(self) -> None:
        """Refresh the kinds and the device map, summarise dropped dead letters, sweep and
        write presence."""
        refresh_every = self.settings.registry_refresh_s
        last_refresh = last_presence = last_seen = time.monotonic()
        presence_s = 0.0
        while True:
            await asyncio.sleep(min(refresh_every, 1.0))
            now = time.monotonic()
            self.intake.summarise_dropped()
            if now - last_refresh >= refresh_every:
                last_refresh = now
                # Kinds first: a device of a new kind then meets its kind's validation table.
                await self.refresh_kinds()
                await self.refresh_codecs()
                try:
                    await self.intake.devices.refresh()
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
                presence_s += await self.flush_presence(with_seen)

    async def refresh_kinds(self) -> None:
        """Take kinds put through the API and changed kind files into the model; the
        validator recompiles its tables at the next reading (``MODEL.generation()``)."""
        try:
            await refresh_kinds(self.sessions)
        except Exception as exc:  # keep validating with the kinds in force
            log.warning("event=kinds_refresh_failed error=%s", exc)

    async def refresh_codecs(self) -> None:
        """Take changed codec files and codecs put through the API into the intake's book:
        the next message of their vendors is decoded by the new version."""
        await self.intake.codec_book.refresh_from(self.sessions)

    async def checkpoints(self) -> None:
        """The registry's write-ahead log (SQLite) copied back into the database every
        ``CHECKPOINT_EVERY_S``, so that it starts over instead of growing (:func:`checkpoint`)."""
        while True:
            await asyncio.sleep(CHECKPOINT_EVERY_S)
            try:
                await checkpoint(self.sessions)
            except Exception as exc:  # the next round tries again
                log.warning("event=checkpoint_failed error=%s", exc)

    async def prune(self) -> None:
        """Keep the dead-letter table within its caps (:func:`prune_dead_letters`): at start
        (it may hold more from before), then whenever :meth:`dead_letters_stored` asks."""
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
        """An offline point, in the open batch, for each device silent too long."""
        now_ms = int(time.time() * 1000)
        intake = self.intake
        for device_id in intake.presence.silent(now_ms):
            device = intake.devices.get(device_id)
            if device is not None:
                status = f"{device.status_key} online=false {now_ms}\n".encode()
                intake.open_batch().status_lines.append(status)

    async def flush_presence(self, with_seen: bool = True) -> float:
        """Write presence to the registry; returns the seconds it was busy doing so (the
        turns of the loop between its slices not counted)."""
        presence, devices = self.intake.presence, self.intake.devices
        seen, online, offline = presence.take_changes(with_seen)
        links = presence.take_links()  # few: a device changes its link seldom
        busy = 0.0
        if not self._stores or not (seen or online or offline or links):
            return busy
        try:
            # A slice at a time: 100,000 devices' times made at once would hold the event
            # loop (and every alert's next database round trip) for a tenth of a second.
            built = time.perf_counter()
            in_order, went_offline, went_online = devices.in_table_order(seen, offline, online)
            ids = iter(in_order)
            busy += time.perf_counter() - built
            while chunk := list(itertools.islice(ids, ROWS_PER_TURN)):
                built = time.perf_counter()
                times = {d: ms_to_dt(seen[d]) for d in chunk}
                busy += time.perf_counter() - built
                busy += await record_presence(self.sessions, times, offline=(), online=())
            busy += await record_presence(
                self.sessions, {}, offline=went_offline, online=went_online
            )
            busy += await record_links(self.sessions, links)
        except Exception as exc:  # presence is state, not data: the next round retries
            log.warning("event=presence_flush_failed error=%s", exc)
            presence.dirty_links = {**links, **presence.dirty_links}
            presence.dirty_seen.update(seen)
            presence.went_online |= online
            presence.went_offline |= offline
        return busy
