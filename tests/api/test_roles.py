"""Every endpoint with every role: allowed roles get past the guard, the others get 403, and
no key gets 401. The table below must name every operation in the OpenAPI document, so a
new endpoint cannot ship without its policy being stated here."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from cityiot.platform.local_services import LocalBroker, LocalInflux
from tests.api.conftest import ROLES, Api, running_api

ALL = frozenset(ROLES)
STAFF = frozenset({"admin", "operator", "field"})
READERS = STAFF | {"department"}  # the city's own staff and departments
MANAGERS = frozenset({"admin", "operator"})
ADMIN = frozenset({"admin"})
PUBLIC = frozenset()  # no key needed
BY_TOKEN = frozenset({"intake token"})  # no key opens it: the vendor's intake token does
# Anyone reaches it, with a key or without: signing in (its body is then checked: 422), and
# asking who is signed in (204 without a session cookie).
ANYONE = frozenset({"anyone"})

POLICY: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/api/v1/healthz"): PUBLIC,
    ("GET", "/api/v1/readyz"): PUBLIC,
    ("GET", "/api/v1/devices"): ALL,
    ("POST", "/api/v1/devices"): MANAGERS,
    ("POST", "/api/v1/devices/import"): MANAGERS,
    ("GET", "/api/v1/devices/{device_id}"): ALL,
    ("PATCH", "/api/v1/devices/{device_id}"): MANAGERS,
    ("DELETE", "/api/v1/devices/{device_id}"): MANAGERS,
    ("GET", "/api/v1/devices/{device_id}/latest"): ALL,
    ("GET", "/api/v1/devices/{device_id}/readings"): ALL,
    ("GET", "/api/v1/vendors"): MANAGERS | {"vendor"},
    ("POST", "/api/v1/vendors"): ADMIN,
    ("GET", "/api/v1/vendors/{vendor_id}"): MANAGERS | {"vendor"},
    ("PATCH", "/api/v1/vendors/{vendor_id}"): ADMIN,
    ("POST", "/api/v1/vendors/{vendor_id}/credentials"): ADMIN,
    ("GET", "/api/v1/vendors/{vendor_id}/credentials"): MANAGERS,
    ("DELETE", "/api/v1/vendors/{vendor_id}/credentials/{username}"): ADMIN,
    ("POST", "/api/v1/vendors/{vendor_id}/intake-token"): ADMIN,
    ("GET", "/api/v1/alerts"): ALL,
    ("GET", "/api/v1/alerts/{alert_id}"): ALL,
    ("POST", "/api/v1/alerts/{alert_id}/ack"): STAFF,
    ("GET", "/api/v1/silences"): MANAGERS,
    ("POST", "/api/v1/silences"): MANAGERS,
    ("DELETE", "/api/v1/silences/{silence_id}"): MANAGERS,
    ("GET", "/api/v1/maintenance-windows"): MANAGERS,
    ("POST", "/api/v1/maintenance-windows"): MANAGERS,
    ("DELETE", "/api/v1/maintenance-windows/{window_id}"): MANAGERS,
    ("GET", "/api/v1/rules"): READERS,
    ("GET", "/api/v1/rules/{rule_id}"): READERS,
    ("PUT", "/api/v1/rules/{rule_id}"): ADMIN,
    ("GET", "/api/v1/kinds"): ALL,
    ("GET", "/api/v1/kinds/{kind}"): ALL,
    ("PUT", "/api/v1/kinds/{kind}"): ADMIN,
    ("GET", "/api/v1/codecs"): ALL,
    ("GET", "/api/v1/codecs/{name}"): ALL,  # a shipped codec; others' are staff's (test_codecs_api)
    ("PUT", "/api/v1/codecs/{name}"): ADMIN,
    ("POST", "/api/v1/codecs/{name}/decode"): MANAGERS | {"vendor"},
    ("GET", "/api/v1/teams"): READERS,
    ("GET", "/api/v1/workorders"): READERS,
    ("GET", "/api/v1/workorders/{work_order_id}"): READERS,
    ("GET", "/api/v1/workorders/{work_order_id}/alerts"): READERS,
    ("POST", "/api/v1/workorders/{work_order_id}/accept"): STAFF,
    ("POST", "/api/v1/workorders/{work_order_id}/on_site"): STAFF,
    ("POST", "/api/v1/workorders/{work_order_id}/resolve"): STAFF,
    ("POST", "/api/v1/workorders/{work_order_id}/close"): STAFF,
    ("GET", "/api/v1/parking/availability"): READERS,
    ("GET", "/api/v1/stats/overview"): READERS,
    ("POST", "/api/v1/telemetry/{vendor}/{device_id}"): ADMIN | {"vendor"},
    ("POST", "/api/v1/intake/ctwing/{vendor}"): BY_TOKEN,
    ("GET", "/api/v1/intake/onenet/{vendor}"): BY_TOKEN,
    ("POST", "/api/v1/intake/onenet/{vendor}"): BY_TOKEN,
    ("GET", "/api/v1/deadletters"): MANAGERS | {"vendor"},
    ("GET", "/api/v1/deadletters/{dead_letter_id}"): MANAGERS | {"vendor"},
    ("GET", "/api/v1/stream"): ALL,
    ("POST", "/api/v1/keys"): ADMIN,
    ("GET", "/api/v1/keys"): ADMIN,
    ("DELETE", "/api/v1/keys/{key_id}"): ADMIN,
    ("GET", "/api/v1/audit"): ADMIN,
    ("POST", "/api/v1/session"): ANYONE,
    ("GET", "/api/v1/session"): ANYONE,
    ("DELETE", "/api/v1/session"): ALL,  # a key has no session to end: 404, not 403
    ("POST", "/api/v1/session/password"): ALL,  # a key has no password: 404 (here 422)
    ("GET", "/api/v1/users"): ADMIN,
    ("POST", "/api/v1/users"): ADMIN,
    ("GET", "/api/v1/users/{username}"): ADMIN,
    ("PATCH", "/api/v1/users/{username}"): ADMIN,
}

# Path parameters: items every allowed role may see (acme's manhole in yicheng).
SAMPLES = {
    "device_id": "mh-1",
    "vendor_id": "acme",
    "vendor": "acme",
    "username": "acme-nobody",
    "alert_id": "0" * 32,
    "silence_id": "0" * 32,
    "window_id": "0" * 32,
    "rule_id": "manhole_cover_open",
    "kind": "manhole",
    "name": "hexframe",
    "work_order_id": "0" * 32,
    "dead_letter_id": "999999",
    "key_id": "000000000000",
}


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    """Roles do not depend on the database: SQLite only (the other API tests run both)."""
    return sqlite_url


def _operations(api: Api) -> list[tuple[str, str]]:
    paths = api.server.app.openapi()["paths"]
    return sorted(
        (method.upper(), path)
        for path, item in paths.items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    )


async def test_the_policy_names_every_operation(api: Api) -> None:
    operations = set(_operations(api))
    assert operations - set(POLICY) == set(), "state the policy of these new endpoints"
    assert set(POLICY) - operations == set(), "these endpoints are gone: drop them here"


@pytest.fixture(scope="module")
async def roles_api(
    influx: LocalInflux, broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Api]:
    """One API for every operation's roles: no request here carries a body or names an id
    that exists, so none changes what the next one meets (one API each took a minute)."""
    run_dir = tmp_path_factory.mktemp("roles")
    db_url = f"sqlite+aiosqlite:///{run_dir / 'cityiot.db'}"
    influx_db = f"roles_{uuid.uuid4().hex[:10]}"
    async with running_api(db_url, influx, influx_db, broker, run_dir) as harness:
        yield harness


@pytest.mark.parametrize("method,path", sorted(POLICY))
async def test_each_role_on(roles_api: Api, method: str, path: str) -> None:
    api = roles_api
    url = path.format(**SAMPLES)
    allowed = POLICY[(method, path)]
    stream = path.endswith("/stream")

    async def status_of(role: str | None) -> int:
        client = api.client(role)
        if stream:  # read the status line only: the stream itself never ends
            async with client.stream(method, url) as response:
                return response.status_code
        return (await client.request(method, url)).status_code

    if not allowed:
        assert await status_of(None) == 200
        return
    if allowed is ANYONE:
        for role in (None, *ROLES):
            assert await status_of(role) not in (401, 403), f"{path} refused {role}"
        return
    if allowed is BY_TOKEN:
        for role in (None, *ROLES):
            assert await status_of(role) == 401, f"{role}'s key must not open {path}"
        return
    assert await status_of(None) == 401
    for role in ROLES:
        status = await status_of(role)
        if role in allowed:
            assert status not in (401, 403), f"{role} should be allowed: {status}"
        else:
            assert status == 403, f"{role} should be refused: {status}"


async def test_the_last_active_admin_key_cannot_be_revoked(api: Api) -> None:
    """Issue 22, finding 16: an admin could revoke its own last admin key, locking every
    administrator out of the API."""
    admin = api.client()
    own = next(k for k in (await admin.get("/api/v1/keys")).json()["items"] if k["role"] == "admin")
    r = await admin.delete(f"/api/v1/keys/{own['id']}")
    assert r.status_code == 409
    assert "last active admin key" in r.json()["detail"]
    assert "create another admin key first" in r.json()["detail"]
    assert (await admin.get("/api/v1/keys")).status_code == 200  # still works
    r = await admin.post("/api/v1/keys", json={"role": "admin", "name": "second admin"})
    assert r.status_code == 201
    second = api.client(key=r.json()["key"])
    assert (await second.delete(f"/api/v1/keys/{own['id']}")).status_code == 200
    r = await second.delete(f"/api/v1/keys/{r.json()['id']}")
    assert r.status_code == 409 and "last active admin key" in r.json()["detail"]
    assert (await second.get("/api/v1/keys")).status_code == 200
