"""What `make run` (`cityiot run`) simulates: every kind live, and the lifeline incidents."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cityiot.cli import app
from cityiot.cli.stages import DEFAULT_INCIDENTS
from cityiot.domain.catalogue import KINDS
from cityiot.platform.launcher import Launch, simulated_fleet
from cityiot.simulators import DEFAULT_VENDORS, LINKS, SCENARIOS, parse_incident


def test_make_run_shows_every_kind_and_every_lifeline_incident() -> None:
    launch = Launch()
    fleet = simulated_fleet(launch.devices, launch.seed)
    counts = Counter(d.kind for d in fleet)
    assert set(counts) == set(KINDS) and min(counts.values()) >= 100
    # Every link speaks, each with a good share of the city (issue 26).
    links = Counter(d.link for d in fleet)
    assert set(links) == set(LINKS) and min(links.values()) >= 100, links
    # Without the local broker (CITYIOT_MQTT_URL set) there is no simulated ChirpStack.
    assert "chirpstack" not in {d.link for d in simulated_fleet(200, 1, lorawan=False)}
    planned = [parse_incident(spec, fleet, seed=launch.seed) for spec in DEFAULT_INCIDENTS]
    names = {i.name for i in planned}
    assert {"rainstorm", "gas_leak", "tunnel_air"} <= names
    for incident in planned:
        incident.check(fleet)
        assert incident.lasts_s is not None  # each ends, and the city recovers
        scenario = SCENARIOS[incident.name]
        assert scenario.title_zh and scenario.title_en
    # Each lifeline kind suffers one, so its rules show.
    by_id = {d.device_id: d.kind for d in fleet}
    hit = {by_id[d] for i in planned for d in i.device_ids}
    assert {"waterlogging", "gas", "tunnel"} <= hit


def test_cityiot_simulate_chooses_its_links_and_says_what_each_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYIOT_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("CITYIOT_MQTT_URL", "")
    runner = CliRunner()

    def simulate(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, ["simulate", "--devices", "40", *args])
        return result.exit_code, " ".join(result.output.split())  # the console wraps lines

    csv_path = tmp_path / "fleet.csv"
    code, out = simulate("--csv", str(csv_path), "--link", "mqtt", "--link", "onenet")
    assert code == 0, out
    assert "cm-nb-onenet (onenet): codec json" in out
    rows = list(csv.DictReader(csv_path.open(encoding="utf-8")))
    onenet = [r for r in rows if r["vendor"] == "cm-nb-onenet"]
    assert onenet and all(len(r["imei"]) == 15 and r["onenet_dev_id"] for r in onenet)
    assert {r["vendor"] for r in rows} - {"cm-nb-onenet"} <= {v.id for v in DEFAULT_VENDORS}

    assert simulate("--link", "lora") == (1, "error: unknown --link lora: use " + ", ".join(LINKS))
    # A LoRaWAN fleet alone: the kinds its frames can carry, each device with its DevEUI.
    code, out = simulate("--csv", str(csv_path), "--link", "chirpstack")
    assert code == 0, out
    rows = list(csv.DictReader(csv_path.open(encoding="utf-8")))
    assert {r["vendor"] for r in rows} == {"tianzhong-lora"}
    assert all(len(r["dev_eui"]) == 16 for r in rows)
    monkeypatch.setenv("CITYIOT_MQTT_URL", "mqtt://127.0.0.1:1")  # never reached below
    code, out = simulate("--link", "ctwing")
    assert code == 1 and "--api-url" in out, out
    code, out = simulate("--link", "chirpstack")
    assert code == 1 and "--chirpstack-url" in out, out
    code, out = simulate(
        "--link", "ctwing", "--api-url", "http://127.0.0.1:1", "--intake-token", "x"
    )
    assert code == 1 and "VENDOR=TOKEN" in out, out
    # A vendor whose token is missing is named before anything is sent.
    token = ("--intake-token", "ct-nb-frame=abc")
    code, out = simulate("--link", "ctwing", "--api-url", "http://127.0.0.1:1", *token)
    assert code == 1 and "ct-nb-model" in out and "intake-token" in out, out
