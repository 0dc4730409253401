"""The machine a bench run measured on (CPU, cores, RAM, versions), the checkout's commit and
the run's UTC stamp: what every section's figures are reported with."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any


def _first_line(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def _version(text: str | None) -> str | None:
    if text is None:
        return None
    found = re.search(r"v?(\d+\.\d+[\w.~+-]*)", text)
    return found.group(1) if found else text


def hardware(extra: dict[str, str] | None = None) -> dict[str, Any]:
    """CPU model, cores, RAM, OS and the versions of everything the bench ran."""
    from cityiot.platform.local_services import ExecutableNotFound, find_executable

    cpu = "unknown CPU"
    ram_gb = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024**2, 1)
                break
    except OSError:
        pass

    def tool(name: str, *args: str) -> str | None:
        try:
            return _version(_first_line([find_executable(name), *args]))
        except ExecutableNotFound:
            return None

    node = shutil.which("node")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": ram_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "mosquitto": tool("mosquitto", "-h"),
        "influxdb": tool("influxd", "version"),
        "node": _version(_first_line([node, "--version"])) if node else None,
        **(extra or {}),
    }


def git_state(repo: Path) -> dict[str, Any]:
    """The checkout's short commit and whether tracked files differ from it."""
    sha = _first_line(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"])
    status = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    )
    return {"sha": sha, "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def utc_stamp(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
