"""``cityiot bench`` end to end on a tiny configuration: real Mosquitto, InfluxDB and
``cityiot ingest --rules`` workers. Checks the figures are complete and consistent, never
how fast anything is (tests/bench/test_peer.py covers the Node-RED peer)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench import NO_SCALE

REPO = Path(__file__).resolve().parents[2]
MESSAGES = 2000


@pytest.mark.slow
def test_bench_runs_every_system_and_stores_every_message(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [
        sys.executable,
        "-m",
        "bench",
        "--devices", "200",
        "--messages", str(MESSAGES),
        "--systems", "baseline,influxdb,cityiot-qos1,workers",
        "--workers", "1,2",
        "--latency-seconds", "3",
        "--latency-rate", "200",
        "--timeout", "60",
        "--state-devices", "3000",
        "--codec-messages", "0",  # tests/bench/test_codecs.py runs the codec section
        "--links-messages", "0",  # tests/bench/test_links.py runs the links section
        "--window-messages", "0",  # tests/bench/test_window.py runs the window section
        "--map-devices", "0",  # tests/bench/test_map.py draws the map
        *NO_SCALE,  # tests/bench/test_scale.py runs the city-scale sections
        "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads(out.read_text())
    systems = {s["name"]: s for s in report["systems"]}
    assert list(systems) == ["baseline", "influxdb", "cityiot-qos1", "workers-1", "workers-2"]
    for name, s in systems.items():
        assert s["ok"], (name, s)
        assert s["sent"] == MESSAGES
        # One warm-up reading per device before the drain, stored and left out of it.
        assert s["warmed"] == (0 if name == "baseline" else 200), name
        assert s["stored"] == MESSAGES, name
        assert s["lost"] == 0 and s["duplicated"] == 0
        assert s["rate"] > 0 and s["drain_s"] > 0
        assert s["broker_cpu_s"] >= 0 and s["influx_cpu_s"] >= 0
        machine = (s["cpu_s"] or 0) + s["broker_cpu_s"] + s["influx_cpu_s"]
        assert s["cpu_us_per_reading"] == round(machine / MESSAGES * 1e6, 1), name
        assert s["cores_busy"] == round(machine / s["drain_s"], 2), name
        if name != "influxdb":  # the bench itself posts there: no system process
            assert s["cpu_s"] > 0, name
            assert s["peak_rss_mb"] > 0
    assert systems["influxdb"]["end_by"] == "posted"
    # InfluxDB's CPU is measured (each column's own can round to 0 at 2,000 points: the
    # clock ticks every 10 ms, and after the warm-up its series exist).
    assert sum(s["influx_cpu_s"] for s in systems.values()) > 0
    assert systems["baseline"]["ratio"] == 1.0
    assert systems["workers-2"]["workers"] == 2
    assert {
        s["end_by"] for s in systems.values() if s["name"].startswith(("cityiot", "workers"))
    } <= {
        "sentinel",
        "count",
    }

    latency = systems["cityiot-qos1"]["latency"]
    assert latency["stored"]["samples"] > 0
    assert latency["alert"]["samples"] > 0
    assert latency["background_sent"] > 0
    assert systems["workers-1"]["latency"] is None

    state = report["rule_state"]
    assert state["devices"] == 3000 and state["readings"] == 6000
    assert 0 < state["bytes_per_device"] == round(state["bytes_total"] / 3000, 1)
    assert "bytes per device at 3,000 devices" in done.stdout

    assert report["settings"]["messages"] == MESSAGES and report["settings"]["cold"] is False
    assert report["codecs"] is None and "codecs: one ingest" not in done.stdout
    assert "warm: before each storing system's drain" in done.stdout
    assert report["hardware"]["cores"] >= 1 and report["hardware"]["mosquitto"]
    assert "readings/s stored" in done.stdout and "CPU µs / reading, all" in done.stdout
    for name in systems:
        assert name in done.stdout
    assert str(out) in done.stdout.replace("\n", "")
