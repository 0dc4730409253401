"""Issue 24, done when: an operator writes a new kind file and a rule for it, registers
devices of that kind by CSV, and — with no restart of anything — their readings are
validated, stored, alerted on, shown in the console with Chinese titles and exported as a
Grafana dashboard.

Everything runs as an operator runs it: ``cityiot run --no-simulator`` (local broker with
authentication, InfluxDB, SQLite), the kind file dropped into ``CITYIOT_KINDS_PATH`` while
it runs, ``cityiot devices import`` and ``cityiot grafana export`` as commands, a vendor
publishing over MQTT with the account the API issued.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityiot.platform.launcher import ADMIN_KEY_SECRET
from cityiot.platform.local_services import free_port
from tests.operator_files import write_kind
from tests.waiting import until

CITYIOT = str(Path(sys.executable).parent / "cityiot")
RULE = {
    "kind": "noise",
    "severity": "major",
    "when": 'laeq_db > limit_db and period == "night"',
    "clear": "laeq_db < limit_db - 3",
    "for": "0s",
    "summary": {
        "zh": "夜间噪声 {laeq_db} dB(A) 超限",
        "en": "Night noise {laeq_db} dB(A) over the limit",
    },
}
CSV = (
    "device_id,vendor,kind,district,lat,lon,address,report_interval_s,limit_db,zone_class\n"
    "noise-001,soundco,noise,yicheng,32.98,114.02,驿城区 解放路 1 号,60,55,2\n"
    "noise-002,soundco,noise,kaifaqu,32.96,114.05,开发区 雪松大道,60,60,3\n"
)


class Platform:
    """``cityiot run --no-simulator`` in a subprocess, and the operator's commands."""

    def __init__(self, tmp: Path) -> None:
        self.run_dir, self.kinds = tmp / "run", tmp / "kinds"
        self.kinds.mkdir()
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CITYIOT_")} | {
            "CITYIOT_RUN_DIR": str(self.run_dir),
            "CITYIOT_API_PORT": str(self.port),
            "CITYIOT_KINDS_PATH": str(self.kinds),
            "CITYIOT_REGISTRY_REFRESH_S": "0.5",
            "CITYIOT_LOG_FORMAT": "logfmt",
        }
        self.api = f"http://127.0.0.1:{self.port}/api/v1"
        self.headers: dict[str, str] = {}

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [CITYIOT, *args], env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"cityiot {' '.join(args)}: {done.stderr}"
        return done

    @property
    def broker_port(self) -> int:
        return int((self.run_dir / "mosquitto" / "ports").read_text().split()[0])


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    p = Platform(tmp_path)
    log = (tmp_path / "run.log").open("w")
    process = await asyncio.create_subprocess_exec(
        CITYIOT, "run", "--no-simulator", env=p.env, stdout=log, stderr=log, cwd=tmp_path
    )
    try:
        async with httpx.AsyncClient(timeout=5) as http:

            async def ready() -> bool:
                assert process.returncode is None, (tmp_path / "run.log").read_text()[-3000:]
                try:
                    return (await http.get(f"http://127.0.0.1:{p.port}/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await until(ready, timeout_s=120, what="cityiot run ready")
        p.headers = {
            "Authorization": f"Bearer {(p.run_dir / ADMIN_KEY_SECRET).read_text().strip()}"
        }
        yield p
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            await asyncio.wait_for(process.wait(), 60)
        log.close()


def publish(port: int, username: str, password: str, messages: list[tuple[str, str]]) -> None:
    """Each (topic, payload) at QoS 1, waiting for every PUBACK."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{username}-{time.monotonic_ns()}")
    client.username_pw_set(username, password)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=30)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


async def test_an_operator_adds_a_kind_without_restarting_anything(
    platform: Platform, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(timeout=10, headers=platform.headers) as http:
        api = platform.api

        async def got(path: str) -> httpx.Response:
            return await http.get(f"{api}{path}")

        assert (await got("/kinds/noise")).status_code == 404
        # 1. The kind file, written into the running platform's kinds folder.
        write_kind(platform.kinds)

        async def known() -> bool:
            return (await got("/kinds/noise")).status_code == 200

        await until(known, timeout_s=30, what="GET /kinds/noise after the file was written")

        # 2. A rule for it, through the API (the rules stage takes it within seconds).
        put = await http.put(f"{api}/rules/noise_night_limit", json=RULE)
        assert put.status_code == 200, put.text

        # 3. Its devices by CSV, with the kind's own attribute columns.
        (tmp_path / "noise.csv").write_text(CSV)
        created = await http.post(f"{api}/vendors", json={"id": "soundco", "name": "声学仪器"})
        assert created.status_code == 201, created.text
        platform.command("devices", "import", str(tmp_path / "noise.csv"))
        device = (await got("/devices/noise-001")).json()
        assert device["kind"] == "noise" and device["attributes"]["limit_db"] == 55
        assert device["attributes"]["zone_class"] == "2"
        issued = (await http.post(f"{api}/vendors/soundco/credentials")).json()

        # 4. The vendor publishes. The ingest takes new devices into its map within
        # CITYIOT_REGISTRY_REFRESH_S: a reading sent before is refused as unregistered, so
        # the vendor's first (day) reading is repeated until it is the device's latest.
        topic = "city/soundco/noise-001/telemetry"
        port, username, password = platform.broker_port, issued["username"], issued["password"]
        day = {"metrics": {"laeq_db": 50, "alarm": False, "period": "day"}}

        async def taken() -> bool:
            await asyncio.to_thread(publish, port, username, password, [(topic, json.dumps(day))])
            latest = (await got("/devices/noise-001/latest")).json()
            return bool(latest.get("metrics"))

        await until(taken, timeout_s=30, every_s=0.3, what="the ingest taking noise-001")
        # Then a valid night reading over the limit, and one with an enum value outside
        # the model (a dead letter). Later than the day readings, whatever their time.
        now = int(time.time() * 1000)
        night = {"ts": now + 1000, "metrics": {"laeq_db": 72.5, "alarm": True, "period": "night"}}
        dusk = {"ts": now + 2000, "metrics": {"laeq_db": 60, "period": "dusk"}}
        messages = [(topic, json.dumps(night)), (topic, json.dumps(dusk))]
        await asyncio.to_thread(publish, port, username, password, messages)

        # Stored in InfluxDB (asked through the API), the enum as its word.
        async def stored() -> list[Any]:
            r = await got("/devices/noise-001/readings?metric=laeq_db,period")
            return r.json().get("points", []) if r.status_code == 200 else []

        async def night_stored() -> list[Any]:
            points = await stored()
            return points if points and points[-1]["values"].get("period") == "night" else []

        points = await until(night_stored, timeout_s=30, what="the night reading stored")
        assert [p["values"].get("period") for p in points][-2:] == ["day", "night"], points
        assert points[-1]["values"]["laeq_db"] == 72.5

        # Alerted on, by the operator's rule.
        async def alert() -> list[Any]:
            return (await got("/alerts?kind=noise")).json()["items"]

        await until(alert, timeout_s=30, what="the noise rule's alert")
        fired = (await alert())[0]
        assert fired["rule"] == "noise_night_limit" and fired["device_id"] == "noise-001"
        assert fired["values"]["laeq_db"] == 72.5

        # The enum value outside the model is a dead letter that says which values exist.
        async def dead() -> list[str]:
            items = (await got("/deadletters?vendor=soundco")).json()["items"]
            return [d["reason"] for d in items if "period" in d["reason"]]

        reasons = await until(dead, timeout_s=30, what="the dead letter of period=dusk")
        assert "period must be one of day, night, got the string 'dusk'" in reasons[0], reasons

        # The console's reference data: the kind and its metrics by their Chinese titles.
        console = await http.get(f"http://127.0.0.1:{platform.port}/console/catalogue.json")
        assert console.status_code == 200, console.text
        shown = console.json()["kinds"]["noise"]
        assert shown["title"]["zh"] == "环境噪声"
        assert any(m.get("title", {}).get("zh") == "等效声级" for m in shown["metrics"]), shown

    # 5. A Grafana dashboard for it, exported by the command.
    out = tmp_path / "dashboards"
    platform.command("grafana", "export", "--out", str(out))
    dashboards = [json.loads(p.read_text()) for p in out.rglob("*.json")]
    noise = [
        d
        for d in dashboards
        if "noise" in json.dumps(d.get("uid", "")) or "环境噪声" in d.get("title", "")
    ]
    assert noise, sorted(d.get("title", "") for d in dashboards)
    assert "等效声级" in json.dumps(noise[0], ensure_ascii=False)
