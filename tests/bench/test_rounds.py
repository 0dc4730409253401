"""``cityiot bench --rounds``: which round stands for a system, and the rounds end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.report import SystemResult
from bench.run import representative
from tests.bench import NO_SCALE

REPO = Path(__file__).resolve().parents[2]


def _round(rate: float, lost: int = 0) -> SystemResult:
    result = SystemResult("cityiot-qos0", "test", 0, 0, 1, "bench_cityiot_qos0")
    result.sent = 1000
    result.stored = 1000 - lost
    result.lost = lost
    result.rate = rate
    result.drain_s = 1000 / rate
    return result


def test_the_median_round_stands_for_the_system_with_every_round_kept() -> None:
    rounds = [_round(30_000), _round(10_000), _round(20_000)]
    chosen = representative(rounds)
    assert chosen is rounds[2]
    assert [r["rate"] for r in chosen.rounds] == [30_000, 10_000, 20_000]
    assert all(r["ok"] for r in chosen.rounds)
    assert chosen.notes == ["round 3 of 3 shown; rates of all rounds: 30,000, 10,000, 20,000"]
    # An even count: the lower of the two middle rounds.
    assert representative([_round(4.0), _round(1.0), _round(3.0), _round(2.0)]).rate == 2.0


def test_a_round_that_lost_readings_is_never_outvoted() -> None:
    rounds = [_round(30_000), _round(25_000, lost=3), _round(20_000)]
    chosen = representative(rounds)
    assert chosen is rounds[1] and not chosen.ok
    assert [r["ok"] for r in chosen.rounds] == [True, False, True]


def test_one_round_is_reported_as_before() -> None:
    only = _round(12_345)
    assert representative([only]) is only
    assert only.rounds == [] and only.notes == []


def test_cpu_per_reading_and_cores_busy_count_the_system_broker_and_influxdb() -> None:
    result = _round(20_000)  # 1,000 readings in 0.05 s
    result.cpu_s, result.broker_cpu_s, result.influx_cpu_s = 0.03, 0.005, 0.015
    assert result.cpu_us_per_reading == 50.0  # 0.05 CPU-s / 1,000
    assert result.cores_busy == 1.0  # 0.05 CPU-s in 0.05 s
    figures = result.as_dict()
    assert figures["cpu_us_per_reading"] == 50.0 and figures["cores_busy"] == 1.0
    assert result.round_figures()["cpu_us_per_reading"] == 50.0

    result.cpu_s = None  # the influxdb column: the bench posts, no system process
    assert result.cpu_us_per_reading == 20.0
    short = _round(20_000, lost=200)  # per reading stored, not sent
    short.cpu_s, short.broker_cpu_s, short.influx_cpu_s = 0.04, 0.0, 0.0
    assert short.cpu_us_per_reading == 50.0
    unmeasured = _round(20_000)  # no CPU marks: no figure rather than a wrong one
    assert unmeasured.cpu_us_per_reading is None and unmeasured.cores_busy is None


def test_rounds_run_interleaved_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [
        sys.executable, "-m", "bench",
        "--devices", "100", "--messages", "500", "--systems", "baseline,influxdb",
        "--rounds", "2", "--skip-latency", "--state-devices", "0", *NO_SCALE, "--timeout", "60",
        "--cold", "--codec-messages", "0", "--links-messages", "0", "--window-messages", "0",
        "--map-devices", "0",
        "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["settings"]["rounds"] == 2 and report["settings"]["cold"] is True
    assert "cold: no warm-up" in done.stdout
    for system in report["systems"]:
        assert len(system["rounds"]) == 2, system["name"]
        assert system["rate"] in [r["rate"] for r in system["rounds"]]
        assert all(r["ok"] and r["stored"] == 500 for r in system["rounds"])
        assert system["warmed"] == 0  # --cold
    assert "rounds' range" in done.stdout
    # Interleaved: baseline, influxdb, then both again.
    order = [line.split(":")[0] for line in done.stderr.splitlines() if " readings/s, " in line]
    assert order == ["baseline", "influxdb", "baseline", "influxdb"], done.stderr[-2000:]


def test_rounds_below_one_are_refused() -> None:
    argv = [sys.executable, "-m", "bench", "--rounds", "0"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "--rounds must be 1 or more, not 0" in done.stderr


def _workers(n: int, cpu_s: float) -> SystemResult:
    result = SystemResult(f"workers-{n}", "test", 1, 1, n, f"bench_workers_{n}")
    result.sent = result.stored = 1000
    result.drain_s, result.rate = 0.05, 20_000
    result.cpu_s, result.broker_cpu_s, result.influx_cpu_s = cpu_s, 0.005, 0.015
    return result


def test_scale_out_weighs_each_worker_count_against_one_worker() -> None:
    from bench.report import BenchReport, scale_out, scale_out_table

    systems = [_workers(2, 0.034), _workers(1, 0.03), _workers(3, 0.036), _round(20_000)]
    report = BenchReport("now", {}, {}, {"cores": 2}, systems, {})
    rows = scale_out(report)
    assert [r["workers"] for r in rows] == [1, 2, 3]  # only the workers columns, in order
    assert [r["cpu_us_per_reading"] for r in rows] == [50.0, 54.0, 56.0]
    assert [r["vs_one_worker"] for r in rows] == [1.0, 1.08, 1.12]
    assert [r["within_goal"] for r in rows] == [True, True, False]
    assert {r["machine_cores"] for r in rows} == {2}
    assert report.as_dict()["scale_out"] == rows
    assert scale_out_table(rows).row_count == 3
