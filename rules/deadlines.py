"""When each device is next to be looked at for silence: a timing wheel of one-second slots.

The absence rules (``device_offline``) need, on every check, only the devices whose silence
can have become due since the last one. The wheel files each device under the second of its
next check; :meth:`SilenceWheel.take` hands over every device filed up to now, and the caller
files each again under its next check once it has looked at it. A check costs the devices
due, not the fleet: with a million devices reporting every 60 s to 24 h, a few thousand a
minute instead of a million every few seconds.

A device may be filed more than once (its registry entry changed, the rules changed): filing
is cheap and a second look finds nothing new, so the wheel keeps no per-device record.
"""

from __future__ import annotations

import math


class SilenceWheel:
    """Device ids filed by the whole second of their next silence check."""

    def __init__(self) -> None:
        self._slots: dict[int, list[str]] = {}
        self._cursor: int | None = None  # slots before it have been taken
        self._filed = 0

    def file(self, device_id: str, due_s: float) -> None:
        """Look at ``device_id`` again at ``due_s`` (platform clock); ``inf``: never."""
        if math.isinf(due_s):
            return
        slot = math.floor(due_s)
        if self._cursor is not None and slot < self._cursor:
            slot = self._cursor  # already past: the next take hands it over
        bucket = self._slots.get(slot)
        if bucket is None:
            self._slots[slot] = [device_id]
        else:
            bucket.append(device_id)
        self._filed += 1

    def take(self, now_s: float) -> list[str]:
        """Every device filed at or before ``now_s``'s second, removed from the wheel.

        The current second's slot is taken whole: a device filed for later in this second is
        handed over early, and its check files it again (under the same second, taken next).
        """
        until = math.floor(now_s)
        if not self._slots:
            self._cursor = until + 1
            return []
        if self._cursor is None:
            self._cursor = min(self._slots)
        taken: list[str] = []
        slots = self._slots
        if until - self._cursor > len(slots):
            # A long jump (or a first take): walk the filled slots, not every second.
            for slot in sorted(s for s in slots if s <= until):
                taken += slots.pop(slot)
        else:
            for slot in range(self._cursor, until + 1):
                bucket = slots.pop(slot, None)
                if bucket is not None:
                    taken += bucket
        self._cursor = until + 1
        self._filed -= len(taken)
        return taken

    def clear(self) -> None:
        """Forget every device (the caller files them all again)."""
        self._slots.clear()
        self._filed = 0

    def __len__(self) -> int:
        """Filings held (a device filed twice counts twice)."""
        return self._filed
