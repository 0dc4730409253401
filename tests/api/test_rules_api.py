"""The rule catalogue through the API, and a running rules engine picking up a rule put
there: the new threshold is used, the state of the other rules is kept, an invalid stored
rule leaves the running rules alone."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import select

from cityiot.ingest.devices import DeviceMap
from cityiot.ingest.validate import Reading
from cityiot.rules.definitions import SHIPPED_CATALOGUE, RuleError, load_rules
from cityiot.rules.engine import RulesEngine
from cityiot.rules.service import current_rules, watch_rules
from cityiot.storage.tables.audit import AuditEntry
from cityiot.storage.tables.rules import RuleOverride
from cityiot.storage.utc import utcnow
from tests.api.conftest import ROLES, Api
from tests.waiting import until

CATALOGUE = load_rules(SHIPPED_CATALOGUE)
STRICTER = {
    "kind": "manhole",
    "severity": "critical",
    "when": "cover_open or tilt_deg > 12",
    "clear": "not cover_open and tilt_deg < 8",
    "for": "0s",
    "summary": {"zh": "井盖倾斜 {tilt_deg}°", "en": "Cover tilted {tilt_deg}°"},
}


async def test_readers_get_the_catalogue_within_their_grant(api: Api) -> None:
    every = {r.id for r in CATALOGUE}
    for role in ("admin", "operator", "field"):
        r = await api.client(role).get("/api/v1/rules")
        assert r.status_code == 200, role
        assert {x["id"] for x in r.json()["items"]} == every, role
    r = await api.client("department").get("/api/v1/rules")
    shown = {x["id"]: x for x in r.json()["items"]}
    granted = {r.id for r in CATALOGUE if r.kinds & {"manhole", "parking"}}
    assert set(shown) == granted and "streetlight_off_at_night" not in shown
    assert "device_offline" in shown  # a rule for every kind covers the granted ones too
    assert (await api.client("vendor").get("/api/v1/rules")).status_code == 403
    assert (await api.client(None).get("/api/v1/rules")).status_code == 401

    rule = (await api.client("field").get("/api/v1/rules/manhole_flooding")).json()
    assert rule["kind"] == "manhole" and rule["kinds"] == ["manhole"]
    assert rule["type"] == "threshold" and rule["severity"] == "major" and rule["for"] == "2m"
    assert rule["source"].endswith("manhole.yaml") and rule["updated_at"] is None
    assert rule["definition"]["when"] == "water_level_cm > 0.8 * depth_cm"
    assert rule["thresholds"] == []  # its limit depends on the manhole's depth: no fixed line
    assert rule["summary"]["en"].startswith("Water level")
    rule = (await api.client("field").get("/api/v1/rules/manhole_cover_open")).json()
    assert rule["thresholds"] == [{"metric": "tilt_deg", "op": ">", "value": 15.0}]
    absence = (await api.client("field").get("/api/v1/rules/device_offline")).json()
    assert absence["type"] == "absence" and absence["thresholds"] == []
    r = await api.client("department").get("/api/v1/rules/streetlight_off_at_night")
    assert r.status_code == 403
    assert (await api.client("admin").get("/api/v1/rules/no_such_rule")).status_code == 404


async def test_rules_page_across_cursors(api: Api) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        body = (await api.client("operator").get("/api/v1/rules", params=params)).json()
        seen += [x["id"] for x in body["items"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == sorted(r.id for r in CATALOGUE)
    r = await api.client("operator").get("/api/v1/rules", params={"kind": "hydrant"})
    assert {x["id"] for x in r.json()["items"]} == {r.id for r in CATALOGUE if "hydrant" in r.kinds}


async def test_only_admin_puts_rules_and_invalid_ones_are_422_naming_the_field(api: Api) -> None:
    url = "/api/v1/rules/manhole_cover_open"
    for role in ("operator", "field", "department", "vendor"):
        assert (await api.client(role).put(url, json=STRICTER)).status_code == 403, role
    assert (await api.client(None).put(url, json=STRICTER)).status_code == 401
    admin = api.client("admin")
    cases = [
        ({**STRICTER, "when": "tilt_deg >> 12"}, "when"),
        ({**STRICTER, "when": "colour == 3"}, "'colour'"),
        ({**STRICTER, "severity": "dire"}, "severity"),
        ({**STRICTER, "kind": ["manhole"]}, "'kind' must be a string"),
        ({**STRICTER, "for": "soon"}, "for"),
        ({**STRICTER, "colour": "red"}, "unknown field"),
        ({**STRICTER, "summary": {"zh": "{x.__class__}", "en": "x"}}, "placeholder"),
        ({**STRICTER, "id": "manhole_flooding"}, "differs from the path"),
    ]
    for body, named in cases:
        r = await admin.put(url, json=body)
        assert r.status_code == 422, (body, r.text)
        assert named in r.json()["detail"], r.json()["detail"]
    async with api.sessions() as session:
        assert (await session.scalars(select(RuleOverride))).all() == []


async def test_a_put_rule_is_served_and_audited(api: Api) -> None:
    admin = api.client("admin")
    r = await admin.put("/api/v1/rules/manhole_cover_open", json=STRICTER)
    assert r.status_code == 200, r.text
    put = r.json()
    assert put["source"] == "api" and put["definition"]["when"] == STRICTER["when"]
    assert "test admin" in put["updated_by"]
    got = (await api.client("department").get("/api/v1/rules/manhole_cover_open")).json()
    assert got == put
    # A new rule id adds a rule; a streetlight rule stays hidden from the department.
    new = {**STRICTER, "kind": "streetlight", "when": "leakage_ma > 50", "clear": "leakage_ma < 40"}
    assert (await admin.put("/api/v1/rules/streetlight_leak_severe", json=new)).status_code == 200
    listed = {x["id"] for x in (await admin.get("/api/v1/rules")).json()["items"]}
    assert listed == {r.id for r in CATALOGUE} | {"streetlight_leak_severe"}
    r = await api.client("department").get("/api/v1/rules/streetlight_leak_severe")
    assert r.status_code == 403
    async with api.sessions() as session:
        entries = list(
            await session.scalars(select(AuditEntry).where(AuditEntry.action == "rule.put"))
        )
    assert [e.resource for e in entries] == [
        "rules/manhole_cover_open", "rules/streetlight_leak_severe",
    ]  # fmt: skip
    assert entries[0].detail["replaced"].endswith("manhole.yaml")
    assert entries[0].detail["definition"]["when"] == STRICTER["when"]


def _reading(device_id: str, kind: str, **metrics: Any) -> Reading:
    return Reading(device_id, kind, int(time.time() * 1000), dict(metrics))


async def test_a_running_rules_engine_uses_a_rule_put_through_the_api(api: Api) -> None:
    devices = DeviceMap(api.sessions)
    await devices.refresh()
    published: list[tuple[str, bytes]] = []
    engine = RulesEngine(
        await current_rules(api.settings, api.sessions, strict=False),
        devices,
        api.sessions,
        publish=lambda topic, payload: published.append((topic, payload)),
    )
    await engine.start()
    stop = asyncio.Event()
    watcher = asyncio.create_task(
        watch_rules(engine, api.settings, api.sessions, stop, every_s=0.05, seen=None)
    )
    try:
        # 13° is below the catalogue's 15°: nothing. Methane starts a 30 s `for` timer.
        await engine.evaluate(
            [_reading("mh-1", "manhole", cover_open=False, tilt_deg=13.0, gas_ch4_ppm=6000.0)]
        )
        open_now = await engine.store.open_alerts()
        assert [(a.rule, a.state) for a in open_now] == [("manhole_methane", "pending")]

        r = await api.client("admin").put("/api/v1/rules/manhole_cover_open", json=STRICTER)
        assert r.status_code == 200
        await until(lambda: engine.evaluator.rules["manhole_cover_open"].source == "api", 5.0)
        assert ("manhole_methane", "mh-1") in engine.evaluator.tracks  # its timer goes on

        await engine.evaluate(
            [_reading("mh-1", "manhole", cover_open=False, tilt_deg=13.0, gas_ch4_ppm=6000.0)]
        )
        states = {a.rule: a.state for a in await engine.store.open_alerts()}
        assert states == {"manhole_cover_open": "firing", "manhole_methane": "pending"}
        assert any(t == "city/alerts/yicheng/manhole" and b'"firing"' in p for t, p in published)

        # An override stored behind the API's back that does not parse: the engine keeps
        # running the rules it has.
        async with api.sessions() as session, session.begin():
            session.add(
                RuleOverride(
                    id="manhole_flooding",
                    definition={**STRICTER, "when": "nonsense >"},
                    updated_at=utcnow(),
                )
            )
        before = dict(engine.evaluator.rules)
        await asyncio.sleep(0.3)
        assert engine.evaluator.rules == before
        with pytest.raises(RuleError):
            await current_rules(api.settings, api.sessions, strict=True)
        at_start = {r.id: r for r in await current_rules(api.settings, api.sessions, strict=False)}
        assert at_start["manhole_cover_open"].source == "api"
        assert at_start["manhole_flooding"].source.endswith("manhole.yaml")
    finally:
        stop.set()
        await watcher


async def test_every_role_gets_the_documented_answer_on_rules(api: Api) -> None:
    answers = {}
    for role in ROLES:
        answers[role] = (await api.client(role).get("/api/v1/rules/battery_low")).status_code
    assert answers == {
        "admin": 200,
        "operator": 200,
        "field": 200,
        "department": 200,
        "vendor": 403,
    }
