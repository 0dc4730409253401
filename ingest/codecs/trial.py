"""What a payload would store, without storing it: ``POST /codecs/{name}/decode`` and
``cityiot codecs decode`` both answer with :func:`try_payload`, which decodes, maps and
validates exactly as the intake does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from cityiot.domain.catalogue import MODEL, Kind
from cityiot.ingest.codecs.base import PayloadError, RawReading
from cityiot.ingest.codecs.scripted import FileCodec
from cityiot.ingest.validate import Reading, Rejected, Validator


class Undecodable(PayloadError):
    """The payload would be a dead letter (the message is its reason); ``output`` is what
    the decoder gave when only the mapping failed."""

    def __init__(self, reason: str, output: list[dict[str, Any]] | None = None) -> None:
        super().__init__(reason)
        self.output = output


@dataclass
class Trial:
    """One payload tried: the decoder's output, the raw readings mapped from it, and, with
    a device, each reading as it would be stored or its reason for a dead letter."""

    output: list[dict[str, Any]]
    raws: list[RawReading]
    stored: list[tuple[int, Reading]] = field(default_factory=list)  # (index, reading)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (index, reason)


def try_payload(
    codec: Any,
    payload: bytes,
    *,
    fport: int,
    received_ms: int,
    validator: Validator,
    device_id: str | None = None,
    kind: Kind | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Trial:
    """Decode and map ``payload`` for the device ``device_id`` of ``kind`` with
    ``attributes`` (or, with no device, with none: only the times are then checked).
    Raises :class:`Undecodable` with the reason the ingest's dead letter would carry."""
    attributes = attributes or {}
    try:
        if not isinstance(codec, FileCodec):  # json: the readings are the output
            raws = codec.decode(payload, kind or _stand_in({}), attributes, fport, received_ms)
            output = [msgspec.structs.asdict(r) for r in raws]
        else:
            output = codec.outputs(payload, fport, received_ms)
            try:
                raws = [codec.reading(o, kind or _stand_in(o), attributes) for o in output]
            except PayloadError as exc:
                raise Undecodable(str(exc), output) from None
    except Undecodable:
        raise
    except PayloadError as exc:
        raise Undecodable(str(exc)) from None
    trial = Trial(output, list(raws))
    for index, raw in enumerate(raws):
        try:
            if device_id is None or kind is None:
                ts_ms, assumed = validator.timestamp(raw.ts, received_ms)
                reading = Reading("", "", ts_ms, dict(raw.metrics), assumed)
            else:
                reading = validator.reading(device_id, kind.name, raw, received_ms)
        except Rejected as exc:
            trial.rejected.append((index, str(exc)))
            continue
        trial.stored.append((index, reading))
    return trial


def _stand_in(output: Mapping[str, Any]) -> Kind:
    """With no device: the kind the output names (so its own kind check passes), or a kind
    of no metrics, only for mapping."""
    said = output.get("kind")
    known = MODEL.kinds.get(said) if isinstance(said, str) else None
    if known is not None:
        return known
    return Kind(str(said or "-"), "", "", (), 0)
