"""``hexframe``: a legacy vendor's compact binary frame, sent as ASCII hex digits — the
platform's encoder and the code table.

Many older NB-IoT devices in the city send fixed binary frames instead of JSON. The codec
that reads them is a codec file like any vendor's (``files/hexframe.yaml``, decoder
``files/hexframe.js``, run in the sandbox); this module writes them (the simulator, vendors
checking their firmware) and documents the codes. All integers are big-endian::

    offset  size  field
    0       1     0xA5 start byte
    1       1     version, 0x01
    2       1     kind code (the code table's)
    3       4     seq (uint32)
    7       4     timestamp, epoch seconds (uint32); 0 = none, use the receive time
    11      1     n, number of metrics
    12      5×n   n × (metric code: uint8, the code table's for the kind;
                       value: int32, the reading × 1000; flags are 0 or 1000,
                       an enum is its value's index in the table's list × 1000)
    12+5n   2     CRC-16/XMODEM of every byte before it

The codes are the format's own, fixed in ``hexframe_codes.yaml`` beside this file and never
derived from a kind's metrics: a metric added to a kind cannot shift them. A device whose
kind has no codes there is refused with a reason naming its kind.

Example — manhole ``seq`` 7 at 1763856000 s, ``tilt_deg`` 2.5 and ``cover_open`` false::

    A501010000000769224E800201000009C40200000000ABBA

``encode()`` builds a frame.
"""

from __future__ import annotations

import binascii
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml

from cityiot.domain.yamltext import load_yaml

START = 0xA5
VERSION = 0x01
SCALE = 1000  # every value travels as an int32 of the reading × 1000
CODES_FILE = Path(__file__).with_name("hexframe_codes.yaml")
_HEAD = struct.Struct(">BBBIIB")
_ITEM = struct.Struct(">Bi")
_CRC = struct.Struct(">H")
_INT32 = (-(2**31), 2**31 - 1)
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")

FrameType = Literal["float", "bool", "enum"]


class CodeTableError(ValueError):
    """The code table is wrong; the message names the file, the entry and what to change."""


@dataclass(frozen=True, slots=True)
class FrameMetric:
    """One metric's code in a kind's frames and how its value is read."""

    name: str
    code: int
    type: FrameType
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FrameKind:
    """A kind's code and its metrics' codes."""

    name: str
    code: int
    by_code: Mapping[int, FrameMetric]
    by_name: Mapping[str, FrameMetric]


@dataclass(frozen=True, slots=True)
class CodeTable:
    """The kinds hexframe devices may be of, by kind id and by kind code."""

    by_name: Mapping[str, FrameKind]
    by_code: Mapping[int, FrameKind]
    source: str


def _code(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 255:
        raise CodeTableError(f"{where}: code {value!r} must be a whole number from 1 to 255")
    return value


def _metric(name: Any, raw: Any, where: str) -> FrameMetric:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise CodeTableError(f"{where}: {name!r} is not a metric name")
    where = f"{where}.{name}"
    if not isinstance(raw, Mapping) or set(raw) - {"code", "type", "values"}:
        raise CodeTableError(f"{where}: write {{code: N, type: float|bool|enum[, values: [...]]}}")
    mtype = raw.get("type")
    if mtype not in ("float", "bool", "enum"):
        raise CodeTableError(f"{where}.type: {mtype!r}; use float, bool or enum")
    values: tuple[str, ...] = ()
    if mtype == "enum":
        listed = raw.get("values")
        if (
            not isinstance(listed, list)
            or not listed
            or not all(isinstance(v, str) for v in listed)
            or len(set(listed)) != len(listed)
        ):
            raise CodeTableError(
                f"{where}.values: an enum needs its values as distinct words, in the order "
                "of their indexes (quote off/on/yes/no)"
            )
        values = tuple(listed)
    elif "values" in raw:
        raise CodeTableError(f"{where}.values: only an enum has values; remove it")
    return FrameMetric(name, _code(raw.get("code"), where), mtype, values)


def parse_code_table(raw: Any, source: str) -> CodeTable:
    """The code table in ``raw`` (the file's mapping); :class:`CodeTableError` says what
    to change."""
    kinds_raw = raw.get("kinds") if isinstance(raw, Mapping) else None
    if not isinstance(kinds_raw, Mapping) or not kinds_raw:
        raise CodeTableError(f"{source}: write kinds: {{kind id: {{code: N, metrics: ...}}}}")
    by_name: dict[str, FrameKind] = {}
    by_code: dict[int, FrameKind] = {}
    for kind_id, entry in kinds_raw.items():
        where = f"{source}: kinds.{kind_id}"
        if not isinstance(kind_id, str) or not _NAME.fullmatch(kind_id):
            raise CodeTableError(f"{where}: not a kind id")
        if not isinstance(entry, Mapping) or not isinstance(entry.get("metrics"), Mapping):
            raise CodeTableError(f"{where}: write {{code: N, metrics: {{name: {{code, type}}}}}}")
        code = _code(entry.get("code"), where)
        if code in by_code:
            raise CodeTableError(f"{where}: code {code} is also {by_code[code].name}'s")
        metrics: dict[int, FrameMetric] = {}
        for name, spec in entry["metrics"].items():
            metric = _metric(name, spec, f"{where}.metrics")
            if metric.code in metrics:
                raise CodeTableError(
                    f"{where}.metrics.{name}: code {metric.code} is also "
                    f"{metrics[metric.code].name}'s; take the next free code"
                )
            metrics[metric.code] = metric
        kind = FrameKind(
            kind_id,
            code,
            MappingProxyType(metrics),
            MappingProxyType({m.name: m for m in metrics.values()}),
        )
        by_name[kind_id] = by_code[code] = kind
    return CodeTable(MappingProxyType(by_name), MappingProxyType(by_code), source)


def read_code_table(path: Path = CODES_FILE) -> CodeTable:
    """The code table in ``path``."""
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CodeTableError(f"{path}: cannot read the hexframe code table ({exc})") from None
    return parse_code_table(raw, str(path))


TABLE = read_code_table()
# kind id → kind code, for documents and tests.
KIND_CODES: Mapping[str, int] = MappingProxyType({k: e.code for k, e in TABLE.by_name.items()})


def encode(
    kind: str,
    metrics: Mapping[str, Any],
    ts_ms: int | None,
    seq: int,
    table: CodeTable = TABLE,
) -> bytes:
    """The hex-text frame of one reading (``ts_ms`` is truncated to whole seconds).

    Raises ValueError naming the kind or metric the code table lacks, an enum value outside
    its list, or a value that does not fit the frame's int32.
    """
    entry = table.by_name.get(kind)
    if entry is None:
        raise ValueError(
            f"kind {kind} has no hexframe codes ({table.source}); add it there, or send JSON"
        )
    body = bytearray(
        _HEAD.pack(START, VERSION, entry.code, seq, (ts_ms or 0) // 1000, len(metrics))
    )
    for name, value in metrics.items():
        metric = entry.by_name.get(name)
        if metric is None:
            raise ValueError(f"hexframe has no code for metric {name} of kind {kind}")
        if metric.type == "enum":
            if value not in metric.values:
                raise ValueError(
                    f"hexframe: {name} {value!r} is not one of {', '.join(metric.values)}"
                )
            raw = metric.values.index(value) * SCALE
        else:
            raw = round(float(value) * SCALE)
        if not _INT32[0] <= raw <= _INT32[1]:
            raise ValueError(f"hexframe: {name} {value!r} × {SCALE} does not fit an int32")
        body += _ITEM.pack(metric.code, raw)
    body += _CRC.pack(binascii.crc_hqx(bytes(body), 0))
    return body.hex().upper().encode()
