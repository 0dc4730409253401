"""An operator's rules folder (``CITYIOT_RULES_PATH``) with a ``routing.yaml`` beside its rule
files: the rules come from the rule files, the routing from that file (docs/rules.md#routing)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from cityiot.domain.settings import Settings
from cityiot.ingest.devices import DeviceMap
from cityiot.platform.local_services import LocalBroker
from cityiot.rules.definitions import SHIPPED_CATALOGUE, load_rules
from cityiot.rules.routing import DEFAULT_ROUTING_PATH
from cityiot.rules.service import routing_path, rules_stage

OPERATORS_ROUTING = """\
route:
  receiver: night-desk
  workorder: [critical]
receivers:
  - name: night-desk
    team: night
    channels:
      - {name: night-mqtt, type: mqtt}
"""


def operators_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    shutil.copy(SHIPPED_CATALOGUE / "manhole.yaml", folder / "manhole.yaml")
    (folder / "routing.yaml").write_text(OPERATORS_ROUTING, encoding="utf-8")
    return folder


def test_a_routing_file_in_the_rules_folder_is_not_read_as_rules(tmp_path: Path) -> None:
    folder = operators_folder(tmp_path)
    rules = load_rules(folder)
    assert {r.id for r in rules} == {r.id for r in load_rules(folder / "manhole.yaml")}
    assert rules and all("manhole" in r.kinds for r in rules)
    settings = Settings(rules_path=folder)
    assert routing_path(settings) == folder / "routing.yaml"
    assert routing_path(Settings(rules_path=None)) == DEFAULT_ROUTING_PATH


async def test_the_rules_stage_starts_on_an_operators_folder_with_its_routing(
    tmp_path: Path, sessions: Any, broker: LocalBroker
) -> None:
    folder = operators_folder(tmp_path)
    settings = Settings(rules_path=folder, run_dir=tmp_path / "run", mqtt_url=broker.url)
    stop = asyncio.Event()
    devices = DeviceMap(sessions)
    await devices.refresh()
    async with rules_stage(
        settings, devices, sessions, lambda topic, payload: None, stop=stop
    ) as stage:
        stop.set()
        assert list(stage.router.receivers) == ["night-desk"]
        assert set(stage.engine.evaluator.rules) == {r.id for r in load_rules(folder)}
