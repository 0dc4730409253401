"""Installs anywhere: the wheel, in a fresh virtualenv, run from an empty folder."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import httpx
import pytest

from cityiot.platform.launcher import ADMIN_KEY_SECRET
from cityiot.platform.local_services import free_port
from tests.packaging.layout import REPO

READY_WAIT_S = 180  # a safety net: the test waits for readiness, not for a time


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (built,) = out.glob("cityiot-*.whl")
    return built


def test_the_wheel_installs_one_name_with_its_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"cityiot"}, tops
    for shipped in (
        "cityiot/rules/catalogue/manhole.yaml",
        "cityiot/rules/routing.yaml",
        "cityiot/api/console/static/index.html",
        "cityiot/api/console/docs/vendor/swagger-ui-bundle.js",
        "cityiot/platform/templates/mosquitto.conf",
        "cityiot/platform/templates/influxdb.conf",
        "cityiot/platform/broker_plugin/cityiot_clientid.c",
        "cityiot/storage/migrations/alembic.ini",
        "cityiot/storage/migrations/script.py.mako",
    ):
        assert shipped in names, f"{shipped} is not in the wheel"
    assert any(n.startswith("cityiot/storage/migrations/versions/") for n in names)
    assert not any(n.startswith(("bench/", "tests/", "cityiot/bench")) for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: Apache-2.0" in zipfile.ZipFile(wheel).read(metadata).decode()


@pytest.mark.slow
def test_the_installed_wheel_runs_from_an_empty_folder(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    version = subprocess.run(
        [str(env_dir / "bin" / "cityiot"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.stdout.startswith("cityiot "), version.stdout + version.stderr

    empty = tmp_path / "elsewhere"
    empty.mkdir()
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CITYIOT_") and key not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env |= {"CITYIOT_API_PORT": str(port), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    log = (tmp_path / "run.log").open("wb")
    process = subprocess.Popen(
        [str(env_dir / "bin" / "cityiot"), "run", "--no-simulator"],
        cwd=empty, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        ready = None
        deadline = time.monotonic() + READY_WAIT_S
        while ready is None and time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "run.log").read_text(errors="replace")
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            except httpx.HTTPError:
                answer = None
            if answer is not None and answer.status_code == 200:
                ready = answer.json()
            else:
                time.sleep(0.5)
        assert ready is not None, (tmp_path / "run.log").read_text(errors="replace")
        assert ready["status"] == "ready", ready
        assert (empty / ".run" / "cityiot.db").is_file()
        # The rule catalogue and the console come from the installed package.
        key = (empty / ".run" / ADMIN_KEY_SECRET).read_text().strip()
        rules = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/rules?limit=500",
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert rules.status_code == 200, rules.text
        assert "manhole_cover_open" in {rule["id"] for rule in rules.json()["items"]}
        console = httpx.get(f"http://127.0.0.1:{port}/console/app.js", timeout=10)
        assert console.status_code == 200 and console.content, console.text
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
    assert process.returncode == 0, (tmp_path / "run.log").read_text(errors="replace")
