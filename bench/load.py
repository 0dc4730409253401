"""The benchmark's load: a fleet of JSON devices, their payloads, and a fast publisher.

Every system in a run receives the same messages: one reading per message
(``{"ts", "seq", "metrics"}``, docs/design.md §4), produced by the simulator's device behaviour
for a deterministic fleet, with distinct timestamps per device so that no point in
InfluxDB overwrites another and the stored count is exact.
"""

from __future__ import annotations

import contextlib
import random
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import orjson

from cityiot.domain.catalogue import KINDS
from cityiot.simulators.behaviour import new_state, reading
from cityiot.simulators.fleet import DEFAULT_VENDORS, Fleet, SimDevice

# A field every reading of the kind carries (the simulator sends every metric): counting it
# counts the kind's points.
COUNT_FIELD = {kind: spec.metrics[0].name for kind, spec in KINDS.items()}
# Messages of one device are this far apart in event time.
STEP_MS = 1000


def bench_fleet(devices: int, seed: int = 7, mix: Mapping[str, float] | None = None) -> Fleet:
    """``devices`` devices of the kinds in ``mix`` (default: every kind, equal shares) from
    the JSON-speaking vendors only (the peer and the baseline parse JSON; a hex-frame vendor
    would not be the same load)."""
    json_vendors = [v for v in DEFAULT_VENDORS if v.codec == "json"]
    return Fleet.generate(devices, seed, mix=mix or None, vendors=json_vendors)


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes


def messages(
    fleet: Fleet, count: int, start_ms: int, seed: int = 7, sink_device: SimDevice | None = None
) -> list[Message]:
    """``count`` telemetry messages, the fleet round-robin, each device's readings
    ``STEP_MS`` apart from ``start_ms`` on (so ``count / len(fleet)`` seconds of event time
    must fit between the retention and now)."""
    rng = random.Random(seed)
    devices = fleet.devices
    states = [new_state(d) for d in devices]
    dumps = orjson.dumps
    out: list[Message] = []
    size = len(devices)
    for i in range(count):
        index = i % size
        device = devices[index]
        ts = start_ms + (i // size) * STEP_MS
        metrics = reading(device, ts, states[index], rng)
        out.append(
            Message(device.telemetry_topic, dumps({"ts": ts, "seq": i // size, "metrics": metrics}))
        )
    return out


def start_ms_for(count: int, devices: int) -> int:
    """A start time that puts the last reading about a minute before now."""
    rounds = -(-count // devices)
    return int(time.time() * 1000) - rounds * STEP_MS - 60_000


class Publisher:
    """Publishes pre-encoded MQTT 3.1.1 PUBLISH packets over a plain socket, QoS 0 or 1.

    Load generation, not platform code: paho's ``publish`` tops out near 26,000 messages/s
    here, too slow to fill a backlog for a consumer that is faster, so the packets are
    encoded once and written in large chunks; at QoS 1 a window of unacknowledged packet
    ids is kept and the PUBACKs are read back. ``publish_all`` returns once the broker has
    every message (QoS 1: all acknowledged).
    """

    def __init__(self, host: str, port: int, client_id: str = "bench-load") -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cid = client_id.encode()
        body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
        self.sock.sendall(b"\x10" + _remaining(len(body)) + body)
        connack = self._read(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"the broker refused the load generator: {connack!r}")

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the broker closed the load generator's connection")
            data += chunk
        return data

    def publish_all(
        self,
        batch: Sequence[Message],
        qos: int,
        progress: Callable[[int], None] | None = None,
        window: int = 20_000,
    ) -> float:
        """Publish ``batch``; returns the seconds it took."""
        started = time.perf_counter()
        unacked = 0
        chunk: list[bytes] = []
        for i, m in enumerate(batch):
            chunk.append(_publish_packet(m.topic, m.payload, qos, i % 65_535 + 1))
            unacked += qos
            if len(chunk) == 1000:
                self.sock.sendall(b"".join(chunk))
                chunk = []
                if unacked >= window:
                    unacked -= self._read_acks(unacked - window // 2)
            if progress is not None and i % 100_000 == 0:
                progress(i)
        if chunk:
            self.sock.sendall(b"".join(chunk))
        if unacked:
            self._read_acks(unacked)
        elif batch:  # QoS 0: a PINGREQ answered means the broker has read all before it
            self.sock.sendall(b"\xc0\x00")
            self._read(2)
        return time.perf_counter() - started

    def _read_acks(self, at_least: int) -> int:
        """Read PUBACKs (4 bytes each) until ``at_least`` arrived; returns how many."""
        got = 0
        pending = b""
        while got < at_least:
            pending += self.sock.recv(65536)
            whole = len(pending) // 4
            got += whole
            pending = pending[whole * 4 :]
        if pending:
            raise ConnectionError("the broker sent something other than PUBACKs")
        return got

    def publish_at(self, stream: Iterator[Message], rate: float, seconds: float) -> int:
        """Publish from ``stream`` at ``rate`` messages/s (QoS 0) for ``seconds``."""
        sent = 0
        started = time.perf_counter()
        end = started + seconds
        while (now := time.perf_counter()) < end:
            due = int((now - started) * rate)
            if due > sent:
                packets = [
                    _publish_packet(m.topic, m.payload, 0, 0) for m in _take(stream, due - sent)
                ]
                self.sock.sendall(b"".join(packets))
                sent = due
            time.sleep(0.001)
        return sent

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT
        self.sock.close()


def _take(stream: Iterator[Message], n: int) -> Iterator[Message]:
    for _ in range(n):
        yield next(stream)


def _remaining(length: int) -> bytes:
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def _publish_packet(topic: str, payload: bytes, qos: int, mid: int) -> bytes:
    name = topic.encode()
    head = len(name).to_bytes(2, "big") + name + (mid.to_bytes(2, "big") if qos else b"")
    return bytes((0x30 | qos << 1,)) + _remaining(len(head) + len(payload)) + head + payload
