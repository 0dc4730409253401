"""Batches are written to InfluxDB several at a time (``WRITES_IN_FLIGHT``) but acknowledged
in the order they were sealed, whichever write finishes first; the rules get the readings as
they arrive, before their batch is sealed, and each reading once."""

from __future__ import annotations

import asyncio
import time

import orjson

from cityiot.domain.settings import MqttTarget, Settings
from cityiot.ingest.batches import SEAL_IDLE_S, Batch
from cityiot.ingest.broker import BrokerLink, Delivery
from cityiot.ingest.pipeline import Ingest
from cityiot.ingest.storing import WRITES_IN_FLIGHT
from cityiot.ingest.validate import Reading
from cityiot.ingest.writequeue import WriteQueue
from tests.ingest.conftest import offline_ingest
from tests.waiting import until

# A safety net for what comes within a few turns of the loop; the tests count the turns.
WAIT_S = 10.0
# Turns of the loop a waiting task gets to show it does not go on (a count, not a time).
TURNS = 20


async def _turns(n: int = TURNS) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


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
    last = asyncio.create_task(ingest.storing.store(batches[-1]))
    await _turns()
    assert not last.done() and acked == []
    for batch in batches[:-1]:
        await ingest.storing.store(batch)
    await asyncio.wait_for(last, WAIT_S)
    assert acked == list(range(WRITES_IN_FLIGHT + 1))
    assert ingest.counters.batches == WRITES_IN_FLIGHT + 1


async def test_the_rules_get_a_batch_as_it_is_sealed() -> None:
    handed: list[str] = []
    ingest = _ingest([], handed)
    ingest.intake.batch = _batch(0)
    await ingest.intake.seal()
    assert handed == ["d0"] and len(ingest.sealed.queue) == 1  # before any write


class _Link:
    """Hands the intake the given deliveries once, then nothing; counts the intake's looks
    (one ``next_batch`` per turn of its loop)."""

    slice = 0  # no in-flight window (BrokerLink.slice, .full, .closing)
    full = False
    closing = False

    def __init__(self, deliveries: list[Delivery]) -> None:
        self.deliveries = deliveries
        self.looks = 0

    async def next_batch(self, timeout_s: float | None = None) -> list[Delivery]:
        self.looks += 1
        taken, self.deliveries = self.deliveries, []
        if not taken:
            await asyncio.sleep(min(timeout_s or 0.01, 0.01))
        return taken


async def test_the_rules_get_readings_before_their_batch_is_sealed() -> None:
    """With every writer busy (InfluxDB slow), readings still reach the rules at once."""
    handed: list[str] = []
    handed_at: list[int] = []  # the intake's look in which each slice was handed on
    ingest = offline_ingest()  # manhole-acme among its devices, JSON

    def to_rules(readings: list[Reading]) -> None:
        handed.extend(r.device_id for r in readings)
        handed_at.append(link.looks)

    ingest.on_readings = to_rules
    ingest.intake._flush_s = 60.0  # no batch is old enough to be sealed for its age
    now_ms = int(time.time() * 1000)
    ingest.link = link = _Link(  # type: ignore[assignment]
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
    ingest.sealed.writing = WRITES_IN_FLIGHT  # every writer busy: nothing is sealed
    intake = asyncio.create_task(ingest.intake.run([]))
    try:
        await until(lambda: len(handed) == 3, WAIT_S, "three batches handed", 0.002)
        assert handed == ["manhole-acme"] * 3 and handed_at == [1]  # in the look they came in
        assert (
            len(ingest.sealed.queue) == 0 and len(ingest.intake.batch.spans) == 3
        )  # not stored yet
        await ingest.intake.seal()  # sealing hands on only what the rules have not had
        assert handed == ["manhole-acme"] * 3 and len(ingest.sealed.queue) == 1
    finally:
        await ingest.stop()
        await asyncio.wait_for(intake, WAIT_S)


def _small(number: int, readings: int) -> Batch:
    """A batch sealed on time: ``readings`` messages of one reading each."""
    batch = Batch(number=number, started=1.0)
    for k in range(readings):
        mid = number * 100 + k
        delivery = Delivery(f"city/acme/d{mid}/telemetry", b"{}", mid, 1, 1)
        batch.spans.append((delivery, k, k + 1))
        batch.lines.append(b"manhole,device_id=d%d tilt_deg=1 %d\n" % (mid, mid))
        batch.readings.append(Reading(f"d{mid}", "manhole", mid, {"tilt_deg": 1.0}))
    batch.ruled = readings
    return batch


async def test_the_queue_is_bounded_by_readings_not_by_batches() -> None:
    """Small batches (sealed on time while InfluxDB is slow) do not stop the intake early."""
    queue = WriteQueue(max_lines=20, max_messages=100, merge_lines=10, merge_messages=10)
    for number in range(10):  # 10 batches of 2: the queue holds 20 readings
        await asyncio.wait_for(queue.put(_small(number, 2)), WAIT_S)
    assert not queue.has_room and queue.lines == 20
    put = asyncio.create_task(queue.put(_small(10, 2)))
    await _turns()
    assert not put.done()  # full: the intake waits (backpressure)
    assert [b.number for b in await queue.take()] == [0, 1, 2, 3, 4]  # 10 readings: one write
    await asyncio.wait_for(put, WAIT_S)
    assert queue.lines == 12 and len(queue) == 6


async def test_a_batch_bigger_than_the_bound_still_goes_into_an_empty_queue() -> None:
    queue = WriteQueue(max_lines=5, max_messages=5, merge_lines=5, merge_messages=5)
    await asyncio.wait_for(queue.put(_small(0, 8)), WAIT_S)
    assert [b.number for b in await queue.take()] == [0]  # and is written alone


async def test_merged_batches_are_written_and_acknowledged_as_one_in_sealing_order() -> None:
    acked: list[int] = []
    ingest = _ingest(acked, [])
    batches = [_small(n, 3) for n in range(4)]
    merged = Batch.merged(batches)
    assert merged.count == 4 and merged.number == 0 and len(merged.lines) == 12
    assert merged.lines == [line for batch in batches for line in batch.lines]
    # Each delivery still spans its own line, now at its place in the merged request.
    assert [(d.mid, first, last) for d, first, last in merged.spans] == [
        (n * 100 + k, n * 3 + k, n * 3 + k + 1) for n in range(4) for k in range(3)
    ]
    later = _small(4, 1)  # sealed after the four: waits for the merged write's turn
    later_stored = asyncio.create_task(ingest.storing.store(later))
    await _turns()
    assert not later_stored.done() and acked == []
    await ingest.storing.store(merged)
    await asyncio.wait_for(later_stored, WAIT_S)
    assert acked == [0, 1, 2, 100, 101, 102, 200, 201, 202, 300, 301, 302, 400]
    assert ingest.counters.batches == 5 and ingest.counters.stored_by_kind["manhole"] == 13


async def test_writers_take_what_piled_up_behind_a_slow_write_together() -> None:
    """The writer loop: batches queued while every writer was busy go out merged, acked once."""
    acked: list[int] = []
    ingest = _ingest(acked, [])
    for number in range(5):
        ingest.sealed.unstored += 1
        await ingest.sealed.queue.put(_small(number, 2))
    writer = asyncio.create_task(ingest.storing.writer())
    try:
        await asyncio.wait_for(ingest.sealed.queue.join(), WAIT_S)
    finally:
        writer.cancel()
    assert acked == [0, 1, 100, 101, 200, 201, 300, 301, 400, 401]
    assert ingest.sealed.unstored == 0 and ingest.counters.batches == 5 and ingest.idle


async def test_a_batch_waits_while_a_write_is_out_and_goes_once_nothing_is() -> None:
    """Sealed when nothing is being written (after SEAL_IDLE_S), not while a write is out:
    what arrives meanwhile goes to InfluxDB in one request, not one per idle writer."""
    ingest = offline_ingest()
    ingest.intake._flush_s = 60.0  # never sealed for its age here
    now_ms = int(time.time() * 1000)
    ingest.link = link = _Link(  # type: ignore[assignment]
        [
            Delivery(
                "city/acme/manhole-acme/telemetry",
                orjson.dumps({"ts": now_ms + n, "metrics": {"tilt_deg": 1.0}}),
                n + 1,
                1,
                1,
            )
            for n in range(3)
        ]
    )
    sealed_at: list[int] = []  # the intake's look in which each batch was sealed
    seal = ingest.intake.seal

    async def counted_seal() -> None:
        sealed_at.append(link.looks)
        await seal()

    ingest.intake.seal = counted_seal  # type: ignore[method-assign]
    ingest.sealed.writing = 1  # one write out
    intake = asyncio.create_task(ingest.intake.run([]))
    try:
        await until(lambda: len(ingest.intake.batch.spans) == 3, WAIT_S, "three spans", 0.002)
        await until(
            lambda: time.monotonic() - ingest.intake.batch.started >= SEAL_IDLE_S,
            WAIT_S,
            "the batch old enough to seal",
            0.002,
        )
        old_enough = link.looks
        # Each look after this one sees the batch SEAL_IDLE_S old, a writer idle, a write out.
        await until(lambda: link.looks >= old_enough + 3, WAIT_S, "three more looks", 0.002)
        assert sealed_at == [] and len(ingest.sealed.queue) == 0  # it waits
        ingest.sealed.writing = 0  # the write came back (it wakes no one: the intake looks again)
        came_back = link.looks
        await until(lambda: len(ingest.sealed.queue) == 1, WAIT_S, "one batch sealed", 0.002)
        assert sealed_at in ([came_back], [came_back + 1])  # the look under way, or the next
        assert [len(b.spans) for b in ingest.sealed.queue._batches] == [3]  # the three together
    finally:
        await ingest.stop()
        await asyncio.wait_for(intake, WAIT_S)
