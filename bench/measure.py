"""What a process costs: CPU seconds and peak memory from /proc."""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM of ``pid`` in MB (None once it has exited)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


class HighWater:
    """The highest VmHWM of ``pid`` seen by polling every ``every_s`` until ``stop()``: for a
    process that exits on its own (its rusage's maxrss would count the bench's memory, which
    the child had before exec)."""

    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        self.pid = pid
        self.mb: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(every_s,), daemon=True)
        self._thread.start()

    def _watch(self, every_s: float) -> None:
        while not self._stop.is_set():
            mb = peak_rss_mb(self.pid)
            if mb is not None:
                self.mb = max(mb, self.mb or 0.0)
            self._stop.wait(every_s)

    def stop(self) -> float | None:
        self._stop.set()
        self._thread.join()
        return self.mb


@dataclass(frozen=True, slots=True)
class CpuMark:
    """CPU seconds used so far by the system, the broker and InfluxDB, at ``at``."""

    at: float
    system: float | None
    broker: float
    influx: float
