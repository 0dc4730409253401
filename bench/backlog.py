"""The backlog every system drains: the fleet's messages with fresh event times, and the same
messages as the ingest's line protocol."""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import orjson

from bench.load import STEP_MS, Message, messages, start_ms_for
from cityiot.simulators.behaviour import new_state, reading
from cityiot.simulators.fleet import Fleet, SimDevice

DIRECT_BATCH = 5000  # points per request of the influxdb column, as the ingest's batches
SAMPLE_DEVICES = 50  # fleet devices whose points give a cheap progress estimate


def line_protocol(backlog: Sequence[Message], devices: dict[str, SimDevice]) -> list[bytes]:
    """The backlog as the ingest writes it (its own decoder, validator and line encoder),
    in request bodies of ``DIRECT_BATCH`` points."""
    from cityiot.domain.settings import Settings
    from cityiot.ingest.broker import Delivery
    from cityiot.ingest.devices import DeviceMap, KnownDevice
    from cityiot.ingest.pipeline import Ingest
    from cityiot.storage.registry import DeviceEntry

    ingest = Ingest(Settings(), influx=None, session_factory=None, link=None)  # type: ignore[arg-type]
    ingest.devices = DeviceMap(None)
    now_ms = int(time.time() * 1000)
    bodies: list[bytes] = []
    for m in backlog:
        device_id = m.topic.split("/")[2]
        if device_id not in ingest.devices.devices:
            d = devices[device_id]
            entry = DeviceEntry(
                device_id=device_id,
                vendor=d.vendor,
                kind=d.kind,
                district=d.district,
                report_interval_s=d.report_interval_s,
                attributes={},
                decommissioned=False,
                updated_at=dt.datetime.now(dt.UTC),
            )
            ingest.devices.devices[device_id] = KnownDevice.from_entry(entry)
            ingest.devices.codecs[d.vendor] = "json"
        ingest.handle(Delivery(m.topic, m.payload, 0, 0, 0), now_ms)
        if len(ingest.intake.batch.lines) >= DIRECT_BATCH:
            bodies.append(b"".join(ingest.intake.batch.lines))
            ingest.intake.batch = type(ingest.intake.batch)()
    if ingest.intake.batch.lines:
        bodies.append(b"".join(ingest.intake.batch.lines))
    return bodies


def restamp(batch: list[Message], shift_ms: int) -> None:
    """Move every ``ts`` of ``batch`` by ``shift_ms``, in place (same devices, seqs and
    metrics; one copy of a large backlog in memory, not two)."""
    loads, dumps = orjson.loads, orjson.dumps
    for i in range(len(batch)):
        m = batch[i]
        body = loads(m.payload)
        body["ts"] += shift_ms
        batch[i] = Message(m.topic, dumps(body))


@dataclass(slots=True)
class Payloads:
    """The backlog every system receives (fleet messages, then one per sentinel), generated
    once with event times from ``start_ms``; :meth:`backlog` moves them to a fresh start."""

    fleet: Fleet
    sentinels: list[SimDevice]
    sample: list[SimDevice]
    messages: list[Message]
    start_ms: int  # of the messages as they are now
    span_ms: int
    sample_expected: int

    @classmethod
    def generate(cls, fleet: Fleet, count: int, sentinels: list[SimDevice]) -> Payloads:
        devices = len(fleet)
        start = start_ms_for(count, devices)
        body = messages(fleet, count - len(sentinels), start)
        rounds = -(-(count - len(sentinels)) // devices)
        end = start + rounds * STEP_MS
        rng = random.Random(7)
        for device in sentinels:
            metrics = reading(device, end, new_state(device), rng)
            payload = orjson.dumps({"ts": end, "seq": 0, "metrics": metrics})
            body.append(Message(device.telemetry_topic, payload))
        step = max(1, devices // SAMPLE_DEVICES)
        sample = list(fleet.devices[::step][:SAMPLE_DEVICES])
        topics = {d.telemetry_topic for d in sample}
        expected = sum(1 for m in body if m.topic in topics)
        return cls(fleet, sentinels, sample, body, start, end - start + STEP_MS, expected)

    def backlog(self) -> list[Message]:
        """The messages with event times ending about a minute ago and always after those of
        the previous backlog (no system sees a reading older than one it stored), in place:
        the list returned before changes too."""
        start = max(start_ms_for(len(self.messages), len(self.fleet)), self.start_ms + self.span_ms)
        restamp(self.messages, start - self.start_ms)
        self.start_ms = start
        return self.messages

    def warm_up(self) -> list[Message]:
        """One reading from each fleet device, a step before the current backlog's first
        (call :meth:`backlog` first): the throughput runs' warm-up."""
        return messages(self.fleet, len(self.fleet), self.start_ms - STEP_MS, seed=8)

    def stream(self, count: int) -> Iterator[Message]:
        """``count`` fleet messages with fresh event times, for background load."""
        if count <= len(self.messages) - len(self.sentinels):
            batch = self.messages[:count]
            restamp(batch, start_ms_for(count, len(self.fleet)) - self.start_ms)
            return iter(batch)
        return iter(messages(self.fleet, count, start_ms_for(count, len(self.fleet))))
