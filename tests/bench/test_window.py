"""The bench's broker window and TLS section (bench/window.py): its drains carry the same
readings, and end to end on a tiny configuration (three real Mosquittos — the default
window, a window of 32, a TLS listener — real InfluxDB, one ingest on each) every drain is
stored whole, with its figures and ratios printed. Never how fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bench.window import BROKERS, DEFAULT, SMALL, TLS, WindowLoad

REPO = Path(__file__).resolve().parents[2]


def test_every_drain_carries_the_same_readings_later_in_event_time() -> None:
    load = WindowLoad.generate(devices=10, messages=100)
    first = load.backlog(1_763_856_000)
    second = load.backlog(1_763_856_000 + load.span_s)
    assert len(first) == len(second) == 100
    last_first = max(orjson.loads(m.payload)["ts"] for m in first)
    for a, b in zip(first, second, strict=True):
        one, two = orjson.loads(a.payload), orjson.loads(b.payload)
        assert a.topic == b.topic and one["metrics"] == two["metrics"]
        assert two["ts"] == one["ts"] + load.span_s * 1000 > last_first  # windows never overlap
        assert two["seq"] == one["seq"] + load.span_s
    # One point per device and second: nothing in a drain overwrites another.
    assert len({(m.topic, orjson.loads(m.payload)["ts"]) for m in first}) == 100
    assert len(load.warm_up(1_763_855_000)) == len(load.fleet) == 10 + 16


@pytest.mark.slow
def test_window_section_stores_every_drain_on_each_broker_and_prints_the_ratios(
    tmp_path: Path,
) -> None:
    out = tmp_path / "bench.json"
    argv = [
        sys.executable, "-m", "bench",
        "--systems", "none", "--skip-latency", "--state-devices", "0", "--codec-messages", "0",
        "--links-messages", "0",
        "--window-devices", "20", "--window-messages", "300", "--window-rounds", "2",
        "--timeout", "60", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["systems"] == [] and report["links"] is None and report["ok"]
    section = report["window"]
    assert section["ok"] and section["error"] is None and section["notes"] == []
    assert section["small_window"] == 32 and section["default_window"] > 32
    urls = section["urls"]
    assert urls[TLS].startswith("mqtts://localhost:")
    assert urls[DEFAULT].startswith("mqtt://") and urls[SMALL].startswith("mqtt://")
    order = [(d["broker"], d["round"]) for d in section["drains"]]
    assert order == [
        (DEFAULT, 1), (SMALL, 1), (TLS, 1), (TLS, 2), (SMALL, 2), (DEFAULT, 2),
    ]  # fmt: skip
    for drain in section["drains"]:
        assert drain["ok"] and drain["sent"] == drain["stored"] == 300, drain
        assert drain["rate"] > 0 and drain["seconds"] > 0
        assert drain["end_by"] in ("sentinel", "count")
        assert drain["cpu_s"] is not None and drain["broker_cpu_s"] is not None
    rates = section["rates"]
    assert all(rates[b] > 0 for b in BROKERS)
    assert section["ratios"][DEFAULT] == 1.0
    for broker in (SMALL, TLS):
        assert section["ratios"][broker] == round(rates[broker] / rates[DEFAULT], 3)
    assert section["goal"] == 0.8
    assert section["goal_met"] == (section["ratios"][SMALL] >= 0.8)
    assert report["settings"]["window_messages"] == 300
    assert "max_inflight_messages 32" in report["method"]["window"]

    printed = " ".join(done.stdout.split())  # rich wraps lines
    assert "broker window and TLS: one ingest per broker, QoS 1" in printed
    assert "window 32" in printed and "mqtts://, window" in printed
    assert "× default window" in printed
    assert "window 32:" in printed and "(goal ≥ 0.80)" in printed
    assert "mqtts://:" in printed and "× plain MQTT's rate" in printed


def test_a_window_section_too_small_is_refused() -> None:
    argv = [sys.executable, "-m", "bench", "--window-messages", "10"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "--window-messages must be 0 (skip the window section) or at least 32" in done.stderr
