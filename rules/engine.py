"""The rules stage: validated readings in, alert state changes out.

The ingest hands its readings to :meth:`RulesEngine.submit`, which evaluates them at once,
in the ingest's own turn of the event loop: a reading that fires waits for no queue of
readings before it. Each transition the :class:`~cityiot.rules.evaluation.Evaluator` returns
waits, in order, in a bounded buffer (``submit`` waits while it is full, so a slow
database slows intake rather than growing memory) until :meth:`RulesEngine.run` records
it with the :class:`~cityiot.rules.lifecycle.AlertStore`; every resulting state change is
published on ``city/alerts/{district}/{kind}`` (QoS 1) and handed to the dispatcher
(routing, notifications, work orders). A firing rule with an action sends its commands.
While :meth:`RulesEngine.run` runs, dispatch and actions follow in order in a task of
their own: the next readings' alerts never wait for a work order to be written.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from cityiot.ingest.devices import DeviceMap, KnownDevice
from cityiot.ingest.validate import Reading
from cityiot.rules.deadlines import SilenceWheel
from cityiot.rules.definitions import Rule
from cityiot.rules.evaluation import DeviceFacts, Evaluator, Transition
from cityiot.rules.events import Clock, alert_event, alert_topic, wall_clock
from cityiot.rules.lifecycle import AlertStore, Step, new_alert_id, new_alert_row, open_key
from cityiot.storage.tables.alerts import Alert

log = logging.getLogger("cityiot.rules")

Publish = Callable[[str, bytes], None]
YIELD_EVERY = 250  # readings evaluated between two turns of the event loop (about 1 ms)
# run() records what submit() evaluated at once after a quiet spell, but not within this
# long (s) of its last recording while changes keep coming: a transaction (and a commit)
# per turn of the loop costs the ingest a share of its time that shows in a drain.
RECORD_EVERY_S = 0.005
TICK_SLICE = 2000  # devices checked for silence between two turns of the event loop
MAX_WAITING = 50_000  # alert changes evaluated and not recorded yet; submit() waits beyond it
MAX_FOLLOW_UPS = 10_000  # alert changes published and not yet dispatched; apply() waits beyond


class EventSink(Protocol):
    """Receives every alert state change (the dispatcher)."""

    async def handle(self, event: dict[str, Any]) -> None: ...


class CommandSink(Protocol):
    async def send(
        self,
        device_id: str,
        vendor: str,
        name: str,
        args: dict[str, Any],
        rule: str | None = None,
        alert_id: str | None = None,
    ) -> str: ...


GroupTargets = Callable[[str, str], Awaitable[list[tuple[str, str]]]]


@dataclass(slots=True)
class RulesCounters:
    readings: int = 0
    transitions: int = 0
    events: int = 0
    commands: int = 0
    adopted: int = 0  # alerts another evaluator had opened first


class RulesEngine:
    def __init__(
        self,
        rules: Iterable[Rule],
        devices: DeviceMap,
        session_factory: Any,
        *,
        publish: Publish,
        dispatcher: EventSink | None = None,
        commands: CommandSink | None = None,
        group_targets: GroupTargets | None = None,
        clock: Clock = wall_clock,
        max_waiting: int = MAX_WAITING,
        tick_s: float = 5.0,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        self.devices = devices
        # Scale-out (ingest/partition.py): the devices whose state lives here; None: all.
        self.owns = owns
        self.store = AlertStore(session_factory)
        self.publish = publish
        self.dispatcher = dispatcher
        self.commands = commands
        self.group_targets = group_targets
        self.clock = clock
        self.tick_s = tick_s
        self.evaluator = Evaluator(rules, clock())
        self.counters = RulesCounters()
        # Transitions evaluated by submit() and not recorded yet, in order; bounded by
        # ``max_waiting`` (submit waits beyond it), however the ingest slices its readings.
        self.waiting: list[Transition] = []
        self.max_waiting = max_waiting
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        # While run() runs: the changes to dispatch (and act on), taken by a task of their
        # own so that work orders and notifications never hold up the next evaluation.
        self._follow_ups: asyncio.Queue[tuple[Transition | None, dict[str, Any]]] | None = None
        self._facts: dict[str, tuple[KnownDevice, DeviceFacts]] = {}
        # Absence rules: each device filed under its next silence check; a device new or
        # changed in the registry (e.g. a new report interval) is filed again.
        self.wheel = SilenceWheel()
        self._refile: list[str] = []  # devices new or changed since: filed at the next tick
        self._ticked_version = -1  # the registry's version when the wheel was last planned
        self._recorded_at = float("-inf")  # when run() last recorded (time.monotonic())

    async def start(self) -> list[dict[str, Any]]:
        """Rebuild evaluation state from the open alerts of the devices this engine owns;
        returns their events."""
        open_alerts = await self.store.open_alerts()
        if self.owns is not None:
            open_alerts = [a for a in open_alerts if self.owns(a.device_id)]
        restored = self.evaluator.restore(open_alerts)
        log.info("event=rules_started rules=%d restored=%d", len(self.evaluator.rules), restored)
        return [alert_event(a) for a in open_alerts]

    async def submit(self, readings: list[Reading]) -> None:
        """The ingest's readings sink: evaluates ``readings`` now, :data:`YIELD_EVERY` at a
        time with a turn of the loop between, and leaves what changed to :meth:`run`;
        waits while ``max_waiting`` changes are not recorded yet.

        Evaluating here rather than in run()'s task spares a reading every queue of the
        loop's tasks in between: under 10,000 readings/s a firing waited 6 ms for its
        evaluation at the median and 53 ms at the 99th percentile in a queue of readings.
        """
        await self._evaluate(readings)
        while len(self.waiting) >= self.max_waiting:
            self._room.clear()
            await self._room.wait()

    async def run(self, stop: asyncio.Event) -> None:
        """Record and publish what :meth:`submit` evaluated, check absence rules every
        ``tick_s``, until ``stop``; then finish what is waiting (dispatch included)."""
        self._follow_ups = asyncio.Queue(MAX_FOLLOW_UPS)
        follower = asyncio.create_task(self._follow(self._follow_ups), name="rules-follow-ups")
        try:
            await self._apply_until(stop)
            await self._follow_ups.join()
        finally:
            self._follow_ups = None
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower

    async def _apply_until(self, stop: asyncio.Event) -> None:
        next_tick = self.clock() + self.tick_s
        while not stop.is_set() or self.waiting:
            if not self.waiting:
                # Woken in the loop's next turn (asyncio.wait_for's own task costs two more).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await self._arrived.wait()
            self._arrived.clear()
            early = self._recorded_at + RECORD_EVERY_S - time.monotonic()
            if early > 0 and self.waiting and not stop.is_set():
                await asyncio.sleep(early)  # what comes meanwhile goes in the same transaction
            await self._apply_waiting()
            self._recorded_at = time.monotonic()
            if self.clock() >= next_tick:
                next_tick = self.clock() + self.tick_s
                await self.tick()

    def _take_waiting(self) -> list[Transition]:
        transitions, self.waiting = self.waiting, []
        self._room.set()
        return transitions

    async def _apply_waiting(self) -> None:
        # Everything evaluated meanwhile: one transaction for all of it, so small slices at
        # a high rate cannot outrun the database.
        transitions = self._take_waiting()
        if transitions:
            await self.apply(transitions)

    async def _evaluate(self, readings: list[Reading]) -> None:
        """Feed ``readings`` to the evaluator, :data:`YIELD_EVERY` at a time with a turn of
        the loop before each next slice (where run() records what the slices so far
        changed); their transitions join :attr:`waiting`."""
        now = self.clock()
        for start in range(0, len(readings), YIELD_EVERY):
            if start:
                await asyncio.sleep(0)  # the recording of the changes so far, the writers
            found = self._feed(readings[start : start + YIELD_EVERY], now)
            if found:
                self.waiting += found
                self._arrived.set()

    def _feed(self, readings: list[Reading], now: float) -> list[Transition]:
        """Feed ``readings`` to the evaluator; returns the transitions."""
        feed = self.evaluator.feed
        facts_of = self._facts_of
        transitions: list[Transition] = []
        for reading in readings:
            facts = facts_of(reading.device_id)
            if facts is not None:
                transitions += feed(facts, reading.ts_ms, reading.metrics, now)
        self.counters.readings += len(readings)
        return transitions

    async def evaluate(self, readings: list[Reading]) -> None:
        """Evaluate ``readings`` and record what changed before returning: what
        :meth:`submit` and :meth:`run` do together, for a caller without ``run()``."""
        await self._evaluate(readings)
        await self._apply_waiting()

    async def tick(self) -> None:
        """Absence rules on the platform clock, for the devices this engine owns.

        Only the devices whose silence can be due are looked at: the silence wheel
        (``rules/deadlines.py``) files each device under its next check. When the registry
        changes, the devices new or changed since are filed; when the absence rules change,
        every device is filed again.
        """
        now = self.clock()
        evaluator = self.evaluator
        if evaluator.absence_changed or self.devices.version != self._ticked_version:
            await self._plan(everyone=evaluator.absence_changed)
        wheel, facts_of, check, owns = self.wheel, self._facts_of, evaluator.check, self.owns
        refile, self._refile = self._refile, []
        for start in range(0, len(refile), TICK_SLICE):
            for device_id in refile[start : start + TICK_SLICE]:
                facts = facts_of(device_id, note=False)
                if facts is not None and (owns is None or owns(device_id)):
                    wheel.file(device_id, evaluator.deadline(facts))
            await asyncio.sleep(0)
        due = list(dict.fromkeys(wheel.take(now)))  # a device filed twice is looked at once
        # In slices, with the readings that arrive meanwhile evaluated between them: no
        # alert waits for a long check (the first, or one after a long pause).
        for start in range(0, len(due), TICK_SLICE):
            # What submit() evaluated meanwhile goes first, in order, then this slice's.
            transitions = self._take_waiting()
            for device_id in due[start : start + TICK_SLICE]:
                facts = facts_of(device_id, note=False)
                if facts is not None and (owns is None or owns(device_id)):
                    wheel.file(device_id, check(now, facts, transitions))
            if transitions:
                await self.apply(transitions)
            await asyncio.sleep(0)

    async def _plan(self, *, everyone: bool) -> None:
        """Note the registry's devices new or changed since the last plan (``everyone``:
        empty the wheel and note them all); :meth:`tick` files them."""
        evaluator = self.evaluator
        evaluator.absence_changed = False
        self._ticked_version = self.devices.version
        if everyone:
            self.wheel.clear()
            self._refile.clear()
        owns, facts_of = self.owns, self._facts_of
        ids = list(self.devices.devices)
        for start in range(0, len(ids), TICK_SLICE):
            for device_id in ids[start : start + TICK_SLICE]:
                if owns is None or owns(device_id):
                    if everyone:
                        self._refile.append(device_id)
                    else:
                        facts_of(device_id)  # notes it when new or changed
            await asyncio.sleep(0)

    async def apply(self, transitions: list[Transition]) -> None:
        """Record the transitions (one transaction), then publish and dispatch each change."""
        steps: list[Step | None] = [self._step(t) for t in transitions]
        recorded = [s for s in steps if s is not None]
        events = iter(await self.store.record(recorded))
        self.counters.transitions += len(transitions)
        changes: list[tuple[Transition, dict[str, Any]]] = []
        for t, step in zip(transitions, steps, strict=True):
            if step is None:
                continue
            event = next(events)
            if step.new is not None:
                if step.alert_id != step.new["id"]:
                    self.counters.adopted += 1
                t.track.alert_id = step.alert_id
            if event is not None:
                self._publish(event)
                changes.append((t, event))
        # Every change is on its topic before any is dispatched: the operations centre
        # hears of an alert without waiting for the work orders of the batch's others.
        for t, event in changes:
            await self._follow_up(t, event)

    async def replace_rules(self, rules: Iterable[Rule]) -> None:
        """Evaluate with ``rules`` from now on, keeping the state of the rules that stay;
        the open alerts of a rule that is gone are resolved (nothing will clear them)."""
        gone = self.evaluator.replace_rules(rules)
        if gone and self.waiting:
            # Evaluated before the change and not recorded yet: a gone rule's changes go with
            # it (a firing recorded now would stay open, nothing left to clear it).
            kept = self.evaluator.rules
            self.waiting = [t for t in self.waiting if t.rule.id in kept]
        now_ms = int(self.clock() * 1000)
        for rule_id, device_id, track in gone:
            if track.alert_id is None:
                continue
            alert = await self.store.resolve(track.alert_id, now_ms)
            if alert is not None:
                log.info("event=alert_rule_removed rule=%s device=%s", rule_id, device_id)
                await self._changed(alert)

    async def acknowledge(self, alert_id: str, by: str) -> dict[str, Any]:
        alert = await self.store.acknowledge(alert_id, by, dt.datetime.now(dt.UTC))
        return await self._changed(alert)

    # -- internals -----------------------------------------------------------------------

    def _step(self, t: Transition) -> Step | None:
        """What recording ``t`` takes; None when there is nothing to record."""
        rule, track = t.rule, t.track
        key = open_key(rule.id, t.device_id)
        if t.to == "resolved":
            if track.alert_id is None:
                return None
            return Step("resolved", key, track.alert_id, t.at_ms, t.values)
        summary = rule.summary(t.values)
        if track.alert_id is not None:
            return Step("firing", key, track.alert_id, t.at_ms, t.values, summary)
        known = self.devices.get(t.device_id)
        if known is None:
            return None
        alert_id = new_alert_id()
        # Set now: a later transition of this batch (pending, then firing) refers to it.
        track.alert_id = alert_id
        row = new_alert_row(
            alert_id=alert_id,
            rule=rule.id,
            device_id=t.device_id,
            kind=known.kind,
            district=known.district,
            vendor=known.vendor,
            severity=rule.severity,
            state=t.to,
            started_ms=track.since_ms,
            values=t.values,
            summary=summary,
        )
        return Step(t.to, key, alert_id, t.at_ms, t.values, summary, new=row)

    async def _changed(self, alert: Alert) -> dict[str, Any]:
        """Publish an alert state change on its topic and dispatch it."""
        event = alert_event(alert)
        self._publish(event)
        await self._follow_up(None, event)
        return event

    async def _follow_up(self, t: Transition | None, event: dict[str, Any]) -> None:
        """Dispatch ``event`` and run ``t``'s action if it fires: queued in order while
        :meth:`run` runs, at once otherwise."""
        if self._follow_ups is not None:
            await self._follow_ups.put((t, event))
            return
        await self._dispatch(t, event)

    async def _follow(self, queue: asyncio.Queue[tuple[Transition | None, dict[str, Any]]]) -> None:
        while True:
            t, event = await queue.get()
            try:
                await self._dispatch(t, event)
            except Exception:  # one change's follow-up failing must not stop the others'
                log.exception("event=alert_dispatch_failed alert=%s", event.get("id"))
            finally:
                queue.task_done()

    async def _dispatch(self, t: Transition | None, event: dict[str, Any]) -> None:
        if self.dispatcher is not None:
            await self.dispatcher.handle(event)
        if t is not None and event["state"] == "firing" and t.rule.action is not None:
            await self._act(t, event["id"])

    def _publish(self, event: dict[str, Any]) -> None:
        self.counters.events += 1
        self.publish(alert_topic(event), orjson.dumps(event))

    async def _act(self, t: Transition, alert_id: str) -> None:
        action = t.rule.action
        known = self.devices.get(t.device_id)
        if action is None or known is None or self.commands is None:
            return
        targets = [(known.device_id, known.vendor)]
        if action.target == "group" and action.group_kind and self.group_targets is not None:
            targets = await self.group_targets(action.group_kind, known.district)
        for device_id, vendor in targets:
            try:
                await self.commands.send(
                    device_id,
                    vendor,
                    action.command,
                    dict(action.args),
                    rule=t.rule.id,
                    alert_id=alert_id,
                )
            except Exception as exc:  # one unreachable device must not stop its group's
                log.warning("event=command_failed device=%s error=%s", device_id, exc)
                continue
            self.counters.commands += 1

    def _facts_of(self, device_id: str, *, note: bool = True) -> DeviceFacts | None:
        """What rules read of the device, made again when its registry entry changed;
        ``note``: a new or changed device is filed in the silence wheel at the next tick."""
        known = self.devices.devices.get(device_id)
        if known is None:
            return None
        cached = self._facts.get(device_id)
        if cached is not None and cached[0] is known:
            return cached[1]
        facts = DeviceFacts(device_id, known.kind, known.report_interval_s, known.attributes)
        self._facts[device_id] = (known, facts)
        if note:
            self._refile.append(device_id)  # its silence deadline is new, or may have moved
        return facts
