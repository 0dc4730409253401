"""Rule evaluation: readings in, alert transitions out. Pure and synchronous — no I/O.

State is kept per (rule, device) only while a rule is not idle (a ``for`` timer running,
an alert open, a rate window filling), so an idle device costs nothing here. ``for``
durations and rate windows run on the readings' own timestamps (event time); absence
rules run on the platform clock (:meth:`Evaluator.tick`).

The state that must outlive a restart — a ``for`` timer's start, an alert that fires —
is exactly what the open alert rows hold, so :meth:`Evaluator.restore` rebuilds it from
them: a timer does not start over and a firing alert is not raised twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cityiot.rules.definitions import Rule, by_kind

To = Literal["pending", "firing", "resolved"]


@dataclass(slots=True)
class Track:
    """One rule on one device while it is not idle."""

    since_ms: int  # the condition has held since (event time)
    alert_id: str | None = None
    firing: bool = False
    baseline: float | None = None  # rate rules: the value before the drop


@dataclass(slots=True)
class Transition:
    rule: Rule
    device_id: str
    to: To
    at_ms: int
    values: dict[str, Any]
    track: Track


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What rules read of a device besides its readings."""

    device_id: str
    kind: str
    report_interval_s: int
    attributes: Mapping[str, Any]
    # What every rule of the device reads besides its metrics: the attributes and
    # report_interval_s, made once instead of with each reading.
    base: Mapping[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        base = {**self.attributes, "report_interval_s": self.report_interval_s}
        object.__setattr__(self, "base", base)


@dataclass(slots=True)
class _Window:
    """Sliding maximum over ``within``: values kept in decreasing order (front = max)."""

    points: deque[tuple[int, float]] = field(default_factory=deque)

    def add(self, ts_ms: int, value: float, within_ms: float) -> float:
        points = self.points
        while points and points[-1][1] <= value:
            points.pop()
        points.append((ts_ms, value))
        while points[0][0] < ts_ms - within_ms:
            points.popleft()
        return points[0][1]


class Evaluator:
    """Evaluates every rule of a reading's kind; returns the transitions to apply."""

    def __init__(self, rules: Iterable[Rule], started_s: float) -> None:
        self._use(list(rules))
        self.tracks: dict[tuple[str, str], Track] = {}
        self.last: dict[str, dict[str, Any]] = {}
        self.windows: dict[tuple[str, str], _Window] = {}
        self.arrived_s: dict[str, float] = {}
        self.started_s = started_s
        self.next_due_s = started_s  # see tick()

    def _use(self, rules: list[Rule]) -> None:
        self.rules = {r.id: r for r in rules}
        self.index = by_kind(rules)
        self.absence = [r for r in rules if r.type == "absence"]
        # The absence rules may have changed: a caller keeping its own deadlines (the
        # engine's silence wheel) plans every device again, then clears it.
        self.absence_changed = True
        # Per kind, each threshold rule with what its common case reads (the names it
        # needs, its condition, its schedule), and the rate rules: a reading is judged by
        # these without a call per rule until a rule's condition holds or it has a track.
        self._thresholds = {
            kind: [
                (r, r.id, r.names, r.when.bare(), r.schedule)
                for r in rs
                if r.type == "threshold" and r.when is not None
            ]
            for kind, rs in self.index.items()
        }
        self._rates = {kind: [r for r in rs if r.type == "rate"] for kind, rs in self.index.items()}
        # Metrics worth remembering per kind: those a multi-metric rule reads.
        self._remember = {
            kind: frozenset().union(*(r.names for r in rs if r.type == "threshold"))
            for kind, rs in self.index.items()
        }

    def replace_rules(self, rules: Iterable[Rule]) -> list[tuple[str, str, Track]]:
        """Evaluate with ``rules`` from now on (a rule reloaded after an edit).

        The state of every rule that still exists is kept — a running ``for`` timer goes on,
        a firing alert is not raised again — and judged by the rule's new definition from
        the next reading. Returns ``(rule id, device id, track)`` of the rules that are gone,
        whose open alerts the caller resolves.
        """
        self._use(list(rules))
        self.next_due_s = float("-inf")  # an absence rule may have changed: scan again
        gone = [(r, d, t) for (r, d), t in self.tracks.items() if r not in self.rules]
        for rule_id, device_id, _ in gone:
            del self.tracks[(rule_id, device_id)]
        for key in [k for k in self.windows if k[0] not in self.rules]:
            del self.windows[key]
        return gone

    def restore(self, open_alerts: Iterable[Any]) -> int:
        """Rebuild state from open alert rows (``rule``, ``device_id``, ``id``, ``state``...)."""
        count = 0
        for alert in open_alerts:
            rule = self.rules.get(alert.rule)
            if rule is None:
                continue
            track = Track(
                since_ms=int(alert.started_at.timestamp() * 1000),
                alert_id=alert.id,
                firing=alert.state in ("firing", "acknowledged"),
            )
            if rule.type == "rate" and rule.metric:
                track.baseline = (alert.values or {}).get(f"{rule.metric}_before")
            self.tracks[(rule.id, alert.device_id)] = track
            count += 1
        return count

    def feed(
        self, device: DeviceFacts, ts_ms: int, metrics: Mapping[str, Any], arrived_s: float
    ) -> list[Transition]:
        """Evaluate one reading of ``device``."""
        out: list[Transition] = []
        self.arrived_s[device.device_id] = arrived_s
        for rule in self.absence:
            track = self.tracks.get((rule.id, device.device_id))
            if track is not None and track.firing:
                del self.tracks[(rule.id, device.device_id)]
                out.append(Transition(rule, device.device_id, "resolved", ts_ms, {}, track))
                self.next_due_s = float("-inf")  # it can fall silent again: scan next tick
        remember = self._remember.get(device.kind, frozenset())
        last = self.last.get(device.device_id)
        if remember:
            if last is None:
                last = self.last[device.device_id] = {}
            for name, value in metrics.items():
                if name in remember:
                    last[name] = value
        values: dict[str, Any] = {**device.base, **(last or metrics), **metrics}
        device_id = device.device_id
        tracks = self.tracks
        present = values.keys()
        for rule, rule_id, names, when, schedule in self._thresholds.get(device.kind, ()):
            if not names <= present:
                continue  # the device has not reported what the rule reads
            if (rule_id, device_id) not in tracks and (
                (schedule is not None and not schedule.active(ts_ms)) or not when(values)
            ):
                continue  # the common case: nothing pending, nothing to start
            self._threshold(rule, device_id, ts_ms, values, out)
        for rule in self._rates.get(device.kind, ()):
            self._rate(rule, device_id, ts_ms, metrics, out)
        return out

    def tick(self, now_s: float, devices: Iterable[DeviceFacts]) -> list[Transition]:
        """Absence rules on the platform clock: devices silent for factor × interval.

        Also sets :attr:`next_due_s`, the earliest moment another device can fall silent
        (readings only move it later): until then a tick over the same devices finds nothing.
        """
        out: list[Transition] = []
        self.next_due_s = float("inf")
        due = self.scan(now_s, devices, out)
        self.next_due_s = min(self.next_due_s, due)
        return out

    def scan(self, now_s: float, devices: Iterable[DeviceFacts], out: list[Transition]) -> float:
        """:meth:`tick` over some of the devices: their transitions are appended to ``out``;
        returns the earliest moment one of them can fall silent (``next_due_s`` is the
        caller's to set, once every device has been scanned)."""
        if not self.absence:
            return float("inf")
        next_due = float("inf")
        check = self.check
        for device in devices:
            next_due = min(next_due, check(now_s, device, out))
        return next_due

    def _limit_s(self, device: DeviceFacts) -> float:
        """The shortest silence an absence rule allows ``device``; ``inf`` if none applies."""
        limit = float("inf")
        for rule in self.absence:
            if device.kind in rule.kinds:
                limit = min(limit, rule.factor * device.report_interval_s)
        return limit

    def deadline(self, device: DeviceFacts) -> float:
        """When ``device``, silent from its last reading on, first becomes due for an
        absence rule (platform clock); ``inf`` when no absence rule applies to it."""
        return self.arrived_s.get(device.device_id, self.started_s) + self._limit_s(device)

    def check(self, now_s: float, device: DeviceFacts, out: list[Transition]) -> float:
        """The absence rules on one device at ``now_s``: a firing for each rule whose
        silence is over (once per silence) is appended to ``out``; returns when to check
        the device again.

        That is the earliest deadline still ahead, or, for a rule already firing, one
        silence from now: a reading meanwhile moves the device's deadline to at least that
        late, so checking then is never late, and a silent device costs one look per
        silence.
        """
        arrived = self.arrived_s.get(device.device_id, self.started_s)
        silent_s = now_s - arrived
        next_s = float("inf")
        for rule in self.absence:
            if device.kind not in rule.kinds:
                continue
            limit_s = rule.factor * device.report_interval_s
            if silent_s <= limit_s:
                next_s = min(next_s, arrived + limit_s)
                continue
            next_s = min(next_s, now_s + limit_s)
            key = (rule.id, device.device_id)
            if key not in self.tracks:
                now_ms = int(now_s * 1000)
                since_ms = now_ms - int(silent_s * 1000)
                track = self.tracks[key] = Track(since_ms=since_ms, firing=True)
                values = {
                    "silent_s": round(silent_s),
                    "report_interval_s": device.report_interval_s,
                }
                out.append(Transition(rule, device.device_id, "firing", now_ms, values, track))
        return next_s

    def _threshold(
        self, rule: Rule, device_id: str, ts_ms: int, values: dict[str, Any], out: list[Transition]
    ) -> None:
        if not rule.names <= values.keys():
            return  # the device has not reported what the rule reads
        key = (rule.id, device_id)
        track = self.tracks.get(key)
        active = rule.schedule is None or rule.schedule.active(ts_ms)
        if track is not None and track.firing:
            assert rule.clear is not None
            if not active or rule.clear(values):
                del self.tracks[key]
                out.append(
                    Transition(rule, device_id, "resolved", ts_ms, _used(rule, values), track)
                )
            return
        assert rule.when is not None
        if not (active and rule.when(values)):
            if track is not None:  # a pending alert whose condition stopped holding
                del self.tracks[key]
                out.append(
                    Transition(rule, device_id, "resolved", ts_ms, _used(rule, values), track)
                )
            return
        hold_s = rule.hold_s(values)
        if hold_s is None:
            return
        if track is None:
            track = self.tracks[key] = Track(since_ms=ts_ms)
            if hold_s > 0:
                out.append(
                    Transition(rule, device_id, "pending", ts_ms, _used(rule, values), track)
                )
                return
        if ts_ms - track.since_ms >= hold_s * 1000:
            track.firing = True
            out.append(Transition(rule, device_id, "firing", ts_ms, _used(rule, values), track))

    def _rate(
        self,
        rule: Rule,
        device_id: str,
        ts_ms: int,
        metrics: Mapping[str, Any],
        out: list[Transition],
    ) -> None:
        assert rule.metric is not None
        value = metrics.get(rule.metric)
        if value is None or isinstance(value, bool):
            return
        key = (rule.id, device_id)
        window = self.windows.get(key)
        if window is None:
            window = self.windows[key] = _Window()
        peak = window.add(ts_ms, value, rule.within_s * 1000)
        track = self.tracks.get(key)
        if track is not None and track.firing:
            # Resolved once the value has recovered half the drop from before it.
            baseline = track.baseline if track.baseline is not None else peak
            if value >= baseline * (1 - rule.drop_pct / 200):
                del self.tracks[key]
                out.append(
                    Transition(rule, device_id, "resolved", ts_ms, {rule.metric: value}, track)
                )
            return
        if peak > 0 and value <= peak * (1 - rule.drop_pct / 100):
            track = self.tracks[key] = Track(since_ms=ts_ms, firing=True, baseline=peak)
            values = {rule.metric: value, f"{rule.metric}_before": peak}
            out.append(Transition(rule, device_id, "firing", ts_ms, values, track))


def _used(rule: Rule, values: Mapping[str, Any]) -> dict[str, Any]:
    """The values the rule read: what triggered (or cleared) it."""
    return {name: values[name] for name in sorted(rule.names) if name in values}
