"""Field keys act for their teams only (issue 22, finding 8): a key of the urban team once
accepted a fire-team work order and acknowledged a fire-brigade alert."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import update

from cityiot.rules.events import alert_event
from cityiot.rules.lifecycle import AlertStore, new_alert_row
from cityiot.rules.workorders import SlaPolicy, open_work_order
from cityiot.storage.tables.alerts import Alert
from cityiot.storage.tables.keys import ApiKey
from cityiot.storage.tables.workorders import WorkOrder
from tests.api.conftest import Api
from tests.api.test_alerts import NOW_MS
from tests.operator_files import keys_cli

# device → (kind, district, vendor), as in tests/ingest/conftest.py::REGISTRY_CSV
DEVICES = {
    "mh-1": ("manhole", "yicheng", "acme"),
    "sl-1": ("streetlight", "kaifaqu", "acme"),
    "hy-1": ("hydrant", "gaoxinqu", "acme"),
}


async def raise_alert(api: Api, device_id: str, rule: str = "manhole_cover_open") -> Alert:
    """A firing alert as the rules engine writes it."""
    kind, district, vendor = DEVICES[device_id]
    alert, created = await AlertStore(api.sessions).open(
        new_alert_row(
            rule=rule,
            device_id=device_id,
            kind=kind,
            district=district,
            vendor=vendor,
            severity="critical",
            state="firing",
            started_ms=NOW_MS,
            values={},
            summary="test",
        )
    )
    assert created
    return alert


async def dispatch(api: Api, device_id: str, rule: str, team: str = "urban") -> str:
    """A work order as the dispatcher opens it for a firing alert; returns its id."""
    alert = await raise_alert(api, device_id, rule)
    order = await open_work_order(api.sessions, alert_event(alert), team, SlaPolicy(), time.time)
    return order.id


async def _field_key(api: Api, *teams: str) -> str:
    r = await api.client().post(
        "/api/v1/keys", json={"role": "field", "name": f"{teams[0]} crew", "teams": list(teams)}
    )
    assert r.status_code == 201, r.text
    assert r.json()["teams"] == sorted(teams)
    return str(r.json()["key"])


async def test_an_urban_key_neither_sees_nor_moves_a_fire_team_work_order(api: Api) -> None:
    fire_order = await dispatch(api, "hy-1", "hydrant_low_pressure", team="fire")
    urban_order = await dispatch(api, "mh-1", "manhole_cover_open", team="urban")
    urban = api.client(key=await _field_key(api, "urban"))

    r = await urban.get("/api/v1/workorders")
    assert r.status_code == 200
    assert [o["id"] for o in r.json()["items"]] == [urban_order]
    r = await urban.get("/api/v1/workorders", params={"team": "fire"})
    assert r.status_code == 403 and "urban" in r.json()["detail"]
    # Another team's order answers exactly like a missing one.
    missing = await urban.get("/api/v1/workorders/nosuchorder")
    other = await urban.get(f"/api/v1/workorders/{fire_order}")
    assert other.status_code == missing.status_code == 404
    assert other.json()["detail"] == missing.json()["detail"].replace("nosuchorder", fire_order)
    for action in ("accept", "on_site", "resolve", "close"):
        r = await urban.post(f"/api/v1/workorders/{fire_order}/{action}", json={"note": "x"})
        assert r.status_code == 404, (action, r.text)
    async with api.sessions() as session:
        order = await session.get(WorkOrder, fire_order)
    assert order is not None and order.state == "dispatched" and order.assignee is None

    r = await urban.post(f"/api/v1/workorders/{urban_order}/accept", json={"note": "on our way"})
    assert r.status_code == 200 and r.json()["state"] == "accepted"
    fire = api.client(key=await _field_key(api, "fire"))
    r = await fire.post(f"/api/v1/workorders/{fire_order}/accept")
    assert r.status_code == 200 and r.json()["state"] == "accepted"


async def test_an_urban_key_cannot_acknowledge_a_fire_brigade_alert(api: Api) -> None:
    # rules/routing.yaml: hydrants go to the fire brigade (and the ops centre), manholes to
    # urban management (and the ops centre).
    hydrant = await raise_alert(api, "hy-1", "hydrant_low_pressure")
    manhole = await raise_alert(api, "mh-1")
    urban = api.client(key=await _field_key(api, "urban"))

    r = await urban.post(f"/api/v1/alerts/{hydrant.id}/ack", json={"note": "ours?"})
    assert r.status_code == 403
    assert "routed to team fire, ops" in r.json()["detail"] and "urban" in r.json()["detail"]
    async with api.sessions() as session:
        row = await session.get(Alert, hydrant.id)
    assert row is not None and row.state == "firing"  # repeat notifications go on

    assert (await urban.post(f"/api/v1/alerts/{manhole.id}/ack")).status_code == 200
    fire = api.client(key=await _field_key(api, "fire"))
    r = await fire.post(f"/api/v1/alerts/{hydrant.id}/ack")
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"


async def test_a_field_key_names_known_teams_and_other_roles_none(api: Api) -> None:
    admin = api.client()
    r = await admin.post("/api/v1/keys", json={"role": "field", "name": "crew"})
    assert r.status_code == 422
    assert (
        "--team" in r.json()["detail"]
        and "fire, flood, gas, ops, traffic, tunnel, urban, water" in r.json()["detail"]
    )
    r = await admin.post("/api/v1/keys", json={"role": "field", "teams": ["roads", "urban"]})
    assert r.status_code == 422
    assert (
        "roads" in r.json()["detail"]
        and "fire, flood, gas, ops, traffic, tunnel, urban, water" in r.json()["detail"]
    )
    r = await admin.post("/api/v1/keys", json={"role": "operator", "teams": ["urban"]})
    assert r.status_code == 422 and "field keys only" in r.json()["detail"]
    key = await _field_key(api, "water", "urban")
    listed = (await admin.get("/api/v1/keys")).json()["items"]
    mine = next(k for k in listed if key.startswith(f"cik_{k['id']}_"))
    assert mine["teams"] == ["urban", "water"] and mine["role"] == "field"
    assert all(k["teams"] is None for k in listed if k["role"] != "field")


async def test_a_field_key_made_before_teams_is_told_to_get_a_new_one(api: Api) -> None:
    order_id = await dispatch(api, "mh-1", "manhole_cover_open")
    alert = await raise_alert(api, "sl-1", "streetlight_dark")
    key = await _field_key(api, "urban")
    # What migration 0005 leaves of a field key made before it: no teams.
    async with api.sessions() as session, session.begin():
        await session.execute(
            update(ApiKey).where(ApiKey.id == key.split("_")[1]).values(teams=None)
        )
    api.server.app.state.ctx.keys.forget()
    legacy = api.client(key=key)
    for r in (
        await legacy.get("/api/v1/workorders"),
        await legacy.get(f"/api/v1/workorders/{order_id}"),
        await legacy.post(f"/api/v1/workorders/{order_id}/accept"),
        await legacy.post(f"/api/v1/alerts/{alert.id}/ack"),
    ):
        assert r.status_code == 403, r.text
        assert "cityiot keys create --role field --team" in r.json()["detail"]
    async with api.sessions() as session:
        order = await session.get(WorkOrder, order_id)
        row = await session.get(Alert, alert.id)
    assert order is not None and order.state == "dispatched"
    assert row is not None and row.state == "firing"


async def test_cli_creates_a_field_key_with_its_teams(tmp_path: Path) -> None:
    async def keys_create(*args: str) -> tuple[int, str, str]:
        return await keys_cli(tmp_path, "create", *args)

    code, out, err = await keys_create("--role", "field", "--team", "urban,fire", "--team", "water")
    assert code == 0, err
    assert out.startswith("cik_") and out.count("\n") == 1  # the key alone on stdout
    assert "teams=fire,urban,water" in err
    code, out, err = await keys_create("--role", "field")
    assert code != 0 and out == ""
    assert "--team" in err and "fire, flood, gas, ops, traffic, tunnel, urban, water" in err
    code, _, err = await keys_create("--role", "field", "--team", "roads")
    assert code != 0 and "unknown team(s) roads" in err


async def test_the_teams_are_listed_with_their_titles(api: Api) -> None:
    r = await api.client("field").get("/api/v1/teams")
    assert r.status_code == 200
    teams = {t["id"]: t["title"] for t in r.json()["items"]}
    assert list(teams) == ["fire", "flood", "gas", "ops", "traffic", "tunnel", "urban", "water"]
    assert teams["urban"] == {"zh": "城市管理局", "en": "Urban management"}
    assert all(title and title["zh"] and title["en"] for title in teams.values())
    assert (await api.client("vendor").get("/api/v1/teams")).status_code == 403
    assert (await api.client(None).get("/api/v1/teams")).status_code == 401
