"""What a bench run is asked to do: its options, checked, and the error that says which one
to change."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH_HOME = REPO / ".bench"

SYSTEMS = ("baseline", "influxdb", "cityiot-qos0", "cityiot-qos1", "peer", "workers")
# The window section's brokers (bench/window.py), in its order; the first is the default
# window every ratio is to.
WINDOW_BROKERS = (
    "default", "window-32", "strict-32", "strict-32-one", "relay", "tls", "nats", "nats-32"
)  # fmt: skip
SENTINELS = 16  # the backlog's last messages, one each from these devices


SCALE_DBS = ("sqlite", "postgres")  # the registries of the city-scale sections


@dataclass(frozen=True, slots=True)
class ScaleOptions:
    """What the city-scale sections (bench/scale.py) measure."""

    devices: int = 1_000_000  # registered devices of the registry and API sections (0: skip)
    dbs: tuple[str, ...] = SCALE_DBS
    clients: int = 50  # concurrent API clients
    requests: int = 2_000  # requests per endpoint
    influx_devices: int = 1_000_000  # devices of the InfluxDB index section (0: skip)
    storm_lights: int = 10_000  # streetlights going dark in the storm (0: skip)
    storm_seconds: float = 60.0  # over how long they go dark
    offline_devices: int = 1_000_000  # devices of the offline detection section (0: skip)

    @property
    def wanted(self) -> bool:
        """Any section asked for."""
        return bool(
            self.devices or self.influx_devices or self.storm_lights or self.offline_devices
        )

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["dbs"] = list(self.dbs)
        return out


class BenchError(RuntimeError):
    """The bench could not run; the message says what to change."""


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What ``cityiot bench`` runs (its command-line options)."""

    devices: int = 100_000
    messages: int = 500_000
    systems: tuple[str, ...] = SYSTEMS
    workers: tuple[int, ...] = (1, 2, 3)
    latency_seconds: float = 15.0
    latency_rate: float = 10_000.0
    skip_latency: bool = False
    timeout_s: float = 300.0
    out: Path | None = None
    keep: bool = False
    state_devices: int = 1_000_000  # rule state measured at this many devices (0: not)
    map_devices: int = 100_000  # the console's map drawn with this many devices (0: not)
    rounds: int = 1  # throughput runs of every system, interleaved; the median one is shown
    cold: bool = False  # throughput without the warm-up: a city's first minutes
    mix: tuple[tuple[str, float], ...] = ()  # kind → share of the fleet; empty: every kind
    codec_messages: int = 100_000  # per drain of the codec section (0: the section is skipped)
    codec_devices: int = 10_000  # manholes per load of the codec section
    codec_rounds: int = 4  # rounds of the codec section's three drains, orders alternating
    links_messages: int = 100_000  # by MQTT and by ChirpStack a round (0: no links section)
    links_pushes: int = 10_000  # by CTWing a round of the links section
    links_devices: int = 1_000  # manholes per path of the links section
    links_pushers: int = 16  # concurrent CTWing pushers of the links section
    links_rounds: int = 3  # rounds of the links section's paths, orders alternating
    window_messages: int = 100_000  # a drain of the window section (0: no window section)
    window_devices: int = 1_000  # manholes of the window section
    window_rounds: int = 3  # rounds of the window section's brokers, orders alternating
    window_sessions: int = 16  # the ingest's sessions on the windows of 32 (1: one)
    window_brokers: tuple[str, ...] = ()  # the window section's brokers measured (): all
    # The city-scale sections (bench/scale.py); 0 devices or lights: the section is skipped.
    scale_devices: int = 1_000_000  # registry and API sections, on each of scale_dbs
    scale_dbs: tuple[str, ...] = SCALE_DBS
    scale_clients: int = 50
    scale_requests: int = 2_000
    influx_devices: int = 1_000_000
    storm_lights: int = 10_000
    storm_seconds: float = 60.0
    offline_devices: int = 1_000_000

    def check(self) -> None:
        """Raise ``BenchError`` naming the option to change when one is out of range."""
        if self.devices < 1:
            raise BenchError(f"--devices must be at least 1, not {self.devices}")
        if self.messages < 2 * SENTINELS:
            raise BenchError(f"--messages must be at least {2 * SENTINELS}, not {self.messages}")
        unknown = [s for s in self.systems if s not in SYSTEMS]
        if unknown:
            raise BenchError(
                f"--systems: unknown {', '.join(unknown)}; choose from {','.join(SYSTEMS)}, or none"
            )
        sections = (self.codec_messages, self.links_messages, self.window_messages)
        if not (self.systems or any(sections) or self.map_devices or self.scale().wanted):
            raise BenchError(
                "--systems none, --codec-messages 0, --links-messages 0, --window-messages 0, "
                "--map-devices 0 and the city-scale sections at 0 (--scale-devices, "
                "--influx-devices, --storm-lights, --offline-devices) leave nothing to measure; "
                f"name systems ({','.join(SYSTEMS)}) or give a section messages or devices"
            )
        if "workers" in self.systems and (not self.workers or min(self.workers) < 1):
            raise BenchError("--workers must list worker counts of 1 or more, e.g. 1,2,3")
        if self.latency_seconds < 1 or self.latency_rate < 0:
            raise BenchError("--latency-seconds must be ≥ 1 and --latency-rate ≥ 0")
        if self.timeout_s <= 0:
            raise BenchError(f"--timeout must be positive, not {self.timeout_s}")
        for name in ("scale_devices", "influx_devices", "storm_lights", "offline_devices"):
            if getattr(self, name) < 0:
                flag = "--" + name.replace("_", "-")
                raise BenchError(f"{flag} must be 0 (skip) or more, not {getattr(self, name)}")
        unknown_dbs = [db for db in self.scale_dbs if db not in SCALE_DBS]
        if unknown_dbs or (self.scale_devices and not self.scale_dbs):
            raise BenchError(
                f"--scale-dbs: a comma list of sqlite,postgres, not {','.join(self.scale_dbs)!r}"
            )
        if self.storm_seconds <= 0:
            raise BenchError(f"--storm-seconds must be above 0, not {self.storm_seconds}")
        if self.scale_clients < 1 or self.scale_requests < self.scale_clients:
            raise BenchError(
                "--scale-clients must be 1 or more and --scale-requests at least as many, not "
                f"{self.scale_clients} and {self.scale_requests}"
            )
        if self.state_devices < 0:
            raise BenchError(f"--state-devices must be 0 (skip) or more, not {self.state_devices}")
        if self.map_devices < 0:
            raise BenchError(f"--map-devices must be 0 (skip) or more, not {self.map_devices}")
        if self.rounds < 1:
            raise BenchError(f"--rounds must be 1 or more, not {self.rounds}")
        if self.codec_messages:
            if self.codec_messages < 2 * SENTINELS:
                raise BenchError(
                    f"--codec-messages must be 0 (skip the codec section) or at least "
                    f"{2 * SENTINELS}, not {self.codec_messages}"
                )
            if self.codec_devices < 1 or self.codec_rounds < 1:
                raise BenchError("--codec-devices and --codec-rounds must be 1 or more")
        if self.links_messages:
            if self.links_messages < 2 * SENTINELS:
                raise BenchError(
                    f"--links-messages must be 0 (skip the links section) or at least "
                    f"{2 * SENTINELS}, not {self.links_messages}"
                )
            if self.links_pushes < 2 * SENTINELS:
                raise BenchError(
                    f"--links-pushes must be at least {2 * SENTINELS}, not {self.links_pushes}"
                )
            if min(self.links_devices, self.links_pushers, self.links_rounds) < 1:
                raise BenchError(
                    "--links-devices, --links-pushers and --links-rounds must be 1 or more"
                )
        if self.window_messages:
            if self.window_messages < 2 * SENTINELS:
                raise BenchError(
                    f"--window-messages must be 0 (skip the window section) or at least "
                    f"{2 * SENTINELS}, not {self.window_messages}"
                )
            if min(self.window_devices, self.window_rounds) < 1:
                raise BenchError("--window-devices and --window-rounds must be 1 or more")
            if not 1 <= self.window_sessions <= 16:
                raise BenchError(f"--window-sessions must be 1..16, not {self.window_sessions}")
            default = WINDOW_BROKERS[0]
            unknown = [b for b in self.window_brokers if b not in WINDOW_BROKERS]
            if unknown or (self.window_brokers and default not in self.window_brokers):
                raise BenchError(
                    f"--window-brokers: a comma list of {','.join(WINDOW_BROKERS)} with "
                    f"{default} in it (the ratios are to it), not {','.join(self.window_brokers)}"
                )
        from cityiot.domain.catalogue import KINDS

        unknown_kinds = [k for k, _ in self.mix if k not in KINDS]
        if unknown_kinds:
            raise BenchError(
                f"--mix: unknown kind(s) {', '.join(unknown_kinds)}; use {', '.join(KINDS)}"
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "messages": self.messages,
            "systems": list(self.systems),
            "workers": list(self.workers),
            "latency_seconds": self.latency_seconds,
            "latency_rate": self.latency_rate,
            "skip_latency": self.skip_latency,
            "timeout_s": self.timeout_s,
            "state_devices": self.state_devices,
            "map_devices": self.map_devices,
            "rounds": self.rounds,
            "cold": self.cold,
            "mix": dict(self.mix),
            "codec_messages": self.codec_messages,
            "codec_devices": self.codec_devices,
            "codec_rounds": self.codec_rounds,
            "links_messages": self.links_messages,
            "links_pushes": self.links_pushes,
            "links_devices": self.links_devices,
            "links_pushers": self.links_pushers,
            "links_rounds": self.links_rounds,
            "window_messages": self.window_messages,
            "window_devices": self.window_devices,
            "window_rounds": self.window_rounds,
            "window_sessions": self.window_sessions,
            "window_brokers": list(self.window_brokers),
            "scale": self.scale().as_dict(),
        }

    def scale(self) -> ScaleOptions:
        """The city-scale sections' options."""
        return ScaleOptions(
            devices=self.scale_devices,
            dbs=self.scale_dbs,
            clients=self.scale_clients,
            requests=self.scale_requests,
            influx_devices=self.influx_devices,
            storm_lights=self.storm_lights,
            storm_seconds=self.storm_seconds,
            offline_devices=self.offline_devices,
        )


def parse_systems(text: str) -> tuple[str, ...]:
    """A comma list of systems; ``none`` (or nothing): no throughput columns."""
    return tuple(s.strip() for s in text.split(",") if s.strip() and s.strip() != "none")


def parse_workers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise BenchError(
            f"--workers must be a comma list of numbers like 1,2,3, not {text!r}"
        ) from None


def parse_mix(text: str) -> tuple[tuple[str, float], ...]:
    """``kind=share,…`` (``streetlight=0.3,parking=0.25``); empty: every kind, equal shares."""
    mix: list[tuple[str, float]] = []
    for item in (i.strip() for i in text.split(",") if i.strip()):
        kind, _, share = item.partition("=")
        try:
            value = float(share)
        except ValueError:
            value = -1.0
        if not kind.strip() or value <= 0:
            raise BenchError(
                f"--mix must be a comma list of kind=share with positive shares, like "
                f"streetlight=0.3,parking=0.25, not {text!r}"
            )
        mix.append((kind.strip(), value))
    return tuple(mix)
