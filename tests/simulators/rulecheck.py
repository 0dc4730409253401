"""The shipped rule catalogue judging simulated readings, as the rules stage would
(rules/evaluation.py's Evaluator, on the readings' own times)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cityiot.rules.definitions import SHIPPED_CATALOGUE, load_rules
from cityiot.rules.evaluation import DeviceFacts, Evaluator
from cityiot.simulators import SimDevice


class RuleCheck:
    """Feeds readings to an evaluator of the default rules; keeps what fired, in order."""

    def __init__(self) -> None:
        self.evaluator = Evaluator(load_rules(SHIPPED_CATALOGUE), started_s=0.0)
        self.facts: dict[str, DeviceFacts] = {}
        self.fired: list[tuple[int, str, str]] = []  # (ts_ms, rule id, device id)

    def feed(self, device: SimDevice, ts_ms: int, metrics: Mapping[str, Any]) -> list[str]:
        """The rules this reading makes fire."""
        facts = self.facts.get(device.device_id)
        if facts is None:
            facts = self.facts[device.device_id] = DeviceFacts(
                device.device_id, device.kind, device.report_interval_s, device.attributes
            )
        fired = [
            t.rule.id
            for t in self.evaluator.feed(facts, ts_ms, metrics, ts_ms / 1000)
            if t.to == "firing"
        ]
        self.fired.extend((ts_ms, rule, device.device_id) for rule in fired)
        return fired

    def rules_of(self, kind: str) -> list[str]:
        return [r.id for r in self.evaluator.index.get(kind, [])]
