"""Cursor pagination: every list answers ``{"items": [...], "next_cursor": ...}``.

A cursor is the sort key of the last item of a page, opaque to the client (URL-safe
base64 of JSON); pages stay stable while rows are added.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Sequence
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import BigInteger, DateTime, Integer, Select, String, TypeDecorator, and_, or_

from cityiot.api.problems import Problem

T = TypeVar("T")
# Any SELECT, whatever its columns (SQLAlchemy 2.1 types a Select by its column tuple).
AnySelect = Select[*tuple[Any, ...]]
S = TypeVar("S", bound=AnySelect)

Limit = Annotated[int, Query(ge=1, le=1000, description="items per page (1-1000)")]
Cursor = Annotated[
    str | None,
    Query(max_length=512, description="next_cursor of the previous page; omit for the first"),
]


_BAD = "cursor is not one this API gave out; pass next_cursor unchanged"


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor(values: Sequence[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, dt.datetime) else v for v in values]
    return base64.urlsafe_b64encode(orjson.dumps(plain)).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != size:
        raise Problem(400, _BAD)
    if not all(_plausible(v) for v in values):
        raise Problem(400, _BAD)
    return values


def _plausible(value: Any) -> bool:
    # What a cursor can hold: text without NUL, and 64-bit numbers.
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, float)


def _typed(column: Any, value: Any) -> Any:
    """A cursor value as the column compares it; 400 when it cannot be one of its values."""
    sql_type = column.type.impl if isinstance(column.type, TypeDecorator) else column.type
    if isinstance(sql_type, DateTime):
        try:
            when = dt.datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise Problem(400, _BAD) from None
        if when.tzinfo is None:
            raise Problem(400, _BAD)
        return when
    if isinstance(sql_type, Integer):
        limit = 2**63 if isinstance(sql_type, BigInteger) else 2**31
        if not isinstance(value, int) or not -limit <= value < limit:
            raise Problem(400, _BAD)
    elif isinstance(sql_type, String) and not isinstance(value, str):
        raise Problem(400, _BAD)
    return value


def after(stmt: S, columns: Sequence[Any], cursor: str | None, *, descending: bool = False) -> S:
    """``stmt`` ordered by ``columns`` and continuing after ``cursor`` (keyset pagination).

    Cursor values come from :func:`page_of`'s ``key``; datetimes travel as ISO text.
    """
    if cursor is not None:
        values = [
            _typed(c, v) for c, v in zip(columns, decode_cursor(cursor, len(columns)), strict=True)
        ]
        # (a, b) > (x, y)  ==  a > x or (a = x and b > y), spelled out for SQLite and PostgreSQL
        clauses = []
        for i, column in enumerate(columns):
            equal = [columns[j] == values[j] for j in range(i)]
            beyond = column < values[i] if descending else column > values[i]
            clauses.append(and_(*equal, beyond))
        stmt = stmt.where(or_(*clauses))
    order = [c.desc() if descending else c.asc() for c in columns]
    return stmt.order_by(*order)


def page_of(rows: Sequence[Any], limit: int, key: Any, convert: Any) -> dict[str, Any]:
    """The page body from ``limit + 1`` fetched rows: ``key(row)`` gives the cursor values."""
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [convert(r) for r in rows],
        "next_cursor": encode_cursor(key(rows[-1])) if more and rows else None,
    }
