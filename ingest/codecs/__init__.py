"""Payload codecs: each turns one vendor's payload format into the access standard's readings.

A codec is keyed by name; a vendor's registry entry names the codec its devices use
(``json``, the access standard itself, by default). Each codec is one module here with
its own docstring describing the format, and its own test.
"""

from __future__ import annotations

from typing import Protocol

from cityiot.domain.catalogue import Kind
from cityiot.ingest.codecs.base import MAX_PAYLOAD_BYTES, PayloadError, RawReading, load_json
from cityiot.ingest.codecs.hexframe import HexFrameCodec
from cityiot.ingest.codecs.standard import StandardJsonCodec


class Codec(Protocol):
    """Decodes one MQTT payload of a device of ``kind`` into raw (not yet validated) readings."""

    name: str

    def decode(self, payload: bytes, kind: Kind) -> list[RawReading]:
        """Raise :class:`PayloadError` with a reason a vendor can act on when it cannot
        (also for a payload over the size limit or nested too deep: never another error)."""
        ...


def default_codecs(max_batch: int = 1000, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Codec]:
    """The codecs the platform ships, by name; each refuses a payload over ``max_bytes``."""
    codecs: list[Codec] = [StandardJsonCodec(max_batch, max_bytes), HexFrameCodec(max_bytes)]
    return {c.name: c for c in codecs}


__all__ = ["Codec", "PayloadError", "RawReading", "default_codecs", "load_json"]
