"""Query and body values every router reads the same way."""

from __future__ import annotations

import datetime as dt

from api.problems import Problem
from cityiot.sun import CITY_TZ

# Free text: anything but NUL, which PostgreSQL can neither store nor compare.
TEXT = r"^[^\x00]*$"


def city_instant(value: dt.datetime | None, name: str) -> dt.datetime | None:
    """A time given by a caller, in UTC; one without an offset is Zhumadian's (+08:00)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=CITY_TZ)
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise Problem(
            422, f"{name} is out of range; give a time like 2026-11-23T08:00:00+08:00"
        ) from None
