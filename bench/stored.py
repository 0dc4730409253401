"""Counting what a system stored in InfluxDB, and waiting until it holds the backlog."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from bench.backlog import Payloads
from bench.load import COUNT_FIELD
from bench.measure import CpuMark
from bench.options import BenchError
from cityiot.simulators.fleet import SimDevice

POLL_S = 0.25  # cheap sentinel/progress queries
COUNT_POLL_S = 0.5  # exact counts, heavier
STALL_S = 20.0  # no progress this long: the rest is lost


@dataclass(slots=True)
class Drained:
    """How a drain ended."""

    t_end: float
    stored: int
    end_by: str
    mark: CpuMark
    timed_out: bool = False


class Counts(Protocol):
    """What :func:`wait_stored` polls: a cheap count with the sentinels, and the exact one."""

    sentinels: int  # how many sentinel points end the backlog

    def cheap(self) -> tuple[int, int]: ...

    def exact(self) -> int: ...


class StoredCounter:
    """A system's points as InfluxDB counts them (never counted in our process)."""

    def __init__(self, influx_url: str, database: str, payloads: Payloads) -> None:
        self.http = httpx.Client(base_url=influx_url, timeout=60.0)
        self.database = database
        self.sentinels = len(payloads.sentinels)
        self.payloads = payloads

        def where(devices: Sequence[SimDevice]) -> str:
            return " OR ".join(f"\"device_id\"='{d.device_id}'" for d in devices)

        cheap = [f'SELECT count("battery_pct") FROM "manhole" WHERE {where(payloads.sentinels)}']
        by_kind: dict[str, list[SimDevice]] = {}
        for d in payloads.sample:
            by_kind.setdefault(d.kind, []).append(d)
        cheap += [
            f'SELECT count("{COUNT_FIELD[k]}") FROM "{k}" WHERE {where(ds)}'
            for k, ds in by_kind.items()
        ]
        self._cheap = ";".join(cheap)
        self._exact = ";".join(f'SELECT count("{f}") FROM "{k}"' for k, f in COUNT_FIELD.items())
        self._before = 0
        self._before_cheap = [0] * len(cheap)

    def exclude_present(self) -> int:
        """Count from now on: the points stored so far (a warm-up's, returned) are left out
        of :meth:`exact` and :meth:`cheap`."""
        self._before_cheap = self._query(self._cheap)
        self._before = sum(self._query(self._exact))
        return self._before

    def _query(self, q: str) -> list[int]:
        return counts(self.http, self.database, q)

    def exact(self) -> int:
        """Every point of every kind in the system's database."""
        return sum(self._query(self._exact)) - self._before

    def cheap(self) -> tuple[int, int]:
        """(sentinels stored, an estimate of all stored from the sample devices)."""
        counts = [n - b for n, b in zip(self._query(self._cheap), self._before_cheap, strict=True)]
        p = self.payloads
        fleet_messages = len(p.messages) - self.sentinels
        estimate = sum(counts[1:]) * fleet_messages // max(1, p.sample_expected)
        return counts[0], estimate + counts[0]

    def close(self) -> None:
        self.http.close()


def wait_stored(
    counter: Counts,
    sent: int,
    deadline: float,
    mark: Callable[[], CpuMark],
    say: Callable[[str], None],
    poll_s: float = POLL_S,
) -> Drained:
    """Until InfluxDB holds ``sent`` points, they stop coming (``STALL_S``), or ``deadline``;
    the sentinels are looked at every ``poll_s`` (the end is known that closely)."""
    phase = "sentinel"
    last_seen = -1
    last_change = time.time()
    last_mark = mark()
    while True:
        now = time.time()
        if now > deadline:
            stored = counter.exact()
            return Drained(now, stored, "timeout", mark(), timed_out=True)
        if phase == "sentinel":
            sentinels, estimate = counter.cheap()
            at = time.time()
            say(f"draining…  ~{estimate:,} stored")
            if sentinels >= counter.sentinels:
                end_mark = mark()
                stored = counter.exact()
                if stored >= sent:
                    return Drained(at, stored, "sentinel", end_mark)
                phase, last_seen = "count", -1
            elif estimate != last_seen:
                last_seen, last_change, last_mark = estimate, at, mark()
            elif at - last_change > STALL_S:
                phase, last_seen = "count", -1
            time.sleep(poll_s)
            continue
        stored = counter.exact()
        at = time.time()
        say(f"draining…  {stored:,} stored")
        if stored >= sent:
            return Drained(at, stored, "count", mark())
        if stored != last_seen:
            last_seen, last_change, last_mark = stored, at, mark()
        elif at - last_change > STALL_S:
            return Drained(last_change, stored, "stall", last_mark)
        time.sleep(COUNT_POLL_S)


def counts(http: Any, database: str, q: str) -> list[int]:
    """The ``COUNT`` of each statement of ``q`` (0 where nothing matched)."""
    response = http.post("/query", data={"db": database, "q": q})
    response.raise_for_status()
    found = []
    for result in response.json().get("results", []):
        if "error" in result:
            raise BenchError(f"InfluxDB refused the bench's count: {result['error']}")
        series = result.get("series") or [{"values": [[0, 0]]}]
        found.append(int(series[0]["values"][0][1]))
    return found
