"""The audit log through the API: changes appear with who made them; admin keys only."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tests.api.conftest import ROLES, Api


async def entries(api: Api, **params: Any) -> list[dict[str, Any]]:
    r = await api.client("admin").get("/api/v1/audit", params={"limit": 1000, **params})
    assert r.status_code == 200, r.text
    assert r.json()["next_cursor"] is None
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def test_a_change_through_the_api_appears_with_its_actor(api: Api) -> None:
    r = await api.client("operator").patch(
        "/api/v1/devices/mh-1", json={"address": "驿城区解放路 3 号"}
    )
    assert r.status_code == 200, r.text

    log = await entries(api)
    newest = log[0]  # newest first: the change just made
    assert newest["action"] == "device.update"
    assert newest["resource"] == "devices/mh-1"
    assert newest["role"] == "operator"
    assert "ops desk" in newest["actor"] and newest["actor"].startswith("key:")
    assert newest["detail"] == {"address": "驿城区解放路 3 号"}
    assert newest["at"].endswith("+08:00")
    age = dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(newest["at"])
    assert dt.timedelta(0) <= age < dt.timedelta(minutes=1)
    # the fixture's keys were created through api.keys.create_key, audited as well
    created = [e for e in log if e["action"] == "key.create"]
    assert len(created) == len(ROLES)
    assert {e["detail"]["role"] for e in created} == set(ROLES)
    assert all(e["actor"] == "cli" for e in created)


async def test_filters(api: Api) -> None:
    r = await api.client("operator").patch("/api/v1/devices/mh-1", json={"lat": 32.99})
    assert r.status_code == 200, r.text
    assert len(await entries(api, action="key")) == len(ROLES)  # the family key.*
    assert len(await entries(api, action="key.create")) == len(ROLES)
    assert await entries(api, action="key.cre") == []  # not a family
    assert [e["action"] for e in await entries(api, resource="devices")] == ["device.update"]
    assert len(await entries(api, resource="devices/mh-1")) == 1
    assert await entries(api, resource="devices/mh") == []
    assert [e["role"] for e in await entries(api, actor="OPS DESK")] == ["operator"]
    assert await entries(api, actor="%") == []  # text, not a wildcard
    assert await entries(api, since="2999-01-01T00:00:00+08:00") == []
    assert len(await entries(api, until="2999-01-01T00:00:00Z")) == len(ROLES) + 1


async def test_pages(api: Api) -> None:
    everything = [e["id"] for e in await entries(api)]
    admin = api.client("admin")
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        body = (await admin.get("/api/v1/audit", params=params)).json()
        seen += [e["id"] for e in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == everything and len(seen) == len(ROLES)


async def test_admin_only(api: Api) -> None:
    for role in ROLES:
        r = await api.client(role).get("/api/v1/audit")
        assert r.status_code == (200 if role == "admin" else 403), role
    assert (await api.client(None).get("/api/v1/audit")).status_code == 401
