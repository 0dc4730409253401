"""Presence: status changes every round, last-seen times when asked for."""

from __future__ import annotations

from cityiot.ingest.presence import Presence


def test_last_seen_times_wait_for_their_round_status_changes_do_not() -> None:
    presence = Presence()
    assert presence.seen("mh-1", 1000, 60) is True  # came online
    assert presence.seen("mh-1", 2000, 60) is False

    seen, online, offline = presence.take_changes(seen=False)
    assert (seen, online, offline) == ({}, {"mh-1"}, set())

    presence.seen("mh-2", 3000, 60)
    seen, online, offline = presence.take_changes()
    assert seen == {"mh-1": 2000, "mh-2": 3000}  # kept from the round before, newest time
    assert online == {"mh-2"} and offline == set()
    assert presence.take_changes() == ({}, set(), set())


class _CountingOnline(set[str]):
    """The online set, counting how often a sweep walks it."""

    walks = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        type(self).walks += 1
        return super().__iter__()


def test_a_sweep_looks_at_the_devices_only_once_one_can_be_due() -> None:
    presence = Presence(online=_CountingOnline())
    presence.seen("slow", 0, 600)  # due at 1,800,000 ms
    presence.seen("fast", 0, 60)  # due at 180,000 ms
    assert presence.silent(100_000) == [] and _CountingOnline.walks == 0  # nobody can be due
    assert presence.silent(180_000) == []  # due, not past it
    assert presence.silent(180_001) == ["fast"]
    walks = _CountingOnline.walks
    assert presence.silent(1_000_000) == [] and _CountingOnline.walks == walks  # "slow" only
    presence.seen("fast", 1_000_000, 60)  # back, due at 1,180,000: sooner than "slow"
    assert presence.silent(1_180_001) == ["fast"]
    assert presence.silent(1_800_001) == ["slow"]
    assert presence.silent(10**9) == [] and presence.online == set()


def test_a_resumed_device_is_online_without_a_change_and_goes_silent_from_the_resume() -> None:
    presence = Presence()
    assert presence.resume("mh-1", 10_000, 60) is True  # online in the registry
    assert presence.resume("mh-1", 20_000, 60) is False  # already tracked
    assert presence.seen("mh-1", 30_000, 60) is False  # its first message: no transition
    assert presence.take_changes() == ({"mh-1": 30_000}, set(), set())

    assert presence.resume("sl-1", 10_000, 60) is True  # never heard from again
    assert presence.silent(190_000) == []  # 3 × 60 s after the resume, not past it
    assert presence.silent(190_001) == ["sl-1"]
    assert presence.take_changes() == ({}, set(), {"sl-1"})
    assert presence.online == {"mh-1"}


def test_a_networks_offline_report_leaves_a_sleeping_device_online_until_its_silence() -> None:
    """NB-IoT: CTWing and OneNET report a device offline minutes after each daily report;
    only 3 × its report interval of silence takes it offline. A device's own word does."""
    day_s = 86_400
    presence = Presence()
    presence.seen("nb-1", 0, day_s)
    presence.take_changes()
    for link in ("ctwing", "onenet"):
        assert presence.says("nb-1", False, 60_000, day_s, link) is False
    assert "nb-1" in presence.online and presence.take_changes() == ({}, set(), set())
    assert presence.silent(3 * day_s * 1000) == []  # due, not yet past
    assert presence.silent(3 * day_s * 1000 + 1) == ["nb-1"]
    # Never heard before: the network's word is the only one, and it is recorded.
    assert presence.says("nb-2", False, 1000, day_s, "ctwing") is True
    assert presence.take_changes() == ({}, set(), {"nb-1", "nb-2"})
    # Over MQTT, the device's own status (or its will) takes it offline at once.
    presence.seen("mh-1", 0, 300)
    assert presence.says("mh-1", False, 1000, 300, "mqtt") is True
    assert "mh-1" not in presence.online


def test_the_link_is_written_when_it_changes() -> None:
    presence = Presence()
    presence.came_by("nb-1", "ctwing")
    presence.came_by("nb-1", "ctwing")
    presence.came_by("lw-1", "chirpstack")
    assert presence.take_links() == {"nb-1": "ctwing", "lw-1": "chirpstack"}
    presence.came_by("nb-1", "ctwing")
    assert presence.take_links() == {}
    presence.came_by("nb-1", "http")  # moved to another link
    assert presence.take_links() == {"nb-1": "http"}
