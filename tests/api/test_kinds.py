"""GET /kinds, GET/PUT /kinds/{kind} over a running API and a real database: the kinds as
their files say, compatible changes taken at once, incompatible and broken ones refused
with the metric or field named and nothing changed, admin only, audited; a kind another
API process put reaches this one by its background refresh; the lighting rate follows
the model."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cityiot.api.routes.kinds import audit_file_changes
from cityiot.domain.catalogue import KINDS, MODEL, IncompatibleChange
from cityiot.domain.thingmodel import incompatibilities, kind_spec, parse_kind
from cityiot.ingest.validate import Reading
from cityiot.platform.local_services import LocalBroker, LocalInflux
from cityiot.storage.kinds import kind_overrides, save_kind
from tests.api.conftest import DEPARTMENT_KINDS, ROLES, Api, running_api
from tests.api.test_parking_stats import NIGHT, at, latest, set_status
from tests.operator_files import NOISE as OPERATOR_NOISE
from tests.operator_files import changed, write_kind
from tests.waiting import until

# The design's example kind (docs/design.md §4a) as a PUT body: the path names the kind.
NOISE = changed("kind", None)
# The shipped kind the changes below are made to: it has float, bool and enum metrics.
CHANGED = "gas"


# The kinds a test puts leave with it (the API serves this process's model).
pytestmark = pytest.mark.usefixtures("live_model")
# How often the API re-reads the kinds another process put or a file changed: the tests
# that wait for it wait for the event, and a shorter period only brings it sooner.
REFRESH_S = 0.2


@pytest.fixture
async def api(
    db_url: str, influx: LocalInflux, influx_db: str, broker: LocalBroker, tmp_path: Path
) -> AsyncIterator[Api]:
    """tests/api/conftest.py's API, refreshing its kinds every ``REFRESH_S``."""
    async with running_api(
        db_url, influx, influx_db, broker, tmp_path, registry_refresh_s=REFRESH_S
    ) as harness:
        yield harness


async def get_kind(api: Api, kind: str, role: str = "admin") -> dict[str, Any]:
    r = await api.client(role).get(f"/api/v1/kinds/{kind}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def audit_log(api: Api) -> list[dict[str, Any]]:
    r = await api.client("admin").get("/api/v1/audit", params={"action": "kind", "limit": 1000})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def only_spec(served: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v for k, v in served.items() if k not in ("origin", "file", "updated_at", "updated_by")
    }


# -- reading -------------------------------------------------------------------------------


async def test_every_role_reads_the_kinds_as_their_files_say(api: Api) -> None:
    for role in ROLES:
        r = await api.client(role).get("/api/v1/kinds")
        assert r.status_code == 200, (role, r.text)
        body = r.json()
        if role == "department":  # its granted kinds only
            assert [k["kind"] for k in body["items"]] == sorted(DEPARTMENT_KINDS)
            continue
        assert [k["kind"] for k in body["items"]] == sorted(KINDS), role
        assert body["next_cursor"] is None
    for served in body["items"]:
        kind = KINDS[served["kind"]]
        assert only_spec(served) == kind_spec(kind)
        assert (served["origin"], served["file"]) == ("shipped", f"{kind.name}.yaml")
        assert served["updated_at"] is None and served["updated_by"] is None
    one = await get_kind(api, CHANGED, "vendor")
    assert one == next(k for k in body["items"] if k["kind"] == CHANGED)
    assert one["metrics"]["alarm_state"]["type"] == "enum"
    assert (await api.client(None).get("/api/v1/kinds")).status_code == 401


async def test_the_list_pages(api: Api) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        r = await api.client("operator").get("/api/v1/kinds", params=params)
        assert r.status_code == 200, r.text
        seen += [k["kind"] for k in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(KINDS)


async def test_an_unknown_kind_is_a_404_naming_the_known_ones(api: Api) -> None:
    r = await api.client("field").get("/api/v1/kinds/noise")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    detail = r.json()["detail"]
    assert "'noise'" in detail
    assert all(name in detail for name in KINDS), detail


async def test_a_department_key_reads_only_its_granted_kinds(api: Api) -> None:
    department = api.client("department")
    for kind in DEPARTMENT_KINDS:
        assert (await get_kind(api, kind, "department"))["kind"] == kind
    outside = sorted(set(KINDS) - set(DEPARTMENT_KINDS))
    assert outside
    for kind in [*outside, "noise"]:
        r = await department.get(f"/api/v1/kinds/{kind}")
        assert r.status_code == 404, (kind, r.text)
        # Named like a kind that does not exist: the key learns nothing of the others.
        assert r.json()["detail"] == (
            f"no kind '{kind}' for this key; the kinds it may read are "
            + ", ".join(sorted(DEPARTMENT_KINDS))
        )


# -- compatible changes --------------------------------------------------------------------


async def test_a_compatible_change_is_stored_used_at_once_and_audited(api: Api) -> None:
    served = await get_kind(api, CHANGED)
    spec = copy.deepcopy(served)  # as served: the read-only fields go back too
    metrics = spec["metrics"]
    metrics["co_ppm"] = {
        "type": "float",
        "unit": "ppm",
        "range": [0, 1000],
        "title": {"zh": "一氧化碳", "en": "carbon monoxide"},
    }
    low, high = metrics["pressure_kpa"]["range"]
    metrics["pressure_kpa"]["range"] = [low, high * 2]
    metrics["alarm_state"]["values"] = [*metrics["alarm_state"]["values"], "maintenance"]
    spec["title"] = {"zh": "城镇燃气", "en": "town gas network"}

    r = await api.client("admin").put(f"/api/v1/kinds/{CHANGED}", json=spec)
    assert r.status_code == 200, r.text
    put = r.json()
    assert (put["origin"], put["file"]) == ("api", None)
    assert "test admin" in put["updated_by"] and put["updated_at"].endswith("+08:00")
    assert put["metrics"]["co_ppm"]["range"] == [0.0, 1000.0]
    assert put["metrics"]["pressure_kpa"]["range"] == [low, high * 2]
    assert "maintenance" in put["metrics"]["alarm_state"]["values"]
    assert put["title"]["en"] == "town gas network"

    assert await get_kind(api, CHANGED, "operator") == put  # this API uses it at once
    kind = KINDS[CHANGED]
    assert kind.metric("co_ppm") is not None and kind.source == "api"
    stored = await kind_overrides(api.sessions)
    assert stored == {CHANGED: only_spec(put)}

    (entry,) = await audit_log(api)
    assert (entry["action"], entry["resource"]) == ("kind.put", f"kinds/{CHANGED}")
    assert entry["role"] == "admin" and "test admin" in entry["actor"]
    assert entry["detail"]["replaced"] == f"shipped/{CHANGED}.yaml"
    assert entry["detail"]["spec"] == only_spec(put)


async def test_a_new_kind_is_added_and_listed(api: Api) -> None:
    r = await api.client("admin").put("/api/v1/kinds/noise", json=NOISE)
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "noise" and r.json()["origin"] == "api"
    listed = (await api.client("vendor").get("/api/v1/kinds")).json()["items"]
    assert "noise" in [k["kind"] for k in listed] and "noise" in KINDS
    noise = await get_kind(api, "noise")
    assert noise["metrics"]["period"]["values"] == ["day", "night"]
    assert noise["attributes"]["limit_db"]["type"] == "float"
    # the same body with its kind spelled out is the same kind, put again
    again = await api.client("admin").put("/api/v1/kinds/noise", json={"kind": "noise", **NOISE})
    assert again.status_code == 200, again.text
    assert only_spec(again.json()) == only_spec(noise)
    assert [e["detail"]["replaced"] for e in await audit_log(api)] == ["api", None]


# -- refused changes -----------------------------------------------------------------------


def incompatible_changes(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(what, the changed spec, what the 409 must say) for each change stored data forbids."""
    out = []
    retyped = copy.deepcopy(spec)
    retyped["metrics"]["ch4_lel_pct"] = {"type": "bool", "title": {"zh": "甲烷", "en": "methane"}}
    out.append(("a type change", retyped, "metric ch4_lel_pct changes type float → bool"))
    narrowed = copy.deepcopy(spec)
    low, high = narrowed["metrics"]["pressure_kpa"]["range"]
    narrowed["metrics"]["pressure_kpa"]["range"] = [low, high / 2]
    out.append(("a narrower range", narrowed, "metric pressure_kpa narrows its range"))
    removed = copy.deepcopy(spec)
    del removed["metrics"]["temperature_c"]
    out.append(("a removed metric", removed, "metric temperature_c is removed"))
    dropped = copy.deepcopy(spec)
    dropped["metrics"]["alarm_state"]["values"].remove("fault")
    out.append(("a dropped enum value", dropped, "metric alarm_state drops value(s) fault"))
    return out


async def test_an_incompatible_change_is_a_409_naming_the_metric_and_changes_nothing(
    api: Api,
) -> None:
    before = await get_kind(api, CHANGED)
    generation = MODEL.generation()
    admin = api.client("admin")
    changes = incompatible_changes(only_spec(before))
    for what, spec, says in changes:
        r = await admin.put(f"/api/v1/kinds/{CHANGED}", json=spec)
        assert r.status_code == 409, (what, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert says in r.json()["detail"], (what, r.json()["detail"])
        assert any(says in p for p in r.json()["problems"]), what
    # several at once: each is named
    everything = copy.deepcopy(changes[0][1])
    everything["metrics"]["alarm_state"]["values"].remove("fault")
    del everything["metrics"]["temperature_c"]
    r = await admin.put(f"/api/v1/kinds/{CHANGED}", json=everything)
    assert r.status_code == 409
    assert len(r.json()["problems"]) == 3
    for says in ("ch4_lel_pct", "temperature_c", "alarm_state"):
        assert says in r.json()["detail"]

    assert await get_kind(api, CHANGED) == before
    assert MODEL.generation() == generation
    assert await kind_overrides(api.sessions) == {}
    refused = await audit_log(api)
    assert [e["action"] for e in refused] == ["kind.put_refused"] * (len(changes) + 1)
    assert all(e["detail"]["status"] == 409 for e in refused)
    assert "temperature_c" in refused[0]["detail"]["reason"]  # newest first


BROKEN = [
    ("metrics.laeq_db.range", None, "metrics.laeq_db.range"),
    ("metrics.period.values", [], "metrics.period.values"),
    ("metrics.alarm.title", {"zh": "报警"}, "metrics.alarm.title.en"),
    ("metrics.laeq_db.type", "double", "metrics.laeq_db.type: 'double'"),
    ("report_interval_s", 0, "report_interval_s: 0"),
    ("colour", "red", "unknown field(s) ['colour']"),
    (
        "attributes.district",
        {"type": "str", "title": {"zh": "区", "en": "district"}},
        "attributes.district: every device already has district",
    ),
]


async def test_a_broken_kind_is_a_422_naming_the_field(api: Api) -> None:
    """Each broken spec in turn, on one API (every field's message is tested in
    tests/domain; here: the answer, nothing stored, the refusal audited)."""
    for path, change, says in BROKEN:
        spec = changed(path, change, NOISE)
        r = await api.client("admin").put("/api/v1/kinds/noise", json=spec)
        assert r.status_code == 422, (path, r.text)
        assert says in r.json()["detail"], (path, r.json()["detail"])
        assert "noise" not in KINDS
    assert await kind_overrides(api.sessions) == {}
    entries = await audit_log(api)
    assert len(entries) == len(BROKEN)
    assert all(e["action"] == "kind.put_refused" and e["detail"]["status"] == 422 for e in entries)


async def test_the_body_and_the_path_name_the_same_kind(api: Api) -> None:
    admin = api.client("admin")
    r = await admin.put("/api/v1/kinds/noise", json={**NOISE, "kind": "sound"})
    assert r.status_code == 422
    assert "'sound' differs from the path's 'noise'" in r.json()["detail"]
    r = await admin.put("/api/v1/kinds/Noise", json=NOISE)
    assert r.status_code == 422
    assert "[a-z][a-z0-9_]{0,31}" in r.json()["detail"]
    r = await admin.put("/api/v1/kinds/noise", json=[NOISE])
    assert r.status_code == 422
    nul = copy.deepcopy(NOISE)
    nul["title"]["zh"] = "噪\u0000声"
    r = await admin.put("/api/v1/kinds/noise", json=nul)
    assert r.status_code == 422 and "NUL" in r.json()["detail"]
    assert await kind_overrides(api.sessions) == {}


async def test_only_an_admin_key_may_put_a_kind(api: Api) -> None:
    for role in ROLES:
        if role == "admin":
            continue
        r = await api.client(role).put("/api/v1/kinds/noise", json=NOISE)
        assert r.status_code == 403, (role, r.text)
        assert "admin" in r.json()["detail"]
    assert (await api.client(None).put("/api/v1/kinds/noise", json=NOISE)).status_code == 401
    assert "noise" not in KINDS
    assert await kind_overrides(api.sessions) == {}


async def test_a_change_based_on_an_older_version_does_not_overwrite_a_newer_one(
    api: Api,
) -> None:
    original = only_spec(await get_kind(api, CHANGED))
    wider = copy.deepcopy(original)
    wider["metrics"]["ch4_lel_pct"]["range"] = [0, 200]
    r = await api.client("admin").put(f"/api/v1/kinds/{CHANGED}", json=wider)
    assert r.status_code == 200, r.text

    # Another API process checked its change against the version it held (the shipped
    # kind): compatible there, but it would narrow the range the first PUT stored.
    retitled = copy.deepcopy(original)
    retitled["title"] = {"zh": "城镇燃气", "en": "town gas network"}
    older = parse_kind(retitled, "api")
    assert incompatibilities(parse_kind(original, "test"), older) == []
    with pytest.raises(IncompatibleChange) as refused:
        await save_kind(api.sessions, older, "other api")
    assert refused.value.problems and all("ch4_lel_pct" in p for p in refused.value.problems)
    stored = (await kind_overrides(api.sessions))[CHANGED]
    assert stored["metrics"]["ch4_lel_pct"]["range"] == [0.0, 200.0]
    assert stored["title"] == original["title"]


# -- other processes, other endpoints ------------------------------------------------------


async def test_a_kind_put_by_another_api_process_is_taken_in_by_the_refresh(api: Api) -> None:
    # Stored the way PUT stores it, as another API process does: only this API's periodic
    # refresh can bring it into the model it serves.
    await save_kind(api.sessions, parse_kind({"kind": "noise", **NOISE}, "test"), "other api")
    assert "noise" not in KINDS

    async def served() -> bool:
        r = await api.client("operator").get("/api/v1/kinds/noise")
        return r.status_code == 200

    await until(served, what="GET /kinds/noise after the refresh")
    noise = await get_kind(api, "noise")
    assert (noise["origin"], noise["updated_by"]) == ("api", "other api")


async def test_a_kind_changed_by_a_file_is_audit_logged_by_the_api(
    api: Api, tmp_path: Path
) -> None:
    folder = tmp_path / "kinds"
    folder.mkdir()
    MODEL.configure(folder, None)  # the API's CITYIOT_KINDS_PATH (it serves this model)
    path = write_kind(folder)

    async def entries(count: int) -> list[dict[str, Any]] | None:
        r = await api.client("admin").get("/api/v1/audit", params={"action": "kind.file_changed"})
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items if len(items) >= count else None

    found: list[dict[str, Any]] = await until(lambda: entries(1), what="the new file's entry")
    (added,) = found
    assert (added["resource"], added["actor"], added["role"]) == ("kinds/noise", "system", "system")
    assert added["detail"]["file"] == str(path)
    assert added["detail"]["spec"] == kind_spec(KINDS["noise"])
    assert added["detail"]["replaced"] is None

    write_kind(folder, changed("metrics.laeq_db.range", [0, 150], OPERATOR_NOISE))
    found = await until(lambda: entries(2), what="the changed file's entry")
    widened, first = found
    assert first == added
    assert widened["detail"]["spec"]["metrics"]["laeq_db"]["range"] == [0.0, 150.0]
    assert widened["detail"]["replaced"] == "kinds_path/noise.yaml"

    # Another API process that saw the same change writes no second entry for it.
    await audit_file_changes(api.sessions, {n: k for n, k in KINDS.items() if n != "noise"})
    assert len(await entries(0) or []) == 2
    # A kind put through the API is the route's to audit (kind.put), not a file change.
    before = dict(KINDS)
    body = changed("title.en", "noise", changed("kind", None, only_spec(widened["detail"]["spec"])))
    r = await api.client("admin").put("/api/v1/kinds/noise", json=body)
    assert r.status_code == 200, r.text
    assert KINDS["noise"] != before["noise"]
    await audit_file_changes(api.sessions, before)
    assert len(await entries(0) or []) == 2


async def test_the_lighting_rate_counts_every_kind_with_a_bool_power_on(api: Api) -> None:
    lamp = {
        "title": {"zh": "景观灯", "en": "garden lamp"},
        "report_interval_s": 60,
        "metrics": {
            "power_on": {"type": "bool", "title": {"zh": "开灯", "en": "on"}},
            "lux": {
                "type": "float",
                "unit": "lx",
                "range": [0, 200000],
                "title": {"zh": "照度", "en": "illuminance"},
            },
        },
    }
    admin = api.client("admin")
    assert (await admin.put("/api/v1/kinds/garden_lamp", json=lamp)).status_code == 200
    device = {
        "device_id": "gl-1",
        "vendor": "acme",
        "kind": "garden_lamp",
        "district": "yicheng",
        "lat": 32.98,
        "lon": 114.02,
        "address": "驿城区公园",
        "report_interval_s": 60,
    }
    r = await admin.post("/api/v1/devices", json=device)
    assert r.status_code == 201, r.text
    await set_status(api, "online", "gl-1", "sl-1")
    await latest(
        api,
        Reading("gl-1", "garden_lamp", 1000, {"power_on": True}),
        Reading("sl-1", "streetlight", 1000, {"power_on": False}),
    )
    at(api, NIGHT)
    body = (await admin.get("/api/v1/stats/overview")).json()
    assert body["devices"]["garden_lamp"]["online"] == 1
    # the new kind's lamp and the shipped streetlight: both lights, one of them on
    assert (body["lighting"]["on"], body["lighting"]["should_be_on"]) == (1, 2)
    assert body["lighting"]["rate"] == 0.5

    only_lamps = await api.key("department", kinds=["garden_lamp"], districts=["yicheng"])
    body = (await api.client(key=only_lamps).get("/api/v1/stats/overview")).json()
    assert body["lighting"]["on"] == 1 and set(body["devices"]) == {"garden_lamp"}
    no_lights = await api.key("department", kinds=[CHANGED])
    body = (await api.client(key=no_lights).get("/api/v1/stats/overview")).json()
    assert body["lighting"] is None
