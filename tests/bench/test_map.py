"""make bench's console map: drawn in headless Chromium with N devices beside 1,000."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.bench import NO_SCALE

REPO = Path(__file__).resolve().parents[2]


def test_the_map_is_drawn_folded_past_its_bound_and_reported(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [
        sys.executable, "-m", "bench",
        "--systems", "none", "--skip-latency", "--state-devices", "0", *NO_SCALE, "--codec-messages", "0",
        "--links-messages", "0", "--window-messages", "0", "--map-devices", "5000",
        "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    drawn = json.loads(out.read_text())["map_draw"]
    city, baseline = drawn["city"], drawn["baseline"]
    assert (city["devices"], city["folded"]) == (5000, True)  # past 3,000: bubbles
    assert (baseline["devices"], baseline["folded"]) == (1000, False)  # dots
    for figure in (city, baseline):
        assert figure["first_draw_ms"] > 0 and figure["zoom_ms"] > 0 and figure["heap_mib"] > 0
        assert figure["zoom"] > 1  # the wheel zoomed in
    assert "console map: 5,000 devices (in bubbles) first drawn in" in " ".join(done.stdout.split())


def test_a_negative_map_size_is_refused() -> None:
    argv = [sys.executable, "-m", "bench", "--map-devices", "-1"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "--map-devices must be 0 (skip) or more, not -1" in " ".join(done.stderr.split())
