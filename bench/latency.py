"""Latency of a running system under load: publish → stored, and publish → alert.

While a :class:`bench.load.Publisher` sends background load at a fixed rate, probe devices
publish one reading every ``interval_s`` (QoS 1) with ``ts`` = the publish time, and

- **stored**: a poller asks InfluxDB every ``poll_s`` for the probe devices' points newer
  than the oldest one not seen yet; a probe's latency is the moment its point first came
  back minus the moment it was published (so the figure includes up to one poll interval
  and one query);
- **alert** (``alarms`` given): every ``alert_every``-th probe is from a probe manhole and
  alternately opens its cover (``cover_open: true, tilt_deg: 30.xx``: the rule
  ``manhole_cover_open`` fires at once, ``for: 0s``) and closes it again (``tilt_deg`` below
  10: it resolves). A subscriber on ``city/alerts/#`` matches each alert event to its probe
  by device, state (firing / resolved) and the ``tilt_deg`` the event carries, unique per
  probe; the latency is the event's arrival minus the probe's publish time.

Every clock here is this machine's ``time.time()``. The probe publisher, the poller and the
subscriber are threads of this process; the background load runs in a process of its own
(:func:`_load_process`), so the time it spends encoding and sending 10,000 messages a second
is not time the subscriber waits for the interpreter before it can stamp an arrival.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import multiprocessing
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.load import Message, Publisher
from cityiot.simulators.fleet import SimDevice

ALERT_TOPICS = "city/alerts/#"
# How long probes not seen yet are waited for once probing stops: a system behind its load
# keeps storing (and alerting) for a while after the load ends.
GRACE_S = 30.0


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Latency percentiles in ms (nearest rank) over every probe published: ``samples``
    seen and ``missing`` never seen within the grace time. A missing probe's latency is only
    known to exceed ``beyond_ms``: a percentile that falls among them is None (the table
    shows "> beyond_ms")."""

    samples: int
    missing: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    beyond_ms: float

    @classmethod
    def of(cls, latencies_s: Sequence[float], missing: int, beyond_s: float) -> Percentiles:
        ordered = sorted(latencies_s)
        total = len(ordered) + missing

        def rank(q: float) -> float | None:
            index = max(0, math.ceil(q * total) - 1)
            if index >= len(ordered):
                return None
            return round(ordered[index] * 1000, 1)

        return cls(
            len(ordered), missing, rank(0.50), rank(0.95), rank(0.99), round(beyond_s * 1000)
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class LatencyResult:
    """What one latency run measured, and the load it ran under."""

    stored: Percentiles
    alert: Percentiles | None  # None: the system raises no alerts
    background_rate: float  # readings/s asked for
    background_sent: int
    seconds: float
    probes: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "stored": self.stored.as_dict(),
            "alert": None if self.alert is None else self.alert.as_dict(),
            "background_rate": self.background_rate,
            "background_sent": self.background_sent,
            "seconds": self.seconds,
            "probes": self.probes,
        }


@dataclass(slots=True)
class _Probe:
    device_id: str
    published_s: float
    seen_s: float | None = None


def probe_payload(ts_ms: int, seq: int, tilt_deg: float, cover_open: bool) -> bytes:
    """A full, valid manhole reading (docs/design.md §4) with the given cover state."""
    return orjson.dumps(
        {
            "ts": ts_ms,
            "seq": seq,
            "metrics": {
                "tilt_deg": tilt_deg,
                "cover_open": cover_open,
                "water_level_cm": 20.0,
                "gas_ch4_ppm": 2.0,
                "battery_pct": 90.0,
                "rssi_dbm": -80.0,
            },
        }
    )


def measure_latency(
    *,
    host: str,
    port: int,
    influx_url: str,
    database: str,
    background: Iterator[Message],
    rate: float,
    seconds: float,
    probes: Sequence[SimDevice],
    alarms: Sequence[SimDevice] = (),
    interval_s: float = 0.020,
    poll_s: float = 0.008,
    alert_every: int = 5,
    client_prefix: str = "bench-latency",
) -> LatencyResult:
    """Run background load and probes for ``seconds`` against the system already running
    (subscribed to the broker at ``host:port``, storing into ``database``); return the
    latencies. ``probes`` and ``alarms`` must be registered manholes the background does not
    use. Raises ``ConnectionError`` when the broker cannot be reached."""
    if not probes:
        raise ValueError("measure_latency needs at least one probe device")
    stop_polling = threading.Event()
    lock = threading.Lock()
    stored: dict[tuple[str, int], _Probe] = {}  # (device_id, ts_ms) → probe
    alerts: dict[tuple[str, str, float], _Probe] = {}  # (device_id, state, tilt) → probe

    subscriber = _alert_subscriber(host, port, f"{client_prefix}-alerts", alerts, lock)
    sender = _client(host, port, f"{client_prefix}-probe")
    poller = threading.Thread(
        target=_poll_stored,
        args=(influx_url, database, [d.device_id for d in (*probes, *alarms)], stored, lock),
        kwargs={"stop": stop_polling, "every_s": poll_s},
        name="bench-latency-poller",
        daemon=True,
    )
    # The load's messages are made here (the caller's iterator) and handed over whole.
    backlog = list(itertools.islice(background, math.ceil(rate * seconds) + 1))
    context = multiprocessing.get_context("spawn")
    go, sent = context.Event(), context.Value("q", -1)
    loader = context.Process(
        target=_load_process,
        args=(host, port, f"{client_prefix}-load", backlog, rate, seconds, go, sent),
        name="bench-latency-load",
        daemon=True,
    )
    loader.start()
    del backlog
    seq = 0
    try:
        # Close any cover left open, so the first alarm probe of each manhole fires.
        for device in alarms:
            info = sender.publish(
                device.telemetry_topic,
                probe_payload(int(time.time() * 1000) - 1000, seq, 1.0, False),
                qos=1,
            )
            info.wait_for_publish(10)
        seq += 1
        poller.start()
        go.set()
        started = time.monotonic()
        tick = 0
        flips = 0
        while time.monotonic() - started < seconds:
            alarm = bool(alarms) and tick % alert_every == alert_every - 1
            now = time.time()
            ts_ms = int(now * 1000)
            if alarm:
                # Firing then resolved per manhole: flips 0, 1 on the first, 2, 3 on the next...
                device = alarms[(flips // 2) % len(alarms)]
                opening = flips % 2 == 0
                tilt = (
                    round(30 + (flips % 5000) / 100, 2)
                    if opening
                    else round((flips % 9000) / 1000, 3)
                )
                payload = probe_payload(ts_ms, seq, tilt, opening)
                probe = _Probe(device.device_id, now)
                with lock:
                    alerts[(device.device_id, "firing" if opening else "resolved", tilt)] = probe
                    stored[(device.device_id, ts_ms)] = _Probe(device.device_id, now)
                flips += 1
            else:
                device = probes[tick % len(probes)]
                payload = probe_payload(ts_ms, seq, round(1 + (tick % 900) / 1000, 3), False)
                with lock:
                    stored[(device.device_id, ts_ms)] = _Probe(device.device_id, now)
            sender.publish(device.telemetry_topic, payload, qos=1)
            seq += 1
            tick += 1
            # Probes of one device stay ≥ 1 ms apart, so (device, ts) is unique.
            time.sleep(max(0.0, started + tick * interval_s - time.monotonic()))
        loader.join(seconds + 30)
        if sent.value < 0:
            raise ConnectionError(f"the background load stopped (exit code {loader.exitcode})")
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline:
            with lock:
                waiting = any(p.seen_s is None for p in (*stored.values(), *alerts.values()))
            if not waiting:
                break
            time.sleep(0.05)
    finally:
        stop_polling.set()
        if poller.is_alive():
            poller.join(5)
        if loader.is_alive():
            loader.kill()
        for client in (sender, subscriber):
            client.disconnect()
            client.loop_stop()

    waited_until = time.time()
    with lock:
        stored_probes = list(stored.values())
        alert_probes = list(alerts.values())
    return LatencyResult(
        stored=_percentiles(stored_probes, waited_until),
        alert=_percentiles(alert_probes, waited_until) if alarms else None,
        background_rate=rate,
        background_sent=sent.value,
        seconds=seconds,
        probes=len(stored_probes),
    )


def _load_process(
    host: str,
    port: int,
    client_id: str,
    backlog: list[Message],
    rate: float,
    seconds: float,
    go: Any,
    sent: Any,
) -> None:
    """The background load, in a process of its own: connects, waits for ``go``, then
    publishes ``backlog`` at ``rate`` for ``seconds``; ``sent`` gets how many it sent."""
    load = Publisher(host, port, client_id=client_id)
    try:
        go.wait()
        sent.value = load.publish_at(iter(backlog), rate, seconds)
    finally:
        load.close()


def _percentiles(probes: Sequence[_Probe], waited_until: float) -> Percentiles:
    latencies = [p.seen_s - p.published_s for p in probes if p.seen_s is not None]
    missing = [waited_until - p.published_s for p in probes if p.seen_s is None]
    return Percentiles.of(latencies, len(missing), min(missing, default=GRACE_S))


def _client(host: str, port: int, client_id: str) -> mqtt.Client:
    """A connected publisher (paho drops what is published before the broker's CONNACK)."""
    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    client.max_inflight_messages_set(1000)
    client.on_connect = lambda *_: connected.set()
    client.connect(host, port, keepalive=60)
    client.loop_start()
    if not connected.wait(10):
        client.loop_stop()
        raise ConnectionError(f"the broker at {host}:{port} did not accept the probe publisher")
    return client


def _alert_subscriber(
    host: str,
    port: int,
    client_id: str,
    alerts: dict[tuple[str, str, float], _Probe],
    lock: threading.Lock,
) -> mqtt.Client:
    """A client subscribed to every alert event, stamping the probe each one answers;
    returns once the subscription is acknowledged."""
    subscribed = threading.Event()

    def on_connect(c: mqtt.Client, *_: object) -> None:
        c.subscribe(ALERT_TOPICS, 1)

    def on_subscribe(*_: object) -> None:
        subscribed.set()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        arrived = time.time()
        with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
            event = orjson.loads(msg.payload)
            tilt = event["values"]["tilt_deg"]
            key = (event["device_id"], event["state"], round(float(tilt), 3))
            with lock:
                probe = alerts.get(key)
                if probe is not None and probe.seen_s is None:
                    probe.seen_s = arrived

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, port, keepalive=60)
    client.loop_start()
    if not subscribed.wait(10):
        client.loop_stop()
        raise ConnectionError(f"could not subscribe to {ALERT_TOPICS} at {host}:{port}")
    return client


def _poll_stored(
    influx_url: str,
    database: str,
    device_ids: Sequence[str],
    stored: dict[tuple[str, int], _Probe],
    lock: threading.Lock,
    *,
    stop: threading.Event,
    every_s: float,
) -> None:
    """Until ``stop``: stamp each probe whose point InfluxDB returns, first time seen."""
    which = " OR ".join(f"\"device_id\"='{d}'" for d in device_ids)
    with httpx.Client(base_url=influx_url, timeout=5.0) as http:
        while not stop.is_set():
            began = time.monotonic()
            with lock:
                waiting = [ts for (_, ts), p in stored.items() if p.seen_s is None]
            if waiting:
                q = (
                    f'SELECT "battery_pct","device_id" FROM "manhole" WHERE ({which}) '
                    f"AND time >= {min(waiting)}ms"
                )
                try:
                    response = http.get("/query", params={"db": database, "q": q, "epoch": "ms"})
                    body = response.json()
                except (httpx.HTTPError, ValueError):
                    body = {}
                seen = time.time()
                rows = [
                    (int(row[0]), str(row[2]))
                    for result in body.get("results", [])
                    for series in result.get("series", [])
                    for row in series.get("values", [])
                ]
                with lock:
                    for ts, device_id in rows:
                        probe = stored.get((device_id, ts))
                        if probe is not None and probe.seen_s is None:
                            probe.seen_s = seen
            stop.wait(max(0.0, every_s - (time.monotonic() - began)))
