"""Batches are written to InfluxDB several at a time (``WRITES_IN_FLIGHT``) but acknowledged
in the order they were sealed, whichever write finishes first; the rules get the readings as
they arrive, before their batch is sealed, and each reading once."""

from __future__ import annotations

import asyncio
import time

import orjson

from cityiot.settings import MqttTarget, Settings
from ingest.broker import BrokerLink, Delivery
from ingest.pipeline import WRITES_IN_FLIGHT, Batch, Ingest
from ingest.validate import Reading
from tests.ingest.conftest import offline_ingest


def _ingest(acked: list[int], handed: list[str]) -> Ingest:
    link = BrokerLink(MqttTarget("mqtt://127.0.0.1:1"), "order", ["city/#"])  # never connected
    link.ack = lambda deliveries: acked.extend(d.mid for d in deliveries)  # type: ignore[method-assign]
    return Ingest(
        Settings(), influx=None, session_factory=None, link=link, store=False,  # type: ignore[arg-type]
        on_readings=lambda readings: handed.extend(r.device_id for r in readings),
    )  # fmt: skip


def _batch(number: int) -> Batch:
    batch = Batch(number=number, started=1.0)
    batch.spans.append((Delivery(f"city/acme/d{number}/telemetry", b"{}", number, 1, 1), 0, 1))
    batch.readings.append(Reading(f"d{number}", "manhole", 1_763_856_000_000, {"tilt_deg": 1.0}))
    return batch


async def test_later_batches_wait_their_turn_to_be_acknowledged() -> None:
    acked: list[int] = []
    ingest = _ingest(acked, [])
    batches = [_batch(n) for n in range(WRITES_IN_FLIGHT + 1)]
    # The last sealed finishes first: it must not be acknowledged before the others.
    last = asyncio.create_task(ingest._store(batches[-1]))
    await asyncio.sleep(0.05)
    assert not last.done() and acked == []
    for batch in batches[:-1]:
        await ingest._store(batch)
    await asyncio.wait_for(last, 1)
    assert acked == list(range(WRITES_IN_FLIGHT + 1))
    assert ingest.counters.batches == WRITES_IN_FLIGHT + 1


async def test_the_rules_get_a_batch_as_it_is_sealed() -> None:
    handed: list[str] = []
    ingest = _ingest([], handed)
    ingest._batch = _batch(0)
    await ingest._seal()
    assert handed == ["d0"] and ingest._sealed.qsize() == 1  # before any write


class _Link:
    """Hands the intake the given deliveries once, then nothing."""

    def __init__(self, deliveries: list[Delivery]) -> None:
        self.deliveries = deliveries

    async def next_batch(self, timeout_s: float | None = None) -> list[Delivery]:
        taken, self.deliveries = self.deliveries, []
        if not taken:
            await asyncio.sleep(min(timeout_s or 0.01, 0.01))
        return taken


async def test_the_rules_get_readings_before_their_batch_is_sealed() -> None:
    """With every writer busy (InfluxDB slow), readings still reach the rules at once."""
    handed: list[str] = []
    ingest = offline_ingest()  # manhole-acme among its devices, JSON
    ingest.on_readings = lambda readings: handed.extend(r.device_id for r in readings)
    ingest._flush_s = 60.0  # no batch is old enough to be sealed for its age
    now_ms = int(time.time() * 1000)
    ingest.link = _Link(  # type: ignore[assignment]
        [
            Delivery(
                "city/acme/manhole-acme/telemetry",
                orjson.dumps({"ts": now_ms + n, "metrics": {"tilt_deg": 1.0 + n}}),
                n + 1,
                1,
                1,
            )
            for n in range(3)
        ]
    )
    ingest._unstored = WRITES_IN_FLIGHT  # every writer busy: nothing is sealed
    intake = asyncio.create_task(ingest._intake([]))
    try:
        for _ in range(100):
            if len(handed) == 3:
                break
            await asyncio.sleep(0.01)
        assert handed == ["manhole-acme"] * 3
        assert ingest._sealed.qsize() == 0 and len(ingest._batch.spans) == 3  # not stored yet
        await ingest._seal()  # sealing hands on only what the rules have not had
        assert handed == ["manhole-acme"] * 3 and ingest._sealed.qsize() == 1
    finally:
        await ingest.stop()
        await asyncio.wait_for(intake, 1)
