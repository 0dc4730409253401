"""Validation of raw readings against the kinds in force, compiled once per kind.

A reading is accepted whole or rejected with a reason; it is never stored half-parsed.
When a kind changes (a file, or ``PUT /kinds``), the tables are compiled again before the
next reading is checked.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from cityiot.domain.catalogue import MODEL, Kind, Metric
from cityiot.ingest.codecs.base import RawReading


class Rejected(ValueError):
    """The reading breaks the access standard; the message is the dead letter's reason."""


@dataclass(frozen=True, slots=True)
class _FloatSpec:
    low: float
    high: float
    unit: str


_BOOL = object()  # marker: the metric is a flag


@dataclass(frozen=True, slots=True)
class _EnumSpec:
    values: frozenset[str]
    shown: str


@dataclass(slots=True)
class Reading:
    """A validated reading, as the rules engine and the latest-value cache receive it."""

    device_id: str
    kind: str
    ts_ms: int
    metrics: dict[str, float | bool | str]
    ts_assumed: bool = False  # no ts was sent: the platform's receive time stands in


class KindTable:
    """One kind's metric table: name → flag marker or float range."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind.name
        self.specs: dict[str, object] = {m.name: _spec(m) for m in kind.metrics}
        self.known = ", ".join(self.specs)
        self.bounds = {
            name: (spec.low, spec.high)
            for name, spec in self.specs.items()
            if isinstance(spec, _FloatSpec)
        }
        self.flags = frozenset(name for name, spec in self.specs.items() if spec is _BOOL)
        self.words = {
            name: spec.values for name, spec in self.specs.items() if isinstance(spec, _EnumSpec)
        }

    def check(self, metrics: dict[str, Any]) -> dict[str, float | bool | str]:
        """The metrics with numbers as floats, or :class:`Rejected` naming the first fault."""
        if not metrics:
            raise Rejected("reading has no metrics")
        # Fast path: floats in range and flags, as nearly every device sends them, pass as
        # they are; anything else (ints to convert, or a fault to name) takes the full check.
        bounds = self.bounds
        for name, value in metrics.items():
            vtype = type(value)
            if vtype is float:
                low_high = bounds.get(name)
                if low_high is not None and low_high[0] <= value <= low_high[1]:
                    continue
            elif (vtype is bool and name in self.flags) or (
                vtype is str and value in self.words.get(name, ())
            ):
                continue
            return self.converted(metrics)
        return metrics

    def converted(self, metrics: dict[str, Any]) -> dict[str, float | bool | str]:
        """A copy with numbers as floats, or :class:`Rejected` naming the first fault."""
        out: dict[str, float | bool | str] = {}
        specs = self.specs
        for name, value in metrics.items():
            spec = specs.get(name)
            if spec is None:
                raise Rejected(f"unknown metric {name!r} for kind {self.kind}; known: {self.known}")
            vtype = type(value)
            if spec is _BOOL:
                if vtype is not bool:
                    raise Rejected(f"{name} must be true or false, got {_show(value)}")
                out[name] = value
                continue
            if isinstance(spec, _EnumSpec):
                if vtype is not str or value not in spec.values:
                    raise Rejected(f"{name} must be one of {spec.shown}, got {_show(value)}")
                out[name] = value
                continue
            if vtype is int:
                if not -_INT_BOUND < value < _INT_BOUND:
                    raise Rejected(f"{name} is a number too large to be a measurement")
                value = float(value)
            elif vtype is not float:
                raise Rejected(f"{name} must be a JSON number, got {_show(value)}")
            assert isinstance(spec, _FloatSpec)
            if not spec.low <= value <= spec.high:
                if not math.isfinite(value):
                    raise Rejected(f"{name} is not a finite number")
                raise Rejected(
                    f"{name}={value:g} is outside the physical range "
                    f"{spec.low:g}..{spec.high:g} {spec.unit}".rstrip()
                )
            out[name] = value
        return out


class Validator:
    """Checks readings of every kind; timestamps against a window around the receive time."""

    def __init__(self, retention_s: int, future_tolerance_s: int = 300) -> None:
        self.tables: dict[str, KindTable] = {}
        self.generation = -1
        self.compile()
        self.retention_ms = retention_s * 1000
        self.future_ms = future_tolerance_s * 1000

    def compile(self) -> None:
        """The tables of the kinds in force now."""
        self.generation = MODEL.generation()
        self.tables = {name: KindTable(kind) for name, kind in MODEL.kinds.items()}

    def timestamp(self, ts: int | str | None, received_ms: int) -> tuple[int, bool]:
        """(epoch ms, assumed): the reading's own time, or the receive time when absent."""
        if ts is None:
            return received_ms, True
        if type(ts) is int:
            ts_ms = ts
        elif type(ts) is str:
            ts_ms = parse_rfc3339(ts)
        else:
            raise Rejected(f"ts must be epoch milliseconds or an RFC 3339 string, got {_show(ts)}")
        if not -_TS_BOUND < ts_ms < _TS_BOUND:
            raise Rejected(
                f"ts {str(ts_ms)[:24]}{'…' if len(str(ts_ms)) > 24 else ''} is not a time; "
                "send epoch milliseconds (13 digits today) or an RFC 3339 string"
            )
        if ts_ms > received_ms + self.future_ms:
            ahead = (ts_ms - received_ms) / 1000
            raise Rejected(
                f"ts is {ahead:.0f} s in the future (more than {self.future_ms // 1000} s); "
                "check the device clock (ts is epoch milliseconds, not seconds or microseconds)"
            )
        if ts_ms < received_ms - self.retention_ms:
            raise Rejected(
                f"ts {ts_ms} is older than the retention ({self.retention_ms // 86_400_000} days); "
                "check the device clock (ts is epoch milliseconds, not seconds)"
            )
        return ts_ms, False

    def reading(self, device_id: str, kind: str, raw: RawReading, received_ms: int) -> Reading:
        ts_ms, assumed = self.timestamp(raw.ts, received_ms)
        if self.generation != MODEL.generation():
            self.compile()
        table = self.tables.get(kind)
        if table is None:
            raise Rejected(f"kind {kind!r} is not a kind the platform knows; see GET /kinds")
        metrics = table.check(raw.metrics)
        return Reading(device_id, kind, ts_ms, metrics, assumed)


def _spec(metric: Metric) -> object:
    if metric.type == "bool":
        return _BOOL
    if metric.type == "enum":
        return _EnumSpec(frozenset(metric.values), ", ".join(metric.values))
    return _FloatSpec(
        metric.low if metric.low is not None else -math.inf,
        metric.high if metric.high is not None else math.inf,
        metric.unit,
    )


def parse_rfc3339(text: str) -> int:
    """Epoch milliseconds of an RFC 3339 timestamp; an offset (or Z) is required."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise Rejected(
            f"ts {text[:40]!r} is not RFC 3339 (e.g. 2025-11-23T08:00:00+08:00)"
        ) from None
    if when.tzinfo is None:
        raise Rejected(f"ts {text[:40]!r} has no UTC offset; add one, e.g. +08:00 or Z")
    return int(when.timestamp() * 1000)


# Beyond these, ints cannot be floats (or any plausible epoch milliseconds): refused early.
_INT_BOUND = 10**300
_TS_BOUND = 10**16


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return f"a JSON {'array' if isinstance(value, list) else 'object'}"
    return repr(value)[:40]
