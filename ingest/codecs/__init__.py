"""Payload codecs: each turns one vendor's payload format into the access standard's readings.

A codec is keyed by name; a vendor's registry entry names the codec its devices use
(``json``, the access standard itself, by default). Every other codec is a file
(docs/design.md §4a): the vendor's TS013 JavaScript decoder run in a sandbox
(:mod:`.sandbox`), its output mapped onto the device's kind (:mod:`.mapping`), or the
vendor's JSON mapped alone. The shipped ones are in ``files/`` (``hexframe``, the legacy
frame); ``CITYIOT_CODECS_PATH`` and ``PUT /codecs/{name}`` add more (:mod:`.book`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Protocol

from cityiot.domain.catalogue import Kind
from cityiot.ingest.codecs.base import MAX_PAYLOAD_BYTES, PayloadError, RawReading, load_json
from cityiot.ingest.codecs.book import CodecBook, shipped_book


class Codec(Protocol):
    """Decodes one payload of a device of ``kind`` into raw (not yet validated) readings."""

    name: str

    def decode(
        self,
        payload: bytes,
        kind: Kind,
        attributes: Mapping[str, Any] = ...,
        fport: int = 0,
        received_ms: int = 0,
    ) -> list[RawReading]:
        """Raise :class:`PayloadError` with a reason a vendor can act on when it cannot
        (also for a payload over the size limit or nested too deep: never another error).
        ``attributes`` are the device's registry attributes (a mapping's names may read
        them), ``fport`` the frame's port (0 when the link has none)."""
        ...


@functools.lru_cache(maxsize=8)
def default_codecs(max_batch: int = 1000, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Codec]:
    """The codecs the platform ships, by name; each refuses a payload over ``max_bytes``.
    One set per limits in a process (each file codec holds its sandbox)."""
    return shipped_book(max_batch, max_bytes).codecs


__all__ = ["Codec", "CodecBook", "PayloadError", "RawReading", "default_codecs", "load_json"]
