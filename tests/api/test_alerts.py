"""Alerts and silences through the API: the contract object, grants, pagination,
acknowledgement (published on the alert topic, audited), and the errors a caller can cause."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from cityiot.platform.local_services import LocalBroker
from cityiot.rules.lifecycle import AlertStore, new_alert_row
from cityiot.storage.tables.alerts import Alert, Silence
from cityiot.storage.tables.audit import AuditEntry
from tests.api.conftest import ROLES, Api
from tests.waiting import until

# device → (kind, district, vendor), as in tests/ingest/conftest.py::REGISTRY_CSV
DEVICES = {
    "mh-1": ("manhole", "yicheng", "acme"),
    "pk-1": ("parking", "yicheng", "acme"),
    "sl-1": ("streetlight", "kaifaqu", "acme"),
    "mh-2": ("manhole", "xiping", "oldco"),
    "sl-2": ("streetlight", "xiping", "oldco"),
}
CONTRACT_KEYS = {
    "id", "rule", "device_id", "kind", "district", "vendor", "severity", "state",
    "started_at", "resolved_at", "values", "summary",
}  # fmt: skip
NOW_MS = int(time.time() * 1000)


async def raise_alert(
    api: Api,
    device_id: str,
    *,
    rule: str = "manhole_cover_open",
    state: str = "firing",
    started_ms: int = NOW_MS,
    severity: str = "critical",
) -> Alert:
    """An alert row as the rules engine writes it (resolved: opened, then resolved)."""
    kind, district, vendor = DEVICES[device_id]
    store = AlertStore(api.sessions)
    alert, created = await store.open(
        new_alert_row(
            rule=rule,
            device_id=device_id,
            kind=kind,
            district=district,
            vendor=vendor,
            severity=severity,
            state="firing" if state == "resolved" else state,
            started_ms=started_ms,
            values={"tilt_deg": 31.0},
            summary="井盖打开 / Manhole cover open",
        )
    )
    assert created
    if state == "resolved":
        resolved = await store.resolve(alert.id, started_ms + 60_000)
        assert resolved is not None
        return resolved
    return alert


class Collector:
    """A paho client keeping what arrives on a topic filter."""

    def __init__(self, broker: LocalBroker, topic: str) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        assert self._subscribed.wait(5), "the collector could not subscribe"

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, orjson.loads(msg.payload)))

    def received(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def alert_topic_collector(broker: LocalBroker) -> Iterator[Collector]:
    collector = Collector(broker, "city/alerts/#")
    yield collector
    collector.close()


async def test_every_role_lists_alerts_as_the_contract_object_within_its_grant(api: Api) -> None:
    ids = {d: (await raise_alert(api, d)).id for d in DEVICES}
    expected_seen = {
        "admin": set(DEVICES),
        "operator": set(DEVICES),
        "field": set(DEVICES),
        "department": {"mh-1", "pk-1"},  # manhole+parking in yicheng
        "vendor": {"mh-1", "pk-1", "sl-1"},  # acme's
    }
    for role in ROLES:
        r = await api.client(role).get("/api/v1/alerts")
        assert r.status_code == 200, (role, r.text)
        items = r.json()["items"]
        assert {a["device_id"] for a in items} == expected_seen[role], role
        for item in items:
            assert set(item) == CONTRACT_KEYS
    one = (await api.client("admin").get(f"/api/v1/alerts/{ids['mh-1']}")).json()
    assert one["state"] == "firing" and one["kind"] == "manhole" and one["vendor"] == "acme"
    assert one["started_at"].endswith("+08:00") and one["resolved_at"] is None
    assert one["values"] == {"tilt_deg": 31.0}
    assert (await api.client(None).get("/api/v1/alerts")).status_code == 401
    assert (await api.client(None).get(f"/api/v1/alerts/{ids['mh-1']}")).status_code == 401


async def test_department_and_vendor_never_see_an_alert_outside_their_grant(api: Api) -> None:
    ids = {d: (await raise_alert(api, d)).id for d in DEVICES}
    department = api.client("department")
    for query in ("kind=streetlight", "district=xiping", "kind=streetlight&district=yicheng"):
        r = await department.get(f"/api/v1/alerts?{query}")
        assert r.status_code == 403, query
        assert "not granted" in r.json()["detail"]
    r = await department.get("/api/v1/alerts?kind=manhole&district=yicheng")
    assert [a["device_id"] for a in r.json()["items"]] == ["mh-1"]
    missing = "f" * 32
    for device in ("mh-2", "sl-1", "sl-2"):
        r = await department.get(f"/api/v1/alerts/{ids[device]}")
        assert r.status_code == 404, device  # like a missing one: nothing to learn
        assert r.headers["content-type"].startswith("application/problem+json")
        gone = await department.get(f"/api/v1/alerts/{missing}")
        assert r.text.replace(ids[device], "ID") == gone.text.replace(missing, "ID")
    vendor = api.client("vendor")
    assert (await vendor.get(f"/api/v1/alerts/{ids['mh-2']}")).status_code == 404
    assert (await vendor.get(f"/api/v1/alerts/{ids['sl-1']}")).status_code == 200
    r = await department.get("/api/v1/alerts/0123456789abcdef0123456789abcdef")
    assert r.status_code == 404 and "no alert" in r.json()["detail"]


async def test_filters_and_newest_first_pages_across_cursors(api: Api) -> None:
    # Seven alerts a minute apart; two share a start time (the id breaks the tie).
    made = []
    for i in range(6):
        made.append(await raise_alert(api, "mh-1", rule=f"r{i}", started_ms=NOW_MS + i * 60_000))
    made.append(await raise_alert(api, "sl-2", rule="r5", started_ms=NOW_MS + 5 * 60_000))
    await raise_alert(api, "pk-1", rule="p", state="pending", severity="warning")
    await raise_alert(api, "sl-1", rule="q", state="resolved", severity="minor")
    client = api.client("operator")

    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, "state": "firing"}
        if cursor:
            params["cursor"] = cursor
        r = await client.get("/api/v1/alerts", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        seen += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 4
    expected = sorted(made, key=lambda a: (a.started_at, a.id), reverse=True)
    assert [a["id"] for a in seen] == [a.id for a in expected]

    async def ids(**params: Any) -> set[str]:
        r = await client.get("/api/v1/alerts", params=params)
        assert r.status_code == 200, r.text
        return {a["device_id"] + "/" + a["rule"] for a in r.json()["items"]}

    assert await ids(state="pending") == {"pk-1/p"}
    assert await ids(state="resolved") == {"sl-1/q"}
    assert await ids(severity="minor") == {"sl-1/q"}
    assert len(await ids()) == 9  # no filter: every state
    assert await ids(kind="streetlight", district="xiping") == {"sl-2/r5"}
    assert await ids(device_id="mh-1", rule="r2") == {"mh-1/r2"}
    since = made[4].started_at.isoformat()
    until = made[5].started_at.isoformat()
    assert await ids(since=since, until=until) == {"mh-1/r4"}

    r = await client.get("/api/v1/alerts", params={"kind": "volcano"})
    assert r.status_code == 422 and "unknown kind" in r.json()["detail"]
    r = await client.get("/api/v1/alerts", params={"state": "burning"})
    assert r.status_code == 422
    r = await client.get("/api/v1/alerts", params={"cursor": "not-a-cursor"})
    assert r.status_code == 400 and "next_cursor" in r.json()["detail"]


async def test_ack_by_each_allowed_role_publishes_the_contract_event_and_audits(
    api: Api, alert_topic_collector: Collector
) -> None:
    alerts = {role: await raise_alert(api, "mh-1", rule=f"ack_{role}") for role in ROLES}
    for role in ("department", "vendor"):
        r = await api.client(role).post(f"/api/v1/alerts/{alerts[role].id}/ack")
        assert r.status_code == 403, role
    r = await api.client(None).post(f"/api/v1/alerts/{alerts['admin'].id}/ack")
    assert r.status_code == 401

    for role in ("admin", "operator", "field"):
        r = await api.client(role).post(
            f"/api/v1/alerts/{alerts[role].id}/ack", json={"note": f"{role} on it"}
        )
        assert r.status_code == 200, (role, r.text)
        event = r.json()
        assert set(event) == CONTRACT_KEYS and event["state"] == "acknowledged"

    def published() -> dict[str, dict[str, Any]]:
        return {
            e["id"]: e
            for topic, e in alert_topic_collector.received()
            if topic == "city/alerts/yicheng/manhole" and e["state"] == "acknowledged"
        }

    await until(lambda: len(published()) == 3, 5.0)
    for role in ("admin", "operator", "field"):
        event = published()[alerts[role].id]
        assert set(event) == CONTRACT_KEYS
        assert event["rule"] == f"ack_{role}" and event["device_id"] == "mh-1"

    async with api.sessions() as session:
        row = await session.get(Alert, alerts["field"].id)
        entries = list(
            await session.scalars(select(AuditEntry).where(AuditEntry.action == "alert.ack"))
        )
    assert row is not None and row.state == "acknowledged" and "crew 1" in str(row.acknowledged_by)
    assert {e.resource for e in entries} == {
        f"alerts/{alerts[r].id}" for r in ("admin", "operator", "field")
    }  # noqa: E501
    assert {e.detail["note"] for e in entries} == {"admin on it", "operator on it", "field on it"}
    states = {e["id"]: e["state"] for _, e in alert_topic_collector.received()}
    assert states.get(alerts["department"].id) is None  # a refused ack publishes nothing


async def test_ack_of_an_alert_that_is_not_firing_is_a_409_naming_its_state(api: Api) -> None:
    pending = await raise_alert(api, "mh-1", rule="a", state="pending")
    resolved = await raise_alert(api, "mh-1", rule="b", state="resolved")
    firing = await raise_alert(api, "mh-1", rule="c")
    client = api.client("field")
    assert (await client.post(f"/api/v1/alerts/{firing.id}/ack")).status_code == 200
    for alert, state in ((pending, "pending"), (resolved, "resolved"), (firing, "acknowledged")):
        r = await client.post(f"/api/v1/alerts/{alert.id}/ack", json={"note": "again"})
        assert r.status_code == 409, state
        body = r.json()
        assert body["state"] == state
        assert f"is {state}" in body["detail"] and "only a firing alert" in body["detail"]
    r = await client.post("/api/v1/alerts/0123456789abcdef0123456789abcdef/ack")
    assert r.status_code == 404
    r = await client.post(f"/api/v1/alerts/{firing.id}/ack", json={"nope": 1})
    assert r.status_code == 422
    async with api.sessions() as session:
        audited = list(
            await session.scalars(select(AuditEntry).where(AuditEntry.action == "alert.ack"))
        )
    assert len(audited) == 1  # refusals change nothing and audit nothing


async def test_silences_are_created_listed_and_ended_by_operators_only(api: Api) -> None:
    body = {
        "matchers": [
            {"label": "district", "op": "=", "value": "yicheng"},
            {"label": "kind", "op": "=~", "value": "street.*"},
        ],
        "ends_at": "2099-01-01T08:00:00+08:00",
        "comment": "Jiefang Road works",
    }
    for role in ("field", "department", "vendor"):
        assert (await api.client(role).post("/api/v1/silences", json=body)).status_code == 403
    assert (await api.client(None).post("/api/v1/silences", json=body)).status_code == 401
    r = await api.client("operator").post("/api/v1/silences", json=body)
    assert r.status_code == 201, r.text
    silence = r.json()
    assert silence["active"] and silence["matchers"] == body["matchers"]
    assert silence["ends_at"] == "2099-01-01T08:00:00+08:00"

    for role in ("admin", "operator"):
        r = await api.client(role).get("/api/v1/silences")
        assert [s["id"] for s in r.json()["items"]] == [silence["id"]], role
    for role in ("field", "department", "vendor"):
        assert (await api.client(role).get("/api/v1/silences")).status_code == 403

    bad = {**body, "matchers": [{"label": "colour", "op": "=", "value": "red"}]}
    r = await api.client("admin").post("/api/v1/silences", json=bad)
    assert r.status_code == 422 and "matchers.0.label" in r.json()["detail"]
    bad = {**body, "matchers": [{"label": "district", "op": "=", "value": "atlantis"}]}
    r = await api.client("admin").post("/api/v1/silences", json=bad)
    assert r.status_code == 422 and "not a district" in r.json()["detail"]
    r = await api.client("admin").post(
        "/api/v1/silences", json={**body, "ends_at": "2000-01-01T00:00:00+08:00"}
    )
    assert r.status_code == 422 and "must be after" in r.json()["detail"]

    assert (
        await api.client("field").delete(f"/api/v1/silences/{silence['id']}")
    ).status_code == 403
    r = await api.client("admin").delete(f"/api/v1/silences/{silence['id']}")
    assert r.status_code == 200 and r.json()["active"] is False
    assert (await api.client("admin").get("/api/v1/silences")).json()["items"] == []
    r = await api.client("admin").get("/api/v1/silences", params={"expired": True})
    assert [s["id"] for s in r.json()["items"]] == [silence["id"]]
    r = await api.client("admin").delete("/api/v1/silences/nosuchsilence")
    assert r.status_code == 404
    async with api.sessions() as session:
        stored = await session.get(Silence, silence["id"])
        actions = sorted(
            (
                await session.scalars(
                    select(AuditEntry.action).where(AuditEntry.action.like("silence.%"))
                )
            ).all()
        )
    assert stored is not None and "ops desk" in stored.created_by
    assert actions == ["silence.create", "silence.expire"]
