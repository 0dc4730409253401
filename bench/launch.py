"""Bringing up a system to measure: ``cityiot ingest --rules`` workers or the Node-RED peer,
subscribed and ready, warmed up like a running city, and stopped with its sessions gone."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.backlog import Payloads
from bench.load import Message, Publisher
from bench.options import REPO, BenchError
from bench.registry import Registry, sqlite_url
from bench.services import Services
from bench.sessions import forget_sessions, session_ids
from bench.stored import COUNT_POLL_S, StoredCounter
from bench.systems import SystemSpec
from cityiot.platform.local_services import LocalBroker

READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0


def stop_processes(processes: Sequence[subprocess.Popen[Any]]) -> None:
    """SIGCONT (a stopped process cannot act on SIGTERM), SIGTERM, then SIGKILL."""
    for p in processes:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGCONT)
                p.terminate()
    for p in processes:
        try:
            p.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _log_tail(path: Path, limit: int = 2000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-limit:].strip()
    return ""


@contextlib.contextmanager
def ingest_workers(
    services: Services,
    registry: Registry,
    spec: SystemSpec,
    database: str,
    client_id: str,
    work: Path,
    say: Callable[[str], None],
    env_extra: Mapping[str, str] | None = None,
    *,
    broker: LocalBroker | None = None,
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``spec.workers`` ``cityiot ingest --rules`` processes on a copy of ``registry``,
    subscribed and ready, with their run dir and logs in ``work`` (a fresh one: readiness is
    read from the logs); ``env_extra`` adds settings (``CITYIOT_CODECS_PATH``, an
    ``mqtts://`` URL). On ``broker`` (default: the run's). Stopped, and their broker sessions
    removed, when the block ends."""
    from cityiot.ingest.partition import start_workers

    broker = broker or services.broker

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYIOT_")}
    env.update(
        CITYIOT_MQTT_URL=broker.url,
        CITYIOT_INFLUX_URL=services.influx.url,
        CITYIOT_INFLUX_DB=database,
        CITYIOT_DATABASE_URL=sqlite_url(registry.copy(work / "registry.db")),
        CITYIOT_RUN_DIR=str(work),
        CITYIOT_MQTT_CLIENT_ID=client_id,
        CITYIOT_RULES_PATH=str(REPO / "rules" / "catalogue"),
        CITYIOT_LOG_FORMAT="logfmt",  # readiness is read as event=… in the workers' logs
    )
    env.update(env_extra or {})
    say(f"{spec.name}: starting {spec.workers} × cityiot ingest --rules…")
    processes = start_workers(
        spec.workers,
        share_group=spec.share_group,
        base=env,
        rules=True,
        log_dir=work,
        cwd=REPO,
    )
    try:
        logs = [work / f"worker-{k}.log" for k in range(spec.workers)]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            texts = [_log_tail(path, limit=1_000_000) for path in logs]
            if all("event=mqtt_connected" in t and "event=rules_started" in t for t in texts):
                break
            for p, path in zip(processes, logs, strict=True):
                if p.poll() is not None:
                    raise BenchError(
                        f"cityiot ingest exited with code {p.returncode} while starting: "
                        f"see {path}\n{_log_tail(path)}"
                    )
            if time.monotonic() > deadline:
                raise BenchError(
                    f"cityiot ingest did not start within {READY_TIMEOUT_S:g} s: see {work}"
                )
            time.sleep(0.1)
        time.sleep(0.5)  # its first registry refresh, then the loop idles
        yield processes
    finally:
        say(f"{spec.name}: stopping…")
        stop_processes(processes)
        forget_sessions(broker.host, broker.port, session_ids(client_id, spec.workers))


@dataclass(slots=True)
class Launcher:
    """Starts the systems of one run against its services, registry and payloads."""

    services: Services
    registry: Registry
    payloads: Payloads
    timeout_s: float  # --timeout, for the warm-up too
    say: Callable[[str], None]
    kinds: dict[str, str]  # device id → kind, for the peer
    red_js: Path | None = None
    versions: dict[str, str] = field(default_factory=dict)

    @contextlib.contextmanager
    def cityiot(
        self, spec: SystemSpec, database: str, client_id: str, work: Path
    ) -> Iterator[list[subprocess.Popen[bytes]]]:
        """``spec.workers`` ``cityiot ingest --rules`` processes, subscribed and ready, with
        their run dir and logs in ``work`` (a fresh one: readiness is read from the logs)."""
        with ingest_workers(
            self.services, self.registry, spec, database, client_id, work, self.say
        ) as processes:
            yield processes

    @contextlib.contextmanager
    def peer(self, spec: SystemSpec, database: str, work: Path) -> Iterator[Any]:
        """Node-RED running the peer flow into ``database``, subscribed, working in ``work``."""
        from bench.peer import NodeRedPeer, ensure_installed, installed_versions

        if self.red_js is None:
            self.say("installing Node-RED 4 (first run only)…")
            self.red_js = ensure_installed(progress=lambda line: self.say(f"peer: {line[:100]}"))
            self.versions = installed_versions()
        self.say(f"{spec.name}: starting Node-RED…")
        with NodeRedPeer(
            self.red_js,
            work,
            mqtt_host=self.services.broker.host,
            mqtt_port=self.services.broker.port,
            influx_url=self.services.influx.url,
            database=database,
            kinds=self.kinds,
            qos=spec.delivered_qos,
            ready_timeout_s=READY_TIMEOUT_S,
        ) as peer:
            yield peer
            self.say(f"{spec.name}: stopping…")

    def warm_up(self, spec: SystemSpec, database: str, messages: list[Message]) -> None:
        """Every fleet device reports once through the running system, and InfluxDB holds
        it all, before a throughput or latency run: a running city's series exist and its
        devices are online. Without it the run would measure InfluxDB creating 100,000 series
        and the system marking 100,000 devices online (a cold start, once per city)."""
        self.say(f"{spec.name}: warm-up, one reading from each of {len(messages):,}…")
        publisher = Publisher(
            self.services.broker.host,
            self.services.broker.port,
            client_id=f"bench-{self.services.run_id}-warm-up",
        )
        try:
            publisher.publish_all(messages, qos=spec.publish_qos)
        finally:
            publisher.close()
        counter = StoredCounter(self.services.influx.url, database, self.payloads)
        try:
            deadline = time.monotonic() + self.timeout_s
            while (stored := counter.exact()) < len(messages):
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"{spec.name}: the warm-up stored {stored:,} of {len(messages):,} "
                        f"readings in {self.timeout_s:g} s"
                    )
                self.say(f"{spec.name}: warm-up, {stored:,} stored")
                time.sleep(COUNT_POLL_S)
        finally:
            counter.close()
