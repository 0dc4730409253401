"""Messages an API without an ingest of its own relays through the broker (docs/design.md §4a).

Where the API runs apart from the ingest (``cityiot api`` beside ``cityiot ingest`` and
``cityiot rules``), a message posted to the HTTP link or pushed by CTWing or OneNET cannot
enter an ingest in the API's process. The API publishes it instead, at QoS 1 and with the
platform's account, to ``cityiot/relay/{link}/{vendor}/{device_id}/{channel}``; the ingest and
the rules' reader subscribe to it in their persistent sessions like to the devices' topics,
and take it exactly as if it had been posted to them: the vendor's codec, validation, dead
letters, duplicates, presence, rules. The broker's PUBACK is the API's answer — the same
point where a device's own MQTT message is safe.

The payload is an :class:`Envelope`: the message's bytes and what the link gave with them
(fPort, time, sequence number), or, for a message that names no device of the vendor, the
reason to keep it as a dead letter (device ``-``, channel ``refuse``). Vendors' accounts can
publish only under ``city/{vendor}/…``, so nothing but the platform writes here.
"""

from __future__ import annotations

import msgspec

from cityiot.ingest.broker import Delivery

RELAY_PREFIX = "cityiot/relay/"
RELAY_TOPIC = "cityiot/relay/#"
NO_DEVICE = "-"
REFUSE = "refuse"


class Envelope(msgspec.Struct, omit_defaults=True):
    """A relayed message: ``payload`` as posted, and what its link gave with it."""

    payload: bytes
    fport: int = 0
    ts: int | None = None  # the link's time of the message (CTWing's timestamp, OneNET's at)
    seq: int | None = None  # the link's sequence number (CTWing's upPacketSN)
    reason: str | None = None  # a refusal: why the message is kept as a dead letter


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Envelope).decode


def relay_topic(link: str, vendor: str, device_id: str, channel: str) -> str:
    """``cityiot/relay/{link}/{vendor}/{device_id}/{channel}``."""
    return f"{RELAY_PREFIX}{link}/{vendor}/{device_id}/{channel}"


def envelope(
    payload: bytes,
    *,
    fport: int = 0,
    ts: int | None = None,
    seq: int | None = None,
    reason: str | None = None,
) -> bytes:
    """The relayed message's bytes."""
    return _encode(Envelope(payload, fport, ts, seq, reason))


def unwrap(delivery: Delivery) -> str | None:
    """Turn a relayed ``delivery`` into the message it carries, in place: the device's topic
    ``city/{vendor}/{device_id}/{channel}``, its payload and what its link gave. Returns the
    reason to keep it as a dead letter instead (a refusal, or a relay message that cannot be
    read), with the topic naming only the link and vendor."""
    parts = delivery.topic[len(RELAY_PREFIX) :].split("/")
    if len(parts) != 4:
        topic, delivery.topic = delivery.topic, "relay/-"
        return f"relay topic {topic[:200]!r} is not {RELAY_PREFIX}{{link}}/{{vendor}}/…"
    link, vendor, device_id, channel = parts
    try:
        message = _decode(delivery.payload)
    except msgspec.DecodeError as exc:
        delivery.topic = f"{link}/{vendor}"
        return f"a relayed message could not be read ({exc}); the API that sent it is newer?"
    delivery.link = link
    delivery.payload = message.payload
    if channel == REFUSE or message.reason is not None:
        delivery.topic = f"{link}/{vendor}"
        return message.reason or "refused by the API that relayed it"
    delivery.topic = f"city/{vendor}/{device_id}/{channel}"
    delivery.fport = message.fport
    delivery.link_ts_ms = message.ts
    delivery.link_seq = message.seq
    return None
