"""The dashboards as files: committed JSON equals a fresh export, every file round-trips
through the SDK's models, and every panel names a data source Grafana is provisioned with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from grafana_foundation_sdk.models.dashboard import Panel
from typer.testing import CliRunner

from cityiot.cli import app
from cityiot.domain.catalogue import MODEL
from cityiot.grafana.export import dashboards, export, file_name, load, render
from cityiot.grafana.queries import (
    API_UID,
    INFLUX_UID,
    MIXED_UID,
    InfinityQuery,
    InfluxQLQuery,
)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# The shipped kinds' dashboards keep the uids they had (cityiot-<kind>): a provisioned
# dashboard is replaced by its new version, not joined by a second one.
UIDS = {"cityiot-overview", "cityiot-device", "cityiot-alerts"} | {
    f"cityiot-{kind}" for kind in MODEL.kinds
}


def test_the_set_is_complete_and_uids_are_unique() -> None:
    built = dashboards()
    assert {d.uid for d in built} == UIDS
    assert len(built) == len(UIDS)
    for d in built:
        ids = [p.id_val for p in d.panels or []]
        assert ids == list(range(1, len(ids) + 1)), d.uid


def test_committed_json_equals_a_fresh_export(committed_dir: Path, tmp_path: Path) -> None:
    export(tmp_path)
    fresh = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.glob("*.json")}
    committed = {p.name: p.read_text(encoding="utf-8") for p in committed_dir.glob("*.json")}
    assert sorted(committed) == sorted(fresh), "run: cityiot grafana export"
    for name, text in fresh.items():
        assert committed[name] == text, f"{name} is stale: run cityiot grafana export"


def test_export_is_deterministic_and_leaves_unchanged_files_alone(tmp_path: Path) -> None:
    first = export(tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in first}
    texts = {p: p.read_text(encoding="utf-8") for p in first}
    second = export(tmp_path)
    assert second == first
    assert {p: p.read_text(encoding="utf-8") for p in second} == texts
    assert {p: p.stat().st_mtime_ns for p in second} == stamps


def test_cli_export_writes_every_dashboard(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["grafana", "export", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{u}.json" for u in UIDS)


@pytest.mark.parametrize("uid", sorted(UIDS))
def test_json_round_trips_through_the_sdk_models(committed_dir: Path, uid: str) -> None:
    text = (committed_dir / f"{uid}.json").read_text(encoding="utf-8")
    model = load(text)
    assert model.uid == uid
    assert json.loads(render(model)) == json.loads(text)
    assert render(model) == text
    # Queries come back typed, not as the SDK's "unknown query" bag.
    for panel in model.panels or []:
        assert isinstance(panel, Panel), "the dashboards have no rows"
        for target in panel.targets or []:
            assert isinstance(target, InfluxQLQuery | InfinityQuery), (uid, panel.title)


@pytest.mark.parametrize("dashboard", dashboards(), ids=lambda d: str(d.uid))
def test_every_query_names_a_provisioned_data_source(dashboard: object) -> None:
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/cityiot.yaml").read_text(encoding="utf-8")
    )
    uids = {s["uid"]: s["type"] for s in provisioned["datasources"]}
    assert uids == {INFLUX_UID: "influxdb", API_UID: "yesoreyeram-infinity-datasource"}
    data = json.loads(render(dashboard))  # type: ignore[arg-type]
    for panel in data["panels"]:
        source = panel["datasource"]
        targets = panel["targets"]
        assert targets, panel["title"]
        if source["uid"] == MIXED_UID:
            assert source["type"] == "datasource"
            assert len({t["datasource"]["uid"] for t in targets}) > 1, panel["title"]
        else:
            assert uids[source["uid"]] == source["type"], panel["title"]
        for target in targets:
            assert uids[target["datasource"]["uid"]] == target["datasource"]["type"]
        assert panel["options"] is not None, panel["title"]
    for variable in data["templating"]["list"]:
        assert variable["datasource"]["uid"] == INFLUX_UID


def test_dashboard_provider_points_where_compose_mounts_the_files() -> None:
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/cityiot.yaml").read_text(encoding="utf-8")
    )["providers"][0]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    assert provider["type"] == "file"


def test_file_names_are_the_uids() -> None:
    assert {file_name(d) for d in dashboards()} == {f"{u}.json" for u in UIDS}
