"""Maintenance windows through the API, on SQLite and PostgreSQL: created, listed beside the
routing file's, refused with the field at fault, ended (audited), and only by operators."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cityiot.platform.local_services import LocalBroker, LocalInflux
from cityiot.rules.definitions import SHIPPED_CATALOGUE
from cityiot.rules.service import DEFAULT_ROUTING
from cityiot.rules.silences import windows_in_force
from cityiot.storage.tables.alerts import MaintenanceWindowRow
from cityiot.storage.tables.audit import AuditEntry
from cityiot.storage.utc import utcnow
from tests.api.conftest import Api, running_api

URL = "/api/v1/maintenance-windows"
BODY: dict[str, Any] = {
    "name": "yicheng-streetlight-night-works",
    "matchers": [
        {"label": "district", "op": "=", "value": "yicheng"},
        {"label": "kind", "op": "=~", "value": "street.*"},
    ],
    "weekdays": ["fri", "mon"],
    "start": "23:00",
    "end": "3:30",
    "comment": "Jiefang Road cabling",
}
# The routing file's windows: the shipped routing file with these in place of its none.
FILE_WINDOWS = """maintenance_windows:
  - name: kaifaqu-night-works
    matchers: [{label: district, op: "=", value: kaifaqu}]
    schedule: {weekdays: [sat, sun], start: "01:00", end: "05:00"}
"""
FILE_WINDOW = {
    "id": None,
    "name": "kaifaqu-night-works",
    "source": "file",
    "matchers": [{"label": "district", "op": "=", "value": "kaifaqu"}],
    "weekdays": ["sat", "sun"],
    "start": "01:00",
    "end": "05:00",
    "comment": "",
    "created_by": "",
    "created_at": None,
    "ended_at": None,
    "active": True,
}


@pytest.fixture
async def api(
    db_url: str, influx: LocalInflux, influx_db: str, broker: LocalBroker, tmp_path: Path
) -> AsyncIterator[Api]:
    """The API with a routing file (beside its rule file) that has a maintenance window."""
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(SHIPPED_CATALOGUE / "manhole.yaml", rules / "manhole.yaml")
    routing = DEFAULT_ROUTING.read_text(encoding="utf-8")
    assert "\nmaintenance_windows: []\n" in routing
    routing = routing.replace("maintenance_windows: []\n", FILE_WINDOWS)
    (rules / "routing.yaml").write_text(routing, encoding="utf-8")
    async with running_api(
        db_url, influx, influx_db, broker, tmp_path, rules_path=rules / "manhole.yaml"
    ) as harness:
        yield harness


async def test_a_window_is_created_listed_beside_the_files_and_ended(api: Api) -> None:
    for role in ("field", "department", "vendor"):
        assert (await api.client(role).post(URL, json=BODY)).status_code == 403, role
        assert (await api.client(role).get(URL)).status_code == 403, role
    assert (await api.client(None).post(URL, json=BODY)).status_code == 401

    r = await api.client("operator").post(URL, json=BODY)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["source"] == "api" and made["active"] is True and made["ended_at"] is None
    assert made["weekdays"] == ["mon", "fri"]  # week order
    assert (made["start"], made["end"]) == ("23:00", "03:30")
    assert made["matchers"] == BODY["matchers"] and made["name"] == BODY["name"]
    assert "ops desk" in made["created_by"]

    for role in ("admin", "operator"):
        items = (await api.client(role).get(URL)).json()["items"]
        assert [(w["source"], w["name"]) for w in items] == [
            ("file", FILE_WINDOW["name"]),
            ("api", BODY["name"]),
        ], role
        assert {k: v for k, v in items[0].items() if k != "open"} == FILE_WINDOW
        assert items[1] == made | {"open": items[1]["open"]}
    windows = await windows_in_force(api.sessions, utcnow())
    assert [w.name for w in windows] == [BODY["name"]]
    assert windows[0].weekdays == frozenset({0, 4}) and windows[0].start_s == 23 * 3600

    r = await api.client("operator").post(URL, json=BODY)
    assert r.status_code == 422 and r.json()["detail"].startswith("name:"), r.text
    r = await api.client("operator").post(URL, json={**BODY, "name": FILE_WINDOW["name"]})
    assert r.status_code == 422 and "routing file" in r.json()["detail"], r.text

    assert (await api.client("field").delete(f"{URL}/{made['id']}")).status_code == 403
    r = await api.client("admin").delete(f"{URL}/{made['id']}")
    assert r.status_code == 200, r.text
    assert r.json()["active"] is False and r.json()["ended_at"] is not None
    items = (await api.client("admin").get(URL)).json()["items"]
    assert [w["source"] for w in items] == ["file"]
    items = (await api.client("admin").get(URL, params={"expired": True})).json()["items"]
    assert [w["id"] for w in items if w["source"] == "api"] == [made["id"]]
    assert await windows_in_force(api.sessions, utcnow()) == ()
    # Ending it again changes nothing; an unknown id is a 404 that says where to look.
    assert (await api.client("admin").delete(f"{URL}/{made['id']}")).status_code == 200
    r = await api.client("admin").delete(f"{URL}/{'0' * 32}")
    assert r.status_code == 404 and "expired=true" in r.json()["detail"]

    # Its name is free again once it has ended.
    assert (await api.client("admin").post(URL, json=BODY)).status_code == 201
    async with api.sessions() as session:
        stored = await session.get(MaintenanceWindowRow, made["id"])
        actions = sorted(
            (
                await session.scalars(
                    select(AuditEntry.action).where(AuditEntry.action.like("maintenance_window.%"))
                )
            ).all()
        )
    assert stored is not None and stored.ended_at is not None
    assert actions == [
        "maintenance_window.create",
        "maintenance_window.create",
        "maintenance_window.end",
        "maintenance_window.end",
    ]


async def test_errors_name_the_field_at_fault(api: Api) -> None:
    admin = api.client("admin")
    cases: dict[str, dict[str, Any]] = {
        "weekdays[1]: 'funday' is not a weekday": {"weekdays": ["mon", "funday"]},
        "weekdays": {"weekdays": []},
        "start: '25:00' is not a time of day": {"start": "25:00"},
        "end: 'noon' is not a time of day": {"end": "noon"},
        "end: equals start": {"start": "02:00", "end": "02:00"},
        'start: "24:00" is the next day\'s': {"start": "24:00"},
        "matchers.0.label": {"matchers": [{"label": "colour", "op": "=", "value": "red"}]},
        "matchers.0.op": {"matchers": [{"label": "kind", "op": "==", "value": "manhole"}]},
        "matchers[0].value: 'atlantis' is not a district": {
            "matchers": [{"label": "district", "op": "=", "value": "atlantis"}]
        },
        "matchers[0].value: '(' is not a valid regular expression": {
            "matchers": [{"label": "device_id", "op": "=~", "value": "("}]
        },
        "matchers": {"matchers": []},
        "name": {"name": ""},
    }
    for expected, change in cases.items():
        r = await admin.post(URL, json={**BODY, **change})
        assert r.status_code == 422, (change, r.text)
        assert expected in r.json()["detail"], (change, r.json()["detail"])
    async with api.sessions() as session:
        assert (await session.scalars(select(MaintenanceWindowRow))).all() == []
