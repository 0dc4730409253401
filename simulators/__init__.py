"""A simulated device fleet for Zhumadian: devices, their behaviour, incidents, publishing.

    fleet = Fleet.generate(2000, seed=1)
    fleet.write_csv("fleet.csv")                     # the registry, for `cityiot devices import`
    await run_simulation("127.0.0.1", 1883, fleet, rate=500, incidents=["cover_open:2"])

``iter_messages`` gives the same messages without a broker, for tests and benchmarks.
"""

from cityiot.domain.sun import is_dark, sun_times
from cityiot.simulators.behaviour import DeviceState, Metrics, new_state, reading
from cityiot.simulators.fleet import (
    CSV_COLUMNS,
    DEFAULT_MIX,
    DEFAULT_VENDORS,
    Fleet,
    SimDevice,
    SimVendor,
)
from cityiot.simulators.incidents import (
    FRAME_MALFORMED_LABELS,
    INCIDENT_KINDS,
    MALFORMED_LABELS,
    Incident,
    parse_incident,
    plan_incident,
)
from cityiot.simulators.messages import (
    OK,
    MessageStream,
    Report,
    SimMessage,
    cadence_ms,
    iter_messages,
    iter_reports,
    status_messages,
)
from cityiot.simulators.publisher import SimulationCounters, run_simulation

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_MIX",
    "DEFAULT_VENDORS",
    "FRAME_MALFORMED_LABELS",
    "INCIDENT_KINDS",
    "MALFORMED_LABELS",
    "OK",
    "DeviceState",
    "Fleet",
    "Incident",
    "MessageStream",
    "Metrics",
    "Report",
    "SimDevice",
    "SimMessage",
    "SimVendor",
    "SimulationCounters",
    "cadence_ms",
    "is_dark",
    "iter_messages",
    "iter_reports",
    "new_state",
    "parse_incident",
    "plan_incident",
    "reading",
    "run_simulation",
    "status_messages",
    "sun_times",
]
