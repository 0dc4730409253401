"""``json``: the access standard's own payload (docs/design.md §4).

Single reading::

    {"ts": 1763856000000, "seq": 41, "metrics": {"tilt_deg": 2.5, "cover_open": false}}

Batch (at most 1,000 readings)::

    {"readings": [{"ts": ..., "metrics": {...}}, ...]}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from cityiot.domain.catalogue import Kind
from cityiot.ingest.codecs.base import (
    MAX_PAYLOAD_BYTES,
    TOO_DEEP,
    PayloadError,
    RawReading,
    check_size,
)


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    metrics: dict[str, object] | None = None
    ts: int | str | None = None
    seq: int | None = None
    readings: list[RawReading] | None = None


class StandardJsonCodec:
    name = "json"

    def __init__(self, max_batch: int = 1000, max_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        self.max_batch = max_batch
        self.max_bytes = max_bytes
        self._decoder = msgspec.json.Decoder(_Envelope)

    def decode(
        self,
        payload: bytes,
        kind: Kind,
        attributes: Mapping[str, Any] | None = None,
        fport: int = 0,
        received_ms: int = 0,
    ) -> list[RawReading]:
        check_size(payload, self.max_bytes)
        try:
            env = self._decoder.decode(payload)
        except msgspec.ValidationError as exc:  # a subclass of DecodeError: test it first
            raise PayloadError(f"payload does not follow the access standard: {exc}") from None
        except msgspec.DecodeError as exc:
            raise PayloadError(f"invalid JSON: {exc}") from None
        except UnicodeDecodeError:
            raise PayloadError("invalid JSON: a string is not valid UTF-8") from None
        except RecursionError:  # the decoder's own guard; shallower nesting fails validation
            raise PayloadError(TOO_DEEP) from None
        if env.readings is not None:
            if env.metrics is not None or env.ts is not None or env.seq is not None:
                raise PayloadError(
                    "a batch carries only 'readings'; put ts/seq/metrics inside each"
                )
            n = len(env.readings)
            if n == 0:
                raise PayloadError("empty batch: 'readings' holds no reading")
            if n > self.max_batch:
                raise PayloadError(f"batch of {n} readings; at most {self.max_batch} per message")
            return env.readings
        if env.metrics is None:
            raise PayloadError("missing 'metrics' (or 'readings' for a batch)")
        return [RawReading(metrics=env.metrics, ts=env.ts, seq=env.seq)]
