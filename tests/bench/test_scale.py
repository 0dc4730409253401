"""``make bench``'s city-scale sections end to end, small: each section runs through the
bench's own command, lands in its JSON and prints its table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_city_scale_sections_run_through_make_bench(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [
        sys.executable, "-m", "bench",
        "--systems", "none", "--skip-latency", "--state-devices", "0", "--codec-messages", "0",
        "--links-messages", "0", "--window-messages", "0", "--map-devices", "0",
        "--scale-devices", "300", "--scale-dbs", "sqlite", "--scale-clients", "2",
        "--scale-requests", "20", "--influx-devices", "200", "--storm-lights", "40",
        "--storm-seconds", "4",
        "--offline-devices", "500", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    scale = json.loads(out.read_text())["scale"]
    assert scale["ok"] is True
    [registry] = scale["registry"]
    [api] = scale["api"]
    assert registry["devices"] == api["devices"] == 300
    assert {e["endpoint"] for e in api["endpoints"]} >= {"devices", "latest", "overview"}
    assert all(e["errors"] == 0 and e["requests"] > 0 for e in api["endpoints"])
    assert [i["index"] for i in scale["influx"]["indexes"]] == ["tsi1", "inmem"]
    assert all(i["series"] == 400 for i in scale["influx"]["indexes"])
    assert scale["storm"]["lights"] == 40
    assert scale["offline"]["devices"] == 500
    text = " ".join(done.stdout.split())
    assert "InfluxDB's index: 200 devices (400 series)" in text
