"""How many dead letters the ingest stores per vendor: a token bucket each, a tally of the rest.

A vendor whose messages are all refused (unknown device ids, broken payloads) must not fill
the registry's database. Each registered vendor may store ``dead_letter_rate_per_s`` dead
letters a second, in bursts of up to ``dead_letter_rate_burst``; beyond that its dead
letters are counted, not stored, and their reasons tallied. Once every ``summary_every_s``
a vendor that had some dropped gets one summary dead letter saying how many and why.

Only registered vendors have a bucket of their own; every other vendor string a topic may
carry shares one (:data:`OTHER_VENDORS`), so no publisher can grow this table.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# The shared bucket's name: never a valid vendor id, so it cannot clash with one.
OTHER_VENDORS = "(unregistered)"
SUMMARY_EVERY_S = 10.0
REASONS_KEPT = 20  # distinct reasons tallied per bucket and summary; the rest counted together
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
REASON_CHARS = 300  # of each tallied reason: the tally's memory stays bounded


@dataclass(slots=True)
class _Bucket:
    tokens: float
    refilled: float  # monotonic time of the last refill
    dropped: int = 0  # since the last summary
    first_drop: float = 0.0  # monotonic time of the first drop since the last summary
    reasons: Counter[str] = field(default_factory=Counter)
    other_reasons: int = 0  # drops whose reason did not fit in ``reasons``


@dataclass(frozen=True, slots=True)
class DroppedSummary:
    """What one bucket dropped since its last summary."""

    bucket: str  # a vendor id, or OTHER_VENDORS
    dropped: int
    window_s: float
    reasons: list[tuple[str, int]]  # most common first, at most REASONS_KEPT
    other_reasons: int


class DeadLetterLimit:
    """Token buckets by vendor; :meth:`take` says whether a dead letter may be stored."""

    def __init__(
        self, rate_per_s: float, burst: int, summary_every_s: float = SUMMARY_EVERY_S
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.summary_every_s = summary_every_s
        self._buckets: dict[str, _Bucket] = {}

    def take(self, bucket: str, reason: str, now: float) -> bool:
        """True: store the dead letter. False: it was over the bucket's rate; its reason is
        tallied for the next summary. ``bucket`` must be a registered vendor or
        :data:`OTHER_VENDORS` (the caller decides which)."""
        state = self._buckets.get(bucket)
        if state is None:
            state = self._buckets[bucket] = _Bucket(float(self.burst), now)
        state.tokens = min(self.burst, state.tokens + (now - state.refilled) * self.rate_per_s)
        state.refilled = now
        if state.tokens >= 1.0:
            state.tokens -= 1.0
            return True
        if not state.dropped:
            state.first_drop = now
        state.dropped += 1
        if reason in state.reasons or len(state.reasons) < REASONS_KEPT:
            state.reasons[reason] += 1
        else:
            state.other_reasons += 1
        return False

    def due(self, now: float) -> list[DroppedSummary]:
        """The summaries of the buckets whose first drop is ``summary_every_s`` old; their
        tallies start again. Buckets that are full again and dropped nothing are forgotten."""
        summaries = []
        for name, state in list(self._buckets.items()):
            if state.dropped and now - state.first_drop >= self.summary_every_s:
                summaries.append(
                    DroppedSummary(
                        name,
                        state.dropped,
                        now - state.first_drop,
                        state.reasons.most_common(),
                        state.other_reasons,
                    )
                )
                state.dropped, state.other_reasons = 0, 0
                state.reasons = Counter()
            elif not state.dropped:
                refilled = state.tokens + (now - state.refilled) * self.rate_per_s
                if refilled >= self.burst:
                    del self._buckets[name]
        return summaries


def reason_pattern(reason: str, device_id: str | None) -> str:
    """``reason`` with the topic's device id, where it stands as a word, replaced by
    ``{device_id}``: a flood for many unknown devices tallies as one reason, not one each."""
    reason = reason[:REASON_CHARS]
    if not device_id or device_id not in reason:
        return reason
    pieces = reason.split(device_id)
    out = [pieces[0]]
    for before, after in zip(pieces, pieces[1:], strict=False):
        word = not _ID_CHARS.intersection(before[-1:] + after[:1])
        out.append(("{device_id}" if word else device_id) + after)
    return "".join(out)
