"""Batches are written to InfluxDB several at a time (``WRITES_IN_FLIGHT``), but acknowledged
and handed to the rules in the order they were sealed, whichever write finishes first."""

from __future__ import annotations

import asyncio

from cityiot.settings import MqttTarget, Settings
from ingest.broker import BrokerLink
from ingest.pipeline import WRITES_IN_FLIGHT, Batch, Ingest
from ingest.validate import Reading


async def test_later_batches_wait_their_turn_to_be_handed_on() -> None:
    handed: list[str] = []
    link = BrokerLink(MqttTarget("mqtt://127.0.0.1:1"), "order", ["city/#"])  # never connected
    ingest = Ingest(
        Settings(), influx=None, session_factory=None, link=link, store=False,  # type: ignore[arg-type]
        on_readings=lambda readings: handed.extend(r.device_id for r in readings),
    )  # fmt: skip
    batches = []
    for number in range(WRITES_IN_FLIGHT + 1):
        batch = Batch(number=number, started=1.0)
        batch.readings.append(
            Reading(f"d{number}", "manhole", 1_763_856_000_000, {"tilt_deg": 1.0})
        )
        batches.append(batch)
    # The last sealed finishes first: it must not be handed on before the others.
    last = asyncio.create_task(ingest._store(batches[-1]))
    await asyncio.sleep(0.05)
    assert not last.done() and handed == []
    for batch in batches[:-1]:
        await ingest._store(batch)
    await asyncio.wait_for(last, 1)
    assert handed == [f"d{n}" for n in range(WRITES_IN_FLIGHT + 1)]
    assert ingest.counters.batches == WRITES_IN_FLIGHT + 1
