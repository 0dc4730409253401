"""Values the OpenAPI schema rules out are refused (422), as schemathesis found they were not
(issue 22, finding 16): a number where a time is due, a kind that does not exist."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    """Request validation does not depend on the database: SQLite only."""
    return sqlite_url


@pytest.mark.parametrize("path", ["/api/v1/alerts", "/api/v1/audit", "/api/v1/deadletters"])
async def test_since_and_until_are_times_not_numbers(api: Api, path: str) -> None:
    client = api.client()
    for name, value in (("since", "-293"), ("until", "0.5"), ("since", "1796562235")):
        r = await client.get(path, params={name: value})
        assert r.status_code == 422, (name, value, r.text)
        assert "2026-11-23T08:00:00+08:00" in r.text
    for value in ("2026-11-23T08:00:00+08:00", "2026-11-23T08:00:00Z", "2026-11-23 08:00"):
        r = await client.get(path, params={"since": value})
        assert r.status_code == 200, (value, r.text)


async def test_a_silence_starts_at_a_time_not_a_number(api: Api) -> None:
    silence = {
        "matchers": [{"label": "district", "op": "=", "value": "yicheng"}],
        "starts_at": 0,
        "ends_at": "2030-11-23T17:00:00+08:00",
    }
    r = await api.client().post("/api/v1/silences", json=silence)
    assert r.status_code == 422 and "starts_at" in r.text
    r = await api.client().post("/api/v1/silences", json={**silence, "starts_at": None})
    assert r.status_code == 201, r.text


async def test_the_rule_catalogue_refuses_an_unknown_kind(api: Api) -> None:
    r = await api.client().get("/api/v1/rules", params={"kind": "null"})
    assert r.status_code == 422 and "use one of" in r.json()["detail"]
    assert (await api.client().get("/api/v1/rules", params={"kind": "hydrant"})).status_code == 200
