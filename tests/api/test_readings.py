"""GET /devices/{id}/latest and /devices/{id}/readings against real InfluxDB and SQL:
freshness through the real ingest, raw and aggregated series, time zones, limits,
injection attempts, InfluxDB down, and who may read what."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from cityiot.api.server import ApiServer
from cityiot.domain.catalogue import ThingModel
from cityiot.ingest.latest import LatestValues
from cityiot.ingest.service import ingest_stage
from cityiot.ingest.validate import Reading
from cityiot.platform.local_services import LocalBroker, free_port
from tests.api.conftest import Api
from tests.ingest.conftest import publisher_for
from tests.operator_files import XINYANG, write_city

CITY = dt.timezone(dt.timedelta(hours=8))
MH1 = "manhole,device_id=mh-1,district=yicheng,vendor=acme"
MH2 = "manhole,device_id=mh-2,district=xiping,vendor=oldco"
MINUTE = 60_000


def iso(ms: int, tz: dt.tzinfo = CITY) -> str:
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)
    return moment.astimezone(tz).isoformat(timespec="milliseconds")


async def seed_series(api: Api) -> int:
    """20 manhole points of mh-1 one minute apart from a 10-minute boundary (tilt 0..19,
    cover open on odd minutes), and a decoy series of mh-2; returns the first time."""
    base = (int(time.time() * 1000) - 50 * MINUTE) // (10 * MINUTE) * (10 * MINUTE)
    lines = [
        f"{MH1} tilt_deg={float(i)},cover_open={'true' if i % 2 else 'false'} {base + i * MINUTE}\n"
        for i in range(20)
    ]
    lines += [f"{MH2} tilt_deg=77.0 {base + i * MINUTE}\n" for i in range(20)]
    await api.influx.write("".join(lines).encode())
    return base


async def series(api: Api, device: str = "mh-1", role: str = "admin", **params: Any) -> Any:
    return await api.client(role).get(f"/api/v1/devices/{device}/readings", params=params)


async def stored(api: Api, ts: int) -> bool:
    """Whether InfluxDB holds mh-1's reading of ``ts``."""
    r = await series(api, metric="tilt_deg", start=iso(ts - 1000))
    return bool(r.json()["points"])


def problem(r: Any, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    detail: str = r.json()["detail"]
    return detail


# -- series ----------------------------------------------------------------------------


async def test_raw_series_with_times_in_the_requested_zone(api: Api) -> None:
    base = await seed_series(api)
    window = {"start": iso(base), "end": iso(base + 20 * MINUTE)}
    r = await series(api, metric=["tilt_deg", "cover_open"], **window)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["every"] is None and body["agg"] is None and body["tz"] == "Asia/Shanghai"
    assert body["metrics"] == ["tilt_deg", "cover_open"]
    assert len(body["points"]) == 20 and body["next_start"] is None
    assert body["points"][0] == {"ts": iso(base), "values": {"tilt_deg": 0.0, "cover_open": False}}
    assert body["points"][3]["values"] == {"tilt_deg": 3.0, "cover_open": True}
    assert all(p["ts"].endswith("+08:00") for p in body["points"])
    assert body["start"] == iso(base)

    r = await series(api, metric="tilt_deg", tz="UTC", **window)
    assert r.json()["points"][0]["ts"] == iso(base, dt.UTC)
    assert r.json()["points"][0]["ts"].endswith("+00:00")
    r = await series(api, metric="tilt_deg", tz="Asia/Kolkata", **window)
    assert r.json()["points"][0]["ts"].endswith("+05:30")
    # Comma-separated metrics, and the decoy device's 77s never show up.
    r = await series(api, metric="tilt_deg,cover_open", **window)
    assert {p["values"]["tilt_deg"] for p in r.json()["points"]} == {float(i) for i in range(20)}


async def test_the_default_zone_is_the_citys(
    api: Api, tmp_path: Path, live_model: ThingModel
) -> None:
    base = await seed_series(api)
    window = {"start": iso(base), "end": iso(base + 20 * MINUTE)}
    city = write_city(tmp_path, XINYANG.replace("Asia/Shanghai", "Asia/Kolkata"))
    live_model.configure(None, city)  # another city's file, read by the running API
    r = await series(api, metric="tilt_deg", **window)
    assert r.status_code == 200, r.text
    assert r.json()["tz"] == "Asia/Kolkata"
    assert r.json()["points"][0]["ts"] == iso(base, dt.timezone(dt.timedelta(hours=5.5)))


async def test_aggregated_series_mean_min_max_last(api: Api) -> None:
    base = await seed_series(api)
    window = {"start": iso(base), "end": iso(base + 20 * MINUTE), "every": "10m"}
    expected = {"mean": [4.5, 14.5], "min": [0.0, 10.0], "max": [9.0, 19.0], "last": [9.0, 19.0]}
    for agg, values in expected.items():
        r = await series(api, metric="tilt_deg", agg=agg, **window)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["agg"] == {"tilt_deg": agg}
        assert [p["ts"] for p in body["points"]] == [iso(base), iso(base + 10 * MINUTE)]
        assert [p["values"]["tilt_deg"] for p in body["points"]] == values

    # Default: mean for numbers, last for flags.
    r = await series(api, metric=["tilt_deg", "cover_open"], **window)
    body = r.json()
    assert body["agg"] == {"tilt_deg": "mean", "cover_open": "last"}
    assert body["points"][1]["values"] == {"tilt_deg": 14.5, "cover_open": True}
    # Without metric, mean covers the numeric metrics only.
    r = await series(api, agg="mean", **window)
    assert "cover_open" not in r.json()["metrics"] and "tilt_deg" in r.json()["metrics"]


async def test_day_buckets_follow_the_time_zone(api: Api) -> None:
    now = int(time.time() * 1000)
    await api.influx.write(f"{MH1} tilt_deg=1.0 {now - 2 * MINUTE}\n".encode())
    start = iso(now - 3 * 86_400_000)
    for tz, offset in (("Asia/Shanghai", "T00:00:00.000+08:00"), ("UTC", "T00:00:00.000+00:00")):
        r = await series(api, metric="tilt_deg", every="1d", agg="max", start=start, tz=tz)
        assert r.status_code == 200, r.text
        assert r.json()["points"][-1]["ts"].endswith(offset)


async def test_a_flag_aggregates_with_last_only(api: Api) -> None:
    await seed_series(api)
    for agg in ("mean", "min", "max"):
        detail = problem(await series(api, metric="cover_open", every="5m", agg=agg), 422)
        assert "cover_open is a flag" in detail and "agg=last" in detail
    assert (await series(api, metric="cover_open", every="5m", agg="last")).status_code == 200


async def test_limit_and_next_start_walk_a_long_series(api: Api) -> None:
    base = await seed_series(api)
    window: dict[str, Any] = {"metric": "tilt_deg", "end": iso(base + 20 * MINUTE), "limit": 8}
    seen: list[float] = []
    start = iso(base)
    for _ in range(5):
        body = (await series(api, start=start, **window)).json()
        seen += [p["values"]["tilt_deg"] for p in body["points"]]
        if body["next_start"] is None:
            break
        start = body["next_start"]
    assert seen == [float(i) for i in range(20)]

    body = (await series(api, start=iso(base), every="1m", **window)).json()
    assert len(body["points"]) == 8 and body["next_start"] == iso(base + 8 * MINUTE)


async def test_limits_are_refused_with_what_to_change(api: Api) -> None:
    now = dt.datetime.now(CITY)
    day = dt.timedelta(days=1)

    def at(when: dt.datetime) -> str:
        return when.isoformat()

    cases = [
        ({"start": at(now - 40 * day)}, "raw series spans at most 31 days"),
        ({"start": at(now - day), "every": "1s"}, "widen every"),
        ({"start": at(now - 500 * day), "every": "1d"}, "retention"),
        ({"start": at(now), "end": at(now - day)}, "end must be after start"),
        ({"start": at(now + 3 * day), "end": at(now + 4 * day)}, "future"),
        ({"agg": "mean"}, "give every too"),
        ({"every": "5 minutes"}, "every=5m"),
        ({"every": "0s"}, "bucket width"),
        ({"every": "999999d"}, "every is at most"),
        ({"start": "yesterday"}, "RFC 3339"),
        ({"start": "2025-11-23T08:00:00"}, "with offset"),
        ({"start": "0001-01-01T00:00:00+08:00"}, "RFC 3339"),
        ({"tz": "Mars/Olympus"}, "IANA time zone"),
        ({"metric": "speed_kmh"}, "manhole has no metric 'speed_kmh'"),
        ({"metric": ","}, "metric is empty"),
    ]
    for params, says in cases:
        detail = problem(await series(api, **params), 422)
        assert says in detail, (params, detail)
    # '+' sent unencoded arrives as a space: still understood.
    client = api.client()
    start = (now - dt.timedelta(minutes=5)).replace(microsecond=0).isoformat()
    r = await client.get(f"/api/v1/devices/mh-1/readings?start={start}")
    assert r.status_code == 200, r.text


# -- latest ----------------------------------------------------------------------------


async def test_latest_answers_from_the_table(api: Api) -> None:
    r = await api.client().get("/api/v1/devices/mh-1/latest")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "device_id": "mh-1",
        "kind": "manhole",
        "district": "yicheng",
        "ts": None,
        "metrics": {},
    }
    ts = int(time.time() * 1000)
    latest = LatestValues(api.sessions)
    latest.merge([Reading("mh-1", "manhole", ts - 5000, {"tilt_deg": 2.5, "battery_pct": 87})])
    latest.merge([Reading("mh-1", "manhole", ts, {"tilt_deg": 3.0, "cover_open": True})])
    assert await latest.flush() == 1
    body = (await api.client().get("/api/v1/devices/mh-1/latest")).json()
    assert body["ts"] == iso(ts)
    assert body["metrics"] == {
        "battery_pct": {"value": 87, "ts": iso(ts - 5000)},
        "cover_open": {"value": True, "ts": iso(ts)},
        "tilt_deg": {"value": 3.0, "ts": iso(ts)},
    }
    detail = problem(await api.client().get("/api/v1/devices/nope-9/latest"), 404)
    assert "nope-9" in detail


async def test_latest_is_fresh_within_a_second_of_influxdb_through_the_real_ingest(
    api: Api, broker: LocalBroker
) -> None:
    settings = api.settings.model_copy(
        update={"mqtt_client_id": f"ingest-{uuid.uuid4().hex[:8]}", "flush_interval_ms": 50}
    )
    publisher = publisher_for(broker)
    client = api.client("department")  # the API reads the table the ingest writes
    try:
        async with ingest_stage(settings) as ingest:
            task = asyncio.create_task(ingest.run())
            try:
                # Flushes come every latest_flush_ms (a second at most); the first after the
                # batch is stored serves the reading: the flushes are counted, not timed.
                latest = ingest.latest
                assert latest is not None and latest.flush_s <= 1.0
                before = latest.flushes  # a flush with nothing changed is not counted
                ts = int(time.time() * 1000)
                payload = orjson.dumps({"ts": ts, "metrics": {"tilt_deg": 4.25}})
                publisher.publish("city/acme/mh-1/telemetry", payload, qos=1).wait_for_publish(5)
                in_influx = in_api = None  # the flushes done when each was first seen
                deadline = time.monotonic() + 10
                while in_influx is None or in_api is None:
                    assert time.monotonic() < deadline, "the reading never arrived"
                    flushes = latest.flushes
                    if in_influx is None and await stored(api, ts):
                        in_influx = flushes
                    if in_api is None:
                        body = (await client.get("/api/v1/devices/mh-1/latest")).json()
                        if body["metrics"]:
                            in_api = latest.flushes
                    await asyncio.sleep(0.01)
                # Nothing else changed: the first flush with anything to write wrote it.
                assert in_api == before + 1, f"served after flush {in_api}, not {before + 1}"
                assert body["metrics"]["tilt_deg"] == {"value": 4.25, "ts": iso(ts)}
            finally:
                await ingest.stop()
                await task
    finally:
        publisher.disconnect()
        publisher.loop_stop()


# -- injection -------------------------------------------------------------------------

PAYLOADS = [
    '"; DROP DATABASE x',
    'tilt_deg" FROM manhole; SELECT * FROM "x',
    "' OR 1=1 --",
    "1h) fill(",
    "tilt_deg\n; DROP MEASUREMENT manhole",
    "mean(tilt_deg)) ; DROP SERIES FROM manhole; SELECT (",
]


async def _database_intact(api: Api) -> None:
    databases = await api.influx.query("SHOW DATABASES")
    names = {row[0] for row in databases[0]["series"][0]["values"]}
    assert api.settings.influx_db in names
    measurements = await api.influx.query("SHOW MEASUREMENTS")
    assert ["manhole"] in measurements[0]["series"][0]["values"]
    assert await api.influx.count("manhole", "tilt_deg", "WHERE \"device_id\" = 'mh-1'") == 20


async def test_injection_through_every_parameter_stays_data(api: Api) -> None:
    base = await seed_series(api)
    good = {"metric": "tilt_deg", "start": iso(base), "end": iso(base + 20 * MINUTE)}
    admin = api.client()
    for payload in PAYLOADS:
        for name in ("metric", "start", "end", "every", "agg", "tz"):
            params = {**good, name: payload}
            if name == "agg":
                params["every"] = "5m"
            r = await admin.get("/api/v1/devices/mh-1/readings", params=params)
            assert r.status_code == 422, (name, payload, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
        for path in ("readings", "latest"):
            r = await admin.get(f"/api/v1/devices/{quote(payload, safe='')}/{path}", params=good)
            assert r.status_code == 404, (payload, r.text)
        r = await admin.get("/api/v1/parking/availability", params={"district": payload})
        assert r.status_code == 422, r.text
        # lot_id is only ever a bound value: it matches no lot.
        r = await admin.get("/api/v1/parking/availability", params={"lot_id": payload})
        assert r.status_code in (200, 422), r.text
        if r.status_code == 200:
            assert r.json()["lots"] == [] and r.json()["overall"]["total"] == 0
    await _database_intact(api)
    # And the honest query still answers.
    r = await admin.get("/api/v1/devices/mh-1/readings", params=good)
    assert len(r.json()["points"]) == 20


async def test_influxdb_down_is_a_503_and_latest_still_answers(api: Api) -> None:
    settings = api.settings.model_copy(
        update={"influx_url": f"http://127.0.0.1:{free_port()}", "api_port": free_port()}
    )
    async with ApiServer(settings) as server:
        client = api.client()
        r = await client.get(f"{server.url}/api/v1/devices/mh-1/readings")
        detail = problem(r, 503)
        assert "InfluxDB does not answer" in detail
        assert (await client.get(f"{server.url}/api/v1/devices/mh-1/latest")).status_code == 200


# -- who may read what -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["latest", "readings"])
async def test_roles_and_grants(api: Api, path: str) -> None:
    def get(role: str | None, device: str) -> Any:
        return api.client(role).get(f"/api/v1/devices/{device}/{path}")

    for role in ("admin", "operator", "field", "department", "vendor"):
        assert (await get(role, "mh-1")).status_code == 200, role
    for role in ("admin", "operator", "field"):
        assert (await get(role, "sl-2")).status_code == 200, role
    # Outside the grant reads exactly like a device that does not exist (issue 22, finding 10).
    for role, device in (("department", "sl-1"), ("department", "mh-2"), ("vendor", "mh-2")):
        outside, missing = await get(role, device), await get(role, "nope")
        problem(outside, 404), problem(missing, 404)
        assert outside.text.replace(device, "ID") == missing.text.replace("nope", "ID")
    assert "among the devices this key may see" in problem(await get("vendor", "mh-2"), 404)
    problem(await get(None, "mh-1"), 401)
