"""What a simulated device does with a command (docs/design.md §4 commands and acks).

A command sets the device's actuators — flags and enums among its metrics, such as a
warning sign or a barrier — and they hold until another command changes them; its next
readings report them. Which command sets what is data (:data:`ACTUATIONS`), keyed by the
metric names, never by kind: any device whose kind has one of the metrics a command sets
obeys it. ``set`` with ``args`` naming flags or enum values of the device's kind works for
any kind. Every command gets an ack: ``ok`` true with what changed, or false with why not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cityiot.domain.catalogue import Kind
from cityiot.simulators.behaviour import DeviceState, Value

# Command name → the metrics it sets. The rules' linked control sends these (e.g. a flooded
# underpass: show_warning, then close_road, then reopen once the water is gone).
ACTUATIONS: Mapping[str, Mapping[str, Value]] = {
    "show_warning": {"sign_on": True},
    "close_road": {"sign_on": True, "barrier_closed": True},
    "reopen": {"sign_on": False, "barrier_closed": False},
    "close_valve": {"valve_closed": True},
    "open_valve": {"valve_closed": False},
}
SET = "set"  # args: metric → value, for any flag or enum value of the device's kind


def obey(kind: Kind, state: DeviceState, name: str, args: Mapping[str, Any]) -> tuple[bool, str]:
    """Carry out command ``name`` on a device of ``kind``: (ok, the ack's message)."""
    if name == SET:
        wanted: Mapping[str, Any] = args
    elif name in ACTUATIONS:
        wanted = ACTUATIONS[name]
    else:
        known = ", ".join(c for c, sets in ACTUATIONS.items() if _settable(kind, sets)) or "none"
        return False, f"unknown command {name!r}; this device obeys {SET} and {known}"
    changes: dict[str, Value] = {}
    for metric_name, value in wanted.items():
        problem = _refusal(kind, metric_name, value)
        if problem is None:
            changes[metric_name] = value
        elif name == SET:  # asked by name: every one must be settable
            return False, problem
    if not changes:
        return False, f"{name}: this device has none of {', '.join(wanted)}"
    state.actuators.update(changes)
    return True, " ".join(f"{m}={_show(v)}" for m, v in changes.items())


def _settable(kind: Kind, sets: Mapping[str, Value]) -> bool:
    return any(_refusal(kind, m, v) is None for m, v in sets.items())


def _refusal(kind: Kind, name: str, value: Any) -> str | None:
    """Why ``name`` cannot be set to ``value`` on this kind, or None when it can."""
    metric = kind.metric(name)
    if metric is None:
        return f"this device has no {name}"
    if metric.type == "bool":
        return None if isinstance(value, bool) else f"{name} takes true or false"
    if metric.type == "enum":
        if isinstance(value, str) and value in metric.values:
            return None
        return f"{name} takes one of {', '.join(metric.values)}"
    return f"{name} is a measurement, not something a command sets"


def _show(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
