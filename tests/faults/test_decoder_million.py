"""A million hypothesis-generated payloads through the ingest's decoder, not one exception.

10^6 separate hypothesis examples would take hours, so each of 1,000 examples draws a few
dozen *templates* — (topic, payload) pairs of every shape the decoder meets: random bytes,
access-standard JSON with wrong types, out-of-range and huge numbers, NaN, nested junk,
batches, and legacy hex frames (valid, corrupted, wrong kind, wrong length) — and a seed.
The seed expands the templates into 1,000 payloads by mutation (byte flips, truncation,
splices, number swaps, foreign topics), so hypothesis still chooses, and on a failure
shrinks, what the million are made of. One :class:`Ingest` decodes them all, offline
(``handle`` only: no broker, no storage), its batch cleared between examples.

Each payload must yield points, a dead letter, a dropped duplicate or a status change
(or, on a status topic, a silent "nothing changed"), and the ingest's counters must
add up. The million come out as roughly a tenth stored points, most of the rest dead
letters, and some dropped duplicates and status messages (the test prints its tally).
"""

from __future__ import annotations

import binascii
import datetime as dt
import functools
import json
import random
import re
import struct
import time
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cityiot.domain.catalogue import KINDS
from cityiot.ingest.batches import Batch
from cityiot.ingest.broker import Delivery
from cityiot.ingest.codecs.hexframe import KIND_CODES
from cityiot.ingest.codecs.hexframe import encode as encode_frame
from cityiot.ingest.pipeline import Ingest
from tests.ingest.conftest import OFFLINE_VENDORS, offline_ingest

EXAMPLES = 1000
PAYLOADS_PER_EXAMPLE = 1000


def topic(kind: str, vendor: str, channel: str = "telemetry") -> str:
    return f"city/{vendor}/{kind}-{vendor}/{channel}"


JUNK_TOPICS = [
    "city/x/y/telemetry",
    "city/acme/a b/status",
    "city/oldco/manhole-acme/telemetry",  # a device under another vendor's name
    "city/acme/manhole-acme",
    "city/acme/manhole-acme/telemetry/extra",
    "",
    "city//manhole-acme/telemetry",
]
ALL_TOPICS = [
    topic(k, v, ch) for k in KINDS for v in OFFLINE_VENDORS for ch in ("telemetry", "status")
] + JUNK_TOPICS

# -- what hypothesis draws --------------------------------------------------------------

NOW_MS = int(time.time() * 1000)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: huge integers too
    | st.floats()  # NaN and ±Infinity: the stdlib encoder writes them as literals
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
timestamps = st.one_of(
    st.integers(NOW_MS - 86_400_000, NOW_MS + 60_000),  # plausible: accepted
    st.integers(),  # seconds, microseconds, negative, huge
    st.datetimes(timezones=st.just(dt.UTC)).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),  # no UTC offset
    json_values,
)


def metric_value(kind: str, name: str) -> st.SearchStrategy[object]:
    metric = next(m for m in KINDS[kind].metrics if m.name == name)
    if metric.type == "bool":
        return st.booleans() | json_scalars
    if metric.type == "enum":
        return st.sampled_from(metric.values) | json_scalars
    assert metric.low is not None and metric.high is not None
    in_range = st.floats(metric.low, metric.high, allow_nan=False)
    return st.one_of(in_range, in_range, st.integers(), st.floats(), json_values)


def metrics_of(kind: str) -> st.SearchStrategy[dict[str, object]]:
    names = [m.name for m in KINDS[kind].metrics]
    known = st.sampled_from(names).flatmap(lambda n: st.tuples(st.just(n), metric_value(kind, n)))
    junk = st.tuples(st.text(max_size=12), json_values)
    return st.lists(known | junk, max_size=6).map(dict)


def reading_of(kind: str) -> st.SearchStrategy[dict[str, object]]:
    return st.fixed_dictionaries(
        {"metrics": metrics_of(kind)},
        optional={"ts": timestamps, "seq": st.integers() | json_scalars, "extra": json_values},
    )


def valid_metrics(
    kind: str, ceiling: float = float("inf")
) -> st.SearchStrategy[dict[str, float | bool | str]]:
    """Metrics the catalogue accepts: known names, values in range (and under ``ceiling``)."""
    values: dict[str, st.SearchStrategy[float | bool | str]] = {}
    for m in KINDS[kind].metrics:
        if m.type == "bool":
            values[m.name] = st.booleans()
        elif m.type == "enum":
            values[m.name] = st.sampled_from(m.values)
        else:
            assert m.low is not None and m.high is not None
            values[m.name] = st.floats(m.low, min(m.high, ceiling), allow_nan=False)
    return st.fixed_dictionaries({}, optional=values).filter(bool)


def valid_json(kind: str) -> st.SearchStrategy[bytes]:
    """Readings that are stored (small seqs repeat: some are dropped as duplicates)."""
    reading = st.fixed_dictionaries(
        {"metrics": valid_metrics(kind)},
        optional={"ts": st.integers(NOW_MS - 86_400_000, NOW_MS), "seq": st.integers(0, 20)},
    )
    document = reading | st.fixed_dictionaries(
        {"readings": st.lists(reading, min_size=1, max_size=5)}
    )
    return document.map(lambda d: json.dumps(d).encode())


def valid_frame(kind: str) -> st.SearchStrategy[bytes]:
    return st.builds(
        encode_frame,
        st.just(kind),
        valid_metrics(kind, ceiling=2_000_000),  # a frame carries value × 1000 in an int32
        st.integers(NOW_MS - 86_400_000, NOW_MS) | st.none(),
        st.integers(0, 20),
    )


def json_payload(kind: str) -> st.SearchStrategy[bytes]:
    document = st.one_of(
        reading_of(kind),
        st.fixed_dictionaries({"readings": st.lists(reading_of(kind), max_size=4)}),
        st.fixed_dictionaries(
            {"readings": json_values}, optional={"metrics": json_values, "ts": json_values}
        ),
        json_values,
    )
    return document.map(lambda d: json.dumps(d).encode())


def frame_payload(kind: str) -> st.SearchStrategy[bytes]:
    """Legacy hex frames: mostly well formed (CRC right), with any header and items."""
    head = st.tuples(
        st.sampled_from([0xA5, 0xA5, 0xA5, 0x00, 0xFF]),
        st.sampled_from([1, 1, 1, 0, 2]),
        st.sampled_from([KIND_CODES[kind]] * 3 + [0, 6, 255, *KIND_CODES.values()]),
        st.integers(0, 2**32 - 1),
        st.one_of(st.integers(0, 2**32 - 1), st.just(NOW_MS // 1000), st.just(0)),
    )
    items = st.lists(
        st.tuples(
            st.integers(0, 12) | st.integers(0, 255),
            st.sampled_from([0, 1000]) | st.integers(-(2**31), 2**31 - 1),
        ),
        max_size=10,
    )
    return st.builds(
        _frame,
        head,
        items,
        st.integers(-2, 2),  # claimed item count minus the real one
        st.booleans() | st.just(True),  # CRC right
        st.booleans(),  # lower-case hex
    )


def _frame(
    head: tuple[int, int, int, int, int],
    items: list[tuple[int, int]],
    count_error: int,
    crc_right: bool,
    lower: bool,
) -> bytes:
    n = max(0, min(255, len(items) + count_error))
    body = bytearray(struct.pack(">BBBIIB", *head, n))
    for code, raw in items:
        body += struct.pack(">Bi", code, raw)
    crc = binascii.crc_hqx(bytes(body), 0) ^ (0 if crc_right else 0x5A5A)
    body += struct.pack(">H", crc)
    text = body.hex()
    return (text if lower else text.upper()).encode()


@functools.cache
def template_of(kind: str) -> st.SearchStrategy[tuple[str, bytes]]:
    """One kind's templates. Built once per kind: ``flatmap`` calls it for every template
    drawn, and building and validating these strategies anew each time cost as much as
    decoding the million payloads (the drawn templates are the same either way)."""
    return st.one_of(
        st.tuples(st.just(topic(kind, "acme")), valid_json(kind)),
        st.tuples(st.just(topic(kind, "oldco")), valid_frame(kind)),
        st.tuples(st.just(topic(kind, "acme")), json_payload(kind)),
        st.tuples(st.just(topic(kind, "oldco")), frame_payload(kind)),
        st.tuples(st.just(topic(kind, "oldco")), json_payload(kind)),  # JSON to a frame vendor
        st.tuples(
            st.sampled_from([topic(kind, v, "status") for v in OFFLINE_VENDORS]),
            st.one_of(
                st.sampled_from([b'{"online": true}', b'{"online": false}']),
                json_values.map(lambda d: json.dumps({"online": d}).encode()),
                st.binary(max_size=40),
            ),
        ),
        st.tuples(st.sampled_from(ALL_TOPICS) | st.text(max_size=40), st.binary(max_size=300)),
    )


templates = st.lists(st.sampled_from(sorted(KINDS)).flatmap(template_of), min_size=1, max_size=30)

# -- mutation: turning a few dozen templates into a thousand payloads ---------------------

_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_SWAPS = [
    b"1e309",
    b"-1e309",
    b"99999999999999999999999999999999",
    b"-0",
    b"NaN",
    b"null",
    b'"1"',
    b"[]",
    b"{}",
    b"true",
    b"0.0000001",
    b"-273.15",
    b"4294967296",
]


def mutate(
    rng: random.Random, pool: list[tuple[str, bytes]], item: tuple[str, bytes]
) -> tuple[str, bytes]:
    name, payload = item
    op = rng.randrange(10)
    if op == 0 and payload:  # flip a byte
        i = rng.randrange(len(payload))
        payload = payload[:i] + bytes([rng.randrange(256)]) + payload[i + 1 :]
    elif op == 1:  # truncate
        payload = payload[: rng.randrange(len(payload) + 1)]
    elif op == 2:  # insert junk
        i = rng.randrange(len(payload) + 1)
        payload = payload[:i] + rng.randbytes(rng.randrange(1, 8)) + payload[i:]
    elif op == 3:  # splice with another template
        other = rng.choice(pool)[1]
        payload = (
            payload[: rng.randrange(len(payload) + 1)] + other[rng.randrange(len(other) + 1) :]
        )
    elif op == 4:  # swap one number for a strange one
        numbers = list(_NUMBER.finditer(payload))
        if numbers:
            m = rng.choice(numbers)
            payload = payload[: m.start()] + rng.choice(_SWAPS) + payload[m.end() :]
    elif op == 5:  # the same payload on another topic
        name = rng.choice(ALL_TOPICS)
    elif op == 6:  # repeat a region (deep nesting, long strings, long batches)
        i = rng.randrange(len(payload) + 1)
        j = rng.randrange(i, len(payload) + 1)
        payload = payload[:i] + payload[i:j] * rng.randrange(2, 20) + payload[j:]
    elif op == 7:  # wrap in a batch, or in junk brackets
        payload = rng.choice([b'{"readings": [%s]}', b"[%s]", b'{"metrics": %s}']) % payload
    elif op == 8:  # odd-length or non-hex text for a frame vendor
        payload = payload[:-1] if payload else b"G"
    return name, payload


# -- the test ---------------------------------------------------------------------------


@dataclass
class Tally:
    examples: int = 0
    payloads: int = 0
    points: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    status_changes: int = 0
    status_quiet: int = 0  # a valid status that changed nothing


def feed(ingest: Ingest, tally: Tally, delivery: Delivery, received_ms: int) -> None:
    batch = ingest.intake.batch
    lines, dead, status = len(batch.lines), len(batch.dead_letters), len(batch.status_lines)
    duplicates = ingest.counters.duplicates
    ingest.handle(delivery, received_ms)  # must not raise, whatever the payload
    added_lines = len(batch.lines) - lines
    added_dead = len(batch.dead_letters) - dead
    added_status = len(batch.status_lines) - status
    added_duplicates = ingest.counters.duplicates - duplicates
    for line in batch.lines[lines:]:
        assert line.count(b"\n") == 1 and line.endswith(b"\n"), (delivery, line)
    for letter in batch.dead_letters[dead:]:
        # The ingest's last-resort guard turns a decoder crash into this dead letter: none
        # may be needed — every bad payload must be refused with its own reason.
        assert not letter.reason.startswith("the platform could not decode"), (delivery, letter)
    tally.payloads += 1
    tally.points += added_lines
    tally.dead_letters += added_dead
    tally.duplicates += added_duplicates
    tally.status_changes += added_status
    if not (added_lines or added_dead or added_duplicates or added_status):
        assert delivery.topic.endswith("/status"), f"neither points nor a dead letter: {delivery}"
        tally.status_quiet += 1


@pytest.mark.slow
def test_a_million_payloads_give_points_or_dead_letters() -> None:
    ingest = offline_ingest()
    tally = Tally()
    start = ingest.counters.messages, ingest.counters.readings, ingest.counters.rejected

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(templates, st.integers(0, 2**32 - 1))
    def feed_an_example(pool: list[tuple[str, bytes]], seed: int) -> None:
        rng = random.Random(seed)
        ingest.intake.batch = Batch()
        tally.examples += 1
        received_ms = int(time.time() * 1000)
        for mid in range(PAYLOADS_PER_EXAMPLE):
            item = rng.choice(pool)
            for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
                item = mutate(rng, pool, item)
            feed(ingest, tally, Delivery(item[0], item[1], mid + 1, 1, 0), received_ms)

    started = time.perf_counter()
    feed_an_example()
    took = time.perf_counter() - started
    counters = ingest.counters
    print(f"{tally} in {took:.1f} s")
    assert tally.examples == EXAMPLES
    assert tally.payloads >= 1_000_000
    assert counters.messages - start[0] == tally.payloads
    assert counters.readings - start[1] == tally.points
    assert counters.rejected - start[2] == tally.dead_letters
    # Every kind of outcome was reached: the million were not all the same rejection.
    assert tally.points and tally.dead_letters and tally.duplicates and tally.status_changes
