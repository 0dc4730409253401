"""A vendor flooding the platform with messages for unknown device ids (issue 22, finding 6),
through the real broker, ingest, InfluxDB and registry: its dead letters are stored up to its
rate and counted beyond it, a summary says how many and why, every message is acknowledged,
and the other vendors' readings are all stored meanwhile."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from paho.mqtt.client import MQTTMessageInfo
from sqlalchemy import select

from cityiot.api.metrics import PlatformMetrics, counters_source
from cityiot.ingest.dead_letter_limit import OTHER_VENDORS
from cityiot.storage.tables.deadletters import DeadLetter
from tests.ingest.conftest import Platform

RATE_PER_S = 5.0
BURST = 50
FLOOD = 2000  # messages of one vendor, each for a device id nobody registered
VALID = 200  # readings of another vendor, sent meanwhile
SUMMARY_EVERY_S = 0.5
# Like the red team's: 4 KB payloads, so what is not stored is what would fill the disk.
FLOOD_PAYLOAD = orjson.dumps({"metrics": {"tilt_deg": 1.0}, "pad": "x" * 4000})


@pytest.fixture
def platform_settings() -> dict[str, Any]:
    return {"dead_letter_rate_per_s": RATE_PER_S, "dead_letter_rate_burst": BURST}


def publish_all(platform: Platform, messages: list[tuple[str, bytes]]) -> None:
    """Publish at QoS 1 without waiting for each PUBACK, then wait for all of them."""
    infos: list[MQTTMessageInfo] = [
        platform.publisher.publish(topic, payload, qos=1) for topic, payload in messages
    ]
    for info in infos:
        info.wait_for_publish(30)
        assert info.is_published()


async def letters(platform: Platform) -> list[DeadLetter]:
    async with platform.sessions() as session:
        return list(await session.scalars(select(DeadLetter).order_by(DeadLetter.id)))


def summaries_of(rows: list[DeadLetter], vendor: str | None) -> list[DeadLetter]:
    return [r for r in rows if r.device_id is None and r.vendor == vendor]


async def wait_for_summaries(platform: Platform, vendor: str | None, dropped: int) -> None:
    """Until the summary letters of ``vendor`` account for all ``dropped`` dead letters."""
    counted = 0
    deadline = time.monotonic() + 30
    while counted != dropped:
        assert time.monotonic() < deadline, f"summaries count {counted} of {dropped} dropped"
        await platform.wait_for(lambda: platform.ingest.idle)
        rows = summaries_of(await letters(platform), vendor)
        counted = sum(orjson.loads(r.payload)["not_stored"] for r in rows)
        assert counted <= dropped


async def test_a_flood_of_dead_letters_is_capped_per_vendor_and_valid_readings_all_stored(
    platform: Platform,
) -> None:
    ingest = platform.ingest
    ingest.dead_letter_limit.summary_every_s = SUMMARY_EVERY_S
    acked_before = ingest.link.stats.acked
    start_ms = int(time.time() * 1000) - VALID * 1000
    messages: list[tuple[str, bytes]] = []
    for n in range(FLOOD):
        messages.append((f"city/oldco/ghost-{n}/telemetry", FLOOD_PAYLOAD))
        if n % (FLOOD // VALID) == 0:
            ts = start_ms + len(messages) * 10  # a distinct time each: a point each
            messages.append(
                ("city/acme/mh-1/telemetry", orjson.dumps({"ts": ts, "metrics": {"tilt_deg": 2}}))
            )
    assert len(messages) == FLOOD + VALID

    started = time.monotonic()
    publish_all(platform, messages)
    await platform.settle(FLOOD + VALID, timeout_s=60)
    flooded_s = time.monotonic() - started

    # Every reading of the other vendor is stored.
    points = await platform.points('SELECT "tilt_deg" FROM "manhole" WHERE "vendor" = \'acme\'')
    assert len(points) == VALID

    # Every message was acknowledged on the connection it came on: none is left queued.
    assert ingest.link.stats.acked - acked_before == FLOOD + VALID
    assert ingest.link.stats.stale_acks == 0

    dropped = ingest.counters.dead_letters_dropped_by_vendor["oldco"]
    assert dropped > 0
    assert ingest.counters.rejected == FLOOD
    await wait_for_summaries(platform, "oldco", dropped)
    rows = await letters(platform)
    stored = [r for r in rows if r.device_id is not None]
    # What was not stored is what was counted; what was stored is within the allowance.
    assert len(stored) + dropped == FLOOD
    assert len(stored) <= BURST + RATE_PER_S * flooded_s + 1
    assert {r.vendor for r in stored} == {"oldco"}
    for row in stored:
        assert row.reason.startswith(f"device {row.device_id} is not registered to vendor oldco")

    summaries = summaries_of(rows, "oldco")
    assert summaries and all(r.topic == "city/oldco/#" for r in summaries)
    for summary in summaries:
        tally = orjson.loads(summary.payload)
        assert summary.reason.startswith(f"{tally['not_stored']} more dead letters of vendor oldco")
        assert "CITYIOT_DEAD_LETTER_RATE_PER_S" in summary.reason
        pattern = "device {device_id} is not registered to vendor oldco"
        assert pattern in summary.reason
        (reason, count), *_ = tally["reasons"].items()
        assert reason.startswith(pattern) and count == tally["not_stored"]

    # The other vendor lost nothing, and the drops are counted for Prometheus.
    assert set(ingest.counters.dead_letters_dropped_by_vendor) == {"oldco"}
    scrape = PlatformMetrics(lambda: {"ingest": counters_source(ingest.counters)})
    text = scrape.exposition("")[0].decode()
    sample = f'cityiot_ingest_dead_letters_dropped_by_vendor_total{{vendor="oldco"}} {dropped}.0'
    assert sample in text


async def test_unregistered_vendor_names_share_one_bucket(platform: Platform) -> None:
    ingest = platform.ingest
    ingest.dead_letter_limit.summary_every_s = SUMMARY_EVERY_S
    messages = [(f"city/nobody-{n}/mh-{n}/telemetry", b"{}") for n in range(BURST * 4)]
    publish_all(platform, messages)
    await platform.settle(len(messages), timeout_s=60)

    dropped = ingest.counters.dead_letters_dropped_by_vendor
    assert set(dropped) == {OTHER_VENDORS}  # one counter, however many names were sent
    await wait_for_summaries(platform, None, dropped[OTHER_VENDORS])
    rows = await letters(platform)
    stored = [r for r in rows if r.device_id is not None]
    assert len(stored) + dropped[OTHER_VENDORS] == len(messages)
    summary = summaries_of(rows, None)[0]
    assert summary.topic == "city/#"
    assert "more dead letters of unregistered vendors were not stored" in summary.reason
