"""The systems a bench run compares, one column each, and what one system's failure raises."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

import httpx

from bench.backlog import DIRECT_BATCH
from bench.options import SYSTEMS, BenchError, BenchOptions
from bench.peer import PeerError

# What one system's failure raises: reported in its column, the other systems still run.
SYSTEM_ERRORS = (BenchError, PeerError, OSError, subprocess.SubprocessError, httpx.HTTPError)


@dataclass(frozen=True, slots=True)
class SystemSpec:
    """One column of the table: which system, how it is fed."""

    name: str
    kind: str  # baseline | cityiot | peer
    description: str
    publish_qos: int
    delivered_qos: int
    workers: int = 1
    share_group: str = ""


def system_specs(options: BenchOptions) -> list[SystemSpec]:
    """The systems to run, in the table's order."""
    specs: list[SystemSpec] = []
    for name in SYSTEMS:
        if name not in options.systems:
            continue
        if name == "baseline":
            specs.append(
                SystemSpec(
                    name,
                    "baseline",
                    "bench.baseline, a bare paho subscriber that receives and parses the JSON, "
                    "nothing more; QoS 0; done at its own last message",
                    0,
                    0,
                )
            )
        elif name == "influxdb":
            specs.append(
                SystemSpec(
                    name,
                    "influxdb",
                    "InfluxDB alone: the backlog as the ingest's own line protocol, posted "
                    f"in {DIRECT_BATCH:,}-point requests over one keep-alive connection, no "
                    "MQTT: the most this InfluxDB stores of these points, the ceiling of every "
                    "storing column",
                    0,
                    0,
                )
            )
        elif name == "cityiot-qos0":
            specs.append(
                SystemSpec(
                    name,
                    "cityiot",
                    "cityiot ingest --rules (decode, validate, rules, store), published at "
                    "QoS 0: delivered at QoS 0 though the ingest subscribes at QoS 1",
                    0,
                    0,
                )
            )
        elif name == "cityiot-qos1":
            specs.append(
                SystemSpec(
                    name,
                    "cityiot",
                    "cityiot ingest --rules, QoS 1 end to end (acknowledged once stored)",
                    1,
                    1,
                )
            )
        elif name == "peer":
            specs.append(
                SystemSpec(
                    name,
                    "peer",
                    "Node-RED 4: mqtt in → join (5,000 or 1 s) → function → influxdb batch; "
                    "validates nothing; QoS 0",
                    0,
                    0,
                )
            )
        else:
            for n in options.workers:
                specs.append(
                    SystemSpec(
                        f"workers-{n}",
                        "cityiot",
                        f"{n} × cityiot ingest --rules sharing $share/cityiot/… "
                        "(ingest.partition.start_workers), QoS 1",
                        1,
                        1,
                        workers=n,
                        share_group="cityiot",
                    )
                )
    return specs
