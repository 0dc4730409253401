"""Waiting in tests: for an event, never for a time. The timeouts are safety nets."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def until(
    check: Callable[[], T | Awaitable[T]],
    timeout_s: float = 10.0,
    what: str = "the condition",
    every_s: float = 0.02,
) -> T:
    """Poll ``check`` (plain or async: another thread's state, an HTTP answer) until it
    returns something true, and return that; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result: Any = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(every_s)
