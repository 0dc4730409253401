"""Line-protocol safety: awkward tag values round-trip exactly and cannot inject points."""

from __future__ import annotations

import gc
import socket

import httpx
import pytest

from cityiot.platform.local_services import LocalInflux
from cityiot.storage.influx import (
    InfluxDB,
    InfluxError,
    escape_tag,
    format_field,
    quote_ident,
    quote_string,
    series_key,
)

AWKWARD = [
    "plain",
    "with space",
    "a,b",
    "k=v",
    'double"quote',
    "single'quote",
    "back\\slash",
    "two\\\\backslashes",
    "\\leading",
    "驿城区 解放路,1=号",
    "mixed \\x,= \"' 中文",
]


@pytest.mark.parametrize("value", AWKWARD)
async def test_awkward_tag_values_round_trip_exactly(
    influx: LocalInflux, influx_db: str, value: str
) -> None:
    async with InfluxDB(influx.url, influx_db) as client:
        key = series_key("manhole", {"device_id": "d1", "district": value, "vendor": "v"})
        await client.write(f"{key} {format_field('tilt_deg', 1.5)} 1700000000000\n".encode())
        results = await client.query(
            f"SELECT * FROM {quote_ident('manhole')} WHERE {quote_ident('district')} = "
            f"{quote_string(value)}"
        )
        (series,) = results[0]["series"]
        (row,) = series["values"]
        point = dict(zip(series["columns"], row, strict=True))
        assert point["district"] == value
        assert point["tilt_deg"] == 1.5
        count = await client.query("SELECT count(*) FROM /.*/")
        assert count[0]["series"][0]["values"][0][1] == 1  # one point, nothing injected


@pytest.mark.parametrize(
    "value", ["line\nbreak", "cr\rhere", "tab\there", "nul\x00", "", "trailing\\", "a\\,b", "a\\ b"]
)
def test_values_line_protocol_cannot_hold_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        escape_tag(value)


async def test_an_injection_attempt_stays_one_point(influx: LocalInflux, influx_db: str) -> None:
    attack = "x tilt_deg=99 1\nmanhole,device_id=evil tilt_deg=1"
    with pytest.raises(ValueError):
        series_key("manhole", {"device_id": attack})
    sneaky = "x tilt_deg=99 1,device_id=evil"  # no newline: must stay inside the tag value
    async with InfluxDB(influx.url, influx_db) as client:
        key = series_key("manhole", {"device_id": "d1", "district": sneaky, "vendor": "v"})
        await client.write(f"{key} tilt_deg=2.0 1700000000000\n".encode())
        rows = await client.query('SELECT "tilt_deg", "district", "device_id" FROM "manhole"')
        assert rows[0]["series"][0]["values"] == [[1700000000000, 2.0, sneaky, "d1"]]


async def test_query_strings_and_identifiers_are_quoted(
    influx: LocalInflux, influx_db: str
) -> None:
    async with InfluxDB(influx.url, influx_db) as client:
        await client.write(b"manhole,device_id=d1 tilt_deg=1.0 1700000000000\n")
        hostile = "d1' OR device_id =~ /.*/ --"
        rows = await client.query(
            f'SELECT * FROM "manhole" WHERE "device_id" = {quote_string(hostile)}'
        )
        assert "series" not in rows[0]
        async with httpx.AsyncClient() as http:  # the database still holds its point
            r = await http.get(
                f"{influx.url}/query",
                params={"db": influx_db, "q": 'SELECT count(*) FROM "manhole"'},
            )
        assert r.json()["results"][0]["series"][0]["values"][0][1] == 1


async def test_a_refused_write_says_why_and_counts_as_the_data_s_fault(
    influx: LocalInflux, influx_db: str
) -> None:
    async with InfluxDB(influx.url, influx_db) as client:
        await client.write(b"manhole,device_id=d1 tilt_deg=1.5 1700000000000\n")
        with pytest.raises(
            InfluxError, match="refused the write \\(400\\).*field type conflict"
        ) as e:
            await client.write(b"manhole,device_id=d1 tilt_deg=true 1700000001000\n")
        assert e.value.status == 400 and e.value.is_client_error


async def test_an_unreachable_influxdb_is_not_the_data_s_fault() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    async with InfluxDB(f"http://127.0.0.1:{port}", "city", timeout_s=2) as client:
        with pytest.raises(InfluxError, match="not reachable") as e:
            await client.write(b"manhole,device_id=d1 tilt_deg=1.5 1700000000000\n")
        assert e.value.status == 0 and not e.value.is_client_error


async def test_writes_leave_no_garbage_for_the_collector(
    influx: LocalInflux, influx_db: str
) -> None:
    """Each write's objects are freed as soon as it returns: a cycle per write (as an httpx
    response and its stream make) piled up between collections that then stopped the
    ingest for 50–160 ms."""
    async with InfluxDB(influx.url, influx_db) as client:
        await client.write(b"manhole,device_id=d1 tilt_deg=1.5 1700000000000\n")
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for k in range(20):
                await client.write(
                    b"manhole,device_id=d1 tilt_deg=%d %d\n" % (k, 1700000000001 + k)
                )
            gc.collect()
            left = [type(o).__module__ for o in gc.garbage]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        assert [m for m in left if m.split(".")[0] in ("httpx", "httpcore", "h11", "cityiot")] == []
        assert await client.count("manhole", "tilt_deg") == 21
