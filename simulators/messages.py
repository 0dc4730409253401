"""The fleet's messages in report order, as they go on the wire; no broker needed.

A :class:`MessageStream` walks the fleet round-robin, one report slot per call: the
device's readings (through ``behaviour``), changed by the incidents active on it, encoded
in its vendor's codec, or replaced by a labelled malformed payload. ``iter_messages`` runs
one on simulated time: the same fleet, seed and start time give the same messages.
:meth:`MessageStream.command` carries out a command sent to one of its devices and gives
the device's ack (``cityiot.simulators.commands``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import orjson

from cityiot.domain.catalogue import KINDS
from cityiot.ingest.codecs.hexframe import encode as encode_frame
from cityiot.simulators import links
from cityiot.simulators.behaviour import DeviceState, Metrics, new_state, reading
from cityiot.simulators.commands import obey
from cityiot.simulators.fleet import CHIRPSTACK, CTWING, MQTT, ONENET, Fleet, SimDevice
from cityiot.simulators.incidents import (
    SCENARIOS,
    Incident,
    apply_incident,
    malformed_labels,
    malformed_payload,
)

log = logging.getLogger(__name__)

OK = "ok"  # the label of a well-formed message
STATUS = "status"
ACK = "ack"
BATCH_SHARE = 0.1  # share of a JSON device's messages sent as a batch, when batches are on
MAX_BATCH = 6


class SimMessage(NamedTuple):
    """One message: topic, payload bytes, and ``ok``, ``status`` or a malformed label.

    On MQTT and ChirpStack the topic it is published to. On CTWing and OneNET the intake
    path it is posted to, and the payload the push body (CTWing) or the JSON text of the
    push's ``msg`` (OneNET), which the sender signs with the vendor's token.
    """

    topic: str
    payload: bytes
    label: str


class Report(NamedTuple):
    """A message and what it carries: the device that sent it and its number of readings."""

    device: SimDevice
    message: SimMessage
    readings: int


class _Window(NamedTuple):
    name: str
    start_ms: int
    end_ms: int | None

    def progress(self, ts_ms: int) -> float:
        """How far through the incident ``ts_ms`` is, 0 to 1 (0 for one without an end)."""
        if self.end_ms is None:
            return 0.0
        return (ts_ms - self.start_ms) / (self.end_ms - self.start_ms)


class MessageStream:
    """Report slots of the fleet, round-robin, each giving a message or None (silent).

    ``origin_ms`` is when the simulation begins: incidents count their ``after_s`` from it.
    ``batch_share`` of the JSON devices' messages carry several readings (``readings``),
    spread between the device's previous report and now. ``report_every_ms`` is each
    device's cadence (``len(fleet) / rate``), which the behaviour takes into account.
    """

    def __init__(
        self,
        fleet: Fleet,
        seed: int,
        origin_ms: int,
        incidents: Sequence[Incident] = (),
        malformed_share: float = 0.0,
        batch_share: float = 0.0,
        report_every_ms: float = 60_000.0,
    ) -> None:
        if not fleet.devices:
            raise ValueError("the fleet has no devices; generate it with devices > 0")
        if not 0.0 <= malformed_share <= 1.0:
            raise ValueError(f"malformed_share must be between 0 and 1, got {malformed_share}")
        if not 0.0 <= batch_share <= 1.0:
            raise ValueError(f"batch_share must be between 0 and 1, got {batch_share}")
        self.fleet = fleet
        self.origin_ms = origin_ms
        self.malformed_share = malformed_share
        self.batch_share = batch_share
        self.report_every_ms = report_every_ms
        self._rng = random.Random(f"cityiot-messages:{seed}")
        self._devices = fleet.devices
        self._states: list[DeviceState | None] = [None] * len(fleet.devices)
        self._slot = 0
        self._index = index = {d.device_id: i for i, d in enumerate(fleet.devices)}
        self._windows: dict[int, list[_Window]] = {}
        self._over: set[tuple[int, _Window]] = set()  # incidents whose aftermath is done
        for incident in incidents:
            incident.check(fleet)
            start, end = incident.window_ms(origin_ms)
            for device_id in incident.device_ids:
                window = _Window(incident.name, start, end)
                self._windows.setdefault(index[device_id], []).append(window)

    @property
    def slots(self) -> int:
        """Report slots taken so far (messages plus silent slots)."""
        return self._slot

    def next_report(self, now_ms: int) -> Report | None:
        """The next device's message at event time ``now_ms``; None if that device is silent."""
        i = self._slot % len(self._devices)
        self._slot += 1
        device = self._devices[i]
        state = self._state(i)
        active = self._active(i, now_ms)
        if i in self._windows:
            self._aftermath(i, device, state, now_ms)
        if any(SCENARIOS[w.name].effect is None for w in active):
            return None
        rng = self._rng
        topic = device.telemetry_topic
        if (
            self.malformed_share
            and (device.link == MQTT or device.codec == "hexframe")
            and rng.random() < self.malformed_share
        ):
            label = rng.choice(malformed_labels(device))
            metrics = reading(device, now_ms, state, rng)
            metrics = _with_incidents(device, metrics, active, now_ms, rng)
            state.seq += 1
            payload = malformed_payload(label, device, metrics, now_ms, state.seq, rng)
            if device.link != MQTT:  # a bad frame inside the network's own well-formed envelope
                return Report(device, on_link(device, payload, now_ms, state.seq, label, rng), 1)
            return Report(device, SimMessage(topic, payload, label), 1)
        times = [now_ms]
        previous = state.last_ts_ms
        if (
            self.batch_share
            and device.codec == "json"
            and device.link == MQTT
            and previous is not None
            and now_ms - previous >= MAX_BATCH
            and rng.random() < self.batch_share
        ):
            n = rng.randint(2, MAX_BATCH)
            times = [previous + (now_ms - previous) * (k + 1) // n for k in range(n)]
        readings: list[tuple[int, int, Metrics]] = []
        for ts in times:
            metrics = _with_incidents(
                device, reading(device, ts, state, rng), self._active(i, ts), ts, rng
            )
            state.seq += 1
            readings.append((ts, state.seq, metrics))
        if device.link != MQTT:
            ts, seq, metrics = readings[0]
            carried: bytes | Metrics = (
                metrics if device.codec == "json" and device.link != CHIRPSTACK
                else encode(device, readings)
            )  # fmt: skip
            return Report(device, on_link(device, carried, ts, seq, OK, rng), 1)
        return Report(device, SimMessage(topic, encode(device, readings), OK), len(readings))

    def command(self, topic: str, payload: bytes) -> SimMessage | None:
        """Carry out the command ``payload`` that arrived on ``topic``
        (``city/{vendor}/{device_id}/command``): the device's ack, or None for a message
        that is no command of one of the fleet's devices (logged)."""
        parts = topic.split("/")
        index = self._index.get(parts[2]) if len(parts) == 4 and parts[3] == "command" else None
        if index is None or self._devices[index].vendor != parts[1]:
            log.warning("event=simulator_command_ignored reason=unknown_device topic=%s", topic)
            return None
        device = self._devices[index]
        try:
            command = orjson.loads(payload)
        except orjson.JSONDecodeError:
            command = None
        command_id = command.get("id") if isinstance(command, dict) else None
        if not isinstance(command_id, str):
            log.warning("event=simulator_command_ignored reason=no_id topic=%s", topic)
            return None
        assert isinstance(command, dict)
        name, args = command.get("name"), command.get("args") or {}
        if not isinstance(name, str) or not isinstance(args, Mapping):
            ok, message = False, 'a command is {"id": "...", "name": "...", "args": {...}}'
        else:
            ok, message = obey(KINDS[device.kind], self._state(index), name, args)
        if ok:  # "sign_on=true barrier_closed=true" as one logfmt value
            log.info("event=simulator_command device=%s name=%s ok=true sets=%s",
                     device.device_id, name, message.replace(" ", ","))  # fmt: skip
        else:
            log.warning("event=simulator_command device=%s name=%s ok=false reason: %s",
                        device.device_id, name, message)  # fmt: skip
        answer = orjson.dumps({"id": command_id, "ok": ok, "message": message})
        return SimMessage(device.ack_topic, answer, ACK)

    def _aftermath(self, index: int, device: SimDevice, state: DeviceState, now_ms: int) -> None:
        """Once an incident on the device has ended, what it leaves behind (once)."""
        for window in self._windows[index]:
            if window.end_ms is None or window.end_ms > now_ms or (index, window) in self._over:
                continue
            self._over.add((index, window))
            aftermath = SCENARIOS[window.name].aftermath
            if aftermath is not None:
                aftermath(device, state, window.end_ms, self._rng)

    def _state(self, index: int) -> DeviceState:
        state = self._states[index]
        if state is None:
            state = self._states[index] = new_state(self._devices[index], self.report_every_ms)
        return state

    def _active(self, index: int, ts_ms: int) -> list[_Window]:
        """The incidents on device ``index`` at ``ts_ms``."""
        windows = self._windows.get(index)
        if not windows:
            return []
        return [w for w in windows if _covers(w, ts_ms)]


def status_messages(
    fleet: Fleet, online: bool = True, now_ms: int = 0, seed: int = 1
) -> Iterator[Report]:
    """One presence message per device, in fleet order: ``{"online": ...}`` on its status
    topic over MQTT; on the other links what that network reports (``now_ms`` its time): a
    ChirpStack status event with the battery level, CTWing's deviceOnlineOfflineReport,
    OneNET's type 2 message."""
    payload = orjson.dumps({"online": online})
    rng = random.Random(f"cityiot-status:{seed}")
    for device in fleet.devices:
        if device.link == MQTT:
            yield Report(device, SimMessage(device.status_topic, payload, STATUS), 0)
        elif device.link == CHIRPSTACK:
            event = links.chirpstack_status(device, rng.uniform(60.0, 100.0), now_ms, rng)
            topic = links.chirpstack_topic(device, "status")
            yield Report(device, SimMessage(topic, event, STATUS), 0)
        elif device.link == CTWING:
            path = links.intake_path(CTWING, device.vendor)
            message = links.ctwing_online(device, online, now_ms)
            yield Report(device, SimMessage(path, message, STATUS), 0)
        else:
            path = links.intake_path(ONENET, device.vendor)
            yield Report(
                device, SimMessage(path, links.onenet_status(device, online, now_ms), STATUS), 0
            )


def on_link(
    device: SimDevice,
    payload: bytes | Metrics,
    ts_ms: int,
    seq: int,
    label: str,
    rng: random.Random,
) -> SimMessage:
    """One reading of a device on LoRaWAN or NB-IoT as its network delivers it: ``payload``
    is the frame its codec decodes (bytes), or its readings by name (a JSON codec's
    device on CTWing, as serviceData; on OneNET, as data points). ``seq`` is the device's
    frame counter (ChirpStack's fCnt, CTWing's upPacketSN)."""
    if device.link == CHIRPSTACK:
        frame = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        event = links.chirpstack_uplink(device, frame, ts_ms, seq, rng)
        return SimMessage(links.chirpstack_topic(device), event, label)
    path = links.intake_path(device.link, device.vendor)
    if device.link == CTWING:
        return SimMessage(path, links.ctwing_data_report(device, payload, ts_ms, seq), label)
    if device.link == ONENET:
        values = links.hex_values(payload) if isinstance(payload, bytes) else payload
        return SimMessage(path, links.onenet_data_points(device, values, ts_ms), label)
    raise ValueError(f"device {device.device_id}: unknown link {device.link!r}")


def encode(device: SimDevice, readings: Sequence[tuple[int, int, Metrics]]) -> bytes:
    """The payload of (ts_ms, seq, metrics) readings in the device's codec.

    JSON: one reading as ``{"ts", "seq", "metrics"}``, several as ``{"readings": [...]}``.
    Hex frames hold one reading each.
    """
    if device.codec == "hexframe":
        if len(readings) != 1:
            raise ValueError("a hex frame carries exactly one reading")
        ts, seq, metrics = readings[0]
        return encode_frame(device.kind, metrics, ts, seq)
    if len(readings) == 1:
        ts, seq, metrics = readings[0]
        return orjson.dumps({"ts": ts, "seq": seq, "metrics": metrics})
    return orjson.dumps({"readings": [{"ts": t, "seq": s, "metrics": m} for t, s, m in readings]})


def iter_messages(
    fleet: Fleet,
    start_ms: int,
    count: int,
    seed: int = 1,
    rate: float = 1000.0,
    incidents: Sequence[Incident] = (),
    malformed_share: float = 0.0,
    batch: bool = False,
) -> Iterator[SimMessage]:
    """The messages of ``count`` report slots, slot ``k`` at event time ``start_ms + k/rate``.

    Silent devices take their slot and yield nothing, so fewer than ``count`` messages
    come out while a ``silent`` incident is active. Incidents count ``after_s`` from
    ``start_ms``.
    """
    for _slot, report in iter_reports(
        fleet, start_ms, count, seed, rate, incidents, malformed_share, batch
    ):
        if report is not None:
            yield report.message


def iter_reports(
    fleet: Fleet,
    start_ms: int,
    count: int,
    seed: int = 1,
    rate: float = 1000.0,
    incidents: Sequence[Incident] = (),
    malformed_share: float = 0.0,
    batch: bool = False,
) -> Iterator[tuple[int, Report | None]]:
    """Like :func:`iter_messages`, with each slot's event time and full report (or None)."""
    if rate <= 0:
        raise ValueError(f"rate must be more than 0 messages per second, got {rate}")
    stream = MessageStream(
        fleet,
        seed,
        start_ms,
        incidents,
        malformed_share,
        BATCH_SHARE if batch else 0.0,
        report_every_ms=cadence_ms(fleet, rate),
    )
    for k in range(count):
        ts = start_ms + round(k * 1000 / rate)
        yield ts, stream.next_report(ts)


def cadence_ms(fleet: Fleet, rate: float) -> float:
    """How often each device reports when the fleet sends ``rate`` messages per second."""
    return len(fleet.devices) * 1000 / rate


def _covers(window: _Window, ts_ms: int) -> bool:
    return window.start_ms <= ts_ms and (window.end_ms is None or ts_ms < window.end_ms)


def _with_incidents(
    device: SimDevice, metrics: Metrics, active: list[_Window], ts_ms: int, rng: random.Random
) -> Metrics:
    for window in active:
        changed = apply_incident(window.name, device, metrics, rng, window.progress(ts_ms))
        if changed is not None:
            metrics = changed
    return metrics
