"""The registry-at-scale section (bench/scale_registry.py) end to end on a small registry:
a real ``cityiot devices import`` and ``cityiot ingest`` on Mosquitto and InfluxDB, every
figure reported and every planted bad row found at its line. Never how fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.scale_registry import bad_lines, reported_rows

REPO = Path(__file__).resolve().parents[2]

FIGURES = (
    "import_s",
    "import_cpu_s",
    "import_peak_rss_mb",
    "reimport_s",
    "reimport_peak_rss_mb",
    "ingest_ready_s",
    "ingest_loaded_s",
    "ingest_rss_mb",
    "ingest_hwm_mb",
    "refresh_pickup_s",
    "refresh_cpu_s",
    "refresh_load_s",
    "refresh_load_cpu_s",
    "refresh_idle_cpu_s_per_min",
)


def test_bad_lines_spread_over_the_file_and_are_read_back() -> None:
    lines = bad_lines(1_000, 10)
    assert len(lines) == 10 and lines[0] >= 2 and lines[-1] <= 1_001
    stderr = "\n".join(
        [
            "/x/f.csv:line 7, lat: 'north' is not a number; write …",
            "/x/f.csv:line 9: 3 values but the header has 8 columns; …",
            "/x/other.csv:line 11, kind: …",
            "created=1 updated=0 unchanged=0 errors=2",
        ]
    )
    assert reported_rows(stderr, Path("/x/f.csv")) == {7: "lat", 9: None}


def test_a_small_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    argv = [
        sys.executable, "-m", "bench.scale_registry", "--devices", "500", "--db", "sqlite",
        "--bad-rows", "20", "--changed", "50", "--cache", str(tmp_path / "cache"),
        "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["error"] is None
    assert [name for name in FIGURES if result[name] is None] == []
    assert result["import_created"] == 500
    assert result["bad_rows_planted"] == result["bad_rows_reported"] == 20
    assert result["bad_rows_stray"] == 0
    assert result["changed_devices"] == 50
    assert "A registry of 500 devices on sqlite" in done.stdout
