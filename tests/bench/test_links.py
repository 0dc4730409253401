"""The bench's links section (bench/links.py): its three paths carry the same readings, and
end to end on a tiny configuration (real Mosquitto, InfluxDB and one platform process with
the API) every path's readings are stored whole, with their figures printed. Never how fast."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bench.links import CHIRPSTACK, CTWING, MQTT, PATHS, LinkLoad
from cityiot.domain.catalogue import KINDS
from cityiot.ingest.codecs import default_codecs
from tests.bench import NO_SCALE

REPO = Path(__file__).resolve().parents[2]


def test_every_path_carries_the_same_readings_with_its_networks_identity() -> None:
    load = LinkLoad.generate(devices=10, messages=100)
    start_s = 1_763_856_000
    mqtt, ctwing, lora = (load.backlog(path, start_s, 100) for path in PATHS)
    assert len(mqtt) == len(ctwing) == len(lora) == 100
    imeis = {d.imei for d in (*load.vendors[CTWING].devices, *load.vendors[CTWING].sentinels)}
    euis = {
        d.dev_eui for d in (*load.vendors[CHIRPSTACK].devices, *load.vendors[CHIRPSTACK].sentinels)
    }
    assert len(imeis) == len(euis) == 10 + 16  # distinct, sentinels included
    manhole = KINDS["manhole"]
    hexframe = default_codecs()["hexframe"]
    attributes = {d.device_id: d.attributes for d in load.fleet.devices}
    for message, push, uplink in zip(mqtt, ctwing, lora, strict=True):
        reading = orjson.loads(message.payload)
        report = orjson.loads(push)
        event = orjson.loads(uplink.payload)
        assert report["messageType"] == "dataReport" and report["IMEI"] in imeis
        assert report["timestamp"] == reading["ts"] and report["upPacketSN"] == reading["seq"]
        assert report["payload"]["serviceData"] == reading["metrics"]
        assert event["deviceInfo"]["devEui"].upper() in euis
        assert uplink.topic.endswith(f"/device/{event['deviceInfo']['devEui']}/event/up")
        frame = base64.b64decode(event["data"])
        (decoded,) = hexframe.decode(frame, manhole, attributes[event["deviceInfo"]["deviceName"]])
        assert decoded.ts == reading["ts"]  # whole seconds: the frame loses nothing
        assert set(decoded.metrics) == set(reading["metrics"])
    assert load.fleet.link_of(load.vendors[MQTT].vendor) == MQTT


@pytest.mark.slow
def test_links_section_stores_every_paths_readings_and_prints_them(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [
        sys.executable, "-m", "bench",
        "--systems", "none", "--skip-latency", "--state-devices", "0", *NO_SCALE, "--codec-messages", "0",
        "--links-devices", "20", "--links-messages", "300", "--links-pushes", "200",
        "--links-pushers", "4",
        "--links-rounds", "2", "--window-messages", "0", "--map-devices", "0", "--timeout", "60",
        "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["systems"] == [] and report["codecs"] is None and report["ok"]
    section = report["links"]
    assert section["ok"] and section["error"] is None and section["notes"] == []
    # Interleaved, the second round in the first's reverse order.
    order = [(d["path"], d["round"]) for d in section["drains"]]
    assert order == [
        ("mqtt", 1), ("ctwing", 1), ("chirpstack", 1),
        ("chirpstack", 2), ("ctwing", 2), ("mqtt", 2),
    ]  # fmt: skip
    for drain in section["drains"]:
        sent = 200 if drain["path"] == "ctwing" else 300
        assert drain["ok"] and drain["sent"] == drain["stored"] == sent, drain
        assert drain["rate"] > 0 and drain["seconds"] > 0
        assert drain["cpu_s"] is not None and drain["cpu_s"] >= 0
        if drain["path"] == "ctwing":
            assert drain["end_by"] == "answered" and drain["pusher_cpu_s"] >= 0
            assert 0 < drain["answer_p50_ms"] <= drain["answer_p95_ms"]
        else:
            assert drain["end_by"] in ("sentinel", "count")
    rates = section["rates"]
    assert all(rates[p] > 0 for p in PATHS)
    assert section["ratios"]["mqtt"] == 1.0
    for path in (CTWING, CHIRPSTACK):
        assert section["ratios"][path] == round(rates[path] / rates["mqtt"], 3)
    assert report["settings"]["links_messages"] == 300
    assert report["settings"]["links_pushes"] == 200

    assert "links: one platform (ingest, rules, API)" in done.stdout
    assert "readings/s stored" in done.stdout and "× mqtt" in done.stdout
    assert "push answered, p50 / p95 ms" in done.stdout
    assert "ctwing is pushed live by 4 concurrent clients" in done.stdout


def test_a_links_section_too_small_is_refused() -> None:
    argv = [sys.executable, "-m", "bench", "--links-messages", "10"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "--links-messages must be 0 (skip the links section) or at least 32" in done.stderr
