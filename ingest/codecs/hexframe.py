"""``hexframe``: a legacy vendor's compact binary frame, sent as ASCII hex digits.

Many older NB-IoT devices in the city send fixed binary frames instead of JSON. This
codec reads them. All integers are big-endian::

    offset  size  field
    0       1     0xA5 start byte
    1       1     version, 0x01
    2       1     kind code: 1 manhole, 2 streetlight, 3 hydrant, 4 water, 5 parking
    3       4     seq (uint32)
    7       4     timestamp, epoch seconds (uint32); 0 = none, use the receive time
    11      1     n, number of metrics
    12      5×n   n × (metric code: uint8, 1-based position in the kind's catalogue;
                       value: int32, the reading × 1000; flags are 0 or 1000)
    12+5n   2     CRC-16/XMODEM of every byte before it

Example — manhole ``seq`` 7 at 1763856000 s, ``tilt_deg`` 2.5 and ``cover_open`` false::

    A501010000000769224E800201000009C40200000000ABBA

``encode()`` builds a frame, for the simulator and for vendors checking their firmware.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Mapping

from cityiot.domain.catalogue import KINDS, Kind
from cityiot.ingest.codecs.base import MAX_PAYLOAD_BYTES, PayloadError, RawReading, check_size

START = 0xA5
VERSION = 0x01
KIND_CODES: dict[str, int] = {
    "manhole": 1,
    "streetlight": 2,
    "hydrant": 3,
    "water": 4,
    "parking": 5,
}
_KIND_BY_CODE = {v: k for k, v in KIND_CODES.items()}
_HEAD = struct.Struct(">BBBIIB")
_ITEM = struct.Struct(">Bi")
_CRC = struct.Struct(">H")


def encode(kind: str, metrics: Mapping[str, float | bool], ts_ms: int | None, seq: int) -> bytes:
    """The hex-text frame of one reading (``ts_ms`` is truncated to whole seconds)."""
    spec = KINDS[kind]
    codes = {m.name: i + 1 for i, m in enumerate(spec.metrics)}
    body = bytearray(
        _HEAD.pack(START, VERSION, KIND_CODES[kind], seq, (ts_ms or 0) // 1000, len(metrics))
    )
    for name, value in metrics.items():
        body += _ITEM.pack(codes[name], round(float(value) * 1000))
    body += _CRC.pack(binascii.crc_hqx(bytes(body), 0))
    return body.hex().upper().encode()


class HexFrameCodec:
    name = "hexframe"

    def __init__(self, max_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        self.max_bytes = max_bytes

    def decode(self, payload: bytes, kind: Kind) -> list[RawReading]:
        check_size(payload, self.max_bytes)
        try:
            frame = bytes.fromhex(payload.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise PayloadError("hexframe: payload is not ASCII hex digits") from None
        if len(frame) < _HEAD.size + _CRC.size:
            raise PayloadError(f"hexframe: {len(frame)} bytes is shorter than the 14-byte minimum")
        start, version, kind_code, seq, ts_s, n = _HEAD.unpack_from(frame)
        if start != START:
            raise PayloadError(f"hexframe: start byte is 0x{start:02X}, expected 0xA5")
        if version != VERSION:
            raise PayloadError(f"hexframe: version {version} is not supported (only 1)")
        expected = _HEAD.size + n * _ITEM.size + _CRC.size
        if len(frame) != expected:
            raise PayloadError(f"hexframe: {len(frame)} bytes, but {n} metrics need {expected}")
        (crc,) = _CRC.unpack_from(frame, expected - _CRC.size)
        if crc != binascii.crc_hqx(frame[: expected - _CRC.size], 0):
            raise PayloadError("hexframe: CRC mismatch (frame corrupted in transit)")
        frame_kind = _KIND_BY_CODE.get(kind_code)
        if frame_kind != kind.name:
            raise PayloadError(
                f"hexframe: frame is of kind code {kind_code} ({frame_kind or 'unknown'}), "
                f"but the device is registered as {kind.name}"
            )
        metrics: dict[str, object] = {}
        for i in range(n):
            code, raw = _ITEM.unpack_from(frame, _HEAD.size + i * _ITEM.size)
            if not 1 <= code <= len(kind.metrics):
                raise PayloadError(f"hexframe: metric code {code} is not defined for {kind.name}")
            metric = kind.metrics[code - 1]
            if metric.type == "bool":
                if raw not in (0, 1000):
                    raise PayloadError(f"hexframe: flag {metric.name} must be 0 or 1000, got {raw}")
                metrics[metric.name] = raw == 1000
            else:
                metrics[metric.name] = raw / 1000
        return [RawReading(metrics=metrics, ts=ts_s * 1000 if ts_s else None, seq=seq)]
