"""Readings of one device: the latest value of each metric, and series from InfluxDB.

``GET /devices/{id}/latest`` answers from the latest-value table the ingest keeps (no
InfluxDB query). ``GET /devices/{id}/readings`` asks InfluxDB, with the query built so no
parameter can become query text: metric names come from the kind's catalogue and are
quoted identifiers, ``every`` and ``tz`` are checked against strict forms, the device id
and the times travel as bound parameters. Limits on range × resolution keep one call from
loading InfluxDB with more than 10,000 points.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import time
import zoneinfo
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from cityiot.api.access import allow, check_sees
from cityiot.api.context import ApiContext, context
from cityiot.api.keys import Principal
from cityiot.api.problems import Problem
from cityiot.api.routes.devices import missing_device
from cityiot.domain.catalogue import KINDS, MODEL, is_valid_id
from cityiot.domain.sun import CITY_TZ
from cityiot.storage.influx import InfluxDB, InfluxError, quote_ident, quote_string
from cityiot.storage.tables.registry import Device, LatestReading

log = logging.getLogger("cityiot.api")

router = APIRouter(tags=["readings"])

MAX_POINTS = 10_000  # per answer, raw or aggregated
MAX_RAW_SPAN = dt.timedelta(days=31)  # a raw series scans at most this much
MAX_EVERY = dt.timedelta(days=366)
DEFAULT_SPAN = dt.timedelta(hours=1)
RETENTION_SLACK = dt.timedelta(days=1)  # "now - retention" computed a moment ago still passes
FUTURE_SLACK = dt.timedelta(days=1)  # readings are never more than 5 min ahead of the clock
Aggregate = Literal["mean", "min", "max", "last"]

_EVERY = re.compile(r"^([1-9][0-9]{0,6})([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# A '+' left unencoded in a URL arrives as a space: "…T08:00:00 08:00".
_PLUS_AS_SPACE = re.compile(r" (\d{2}:?\d{2})$")

# 401, 422 and 429 are documented for every endpoint by the app; these say more.
RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"description": "the key's role does not read devices"},
    404: {"description": "no such device, or one outside the key's grant (alike)"},
}
SERIES_RESPONSES: dict[int | str, dict[str, Any]] = {
    **RESPONSES,
    422: {
        "description": "a parameter is invalid, or the range is too long for the resolution; "
        "the detail says what to change"
    },
    502: {"description": "InfluxDB refused the query"},
    503: {"description": "InfluxDB is not reachable"},
}

DeviceId = Annotated[str, Path(description="the device's id", examples=["mh-0001"])]


class LatestValue(BaseModel):
    value: float | bool | str = Field(description="the metric's newest value")
    ts: str = Field(
        description="when it was measured (RFC 3339, the city's offset: +08:00 in Zhumadian)"
    )


class Latest(BaseModel):
    """The newest value of each metric a device has reported, kept by the ingest."""

    device_id: str
    kind: str
    district: str
    ts: str | None = Field(
        description="time of the newest reading (RFC 3339, the city's offset); null: never reported"
    )
    metrics: dict[str, LatestValue] = Field(
        description="metric → newest value and its time; empty when the device never reported"
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "device_id": "mh-0001",
                    "kind": "manhole",
                    "district": "yicheng",
                    "ts": "2025-11-23T08:05:00.000+08:00",
                    "metrics": {
                        "tilt_deg": {"value": 2.5, "ts": "2025-11-23T08:05:00.000+08:00"},
                        "cover_open": {"value": False, "ts": "2025-11-23T08:05:00.000+08:00"},
                        "battery_pct": {"value": 87.0, "ts": "2025-11-23T07:00:00.000+08:00"},
                    },
                }
            ]
        }
    }


class SeriesPoint(BaseModel):
    ts: str = Field(description="the point's time, or its bucket's start, in the requested tz")
    values: dict[str, float | bool | str] = Field(description="metric → value; absent: no value")


class Series(BaseModel):
    """A device's readings in ``[start, end)``: raw points, or one per ``every`` bucket."""

    device_id: str
    kind: str
    metrics: list[str]
    start: str
    end: str
    tz: str
    every: str | None = Field(description="bucket width; null: raw points")
    agg: dict[str, Aggregate] | None = Field(
        description="metric → aggregation of each bucket; null for raw points"
    )
    points: list[SeriesPoint]
    next_start: str | None = Field(
        description="more points follow: ask again with start set to this time"
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "device_id": "mh-0001",
                    "kind": "manhole",
                    "metrics": ["tilt_deg", "cover_open"],
                    "start": "2025-11-23T08:00:00.000+08:00",
                    "end": "2025-11-23T09:00:00.000+08:00",
                    "tz": "Asia/Shanghai",
                    "every": "15m",
                    "agg": {"tilt_deg": "mean", "cover_open": "last"},
                    "points": [
                        {
                            "ts": "2025-11-23T08:00:00.000+08:00",
                            "values": {"tilt_deg": 2.4, "cover_open": False},
                        },
                        {
                            "ts": "2025-11-23T08:15:00.000+08:00",
                            "values": {"tilt_deg": 2.6, "cover_open": False},
                        },
                    ],
                    "next_start": None,
                }
            ]
        }
    }


@router.get(
    "/devices/{device_id}/latest",
    response_model=Latest,
    responses=RESPONSES,
    summary="Latest value and time of each metric",
)
async def latest(
    device_id: DeviceId,
    principal: Annotated[Principal, Depends(allow())],
    ctx: Annotated[ApiContext, Depends(context)],
) -> Latest:
    """The newest value of each metric of the device, as the ingest last wrote it (within a
    second of storing it in InfluxDB). Every role; department and vendor keys only for
    devices within their grant."""
    async with ctx.sessions() as session:
        device = await _device(session, device_id, principal)
        row = await session.get(LatestReading, device.id)
    metrics: dict[str, LatestValue] = {}
    if row is not None:
        for name, pair in sorted((row.metrics or {}).items()):
            value, ts = pair
            metrics[name] = LatestValue(value=value, ts=_time(int(ts), CITY_TZ))
    return Latest(
        device_id=device.id,
        kind=device.kind,
        district=device.district,
        ts=_time(row.ts_ms, CITY_TZ) if row is not None and metrics else None,
        metrics=metrics,
    )


@router.get(
    "/devices/{device_id}/readings",
    response_model=Series,
    responses=SERIES_RESPONSES,
    summary="Raw or aggregated series of a device's metrics",
)
async def readings(
    device_id: DeviceId,
    principal: Annotated[Principal, Depends(allow())],
    ctx: Annotated[ApiContext, Depends(context)],
    metric: Annotated[
        list[str] | None,
        Query(
            description="metric name(s) of the device's kind; repeat or separate by commas. "
            "Omitted: every metric (with mean/min/max: every numeric metric)",
            examples=["tilt_deg"],
        ),
    ] = None,
    start: Annotated[
        str | None,
        Query(
            max_length=64,
            description="RFC 3339 with offset (encode + as %2B); default end - 1 h",
            examples=["2025-11-23T08:00:00+08:00"],
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
    end: Annotated[
        str | None,
        Query(
            max_length=64,
            description="RFC 3339 with offset, exclusive; default now",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
    every: Annotated[
        str | None,
        Query(
            max_length=16,
            description="bucket width: a number and s, m, h or d (e.g. 5m); omitted: raw points",
            examples=["5m"],
            json_schema_extra={"pattern": _EVERY.pattern},
        ),
    ] = None,
    agg: Annotated[
        Aggregate | None,
        Query(
            description="aggregation per bucket (needs every); default mean for numbers and "
            "last for flags and enums. Flags (true/false metrics) and enums (words) take "
            "last only"
        ),
    ] = None,
    tz: Annotated[
        str | None,
        Query(
            max_length=64,
            description="IANA time zone of the answer's times and of day buckets; "
            "default the city's (its city file's timezone)",
            examples=["Asia/Shanghai"],
        ),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_POINTS, description="points per answer (1-10000)")
    ] = 1000,
) -> Series:
    """Readings of the device in ``[start, end)``.

    Without ``every``: raw points, at most 31 days per call. With ``every``: one point per
    bucket (buckets without data are left out), at most 10,000 buckets per call
    ((end - start) / every). When more points remain than ``limit``, ``next_start`` says
    where to continue.
    """
    async with ctx.sessions() as session:
        device = await _device(session, device_id, principal)
    tz = tz or MODEL.city.timezone  # read now: the city file may differ per deployment
    zone = _zone(tz)
    now = dt.datetime.now(dt.UTC)
    until = _instant(end, "end") if end is not None else now
    since = _instant(start, "start") if start is not None else until - DEFAULT_SPAN
    if until <= since:
        raise Problem(422, "end must be after start; swap them or widen the range")
    if since > now + FUTURE_SLACK:
        raise Problem(422, "start lies in the future, where there are no readings; move it back")
    until = min(until, now + FUTURE_SLACK)  # nothing is stored later: count no empty buckets
    oldest = now - dt.timedelta(seconds=ctx.settings.retention_s) - RETENTION_SLACK
    if since < oldest:
        raise Problem(
            422,
            f"start lies beyond the retention of {ctx.settings.retention}: nothing older than "
            f"{_iso(oldest, zone)} is kept; move start later",
        )
    bucket = _every(every) if every is not None else None
    if agg is not None and bucket is None:
        raise Problem(422, f"agg={agg} aggregates buckets: give every too (e.g. every=5m)")
    span = until - since
    if bucket is None and span > MAX_RAW_SPAN:
        raise Problem(
            422,
            f"a raw series spans at most {MAX_RAW_SPAN.days} days; narrow start/end or "
            f"aggregate with every (e.g. every={_suggest_every(span)})",
        )
    if bucket is not None and span / bucket > MAX_POINTS:
        raise Problem(
            422,
            f"{span / bucket:.0f} buckets of {every} exceed {MAX_POINTS:,} per call; "
            f"narrow start/end or widen every (e.g. every={_suggest_every(span)})",
        )

    influx = _influx(ctx)
    names = _metrics(device.kind, metric, agg if bucket is not None else None)
    aggs = _aggregates(device.kind, names, agg) if bucket is not None else None

    table = quote_ident(device.kind)
    if aggs is None:
        columns = ", ".join(quote_ident(n) for n in names)
    else:
        columns = ", ".join(f"{aggs[n]}({quote_ident(n)}) AS {quote_ident(n)}" for n in names)
    q = (
        f"SELECT {columns} FROM {table} "
        'WHERE "device_id" = $device_id AND time >= $start AND time < $end'
    )
    if every is not None:
        # every matched ^[1-9][0-9]{0,6}[smhd]$ and tz is a known zone name: no query text.
        q += f" GROUP BY time({every}) fill(none)"
    q += f" LIMIT {limit + 1}"
    if every is not None:
        q += f" tz({quote_string(tz)})"
    params = {"device_id": device.id, "start": _ns(since), "end": _ns(until)}
    rows = await _query(influx, q, params)

    more = len(rows) > limit
    rows = rows[:limit]
    points = []
    for row in rows:
        values = {n: v for n, v in zip(names, row[1:], strict=False) if v is not None}
        points.append(SeriesPoint(ts=_time(int(row[0]), zone), values=values))
    next_start = None
    if more and rows:
        step_ms = int(bucket.total_seconds() * 1000) if bucket is not None else 1
        next_start = _time(int(rows[-1][0]) + step_ms, zone)
    return Series(
        device_id=device.id,
        kind=device.kind,
        metrics=names,
        start=_iso(since, zone),
        end=_iso(until, zone),
        tz=tz,
        every=every,
        agg=aggs,
        points=points,
        next_start=next_start,
    )


async def _device(session: Any, device_id: str, principal: Principal) -> Device:
    # An id that cannot exist is not looked up: 404 whatever it holds.
    device = await session.get(Device, device_id) if is_valid_id(device_id) else None
    if device is None:
        raise Problem(404, missing_device(device_id))
    check_sees(principal, device.kind, device.district, device.vendor_id, missing_device(device_id))
    return device  # type: ignore[no-any-return]


def _influx(ctx: ApiContext) -> InfluxDB:
    if ctx.influx is None:
        raise Problem(
            503,
            "this API has no InfluxDB to read series from; set CITYIOT_INFLUX_URL",
            title="Service unavailable",
        )
    return ctx.influx


async def _query(influx: InfluxDB, q: str, params: dict[str, Any]) -> list[list[Any]]:
    started = time.perf_counter()
    try:
        results = await influx.query(q, params=params)
    except InfluxError as exc:
        log.warning("event=series_query_failed status=%d error=%s", exc.status, exc)
        if exc.status == 0:
            raise Problem(
                503,
                "InfluxDB does not answer (down or overloaded); series are unavailable, "
                "retry in a minute",
                title="Service unavailable",
            ) from None
        if "time zone" in str(exc):
            raise Problem(422, "InfluxDB does not know this tz; use another IANA name") from None
        raise Problem(502, f"InfluxDB refused the query: {exc}", title="Bad gateway") from None
    log.debug("event=series_query ms=%.1f", (time.perf_counter() - started) * 1000)
    series = results[0].get("series") if results else None
    return list(series[0]["values"]) if series else []


def _metrics(kind: str, asked: list[str] | None, agg: Aggregate | None) -> list[str]:
    catalogue = KINDS[kind]
    if not asked:
        numeric_only = agg in ("mean", "min", "max")
        return [m.name for m in catalogue.metrics if not (numeric_only and m.type != "float")]
    names: list[str] = []
    for item in asked:
        for name in item.split(","):
            name = name.strip()
            if not name:
                continue
            if catalogue.metric(name) is None:
                known = ", ".join(m.name for m in catalogue.metrics)
                raise Problem(422, f"{kind} has no metric {name[:80]!r}; use one of {known}")
            if name not in names:
                names.append(name)
    if not names:
        raise Problem(422, "metric is empty; name one or more metrics, or omit it for all")
    return names


def _aggregates(kind: str, names: list[str], agg: Aggregate | None) -> dict[str, Aggregate]:
    catalogue = KINDS[kind]
    out: dict[str, Aggregate] = {}
    for name in names:
        mtype = catalogue.metric(name).type  # type: ignore[union-attr]
        flag = mtype != "float"
        if flag and agg not in (None, "last"):
            what = "a flag (true/false)" if mtype == "bool" else "an enum (a word)"
            raise Problem(
                422,
                f"{name} is {what}: it can only be aggregated with last, not "
                f"{agg}; use agg=last or ask for it separately",
            )
        out[name] = agg or ("last" if flag else "mean")
    return out


@functools.cache
def _zones() -> frozenset[str]:
    # "localtime" names the machine's zone, which the answer should not depend on.
    return frozenset(zoneinfo.available_timezones() - {"localtime", "Factory"})


def _zone(name: str) -> zoneinfo.ZoneInfo:
    if name not in _zones():
        raise Problem(
            422,
            f"tz {name[:64]!r} is not an IANA time zone name; use e.g. Asia/Shanghai or UTC",
        )
    return zoneinfo.ZoneInfo(name)


def _instant(value: str, name: str) -> dt.datetime:
    text = _PLUS_AS_SPACE.sub(r"+\1", value.strip())
    when: dt.datetime | None
    try:
        when = dt.datetime.fromisoformat(text)
        when = when.astimezone(dt.UTC) if when.tzinfo is not None and len(text) >= 16 else None
    except (ValueError, OverflowError):  # OverflowError: e.g. year 1 at +08:00
        when = None
    if when is None:
        raise Problem(
            422,
            f"{name} {value[:64]!r} is not an RFC 3339 time with offset; write it like "
            "2025-11-23T08:00:00+08:00 (in a URL the + as %2B) or 2025-11-23T00:00:00Z",
        )
    return when


def _every(value: str) -> dt.timedelta:
    match = _EVERY.fullmatch(value)
    if match is None:
        raise Problem(
            422,
            f"every {value[:16]!r} is not a bucket width; write a number and s, m, h or d, "
            "e.g. every=30s, every=5m, every=1h or every=1d",
        )
    width = dt.timedelta(seconds=int(match[1]) * _UNIT_S[match[2]])
    if width > MAX_EVERY:
        raise Problem(422, f"every is at most {MAX_EVERY.days}d; use a smaller bucket")
    return width


def _suggest_every(span: dt.timedelta) -> str:
    seconds = span.total_seconds() / MAX_POINTS
    for unit, size in (("s", 1), ("m", 60), ("h", 3600), ("d", 86400)):
        if seconds <= size * 60 or unit == "d":
            return f"{max(1, int(-(-seconds // size)))}{unit}"
    return "1d"


def _ns(when: dt.datetime) -> int:
    return (when - _EPOCH) // dt.timedelta(microseconds=1) * 1000


def _time(ms: int, zone: dt.tzinfo) -> str:
    return (
        (_EPOCH + dt.timedelta(milliseconds=ms)).astimezone(zone).isoformat(timespec="milliseconds")
    )


def _iso(when: dt.datetime, zone: dt.tzinfo) -> str:
    return when.astimezone(zone).isoformat(timespec="milliseconds")
