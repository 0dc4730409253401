"""The routing tree: which receiver (a team and its channels) hears of which alert, how
alerts are grouped and how often they are repeated, like Alertmanager's ``route``.

Loaded from YAML (``rules/routing.yaml`` by default) and checked as a whole: every
mistake is reported with the file and the path of the field, e.g.
``rules/routing.yaml: route.routes[2].match.severity: 'urgent' is not a severity (...)``.

Every alert enters at the root ``route``. A route matches when all its matchers do
(``match``: equality, ``match_re``: full-match regular expressions, ``matchers``: a list
of ``{label, op, value}`` with ``=``, ``!=``, ``=~``, ``!~``). Children are tried in order
and the first matching child wins unless it says ``continue: true``; when no child
matches, the route itself takes the alert. A setting a route leaves out (receiver,
group_by, group_wait, group_interval, repeat_interval, send_resolved, workorder,
workorder_group_by) is inherited from its parent.

The file::

    route:                          # the root: every alert enters here
      receiver: ops-centre
      group_by: [rule, district]    # labels: rule kind district severity vendor device_id team
      group_wait: 10s               # durations: 500ms 30s 5m 4h 1h30m 1d 1w
      group_interval: 1m
      repeat_interval: 4h
      send_resolved: true
      routes:
        - match: {kind: manhole}    # also match_re: {district: "yicheng|kaifaqu"}, matchers: [...]
          receiver: urban-management
          workorder: [critical, major]   # severities that open a work order for the team
          workorder_group_by: [district, kind, rule]  # one open order per group; [] per alert
          continue: false
          routes: [...]
    receivers:
      - name: urban-management
        team: urban                 # the field team given work orders
        channels:                   # name (unique in the file) and type, the rest is the
          - {name: urban-mqtt, type: mqtt}   # notifier's (rules/notifiers/<type>.py)
    maintenance_windows:
      - name: yicheng-night-works
        matchers: [{label: district, op: "=", value: yicheng}]
        schedule: {weekdays: [mon, tue, wed, thu, fri], start: "01:00", end: "05:00"}

Window times are in the city's time zone (the city file; Asia/Shanghai for Zhumadian);
``weekdays`` (all seven when left out) are the days a window starts, and a window whose end
is not after its start runs past midnight.

String values may say ``${NAME}`` (or ``${NAME:-default}``) to read an environment
variable, so secrets stay out of the file. A channel that needs an unset (or empty)
variable is dropped with a warning; anywhere else an unset variable is an error.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    model_validator,
)

from cityiot.domain.yamltext import load_yaml
from cityiot.rules.events import SEVERITIES
from cityiot.rules.notifiers.webhook import plain_http_refusal
from cityiot.rules.silences import (
    LABELS,
    WEEKDAYS,
    MaintenanceWindow,
    Matcher,
    MatcherError,
    parse_matchers,
)

log = logging.getLogger("cityiot.rules.routing")

DEFAULT_ROUTING_PATH = Path(__file__).with_name("routing.yaml")
# Labels taken from the alert event; "team" is added by the route that carries the alert.
EVENT_LABELS = ("rule", "kind", "district", "severity", "vendor", "device_id")
DEFAULTS: dict[str, Any] = {  # the root's settings when the file leaves them out
    "group_by": (),
    "group_wait": 30.0,
    "group_interval": 300.0,
    "repeat_interval": 4 * 3600.0,
    "send_resolved": True,
    "workorder": frozenset(),
    "workorder_group_by": (),
}
MAX_NAME_CHARS = 128  # receiver and channel names are stored in the outbox's columns

_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_TIME_OF_DAY = re.compile(r"(\d{1,2}):(\d{2})")
_CHANNEL_TYPE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class RoutingError(ValueError):
    """The routing file is wrong; one line per problem, each naming the file and field."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


# --- the resolved tree -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Receiver:
    """Who is told: a name, the field team that gets work orders, and its channels.

    Channels are the mappings of the file (after ``${ENV}`` substitution), each with at
    least ``name`` and ``type``; the notifier factory reads the rest.
    """

    name: str
    team: str | None
    channels: tuple[dict[str, Any], ...]
    title: dict[str, str] | None = None  # {"zh", "en"}: the team as people call it


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """One node of the tree with every setting resolved (inherited ones filled in)."""

    path: str  # "route", "route.routes[0]", ...: names the node in messages and group keys
    receiver: Receiver
    matchers: tuple[Matcher, ...]
    group_by: tuple[str, ...]
    group_wait: float  # seconds
    group_interval: float
    repeat_interval: float
    send_resolved: bool
    workorder: frozenset[str]  # severities that open a work order for the receiver's team
    continue_: bool
    routes: tuple[Route, ...] = ()
    # Labels whose alerts share one open work order of the team; () one work order per alert.
    workorder_group_by: tuple[str, ...] = ()

    @property
    def team(self) -> str | None:
        return self.receiver.team

    def matches(self, labels: Mapping[str, Any]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def labels_of(self, event: Mapping[str, Any]) -> dict[str, str]:
        """The labels of an alert event carried by this route (its own and the team)."""
        labels = alert_labels(event)
        labels["team"] = self.team or ""
        return labels

    def group_labels(self, labels: Mapping[str, Any]) -> dict[str, str]:
        return {name: str(labels.get(name) or "") for name in self.group_by}

    def group_key(self, labels: Mapping[str, Any]) -> str:
        """``route.routes[0]:{district="yicheng",rule="manhole_open"}``: one group's id."""
        pairs = ",".join(f'{k}="{v}"' for k, v in self.group_labels(labels).items())
        return f"{self.path}:{{{pairs}}}"

    def workorder_group(self, labels: Mapping[str, Any]) -> str | None:
        """The key of the work-order group of an alert with ``labels`` (its team and the
        ``workorder_group_by`` labels, hashed to 40 hex digits); None: one order per alert."""
        if not self.workorder_group_by:
            return None
        pairs = ",".join(f'{k}="{labels.get(k) or ""}"' for k in ("team", *self.workorder_group_by))
        return hashlib.sha1(pairs.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class Router:
    """The loaded routing file: the tree, the receivers and the maintenance windows."""

    root: Route
    receivers: Mapping[str, Receiver]
    maintenance_windows: tuple[MaintenanceWindow, ...] = ()
    source: str = "<routing>"
    warnings: tuple[str, ...] = field(default=())  # e.g. channels dropped for unset variables

    def match(self, labels: Mapping[str, Any]) -> list[Route]:
        """The routes that take an alert with ``labels``, in tree order (never empty)."""
        return _match(self.root, labels) or [self.root]

    def routes(self) -> Iterator[Route]:
        """Every route of the tree, depth first."""
        stack = [self.root]
        while stack:
            route = stack.pop()
            yield route
            stack.extend(reversed(route.routes))


def _match(route: Route, labels: Mapping[str, Any]) -> list[Route]:
    if not route.matches(labels):
        return []
    found: list[Route] = []
    for child in route.routes:
        taken = _match(child, labels)
        found.extend(taken)
        if taken and not child.continue_:
            break
    return found or [route]


def alert_labels(event: Mapping[str, Any]) -> dict[str, str]:
    """The routing labels of an alert event: rule, kind, district, severity, vendor, device_id."""
    return {name: str(event.get(name) or "") for name in EVENT_LABELS}


# --- field types of the file -----------------------------------------------------------


def parse_duration(value: Any) -> float:
    """Seconds in ``30s``, ``5m``, ``4h``, ``1h30m``, ``500ms``, ``1d``, ``1w`` or a bare number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION.fullmatch(value.strip()):
        seconds = sum(float(n) * _UNIT_S[u] for n, u in _DURATION_PART.findall(value))
    else:
        raise ValueError(f"{value!r} is not a duration (e.g. 30s, 5m, 4h, 1h30m)")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a duration: it must be 0s or longer")
    return seconds


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be longer than 0s")
    return seconds


def _label(value: str) -> str:
    if value not in LABELS:
        raise ValueError(f"{value!r} is not a label ({', '.join(LABELS)})")
    return value


def _severity(value: str) -> str:
    if value not in SEVERITIES:
        raise ValueError(f"{value!r} is not a severity ({', '.join(SEVERITIES)})")
    return value


def _name(value: str) -> str:
    if not value.strip() or len(value) > MAX_NAME_CHARS:
        raise ValueError(f"{value!r}: a name has 1 to {MAX_NAME_CHARS} characters")
    return value


def _channel_type(value: str) -> str:
    if not _CHANNEL_TYPE.fullmatch(value):
        raise ValueError(f"{value!r} is not a channel type (e.g. mqtt, webhook, wecom, email)")
    return value


def _weekday(value: Any) -> int:
    if isinstance(value, str) and value.strip().lower()[:3] in WEEKDAYS:
        return WEEKDAYS.index(value.strip().lower()[:3])
    raise ValueError(f"{value!r} is not a weekday ({', '.join(WEEKDAYS)})")


def _time_of_day(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        # PyYAML reads an unquoted 01:00 as the base-60 number 60.
        raise ValueError(f'{value!r} is not a time of day: quote it, e.g. "01:00"')
    found = _TIME_OF_DAY.fullmatch(value.strip()) if isinstance(value, str) else None
    if found is not None:
        hours, minutes = int(found[1]), int(found[2])
        if minutes < 60 and (hours < 24 or (hours, minutes) == (24, 0)):
            return hours * 3600 + minutes * 60
    raise ValueError(f'{value!r} is not a time of day ("HH:MM", "00:00" to "24:00")')


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]
LabelName = Annotated[StrictStr, AfterValidator(_label)]
SeverityName = Annotated[StrictStr, AfterValidator(_severity)]
Name = Annotated[StrictStr, AfterValidator(_name)]
ChannelType = Annotated[StrictStr, AfterValidator(_channel_type)]
Weekday = Annotated[int, BeforeValidator(_weekday)]
TimeOfDay = Annotated[int, BeforeValidator(_time_of_day)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _ChannelSpec(BaseModel):
    model_config = ConfigDict(extra="allow")  # the notifier's own settings

    name: Name
    type: ChannelType


class _TitleSpec(_Spec):
    zh: str = Field(min_length=1, max_length=64)
    en: str = Field(min_length=1, max_length=64)


class _ReceiverSpec(_Spec):
    name: Name
    team: Name | None = None
    title: _TitleSpec | None = None  # the team's name for people, in both languages
    channels: list[_ChannelSpec] = Field(default_factory=list)


class _RouteSpec(_Spec):
    receiver: Name | None = None
    group_by: list[LabelName] | None = None
    group_wait: Duration | None = None
    group_interval: PositiveDuration | None = None
    repeat_interval: PositiveDuration | None = None
    send_resolved: StrictBool | None = None
    workorder: list[SeverityName] | None = None
    workorder_group_by: list[LabelName] | None = None
    match: dict[str, StrictStr] = Field(default_factory=dict)
    match_re: dict[str, StrictStr] = Field(default_factory=dict)
    matchers: list[Any] = Field(default_factory=list)
    continue_: StrictBool = Field(default=False, alias="continue")
    routes: list[_RouteSpec] = Field(default_factory=list)


class _ScheduleSpec(_Spec):
    weekdays: list[Weekday] = Field(default_factory=lambda: list(range(7)), min_length=1)
    start: TimeOfDay
    end: TimeOfDay

    @model_validator(mode="after")
    def _not_empty(self) -> _ScheduleSpec:
        if self.start == 86400:
            raise ValueError('start "24:00" is the next day\'s "00:00"; write that')
        if self.start == self.end:
            raise ValueError('start and end are equal; for a whole day write "00:00" to "24:00"')
        return self


class _WindowSpec(_Spec):
    name: Name
    matchers: list[Any]
    schedule: _ScheduleSpec


class _RoutingSpec(_Spec):
    route: _RouteSpec
    receivers: list[_ReceiverSpec] = Field(min_length=1)
    maintenance_windows: list[_WindowSpec] = Field(default_factory=list)


_FIELD_NAMES = sorted(
    {
        f.alias or name
        for spec in (
            _RouteSpec,
            _ReceiverSpec,
            _TitleSpec,
            _ScheduleSpec,
            _WindowSpec,
            _RoutingSpec,
        )
        for name, f in spec.model_fields.items()
    }
)


# --- loading ---------------------------------------------------------------------------


def load_routing(
    path: str | Path = DEFAULT_ROUTING_PATH, env: Mapping[str, str] | None = None
) -> Router:
    """Read, substitute and validate a routing file; raises ``RoutingError``."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutingError(source, [f"cannot read the file ({exc.strerror or exc})"]) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).replace("\n", " ")
        raise RoutingError(source, [f"not valid YAML{where}: {problem}"]) from None
    return parse_routing(data, source, env)


def parse_routing(
    data: Any, source: str = "<routing>", env: Mapping[str, str] | None = None
) -> Router:
    """Validate an already parsed routing document (a mapping); raises ``RoutingError``."""
    if not isinstance(data, Mapping):
        raise RoutingError(
            source, ["expected a mapping with route, receivers (the file is empty?)"]
        )
    missing: list[tuple[tuple[str | int, ...], str]] = []
    data = _substitute(data, (), os.environ if env is None else env, missing)
    problems: list[str] = []
    dropped: dict[tuple[int, int], list[str]] = {}  # (receiver, channel) index → variables
    for where, name in missing:
        in_channel = len(where) >= 4 and (where[0], where[2]) == ("receivers", "channels")
        if in_channel and isinstance(where[1], int) and isinstance(where[3], int):
            dropped.setdefault((where[1], where[3]), []).append(name)
            continue
        problems.append(f"{_path(where)}: environment variable {name} is not set")
    try:
        spec = _RoutingSpec.model_validate(data)
    except ValidationError as exc:
        problems.extend(f"{_path(e['loc'])}: {_describe(e)}" for e in exc.errors())
        raise RoutingError(source, problems) from None
    if problems:
        raise RoutingError(source, problems)
    return _Builder(spec, source, dropped).build()


def _substitute(
    value: Any, where: tuple[str | int, ...], env: Mapping[str, str], missing: list[Any]
) -> Any:
    if isinstance(value, str):

        def resolve(ref: re.Match[str]) -> str:
            name, default = ref[1], ref[2]
            if env.get(name):
                return env[name]
            if default is not None:
                return default
            missing.append((where, name))
            return ref[0]  # left as written: the error names the variable

        return _ENV_REF.sub(resolve, value)
    if isinstance(value, Mapping):
        return {k: _substitute(v, (*where, str(k)), env, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, (*where, i), env, missing) for i, v in enumerate(value)]
    return value


def _path(loc: tuple[str | int, ...] | list[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top)"


def _describe(error: Any) -> str:
    kind, given = error["type"], repr(error.get("input"))[:80]
    if kind in ("value_error", "assertion_error"):
        return str(error["ctx"]["error"])
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        near = difflib.get_close_matches(str(error["loc"][-1]), _FIELD_NAMES, n=1)
        return "unknown field" + (f"; did you mean {near[0]!r}?" if near else "")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping, got {given}"
    if kind == "list_type":
        return f"expected a list, got {given}"
    if kind == "string_type":
        return f"expected a string, got {given}; quote it"
    if kind == "bool_type":
        return f"expected true or false, got {given}"
    if kind == "too_short":
        return "give at least one"
    return f"{error['msg']} (got {given})"


class _Builder:
    """Second pass over a structurally valid file: names, matchers and inheritance."""

    def __init__(self, spec: _RoutingSpec, source: str, dropped: dict[tuple[int, int], list[str]]):
        self.spec, self.source, self.dropped = spec, source, dropped
        self.problems: list[str] = []
        self.dropped_channels: list[tuple[str, str, list[str]]] = []
        self.receivers: dict[str, Receiver] = {}

    def build(self) -> Router:
        self._receivers()
        root = self._route(self.spec.route, "route", None)
        windows = self._windows()
        if self.problems:
            raise RoutingError(self.source, self.problems)
        warnings = []
        for receiver, channel, names in self.dropped_channels:
            log.warning(
                "event=channel_dropped source=%s receiver=%s channel=%s missing=%s",
                self.source,
                receiver,
                channel,
                ",".join(names),
            )
            warnings.append(
                f"{self.source}: channel {channel!r} of {receiver!r} dropped: "
                f"set {' and '.join(names)} to enable it"
            )
        return Router(root, self.receivers, windows, self.source, tuple(warnings))

    def _receivers(self) -> None:
        first_of: dict[str, str] = {}
        for i, receiver in enumerate(self.spec.receivers):
            where = f"receivers[{i}]"
            if receiver.name in self.receivers:
                self.problems.append(f"{where}.name: {receiver.name!r} is already a receiver")
            channels = []
            for j, channel in enumerate(receiver.channels):
                cwhere = f"{where}.channels[{j}]"
                if channel.name in first_of:
                    self.problems.append(
                        f"{cwhere}.name: {channel.name!r} is already the name of "
                        f"{first_of[channel.name]}; channel names are unique in the file"
                    )
                first_of.setdefault(channel.name, cwhere)
                if (i, j) in self.dropped:
                    self.dropped_channels.append(
                        (receiver.name, channel.name, self.dropped[(i, j)])
                    )
                    continue
                config = channel.model_dump()
                url = config.get("url")
                if channel.type == "webhook" and isinstance(url, str):
                    allow = config.get("allow_http") is True
                    refusal = plain_http_refusal(channel.name, url, allow)
                    if refusal is not None:
                        self.problems.append(f"{cwhere}.url: {refusal}")
                channels.append(config)
            self.receivers.setdefault(
                receiver.name,
                Receiver(
                    receiver.name,
                    receiver.team,
                    tuple(channels),
                    receiver.title.model_dump() if receiver.title else None,
                ),
            )

    def _route(self, spec: _RouteSpec, where: str, parent: Route | None) -> Route:
        if parent is None:
            if spec.receiver is None:
                self.problems.append(f"{where}.receiver: required on the root route")
            extra = [k for k in ("match", "match_re", "matchers") if getattr(spec, k)]
            if spec.continue_:
                extra.append("continue")
            for key in extra:
                self.problems.append(
                    f"{where}.{key}: the root route takes every alert; move it to a child route"
                )
        matchers = self._matchers(spec, where)
        receiver_name = spec.receiver or (parent.receiver.name if parent else "")
        receiver = self.receivers.get(receiver_name)
        if receiver is None:
            if receiver_name:
                known = ", ".join(self.receivers) or "none defined"
                self.problems.append(
                    f"{where}.receiver: {receiver_name!r} is not a receiver ({known})"
                )
            receiver = Receiver(receiver_name, None, ())
        workorder = (
            frozenset(spec.workorder)
            if spec.workorder is not None
            else (parent.workorder if parent else DEFAULTS["workorder"])
        )
        if workorder and receiver.team is None and receiver_name in self.receivers:
            self.problems.append(
                f"{where}.workorder: receiver {receiver_name!r} has no team to give work orders to"
            )

        def inherit(name: str) -> Any:
            own = getattr(spec, name)
            if own is not None:
                return tuple(own) if isinstance(own, list) else own
            return getattr(parent, name) if parent else DEFAULTS[name]

        node = Route(
            path=where,
            receiver=receiver,
            matchers=matchers,
            group_by=inherit("group_by"),
            group_wait=inherit("group_wait"),
            group_interval=inherit("group_interval"),
            repeat_interval=inherit("repeat_interval"),
            send_resolved=inherit("send_resolved"),
            workorder=workorder,
            continue_=spec.continue_,
            workorder_group_by=inherit("workorder_group_by"),
        )
        children = tuple(
            self._route(child, f"{where}.routes[{i}]", node) for i, child in enumerate(spec.routes)
        )
        return dataclasses.replace(node, routes=children)

    def _matchers(self, spec: _RouteSpec, where: str) -> tuple[Matcher, ...]:
        found: list[Matcher] = []
        for key, op in (("match", "="), ("match_re", "=~")):
            for label, value in getattr(spec, key).items():
                try:
                    found.append(self._route_matcher(label, op, value))
                except MatcherError as exc:
                    self.problems.append(f"{where}.{key}.{label}: {exc}")
        try:
            listed = parse_matchers(spec.matchers, f"{where}.matchers", allow_empty=True)
        except MatcherError as exc:
            self.problems.append(str(exc))
        else:
            for i, m in enumerate(listed):
                if m.label == "team":
                    self.problems.append(f"{where}.matchers[{i}].label: {_TEAM_NOT_MATCHABLE}")
            found.extend(listed)
        return tuple(found)

    @staticmethod
    def _route_matcher(label: str, op: str, value: str) -> Matcher:
        if label == "team":
            raise MatcherError(_TEAM_NOT_MATCHABLE, "label")
        return Matcher.of(label, op, value)

    def _windows(self) -> tuple[MaintenanceWindow, ...]:
        windows: list[MaintenanceWindow] = []
        names: set[str] = set()
        for i, window in enumerate(self.spec.maintenance_windows):
            where = f"maintenance_windows[{i}]"
            if window.name in names:
                self.problems.append(f"{where}.name: {window.name!r} is already a window")
            names.add(window.name)
            try:
                matchers = parse_matchers(window.matchers, f"{where}.matchers")
            except MatcherError as exc:
                self.problems.append(str(exc))
                continue
            schedule = window.schedule
            windows.append(
                MaintenanceWindow(
                    window.name,
                    matchers,
                    frozenset(schedule.weekdays),
                    schedule.start,
                    schedule.end,
                )
            )
        return tuple(windows)


_TEAM_NOT_MATCHABLE = (
    f"'team' comes from the route, routes cannot match on it; match on {', '.join(EVENT_LABELS)}"
)
