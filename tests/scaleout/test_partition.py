"""The partition itself: a stable owner per device, the worker settings, presence and rule
state kept for one's own devices only (no broker needed but for the database)."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from pydantic import ValidationError

from cityiot.domain.settings import Settings
from cityiot.ingest.devices import DeviceMap
from cityiot.ingest.partition import (
    Forwarded,
    Partition,
    PartitionedPresence,
    StatusChange,
    owner,
    rules_topic,
    shared_topics,
    worker_env,
)
from cityiot.ingest.pipeline import TOPICS
from cityiot.ingest.validate import Reading
from cityiot.rules.definitions import parse_rule
from cityiot.rules.engine import RulesEngine
from cityiot.rules.lifecycle import AlertStore
from tests.rules.conftest import HandClock
from tests.seeding import open_seeded

# Fixed forever: a change would move every device's rule state to another worker.
EXPECTED = {
    "mh-1": (1, 2, 7),
    "sl-1": (1, 1, 7),
    "hy-1": (0, 2, 2),
    "wt-1": (0, 2, 0),
    "pk-1": (0, 1, 4),
    "zmd-manhole-000001": (1, 0, 3),
    "设备-1": (0, 1, 6),
}


def test_owner_is_a_fixed_mapping() -> None:
    got = {d: (owner(d, 2), owner(d, 3), owner(d, 8)) for d in EXPECTED}
    assert got == EXPECTED
    assert {owner(d, 1) for d in EXPECTED} == {0}


def test_owner_is_the_same_in_another_process() -> None:
    """Not Python's salted hash(): another interpreter, another hash seed, same owners."""
    code = (
        "import json; from ingest.partition import owner; "
        f"print(json.dumps({{d: [owner(d, 2), owner(d, 3), owner(d, 8)] for d in {list(EXPECTED)!r}}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert {d: tuple(v) for d, v in json.loads(out).items()} == EXPECTED


@pytest.mark.parametrize("workers", [2, 3, 5, 8])
def test_owner_spreads_ten_thousand_devices_evenly(workers: int) -> None:
    counts = collections.Counter(owner(f"zmd-{i:05d}", workers) for i in range(10_000))
    mean = 10_000 / workers
    assert set(counts) == set(range(workers))
    assert all(abs(n - mean) < 0.05 * mean for n in counts.values()), sorted(counts.values())


def test_shared_topics_and_the_internal_topic() -> None:
    assert shared_topics(TOPICS, "cityiot") == (
        "$share/cityiot/city/+/+/telemetry",
        "$share/cityiot/city/+/+/status",
        "$share/cityiot/cityiot/relay/#",  # what an API apart from the ingest relays
    )
    assert shared_topics(TOPICS, "") == TOPICS
    assert rules_topic(2) == "cityiot/rules/2"
    assert Partition(3, 2).topic == "cityiot/rules/2"
    assert [Partition(3, k).owns("mh-1") for k in range(3)] == [False, False, True]


# -- settings ------------------------------------------------------------------------------


def test_one_worker_keeps_todays_session_and_spool(tmp_path: Path) -> None:
    settings = Settings(run_dir=tmp_path)
    assert (settings.workers, settings.worker_index, settings.share_group) == (1, 0, "")
    assert settings.worker_client_id == "cityiot-ingest"
    assert settings.spool_path == tmp_path / "spool"


def test_each_worker_gets_its_own_session_and_spool(tmp_path: Path) -> None:
    settings = Settings(run_dir=tmp_path, share_group="cityiot", workers=3, worker_index=2)
    assert settings.worker_client_id == "cityiot-ingest-w2"
    assert settings.spool_path == tmp_path / "spool-w2"
    named = Settings(
        run_dir=tmp_path,
        share_group="cityiot",
        workers=3,
        worker_index=1,
        mqtt_client_id="zmd",
        spool_dir=tmp_path / "mine",
    )
    assert named.worker_client_id == "zmd-w1"  # one base id for all: still one session each
    assert named.spool_path == tmp_path / "mine"  # chosen by hand: the spool's lock guards it


def test_worker_env_is_what_the_settings_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in worker_env(1, 4, "zmd", base={}).items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (settings.share_group, settings.workers, settings.worker_index) == ("zmd", 4, 1)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"share_group": "cityiot", "workers": 3, "worker_index": 3}, "must be 0..2"),
        ({"share_group": "cityiot", "workers": 2, "worker_index": -1}, "greater than or equal"),
        ({"workers": 3}, "needs CITYIOT_SHARE_GROUP"),
        ({"share_group": "a/b"}, "CITYIOT_SHARE_GROUP must be empty or"),
        ({"share_group": "#"}, "CITYIOT_SHARE_GROUP must be empty or"),
        ({"share_group": "cityiot", "workers": 0}, "greater than or equal to 1"),
    ],
)
def test_invalid_worker_settings_say_what_to_change(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**values)


# -- presence and forwarding ---------------------------------------------------------------


def test_presence_is_kept_by_the_owner_only() -> None:
    presence = PartitionedPresence(Partition(3, 2).owns)  # owns mh-1, not sl-1
    assert presence.seen("mh-1", 1000, 60) is True  # came online: a status point
    assert presence.seen("sl-1", 1000, 60) is False  # another's: only its last_seen
    assert presence.online == {"mh-1"}
    assert presence.dirty_seen == {"mh-1": 1000, "sl-1": 1000}
    assert presence.says("sl-1", False, 2000, 60) is False
    assert presence.outbox == [StatusChange("sl-1", False, 2000)]  # sent on to its owner
    assert presence.silent(1000 + 3 * 60_000 + 1) == ["mh-1"]  # only its own go silent


def test_a_restarted_worker_takes_over_only_its_own_devices_presence() -> None:
    presence = PartitionedPresence(Partition(3, 2).owns)  # owns mh-1, not sl-1
    assert presence.resume("mh-1", 1000, 60) is True
    assert presence.resume("sl-1", 1000, 60) is False  # its owner's to watch
    assert presence.online == {"mh-1"} and presence.deadline_ms == {"mh-1": 181_000}


def test_a_forwarded_batch_survives_the_wire() -> None:
    message = Forwarded(
        readings=[
            Reading("mh-1", "manhole", 1_763_856_000_000, {"tilt_deg": 2.5, "cover_open": False})
        ],
        statuses=[StatusChange("sl-1", True, 1_763_856_000_001)],
    )
    wire = msgspec.json.encode(message)
    assert msgspec.json.decode(wire, type=Forwarded) == message
    assert msgspec.json.decode(b"{}", type=Forwarded) == Forwarded()


# -- rule state ----------------------------------------------------------------------------

CSV = """device_id,vendor,kind,district,lat,lon,address,report_interval_s,depth_cm
mh-1,acme,manhole,yicheng,32.98,114.02,解放路 1 号,60,200
hy-1,acme,hydrant,yicheng,32.98,114.02,解放路 2 号,60,
"""
OFFLINE = parse_rule(
    {
        "id": "device_offline",
        "kind": "*",
        "type": "absence",
        "severity": "minor",
        "factor": 3,
        "summary": {"zh": "离线", "en": "Offline"},
    },
    "test",
    0,
)


async def test_an_engine_ticks_and_restores_its_own_devices_only(tmp_path: Path) -> None:
    """Worker 0 of 2 owns hy-1, worker 1 owns mh-1: each raises the absence alert of its own
    device only, and after a restart each restores only its own open alert."""
    assert (owner("hy-1", 2), owner("mh-1", 2)) == (0, 1)
    url = f"sqlite+aiosqlite:///{tmp_path / 'cityiot.db'}"
    engine, sessions = await open_seeded(url, CSV)
    try:
        devices = DeviceMap(sessions)
        await devices.refresh()
        clock = HandClock()
        published: list[str] = []

        def worker(k: int) -> RulesEngine:
            return RulesEngine(
                [OFFLINE],
                devices,
                sessions,
                publish=lambda topic, payload: published.append(topic),
                clock=clock,
                owns=Partition(2, k).owns,
            )

        workers = [worker(0), worker(1)]
        for w in workers:
            await w.start()
        clock.advance(3 * 60 + 1)
        for w in workers:
            await w.tick()
        assert [sorted(d for _, d in w.evaluator.tracks) for w in workers] == [["hy-1"], ["mh-1"]]
        assert workers[0].counters.events == workers[1].counters.events == 1
        open_alerts = await AlertStore(sessions).open_alerts()
        assert sorted(a.device_id for a in open_alerts) == ["hy-1", "mh-1"]

        restarted = [worker(0), worker(1)]
        events = [await w.start() for w in restarted]
        assert [[e["device_id"] for e in ev] for ev in events] == [["hy-1"], ["mh-1"]]
        assert [sorted(d for _, d in w.evaluator.tracks) for w in restarted] == [["hy-1"], ["mh-1"]]
    finally:
        await engine.dispose()
