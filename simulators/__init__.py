"""A simulated device fleet of the city: devices of every kind in force, their behaviour,
incidents, commands, publishing.

    fleet = Fleet.generate(2000, seed=1)
    fleet.write_csv("fleet.csv")                     # the registry, for `cityiot devices import`
    await run_simulation("127.0.0.1", 1883, fleet, rate=500, incidents=["rainstorm:1"])

``iter_messages`` gives the same messages without a broker, for tests and benchmarks.
Vendors in ``LINK_VENDORS`` report beyond MQTT (``VENDOR_LINKS``): LoRaWAN devices as a
ChirpStack's events, NB-IoT ones as CTWing's and OneNET's pushes (``simulators/links.py``).
"""

from cityiot.domain.sun import is_dark, sun_times
from cityiot.simulators.behaviour import (
    BEHAVIOURS,
    Behaviour,
    DeviceState,
    Metrics,
    behaviour_of,
    new_state,
    normal_band,
    reading,
)
from cityiot.simulators.commands import ACTUATIONS, obey
from cityiot.simulators.fleet import (
    DEFAULT_VENDORS,
    LINK_VENDORS,
    LINKS,
    VENDOR_LINKS,
    Fleet,
    SimDevice,
    SimVendor,
    codec_carries,
    csv_columns,
    default_mix,
    default_supply,
)
from cityiot.simulators.incidents import (
    FRAME_MALFORMED_LABELS,
    INCIDENT_KINDS,
    MALFORMED_LABELS,
    SCENARIOS,
    Incident,
    Scenario,
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
from cityiot.simulators.publisher import (
    ChirpStackTarget,
    IntakeTarget,
    SimulationCounters,
    run_simulation,
)

__all__ = [
    "ACTUATIONS",
    "BEHAVIOURS",
    "DEFAULT_VENDORS",
    "LINKS",
    "LINK_VENDORS",
    "VENDOR_LINKS",
    "FRAME_MALFORMED_LABELS",
    "INCIDENT_KINDS",
    "MALFORMED_LABELS",
    "OK",
    "SCENARIOS",
    "Behaviour",
    "ChirpStackTarget",
    "DeviceState",
    "Fleet",
    "Incident",
    "IntakeTarget",
    "MessageStream",
    "Metrics",
    "Report",
    "Scenario",
    "SimDevice",
    "SimMessage",
    "SimVendor",
    "SimulationCounters",
    "behaviour_of",
    "cadence_ms",
    "codec_carries",
    "csv_columns",
    "default_mix",
    "default_supply",
    "is_dark",
    "iter_messages",
    "iter_reports",
    "new_state",
    "normal_band",
    "obey",
    "parse_incident",
    "plan_incident",
    "reading",
    "run_simulation",
    "status_messages",
    "sun_times",
]
