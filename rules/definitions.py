"""Rules as data: YAML files under version control, validated on load.

A rule file holds a list of rules::

    - id: manhole_flooding
      kind: manhole                      # or "*": every kind that has the metrics used
      severity: major                    # critical | major | minor | warning
      when: water_level_cm > 0.8 * depth_cm
      clear: water_level_cm < 0.7 * depth_cm   # hysteresis; default: "not (when)"
      for: 2m                            # event time the condition must hold; or an
                                         # expression in seconds: "max_stay_min * 60"
      schedule: night                    # night | day | {hours: "22:00-06:00", weekdays: [...]}
      summary:
        zh: "井盖下水位 {water_level_cm} cm，超过井深 80%"
        en: "Water {water_level_cm} cm under the cover, above 80% of the shaft depth"

    - id: device_offline
      kind: "*"
      type: absence                      # no data for factor × report_interval_s
      factor: 3

    - id: water_burst
      kind: water
      type: rate                         # a drop of drop_pct % within `within`
      metric: pressure_mpa
      drop_pct: 30
      within: 5m

Conditions are small expressions: numbers, ``true``/``false``, the kind's metric names and
the device's numeric attributes (``depth_cm``, ``max_stay_min``, ``report_interval_s``, ...),
``+ - * /``, comparisons, ``and``/``or``/``not`` and parentheses. An enum metric is compared
with ``==`` or ``!=`` to one of its values, written as a string: ``alarm_state == "fault"``;
a text attribute of the kind likewise, to any string: ``zone_class == "4a"``. Anything else
is refused with the file, rule and field named. The names come from the kinds
in force (:data:`~cityiot.domain.catalogue.MODEL`) when the rule is loaded, so a kind added
at run time can have rules. A rule may carry an ``action`` sending a command to the device or
to its district's group of a kind (linked control)::

      action: {command: switch_on, args: {dim_pct: 100}, target: group, group_kind: streetlight}
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from cityiot.domain.catalogue import MODEL, Kind
from cityiot.domain.expressions import NO_BUILTINS, ExpressionError, parse_expression
from cityiot.domain.sun import is_dark, local_date, local_hour
from cityiot.domain.yamltext import load_yaml
from cityiot.rules.events import SEVERITIES

RuleType = Literal["threshold", "absence", "rate"]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Attributes every device has that rules can compute with (docs/design.md §4).
COMMON_NUMBERS = frozenset({"report_interval_s", "lat", "lon"})


class RuleError(ValueError):
    """A rule file is wrong; the message names the file, the rule and the field."""


@dataclass(frozen=True)
class Expression:
    """A compiled condition or number over metrics and attributes."""

    text: str
    names: frozenset[str]
    _code: Any = field(repr=False, compare=False)
    # The names read as numbers or true/false, and the (name, string) comparisons with an
    # enum metric or a text attribute: what a kind must have for the expression to apply.
    numbers: frozenset[str] = frozenset()
    string_tests: frozenset[tuple[str, str]] = frozenset()

    def __call__(self, values: Mapping[str, Any]) -> Any:
        return eval(self._code, NO_BUILTINS, values)  # noqa: S307 - AST whitelisted

    def bare(self) -> Callable[[Mapping[str, Any]], Any]:
        """The same as calling this expression, without the call of a Python method in
        between (the rules' hot path calls it once per reading and rule)."""
        return functools.partial(eval, self._code, NO_BUILTINS)


@dataclass(frozen=True)
class Vocabulary:
    """What a rule's expressions may name: float and bool metrics and numeric attributes
    (``numbers``), enum metrics with their values (``enums``), and text attributes
    (``texts``, compared to any string: their values are not a closed set)."""

    numbers: frozenset[str]
    enums: Mapping[str, tuple[str, ...]]
    texts: frozenset[str] = frozenset()

    @classmethod
    def of(cls, kinds: Iterable[Kind]) -> Vocabulary:
        """The names of ``kinds`` together (a ``"*"`` rule's): a name that is an enum or text
        in one kind and a number in another is both, and its use decides which kinds a rule
        keeps."""
        numbers = set(COMMON_NUMBERS)
        enums: dict[str, list[str]] = {}
        texts: set[str] = set()
        for kind in kinds:
            for m in kind.metrics:
                if m.type == "enum":
                    known = enums.setdefault(m.name, [])
                    known += [v for v in m.values if v not in known]
                else:
                    numbers.add(m.name)
            for a in kind.attributes:
                (texts if a.type is str else numbers).add(a.name)
        return cls(frozenset(numbers), {n: tuple(v) for n, v in enums.items()}, frozenset(texts))

    def known(self) -> list[str]:
        return sorted(self.numbers | self.enums.keys() | self.texts)

    def fits(self, expression: Expression) -> bool:
        """Whether ``expression`` reads only what these names offer, as their types allow."""
        return expression.numbers <= self.numbers and all(
            name in self.texts or value in self.enums.get(name, ())
            for name, value in expression.string_tests
        )


def _is_text(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _values_of(name: str, vocabulary: Vocabulary) -> str:
    return ", ".join(f'"{v}"' for v in vocabulary.enums[name])


_STRING_USE = "a string is compared with == or != to an enum metric or a text attribute"


def _string_example(name: str | None, vocabulary: Vocabulary) -> str:
    """How to compare ``name`` with a string (an enum metric of the gas detectors when
    ``name`` is neither an enum metric nor a text attribute)."""
    if name is not None and name in vocabulary.enums:
        return f'{name} == "{vocabulary.enums[name][0]}"'
    if name is not None and name in vocabulary.texts:
        return f'{name} == "some text"'
    return 'alarm_state == "fault"'


def _misused(name: str, vocabulary: Vocabulary) -> str:
    """Why ``name`` (an enum metric or a text attribute) is no number or truth value."""
    if name in vocabulary.enums:
        what = f"an enum metric (values {_values_of(name, vocabulary)})"
        to = "one of its values"
    else:
        what, to = "a text attribute of the device", "a string"
    return (
        f"{name} is {what}; compare it with == or != to {to}, e.g. "
        f"{_string_example(name, vocabulary)}: arithmetic, ordering and truth do not apply to it"
    )


def _string_tests(
    tree: ast.AST, text: str, vocabulary: Vocabulary, where: str
) -> tuple[set[tuple[str, str]], set[int]]:
    """The ``name == "value"`` comparisons of ``tree`` with an enum metric (checked against
    its values) or a text attribute (any string), and the ids of the nodes they use."""
    tests: set[tuple[str, str]] = set()
    used: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        if not any(_is_text(o) for o in operands):
            continue
        named = next((o.id for o in operands if isinstance(o, ast.Name)), None)
        example = f"write e.g. {_string_example(named, vocabulary)}"
        if len(operands) != 2 or not isinstance(node.ops[0], ast.Eq | ast.NotEq):
            subject = ""
            if named in vocabulary.enums:
                subject = f"{named} is an enum metric; "
            elif named in vocabulary.texts:
                subject = f"{named} is a text attribute; "
            raise RuleError(
                f"{where}: {text!r}: {subject}{_STRING_USE}, one value at a time; ordering "
                f"does not apply to strings ({example})"
            )
        text_node, other = operands if _is_text(operands[0]) else operands[::-1]
        assert isinstance(text_node, ast.Constant)
        if not isinstance(other, ast.Name):
            raise RuleError(
                f"{where}: {text!r}: a string is only compared to an enum metric or a text "
                f"attribute ({example})"
            )
        name, value = other.id, str(text_node.value)
        if name not in vocabulary.enums and name not in vocabulary.texts:
            what = "a number or true/false" if name in vocabulary.numbers else "not known here"
            raise RuleError(
                f"{where}: {text!r}: {name!r} is {what}, not an enum metric or a text "
                f"attribute, so it cannot be compared with the string {value!r}; enum "
                f"metrics: {', '.join(sorted(vocabulary.enums)) or 'none'}; text attributes: "
                f"{', '.join(sorted(vocabulary.texts)) or 'none'}"
            )
        if name not in vocabulary.texts and value not in vocabulary.enums[name]:
            raise RuleError(
                f"{where}: {text!r}: {value!r} is not a value of the metric {name}; "
                f"its values: {_values_of(name, vocabulary)}"
            )
        tests.add((name, value))
        used.update((id(text_node), id(other)))
    return tests, used


def compile_expression(text: str, vocabulary: Vocabulary, where: str) -> Expression:
    """Parse ``text``, refusing any construct outside the small rule language and any name
    ``vocabulary`` does not offer, or uses against its type."""
    try:
        tree = parse_expression(text, where)
    except ExpressionError as exc:
        raise RuleError(str(exc)) from None
    string_tests, in_tests = _string_tests(tree, text, vocabulary, where)
    numbers: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in in_tests:
            continue
        if _is_text(node):
            raise RuleError(
                f"{where}: {text!r}: a string is only compared with == or != to an enum "
                'metric or a text attribute (write e.g. alarm_state == "fault")'
            )
        if not isinstance(node, ast.Name):
            continue
        if node.id in vocabulary.numbers:
            numbers.add(node.id)
        elif node.id in vocabulary.enums or node.id in vocabulary.texts:
            raise RuleError(f"{where}: {text!r}: {_misused(node.id, vocabulary)}")
        else:
            raise RuleError(
                f"{where}: {text!r} names {node.id!r}, which is neither a metric of this "
                f"kind nor a device attribute; known: {', '.join(vocabulary.known())}"
            )
    names = frozenset(numbers) | frozenset(name for name, _ in string_tests)
    return Expression(
        text,
        names,
        compile(tree, f"<{where}>", "eval"),
        numbers=frozenset(numbers),
        string_tests=frozenset(string_tests),
    )


def parse_duration(value: Any, where: str) -> float:
    """Seconds of ``30s``, ``5m``, ``2h``, ``1d`` (or a bare number of seconds)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise RuleError(f"{where}: {value!r} is not a duration; write e.g. 30s, 5m, 2h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class Schedule:
    """When a rule applies, in the city's time zone (the city file; Asia/Shanghai for
    Zhumadian): night/day by the sun at the city's centre, or clock hours."""

    mode: Literal["night", "day", "hours"]
    start_min: int = 0
    end_min: int = 0
    weekdays: frozenset[int] = frozenset(range(7))
    # Darkness by the minute: the sun's position costs more than the rest of a reading's
    # evaluation, and readings arrive near "now", so a handful of minutes are in use.
    _dark: dict[int, bool] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def active(self, ts_ms: int) -> bool:
        if self.mode != "hours":
            minute = ts_ms // 60_000
            dark = self._dark.get(minute)
            if dark is None:
                if len(self._dark) > 4096:
                    self._dark.clear()
                dark = self._dark[minute] = is_dark(minute * 60_000 + 30_000)
            return dark if self.mode == "night" else not dark
        minute = int(local_hour(ts_ms) * 60)
        weekday = local_date(ts_ms).weekday()
        if self.start_min <= self.end_min:
            return weekday in self.weekdays and self.start_min <= minute < self.end_min
        # Crosses midnight: the part after midnight belongs to the previous day's window.
        if minute >= self.start_min:
            return weekday in self.weekdays
        return minute < self.end_min and (weekday - 1) % 7 in self.weekdays


@dataclass(frozen=True)
class Action:
    """Linked control: a command sent when the rule fires."""

    command: str
    args: dict[str, Any]
    target: Literal["device", "group"] = "device"
    group_kind: str | None = None


@dataclass(frozen=True)
class Rule:
    id: str
    kinds: frozenset[str]  # the kinds it applies to
    type: RuleType
    severity: str
    summary_zh: str
    summary_en: str
    source: str
    when: Expression | None = None
    clear: Expression | None = None
    for_s: float = 0.0
    for_expr: Expression | None = None  # a `for` that depends on attributes
    schedule: Schedule | None = None
    factor: float = 3.0  # absence
    metric: str | None = None  # rate
    drop_pct: float = 0.0
    within_s: float = 0.0
    action: Action | None = None
    names: frozenset[str] = frozenset()  # metrics and attributes it reads

    def hold_s(self, values: Mapping[str, Any]) -> float | None:
        """How long the condition must hold for this device (None: attribute missing)."""
        if self.for_expr is None:
            return self.for_s
        if not self.for_expr.names <= values.keys():
            return None
        return float(self.for_expr(values))

    def summary(self, values: Mapping[str, Any]) -> str:
        """One line, Chinese then English, with the triggering values filled in."""
        shown = {k: _show(v) for k, v in values.items()}
        try:
            return f"{self.summary_zh.format_map(shown)} / {self.summary_en.format_map(shown)}"
        except (KeyError, ValueError, IndexError):
            return f"{self.summary_zh} / {self.summary_en}"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _parse_schedule(raw: Any, where: str) -> Schedule:
    if raw in ("night", "day"):
        return Schedule(raw)
    if not isinstance(raw, dict) or "hours" not in raw:
        raise RuleError(f'{where}: use night, day, or {{hours: "22:00-06:00", weekdays: [...]}}')
    match = re.fullmatch(r"(\d\d):(\d\d)-(\d\d):(\d\d)", str(raw["hours"]).strip())
    if not match:
        raise RuleError(f"{where}.hours: {raw['hours']!r} must look like 22:00-06:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59:
        raise RuleError(f"{where}.hours: {raw['hours']!r} is not a time of day")
    days = raw.get("weekdays", list(_WEEKDAYS))
    bad = [d for d in days if d not in _WEEKDAYS]
    if bad:
        raise RuleError(f"{where}.weekdays: {bad} are not weekdays; use {', '.join(_WEEKDAYS)}")
    return Schedule(
        "hours", h1 * 60 + m1, h2 * 60 + m2, frozenset(_WEEKDAYS.index(d) for d in days)
    )


_FIELDS = {
    "id", "kind", "type", "severity", "summary", "when", "clear", "for", "schedule", "factor",
    "metric", "drop_pct", "within", "action", "description", "source",
}  # fmt: skip


def parse_rule(raw: Any, source: str, index: int) -> Rule:
    """One rule from its YAML mapping; :class:`RuleError` names file, rule and field."""
    if not isinstance(raw, dict):
        raise RuleError(f"{source}: rule #{index + 1} must be a mapping of fields")
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not _ID.match(rule_id):
        raise RuleError(f"{source}: rule #{index + 1}: id {rule_id!r} must be snake_case")
    where = f"{source}: rule {rule_id}"
    unknown = set(raw) - _FIELDS
    if unknown:
        raise RuleError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(_FIELDS)}")
    kinds = _kinds_of(raw.get("kind"), where)
    rtype = raw.get("type", "threshold")
    if rtype not in ("threshold", "absence", "rate"):
        raise RuleError(f"{where}.type: {rtype!r}; use threshold, absence or rate")
    severity = raw.get("severity", "warning")
    if severity not in SEVERITIES:
        raise RuleError(f"{where}.severity: {severity!r}; use {', '.join(SEVERITIES)}")
    summary = raw.get("summary") or {}
    if not isinstance(summary, dict) or not summary.get("zh") or not summary.get("en"):
        raise RuleError(f"{where}.summary: give both zh and en lines")
    vocabulary = Vocabulary.of(kinds.values())
    fields: dict[str, Any] = {}
    if rtype == "threshold":
        if "when" not in raw:
            raise RuleError(f"{where}.when: a threshold rule needs a condition")
        when = compile_expression(raw["when"], vocabulary, f"{where}.when")
        clear = (
            compile_expression(raw["clear"], vocabulary, f"{where}.clear")
            if "clear" in raw
            else compile_expression(f"not ({raw['when']})", vocabulary, f"{where}.when")
        )
        fields.update(when=when, clear=clear)
        expressions = [when, clear]
        hold = raw.get("for", 0)
        if isinstance(hold, str) and not _DURATION.match(hold):
            expr = compile_expression(hold, vocabulary, f"{where}.for")
            fields["for_expr"] = expr
            expressions.append(expr)
        else:
            fields["for_s"] = parse_duration(hold, f"{where}.for")
        if "schedule" in raw:
            fields["schedule"] = _parse_schedule(raw["schedule"], f"{where}.schedule")
        # A rule on "*" applies to the kinds that have everything it reads, of its type.
        fitting = {name: Vocabulary.of([kind]) for name, kind in kinds.items()}
        kinds = {
            name: kind
            for name, kind in kinds.items()
            if all(fitting[name].fits(e) for e in expressions)
        }
        fields["names"] = frozenset().union(*(e.names for e in expressions))
    elif rtype == "absence":
        factor = raw.get("factor", 3)
        if not isinstance(factor, int | float) or isinstance(factor, bool) or factor <= 0:
            raise RuleError(f"{where}.factor: {factor!r} must be a positive number")
        fields["factor"] = float(factor)
    else:
        metric = raw.get("metric")
        numbers = sorted({m.name for k in kinds.values() for m in k.metrics if m.type == "float"})
        kinds = {name: kind for name, kind in kinds.items() if _is_number_metric(kind, metric)}
        if not kinds:
            raise RuleError(
                f"{where}.metric: {metric!r} is not a number metric of {raw.get('kind')}; "
                f"use one of {', '.join(numbers)}"
            )
        drop = raw.get("drop_pct")
        if not isinstance(drop, int | float) or not 0 < drop < 100:
            raise RuleError(f"{where}.drop_pct: {drop!r} must be a percentage between 0 and 100")
        within = parse_duration(raw.get("within", "5m"), f"{where}.within")
        if within <= 0:
            raise RuleError(f"{where}.within: must be longer than 0")
        fields.update(
            metric=metric, drop_pct=float(drop), within_s=within, names=frozenset({metric})
        )
    if "action" in raw:
        fields["action"] = _parse_action(raw["action"], f"{where}.action")
    if not kinds:
        raise RuleError(f"{where}: no kind has every metric the rule reads")
    return Rule(
        id=rule_id,
        kinds=frozenset(kinds),
        type=rtype,
        severity=severity,
        summary_zh=str(summary["zh"]),
        summary_en=str(summary["en"]),
        source=source,
        **fields,
    )


def _kinds_of(kind: Any, where: str) -> dict[str, Kind]:
    """The kinds in force a rule's ``kind`` names: one, or every kind for ``"*"``."""
    if kind == "*":
        return dict(MODEL.kinds)
    if isinstance(kind, str) and kind in MODEL.kinds:
        return {kind: MODEL.kinds[kind]}
    raise RuleError(
        f"{where}.kind: {kind!r} is not a kind; use * or one of {', '.join(sorted(MODEL.kinds))}"
    )


def _is_number_metric(kind: Kind, name: Any) -> bool:
    metric = kind.metric(name) if isinstance(name, str) else None
    return metric is not None and metric.type == "float"


def _parse_action(raw: Any, where: str) -> Action:
    if not isinstance(raw, dict) or not isinstance(raw.get("command"), str):
        raise RuleError(f"{where}: give at least {{command: NAME}}")
    target = raw.get("target", "device")
    if target not in ("device", "group"):
        raise RuleError(f"{where}.target: {target!r}; use device or group")
    group_kind = raw.get("group_kind")
    if target == "group" and group_kind not in MODEL.kinds:
        raise RuleError(f"{where}.group_kind: {group_kind!r} must be a kind for a group target")
    args = raw.get("args", {})
    if not isinstance(args, dict):
        raise RuleError(f"{where}.args: must be a mapping")
    return Action(raw["command"], args, target, group_kind)


# The rule catalogue shipped with cityiot (package data), used when CITYIOT_RULES_PATH is unset.
SHIPPED_CATALOGUE = Path(__file__).resolve().parent / "catalogue"


def catalogue_path(rules_path: Path | None) -> Path:
    """The rule files to read: ``CITYIOT_RULES_PATH``, else the shipped catalogue."""
    return Path(rules_path) if rules_path is not None else SHIPPED_CATALOGUE


# A routing file beside the rule files replaces the shipped routing; it holds no rules.
ROUTING_FILE = "routing.yaml"


def rule_files(path: Path) -> list[Path]:
    """The rule files of ``path``: the file itself, or a folder's ``*.yaml`` then ``*.yml``
    in name order, without the folder's ``routing.yaml``."""
    if not path.is_dir():
        return [path]
    files = sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml"))
    return [f for f in files if f.name != ROUTING_FILE]


def load_rules(path: Path) -> list[Rule]:
    """Every rule of ``path`` (a YAML file, or a folder of them, read in name order; a
    folder's ``routing.yaml`` is the routing file, not rules)."""
    files = rule_files(path)
    if not files or not all(f.exists() for f in files):
        raise RuleError(f"{path}: no rule files (*.yaml) there; set CITYIOT_RULES_PATH")
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for file in files:
        rules_in_file = parse_rule_file(file.read_text(encoding="utf-8"), str(file))
        for rule in rules_in_file:
            if rule.id in seen:
                raise RuleError(f"{file}: rule {rule.id} is already defined in {seen[rule.id]}")
            seen[rule.id] = str(file)
        rules.extend(rules_in_file)
    return rules


def parse_rule_file(text: str, source: str) -> list[Rule]:
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as exc:
        raise RuleError(f"{source}: not valid YAML: {exc}") from None
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RuleError(f"{source}: a rule file is a list of rules (- id: ...)")
    return [parse_rule(item, source, i) for i, item in enumerate(raw)]


def by_kind(rules: list[Rule]) -> dict[str, list[Rule]]:
    """Rules indexed by kind, so a reading meets only the rules that can use it."""
    index: dict[str, list[Rule]] = {k: [] for k in MODEL.kinds}
    for rule in rules:
        for kind in rule.kinds:
            index.setdefault(kind, []).append(rule)
    return index
