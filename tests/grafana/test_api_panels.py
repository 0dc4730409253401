"""Every Infinity (API) panel query, run against the real API over the filled city with an
operator key (the role deploy/README.md gives Grafana's key): the answer must hold the rows
at the panel's root selector and every column it selects, typed as the panel declares."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from cityiot.api.keys import create_key
from cityiot.api.server import ApiServer
from cityiot.domain.catalogue import KINDS, MODEL
from cityiot.grafana.export import dashboards, render
from cityiot.grafana.kinds import uid as kind_uid
from cityiot.platform.local_services import free_port
from cityiot.storage.engine import make_engine, sessionmaker
from tests.grafana.conftest import City, grafana_query, influx_results


def _api_targets() -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for dashboard in dashboards():
        data = json.loads(render(dashboard))
        for panel in data["panels"]:
            for target in panel["targets"]:
                if target["datasource"]["type"] == "yesoreyeram-infinity-datasource":
                    found.append((data["uid"], f"{panel['title']} [{target['refId']}]", target))
    return found


TARGETS = _api_targets()
# Lists that may be empty in a fresh city (nothing waits out a rule's for, nothing resolved).
MAY_BE_EMPTY = {"Pending [A]", "Resolved [A]"}
KIND_OF = {kind_uid(kind): kind for kind in KINDS}


class ApiClient:
    def __init__(self, client: httpx.AsyncClient, city: City) -> None:
        self.http = client
        self.city = city

    async def rows(self, target: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
        """(whole answer, rows at the root selector) of an Infinity query, as Infinity asks."""
        device = self.city.incidents["cover_open"].device_id
        url = target["url"].replace("$device_id", device)
        params = {
            p["key"]: p["value"].replace("$device_id", device)
            for p in target["url_options"]["params"]
        }
        assert target["url_options"]["method"] == "GET"
        response = await self.http.get(url, params=params)
        assert response.status_code == 200, (url, params, response.text)
        answer = response.json()
        root: Any = answer
        for part in filter(None, target["root_selector"].split(".")):
            root = root[part]
        rows = root if isinstance(root, list) else [root]
        return answer, rows


@pytest.fixture(scope="module")
async def api(city: City) -> AsyncIterator[ApiClient]:
    settings = city.settings.model_copy(update={"api_host": "127.0.0.1", "api_port": free_port()})
    engine = make_engine(settings.database_url)
    try:
        _, key = await create_key(sessionmaker(engine), "operator", name="grafana")
        async with (
            ApiServer(settings) as server,
            httpx.AsyncClient(
                base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30.0
            ) as client,
        ):
            firing = (await client.get("/api/v1/alerts", params={"state": "firing"})).json()
            assert len(firing["items"]) >= 2, "the incidents should have raised alerts"
            # One acknowledged, as a field crew would: the Acknowledged panel has a row.
            ack = await client.post(f"/api/v1/alerts/{firing['items'][-1]['id']}/ack", json={})
            assert ack.status_code == 200, ack.text
            yield ApiClient(client, city)
    finally:
        await engine.dispose()


def test_panels_use_the_api_on_the_dashboards_that_need_it() -> None:
    # Every kind's map takes the positions from the registry.
    assert {uid for uid, _t, _q in TARGETS} == {
        "cityiot-overview",
        *KIND_OF,
        "cityiot-device",
        "cityiot-alerts",
    }
    for _uid, _title, target in TARGETS:
        assert target["url"].startswith("/api/v1/"), "relative to the data source's base URL"


def _is_time(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    return dt.datetime.fromisoformat(value).tzinfo is not None


TYPE_CHECKS = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "timestamp": _is_time,
    "boolean": lambda v: isinstance(v, bool),
}


@pytest.mark.parametrize(
    ("uid", "title", "target"), TARGETS, ids=[f"{u}:{t}" for u, t, _ in TARGETS]
)
async def test_api_panel_answer_has_the_rows_and_columns_it_selects(
    api: ApiClient, uid: str, title: str, target: dict[str, Any]
) -> None:
    answer, rows = await api.rows(target)
    fleet_has_kind = uid not in KIND_OF or api.city.districts(KIND_OF[uid])
    if title not in MAY_BE_EMPTY and fleet_has_kind:
        assert rows, f"{uid} / {title}: no rows at {target['root_selector']!r}"
    for row in rows:
        assert isinstance(row, dict)
        for column in target["columns"]:
            value: Any = row
            for part in column["selector"].split("."):
                assert part in value, f"{title}: {column['selector']} missing from {row}"
                value = value[part]
            # null is a legitimate value (no lighting rate by day, no battery on mains).
            assert value is None or TYPE_CHECKS[column["type"]](value), (title, column, value)
    if target.get("pagination_mode") == "cursor":
        assert "next_cursor" in answer
        assert target["pagination_param_cursor_extraction_path"] == "next_cursor"


async def test_kind_maps_join_positions_with_the_latest_readings(api: ApiClient) -> None:
    """Each kind's map joins the API's positions with InfluxDB's latest readings on
    device_id: every device of the fleet that reported has a position in the city."""
    city = api.city
    for uid, kind in KIND_OF.items():
        data = json.loads(render(next(d for d in dashboards() if d.uid == uid)))
        (panel,) = [p for p in data["panels"] if p["type"] == "geomap"]
        assert _join_options(panel) == {"byField": "device_id", "mode": "inner"}
        targets = {t["refId"]: t for t in panel["targets"]}
        positions = targets["positions"]
        assert ("kind", kind) in [
            (p["key"], p["value"]) for p in positions["url_options"]["params"]
        ]
        id_column = next(c for c in positions["columns"] if c["selector"] == "id")
        assert id_column["text"] == "device_id"
        _, rows = await api.rows(positions)
        by_id = {r["id"]: r for r in rows}
        fleet = {d.device_id for d in city.fleet.devices if d.kind == kind}
        assert set(by_id) == fleet, uid
        q = grafana_query(
            targets["latest"]["query"], {"district": ".*"}, city.start_ms, city.end_ms + 1
        )
        series = influx_results(city.settings, q)["results"][0].get("series", [])
        reported = {s["tags"]["device_id"] for s in series}
        assert reported == fleet, uid
        centre = MODEL.city
        for device_id in reported:
            assert abs(by_id[device_id]["lat"] - centre.lat) < 1, device_id
            assert abs(by_id[device_id]["lon"] - centre.lon) < 1, device_id


def _join_options(geomap: dict[str, Any]) -> dict[str, Any]:
    (join,) = geomap["transformations"]
    assert join["id"] == "joinByField"
    options: dict[str, Any] = join["options"]
    return options
