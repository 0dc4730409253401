"""Label matchers, silences and maintenance windows: what mutes an alert's notifications.

A matcher is ``{"label": ..., "op": ..., "value": ...}`` with ``op`` one of ``=``, ``!=``,
``=~`` and ``!~``; regular expressions match the whole value, like Alertmanager's. A label
the alert lacks has the value ``""``. An alert is matched by a list of matchers when it
matches every one of them.

A silence (stored in the ``silences`` table) mutes the alerts it matches between
``starts_at`` and ``ends_at``; a maintenance window (from the routing file, or stored in the
``maintenance_windows`` table through the API until it is ended) mutes them at fixed hours
of the week in the city's time zone (the city file; Asia/Shanghai for
Zhumadian). Muting only stops notifications: alert states are still recorded and published,
and an alert still firing when the mute ends is notified at its group's next interval (see
``rules/dispatch.py``).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cityiot.domain.catalogue import DISTRICTS, KINDS
from cityiot.domain.sun import CITY_TZ
from cityiot.rules.events import SEVERITIES
from cityiot.storage.tables.alerts import MaintenanceWindowRow, Silence
from cityiot.storage.writes import writing

log = logging.getLogger("cityiot.rules.silences")

SessionFactory = async_sessionmaker[AsyncSession]

# Labels of an alert: the event's own fields, and the team of the route that carries it.
LABELS = ("rule", "kind", "district", "severity", "vendor", "device_id", "team")
OPS = ("=", "!=", "=~", "!~")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_CREATED_BY_CHARS = 128
MAX_MATCHERS = 32

# Labels whose values are a closed set: an equality matcher on them must name a member
# (of the kinds and districts in force when it is made).
CLOSED_LABELS: dict[str, tuple[str, Callable[[], Iterable[str]]]] = {
    "kind": ("a kind", lambda: KINDS),
    "district": ("a district", lambda: DISTRICTS),
    "severity": ("a severity", lambda: SEVERITIES),
}


class MatcherError(ValueError):
    """A matcher is wrong; ``field`` is ``label``, ``op`` or ``value`` when one is to blame."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class SilenceError(ValueError):
    """A silence cannot be created as asked; the message says what to change."""


class WindowError(ValueError):
    """A maintenance window cannot be made as asked; ``field`` names the field at fault
    (``name``, ``weekdays``, ``start``, ``end``, ``matchers``…) and the message what to change."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def check_label_value(label: str, value: str) -> None:
    """Refuse a value a closed label (kind, district, severity) can never have."""
    if label in CLOSED_LABELS:
        what, current = CLOSED_LABELS[label]
        members = tuple(current())
        if value not in members:
            raise MatcherError(f"{value!r} is not {what} ({', '.join(members)})", "value")


@dataclass(frozen=True, slots=True)
class Matcher:
    """One validated label matcher. Build it with ``Matcher.of`` or ``parse_matchers``."""

    label: str
    op: str
    value: str
    regex: re.Pattern[str] | None = None

    @classmethod
    def of(cls, label: Any, op: Any, value: Any) -> Matcher:
        """A checked matcher; raises ``MatcherError`` naming the field at fault."""
        if not isinstance(label, str) or label not in LABELS:
            raise MatcherError(f"{label!r} is not a label ({', '.join(LABELS)})", "label")
        if not isinstance(op, str) or op not in OPS:
            raise MatcherError(f"{op!r} is not an operator ({', '.join(OPS)})", "op")
        if not isinstance(value, str):
            raise MatcherError(f"{value!r} is not a string; quote it", "value")
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(value)
            except re.error as exc:
                problem = f"{value!r} is not a valid regular expression ({exc})"
                raise MatcherError(problem, "value") from None
        elif label in CLOSED_LABELS:
            check_label_value(label, value)
        return cls(label, op, value, regex)

    def matches(self, labels: Mapping[str, Any]) -> bool:
        value = str(labels.get(self.label) or "")
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        assert self.regex is not None
        found = self.regex.fullmatch(value) is not None
        return found if self.op == "=~" else not found

    def to_dict(self) -> dict[str, str]:
        return {"label": self.label, "op": self.op, "value": self.value}

    def __str__(self) -> str:
        return f"{self.label}{self.op}{self.value!r}"


def parse_matchers(
    raw: Any, where: str = "matchers", *, allow_empty: bool = False
) -> tuple[Matcher, ...]:
    """Validate a list of ``{label, op, value}`` mappings (or ``Matcher``\\ s).

    Errors name the position, e.g. ``matchers[1].op: '==' is not an operator (=, !=, =~, !~)``.
    An empty list would match every alert, so it is refused unless ``allow_empty``.
    """
    if not isinstance(raw, list | tuple):
        raise MatcherError(f"{where}: expected a list of {{label, op, value}}, got {raw!r}")
    if not raw and not allow_empty:
        raise MatcherError(
            f"{where}: give at least one matcher (an empty list would match every alert)"
        )
    if len(raw) > MAX_MATCHERS:
        raise MatcherError(f"{where}: at most {MAX_MATCHERS} matchers, got {len(raw)}")
    matchers: list[Matcher] = []
    for i, item in enumerate(raw):
        if isinstance(item, Matcher):
            matchers.append(item)
            continue
        if not isinstance(item, Mapping):
            raise MatcherError(f"{where}[{i}]: expected {{label, op, value}}, got {item!r}")
        unknown = sorted(set(item) - {"label", "op", "value"})
        if unknown:
            raise MatcherError(
                f"{where}[{i}]: unknown field {unknown[0]!r} (a matcher has label, op, value)"
            )
        missing = [k for k in ("label", "op", "value") if k not in item]
        if missing:
            raise MatcherError(f"{where}[{i}].{missing[0]}: required")
        try:
            matchers.append(Matcher.of(item["label"], item["op"], item["value"]))
        except MatcherError as exc:
            raise MatcherError(f"{where}[{i}].{exc.field}: {exc}", exc.field) from None
    return tuple(matchers)


def matches(matchers: Sequence[Matcher | Mapping[str, Any]], labels: Mapping[str, Any]) -> bool:
    """True when ``labels`` satisfy every matcher (raw mappings are validated first)."""
    checked = parse_matchers(list(matchers), allow_empty=True)
    return all(m.matches(labels) for m in checked)


# --- silences --------------------------------------------------------------------------


def _as_datetime(value: dt.datetime | float, name: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise SilenceError(f"{name} has no time zone; give one (e.g. +08:00)")
        return value.astimezone(dt.UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    raise SilenceError(f"{name} must be a datetime or epoch seconds, got {value!r}")


async def create_silence(
    session_factory: SessionFactory,
    matchers: Sequence[Matcher | Mapping[str, Any]],
    starts_at: dt.datetime | float,
    ends_at: dt.datetime | float,
    created_by: str = "",
    comment: str = "",
) -> Silence:
    """Store a silence muting the alerts that match all ``matchers`` in [starts_at, ends_at).

    Raises ``MatcherError`` or ``SilenceError`` (both ``ValueError``) with what to change.
    """
    checked = parse_matchers(list(matchers))
    start = _as_datetime(starts_at, "starts_at")
    end = _as_datetime(ends_at, "ends_at")
    if end <= start:
        raise SilenceError(
            f"ends_at ({end.astimezone(CITY_TZ).isoformat()}) must be after "
            f"starts_at ({start.astimezone(CITY_TZ).isoformat()})"
        )
    if len(created_by) > MAX_CREATED_BY_CHARS:
        raise SilenceError(f"created_by is longer than {MAX_CREATED_BY_CHARS} characters")
    silence = Silence(
        id=uuid.uuid4().hex,
        matchers=[m.to_dict() for m in checked],
        starts_at=start,
        ends_at=end,
        created_by=created_by,
        comment=comment,
    )
    async with writing(session_factory) as session:
        session.add(silence)
    log.info(
        "event=silence_created id=%s matchers=%s ends_at=%s by=%s",
        silence.id,
        ",".join(str(m) for m in checked),
        end.isoformat(),
        created_by,
    )
    return silence


async def expire_silence(
    session_factory: SessionFactory, silence_id: str, now: dt.datetime | float
) -> Silence | None:
    """End a silence at ``now`` (a silence not yet started ends before it begins).

    Returns the silence, unchanged if it had already ended, or None if there is no such id.
    """
    when = _as_datetime(now, "now")
    async with writing(session_factory) as session:
        silence = await session.get(Silence, silence_id)
        if silence is None:
            return None
        if silence.ends_at > when:
            silence.ends_at = when
            if silence.starts_at > when:
                silence.starts_at = when
            log.info("event=silence_expired id=%s", silence_id)
    return silence


async def active_silences(
    session_factory: SessionFactory, now: dt.datetime | float
) -> list[Silence]:
    """The silences in force at ``now``: ``starts_at <= now < ends_at``."""
    when = _as_datetime(now, "now")
    async with session_factory() as session:
        result = await session.execute(
            select(Silence)
            .where(Silence.starts_at <= when, Silence.ends_at > when)
            .order_by(Silence.ends_at)
        )
        return list(result.scalars())


def silenced_by(silences: Iterable[Silence], labels: Mapping[str, Any]) -> list[str]:
    """Ids of the silences among ``silences`` that match ``labels``.

    A stored silence whose matchers no longer validate (edited by hand) matches nothing.
    """
    found = []
    for silence in silences:
        try:
            checked = parse_matchers(silence.matchers)
        except MatcherError as exc:
            log.warning("event=silence_unreadable id=%s error=%s", silence.id, exc)
            continue
        if all(m.matches(labels) for m in checked):
            found.append(silence.id)
    return found


# --- maintenance windows ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """Weekly hours, in the city's time zone (the city file; Asia/Shanghai for Zhumadian),
    during which the matching alerts are not notified.

    ``weekdays`` (0 = Monday) are the days a window *starts*; when ``end_s`` is not after
    ``start_s`` the window runs past midnight into the next day (Fri 23:00–03:00 covers
    early Saturday).
    """

    name: str
    matchers: tuple[Matcher, ...]
    weekdays: frozenset[int]
    start_s: int  # seconds after local midnight
    end_s: int  # seconds after local midnight, up to 86400 (24:00)

    def is_open(self, now: dt.datetime | float) -> bool:
        local = _as_datetime(now, "now").astimezone(CITY_TZ)
        second = local.hour * 3600 + local.minute * 60 + local.second
        today = local.weekday()
        if self.start_s < self.end_s:
            return today in self.weekdays and self.start_s <= second < self.end_s
        yesterday = (today - 1) % 7
        return (today in self.weekdays and second >= self.start_s) or (
            yesterday in self.weekdays and second < self.end_s
        )

    def covers(self, labels: Mapping[str, Any], now: dt.datetime | float) -> bool:
        return self.is_open(now) and all(m.matches(labels) for m in self.matchers)


def maintenance_window(
    windows: Iterable[MaintenanceWindow], labels: Mapping[str, Any], now: dt.datetime | float
) -> MaintenanceWindow | None:
    """The first window that is open at ``now`` and matches ``labels``, if any."""
    for window in windows:
        if window.covers(labels, now):
            return window
    return None


def is_in_maintenance(
    windows: Iterable[MaintenanceWindow], labels: Mapping[str, Any], now: dt.datetime | float
) -> bool:
    """True when a maintenance window mutes an alert with ``labels`` at ``now``."""
    return maintenance_window(windows, labels, now) is not None


# --- maintenance windows made through the API --------------------------------------------

MAX_WINDOW_NAME_CHARS = 128
_TIME_OF_DAY = re.compile(r"(\d{1,2}):(\d{2})")


def time_of_day(value: Any, where: str) -> int:
    """Seconds after local midnight of an ``"HH:MM"`` from ``"00:00"`` to ``"24:00"``."""
    found = _TIME_OF_DAY.fullmatch(value.strip()) if isinstance(value, str) else None
    if found is not None:
        hours, minutes = int(found[1]), int(found[2])
        if minutes < 60 and (hours < 24 or (hours, minutes) == (24, 0)):
            return hours * 3600 + minutes * 60
    raise WindowError(f'{value!r} is not a time of day ("HH:MM", "00:00" to "24:00")', where)


def _clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


def weekday_names(days: Iterable[int]) -> list[str]:
    """Day numbers (0 = Monday) as the names the API and the routing file use, in week order."""
    return [WEEKDAYS[d] for d in sorted(set(days))]


def check_window(
    name: Any, matchers: Any, weekdays: Any, start: Any, end: Any
) -> tuple[str, tuple[Matcher, ...], list[str], str, str]:
    """The window's fields checked and normalised: name, matchers, weekday names (week
    order), start and end as ``"HH:MM"``. Raises ``WindowError`` or ``MatcherError`` naming
    the field at fault."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_WINDOW_NAME_CHARS:
        raise WindowError(f"a name has 1 to {MAX_WINDOW_NAME_CHARS} characters", "name")
    checked = parse_matchers(matchers)
    if not isinstance(weekdays, list | tuple) or not weekdays:
        raise WindowError(f"give at least one day ({', '.join(WEEKDAYS)})", "weekdays")
    days: set[int] = set()
    for i, day in enumerate(weekdays):
        if not isinstance(day, str) or day.strip().lower() not in WEEKDAYS:
            raise WindowError(f"{day!r} is not a weekday ({', '.join(WEEKDAYS)})", f"weekdays[{i}]")
        days.add(WEEKDAYS.index(day.strip().lower()))
    start_s = time_of_day(start, "start")
    end_s = time_of_day(end, "end")
    if start_s == 86400:
        raise WindowError('"24:00" is the next day\'s "00:00"; write that', "start")
    if start_s == end_s:
        raise WindowError('equals start; for a whole day write "00:00" to "24:00"', "end")
    return name.strip(), checked, weekday_names(days), _clock(start_s), _clock(end_s)


def window_of(row: MaintenanceWindowRow) -> MaintenanceWindow:
    """The stored window as the dispatcher checks it; raises if it no longer validates."""
    name, matchers, days, start, end = check_window(
        row.name, row.matchers, row.weekdays, row.start, row.end
    )
    return MaintenanceWindow(
        name,
        matchers,
        frozenset(WEEKDAYS.index(d) for d in days),
        time_of_day(start, "start"),
        time_of_day(end, "end"),
    )


async def create_window(
    session_factory: SessionFactory,
    name: str,
    matchers: Sequence[Matcher | Mapping[str, Any]],
    weekdays: Sequence[str],
    start: str,
    end: str,
    created_by: str = "",
    comment: str = "",
) -> MaintenanceWindowRow:
    """Store a maintenance window, in force until it is ended.

    Raises ``WindowError`` or ``MatcherError`` (both ``ValueError``) with what to change.
    """
    name, checked, days, start, end = check_window(name, list(matchers), weekdays, start, end)
    if len(created_by) > MAX_CREATED_BY_CHARS:
        raise WindowError(f"longer than {MAX_CREATED_BY_CHARS} characters", "created_by")
    row = MaintenanceWindowRow(
        id=uuid.uuid4().hex,
        name=name,
        matchers=[m.to_dict() for m in checked],
        weekdays=days,
        start=start,
        end=end,
        created_by=created_by,
        comment=comment,
    )
    async with writing(session_factory) as session:
        session.add(row)
    log.info(
        "event=window_created id=%s name=%s matchers=%s days=%s hours=%s-%s by=%s",
        row.id,
        name,
        ",".join(str(m) for m in checked),
        ",".join(days),
        start,
        end,
        created_by,
    )
    return row


async def end_window(
    session_factory: SessionFactory, window_id: str, now: dt.datetime | float
) -> MaintenanceWindowRow | None:
    """End a stored window at ``now``: it mutes nothing from then on.

    Returns the window, unchanged if it had already ended, or None if there is no such id.
    """
    when = _as_datetime(now, "now")
    async with writing(session_factory) as session:
        row = await session.get(MaintenanceWindowRow, window_id)
        if row is None:
            return None
        if row.ended_at is None or row.ended_at > when:
            row.ended_at = when
            log.info("event=window_ended id=%s name=%s", window_id, row.name)
    return row


async def stored_windows(
    session_factory: SessionFactory, now: dt.datetime | float | None = None
) -> list[MaintenanceWindowRow]:
    """The stored windows in force at ``now`` (not ended by then), oldest first; all of
    them, ended ones too, when ``now`` is None."""
    stmt = select(MaintenanceWindowRow).order_by(
        MaintenanceWindowRow.created_at, MaintenanceWindowRow.id
    )
    if now is not None:
        when = _as_datetime(now, "now")
        stmt = stmt.where(
            (MaintenanceWindowRow.ended_at.is_(None)) | (MaintenanceWindowRow.ended_at > when)
        )
    async with session_factory() as session:
        return list((await session.scalars(stmt)).all())


async def windows_in_force(
    session_factory: SessionFactory, now: dt.datetime | float
) -> tuple[MaintenanceWindow, ...]:
    """The stored windows in force at ``now``, as ``MaintenanceWindow``\\ s.

    A stored window that no longer validates (edited by hand) is left out, with a warning.
    """
    windows: list[MaintenanceWindow] = []
    for row in await stored_windows(session_factory, now):
        try:
            windows.append(window_of(row))
        except ValueError as exc:
            log.warning("event=window_unreadable id=%s error=%s", row.id, exc)
    return tuple(windows)


@dataclass(frozen=True, slots=True)
class Mutes:
    """What may mute a notification at one moment: the silences in force and the stored
    maintenance windows in force (the routing file's windows are the router's)."""

    silences: list[Silence]
    windows: tuple[MaintenanceWindow, ...] = ()


async def active_mutes(session_factory: SessionFactory, now: dt.datetime | float) -> Mutes:
    """The silences and the stored maintenance windows in force at ``now``."""
    return Mutes(
        await active_silences(session_factory, now),
        await windows_in_force(session_factory, now),
    )
