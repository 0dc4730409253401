"""Presence: status changes every round, last-seen times when asked for."""

from __future__ import annotations

from ingest.presence import Presence


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
