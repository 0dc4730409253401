"""The bench's codec section (bench/codecs.py): its two loads carry the same readings, and
end to end on a tiny configuration (real Mosquitto, InfluxDB and ``cityiot ingest``) every
drain is stored whole and the looping codec's messages are dead letters. Never how fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.codec_result import CodecResult, Drain
from bench.codecs import (
    CODEC_FILES,
    DECODING_CODEC,
    FRAMES,
    HOSTILE_CODEC,
    JSON,
    CodecLoad,
    decode_costs,
)
from cityiot.domain.catalogue import KINDS
from cityiot.ingest.codecs import default_codecs
from cityiot.ingest.codecs.files import read_codec_folder
from cityiot.ingest.codecs.scripted import FileCodec
from tests.bench import NO_SCALE

REPO = Path(__file__).resolve().parents[2]


def test_every_frame_decodes_to_the_readings_of_its_json_twin() -> None:
    codec = FileCodec(read_codec_folder(CODEC_FILES)[DECODING_CODEC])
    assert codec.check() == 3  # the codec file's examples, run as at load
    json_codec = default_codecs()["json"]
    # Two loads generated alike (each counts its seqs): the same drain as frames and as JSON.
    load = CodecLoad.generate(devices=40, messages=400)
    frames, _ = load.backlog(FRAMES, 1_763_856_000)
    twins, _ = CodecLoad.generate(devices=40, messages=400).backlog(JSON, 1_763_856_000)
    assert len(frames) == len(twins) == 400
    manhole = KINDS["manhole"]
    attributes = {d.device_id: d.attributes for d in load.fleet.devices}
    for frame, twin in zip(frames, twins, strict=True):
        assert len(frame.payload) == 16
        frame_id, twin_id = frame.topic.split("/")[2], twin.topic.split("/")[2]
        assert frame_id.removeprefix("codec-frame") == twin_id.removeprefix("codec-json")
        (decoded,) = codec.decode(frame.payload, manhole, attributes[frame_id])
        (expected,) = json_codec.decode(twin.payload, manhole, attributes[twin_id])
        assert decoded == expected, frame_id
        assert set(decoded.metrics) == {m.name for m in manhole.metrics}


def test_the_looping_codec_loads_and_one_decode_is_timed() -> None:
    hostile = FileCodec(read_codec_folder(CODEC_FILES)[HOSTILE_CODEC], timeout_ms=20)
    assert hostile.check() == 0  # no examples: one would loop too
    decode, decoder, json_decode = decode_costs(CodecLoad.generate(devices=20, messages=600))
    for cost in (decode, decoder, json_decode):
        assert cost.calls == 600 - 16  # the backlog's readings but the sentinels'
        assert 0 < cost.min_us <= cost.median_us


def _drain(load: str, number: int, rate: float, hostile: int = 0) -> Drain:
    return Drain(load, number, 1000, hostile, stored=1000, drain_s=1000 / rate, rate=rate)


def test_each_order_counts_alike_however_many_rounds_ran() -> None:
    # A drain's place in its round moves its rate: here the third of a round runs 10 % slow.
    # Rounds 1 and 3 run json, frames, frames+hostile; round 2 the reverse.
    result = CodecResult(devices=10, messages=1000, rounds=3, qos=1)
    result.drains = [
        _drain("json", 1, 40_000), _drain("frames", 1, 20_000),
        _drain("frames+hostile", 1, 18_000, hostile=20),
        _drain("frames+hostile", 2, 20_000, hostile=20), _drain("frames", 2, 20_000),
        _drain("json", 2, 36_000),
        _drain("json", 3, 40_000), _drain("frames", 3, 20_000),
        _drain("frames+hostile", 3, 18_000, hostile=20),
    ]  # fmt: skip
    assert result.drops_pct == [10.0, 0.0, 10.0]
    # Not the median round's 10 %: each order's median (10 and 0), averaged.
    assert result.drop_pct == 5.0 and result.drop_met is True
    assert result.rate("json") == 38_000 and result.rate("frames") == 20_000
    assert result.ratio == round(20_000 / 38_000, 3) and result.rate_met is True
    # The first looping call takes the whole limit (100 ms), the others 2 ms on probation.
    assert result.limits_pct == [
        round((100 + 19 * 2) / (1000 / 18_000 * 1000) * 100, 1),
        round(20 * 2 / 50 * 100, 1),
        round(20 * 2 / (1000 / 18_000 * 1000) * 100, 1),
    ]
    result.drains[4].stored = 999  # one lost: no rate for frames, nor a drop
    assert result.rate("frames") is None and result.drop_pct is None
    assert result.rate_met is None and not result.ok


@pytest.mark.slow
def test_codec_section_drains_every_load_and_dead_letters_the_looping_codec(
    tmp_path: Path,
) -> None:
    out = tmp_path / "bench.json"
    argv = [
        sys.executable, "-m", "bench",
        "--systems", "none", "--skip-latency", "--state-devices", "0", *NO_SCALE,
        "--codec-devices", "100", "--codec-messages", "1000", "--codec-rounds", "2",
        "--links-messages", "0", "--window-messages", "0", "--map-devices", "0",
        "--timeout", "60", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["systems"] == [] and report["ok"]
    section = report["codecs"]
    assert section["ok"] and section["error"] is None and section["notes"] == []
    # Interleaved, the second round in the first's reverse order.
    order = [(d["load"], d["round"]) for d in section["drains"]]
    assert order == [
        ("json", 1), ("frames", 1), ("frames+hostile", 1),
        ("frames+hostile", 2), ("frames", 2), ("json", 2),
    ]  # fmt: skip
    for drain in section["drains"]:
        assert drain["ok"] and drain["sent"] == drain["stored"] == 1000, drain
        assert drain["rate"] > 0 and drain["end_by"] in ("sentinel", "count")
        assert drain["cpu_s"] is not None and drain["cpu_s"] >= 0
        assert (drain["hostile"] > 0) == (drain["load"] == "frames+hostile")
    hostile = sum(d["hostile"] for d in section["drains"])
    # Every looping call is stopped and kept as a dead letter saying why.
    assert section["hostile_dead_letters"] == hostile
    reasons = " ".join(section["hostile_reasons"])
    assert "codec endless-loop: endless-loop.js ran over its time limit of 100 ms" in reasons
    assert "its limit while on probation" in reasons
    assert section["decode"]["median_us"] > 0 and section["json_decode"]["median_us"] > 0
    assert section["json_rate"] > 0 and section["decoded_rate"] > 0
    assert section["ratio"] == round(section["decoded_rate"] / section["json_rate"], 3)
    assert len(section["drops_pct"]) == len(section["cpu_rises_pct"]) == 2
    assert section["goals"]["decoded_rate"]["met"] in (True, False)
    assert section["goals"]["drop_pct"]["met"] in (True, False)
    assert report["settings"]["codec_messages"] == 1000

    assert "codecs: one ingest, decoding" in done.stdout
    assert "goal ≥ 5,000 decoded messages/s on one ingest" in done.stdout
    assert "lowers the others' rate by ≤ 10 %" in done.stdout
    assert "one decode (FileCodec.decode of a 16-byte frame" in done.stdout


def test_nothing_to_measure_is_refused() -> None:
    argv = [
        sys.executable, "-m", "bench",
        "--systems", "none", "--codec-messages", "0", "--links-messages", "0",
        "--window-messages", "0", "--map-devices", "0", *NO_SCALE,
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "leave nothing to measure" in " ".join(done.stderr.split())  # rich wraps it
    for flag in ("--scale-devices", "--storm-lights", "--offline-devices"):
        argv = [sys.executable, "-m", "bench", flag, "-1"]
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1
        assert f"{flag} must be 0 (skip) or more, not -1" in " ".join(done.stderr.split())
    argv = [sys.executable, "-m", "bench", "--scale-dbs", "mysql"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "--scale-dbs: a comma list of sqlite,postgres, not 'mysql'" in done.stderr
    argv = [sys.executable, "-m", "bench", "--codec-messages", "10"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "--codec-messages must be 0 (skip the codec section) or at least 32" in done.stderr
