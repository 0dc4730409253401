"""The registry a bench run's cityiot systems read: its bench devices, the fleet imported
once, and a fresh copy of it for each system."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.options import REPO, BenchError
from cityiot.simulators.fleet import Fleet, SimDevice

# The ingest re-reads registry rows stamped within 10 s of its last refresh: a system
# started sooner after the import would re-read the whole fleet while being measured.
REGISTRY_SETTLE_S = 12.0
# A fleet this small is re-read in milliseconds: not worth the wait (the tests' tiny runs).
SETTLE_ABOVE_DEVICES = 1_000


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def bench_device(device_id: str) -> SimDevice:
    """A manhole of the bench's own (sentinel or probe), registered with the fleet."""
    return SimDevice(
        device_id=device_id,
        vendor="huawei-nb",
        kind="manhole",
        district="yicheng",
        lat=33.0,
        lon=114.03,
        address="驻马店市驿城区基准测试路 1 号",
        install_date=dt.date(2025, 1, 1),
        report_interval_s=300,
        attribute_values=(("depth_cm", 200.0),),
    )


def import_registry(url: str, fleet: Fleet, csv_path: Path) -> None:
    """Register ``fleet`` in the registry at ``url`` with ``cityiot devices import`` (a
    process of its own, so the bench's memory stays that of its payloads)."""
    fleet.write_csv(csv_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYIOT_")}
    env["CITYIOT_DATABASE_URL"] = url
    done = subprocess.run(
        [sys.executable, "-m", "cityiot", "devices", "import"] + [str(csv_path)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(
            f"cityiot devices import {csv_path} failed with code {done.returncode}:\n"
            f"{done.stderr[-2000:]}"
        )


@dataclass(slots=True)
class Registry:
    """The registry as imported, and when a cityiot system may start reading it."""

    path: Path
    say: Callable[[str], None]
    settled_at: float = 0.0

    @classmethod
    def imported(cls, fleet: Fleet, run_dir: Path, say: Callable[[str], None]) -> Registry:
        """``fleet`` registered in ``run_dir/registry.db``."""
        registry = cls(run_dir / "registry.db", say)
        import_registry(sqlite_url(registry.path), fleet, run_dir / "fleet.csv")
        settle_s = REGISTRY_SETTLE_S if len(fleet) > SETTLE_ABOVE_DEVICES else 0.0
        registry.settled_at = time.monotonic() + settle_s
        return registry

    def copy(self, path: Path) -> Path:
        """A copy of the registry as imported: every cityiot system starts from the same
        state, not from the alerts, work orders and latest values of the one before."""
        with (
            contextlib.closing(sqlite3.connect(self.path)) as source,
            contextlib.closing(sqlite3.connect(path)) as copy,
        ):
            source.backup(copy)
        return path

    def settle(self) -> None:
        """Wait out the registry's re-read margin before a cityiot system starts."""
        while (left := self.settled_at - time.monotonic()) > 0:
            self.say(f"letting the registry import settle ({left:.0f} s)…")
            time.sleep(min(left, 1.0))
