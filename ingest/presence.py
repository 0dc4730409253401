"""Device presence: online/offline from status messages and from traffic.

A device is online when it says so (``status`` topic, also its MQTT will) or sends data;
offline when it says so or stays silent for 3 × its report interval. Transitions are
kept in memory and written to the registry in bulk: status changes every few seconds,
last-seen times every 30 s (ingest/pipeline.py, SEEN_EVERY_S).

A restarted ingest takes over the devices the registry holds online (:meth:`Presence.resume`):
their first message is no transition, and one that stays silent for 3 × its interval after
the restart (it may have died while no ingest ran) goes offline.

Each device's state also names the link of its latest message (:meth:`Presence.came_by`:
``mqtt``, ``http``, ``chirpstack``, ``ctwing``, ``onenet``), written when it changes. A
network platform's word that a device went offline (CTWing's deviceOnlineOfflineReport,
OneNET's type 2) does not make an online device offline: NB-IoT devices sleep between
reports and the platform drops them within minutes, while the device is due only after its
report interval. Its silence past 3 × that interval does (:data:`NETWORK_LINKS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

SILENCE_FACTOR = 3  # docs/design.md §5: offline after 3 × report_interval_s without data
# Links whose network platform reports presence for devices that sleep between reports.
NETWORK_LINKS = frozenset({"ctwing", "onenet"})


@dataclass(slots=True)
class Presence:
    # When each online device is due to be considered silent.
    deadline_ms: dict[str, int] = field(default_factory=dict)
    online: set[str] = field(default_factory=set)
    # Not yet written to the registry.
    dirty_seen: dict[str, int] = field(default_factory=dict)
    went_online: set[str] = field(default_factory=set)
    went_offline: set[str] = field(default_factory=set)
    # No online device's deadline is earlier: until then a sweep has nothing to look at, and
    # looking at every device of a large city holds the event loop.
    next_due_ms: float = float("inf")
    # The link each device's latest message came by, as the registry has it or will.
    links: dict[str, str] = field(default_factory=dict)
    dirty_links: dict[str, str] = field(default_factory=dict)

    def seen(self, device_id: str, at_ms: int, interval_s: int) -> bool:
        """Record traffic; True when the device just came online."""
        deadline = at_ms + SILENCE_FACTOR * 1000 * interval_s
        self.deadline_ms[device_id] = deadline
        if deadline < self.next_due_ms:
            self.next_due_ms = deadline
        self.dirty_seen[device_id] = at_ms
        if device_id in self.online:
            return False
        self._set(device_id, True)
        return True

    def resume(self, device_id: str, now_ms: int, interval_s: int) -> bool:
        """Take over a device the registry holds online (an earlier ingest saw it): online
        without a transition, silent once 3 × its interval pass from ``now_ms`` without
        traffic. True when it is tracked here."""
        if device_id in self.online:
            return False
        self.online.add(device_id)
        deadline = now_ms + SILENCE_FACTOR * 1000 * interval_s
        self.deadline_ms[device_id] = deadline
        if deadline < self.next_due_ms:
            self.next_due_ms = deadline
        return True

    def came_by(self, device_id: str, link: str) -> None:
        """Record the link of the device's latest message (written when it changes)."""
        if self.links.get(device_id) != link:
            self.links[device_id] = link
            self.dirty_links[device_id] = link

    def says(
        self, device_id: str, online: bool, at_ms: int, interval_s: int, link: str = "mqtt"
    ) -> bool:
        """Record a status message that came by ``link``; True when it changes the device's
        state. A network platform's "offline" leaves an online device online (module doc)."""
        if online:
            return self.seen(device_id, at_ms, interval_s)
        if link in NETWORK_LINKS and device_id in self.online:
            return False
        if device_id not in self.online:
            self.went_offline.add(device_id)  # first word from it: still record the state
            return True
        self._set(device_id, False)
        return True

    def silent(self, now_ms: int) -> list[str]:
        """Devices that have just gone silent for too long; they are now offline."""
        if now_ms <= self.next_due_ms:
            return []
        deadline = self.deadline_ms
        gone: list[str] = []
        next_due: float = float("inf")
        for d in self.online:  # one pass: the silent ones, and the next deadline of the rest
            due = deadline[d]
            if due < now_ms:
                gone.append(d)
            elif due < next_due:
                next_due = due
        for d in gone:
            self._set(d, False)
        self.next_due_ms = next_due
        return gone

    def take_changes(self, seen: bool = True) -> tuple[dict[str, int], set[str], set[str]]:
        """(last seen, went online, went offline) since the last call; without ``seen``,
        the last-seen times stay for a later call (an empty dict in their place)."""
        dirty_seen: dict[str, int] = {}
        if seen:
            dirty_seen, self.dirty_seen = self.dirty_seen, {}
        changes = (dirty_seen, self.went_online, self.went_offline)
        self.went_online, self.went_offline = set(), set()
        return changes

    def take_links(self) -> dict[str, str]:
        """The links that changed since the last call (device id → link)."""
        dirty, self.dirty_links = self.dirty_links, {}
        return dirty

    def _set(self, device_id: str, online: bool) -> None:
        if online:
            self.online.add(device_id)
            self.went_offline.discard(device_id)
            self.went_online.add(device_id)
        else:
            self.online.discard(device_id)
            self.went_online.discard(device_id)
            self.went_offline.add(device_id)
