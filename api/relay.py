"""The HTTP link and the networks' pushes in an API that runs apart from the ingest.

``cityiot api`` beside ``cityiot ingest`` and ``cityiot rules`` (the production shape of
docs/deployment.md) has no ingest in its process. :class:`RelayLink` takes what is posted
to ``/telemetry/…`` and pushed to ``/intake/…`` all the same: it publishes each message to
the broker on its relay topic (ingest/relay.py) at QoS 1 and answers once the broker has
it, the point where a device's own MQTT message is safe; the ingest stores it and the rules
judge it from there, with the same codec, validation, dead letters and duplicates as for a
message posted to ``cityiot run``.

What the answer says is what the ingest will do, tried here first: the message is decoded
and validated against the registry as the ingest would (:func:`try_payload`), so a message
that can never be stored is answered 422 (the HTTP link) or listed as refused (the pushes),
and still relayed, for the ingest to keep as a dead letter. Duplicates are the ingest's to
drop: the answer here counts none. Lookups the ingest makes from memory (a device by its
IMEI, a vendor's codec) are database queries here.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import select

from cityiot.api.stream import StreamHub
from cityiot.domain.catalogue import KINDS
from cityiot.domain.settings import Settings
from cityiot.ingest.codecs import CodecBook
from cityiot.ingest.codecs.files import BUILT_IN
from cityiot.ingest.codecs.trial import Undecodable, try_payload
from cityiot.ingest.http_link import NotDurable, Taken
from cityiot.ingest.relay import NO_DEVICE, REFUSE, envelope, relay_topic
from cityiot.ingest.validate import Validator
from cityiot.storage.tables.registry import Device, Vendor

log = logging.getLogger("cityiot.api.relay")

PUBACK_WAIT_S = 10.0
RETRY_AFTER_S = 5


class RelayLink:
    """Takes messages into the platform through the broker (module doc)."""

    def __init__(self, settings: Settings, sessions: Any, codecs: CodecBook, hub: StreamHub):
        self.settings = settings
        self.sessions = sessions
        self.codecs = codecs
        self.hub = hub
        self.validator = Validator(settings.retention_s, settings.future_tolerance_s)
        self.relayed = 0  # messages the broker took from here

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
        """What the ingest will take of the message, once the broker has it. Raises
        :class:`NotDurable` when the broker does not take it."""
        taken = Taken()
        if channel == "telemetry":
            taken = await self._tried(vendor, device_id, payload, fport)
        body = envelope(payload, fport=fport, ts=link_ts_ms, seq=link_seq)
        await self._publish(relay_topic(link, vendor, device_id, channel), body)
        return taken

    async def refuse(self, source: str, vendor: str, payload: bytes, reason: str) -> None:
        """Have the ingest keep ``payload`` as a dead letter of ``vendor`` for ``reason``."""
        body = envelope(payload, reason=reason)
        await self._publish(relay_topic(source, vendor, NO_DEVICE, REFUSE), body)

    async def device(
        self, vendor: str, *, imei: str | None = None, onenet_dev_id: str | None = None
    ) -> str | None:
        if imei is not None:
            query = select(Device.id, Device.vendor_id).where(Device.imei == imei)
        elif onenet_dev_id is not None:
            query = select(Device.id, Device.vendor_id).where(Device.onenet_dev_id == onenet_dev_id)
        else:
            return None
        async with self.sessions() as session:
            row = (await session.execute(query)).first()
        return row.id if row is not None and row.vendor_id == vendor else None

    async def codec_of(self, vendor: str) -> str:
        async with self.sessions() as session:
            codec = await session.scalar(select(Vendor.codec).where(Vendor.id == vendor))
        return codec or BUILT_IN

    async def decodes_frames(self, vendor: str) -> bool:
        codec = self.codecs.codecs.get(await self.codec_of(vendor))
        return getattr(codec, "decoder", None) is not None

    async def _tried(self, vendor: str, device_id: str, payload: bytes, fport: int) -> Taken:
        """What the ingest will store of the message and what it will refuse."""
        async with self.sessions() as session:
            device = await session.get(Device, device_id)
        if device is None or device.vendor_id != vendor:
            return _refused(
                f"device {device_id} is not registered to vendor {vendor}: register it "
                "(cityiot devices import FILE.csv or POST /api/v1/devices), or check the device "
                "id in the URL"
            )
        if device.decommissioned_at is not None:
            return _refused(f"device {device_id} is decommissioned; re-register it to send data")
        kind = KINDS.get(device.kind)
        codec_name = await self.codec_of(vendor)
        codec = self.codecs.codecs.get(codec_name)
        if kind is None or codec is None:
            return Taken()  # this API has not taken the kind or codec in yet: the ingest judges
        attributes = dict(device.attributes or {})  # what the ingest's device map holds
        try:
            trial = try_payload(
                codec,
                payload,
                fport=fport,
                received_ms=int(time.time() * 1000),
                validator=self.validator,
                device_id=device_id,
                kind=kind,
                attributes=attributes,
            )
        except Undecodable as exc:
            return _refused(str(exc))
        batched = len(trial.raws) > 1
        rejected = [
            (index, f"readings[{index}]: {reason}" if batched else reason)
            for index, reason in trial.rejected
        ]
        return Taken(stored=len(trial.stored), rejected=rejected)

    async def _publish(self, topic: str, body: bytes) -> None:
        try:
            await self.hub.publish_acked(topic, body, PUBACK_WAIT_S)
        except ConnectionError as exc:
            log.warning("event=relay_failed topic=%s error=%s", topic[:200], exc)
            raise NotDurable(
                f"this API runs apart from the ingest and relays messages through the broker, "
                f"which did not take this one ({exc}); nothing was taken: send it again",
                retry_after_s=RETRY_AFTER_S,
            ) from None
        self.relayed += 1


def _refused(reason: str) -> Taken:
    return Taken(rejected=[(0, reason)])
