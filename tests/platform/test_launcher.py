"""``cityiot run`` end to end: local broker with authentication on, the simulator publishing
as each vendor with its own account, the API in the same process; the simulated fleet's
LoRaWAN devices through a simulated ChirpStack and NB-IoT ones through CTWing's and OneNET's
pushes, each link's readings stored."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import stat
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console

from cityiot.domain.settings import MqttTarget, MqttTls, Settings
from cityiot.ingest.broker import BrokerLink
from cityiot.platform.launcher import (
    ADMIN_KEY_SECRET,
    CHIRPSTACK_SECRET,
    CHIRPSTACK_USER,
    PLATFORM_SECRET,
    SIMULATOR_SECRET,
    Launch,
    run_platform,
)
from cityiot.platform.local_services import free_port
from cityiot.simulators import VENDOR_LINKS


def _connack(
    port: int, username: str | None, password: str | None, client_id: str = ""
) -> mqtt.ReasonCode:
    client_id = client_id or f"probe-{time.monotonic_ns()}"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    if username is not None:
        client.username_pw_set(username, password)
    answers: list[mqtt.ReasonCode] = []
    client.on_connect = lambda c, u, f, reason, p: answers.append(reason)
    client.connect("127.0.0.1", port)
    deadline = time.monotonic() + 5
    while not answers and time.monotonic() < deadline:
        client.loop(0.05)
    client.disconnect()
    assert answers, "no CONNACK"
    return answers[0]


async def test_run_secures_the_broker_and_serves_the_api(tmp_path: Path) -> None:
    settings = Settings(
        run_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'cityiot.db'}",
        api_port=free_port(),
        mqtt_url="",
        influx_url="",
        chirpstack_mqtt_url="",  # cityiot run points it at its own broker
    )
    stop = asyncio.Event()
    screen = io.StringIO()
    out = Console(file=screen, width=200)
    launch = Launch(devices=20, rate=100.0, incidents=[])  # 20: every link among them
    task = asyncio.create_task(run_platform(settings, launch, stop, out))
    try:
        key_file = tmp_path / ADMIN_KEY_SECRET
        api = f"http://127.0.0.1:{settings.api_port}/api/v1"
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=5) as http:
            latest: dict[str, object] = {}
            headers: dict[str, str] = {}
            while time.monotonic() < deadline:
                assert not task.done(), task.exception() if task.done() else None
                fleet = (tmp_path / "fleet.csv").read_text() if key_file.exists() else ""
                if fleet.count("\n") > 1:
                    device = next(csv.DictReader(io.StringIO(fleet)))["device_id"]
                    headers = {"Authorization": f"Bearer {key_file.read_text().strip()}"}
                    try:
                        r = await http.get(f"{api}/devices/{device}/latest", headers=headers)
                    except httpx.TransportError:
                        r = None
                    if r is not None and r.status_code == 200 and r.json()["metrics"]:
                        latest = r.json()
                        break
                await asyncio.sleep(0.2)
            # Published by the simulator under its vendor's own account, stored by the ingest.
            assert latest.get("metrics"), "no reading of the simulated fleet arrived"
            vendors = (await http.get(f"{api}/vendors", headers=headers)).json()["items"]
            # A device of each link beyond MQTT has readings, and the registry says its link.
            rows = list(csv.DictReader(io.StringIO((tmp_path / "fleet.csv").read_text())))
            by_link: dict[str, str] = {}
            for row in rows:
                by_link.setdefault(VENDOR_LINKS.get(row["vendor"], "mqtt"), row["device_id"])
            assert set(by_link) == {"mqtt", "chirpstack", "ctwing", "onenet"}, by_link
            # (The link is written with the device's presence, a moment after its reading.)
            seen: dict[str, tuple[bool, str | None]] = {}
            wanted = {link: (True, link) for link in by_link}
            while time.monotonic() < deadline and seen != wanted:
                for link, device in by_link.items():
                    r = await http.get(f"{api}/devices/{device}/latest", headers=headers)
                    info = (await http.get(f"{api}/devices/{device}", headers=headers)).json()
                    seen[link] = (bool(r.json().get("metrics")), info["link"])
                await asyncio.sleep(0.2)
            assert seen == wanted, seen
            # The stages' own counters and queue depths on the in-process API's /metrics.
            metrics = (await http.get(api.replace("/api/v1", "/metrics"))).text
        for name in (
            "cityiot_ingest_stored_total",
            "cityiot_rules_readings_total",
            "cityiot_broker_redelivered_total",
            "cityiot_queue_batches_unstored",
            "cityiot_queue_rules_waiting",
        ):
            assert f"\n{name}" in metrics, name
        accounts = json.loads((tmp_path / SIMULATOR_SECRET).read_text())
        # MQTT accounts for the MQTT vendors; the others report through their networks.
        assert sorted(accounts) == sorted(v["id"] for v in vendors if v["id"] not in VENDOR_LINKS)
        for name in (ADMIN_KEY_SECRET, PLATFORM_SECRET, SIMULATOR_SECRET):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
        port = int((tmp_path / "mosquitto" / "ports").read_text().split()[0])
        vendor, (username, password) = next(iter(accounts.items()))
        assert username == vendor
        assert not (await asyncio.to_thread(_connack, port, username, password)).is_failure
        assert (await asyncio.to_thread(_connack, port, None, None)).is_failure  # anonymous
        # A vendor account may not take the ingest's client id (its session would be lost).
        taken = await asyncio.to_thread(_connack, port, username, password, "cityiot-ingest")
        assert taken.is_failure
        conf = (tmp_path / "mosquitto" / "mosquitto.conf").read_text()
        assert f"\nmessage_size_limit {settings.broker_message_size_limit}\n" in conf
        platform = (tmp_path / PLATFORM_SECRET).read_text().strip()
        assert not (await asyncio.to_thread(_connack, port, "cityiot", platform)).is_failure
        # The simulated ChirpStack's account: on the side listener only.
        side = int((tmp_path / "mosquitto" / "ports").read_text().split()[1])
        network = (tmp_path / CHIRPSTACK_SECRET).read_text().strip()
        assert stat.S_IMODE((tmp_path / CHIRPSTACK_SECRET).stat().st_mode) == 0o600
        assert not (await asyncio.to_thread(_connack, side, CHIRPSTACK_USER, network)).is_failure
        assert (await asyncio.to_thread(_connack, port, CHIRPSTACK_USER, network)).is_failure
        shown = screen.getvalue()
        assert platform not in shown and password not in shown  # never printed
        assert f'-u cityiot -P "$(cat {tmp_path / PLATFORM_SECRET})"' in shown
        assert "/docs" in shown
        # The TLS listener for vendors: the CA it made, printed; a vendor's account works there.
        ca = tmp_path / "tls" / "ca.pem"
        assert "MQTT over TLS mqtts://localhost:" in shown and f"trust the CA {ca}" in shown
        tls_port = int((tmp_path / "mosquitto" / "ports").read_text().split()[2])
        login = f"{quote(username, safe='')}:{quote(password, safe='')}"
        tls = MqttTarget(f"mqtts://{login}@localhost:{tls_port}", tls=MqttTls(str(ca)))
        async with BrokerLink(tls, f"{vendor}-tls-check", []) as link:
            assert link.stats.connected
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def test_cityiot_run_keeps_its_files_in_the_run_dir_for_its_owner_only(
    tmp_path: Path,
) -> None:
    """Issue 22, finding 14: ``cityiot run`` wrote ``./.run/cityiot.db`` although
    CITYIOT_RUN_DIR was set, and the database and the log with mode 0644."""
    import os
    import signal
    import sys

    run_dir, cwd = tmp_path / "run", tmp_path / "elsewhere"
    cwd.mkdir()
    run_dir.mkdir(mode=0o755)  # left open by an earlier run or another umask
    (run_dir / "cityiot.log").write_text("an earlier run's log\n")
    (run_dir / "cityiot.log").chmod(0o644)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYIOT_")}
    env |= {
        "CITYIOT_RUN_DIR": str(run_dir),
        "CITYIOT_API_PORT": str(port),
        # Its default is relative to the working directory.
        "CITYIOT_RULES_PATH": str(Path(__file__).parents[2] / "rules" / "catalogue"),
    }
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "cityiot"),
        "run",
        "--devices",
        "20",
        "--rate",
        "20",
        "--incident",
        "none",
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        async with httpx.AsyncClient(timeout=5) as http:
            while time.monotonic() < deadline:
                assert process.returncode is None, "cityiot run ended early"
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.3)
            else:
                raise AssertionError("the API of cityiot run never became ready")
        assert not (cwd / ".run").exists()  # nothing outside the run dir
        assert (run_dir / "cityiot.db").is_file()
        assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
        written = [p for p in run_dir.iterdir() if p.is_file() and not p.name.startswith(".")]
        names = {p.name for p in written}
        assert {"cityiot.db", "cityiot.log", ADMIN_KEY_SECRET, "fleet.csv"} <= names
        for path in written:  # the database with its -wal and -shm, the log, the secrets
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
        for path in (run_dir / "mosquitto", run_dir / "influxdb"):
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path.name
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            await asyncio.wait_for(process.wait(), 60)
