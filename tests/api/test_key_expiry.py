"""API keys that expire (issue 27, item 3): made with an expiry through the API and the
command line, shown in the lists, announced on every answer (``X-Key-Expires``) and refused
after it like a revoked key, with a 401 that says when and what to do."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import update

from cityiot.api.keys import KeyRequestError, create_key, parse_expiry
from cityiot.domain.sun import CITY_TZ
from cityiot.storage.tables.keys import ApiKey
from cityiot.storage.utc import utcnow
from tests.api.conftest import Api
from tests.api.test_stream import Events, alert_event, publish
from tests.operator_files import keys_cli
from tests.waiting import until

NOW = dt.datetime(2027, 1, 10, 4, 0, tzinfo=dt.UTC)  # 12:00 in Zhumadian


async def test_a_key_made_with_an_expiry_works_until_then_and_is_refused_after(api: Api) -> None:
    admin = api.client("admin")
    until_at = (utcnow() + dt.timedelta(days=30)).astimezone(CITY_TZ)
    r = await admin.post(
        "/api/v1/keys",
        json={"role": "operator", "name": "contractor", "expires_at": until_at.isoformat()},
    )
    assert r.status_code == 201, r.text
    made = r.json()
    assert dt.datetime.fromisoformat(made["expires_at"]) == until_at.replace(microsecond=0)
    assert made["expired"] is False
    contractor = api.client(key=made["key"])
    r = await contractor.get("/api/v1/devices")
    assert r.status_code == 200, r.text
    assert dt.datetime.fromisoformat(r.headers["X-Key-Expires"]) == until_at.replace(microsecond=0)
    r = await admin.get("/api/v1/devices")  # the test admin key never expires
    assert "X-Key-Expires" not in r.headers

    # The day comes (the row says so; every process reads it afresh).
    past = utcnow() - dt.timedelta(hours=1)
    async with api.sessions() as session, session.begin():
        await session.execute(update(ApiKey).where(ApiKey.id == made["id"]).values(expires_at=past))
    api.server.app.state.ctx.keys.forget()
    r = await contractor.get("/api/v1/devices")
    assert r.status_code == 401, r.text
    detail = r.json()["detail"]
    assert f"API key {made['id']} expired at " in detail and "ask an administrator" in detail
    assert past.astimezone(CITY_TZ).isoformat(timespec="seconds") in detail
    listed = {
        k["id"]: k for k in (await admin.get("/api/v1/keys", params={"limit": 500})).json()["items"]
    }
    assert listed[made["id"]]["expired"] is True
    assert listed[made["id"]]["revoked_at"] is None  # expired, not revoked
    assert all(k["expires_at"] is None for i, k in listed.items() if i != made["id"])


async def test_a_remembered_key_is_refused_the_moment_it_expires(api: Api) -> None:
    """The key cache would keep a principal for its time to live; the expiry travels with it
    and is checked on every request, so the cache cannot lengthen a key's life."""
    api.server.app.state.ctx.keys.ttl_s = 3600.0  # remembered for the whole test
    _, key = await create_key(
        api.sessions, "operator", expires_at=utcnow() + dt.timedelta(seconds=4)
    )
    client = api.client(key=key)
    assert (await client.get("/api/v1/devices")).status_code == 200
    assert len(api.server.app.state.ctx.keys) >= 1

    async def refused() -> str | None:
        r = await client.get("/api/v1/devices")
        return r.json()["detail"] if r.status_code == 401 else None

    assert "expired at" in await until(
        refused, timeout_s=30.0, what="the remembered key refused after its expiry"
    )
    # The stream's periodic check (KeyRing.resolve) sees it gone; identify still knows it.
    ring = api.server.app.state.ctx.keys
    assert await ring.resolve(key, 0.0) is None
    known = await ring.identify(key, 0.0)
    assert known is not None and known.expires_at is not None


async def test_an_open_stream_ends_when_its_key_expires(api: Api, publisher: mqtt.Client) -> None:
    _, key = await create_key(
        api.sessions, "operator", expires_at=utcnow() + dt.timedelta(seconds=4)
    )
    client = api.client(key=key)
    async with client.stream("GET", "/api/v1/stream") as response:
        assert response.status_code == 200
        events = Events(response)
        assert (await events.next(10.0))[0] == "ready"
        name, _ = await events.next(30.0)  # the stream's periodic key check, after the expiry
        assert name == "revoked"
        publish(publisher, "city/alerts/yicheng/manhole", alert_event("yicheng", "manhole", "mh-1"))
        with pytest.raises(StopAsyncIteration):  # ended: the alert never comes
            await events.next(30.0)
    r = await client.get("/api/v1/stream")
    assert r.status_code == 401 and "expired at" in r.json()["detail"]


@pytest.mark.parametrize(
    ("expires_at", "says"),
    [
        ("2020-01-01T00:00:00+08:00", "is already past; give a future time"),
        ("2099-01-01T00:00:00", "has no time zone; add one"),
    ],
)
async def test_an_expiry_in_the_past_or_without_zone_is_refused(
    api: Api, expires_at: str, says: str
) -> None:
    r = await api.client("admin").post(
        "/api/v1/keys", json={"role": "operator", "expires_at": expires_at}
    )
    assert r.status_code == 422, r.text
    assert says in r.json()["detail"]


def test_the_command_line_forms_of_an_expiry() -> None:
    assert parse_expiry("90d", NOW, CITY_TZ) == NOW + dt.timedelta(days=90)
    assert parse_expiry("12w", NOW, CITY_TZ) == NOW + dt.timedelta(weeks=12)
    assert parse_expiry("36h", NOW, CITY_TZ) == NOW + dt.timedelta(hours=36)
    # A date: through that whole day in the city (midnight after it, +08:00).
    assert parse_expiry("2027-03-31", NOW, CITY_TZ) == dt.datetime(
        2027, 3, 31, 16, 0, tzinfo=dt.UTC
    )
    # A time without offset is the city's; with one, as written.
    assert parse_expiry("2027-03-31T18:00", NOW, CITY_TZ) == dt.datetime(
        2027, 3, 31, 10, 0, tzinfo=dt.UTC
    )
    assert parse_expiry("2027-03-31T18:00Z", NOW, CITY_TZ) == dt.datetime(
        2027, 3, 31, 18, 0, tzinfo=dt.UTC
    )
    for bad, says in (
        ("soon", "is not a duration (90d, 12w, 36h) or an ISO date"),
        ("0d", "is no time at all"),
        ("2027-01-09", "is already past"),
    ):
        with pytest.raises(KeyRequestError) as caught:
            parse_expiry(bad, NOW, CITY_TZ)
        assert says in str(caught.value), caught.value


async def test_cli_creates_a_key_that_expires_and_lists_it(tmp_path: Path) -> None:
    async def keys(*args: str) -> tuple[int, str, str]:
        return await keys_cli(tmp_path, *args)

    code, out, err = await keys(
        "create", "--role", "operator", "--name", "contractor", "--expires", "2099-12-31"
    )
    assert code == 0, err
    assert out.startswith("cik_") and out.count("\n") == 1
    assert "expires 2100-01-01T00:00:00+08:00" in err
    key_id = out.split("_")[1]
    code, out, err = await keys("create", "--role", "operator", "--expires", "next week")
    assert code != 0 and out == ""
    assert "--expires 'next week' is not a duration (90d, 12w, 36h)" in err
    code, out, err = await keys("list")
    assert code == 0, err
    [line] = [line for line in out.splitlines() if line.startswith(key_id)]
    assert line.split("\t") == [
        key_id,
        "operator",
        "active",
        "*/*",
        "-",
        "2100-01-01T00:00:00+08:00",
        "contractor",
    ]
