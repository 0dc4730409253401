"""Installs anywhere: the wheel, in a fresh virtualenv, run from an empty folder."""

from __future__ import annotations

import contextlib
import os
import shutil
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
from tests.packaging.layout import REPO, mapped_roots

READY_WAIT_S = 180  # a safety net: the test waits for readiness, not for a time


def source_files() -> list[str]:
    """The checkout's files as a fresh clone has them (tracked, and new ones not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [name for name in listed.stdout.splitlines() if (REPO / name).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy: a build/ folder left in the checkout would lend the wheel files the
    # configuration no longer ships.
    source = tmp_path_factory.mktemp("source")
    for name in source_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (built,) = out.glob("cityiot-*.whl")
    return built


def shipped_data() -> set[str]:
    """Where every non-Python file of the package folders lands in an installation."""
    shipped = set()
    for name in source_files():
        path = REPO / name
        if path.suffix in (".py", ".pyc"):
            continue
        for package, folder in mapped_roots().items():  # disjoint folders: one at most
            if path.is_relative_to(folder):
                shipped.add(package.replace(".", "/") + "/" + path.relative_to(folder).as_posix())
    return shipped


def test_the_wheel_installs_one_name_with_its_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"cityiot"}, tops
    data = shipped_data()
    assert "cityiot/rules/catalogue/manhole.yaml" in data  # the check looks where it should
    assert "cityiot/api/console/docs/swagger-init.js" in data
    assert sorted(data - set(names)) == [], "package data missing from the wheel"
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
