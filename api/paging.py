"""Cursor pagination: every list answers ``{"items": [...], "next_cursor": ...}``.

A cursor is the sort key of the last item of a page, opaque to the client (URL-safe
base64 of JSON); pages stay stable while rows are added.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import Select, and_, or_

from api.problems import Problem

T = TypeVar("T")

Limit = Annotated[int, Query(ge=1, le=1000, description="items per page (1-1000)")]
Cursor = Annotated[
    str | None,
    Query(max_length=512, description="next_cursor of the previous page; omit for the first"),
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor(values: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(values))).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != size:
        raise Problem(400, "cursor is not one this API gave out; pass next_cursor unchanged")
    if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in values):
        raise Problem(400, "cursor is not one this API gave out; pass next_cursor unchanged")
    return values


def after(
    stmt: Select[Any], columns: Sequence[Any], cursor: str | None, *, descending: bool = False
) -> Select[Any]:
    """``stmt`` ordered by ``columns`` and continuing after ``cursor`` (keyset pagination)."""
    if cursor is not None:
        values = decode_cursor(cursor, len(columns))
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
