"""``GET /rules`` on an operator's rules folder that holds its ``routing.yaml`` beside the
rule files: the catalogue is the rule files only."""

from __future__ import annotations

from pathlib import Path

from cityiot.platform.local_services import LocalBroker, LocalInflux
from cityiot.rules.definitions import load_rules
from tests.api.conftest import running_api
from tests.rules.test_rules_folder import operators_folder


async def test_the_catalogue_leaves_the_folders_routing_file_out(
    db_url: str, influx: LocalInflux, influx_db: str, broker: LocalBroker, tmp_path: Path
) -> None:
    folder = operators_folder(tmp_path)
    async with running_api(
        db_url, influx, influx_db, broker, tmp_path / "run", rules_path=folder
    ) as api:
        r = await api.client("admin").get("/api/v1/rules", params={"limit": 1000})
    assert r.status_code == 200, r.text
    assert {rule["id"] for rule in r.json()["items"]} == {rule.id for rule in load_rules(folder)}
