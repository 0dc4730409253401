"""Each system's throughput run: started and subscribed, stopped while the backlog is queued
for it, resumed (t0), and timed until InfluxDB holds the backlog; its CPU and memory."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
import orjson

from bench.backlog import DIRECT_BATCH, Payloads, line_protocol
from bench.launch import READY_TIMEOUT_S, Launcher, stop_processes
from bench.load import Message, Publisher
from bench.measure import CpuMark, HighWater, peak_rss_mb
from bench.options import REPO, BenchError, BenchOptions
from bench.registry import Registry
from bench.report import SystemResult
from bench.services import Services
from bench.sessions import forget_sessions
from bench.stored import STALL_S, Drained, StoredCounter, wait_stored
from bench.systems import SYSTEM_ERRORS, SystemSpec


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _read_line(process: subprocess.Popen[str], deadline: float) -> str | None:
    """The process's next stdout line, or None at ``deadline`` or when it exits first."""
    assert process.stdout is not None
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([process.stdout], [], [], min(left, 0.5))
        if ready:
            line = process.stdout.readline()
            return line.strip() if line else None
    return None


@dataclass(slots=True)
class Throughput:
    """The throughput runs of one bench, on its services, registry and payloads."""

    options: BenchOptions
    services: Services
    registry: Registry
    payloads: Payloads
    launcher: Launcher
    say: Callable[[str], None]
    log: Callable[[str], None]

    def run_system(self, spec: SystemSpec) -> SystemResult:
        """The throughput run of ``spec``; a failure is reported in the result, not raised."""
        result = SystemResult(
            spec.name,
            spec.description,
            spec.publish_qos,
            spec.delivered_qos,
            spec.workers,
            None if spec.kind == "baseline" else self.services.database(spec.name),
        )
        try:
            if spec.kind == "baseline":
                self.baseline(spec, result)
            elif spec.kind == "influxdb":
                self.influxdb(spec, result)
            elif spec.kind == "peer":
                self.peer(spec, result)
            else:
                self.registry.settle()
                self.cityiot(spec, result)
        except SYSTEM_ERRORS as e:
            result.error = str(e).splitlines()[0] if str(e) else type(e).__name__
            detail = str(e).strip()
            self.log(f"[red]{spec.name} failed:[/] {detail[-3000:]}")
        finally:
            self.services.drop(result.database)
        if result.rate is not None:
            self.log(
                f"{spec.name}: {result.rate:,.0f} readings/s, {result.stored or 0:,} of "
                f"{result.sent:,} in {result.drain_s:.1f} s"
            )
        return result

    def _publish(self, spec: SystemSpec, backlog: Sequence[Message], result: SystemResult) -> None:
        total = len(backlog)
        self.say(f"{spec.name}: publishing backlog {total:,} messages (QoS {spec.publish_qos})…")
        publisher = Publisher(
            self.services.broker.host,
            self.services.broker.port,
            f"bench-load-{self.services.run_id}-{spec.name}",
        )
        try:
            result.publish_s = round(
                publisher.publish_all(
                    backlog,
                    spec.publish_qos,
                    progress=lambda i: self.say(
                        f"{spec.name}: publishing backlog {total:,} messages…  {i:,}"
                    ),
                ),
                2,
            )
        finally:
            publisher.close()
        result.sent = total
        time.sleep(0.5)  # the broker has queued the last ones

    def _drained(self, result: SystemResult, t0: float, start: CpuMark, end: Drained) -> None:
        result.drain_s = round(end.t_end - t0, 3)
        result.end_by = end.end_by
        result.timed_out = end.timed_out
        result.stored = end.stored
        result.lost = max(0, result.sent - end.stored)
        result.duplicated = max(0, end.stored - result.sent)
        if not end.timed_out and result.drain_s > 0:
            result.rate = round(min(result.sent, end.stored) / result.drain_s, 1)
        if end.mark.system is not None and start.system is not None:
            result.cpu_s = round(end.mark.system - start.system, 2)
        result.broker_cpu_s = round(end.mark.broker - start.broker, 2)
        result.influx_cpu_s = round(end.mark.influx - start.influx, 2)
        if end.end_by == "stall":
            result.notes.append(
                f"no new points for {STALL_S:g} s: {result.lost:,} of {result.sent:,} lost; "
                "the rate counts the stored ones up to the last that arrived"
            )
        if end.timed_out:
            result.notes.append(
                f"not drained within --timeout {self.options.timeout_s:g} s "
                f"({end.stored:,} of {result.sent:,} stored)"
            )

    def _drain_stored(
        self, spec: SystemSpec, result: SystemResult, pids: list[int], backlog: list[Message]
    ) -> None:
        """Warm-up (unless --cold), SIGSTOP, backlog, SIGCONT, wait until InfluxDB holds
        it; CPU and final count."""
        assert result.database is not None
        counter = StoredCounter(self.services.influx.url, result.database, self.payloads)
        try:
            if not self.options.cold:
                self.launcher.warm_up(spec, result.database, self.payloads.warm_up())
                self.services.quiet(pids)
                result.warmed = counter.exclude_present()
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            try:
                self._publish(spec, backlog, result)
                start = self.services.mark(pids)
                t0 = time.time()
            finally:
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)
            end = wait_stored(
                counter,
                result.sent,
                t0 + self.options.timeout_s,
                lambda: self.services.mark(pids),
                lambda text: self.say(f"{spec.name}: {text}"),
            )
            if not end.timed_out:
                time.sleep(1.5)  # an extra (duplicated) point would show up by now
                end.stored = counter.exact()
        finally:
            counter.close()
        self._drained(result, t0, start, end)
        rss = [peak_rss_mb(p) for p in pids]
        if all(r is not None for r in rss):
            result.peak_rss_mb = round(max(r for r in rss if r is not None), 1)

    def baseline(self, spec: SystemSpec, result: SystemResult) -> None:
        backlog = self.payloads.backlog()
        client_id = f"bench-baseline-{self.services.run_id}"
        self.say(f"{spec.name}: starting…")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.baseline",
                self.services.broker.host,
                str(self.services.broker.port),
                str(len(backlog)),
                "--qos",
                str(spec.publish_qos),
                "--client-id",
                client_id,
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
        )
        assert process.stdout is not None
        try:
            if _read_line(process, time.monotonic() + READY_TIMEOUT_S) != "ready":
                raise BenchError("bench.baseline did not subscribe (it printed no 'ready')")
            high_water = HighWater(process.pid)
            os.kill(process.pid, signal.SIGSTOP)
            try:
                self._publish(spec, backlog, result)
                start = self.services.mark([process.pid])
                t0 = time.time()
            finally:
                os.kill(process.pid, signal.SIGCONT)
            self.say(f"{spec.name}: draining…")
            line = _read_line(process, time.monotonic() + self.options.timeout_s)
            arrived = self.services.mark([])
            result.peak_rss_mb = _round(high_water.stop())
            if line is None:
                end = Drained(time.time(), 0, "timeout", arrived, timed_out=True)
                result.notes.append(
                    f"the baseline did not receive all {result.sent:,} within --timeout "
                    f"{self.options.timeout_s:g} s (QoS 0 messages dropped by the broker?)"
                )
                self._drained(result, t0, start, end)
                result.stored = None
                return
            done = orjson.loads(line)
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            total_cpu = usage.ru_utime + usage.ru_stime
            end = Drained(
                float(done["last_s"]),
                int(done["received"]),
                "last_s",
                CpuMark(arrived.at, total_cpu, arrived.broker, arrived.influx),
            )
            self._drained(result, t0, start, end)
        finally:
            stop_processes([process])
            forget_sessions(self.services.broker.host, self.services.broker.port, [client_id])

    def influxdb(self, spec: SystemSpec, result: SystemResult) -> None:
        """The backlog's points posted straight to InfluxDB: its ceiling on this machine."""
        assert result.database is not None
        self.services.influx_query(f'CREATE DATABASE "{result.database}"')
        self.say(f"{spec.name}: encoding the backlog as line protocol…")
        devices = {d.device_id: d for d in (*self.payloads.fleet.devices, *self.payloads.sentinels)}
        bodies = line_protocol(self.payloads.backlog(), devices)
        result.sent = len(self.payloads.messages)
        counter = StoredCounter(self.services.influx.url, result.database, self.payloads)
        with httpx.Client(base_url=self.services.influx.url, timeout=120.0) as client:

            def post(bodies: list[bytes], what: str) -> None:
                for i, body in enumerate(bodies):
                    response = client.post(
                        "/write", params={"db": result.database, "precision": "ms"}, content=body
                    )
                    if response.status_code != 204:
                        raise BenchError(f"InfluxDB refused a write: {response.text[:200]}")
                    if i % 10 == 0:
                        self.say(f"{spec.name}: {what}, {i * DIRECT_BATCH:,} posted…")

            try:
                if not self.options.cold:
                    post(line_protocol(self.payloads.warm_up(), devices), "warm-up")
                    self.services.quiet([])
                    result.warmed = counter.exclude_present()
                start = self.services.mark([])
                t0 = time.time()
                post(bodies, f"{result.sent:,} points")
                end_mark = self.services.mark([])
                stored = counter.exact()
            finally:
                counter.close()
        self._drained(result, t0, start, Drained(end_mark.at, stored, "posted", end_mark))
        result.cpu_s = None  # the bench's own posting is not a system's cost

    def cityiot(self, spec: SystemSpec, result: SystemResult) -> None:
        assert result.database is not None
        backlog = self.payloads.backlog()
        client_id = f"bench-{self.services.run_id}-{spec.name}"
        work = self.services.run_dir / spec.name
        with self.launcher.cityiot(spec, result.database, client_id, work) as processes:
            self._drain_stored(spec, result, [p.pid for p in processes], backlog)
            dead = [p.args for p in processes if p.poll() is not None]
            if dead:
                result.error = "a cityiot worker exited during the run"

    def peer(self, spec: SystemSpec, result: SystemResult) -> None:
        assert result.database is not None
        backlog = self.payloads.backlog()
        self.services.influx_query(f'CREATE DATABASE "{result.database}"')
        with self.launcher.peer(spec, result.database, self.services.run_dir / spec.name) as peer:
            self._drain_stored(spec, result, [peer.pid], backlog)
            errors = peer.errors()
            if errors:
                result.notes.append(f"Node-RED logged {len(errors)} errors, first: {errors[0]}")
