"""The LoRaWAN link through ChirpStack v4 (docs/design.md §4a): its MQTT integration's events
into the ingest's one intake, and commands to LoRaWAN devices out as its downlinks.

Uplinks: with ``CITYIOT_CHIRPSTACK_MQTT_URL`` set, a second broker link (its own persistent
session) takes ``application/+/device/+/event/{up,status,ack}`` (the JSON marshaler) at
QoS 1. Each event is translated into a delivery of the device it names by
``deviceInfo.devEui`` (the registry's ``dev_eui``) and goes through the same intake as an
MQTT message — the vendor's codec with ``fPort``, validation, dead letters, rules,
presence — into the open batch; it is acknowledged on the ChirpStack link once that batch is
durable (stored or spooled), like any MQTT delivery. An event that names no registered
device, or is not JSON, is a dead letter saying what to fix, and is acknowledged with its
batch: ChirpStack would otherwise deliver it again for ever.

Commands: rules send a command to ``city/{vendor}/{device_id}/command`` as to any device.
For a device with a ``dev_eui`` this link takes it from the platform's broker (a persistent
session of its own), encodes it with the vendor's codec's ``encodeDownlink`` and publishes
it to ``application/{applicationId}/device/{devEui}/command/down``. The application id is
learned from the device's uplinks and kept in the database (``lorawan_applications``), so a
command sent after a restart, before the device's next uplink, still finds it. The device's
next uplink after the downlink, or ChirpStack's ``ack`` event, acknowledges the command: this
link publishes the device's ack (``city/{vendor}/{device_id}/ack``), which the rules record
as they record every device's ack. Doing it here keeps LoRaWAN in the ingest, the one stage
that talks to ChirpStack: the rules need no second broker, codec sandbox or application map.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from cityiot.ingest.broker import BrokerLink, Delivery
from cityiot.ingest.codecs import CodecBook, PayloadError, load_json
from cityiot.ingest.devices import KnownDevice
from cityiot.ingest.intake import Intake
from cityiot.ingest.validate import Rejected, parse_rfc3339
from cityiot.storage.lorawan import load_applications, remember_applications, unacked_commands

log = logging.getLogger("cityiot.ingest.chirpstack")

LINK = "chirpstack"
UPLINK_TOPICS = (
    "application/+/device/+/event/up",
    "application/+/device/+/event/status",
    "application/+/device/+/event/ack",
)
COMMAND_TOPICS = ("city/+/+/command",)
# Event ids remembered per device, for duplicates. A duplicate comes from the broker
# redelivering what was not yet acknowledged, or from ChirpStack publishing one event twice:
# either way within the last few events of that device. One older than these (a redelivery
# after the ingest crashed and forgot them) carries the same ``time`` as the first, and an
# InfluxDB point of the same series and time overwrites the first: it is not stored twice.
RECENT_EVENTS = 32
REMEMBER_EVERY_S = 1.0  # learned application ids are written to the database this often
BUILT_IN_JSON = "json"
# A restarted ingest still waits for the acks of commands sent this recently (the latest to
# each device): a LoRaWAN class A device hears its downlink only when it next sends.
PENDING_FOR = dt.timedelta(days=1)


@dataclass(slots=True)
class _Pending:
    """A command sent down to a device, awaiting its next uplink or ChirpStack's ack."""

    command_id: str
    vendor: str
    device_id: str
    sent_ms: int


class ChirpStackLink:
    """Takes ChirpStack's events into ``intake`` and sends LoRaWAN devices' commands down.

    ``uplinks`` is the link to ChirpStack's broker (subscribed to :data:`UPLINK_TOPICS`);
    ``commands`` the link to the platform's broker (subscribed to :data:`COMMAND_TOPICS`),
    on which the devices' acks go out: None for a reader of the stream (the rules alone),
    which takes the events and leaves commands and application ids to the storing ingest.
    Run :meth:`run` beside the intake.
    """

    def __init__(
        self,
        intake: Intake,
        uplinks: BrokerLink,
        commands: BrokerLink | None,
        codec_book: CodecBook,
        session_factory: Any,
    ) -> None:
        self.intake = intake
        self.uplinks = uplinks
        self.commands = commands
        self.codec_book = codec_book
        self.sessions = session_factory
        self.applications: dict[str, str] = {}  # DevEUI (upper case) → application id
        self._unsaved: dict[str, str] = {}
        self._recent: dict[str, deque[str]] = {}  # DevEUI → the latest event ids
        self.pending: dict[str, _Pending] = {}  # DevEUI → the command awaiting its ack
        self.downlinks = 0  # commands published to ChirpStack
        self.duplicates = 0  # events dropped as a repeated deduplicationId

    async def load(self) -> None:
        """Take the application ids learned before (a command may come before an uplink),
        and the commands to LoRaWAN devices still unanswered (within ``PENDING_FOR``): the
        device's next uplink acknowledges them also after a restart."""
        self.applications.update(await load_applications(self.sessions))
        lorawan = {
            d.device_id: d.dev_eui.upper()
            for d in self.intake.devices.devices.values()
            if d.dev_eui is not None
        }
        since = dt.datetime.now(dt.UTC) - PENDING_FOR
        for command_id, device_id, vendor, sent_at in await unacked_commands(
            self.sessions, lorawan, since
        ):
            sent_ms = int(sent_at.timestamp() * 1000)
            self.pending[lorawan[device_id]] = _Pending(command_id, vendor, device_id, sent_ms)

    async def run(self) -> None:
        """Take events and commands until the intake stops; raises if a part fails."""
        parts = [asyncio.create_task(self._take_uplinks(), name="chirpstack-uplinks")]
        if self.commands is not None:
            parts.append(asyncio.create_task(self._take_commands(), name="chirpstack-commands"))
            # The storing ingest keeps what it learns; a reader of the stream learns the same.
            parts.append(asyncio.create_task(self._remember(), name="chirpstack-applications"))
        try:
            done, _ = await asyncio.wait(parts, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in parts:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self.commands is not None:
                with contextlib.suppress(Exception):
                    await self._save()

    # -- uplinks -----------------------------------------------------------------------

    async def _take_uplinks(self) -> None:
        intake = self.intake
        while not intake.stopping:
            await intake.room()
            deliveries = await self.uplinks.next_batch(0.5)
            if not deliveries or intake.stopping:
                continue  # taken while stopping: never acked, so ChirpStack's broker resends
            received_ms = int(time.time() * 1000)
            for delivery in deliveries:
                # A batch holds at most half a broker's in-flight window (or a full batch):
                # the intake seals this one before the next delivery goes in.
                await intake.room()
                if intake.stopping:
                    break  # not taken, never acked: ChirpStack's broker resends the rest
                delivery.link = LINK
                self.take(delivery, received_ms)
            intake.link.wake()  # the intake looks at the open batch now

    def take(self, delivery: Delivery, received_ms: int) -> None:
        """Put one ChirpStack event into the intake's open batch: its readings (or its dead
        letter), acknowledged with the batch."""
        intake = self.intake
        parts = delivery.topic.split("/")
        event = parts[5] if len(parts) == 6 else ""
        try:
            message = load_json(delivery.payload, intake.settings.max_payload_bytes)
            if not isinstance(message, dict):
                raise PayloadError("a ChirpStack event is a JSON object")
        except PayloadError as exc:
            self._refuse(
                delivery,
                f"ChirpStack {event or 'event'}: {exc}; set the MQTT integration's marshaler "
                "to JSON",
                received_ms,
            )
            return
        info = message.get("deviceInfo")
        info = info if isinstance(info, dict) else {}
        eui = info.get("devEui")
        if not isinstance(eui, str) and len(parts) == 6:
            eui = parts[3]
        eui = eui.upper() if isinstance(eui, str) else ""
        device = intake.devices.by_dev_eui.get(eui)
        if device is None:
            self._refuse(
                delivery,
                f"devEui {eui[:40]!r} is not registered: give the device its dev_eui attribute "
                "(cityiot devices import FILE.csv or PATCH /api/v1/devices/{id}), or check the "
                "device's DevEUI in ChirpStack",
                received_ms,
            )
            return
        application = info.get("applicationId")
        if (
            isinstance(application, str)
            and 0 < len(application) <= 64
            and self.applications.get(eui) != application
        ):
            self.applications[eui] = self._unsaved[eui] = application
        if self._repeated(eui, event, message.get("deduplicationId")):
            self.duplicates += 1
            intake.counters.duplicates += 1
            self._ack_with_batch(delivery)
            return
        if event == "ack":
            self._acked(eui, message)
            self._ack_with_batch(delivery)
            return
        try:
            ts_ms = _time(message.get("time"))
        except Rejected as exc:
            self._refuse(delivery, f"ChirpStack {event}: {exc}", received_ms, device)
            return
        if event == "up":
            translated = self._uplink(delivery, message, device, ts_ms)
            self._uplink_acks(eui, ts_ms if ts_ms is not None else received_ms)
        elif event == "status":
            translated = self._status(delivery, message, device, ts_ms)
        else:  # an event this link does not subscribe to: nothing to take
            self._ack_with_batch(delivery)
            return
        if isinstance(translated, str):
            self._refuse(delivery, translated, received_ms, device)
            return
        intake.handle(translated, received_ms)

    def _uplink(
        self, delivery: Delivery, message: dict[str, Any], device: KnownDevice, ts_ms: int | None
    ) -> Delivery | str:
        """The delivery an uplink event stands for, or why there is none."""
        fport = message.get("fPort", 0)
        fport = fport if isinstance(fport, int) and not isinstance(fport, bool) else 0
        data, decoded = message.get("data"), message.get("object")
        frame = b""
        if isinstance(data, str) and data:
            try:
                frame = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                return "ChirpStack up: data is not base64; check the MQTT integration's marshaler"
            decoded = None  # the vendor's codec decodes the frame; ChirpStack's object is not ours
        elif isinstance(decoded, dict):
            frame = orjson.dumps(decoded)
        else:
            decoded = None
        measured: dict[str, float] = {}
        rssi = _best_rssi(message.get("rxInfo"))
        if rssi is not None:
            measured["rssi_dbm"] = rssi
        return self._city(delivery, device, frame, fport, ts_ms, decoded, measured)

    def _status(
        self, delivery: Delivery, message: dict[str, Any], device: KnownDevice, ts_ms: int | None
    ) -> Delivery:
        """A status event: its ``batteryLevel`` is a reading of ``battery_pct`` where the kind
        has it (none on external power or when the device could not measure it)."""
        measured: dict[str, float] = {}
        level = message.get("batteryLevel")
        if (
            isinstance(level, int | float)
            and not isinstance(level, bool)
            and not message.get("batteryLevelUnavailable")
            and not message.get("externalPowerSource")
        ):
            measured["battery_pct"] = float(level)
        return self._city(delivery, device, b"", 0, ts_ms, None, measured)

    @staticmethod
    def _city(
        delivery: Delivery,
        device: KnownDevice,
        frame: bytes,
        fport: int,
        ts_ms: int | None,
        decoded: dict[str, Any] | None,
        measured: dict[str, float],
    ) -> Delivery:
        """The event as a delivery of the device's own topic; acknowledging it acknowledges
        the event (same packet id and connection) on the ChirpStack link."""
        return Delivery(
            f"city/{device.vendor}/{device.device_id}/telemetry",
            frame,
            delivery.mid,
            delivery.qos,
            delivery.generation,
            fport,
            ts_ms,
            None,
            LINK,
            decoded,
            measured,
        )

    def _repeated(self, eui: str, event: str, dedup: Any) -> bool:
        """Whether this event of the device was taken already (see :data:`RECENT_EVENTS`).
        An uplink and the status event it carried share their deduplicationId: the event's
        type is part of the key."""
        if not isinstance(dedup, str) or not dedup:
            return False
        key = f"{event}:{dedup}"
        recent = self._recent.get(eui)
        if recent is None:
            recent = self._recent[eui] = deque(maxlen=RECENT_EVENTS)
        elif key in recent:
            return True
        recent.append(key)
        return False

    def _ack_with_batch(self, delivery: Delivery) -> None:
        """Acknowledge ``delivery`` with the open batch, though it adds nothing to it."""
        intake = self.intake
        intake.counters.messages += 1
        batch = intake.open_batch()
        batch.spans.append((delivery, len(batch.lines), len(batch.lines)))

    def _refuse(
        self,
        delivery: Delivery,
        reason: str,
        received_ms: int,
        device: KnownDevice | None = None,
    ) -> None:
        """A dead letter of the event, acknowledged with the open batch."""
        who = (device.vendor, device.device_id) if device is not None else (None, None)
        self.intake.dead_letter(self.intake.open_batch(), delivery, reason, received_ms, who=who)
        self._ack_with_batch(delivery)

    # -- commands ----------------------------------------------------------------------

    async def _take_commands(self) -> None:
        assert self.commands is not None
        while not self.intake.stopping:
            deliveries = await self.commands.next_batch(0.5)
            for delivery in deliveries:
                self.command(delivery)
            self.commands.ack(deliveries)

    def command(self, delivery: Delivery) -> bool:
        """Send ``city/{vendor}/{device_id}/command`` down to the device when it is a LoRaWAN
        device (it has a ``dev_eui``); True when it was. A command that cannot be sent is
        answered with a failed ack saying why."""
        parts = delivery.topic.split("/")
        if len(parts) != 4:
            return False
        _, vendor, device_id, _ = parts
        device = self.intake.devices.devices.get(device_id)
        if device is None or device.vendor != vendor or device.dev_eui is None:
            return False  # not a LoRaWAN device: it takes its commands over MQTT itself
        try:
            body = load_json(delivery.payload)
        except PayloadError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            log.warning("event=lorawan_command_ignored reason=no_id topic=%s", delivery.topic)
            return True
        command_id = body["id"]
        args = body.get("args")
        data = {"name": body.get("name"), "args": args if isinstance(args, dict) else {}}
        eui = device.dev_eui.upper()
        try:
            down = self._downlink(device, eui, data)
        except PayloadError as exc:
            self._device_ack(vendor, device_id, command_id, False, f"not sent: {exc}")
            return True
        topic, payload = down
        self.uplinks.publish(topic, payload, qos=1)
        self.downlinks += 1
        self.pending[eui] = _Pending(command_id, vendor, device_id, int(time.time() * 1000))
        log.info("event=lorawan_downlink id=%s device=%s topic=%s", command_id, device_id, topic)
        return True

    def _downlink(self, device: KnownDevice, eui: str, data: dict[str, Any]) -> tuple[str, bytes]:
        """The downlink's topic and JSON for command ``data``; PayloadError saying why not."""
        application = self.applications.get(eui)
        if application is None:
            raise PayloadError(
                f"no ChirpStack application is known for devEui {eui} yet: the application is "
                "learned from the device's uplinks; send the command again after its first one"
            )
        codec_name = self.intake.devices.codecs.get(device.vendor, BUILT_IN_JSON)
        codec = self.codec_book.codecs.get(codec_name)
        encode = getattr(codec, "encode", None)
        if encode is None:
            raise PayloadError(
                f"vendor {device.vendor}'s codec {codec_name} has no downlinkEncoder: give the "
                "codec one to send commands to its LoRaWAN devices"
            )
        frame, fport = encode(data)
        lower = eui.lower()  # as ChirpStack itself writes a DevEUI
        body = {
            "devEui": lower,
            "confirmed": False,
            "fPort": fport,
            "data": base64.b64encode(frame).decode(),
        }
        return f"application/{application}/device/{lower}/command/down", orjson.dumps(body)

    def _uplink_acks(self, eui: str, uplink_ms: int) -> None:
        """The device's uplink after a downlink acknowledges the command sent with it."""
        pending = self.pending.get(eui)
        if pending is not None and uplink_ms >= pending.sent_ms:
            del self.pending[eui]
            self._device_ack(
                pending.vendor,
                pending.device_id,
                pending.command_id,
                True,
                "the device sent an uplink after the downlink",
            )

    def _acked(self, eui: str, message: dict[str, Any]) -> None:
        """ChirpStack's ack event (a confirmed downlink's answer) acknowledges the command."""
        pending = self.pending.pop(eui, None)
        if pending is None:
            return
        ok = message.get("acknowledged") is True
        self._device_ack(
            pending.vendor,
            pending.device_id,
            pending.command_id,
            ok,
            "ChirpStack: the device acknowledged the downlink"
            if ok
            else "ChirpStack: the device did not acknowledge the downlink",
        )

    def _device_ack(self, vendor: str, device_id: str, command_id: str, ok: bool, why: str) -> None:
        """Publish the device's ack on the platform's broker, where the rules record it."""
        if self.commands is None:
            return
        payload = orjson.dumps({"id": command_id, "ok": ok, "message": why})
        self.commands.publish(f"city/{vendor}/{device_id}/ack", payload, qos=1)

    # -- application ids -----------------------------------------------------------------

    async def _remember(self) -> None:
        while True:
            await asyncio.sleep(REMEMBER_EVERY_S)
            try:
                await self._save()
            except Exception as exc:  # the database away: kept in memory, written later
                log.warning("event=lorawan_applications_not_saved error=%s", exc)

    async def _save(self) -> None:
        if not self._unsaved:
            return
        unsaved, self._unsaved = self._unsaved, {}
        try:
            await remember_applications(self.sessions, unsaved)
        except BaseException:
            self._unsaved = {**unsaved, **self._unsaved}
            raise


def _time(value: Any) -> int | None:
    """The event's ``time`` (RFC 3339) as epoch ms; None when it has none."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise Rejected(f"time {value!r:.40} is not an RFC 3339 string")
    return parse_rfc3339(value)


def _best_rssi(rx_info: Any) -> float | None:
    """The strongest ``rxInfo[].rssi`` among the gateways that heard the uplink."""
    if not isinstance(rx_info, list):
        return None
    values: Iterable[Any] = (rx.get("rssi") for rx in rx_info if isinstance(rx, dict))
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return max(numbers) if numbers else None
