"""What `make run` (`cityiot run`) simulates: every kind live, and the lifeline incidents."""

from __future__ import annotations

from collections import Counter

from cityiot.cli.stages import DEFAULT_INCIDENTS
from cityiot.domain.catalogue import KINDS
from cityiot.platform.launcher import Launch
from cityiot.simulators import SCENARIOS, Fleet, parse_incident


def test_make_run_shows_every_kind_and_every_lifeline_incident() -> None:
    launch = Launch()
    fleet = Fleet.generate(launch.devices, launch.seed)
    counts = Counter(d.kind for d in fleet)
    assert set(counts) == set(KINDS) and min(counts.values()) >= 100
    planned = [parse_incident(spec, fleet, seed=launch.seed) for spec in DEFAULT_INCIDENTS]
    names = {i.name for i in planned}
    assert {"rainstorm", "gas_leak", "tunnel_air"} <= names
    for incident in planned:
        incident.check(fleet)
        assert incident.lasts_s is not None  # each ends, and the city recovers
        scenario = SCENARIOS[incident.name]
        assert scenario.title_zh and scenario.title_en
    # Each lifeline kind suffers one, so its rules show.
    by_id = {d.device_id: d.kind for d in fleet}
    hit = {by_id[d] for i in planned for d in i.device_ids}
    assert {"waterlogging", "gas", "tunnel"} <= hit
