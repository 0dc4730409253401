"""Every kind of bad input: a dead letter with a reason, nothing stored, the ingest goes on."""

from __future__ import annotations

import time

import orjson
import pytest
from sqlalchemy import select

from cityiot.storage.tables.deadletters import DeadLetter
from tests.ingest.conftest import Platform


def now_ms() -> int:
    return int(time.time() * 1000)


def reading(**metrics: object) -> bytes:
    return orjson.dumps({"ts": now_ms(), "metrics": metrics})


BIG = b'{"ts": 1, "metrics": {"tilt_deg": 1.0}, "pad": "' + b"x" * 300_000 + b'"}'

# (case, topic, payload, a phrase the reason must contain)
CASES = [
    ("invalid JSON", "city/acme/mh-1/telemetry", b'{"metrics": {"tilt_deg": 1.0', "invalid JSON"),
    ("not UTF-8", "city/acme/mh-1/telemetry", b"\xff\xfe\x00garbage", "invalid JSON"),
    (
        "number as string",
        "city/acme/mh-1/telemetry",
        reading(tilt_deg="2.5"),
        "must be a JSON number",
    ),
    ("flag as number", "city/acme/mh-1/telemetry", reading(cover_open=1), "must be true or false"),
    ("number as flag", "city/acme/mh-1/telemetry", reading(tilt_deg=True), "must be a JSON number"),
    ("unknown metric", "city/acme/mh-1/telemetry", reading(tilt=2.5), "unknown metric 'tilt'"),
    (
        "metric of another kind",
        "city/acme/mh-1/telemetry",
        reading(lux=3.0),
        "unknown metric 'lux'",
    ),
    ("out of range", "city/acme/wt-1/telemetry", reading(ph=15.2), "outside the physical range"),
    ("negative battery", "city/acme/pk-1/telemetry", reading(battery_pct=-1), "outside"),
    ("NaN literal", "city/acme/mh-1/telemetry", b'{"metrics": {"tilt_deg": NaN}}', "invalid JSON"),
    (
        "Infinity literal",
        "city/acme/mh-1/telemetry",
        b'{"metrics": {"tilt_deg": Infinity}}',
        "invalid JSON",
    ),
    (
        "overflowing number",
        "city/acme/mh-1/telemetry",
        b'{"metrics": {"tilt_deg": 1e999}}',
        "out of range",
    ),
    (
        "future ts",
        "city/acme/mh-1/telemetry",
        orjson.dumps({"ts": now_ms() + 3_600_000, "metrics": {"tilt_deg": 1.0}}),
        "in the future",
    ),
    (
        "ts in seconds",
        "city/acme/mh-1/telemetry",
        orjson.dumps({"ts": now_ms() // 1000, "metrics": {"tilt_deg": 1.0}}),
        "older than the retention",
    ),
    (
        "ts without offset",
        "city/acme/mh-1/telemetry",
        b'{"ts": "2025-11-23T08:00:00", "metrics": {"tilt_deg": 1.0}}',
        "no UTC offset",
    ),
    (
        "ts garbage",
        "city/acme/mh-1/telemetry",
        b'{"ts": "yesterday", "metrics": {"tilt_deg": 1.0}}',
        "not RFC 3339",
    ),
    ("ts as float", "city/acme/mh-1/telemetry", b'{"ts": 1.5, "metrics": {"tilt_deg": 1.0}}', "ts"),
    ("no metrics", "city/acme/mh-1/telemetry", b'{"ts": 1}', "missing 'metrics'"),
    ("empty metrics", "city/acme/mh-1/telemetry", b'{"metrics": {}}', "no metrics"),
    ("JSON array", "city/acme/mh-1/telemetry", b"[1, 2]", "access standard"),
    (
        "unknown device",
        "city/acme/mh-404/telemetry",
        reading(tilt_deg=1.0),
        "device mh-404 is not registered to vendor acme",
    ),
    (
        "device of another vendor",
        "city/oldco/mh-1/telemetry",
        reading(tilt_deg=1.0),
        "device mh-1 is not registered to vendor oldco",
    ),
    ("bad vendor id", "city/ac.me/mh-1/telemetry", reading(tilt_deg=1.0), "vendor id 'ac.me'"),
    ("bad device id", "city/acme/mh 1/telemetry", reading(tilt_deg=1.0), "device id 'mh 1'"),
    (
        "reserved vendor",
        "city/alerts/mh-1/telemetry",
        reading(tilt_deg=1.0),
        "device mh-1 is not registered to vendor alerts",
    ),
    ("oversize payload", "city/acme/mh-1/telemetry", BIG, "exceeds"),
    ("empty batch", "city/acme/mh-1/telemetry", b'{"readings": []}', "empty batch"),
    (
        "1,001-reading batch",
        "city/acme/mh-1/telemetry",
        orjson.dumps({"readings": [{"metrics": {"tilt_deg": 1.0}}] * 1001}),
        "at most 1000",
    ),
    (
        "batch mixed with single",
        "city/acme/mh-1/telemetry",
        b'{"metrics": {"tilt_deg": 1.0}, "readings": [{"metrics": {"tilt_deg": 1.0}}]}',
        "batch",
    ),
    ("bad status", "city/acme/mh-1/status", b'{"online": "yes"}', "status must be"),
    (
        "hexframe CRC",
        "city/oldco/mh-2/telemetry",
        b"A501010000000769224E800201000009C40200000000ABBB",
        "CRC mismatch",
    ),
    ("hexframe not hex", "city/oldco/mh-2/telemetry", reading(tilt_deg=1.0), "not ASCII hex"),
    (
        "hexframe wrong kind",
        "city/oldco/sl-2/telemetry",
        b"A501010000000769224E800201000009C40200000000ABBA",
        "the device is a streetlight",
    ),
]


@pytest.mark.parametrize(("case", "topic", "payload", "phrase"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_is_a_dead_letter_and_nothing_is_stored(
    platform: Platform, case: str, topic: str, payload: bytes, phrase: str
) -> None:
    platform.publish(topic, payload)
    # A good reading after it: the ingest is still running and stores it.
    platform.publish("city/acme/sl-1/telemetry", reading(power_on=True))
    await platform.settle(2)

    async with platform.sessions() as session:
        letters = (await session.scalars(select(DeadLetter))).all()
    assert len(letters) == 1, [letter.reason for letter in letters]
    letter = letters[0]
    assert phrase in letter.reason, letter.reason
    assert letter.topic == topic
    assert letter.payload == payload[:4096] and letter.payload_size == len(payload)
    assert letter.received_at.timestamp() == pytest.approx(time.time(), abs=30)

    stored = await platform.points("SELECT count(*) FROM /manhole|water|parking|hydrant/")
    assert stored == [], f"{case}: something was stored: {stored}"
    assert await platform.points('SELECT "power_on" FROM "streetlight"') != []
    assert platform.ingest.counters.rejected == 1


async def test_one_bad_reading_in_a_batch_is_refused_alone(platform: Platform) -> None:
    ts = now_ms() - 10_000
    batch = {
        "readings": [
            {"ts": ts, "metrics": {"ph": 7.1}},
            {"ts": ts + 1000, "metrics": {"ph": 99.0}},
            {"ts": ts + 2000, "metrics": {"ph": 7.3}},
        ]
    }
    platform.publish("city/acme/wt-1/telemetry", orjson.dumps(batch))
    await platform.settle(1)
    rows = await platform.points('SELECT "ph" FROM "water"')
    assert [r[1] for r in rows] == [7.1, 7.3]
    async with platform.sessions() as session:
        (letter,) = (await session.scalars(select(DeadLetter))).all()
    assert letter.reason.startswith("readings[1]: ph=99 is outside the physical range")
    assert orjson.loads(letter.payload)["metrics"] == {"ph": 99.0}


async def test_another_vendors_device_reads_like_a_missing_one(platform: Platform) -> None:
    """Issue 22, finding 10: oldco's dead letters must not tell it that mh-1 exists, nor
    that acme owns it."""
    platform.publish("city/oldco/mh-1/telemetry", reading(tilt_deg=1.0))  # acme's device
    platform.publish("city/oldco/mh-404/telemetry", reading(tilt_deg=1.0))  # no such device
    await platform.settle(2)
    async with platform.sessions() as session:
        theirs, missing = (await session.scalars(select(DeadLetter).order_by(DeadLetter.id))).all()
    assert theirs.reason.replace("mh-1", "ID") == missing.reason.replace("mh-404", "ID")
    assert "acme" not in theirs.reason
    assert theirs.reason.startswith("device mh-1 is not registered to vendor oldco")


@pytest.mark.usefixtures("live_model")
async def test_a_device_of_a_kind_this_ingest_does_not_know_is_a_dead_letter(
    platform: Platform,
) -> None:
    """The registry may hold a device of a kind this process has not taken in (a PUT whose
    refresh has not come yet): its reading is refused with a reason, not a decoding crash."""
    from cityiot.domain.catalogue import MODEL

    MODEL.kinds.pop("water")
    platform.publish("city/acme/wt-1/telemetry", reading(ph=7.1))
    platform.publish("city/acme/sl-1/telemetry", reading(power_on=True))
    await platform.settle(2)
    async with platform.sessions() as session:
        (letter,) = (await session.scalars(select(DeadLetter))).all()
    assert letter.reason.startswith("device wt-1 is of kind 'water', which this ingest does not")
    assert await platform.points('SELECT "power_on" FROM "streetlight"') != []
