"""Matchers, silences on a real SQLite file (creation, activity, expiry) and maintenance
windows in Zhumadian's time, including windows that cross midnight."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cityiot.rules.routing import parse_routing
from cityiot.rules.silences import (
    Matcher,
    MatcherError,
    SessionFactory,
    SilenceError,
    WindowError,
    active_mutes,
    active_silences,
    create_silence,
    create_window,
    end_window,
    expire_silence,
    is_in_maintenance,
    maintenance_window,
    matches,
    parse_matchers,
    silenced_by,
)
from cityiot.storage.engine import make_engine, migrate, sessionmaker
from cityiot.storage.tables.alerts import MaintenanceWindowRow

CST = dt.timezone(dt.timedelta(hours=8))
T0 = dt.datetime(2025, 11, 24, 10, 0, tzinfo=CST)  # a Monday morning in Zhumadian
HOUR = dt.timedelta(hours=1)

MANHOLE = {
    "rule": "manhole_cover_open",
    "kind": "manhole",
    "district": "yicheng",
    "severity": "critical",
    "vendor": "acme",
    "device_id": "mh-0042",
    "team": "urban",
}


def m(label: str, op: str, value: str) -> dict[str, str]:
    return {"label": label, "op": op, "value": value}


# --- matchers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("matcher", "expected"),
    [
        (m("district", "=", "yicheng"), True),
        (m("district", "=", "kaifaqu"), False),
        (m("district", "!=", "kaifaqu"), True),
        (m("district", "!=", "yicheng"), False),
        (m("device_id", "=~", "mh-00.*"), True),
        (m("device_id", "=~", "mh-00"), False),  # the whole value must match
        (m("device_id", "=~", "0042"), False),
        (m("district", "=~", "yicheng|kaifaqu"), True),
        (m("device_id", "!~", "mh-.*"), False),
        (m("device_id", "!~", "sl-.*"), True),
        (m("team", "=", "urban"), True),
        (m("vendor", "=~", ""), False),
    ],
)
def test_each_operator(matcher: dict[str, str], expected: bool) -> None:
    assert matches([matcher], MANHOLE) is expected


def test_all_matchers_must_hold_and_absent_labels_are_empty() -> None:
    both = [m("district", "=", "yicheng"), m("severity", "=~", "critical|major")]
    assert matches(both, MANHOLE)
    assert not matches([*both, m("kind", "=", "water")], MANHOLE)
    no_vendor = {k: v for k, v in MANHOLE.items() if k != "vendor"}
    assert matches([m("vendor", "=", "")], no_vendor)
    assert matches([m("vendor", "!~", ".+")], no_vendor)
    assert matches([], MANHOLE)  # nothing to disagree with
    assert matches([Matcher.of("kind", "=", "manhole")], MANHOLE)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (
            [m("colour", "=", "red")],
            "matchers[0].label: 'colour' is not a label (rule, kind, district, severity, vendor, device_id, team)",
        ),
        (
            [m("district", "==", "yicheng")],
            "matchers[0].op: '==' is not an operator (=, !=, =~, !~)",
        ),
        (
            [m("kind", "=", "manhole"), m("device_id", "=~", "mh-(")],
            "matchers[1].value: 'mh-(' is not a valid regular expression (missing ), unterminated subpattern at position 3)",
        ),
        (
            [m("severity", "=", "urgent")],
            "matchers[0].value: 'urgent' is not a severity (critical, major, minor, warning)",
        ),
        (
            [m("kind", "!=", "lamp")],
            "matchers[0].value: 'lamp' is not a kind (drainage, gas, hydrant, manhole, parking, "
            "streetlight, tunnel, water, waterlogging)",
        ),
        (
            [{"label": "device_id", "op": "=", "value": 42}],
            "matchers[0].value: 42 is not a string; quote it",
        ),
        ([{"label": "device_id", "op": "="}], "matchers[0].value: required"),
        (
            [{"label": "device_id", "op": "=", "value": "x", "note": "y"}],
            "matchers[0]: unknown field 'note' (a matcher has label, op, value)",
        ),
        (["district=yicheng"], "matchers[0]: expected {label, op, value}, got 'district=yicheng'"),
        (
            {"district": "yicheng"},
            "matchers: expected a list of {label, op, value}, got {'district': 'yicheng'}",
        ),
        ([], "matchers: give at least one matcher (an empty list would match every alert)"),
    ],
)
def test_bad_matchers_are_refused_with_their_position(raw: Any, problem: str) -> None:
    with pytest.raises(MatcherError) as caught:
        parse_matchers(raw)
    assert str(caught.value) == problem


def test_regex_values_are_not_checked_against_closed_sets() -> None:
    assert parse_matchers([m("kind", "=~", "man.*")])[0].regex is not None


# --- silences in the database --------------------------------------------------------------


@pytest.fixture
async def session_factory(sqlite_url: str) -> AsyncIterator[SessionFactory]:
    await migrate(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        yield sessionmaker(engine)
    finally:
        await engine.dispose()


async def test_a_silence_is_active_between_its_start_and_end(
    session_factory: SessionFactory,
) -> None:
    silence = await create_silence(
        session_factory,
        [m("device_id", "=", "mh-0042")],
        T0,
        T0 + 2 * HOUR,
        "operator-wang",
        "cover being replaced",
    )
    assert len(silence.id) == 32
    assert silence.matchers == [m("device_id", "=", "mh-0042")]

    async def active_at(when: dt.datetime | float) -> list[str]:
        return [s.id for s in await active_silences(session_factory, when)]

    assert await active_at(T0 - dt.timedelta(seconds=1)) == []
    assert await active_at(T0) == [silence.id]
    assert await active_at((T0 + HOUR).timestamp()) == [silence.id]  # epoch seconds too
    assert await active_at(T0 + 2 * HOUR) == []  # ends_at is exclusive
    stored = (await active_silences(session_factory, T0))[0]
    assert stored.starts_at == T0 and stored.ends_at == T0 + 2 * HOUR
    assert (stored.created_by, stored.comment) == ("operator-wang", "cover being replaced")
    assert silenced_by([stored], MANHOLE) == [silence.id]
    assert silenced_by([stored], {**MANHOLE, "device_id": "mh-0043"}) == []


async def test_expiry_ends_a_silence_now(session_factory: SessionFactory) -> None:
    running = await create_silence(
        session_factory, [m("district", "=", "yicheng")], T0, T0 + 4 * HOUR
    )
    future = await create_silence(
        session_factory, [m("kind", "=", "water")], T0 + 2 * HOUR, T0 + 3 * HOUR
    )
    now = T0 + HOUR
    expired = await expire_silence(session_factory, running.id, now)
    assert expired is not None and expired.ends_at == now
    assert await active_silences(session_factory, now) == []
    assert await active_silences(session_factory, now - dt.timedelta(minutes=1)) != []
    # a silence not begun yet ends before it starts: it never mutes anything
    expired_future = await expire_silence(session_factory, future.id, now)
    assert expired_future is not None
    assert expired_future.starts_at == expired_future.ends_at == now
    assert await active_silences(session_factory, T0 + 2.5 * HOUR) == []
    # expiring again changes nothing; an unknown id is None
    again = await expire_silence(session_factory, running.id, now + HOUR)
    assert again is not None and again.ends_at == now
    assert await expire_silence(session_factory, "0" * 32, now) is None


async def test_bad_silences_are_refused(session_factory: SessionFactory) -> None:
    with pytest.raises(
        SilenceError, match=r"ends_at \(2025-11-24T10:00:00\+08:00\) must be after starts_at"
    ):
        await create_silence(session_factory, [m("kind", "=", "manhole")], T0, T0)
    with pytest.raises(SilenceError, match="starts_at has no time zone"):
        await create_silence(
            session_factory, [m("kind", "=", "manhole")], dt.datetime(2025, 11, 24), T0 + HOUR
        )
    with pytest.raises(MatcherError, match="give at least one matcher"):
        await create_silence(session_factory, [], T0, T0 + HOUR)
    with pytest.raises(MatcherError, match=r"matchers\[0\].value: 'x\[' is not a valid regular"):
        await create_silence(session_factory, [m("rule", "=~", "x[")], T0, T0 + HOUR)
    assert await active_silences(session_factory, T0 + dt.timedelta(minutes=30)) == []


# --- maintenance windows -------------------------------------------------------------------


def windows(schedule: dict[str, Any], matchers: list[dict[str, str]] | None = None) -> Any:
    document = {
        "route": {"receiver": "ops"},
        "receivers": [{"name": "ops"}],
        "maintenance_windows": [
            {
                "name": "yicheng-night-works",
                "matchers": matchers or [m("district", "=", "yicheng")],
                "schedule": schedule,
            }
        ],
    }
    return parse_routing(document).maintenance_windows


def at(day: int, hour: int, minute: int = 0) -> float:
    """Epoch seconds of 2025-11-<day> hh:mm in Zhumadian (the 24th is a Monday)."""
    return dt.datetime(2025, 11, day, hour, minute, tzinfo=CST).timestamp()


def test_a_window_on_weekday_nights_in_city_time() -> None:
    night = windows(
        {"weekdays": ["mon", "tue", "wed", "thu", "fri"], "start": "01:00", "end": "05:00"}
    )
    assert is_in_maintenance(night, MANHOLE, at(24, 1, 0))
    assert is_in_maintenance(night, MANHOLE, at(24, 4, 59))
    assert not is_in_maintenance(night, MANHOLE, at(24, 5, 0))  # end is exclusive
    assert not is_in_maintenance(night, MANHOLE, at(24, 0, 59))
    assert not is_in_maintenance(night, MANHOLE, at(23, 2, 0))  # Sunday
    assert not is_in_maintenance(night, {**MANHOLE, "district": "kaifaqu"}, at(24, 2, 0))
    # 02:00 in Zhumadian is 18:00 UTC the day before: the window follows city time
    utc_2am = dt.datetime(2025, 11, 24, 2, 0, tzinfo=dt.UTC)
    assert not is_in_maintenance(night, MANHOLE, utc_2am)
    assert is_in_maintenance(night, MANHOLE, utc_2am - dt.timedelta(hours=8))
    window = maintenance_window(night, MANHOLE, at(25, 3, 0))
    assert window is not None and window.name == "yicheng-night-works"


def test_a_window_crossing_midnight_belongs_to_the_day_it_starts() -> None:
    friday_night = windows({"weekdays": ["fri"], "start": "23:00", "end": "03:00"})
    assert not is_in_maintenance(friday_night, MANHOLE, at(28, 22, 59))  # Friday
    assert is_in_maintenance(friday_night, MANHOLE, at(28, 23, 0))
    assert is_in_maintenance(friday_night, MANHOLE, at(29, 0, 0))  # Saturday, small hours
    assert is_in_maintenance(friday_night, MANHOLE, at(29, 2, 59))
    assert not is_in_maintenance(friday_night, MANHOLE, at(29, 3, 0))
    assert not is_in_maintenance(friday_night, MANHOLE, at(29, 23, 30))  # Saturday night
    assert not is_in_maintenance(friday_night, MANHOLE, at(28, 1, 0))  # Friday's small hours
    # Sunday night's window runs into Monday (the week wraps)
    sunday_night = windows({"weekdays": ["sun"], "start": "22:00", "end": "06:00"})
    assert is_in_maintenance(sunday_night, MANHOLE, at(24, 5, 0))
    assert not is_in_maintenance(sunday_night, MANHOLE, at(25, 5, 0))


def test_whole_days_and_every_day_by_default() -> None:
    all_day = windows({"weekdays": ["sat", "sun"], "start": "00:00", "end": "24:00"})
    assert is_in_maintenance(all_day, MANHOLE, at(29, 0, 0))
    assert is_in_maintenance(all_day, MANHOLE, at(30, 23, 59))
    assert not is_in_maintenance(all_day, MANHOLE, at(24, 0, 0))
    daily = windows(
        {"start": "12:00", "end": "13:00"},
        [m("kind", "=", "streetlight"), m("district", "=~", "yicheng|kaifaqu")],
    )
    lamp = {**MANHOLE, "kind": "streetlight", "district": "kaifaqu"}
    assert all(is_in_maintenance(daily, lamp, at(day, 12, 30)) for day in range(24, 31))
    assert not is_in_maintenance(daily, MANHOLE, at(24, 12, 30))


# --- maintenance windows made through the API ------------------------------------------------


async def test_a_stored_window_mutes_at_its_hours_until_it_is_ended(
    session_factory: SessionFactory,
) -> None:
    night = await create_window(
        session_factory,
        " yicheng-night-works ",
        [m("district", "=", "yicheng")],
        ["fri", "Mon"],
        "23:00",
        "3:00",
        "operator-wang",
        "cabling",
    )
    assert (night.name, night.weekdays, night.start, night.end) == (
        "yicheng-night-works",
        ["mon", "fri"],
        "23:00",
        "03:00",
    )
    mutes = await active_mutes(session_factory, at(24, 12))
    assert mutes.silences == [] and [w.name for w in mutes.windows] == ["yicheng-night-works"]
    assert is_in_maintenance(mutes.windows, MANHOLE, at(25, 2))  # Monday night, into Tuesday
    assert not is_in_maintenance(mutes.windows, MANHOLE, at(26, 2))  # no window on Tuesday
    assert not is_in_maintenance(mutes.windows, {**MANHOLE, "district": "xiping"}, at(25, 2))

    ended = await end_window(session_factory, night.id, at(24, 12))
    assert ended is not None and ended.ended_at == dt.datetime.fromtimestamp(at(24, 12), dt.UTC)
    assert (await active_mutes(session_factory, at(24, 12))).windows == ()
    assert [w.name for w in (await active_mutes(session_factory, at(24, 11))).windows] == [
        "yicheng-night-works"
    ]  # still in force before its end
    again = await end_window(session_factory, night.id, at(25, 12))
    assert again is not None and again.ended_at == ended.ended_at
    assert await end_window(session_factory, "0" * 32, at(24, 12)) is None


async def test_a_stored_window_edited_by_hand_into_nonsense_mutes_nothing(
    session_factory: SessionFactory,
) -> None:
    window = await create_window(
        session_factory, "works", [m("kind", "=", "manhole")], ["mon"], "01:00", "05:00"
    )
    async with session_factory() as session:
        row = await session.get(MaintenanceWindowRow, window.id)
        assert row is not None
        row.start = "25:00"
        await session.commit()
    assert (await active_mutes(session_factory, at(24, 2))).windows == ()


@pytest.mark.parametrize(
    "change,message",
    [
        ({"name": " "}, "name: a name has 1 to 128 characters"),
        ({"weekdays": []}, "weekdays: give at least one day"),
        ({"weekdays": ["mon", "funday"]}, r"weekdays\[1\]: 'funday' is not a weekday"),
        ({"start": "7"}, "start: '7' is not a time of day"),
        ({"end": "24:01"}, "end: '24:01' is not a time of day"),
        ({"start": "24:00"}, 'start: "24:00" is the next day\'s "00:00"'),
        ({"start": "05:00"}, "end: equals start"),
        ({"matchers": [m("district", "=", "atlantis")]}, r"matchers\[0\].value: 'atlantis'"),
        ({"matchers": []}, "matchers: give at least one matcher"),
    ],
)
async def test_bad_windows_are_refused_naming_the_field(
    session_factory: SessionFactory, change: dict[str, Any], message: str
) -> None:
    fields: dict[str, Any] = {
        "name": "works",
        "matchers": [m("kind", "=", "manhole")],
        "weekdays": ["mon"],
        "start": "01:00",
        "end": "05:00",
    }
    with pytest.raises((WindowError, MatcherError), match=message):
        await create_window(session_factory, **{**fields, **change})
    assert (await active_mutes(session_factory, at(24, 2))).windows == ()
