"""What the rules tests share: a clock moved by hand, and waiting for a condition."""

from __future__ import annotations

import datetime as dt
import time


class HandClock:
    """Seconds since the epoch that move only when told to (the real time by default)."""

    def __init__(self, start: float | dt.datetime | None = None) -> None:
        if isinstance(start, dt.datetime):
            start = start.timestamp()
        self.now = time.time() if start is None else float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, delta: float | dt.timedelta) -> dt.datetime:
        self.now += delta.total_seconds() if isinstance(delta, dt.timedelta) else delta
        return self.at

    @property
    def at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.now, dt.UTC)
