"""The city-scale sections of ``make bench``: a million devices registered, loaded and asked
for through the API on SQLite and PostgreSQL, InfluxDB's index with their series, an alert
storm, and offline detection at a million devices. Each section is a module of its own,
runnable alone (``python -m bench.scale_api --help`` …); this one runs those asked for in
turn and prints their tables."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from bench.options import ScaleOptions
from bench.scale_api import ScaleApiResult, print_scale_api, run_scale_api
from bench.scale_influx import ScaleInflux, print_scale_influx, run_scale_influx
from bench.scale_offline import ScaleOfflineResult, print_scale_offline, run_scale_offline
from bench.scale_registry import ScaleRegistryResult, print_scale_registry, run_scale_registry
from bench.scale_storm import ScaleStormResult, print_scale_storm, run_scale_storm


@dataclass(slots=True)
class ScaleResult:
    registry: list[ScaleRegistryResult] = field(default_factory=list)
    api: list[ScaleApiResult] = field(default_factory=list)
    influx: ScaleInflux | None = None
    storm: ScaleStormResult | None = None
    offline: ScaleOfflineResult | None = None

    @property
    def ok(self) -> bool:
        """Every section's figures valid: nothing refused, lost or missed."""
        return (
            all(r.ok for r in self.registry)
            and all(r.errors == 0 for r in self.api)
            and (self.storm is None or self.storm.ok)
            and (self.offline is None or self.offline.ok)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "registry": [r.as_dict() for r in self.registry],
            "api": [r.as_dict() for r in self.api],
            "influx": None if self.influx is None else self.influx.as_dict(),
            "storm": None if self.storm is None else self.storm.as_dict(),
            "offline": None if self.offline is None else self.offline.as_dict(),
            "ok": self.ok,
        }


def run_scale(
    options: ScaleOptions, say: Callable[[str], None], log: Callable[[str], None]
) -> ScaleResult:
    """The sections ``options`` asks for, one after the other (each measures alone)."""
    result = ScaleResult()
    if options.devices:
        for db in options.dbs:
            say(f"{options.devices:,} devices registered and loaded on {db}…")
            registry = run_scale_registry(options.devices, db, say=say)
            result.registry.append(registry)
            log(f"scale: {db} registry measured ({'ok' if registry.ok else 'NOT ok'})")
            say(f"the API with {options.devices:,} devices on {db}…")
            api = run_scale_api(options.devices, db, options.clients, options.requests, say)
            result.api.append(api)
            log(f"scale: {db} API measured ({api.errors} errors)")
    if options.influx_devices:
        result.influx = run_scale_influx(options.influx_devices, say=say)
        log(f"scale: InfluxDB's index measured at {options.influx_devices:,} devices")
    if options.storm_lights:
        result.storm = run_scale_storm(options.storm_lights, storm_s=options.storm_seconds, say=say)
        log(f"scale: the storm of {options.storm_lights:,} streetlights measured")
    if options.offline_devices:
        result.offline = run_scale_offline(options.offline_devices, say=say)
        log(f"scale: offline detection measured at {options.offline_devices:,} devices")
    return result


def print_scale(result: ScaleResult, console: Console) -> None:
    for registry in result.registry:
        print_scale_registry(registry, console)
    for api in result.api:
        print_scale_api(api, console)
    if result.influx is not None:
        print_scale_influx(result.influx, console)
    if result.storm is not None:
        print_scale_storm(result.storm, console)
    if result.offline is not None:
        print_scale_offline(result.offline, console)
