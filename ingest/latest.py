"""The latest-value table: the newest value and time of each metric of each device.

The ingest merges every stored batch into an in-memory map (a dict update per reading) and
writes the devices that changed to ``latest_readings`` every ``latest_flush_ms`` in upserts
of ``ROWS_PER_TURN`` (200) rows, so ``GET /devices/{id}/latest`` answers from SQL, also from
an API running as its own process, without asking InfluxDB.

Per metric the newer time wins: a reading uploaded late never hides a newer value. The
first time a device is flushed after a restart its stored row is merged in, so metrics it
sent before the restart are kept.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import select

from cityiot.ingest.validate import Reading
from cityiot.storage.engine import dialect_of
from cityiot.storage.tables.registry import LatestReading
from cityiot.storage.utc import utcnow
from cityiot.storage.writes import ROWS_PER_TURN, driver_time, write_rows

log = logging.getLogger("cityiot.ingest")

FLUSH_PACE = 9  # wait at least this many times the last flush's duration before the next
FLUSH_MAX_DEVICES = 10_000  # devices written per flush, at most
_LOAD_CHUNK = 500  # ids per SELECT … IN (…), well under SQLite's variable limit


@dataclass(slots=True)
class _Latest:
    """One device's newest value and its time, per metric."""

    values: dict[str, float | bool | str] = field(default_factory=dict)
    times: dict[str, int] = field(default_factory=dict)
    newest: int = -1  # the newest time of any metric

    def take(self, metrics: dict[str, float | bool | str], ts: int) -> None:
        if ts >= self.newest:  # in order, as nearly always: two dict updates, in C
            self.values.update(metrics)
            self.times.update(dict.fromkeys(metrics, ts))
            self.newest = ts
            return
        times = self.times
        for name, value in metrics.items():
            # Equal times: the later arrival wins, as InfluxDB keeps the last write.
            if times.get(name, -1) <= ts:
                self.values[name] = value
                times[name] = ts


class LatestValues:
    """The newest value of each metric per device, written to ``latest_readings``.

    ``merge()`` is the hot path (called with every stored batch); ``run()`` flushes what
    changed every ``flush_ms``, or less often when a flush is costly (a flush may take at
    most a tenth of the time: at 100,000 devices reporting in a burst a flush takes
    seconds, and writing it twice a second would starve the ingest); ``flush()`` writes
    now. A failed flush keeps its devices marked changed, so the next round writes them;
    it never raises.
    """

    def __init__(self, session_factory: Any, flush_ms: int = 500) -> None:
        self.sessions = session_factory
        self.flush_s = flush_ms / 1000
        self.devices: dict[str, _Latest] = {}
        self._changed: set[str] = set()
        self._loaded: set[str] = set()  # devices whose stored row has been merged in
        self.flushes = 0
        self.failures = 0
        self.last_flush_s = 0.0

    def merge(self, readings: Iterable[Reading]) -> None:
        """Take readings into the map; per metric, the value with the newer time wins."""
        devices = self.devices
        changed = self._changed
        for reading in readings:
            device_id = reading.device_id
            current = devices.get(device_id)
            if current is None:
                current = devices[device_id] = _Latest()
            current.take(reading.metrics, reading.ts_ms)
            changed.add(device_id)

    @property
    def pending(self) -> int:
        """Devices changed since the last successful flush."""
        return len(self._changed)

    async def run(self) -> None:
        """Flush every ``flush_s`` (or nine flushes' time, when longer) until cancelled."""
        while True:
            await asyncio.sleep(max(self.flush_s, FLUSH_PACE * self.last_flush_s))
            await self.flush()

    async def flush(self) -> int:
        """Write the changed devices, ``ROWS_PER_TURN`` rows per upsert and transaction;
        returns how many (0 also on failure)."""
        if not self._changed:
            return 0
        if len(self._changed) <= FLUSH_MAX_DEVICES:
            changed, self._changed = self._changed, set()
        else:  # a burst of new devices: the rest goes next round, no multi-second stall
            changed = set(itertools.islice(self._changed, FLUSH_MAX_DEVICES))
            self._changed -= changed
        started = time.perf_counter()
        try:
            unloaded = sorted(d for d in changed if d not in self._loaded)
            if unloaded:
                async with self.sessions() as session:
                    await self._merge_stored(session, unloaded)
                self._loaded.update(unloaded)
            # The cost that paces the next flush: the turns of the loop between the slices
            # below, where the readings that came meanwhile go first, are not this flush's.
            # (Reading the stored rows, once per device after a start, is counted whole.)
            busy = time.perf_counter() - started
            # One transaction per slice, each in its own write turn: an alert waits for
            # one slice at most, not for the whole flush (SQLite has one writer at a time).
            # Rows are made a slice at a time too: 10,000 at once would hold the event
            # loop (and every alert's next database round trip) for tens of ms.
            ids = list(changed)
            dialect = dialect_of(self.sessions)
            for start in range(0, len(ids), ROWS_PER_TURN):
                built = time.perf_counter()
                now = driver_time(utcnow(), dialect)
                rows = [(*self._row(d), now) for d in ids[start : start + ROWS_PER_TURN]]
                busy += time.perf_counter() - built
                busy += await write_rows(self.sessions, _UPSERT, rows)
        except BaseException as exc:
            self._changed |= changed  # written next round (or by the final flush when cancelled)
            if not isinstance(exc, Exception):
                raise
            # The table is a cache: keep ingesting, retry next round.
            self.failures += 1
            log.warning("event=latest_flush_failed devices=%d error=%s", len(changed), exc)
            return 0
        self.flushes += 1
        self.last_flush_s = busy
        log.debug("event=latest_flushed devices=%d ms=%.1f", len(ids), self.last_flush_s * 1000)
        return len(ids)

    async def _merge_stored(self, session: Any, device_ids: list[str]) -> None:
        for start in range(0, len(device_ids), _LOAD_CHUNK):
            chunk = device_ids[start : start + _LOAD_CHUNK]
            stored = await session.execute(
                select(LatestReading.device_id, LatestReading.metrics).where(
                    LatestReading.device_id.in_(chunk)
                )
            )
            for device_id, metrics in stored:
                current = self.devices.get(device_id)
                if current is None:
                    current = self.devices[device_id] = _Latest()
                for name, pair in (metrics or {}).items():
                    if not (isinstance(pair, list) and len(pair) == 2):
                        continue  # not written by this class: drop rather than fail forever
                    value, ts = pair[0], int(pair[1])
                    if current.times.get(name, -1) < ts:  # what came since the restart wins
                        current.values[name] = value
                        current.times[name] = ts
                        current.newest = max(current.newest, ts)

    def _row(self, device_id: str) -> tuple[str, int, str]:
        """(device_id, ts_ms, metrics as JSON text) of the device's row."""
        latest = self.devices[device_id]
        times = latest.times
        return (
            device_id,
            max(times.values()),
            orjson.dumps(
                {name: [value, times[name]] for name, value in latest.values.items()}
            ).decode(),
        )


# Upsert of one row of ``latest_readings`` (the same on SQLite and PostgreSQL).
_UPSERT = (
    "INSERT INTO latest_readings (device_id, ts_ms, metrics, updated_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (device_id) DO UPDATE SET ts_ms = excluded.ts_ms, "
    "metrics = excluded.metrics, updated_at = excluded.updated_at"
)
