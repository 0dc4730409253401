"""The codec section of ``cityiot bench`` (issue 25): one ingest decoding a vendor's binary
frames with its TS013 JavaScript decoder in the sandbox, against the JSON path in the same
run, and beside a device whose codec never returns.

The section's fleet: ``--codec-devices`` manholes of a JSON vendor and as many of a frame
vendor (codec ``manhole-frame``, ``bench/codec_files/``), ``SENTINELS`` more of each, and one
manhole of a vendor whose decoder loops forever (``endless-loop``). Both loads carry the same
readings (the simulator's, as the frame quantises them), one vendor's as 16-byte frames, the
other's as the access standard's JSON: their drains differ only in the decoding.

One ``cityiot ingest --rules`` (``CITYIOT_CODECS_PATH`` = the codec files) runs the whole
section, warmed up (every device has reported once). Each round drains, as the throughput
columns do (SIGSTOP, the backlog queued at QoS 1, SIGCONT = t0, until InfluxDB holds it): the
JSON backlog, the frame backlog, and the frame backlog with the looping device's messages
interleaved one every (frame rate ÷ 10) messages, so that they reach the ingest at 10 per
second of its drain (published live they would wait behind the backlog in the broker's
queue). Rounds run the three in one order and its reverse in turn; a round's drop compares
its two frame drains, and each figure is the median of each order's rounds, averaged over
the two orders (bench/codec_result.py ``balanced``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import os
import random
import signal
import sqlite3
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import reduce
from operator import xor
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.codec_result import (
    FRAMES,
    GOAL_RATE,
    HOSTILE,
    HOSTILE_PER_S,
    JSON,
    CallCost,
    CodecResult,
    Drain,
    order_of,
)
from bench.launch import ingest_workers
from bench.load import Message, Publisher
from bench.options import BenchError, BenchOptions
from bench.registry import Registry, sqlite_url
from bench.services import Services
from bench.stored import COUNT_POLL_S, counts, wait_stored
from bench.systems import SYSTEM_ERRORS, SystemSpec
from cityiot.simulators.behaviour import new_state, reading
from cityiot.simulators.fleet import Fleet, SimDevice, SimVendor

CODEC_FILES = Path(__file__).resolve().parent / "codec_files"
DECODING_CODEC = "manhole-frame"
HOSTILE_CODEC = "endless-loop"
JSON_VENDOR, FRAME_VENDOR, HOSTILE_VENDOR = "bench-json", "bench-frame", "bench-hostile"
KIND = "manhole"
COUNT_FIELD = "tilt_deg"  # every reading of both loads carries it
SENTINELS = 16  # per load: the drain's last messages, one from each of these devices
# The sentinels' count is polled this often: a drain of a few seconds ends within 2-3 % of
# when InfluxDB held it (the throughput columns' 0.25 s suits their longer drains).
POLL_S = 0.1
SAMPLE_DEVICES = 32  # per load: their points give a cheap progress estimate
TIMED_CALLS = 20_000  # frames decoded in process to time one decode
QOS = 1
SPEC = SystemSpec(
    "codecs",
    "cityiot",
    "cityiot ingest --rules with CITYIOT_CODECS_PATH=bench/codec_files, QoS 1 end to end",
    QOS,
    QOS,
)

# The frame (bench/codec_files/manhole-frame.js): type, seq, epoch s, distance mm, tilt in
# 0.5° steps, battery %, flags, methane ppm, signal dBm; then a check byte (XOR).
FRAME = struct.Struct(">BHIHBBBHb")
REPORT = 0x01
COVER_OPEN, TILT_ALARM = 0x01, 0x02


@dataclass(frozen=True, slots=True)
class Fields:
    """One reading as the frame carries it (integers, the sensor's units)."""

    distance_mm: int
    tilt_halves: int
    battery: int
    flags: int
    methane_ppm: int
    rssi: int

    @classmethod
    def of(cls, metrics: dict[str, Any], depth_cm: float) -> Fields:
        """The simulator's manhole reading as the sensor would send it."""
        tilt = float(metrics["tilt_deg"])
        flags = (COVER_OPEN if metrics["cover_open"] else 0) | (TILT_ALARM if tilt > 15 else 0)
        return cls(
            distance_mm=_clamp(round((depth_cm - float(metrics["water_level_cm"])) * 10), 0, 65535),
            tilt_halves=_clamp(round(tilt * 2), 0, 180),
            battery=_clamp(round(float(metrics["battery_pct"])), 0, 100),
            flags=flags,
            methane_ppm=_clamp(round(float(metrics["gas_ch4_ppm"])), 0, 65535),
            rssi=_clamp(round(float(metrics["rssi_dbm"])), -128, 0),
        )

    def frame(self, seq: int, time_s: int) -> bytes:
        """The 16-byte report (the decoder's layout)."""
        body = FRAME.pack(
            REPORT, seq & 0xFFFF, time_s, self.distance_mm, self.tilt_halves, self.battery,
            self.flags, self.methane_ppm, self.rssi,
        )  # fmt: skip
        return body + bytes((reduce(xor, body),))

    def metrics(self, depth_cm: float) -> dict[str, Any]:
        """What the codec's mapping makes of the frame: the JSON twin's metrics."""
        return {
            "tilt_deg": self.tilt_halves / 2,
            "cover_open": bool(self.flags & COVER_OPEN),
            "water_level_cm": depth_cm - self.distance_mm / 10,
            "gas_ch4_ppm": self.methane_ppm,
            "battery_pct": self.battery,
            "rssi_dbm": self.rssi,
        }


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def codec_device(device_id: str, vendor: str, index: int) -> SimDevice:
    """A manhole of the section's fleet; shafts 150–400 cm deep."""
    return SimDevice(
        device_id=device_id,
        vendor=vendor,
        kind=KIND,
        district="yicheng",
        lat=33.0 + (index % 1000) / 100_000,
        lon=114.03,
        address="驻马店市驿城区基准测试路 2 号",
        install_date=dt.date(2025, 1, 1),
        report_interval_s=300,
        attribute_values=(("depth_cm", 150.0 + (index % 26) * 10),),
    )


@dataclass(frozen=True, slots=True)
class Vendor:
    """One load's devices: ``devices`` in turn, then ``sentinels`` once each."""

    vendor: str
    devices: tuple[SimDevice, ...]
    sentinels: tuple[SimDevice, ...]

    @classmethod
    def of(cls, vendor: str, prefix: str, count: int) -> Vendor:
        devices = tuple(codec_device(f"{prefix}-{i:05d}", vendor, i) for i in range(count))
        sentinels = tuple(
            codec_device(f"{prefix}-sentinel-{k:02d}", vendor, k) for k in range(SENTINELS)
        )
        return cls(vendor, devices, sentinels)

    @property
    def sample(self) -> tuple[SimDevice, ...]:
        step = max(1, len(self.devices) // SAMPLE_DEVICES)
        return self.devices[::step][:SAMPLE_DEVICES]


@dataclass(slots=True)
class CodecLoad:
    """The section's fleet and the readings every drain carries, generated once: backlog
    ``i`` (of ``messages - SENTINELS``) is device ``i % devices``'s reading ``i // devices``,
    one second apart in event time; then one reading from each sentinel."""

    json: Vendor
    frames: Vendor
    hostile: SimDevice
    values: list[Fields]
    sentinel_values: Fields
    seq: int = 0  # the next drain's first seq (both loads count alike)

    @classmethod
    def generate(cls, devices: int, messages: int, seed: int = 7) -> CodecLoad:
        frames = Vendor.of(FRAME_VENDOR, "codec-frame", devices)
        rng = random.Random(seed)
        states = [new_state(d) for d in frames.devices]
        start_ms = 1_763_856_000_000
        values = []
        for i in range(messages - SENTINELS):
            index = i % devices
            device = frames.devices[index]
            metrics = reading(device, start_ms + (i // devices) * 1000, states[index], rng)
            values.append(Fields.of(metrics, device.number("depth_cm", 200.0)))
        sentinel = frames.sentinels[0]
        first = reading(sentinel, start_ms, new_state(sentinel), rng)
        return cls(
            json=Vendor.of(JSON_VENDOR, "codec-json", devices),
            frames=frames,
            hostile=codec_device("codec-hostile-0", HOSTILE_VENDOR, 0),
            values=values,
            sentinel_values=Fields.of(first, sentinel.number("depth_cm", 200.0)),
        )

    @property
    def fleet(self) -> Fleet:
        """Every device of the section, for the registry."""
        devices = (
            *self.json.devices, *self.json.sentinels, *self.frames.devices,
            *self.frames.sentinels, self.hostile,
        )  # fmt: skip
        vendors = (
            SimVendor(JSON_VENDOR, JSON_VENDOR, "json"),
            SimVendor(FRAME_VENDOR, FRAME_VENDOR, DECODING_CODEC),
            SimVendor(HOSTILE_VENDOR, HOSTILE_VENDOR, HOSTILE_CODEC),
        )
        return Fleet(devices=devices, vendors=vendors, seed=0)

    @property
    def span_s(self) -> int:
        """Seconds of event time one drain covers (the sentinels' second included)."""
        return -(-len(self.values) // len(self.frames.devices)) + 1

    def vendor(self, load: str) -> Vendor:
        return self.json if load == JSON else self.frames

    def payload(self, load: str, fields: Fields, depth_cm: float, seq: int, time_s: int) -> bytes:
        if load == JSON:
            body = {"ts": time_s * 1000, "seq": seq, "metrics": fields.metrics(depth_cm)}
            return orjson.dumps(body)
        return fields.frame(seq, time_s)

    def warm_up(self, time_s: int) -> list[Message]:
        """One reading from every device of both loads (not the looping one's) at ``time_s``."""
        out = []
        for load in (JSON, FRAMES):
            vendor = self.vendor(load)
            for device in (*vendor.devices, *vendor.sentinels):
                depth = device.number("depth_cm", 200.0)
                payload = self.payload(load, self.sentinel_values, depth, self.seq, time_s)
                out.append(Message(device.telemetry_topic, payload))
        self.seq += 1
        return out

    def backlog(self, load: str, start_s: int, hostile_every: int = 0) -> tuple[list[Message], int]:
        """A drain's messages from ``start_s`` on, and how many of them are the looping
        device's (one after every ``hostile_every`` of the others' when it is not 0)."""
        vendor = self.vendor(load)
        devices = vendor.devices
        size = len(devices)
        depths = [d.number("depth_cm", 200.0) for d in devices]
        topics = [d.telemetry_topic for d in devices]
        hostile_topic = self.hostile.telemetry_topic
        hostile_payload = self.sentinel_values.frame(0, start_s)
        out: list[Message] = []
        hostile = 0
        for i, fields in enumerate(self.values):
            index, step = i % size, i // size
            payload = self.payload(load, fields, depths[index], self.seq + step, start_s + step)
            out.append(Message(topics[index], payload))
            if hostile_every and (i + 1) % hostile_every == 0:
                out.append(Message(hostile_topic, hostile_payload))
                hostile += 1
        last = self.span_s - 1
        for device in vendor.sentinels:
            depth = device.number("depth_cm", 200.0)
            payload = self.payload(
                load, self.sentinel_values, depth, self.seq + last, start_s + last
            )
            out.append(Message(device.telemetry_topic, payload))
        self.seq += self.span_s
        return out, hostile


# -- counting ------------------------------------------------------------------------------


def _where_devices(devices: Iterable[SimDevice]) -> str:
    return " OR ".join(f"\"device_id\"='{d.device_id}'" for d in devices)


class WindowCounter:
    """One drain's points of one load, counted in InfluxDB by the vendor's tag and the
    drain's event-time window (every drain's times follow the one before's)."""

    def __init__(
        self,
        http: httpx.Client,
        database: str,
        vendor: Vendor,
        start_s: int,
        span_s: int,
        messages: int = 0,
    ) -> None:
        self.http = http
        self.database = database
        self.sentinels = len(vendor.sentinels)
        window = f"time >= {start_s * 1000}ms AND time < {(start_s + span_s) * 1000}ms"
        measure = f'SELECT count("{COUNT_FIELD}") FROM "{KIND}" WHERE'
        self._cheap = (
            f"{measure} ({_where_devices(vendor.sentinels)}) AND {window};"
            f"{measure} ({_where_devices(vendor.sample)}) AND {window}"
        )
        self._exact = f"{measure} \"vendor\"='{vendor.vendor}' AND {window}"
        # The sample's share of the fleet's ``messages`` (progress only, never a figure).
        self._scale = messages / max(1, len(vendor.sample) * (span_s - 1))

    def _query(self, q: str) -> list[int]:
        return counts(self.http, self.database, q)

    def cheap(self) -> tuple[int, int]:
        sentinels, sample = self._query(self._cheap)
        return sentinels, int(sample * self._scale) + sentinels

    def exact(self) -> int:
        return self._query(self._exact)[0]


# -- in process ----------------------------------------------------------------------------


def _per_call(call: Callable[[Any], object], items: Sequence[Any]) -> CallCost:
    """Each call of ``call`` on ``items`` timed alone (garbage collection held off)."""
    for item in items[:500]:  # warm: the first calls compile and fill caches
        call(item)
    clock = time.perf_counter_ns
    spent: list[int] = []
    gc.disable()
    try:
        for item in items:
            started = clock()
            call(item)
            spent.append(clock() - started)
    finally:
        gc.enable()
    return CallCost.of(spent)


def decode_costs(load: CodecLoad) -> tuple[CallCost, CallCost, CallCost]:
    """One frame's ``FileCodec.decode`` (the decoder in the sandbox and the mapping), the
    decoder alone, and the JSON codec's decode of the same reading, in process. Raises
    ``BenchError`` when a frame does not decode to its JSON twin's metrics (the two loads
    would not be the same)."""
    from cityiot.domain.catalogue import KINDS
    from cityiot.ingest.codecs import default_codecs
    from cityiot.ingest.codecs.files import read_codec_folder
    from cityiot.ingest.codecs.scripted import FileCodec

    codec = FileCodec(read_codec_folder(CODEC_FILES)[DECODING_CODEC])
    codec.check()
    json_codec = default_codecs()["json"]
    kind = KINDS[KIND]
    devices = load.frames.devices
    count = min(TIMED_CALLS, len(load.values))
    frames, bodies = [], []
    for i, fields in enumerate(load.values[:count]):
        depth = devices[i % len(devices)].number("depth_cm", 200.0)
        frames.append((fields.frame(i, 1_763_856_000 + i), {"depth_cm": depth}))
        bodies.append(
            (load.payload(JSON, fields, depth, i, 1_763_856_000 + i), {"depth_cm": depth})
        )
    decoded = codec.decode(frames[0][0], kind, frames[0][1])[0]
    twin = json_codec.decode(bodies[0][0], kind, bodies[0][1])[0]
    if decoded.metrics != twin.metrics or decoded.ts != twin.ts or decoded.seq != twin.seq:
        raise BenchError(
            f"the bench's frame decodes to {decoded} but its JSON twin is {twin}: "
            "bench/codecs.py and bench/codec_files/manhole-frame.js disagree"
        )
    return (
        _per_call(lambda item: codec.decode(item[0], kind, item[1]), frames),
        _per_call(lambda item: codec.outputs(item[0]), frames),
        _per_call(lambda item: json_codec.decode(item[0], kind, item[1]), bodies),
    )


# -- the section ---------------------------------------------------------------------------


async def _set_codecs(url: str) -> None:
    from cityiot.storage.engine import make_engine, sessionmaker
    from cityiot.storage.registry import upsert_vendor

    engine = make_engine(url)
    try:
        for vendor, codec in ((FRAME_VENDOR, DECODING_CODEC), (HOSTILE_VENDOR, HOSTILE_CODEC)):
            await upsert_vendor(sessionmaker(engine), vendor, vendor, codec=codec)
    finally:
        await engine.dispose()


def dead_letters(registry_db: Path) -> dict[str, list[tuple[str, int]]]:
    """vendor → (reason, count) of the dead letters an ingest kept in ``registry_db``."""
    with contextlib.closing(sqlite3.connect(registry_db)) as db:
        rows = db.execute(
            "SELECT vendor, reason, count(*) FROM dead_letters GROUP BY vendor, reason "
            "ORDER BY count(*) DESC"
        ).fetchall()
    found: dict[str, list[tuple[str, int]]] = {}
    for vendor, reason, count in rows:
        found.setdefault(vendor or "", []).append((reason, count))
    return found


@dataclass(slots=True)
class CodecBench:
    """The codec section of one bench run, on its services."""

    options: BenchOptions
    services: Services
    registry: Registry
    load: CodecLoad
    say: Callable[[str], None]
    log: Callable[[str], None]

    @classmethod
    def prepare(
        cls,
        options: BenchOptions,
        services: Services,
        run_dir: Path,
        say: Callable[[str], None],
        log: Callable[[str], None],
    ) -> CodecBench:
        """The section's readings generated and its fleet registered (vendors set to their
        codecs), early: the registry settles while the other sections run."""
        say(f"codecs: generating {options.codec_messages:,} readings…")
        load = CodecLoad.generate(options.codec_devices, options.codec_messages)
        folder = run_dir / "codecs"
        folder.mkdir(parents=True, exist_ok=True)
        fleet = load.fleet
        say(f"codecs: importing {len(fleet):,} devices…")
        registry = Registry.imported(fleet, folder, say)
        asyncio.run(_set_codecs(sqlite_url(registry.path)))
        log(
            f"codecs: registered {len(fleet):,} manholes ({FRAME_VENDOR}: {DECODING_CODEC}, "
            f"{JSON_VENDOR}: json, {HOSTILE_VENDOR}: {HOSTILE_CODEC})"
        )
        return cls(options, services, registry, load, say, log)

    def run(self) -> CodecResult:
        """Every drain of the section; a failure is reported in the result, not raised."""
        options = self.options
        from cityiot.domain.settings import Settings
        from cityiot.ingest.codecs.sandbox import PROBATION_MIN_S, PROBATION_SHARE

        timeout_ms = float(Settings.model_fields["codec_timeout_ms"].default)
        result = CodecResult(
            options.codec_devices,
            options.codec_messages,
            options.codec_rounds,
            QOS,
            timeout_ms=timeout_ms,
            probation_ms=max(PROBATION_MIN_S * 1000, timeout_ms * PROBATION_SHARE),
        )
        database = self.services.database(SPEC.name)
        try:
            self.say("codecs: timing one decode in process…")
            result.decode, result.decoder, result.json_decode = decode_costs(self.load)
            self.registry.settle()
            self._drains(result, database)
        except SYSTEM_ERRORS as e:
            result.error = str(e).splitlines()[0] if str(e) else type(e).__name__
            self.log(f"[red]codecs failed:[/] {str(e).strip()[-3000:]}")
        finally:
            self.services.drop(database)
        return result

    def _drains(self, result: CodecResult, database: str) -> None:
        load = self.load
        rounds = self.options.codec_rounds
        # Event times planned at once, all in the past: the warm-up's second, then each
        # drain's span after the one before.
        next_s = int(time.time()) - (1 + 3 * rounds * load.span_s) - 60
        work = self.services.run_dir / "codecs" / "ingest"
        client_id = f"bench-{self.services.run_id}-codecs"
        env = {"CITYIOT_CODECS_PATH": str(CODEC_FILES)}
        windows: list[tuple[Drain, WindowCounter]] = []
        with (
            httpx.Client(base_url=self.services.influx.url, timeout=60.0) as http,
            ingest_workers(
                self.services, self.registry, SPEC, database, client_id, work, self.say, env
            ) as processes,
        ):
            pids = [p.pid for p in processes]
            self._warm_up(http, database, pids, next_s)
            next_s += 1
            frames_rate: float | None = None
            for number in range(1, rounds + 1):
                for name in order_of(number):
                    every = 0
                    if name == HOSTILE:
                        every = max(1, round((frames_rate or GOAL_RATE) / HOSTILE_PER_S))
                    counter = WindowCounter(
                        http, database, load.vendor(name), next_s, load.span_s, len(load.values)
                    )
                    drain = self._drain(name, number, next_s, every, counter, pids)
                    next_s += load.span_s
                    result.drains.append(drain)
                    windows.append((drain, counter))
                    if name == FRAMES and drain.ok and drain.rate:
                        frames_rate = drain.rate
            # Counted again once the ingest is idle: a point written twice shows now.
            time.sleep(1.5)
            for drain, counter in windows:
                drain.stored = counter.exact()
            if any(p.poll() is not None for p in processes):
                result.error = "the ingest exited during the codec section"
        found = dead_letters(work / "registry.db")
        hostile = found.pop(HOSTILE_VENDOR, [])
        result.hostile_dead_letters = sum(n for _, n in hostile)
        result.hostile_reasons = [f"{reason} (×{n:,})" for reason, n in hostile[:3]]
        for vendor, reasons in found.items():
            reason, n = reasons[0]
            result.notes.append(
                f"{sum(c for _, c in reasons):,} dead letters of {vendor or '(none)'}, "
                f"e.g. {reason} (×{n:,})"
            )
        if result.of(HOSTILE) and not result.hostile_dead_letters:
            result.notes.append("the looping codec's messages left no dead letter")

    def _warm_up(self, http: httpx.Client, database: str, pids: list[int], time_s: int) -> None:
        """Every device of both loads reports once and InfluxDB holds it, then the ingest
        and InfluxDB go idle: the series exist and the devices are online, as in a city."""
        messages = self.load.warm_up(time_s)
        self.say(f"codecs: warm-up, one reading from each of {len(messages):,}…")
        publisher = Publisher(
            self.services.broker.host,
            self.services.broker.port,
            f"bench-{self.services.run_id}-codecs-warm-up",
        )
        try:
            publisher.publish_all(messages, qos=QOS)
        finally:
            publisher.close()
        counters = [
            WindowCounter(http, database, self.load.vendor(name), time_s, 1)
            for name in (JSON, FRAMES)
        ]
        deadline = time.monotonic() + self.options.timeout_s
        while (stored := sum(c.exact() for c in counters)) < len(messages):
            if time.monotonic() > deadline:
                raise BenchError(
                    f"codecs: the warm-up stored {stored:,} of {len(messages):,} readings in "
                    f"{self.options.timeout_s:g} s"
                )
            self.say(f"codecs: warm-up, {stored:,} stored")
            time.sleep(COUNT_POLL_S)
        self.services.quiet(pids)

    def _drain(
        self,
        name: str,
        number: int,
        start_s: int,
        hostile_every: int,
        counter: WindowCounter,
        pids: list[int],
    ) -> Drain:
        """One backlog drained: SIGSTOP, publish, SIGCONT (t0), until InfluxDB holds it."""
        backlog, hostile = self.load.backlog(name, start_s, hostile_every)
        drain = Drain(name, number, sent=len(backlog) - hostile, hostile=hostile)
        label = f"codecs {name} (round {number})"
        self.services.quiet(pids)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            self.say(f"{label}: publishing {len(backlog):,} messages…")
            publisher = Publisher(
                self.services.broker.host,
                self.services.broker.port,
                f"bench-load-{self.services.run_id}-codecs",
            )
            try:
                drain.publish_s = round(publisher.publish_all(backlog, QOS), 2)
            finally:
                publisher.close()  # at QoS 1 every message was acknowledged: it is queued
            start = self.services.mark(pids)
            t0 = time.time()
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        end = wait_stored(
            counter,
            drain.sent,
            t0 + self.options.timeout_s,
            lambda: self.services.mark(pids),
            lambda text: self.say(f"{label}: {text}"),
            poll_s=POLL_S,
        )
        drain.drain_s = round(end.t_end - t0, 3)
        drain.end_by = end.end_by
        drain.timed_out = end.timed_out
        drain.stored = end.stored
        if not end.timed_out and drain.drain_s > 0:
            drain.rate = round(min(drain.sent, end.stored) / drain.drain_s, 1)
        if end.mark.system is not None and start.system is not None:
            drain.cpu_s = round(end.mark.system - start.system, 2)
        drain.broker_cpu_s = round(end.mark.broker - start.broker, 2)
        drain.influx_cpu_s = round(end.mark.influx - start.influx, 2)
        extra = f", {hostile:,} to the looping codec" if hostile else ""
        self.log(
            f"{label}: {drain.rate or 0:,.0f} messages/s, {end.stored:,} of {drain.sent:,} "
            f"in {drain.drain_s:.2f} s{extra}"
        )
        return drain
