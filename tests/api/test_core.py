"""The API's common behaviour: keys, roles, problem details, pagination cursors."""

from __future__ import annotations

from tests.api.conftest import Api


async def test_no_key_is_401_with_a_problem_document(api: Api) -> None:
    r = await api.client(None).get("/api/v1/devices")
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == 401 and "API key" in body["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_unknown_key_is_401(api: Api) -> None:
    r = await api.client(key="cik_0000_nope").get("/api/v1/devices")
    assert r.status_code == 401
    assert "unknown or revoked" in r.json()["detail"]


async def test_unknown_path_is_a_problem_404(api: Api) -> None:
    r = await api.client().get("/api/v1/nowhere")
    assert r.status_code == 404
    assert r.json()["detail"].startswith("no such endpoint")


async def test_a_role_without_the_right_is_403_with_what_it_needs(api: Api) -> None:
    r = await api.client("field").post("/api/v1/keys", json={"role": "admin"})
    assert r.status_code == 403
    assert "admin" in r.json()["detail"]


async def test_keys_created_through_the_api_work_and_revoking_stops_them(api: Api) -> None:
    admin = api.client("admin")
    r = await admin.post(
        "/api/v1/keys", json={"role": "department", "name": "water", "kinds": ["water"]}
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["key"].startswith("cik_") and created["kinds"] == ["water"]
    water = api.client(key=created["key"])
    listed = (await water.get("/api/v1/devices")).json()["items"]
    assert {d["id"] for d in listed} == {"wt-1", "wt-2"}
    keys = (await admin.get("/api/v1/keys")).json()["items"]
    assert created["id"] in {k["id"] for k in keys}
    assert all("key" not in k for k in keys)
    assert (await admin.delete(f"/api/v1/keys/{created['id']}")).status_code == 200
    assert (await water.get("/api/v1/devices")).status_code == 401


async def test_a_grant_that_does_not_fit_the_role_is_422(api: Api) -> None:
    r = await api.client().post("/api/v1/keys", json={"role": "field", "kinds": ["water"]})
    assert r.status_code == 422
    assert "department" in r.json()["detail"]
    r = await api.client().post("/api/v1/keys", json={"role": "department", "kinds": ["boat"]})
    assert r.status_code == 422 and "unknown kinds" in r.json()["detail"]


async def test_rate_limit_answers_429_with_retry_after(api: Api) -> None:
    api.server.app.state.ctx.limiter.rate = 1.0
    api.server.app.state.ctx.limiter.burst = 3
    api.server.app.state.ctx.limiter._buckets.clear()
    client = api.client("field")
    codes = [(await client.get("/api/v1/devices")).status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[-1] == 429
    r = await client.get("/api/v1/devices")
    assert int(r.headers["retry-after"]) >= 1
    assert "rate limit" in r.json()["detail"]


async def test_cursor_pages_cover_every_device_once(api: Api) -> None:
    client, seen, cursor = api.client(), [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/api/v1/devices", params=params)).json()
        seen += [d["id"] for d in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 10


async def test_a_forged_cursor_is_400(api: Api) -> None:
    r = await api.client().get("/api/v1/devices", params={"cursor": "bm90LWEtY3Vyc29y"})
    assert r.status_code == 400 and "cursor" in r.json()["detail"]
