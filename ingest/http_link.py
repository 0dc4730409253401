"""The HTTP link (docs/design.md §4a): messages of devices and gateways that cannot speak
MQTT, posted to the API, taken into the ingest's open batch like a broker delivery.

The same intake decodes them (the vendor's codec, with ``?fport=``), validates them, makes
dead letters of what it refuses, drops a repeated ``seq`` and hands the readings to the
rules; :meth:`HttpLink.take` returns only once the batch that holds them is durable (stored
in InfluxDB or spooled), as a broker's PUBACK would be sent. While InfluxDB and the spool
both refuse, or the batch is not durable within ``wait_s``, :class:`NotDurable` says so and
the caller answers 503: the sender retries (a ``seq`` keeps a retry from being stored twice).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from cityiot.ingest.broker import Delivery
from cityiot.ingest.intake import Intake
from cityiot.ingest.storing import Store

WAIT_S = 30.0  # the longest a sender is held for its message to become durable
BUSY_FACTOR = 4  # open-batch messages, in full batches, beyond which the link answers busy


class NotDurable(Exception):
    """The message is not (yet) durable; the message says why and what the sender does."""

    def __init__(self, reason: str, retry_after_s: int = 5) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


@dataclass
class Taken:
    """What became of one posted message."""

    stored: int = 0  # readings taken (durable when take returns)
    duplicates: int = 0  # readings dropped as a repeated seq
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (index, reason)


class PushLink(Protocol):
    """What the HTTP link and the networks' push receivers take messages through: this
    process's ingest (:class:`HttpLink`), or the broker when the API runs apart from the
    ingest (cityiot/api/relay.py, ingest/relay.py)."""

    async def take(
        self,
        vendor: str,
        device_id: str,
        payload: bytes,
        fport: int = 0,
        *,
        channel: str = "telemetry",
        link_ts_ms: int | None = None,
        link_seq: int | None = None,
        link: str = "http",
    ) -> Taken: ...

    async def refuse(self, source: str, vendor: str, payload: bytes, reason: str) -> None: ...

    async def device(
        self, vendor: str, *, imei: str | None = None, onenet_dev_id: str | None = None
    ) -> str | None: ...

    async def codec_of(self, vendor: str) -> str: ...

    async def decodes_frames(self, vendor: str) -> bool: ...


class HttpLink:
    """Takes posted messages into ``intake``; ``store`` says when they are durable."""

    def __init__(self, intake: Intake, store: Store, wait_s: float = WAIT_S) -> None:
        self.intake = intake
        self.store = store
        self.wait_s = wait_s

    def refusing(self) -> str:
        """Why no message can be taken now ("" when one can)."""
        if self.intake.stopping:  # its last batch is sealed: a message taken now waits in vain
            return (
                "the ingest is stopping; nothing was taken: send the message again once the "
                "platform is back"
            )
        if self.store.refusing_since is not None:
            return (
                "InfluxDB and the ingest's spool both refuse to store readings now; nothing "
                "was taken: send the message again later"
            )
        intake = self.intake
        if len(intake.batch.spans) >= BUSY_FACTOR * intake.sealed.max_messages:
            return "the ingest is behind with storing; nothing was taken: send it again shortly"
        return ""

    async def take(
        self,
        vendor: str,
        device_id: str,
        payload: bytes,
        fport: int = 0,
        *,
        channel: str = "telemetry",
        link_ts_ms: int | None = None,
        link_seq: int | None = None,
        link: str = "http",
    ) -> Taken:
        """Decode, validate and keep one message of ``device_id`` of ``vendor``; returns once
        what was taken is durable. Raises :class:`NotDurable`.

        ``channel`` is the MQTT topic's last level: ``status`` takes ``{"online": …}``
        as presence. ``link_ts_ms`` and ``link_seq`` are the time and sequence number a
        network platform gave the message, used where the codec's output gives none; ``link``
        names the link it came by (``http``, ``ctwing``, ``onenet``)."""
        why = self.refusing()
        if why:
            raise NotDurable(why)
        topic = f"city/{vendor}/{device_id}/{channel}"
        delivery = Delivery(topic, payload, 0, 0, -1, fport, link_ts_ms, link_seq, link)
        intake = self.intake
        return await self._handled(lambda received_ms: intake.handle(delivery, received_ms))

    # -- what the push receivers look up (an API apart asks the database instead) --------

    async def device(
        self, vendor: str, *, imei: str | None = None, onenet_dev_id: str | None = None
    ) -> str | None:
        """The id of ``vendor``'s registered device with this identity; None when there is
        none or it is another vendor's (a vendor learns nothing of other vendors' devices)."""
        devices = self.intake.devices
        if imei is not None:
            found = devices.by_imei.get(imei)
        elif onenet_dev_id is not None:
            found = devices.by_onenet_dev_id.get(onenet_dev_id)
        else:
            found = None
        return found.device_id if found is not None and found.vendor == vendor else None

    async def codec_of(self, vendor: str) -> str:
        """The name of ``vendor``'s codec (``json`` for an unknown vendor)."""
        return self.intake.devices.codecs.get(vendor, "json")

    async def decodes_frames(self, vendor: str) -> bool:
        """Whether ``vendor``'s codec decodes frames (has an uplink decoder script)."""
        codec = self.intake.codecs.get(await self.codec_of(vendor))
        return getattr(codec, "decoder", None) is not None

    async def refuse(self, source: str, vendor: str, payload: bytes, reason: str) -> None:
        """Keep ``payload``, a message of ``vendor`` received from ``source`` (``ctwing``)
        that names no device of the vendor, as a dead letter for ``reason``; returns once it
        is durable. Raises :class:`NotDurable`."""
        why = self.refusing()
        if why:
            raise NotDurable(why)
        # A topic of two levels: the dead letter names the vendor and no device.
        delivery = Delivery(f"{source}/{vendor}", payload, 0, 0, -1)
        intake = self.intake

        def dead_letter(received_ms: int) -> None:
            intake.dead_letter(intake.open_batch(), delivery, reason, received_ms)

        await self._handled(dead_letter)

    async def _handled(self, handle: Callable[[int], None]) -> Taken:
        """What ``handle`` (given the receive time) put in the open batch, once durable."""
        intake = self.intake
        counters = intake.counters
        duplicates = counters.duplicates
        batch = intake.batch
        first = len(batch.lines)
        refusals: list[tuple[int, str]] = []
        intake.refusals = refusals
        try:
            handle(int(time.time() * 1000))
        finally:
            intake.refusals = None
        counters.http_messages += 1
        taken = Taken(
            stored=len(intake.batch.lines) - first if intake.batch is batch else 0,
            duplicates=counters.duplicates - duplicates,
            rejected=refusals,
        )
        # Dead letters are durable with their batch too: wait whenever something was kept.
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        intake.batch.waiters.append(done)
        intake.link.wake()
        try:
            await asyncio.wait_for(asyncio.shield(done), self.wait_s)
        except TimeoutError:
            raise NotDurable(
                f"the message was taken but is not stored after {self.wait_s:g} s (InfluxDB "
                "or the spool is slow); it may still be stored: send it again with the same "
                "seq, which is then dropped as a duplicate",
                retry_after_s=10,
            ) from None
        return taken
