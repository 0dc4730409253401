"""People sign in as people (DESIGN §10; issue 27, items 2, 3 and 5): accounts with the roles
and grants of keys, password rules, lockout, idle expiry, CSRF protection, the audit of every
sign-in, failure, lock and refused request, and the abuse of these doors: a brute-force
sign-in, a stolen cookie replayed after sign-out or idle expiry, a state-changing request
without the session's CSRF token. A real API (uvicorn) on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
from sqlalchemy import select, update

from cityiot.api.people import COOKIE, IDLE, LOCK_AFTER
from cityiot.storage.tables.audit import AuditEntry
from cityiot.storage.tables.people import User, UserSession
from cityiot.storage.utc import utcnow
from tests.api.conftest import Api
from tests.api.test_stream import Events
from tests.waiting import until

PASSWORD = "paper lantern river 42"


async def _account(api: Api, username: str, role: str = "operator", **grant: Any) -> str:
    r = await api.client("admin").post(
        "/api/v1/users", json={"username": username, "role": role, "password": PASSWORD, **grant}
    )
    assert r.status_code == 201, r.text
    return PASSWORD


def _browser(api: Api) -> httpx.AsyncClient:
    """A client as a browser is: no key, keeps the cookies it is given."""
    client = httpx.AsyncClient(base_url=api.url, timeout=30.0)
    api._clients.append(client)
    return client


async def _sign_in(api: Api, username: str, password: str = PASSWORD) -> tuple[Any, str]:
    browser = _browser(api)
    r = await browser.post("/api/v1/session", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return browser, r.json()["csrf_token"]


async def _audit(api: Api, action: str, resource: str | None = None) -> list[AuditEntry]:
    async with api.sessions() as session:
        stmt = select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        if resource is not None:
            stmt = stmt.where(AuditEntry.resource == resource)
        return list(await session.scalars(stmt))


async def test_a_person_signs_in_with_a_password_and_acts_with_the_role_granted(api: Api) -> None:
    admin = api.client("admin")
    r = await admin.post(
        "/api/v1/users",
        json={
            "username": "zhang.wei",
            "role": "department",
            "display_name": "张伟",
            "kinds": ["manhole", "parking"],
            "districts": ["yicheng"],
        },
    )
    assert r.status_code == 201, r.text
    made = r.json()
    password = made["password"]  # none given: one is made and answered this once
    assert len(password) >= 12 and made["role"] == "department" and made["locked_until"] is None
    assert "password" not in (await admin.get("/api/v1/users/zhang.wei")).json()

    browser = _browser(api)
    r = await browser.post("/api/v1/session", json={"username": "zhang.wei", "password": password})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["role"] == "department" and body["username"] == "zhang.wei"
    assert body["grant"]["kinds"] == ["manhole", "parking"] and body["csrf_token"]
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Max-Age" not in cookie  # the browser forgets it on closing; the server when idle
    # The grant of a department key: two devices of the registry, the others hidden.
    r = await browser.get("/api/v1/devices")
    assert r.status_code == 200, r.text
    assert {d["id"] for d in r.json()["items"]} == {"mh-1", "pk-1"}
    assert (await browser.get("/api/v1/devices/sl-1")).status_code == 404
    r = await browser.get("/api/v1/keys")  # an admin's endpoint
    assert r.status_code == 403
    assert "a department account may not do this" in r.json()["detail"]
    again = (await browser.get("/api/v1/session")).json()  # what the console asks after a reload
    assert again["csrf_token"] == body["csrf_token"] and again["display_name"] == "张伟"

    signed_in = await _audit(api, "session.sign_in", "users/zhang.wei")
    assert [e.detail["address"] for e in signed_in] == ["127.0.0.1"]
    assert [e.actor for e in await _audit(api, "user.create", "users/zhang.wei")] == [
        "key:" + api.keys["admin"].split("_")[1] + " (test admin)"
    ]
    async with api.sessions() as session:
        row = await session.get(User, "zhang.wei")
    assert row is not None and row.password_hash.startswith("$argon2id$")
    assert password not in row.password_hash


async def test_passwords_usernames_and_grants_are_checked_with_what_to_change(api: Api) -> None:
    admin = api.client("admin")

    async def refused(status: int, **body: Any) -> str:
        r = await admin.post("/api/v1/users", json={"role": "operator", **body})
        assert r.status_code == status, r.text
        return str(r.json()["detail"])

    assert "at least 12" in await refused(422, username="wang.fang", password="short pw 1")
    name = "wang.fang.zhumadian"
    assert "too easy" in await refused(422, username=name, password=name.upper())
    assert "too easy" in await refused(422, username="wang.fang", password="aaaaaaaaaaaaaaa")
    await refused(422, username="Wang Fang", password=PASSWORD)  # not a username
    r = await admin.post(
        "/api/v1/users", json={"username": "crew", "role": "field", "password": PASSWORD}
    )
    assert r.status_code == 422 and "field account acts for a team" in r.json()["detail"]
    await _account(api, "wang.fang")
    assert "already an account" in await refused(409, username="wang.fang", password=PASSWORD)
    for role in ("operator", "field", "department", "vendor"):  # admins only
        r = await api.client(role).post(
            "/api/v1/users", json={"username": "x.y", "role": "admin", "password": PASSWORD}
        )
        assert r.status_code == 403, role


async def test_a_brute_force_sign_in_locks_the_account_and_is_audited(api: Api) -> None:
    await _account(api, "li.na")
    attacker = _browser(api)
    for attempt in range(LOCK_AFTER):
        r = await attacker.post(
            "/api/v1/session", json={"username": "li.na", "password": f"guess number {attempt}"}
        )
        assert r.status_code == 401, r.text
        assert r.json()["detail"] == "wrong username or password"
        assert COOKIE not in r.headers.get("set-cookie", "")
    # Locked now: even the right password is refused, saying until when and what to do.
    r = await attacker.post("/api/v1/session", json={"username": "li.na", "password": PASSWORD})
    assert r.status_code == 423, r.text
    assert int(r.headers["Retry-After"]) > 14 * 60
    assert "locked after 5 failed sign-ins until" in r.json()["detail"]
    assert "cityiot users unlock li.na" in r.json()["detail"]
    # An unknown name answers as a wrong password does (nothing tells names apart).
    r = await attacker.post("/api/v1/session", json={"username": "nobody", "password": PASSWORD})
    assert r.status_code == 401 and r.json()["detail"] == "wrong username or password"

    fails = await _audit(api, "session.fail", "users/li.na")
    assert [e.detail["reason"] for e in fails] == ["wrong password"] * LOCK_AFTER + ["locked"]
    assert all(e.detail["address"] == "127.0.0.1" for e in fails)
    assert [e.detail["failures"] for e in fails[:LOCK_AFTER]] == list(range(1, LOCK_AFTER + 1))
    assert len(await _audit(api, "session.lock", "users/li.na")) == 1
    assert [e.detail["reason"] for e in await _audit(api, "session.fail", "users/nobody")] == [
        "unknown account"
    ]
    listed = (await api.client("admin").get("/api/v1/users/li.na")).json()
    assert listed["locked_until"] is not None

    # The lock ends by itself (its end moved to the past here) ...
    async with api.sessions() as session, session.begin():
        past = utcnow() - dt.timedelta(seconds=1)
        await session.execute(
            update(User).where(User.username == "li.na").values(locked_until=past)
        )
    await _sign_in(api, "li.na")
    # ... or an administrator lifts it.
    for attempt in range(LOCK_AFTER):
        await attacker.post(
            "/api/v1/session", json={"username": "li.na", "password": f"no {attempt}"}
        )
    r = await attacker.post("/api/v1/session", json={"username": "li.na", "password": PASSWORD})
    assert r.status_code == 423
    r = await api.client("admin").patch("/api/v1/users/li.na", json={"unlock": True})
    assert r.status_code == 200 and r.json()["locked_until"] is None
    await _sign_in(api, "li.na")


async def test_failures_older_than_the_window_do_not_count_toward_a_lock(api: Api) -> None:
    await _account(api, "old.failures")
    browser = _browser(api)
    for attempt in range(LOCK_AFTER - 1):
        r = await browser.post(
            "/api/v1/session", json={"username": "old.failures", "password": f"nope {attempt}"}
        )
        assert r.status_code == 401
    # Those four were 16 minutes ago: a fifth failure now starts a new count.
    async with api.sessions() as session, session.begin():
        row = await session.get(User, "old.failures")
        assert row is not None and len(row.failures) == LOCK_AFTER - 1
        row.failures = [t - 16 * 60 for t in row.failures]
    r = await browser.post("/api/v1/session", json={"username": "old.failures", "password": "x1"})
    assert r.status_code == 401
    await _sign_in(api, "old.failures")


async def test_a_request_that_changes_something_needs_the_session_csrf_token(api: Api) -> None:
    await _account(api, "admin.person", role="admin")
    browser, csrf = await _sign_in(api, "admin.person")
    new = {"username": "made.by.person", "role": "operator", "password": PASSWORD}
    # What a page of another origin can make the browser send: the cookie, but no token.
    for headers in ({}, {"X-CSRF-Token": "0" * 64}, {"X-CSRF-Token": ""}):
        r = await browser.post("/api/v1/users", json=new, headers=headers)
        assert r.status_code == 403, (headers, r.text)
        assert "X-CSRF-Token" in r.json()["detail"]
    r = await browser.patch("/api/v1/devices/mh-1", json={"address": "cross-site"})
    assert r.status_code == 403
    assert (await api.client("admin").get("/api/v1/users/made.by.person")).status_code == 404
    # Reading needs no token; changing with it works and is audited as the person.
    assert (await browser.get("/api/v1/users")).status_code == 200
    r = await browser.post("/api/v1/users", json=new, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    made = await _audit(api, "user.create", "users/made.by.person")
    assert [e.actor for e in made] == ["user:admin.person"]
    # The token of another session does not fit this one.
    _, other_csrf = await _sign_in(api, "admin.person")
    r = await browser.delete("/api/v1/session", headers={"X-CSRF-Token": other_csrf})
    assert r.status_code == 403
    # A key needs no token (machines have no cookie for another site to send).
    r = await api.client("admin").patch("/api/v1/users/made.by.person", json={"disabled": True})
    assert r.status_code == 200 and r.json()["disabled"] is True


async def test_a_stolen_cookie_is_refused_after_sign_out_and_after_idle_expiry(api: Api) -> None:
    await _account(api, "chen.jie")
    browser, csrf = await _sign_in(api, "chen.jie")
    stolen = browser.cookies[COOKIE]
    r = await browser.delete("/api/v1/session", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 204
    assert "Max-Age=0" in r.headers["set-cookie"]  # the browser forgets it
    thief = _browser(api)
    thief.cookies.set(COOKIE, stolen)
    r = await thief.get("/api/v1/devices")
    assert r.status_code == 401 and "signed out" in r.json()["detail"]
    r = await thief.get("/api/v1/session")
    assert r.status_code == 401
    assert (await _browser(api).get("/api/v1/session")).status_code == 204  # no cookie at all
    assert len(await _audit(api, "session.sign_out", "users/chen.jie")) == 1

    # Idle: a session last used 30 minutes ago has ended; 29 minutes ago, it is alive.
    browser, _ = await _sign_in(api, "chen.jie")
    token = browser.cookies[COOKIE]

    async def last_used(ago: dt.timedelta) -> dt.datetime:
        at = utcnow() - ago
        async with api.sessions() as session, session.begin():
            await session.execute(
                update(UserSession)
                .where(UserSession.username == "chen.jie", UserSession.ended_at.is_(None))
                .values(last_seen_at=at)
            )
        return at

    aged = await last_used(IDLE - dt.timedelta(minutes=1))
    assert (await browser.get("/api/v1/devices")).status_code == 200
    async with api.sessions() as session:
        seen = await session.scalar(
            select(UserSession.last_seen_at).where(UserSession.ended_at.is_(None))
        )
    assert seen is not None and seen > aged  # the use counted: its last use moved on
    await last_used(IDLE)
    thief = _browser(api)
    thief.cookies.set(COOKIE, token)
    r = await thief.get("/api/v1/devices")
    assert r.status_code == 401
    assert "ended after 30 minutes without use" in r.json()["detail"]
    assert (await browser.get("/api/v1/devices")).status_code == 401  # for its owner too
    assert len(await _audit(api, "session.idle_end", "users/chen.jie")) == 1


async def test_changing_or_disabling_an_account_ends_its_sessions(api: Api) -> None:
    await _account(api, "zhao.lei", role="admin")
    browser, csrf = await _sign_in(api, "zhao.lei")
    # No one demotes or disables themself (the last administrator would lock everyone out).
    r = await browser.patch(
        "/api/v1/users/zhao.lei", json={"disabled": True}, headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 409
    r = await api.client("admin").patch(
        "/api/v1/users/zhao.lei", json={"role": "operator", "display_name": "赵磊"}
    )
    assert r.status_code == 200 and r.json()["role"] == "operator"
    r = await browser.get("/api/v1/devices")
    assert r.status_code == 401 and "changed or disabled" in r.json()["detail"]
    browser, csrf = await _sign_in(api, "zhao.lei")
    assert (await browser.get("/api/v1/session")).json()["role"] == "operator"
    # A person changes their own password: the old one stops working, the session ends.
    new = "a longer passphrase now"
    r = await browser.post(
        "/api/v1/session/password",
        json={"current_password": "wrong current pw", "new_password": new},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 401
    r = await browser.post(
        "/api/v1/session/password",
        json={"current_password": PASSWORD, "new_password": "short"},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 422 and "at least 12" in r.json()["detail"]
    r = await browser.post(
        "/api/v1/session/password",
        json={"current_password": PASSWORD, "new_password": new},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 204, r.text
    assert (await browser.get("/api/v1/devices")).status_code == 401
    r = await _browser(api).post(
        "/api/v1/session", json={"username": "zhao.lei", "password": PASSWORD}
    )
    assert r.status_code == 401
    await _sign_in(api, "zhao.lei", new)
    r = await api.client("admin").patch("/api/v1/users/zhao.lei", json={"disabled": True})
    assert r.status_code == 200
    r = await _browser(api).post("/api/v1/session", json={"username": "zhao.lei", "password": new})
    assert r.status_code == 401
    updates = await _audit(api, "user.update", "users/zhao.lei")
    assert [sorted(e.detail) for e in updates] == [
        ["display_name", "districts", "kinds", "role", "teams", "vendor"],
        ["password"],
        ["disabled"],
    ]


async def test_a_live_stream_of_a_session_ends_when_it_signs_out(api: Api) -> None:
    await _account(api, "stream.watcher")
    browser, csrf = await _sign_in(api, "stream.watcher")
    async with browser.stream("GET", "/api/v1/stream") as response:
        assert response.status_code == 200
        events = Events(response)
        assert (await events.next())[0] == "ready"
        r = await _browser_with(api, browser).delete(
            "/api/v1/session", headers={"X-CSRF-Token": csrf}
        )
        assert r.status_code == 204
        name, data = await events.next()
        assert name == "revoked" and "signed out" in data["reason"]


def _browser_with(api: Api, other: httpx.AsyncClient) -> httpx.AsyncClient:
    """A second client holding ``other``'s cookies (another tab of the same browser)."""
    client = _browser(api)
    client.cookies.set(COOKIE, other.cookies[COOKIE])
    return client


async def test_refused_requests_are_audited_with_the_address_without_flooding(
    api: Api,
) -> None:
    stranger = api.client(key="cik_0000_not-a-key")
    for _ in range(40):
        assert (await stranger.get("/api/v1/devices")).status_code == 401
    vendor = api.client("vendor")
    assert (await vendor.get("/api/v1/keys")).status_code == 403
    metrics = api.server.app.state.denials

    def written() -> int | None:
        return metrics.audited if metrics.audited + metrics.write_failures >= 10 else None

    await until(written, 10, "the denials' audit entries written")
    assert metrics.denied >= 41 and metrics.suppressed >= 30
    denied = await until(lambda: _audit(api, "access.denied"), 10, "access.denied entries")
    # 10 a minute from one address: the 30 other 401s and the vendor's 403 (same address)
    # are counted, not written.
    assert len(denied) == 10
    first = denied[0]
    assert first.actor == "anonymous@127.0.0.1" and first.detail["status"] == 401
    assert first.detail["address"] == "127.0.0.1" and first.resource == "/api/v1/devices"
    assert metrics.audited == len(denied)
    scrape = (await api.client(None).get("/metrics")).text
    assert "cityiot_api_denials_suppressed_total" in scrape


async def test_a_forbidden_request_is_audited_with_who_made_it(api: Api) -> None:
    r = await api.client("vendor").get("/api/v1/keys")
    assert r.status_code == 403
    denied = await until(lambda: _audit(api, "access.denied"), 10, "the 403 audited")
    assert denied[0].detail["status"] == 403 and denied[0].role == "vendor"
    assert denied[0].actor.startswith("key:") and denied[0].actor.endswith("(acme ops)")
