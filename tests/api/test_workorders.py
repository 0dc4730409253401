"""Work orders through the API: who may read and move them, the lifecycle with its 409s,
the journal and the audit log, grants and pagination."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select, update

from cityiot.rules.events import alert_event
from cityiot.rules.workorders import SlaPolicy, open_work_order
from cityiot.storage.tables.audit import AuditEntry
from cityiot.storage.tables.workorders import WorkOrder, WorkOrderAlert
from tests.api.conftest import ROLES, Api
from tests.api.test_alerts import CONTRACT_KEYS, raise_alert


async def dispatch(api: Api, device_id: str, rule: str, team: str = "urban", at: float = 0) -> str:
    """A work order as the dispatcher opens it for a firing alert; returns its id."""
    alert = await raise_alert(api, device_id, rule=rule)
    clock = (lambda: at) if at else time.time
    order = await open_work_order(api.sessions, alert_event(alert), team, SlaPolicy(), clock)
    return order.id


async def test_readers_list_work_orders_within_their_grant_and_vendors_are_refused(
    api: Api,
) -> None:
    for device in ("mh-1", "pk-1", "sl-1", "mh-2"):
        await dispatch(api, device, "r")
    expected = {
        "admin": {"mh-1", "pk-1", "sl-1", "mh-2"},
        "operator": {"mh-1", "pk-1", "sl-1", "mh-2"},
        "field": {"mh-1", "pk-1", "sl-1", "mh-2"},
        "department": {"mh-1", "pk-1"},
    }
    for role, devices in expected.items():
        r = await api.client(role).get("/api/v1/workorders")
        assert r.status_code == 200, (role, r.text)
        assert {o["device_id"] for o in r.json()["items"]} == devices, role
    assert (await api.client("vendor").get("/api/v1/workorders")).status_code == 403
    assert (await api.client(None).get("/api/v1/workorders")).status_code == 401
    department = api.client("department")
    assert (await department.get("/api/v1/workorders?district=xiping")).status_code == 403
    assert (await department.get("/api/v1/workorders?kind=streetlight")).status_code == 403


async def test_single_work_order_grant_and_unknown_id(api: Api) -> None:
    inside = await dispatch(api, "mh-1", "r")
    outside = await dispatch(api, "mh-2", "r")
    department = api.client("department")
    r = await department.get(f"/api/v1/workorders/{inside}")
    assert r.status_code == 200
    order = r.json()
    assert order["state"] == "dispatched" and order["severity"] == "critical"
    assert order["verify_due_at"].endswith("+08:00") and order["accepted_at"] is None
    r = await department.get(f"/api/v1/workorders/{outside}")
    gone = await department.get("/api/v1/workorders/nosuchorder")
    assert r.status_code == gone.status_code == 404  # outside the grant reads like none
    assert r.text.replace(outside, "ID") == gone.text.replace("nosuchorder", "ID")
    assert (await api.client("vendor").get(f"/api/v1/workorders/{inside}")).status_code == 403
    r = await api.client("field").get("/api/v1/workorders/nosuchorder")
    assert r.status_code == 404 and "no work order" in r.json()["detail"]


async def test_a_field_team_moves_a_work_order_through_its_lifecycle(api: Api) -> None:
    order_id = await dispatch(api, "mh-1", "r")
    field = api.client("field")
    for role in ("department", "vendor"):
        r = await api.client(role).post(f"/api/v1/workorders/{order_id}/accept")
        assert r.status_code == 403, role
    assert (await api.client(None).post(f"/api/v1/workorders/{order_id}/accept")).status_code == 401

    # Closing before the on-site verification is refused, naming the state and the next step.
    r = await field.post(f"/api/v1/workorders/{order_id}/close")
    assert r.status_code == 409
    problem = r.json()
    assert problem["state"] == "dispatched" and problem["allowed"] == ["accept"]
    assert "on-site verification" in problem["detail"]

    notes = {"accept": "on our way", "on_site": "cover displaced", "resolve": "cover replaced"}
    for action in ("accept", "on_site", "resolve", "close"):
        body = {"note": notes[action]} if action in notes else None
        r = await field.post(f"/api/v1/workorders/{order_id}/{action}", json=body)
        assert r.status_code == 200, (action, r.text)
    order = r.json()
    assert order["state"] == "closed" and order["assignee"] == "crew 1"
    for stamp in ("accepted_at", "on_site_at", "resolved_at", "closed_at"):
        assert order[stamp] is not None and order[stamp].endswith("+08:00")
    assert "accept by crew 1: on our way" in order["note"]
    assert "resolve by crew 1: cover replaced" in order["note"]

    r = await field.post(f"/api/v1/workorders/{order_id}/accept")
    assert r.status_code == 409 and r.json()["state"] == "closed"
    assert "nothing more can be done" in r.json()["detail"]
    assert (await field.post("/api/v1/workorders/nosuchorder/accept")).status_code == 404

    async with api.sessions() as session:
        entries = list(
            await session.scalars(
                select(AuditEntry)
                .where(AuditEntry.resource == f"workorders/{order_id}")
                .order_by(AuditEntry.id)
            )
        )
    # Exactly the four steps that happened: refusals are not audited.
    assert [e.action for e in entries] == [
        "workorder.accept", "workorder.on_site", "workorder.resolve", "workorder.close",
    ]  # fmt: skip
    assert entries[0].detail == {"note": "on our way"} and entries[0].role == "field"


async def test_admin_and_operator_may_move_work_orders(api: Api) -> None:
    for role in ("admin", "operator"):
        order_id = await dispatch(api, "sl-1", f"r_{role}")
        r = await api.client(role).post(f"/api/v1/workorders/{order_id}/accept")
        assert r.status_code == 200 and r.json()["state"] == "accepted", role
        async with api.sessions() as session:
            order = await session.get(WorkOrder, order_id)
        assert order is not None and order.state == "accepted"


async def test_filters_and_oldest_first_pages_across_cursors(api: Api) -> None:
    base = time.time()
    made = [
        await dispatch(api, "mh-1", f"r{i}", team="urban" if i % 2 else "water", at=base + i)
        for i in range(5)
    ]
    client = api.client("operator")
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        body = (await client.get("/api/v1/workorders", params=params)).json()
        seen += [o["id"] for o in body["items"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == made  # dispatch order, no order twice
    r = await client.get("/api/v1/workorders", params={"team": "urban"})
    assert [o["id"] for o in r.json()["items"]] == [made[1], made[3]]
    await client.post(f"/api/v1/workorders/{made[0]}/accept")
    r = await client.get("/api/v1/workorders", params={"state": "accepted"})
    assert [o["id"] for o in r.json()["items"]] == [made[0]]
    r = await client.get("/api/v1/workorders", params={"kind": "manhole", "district": "xiping"})
    assert r.json()["items"] == []
    assert (await client.get("/api/v1/workorders", params={"state": "lost"})).status_code == 422
    assert (await client.get("/api/v1/workorders", params={"cursor": "x"})).status_code == 400


async def test_every_role_gets_the_documented_answer(api: Api) -> None:
    order_id = await dispatch(api, "mh-1", "r")
    answers = {}
    for role in ROLES:
        answers[role] = (await api.client(role).get(f"/api/v1/workorders/{order_id}")).status_code
    assert answers == {
        "admin": 200,
        "operator": 200,
        "field": 200,
        "department": 200,
        "vendor": 403,
    }


async def test_a_work_order_carries_its_devices_address_and_position(api: Api) -> None:
    """For the team on the road: the registry's address, lat and lon in every answer (a
    list, one order, a step); null for a device the registry does not hold."""
    order_id = await dispatch(api, "mh-1", "r")
    client = api.client("field")
    place = {"address": "驿城区解放路 1 号", "lat": 32.98, "lon": 114.02}
    listed = (await client.get("/api/v1/workorders")).json()["items"]
    one = (await client.get(f"/api/v1/workorders/{order_id}")).json()
    moved = (await client.post(f"/api/v1/workorders/{order_id}/accept")).json()
    for answer in (*(o for o in listed if o["id"] == order_id), one, moved):
        assert {k: answer[k] for k in place} == place, answer
    assert len([o for o in listed if o["id"] == order_id]) == 1

    gone = await dispatch(api, "mh-2", "r")
    async with api.sessions() as session, session.begin():
        await session.execute(
            update(WorkOrder).where(WorkOrder.id == gone).values(device_id="mh-gone")
        )
    answer = (await api.client("admin").get(f"/api/v1/workorders/{gone}")).json()
    assert (answer["address"], answer["lat"], answer["lon"]) == (None, None, None)


async def test_a_grouped_work_orders_alerts_page_through_cursors(api: Api) -> None:
    """42 alerts of one group make one order; its alerts page in 100s and 10s, each once, as
    ``GET /alerts`` serves them."""
    alerts = [await raise_alert(api, "mh-1", rule=f"r{i}") for i in range(42)]
    orders = {
        (
            await open_work_order(
                api.sessions, alert_event(a), "urban", SlaPolicy(), time.time, group="g"
            )
        ).id
        for a in alerts
    }
    assert len(orders) == 1
    order_id = orders.pop()
    client = api.client("field")
    assert (await client.get(f"/api/v1/workorders/{order_id}")).json()["alert_count"] == 42
    for limit, pages in ((100, 1), (10, 5)):
        seen: list[str] = []
        params: dict[str, Any] = {"limit": limit}
        for _ in range(pages):
            r = await client.get(f"/api/v1/workorders/{order_id}/alerts", params=params)
            assert r.status_code == 200, r.text
            body = r.json()
            seen += [a["id"] for a in body["items"]]
            params["cursor"] = body["next_cursor"]
        assert params["cursor"] is None, limit
        assert sorted(seen) == sorted(a.id for a in alerts) and len(seen) == 42, limit
    first = (await client.get(f"/api/v1/workorders/{order_id}/alerts")).json()["items"]
    listed = (await client.get("/api/v1/alerts", params={"device_id": "mh-1"})).json()["items"]
    assert sorted(first, key=lambda a: a["id"]) == sorted(listed, key=lambda a: a["id"])
    bad = await client.get(f"/api/v1/workorders/{order_id}/alerts", params={"cursor": "x"})
    assert bad.status_code == 400


async def test_a_work_orders_alerts_follow_the_orders_visibility(api: Api) -> None:
    theirs = await dispatch(api, "mh-1", "r", team="water")
    outside = await dispatch(api, "mh-2", "r2")
    field = api.client("field")
    r = await field.get(f"/api/v1/workorders/{theirs}/alerts")
    gone = await field.get("/api/v1/workorders/nosuchorder/alerts")
    assert r.status_code == gone.status_code == 404  # another team's reads like none
    assert r.text.replace(theirs, "ID") == gone.text.replace("nosuchorder", "ID")
    assert "no work order" in r.json()["detail"]
    r = await api.client("department").get(f"/api/v1/workorders/{outside}/alerts")
    assert r.status_code == 404
    assert (
        await api.client("vendor").get(f"/api/v1/workorders/{theirs}/alerts")
    ).status_code == 403
    assert (await api.client(None).get(f"/api/v1/workorders/{theirs}/alerts")).status_code == 401
    r = await api.client("operator").get(f"/api/v1/workorders/{theirs}/alerts")
    assert r.status_code == 200 and len(r.json()["items"]) == 1


async def test_a_work_orders_alerts_leave_out_those_outside_the_keys_grant(api: Api) -> None:
    """An order the department sees (a yicheng manhole first) that a kaifaqu streetlight's
    alert joined: the department's list leaves that alert out, as GET /alerts does."""
    inside, outside = await raise_alert(api, "mh-1", rule="r"), await raise_alert(api, "sl-1")
    for alert in (inside, outside):
        order = await open_work_order(
            api.sessions, alert_event(alert), "urban", SlaPolicy(), time.time, group="g"
        )
    path = f"/api/v1/workorders/{order.id}/alerts"
    assert {a["id"] for a in (await api.client("admin").get(path)).json()["items"]} == {
        inside.id,
        outside.id,
    }
    r = await api.client("department").get(path)
    assert r.status_code == 200
    assert [a["id"] for a in r.json()["items"]] == [inside.id]


async def test_an_order_opened_one_per_alert_lists_its_one_alert(api: Api) -> None:
    order_id = await dispatch(api, "mh-1", "r")
    async with api.sessions() as session:
        order = await session.get(WorkOrder, order_id)
        joined = await session.scalar(select(func.count()).select_from(WorkOrderAlert))
    assert order is not None and joined == 0
    r = await api.client("field").get(f"/api/v1/workorders/{order_id}/alerts")
    assert r.status_code == 200
    body = r.json()
    assert [a["id"] for a in body["items"]] == [order.alert_id]
    assert body["next_cursor"] is None and set(body["items"][0]) == CONTRACT_KEYS
