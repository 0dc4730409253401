"""Waiting in tests: for an event, never for a time. The timeouts are safety nets."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

What = str | Callable[[], str]


def _timed_out(timeout_s: float, what: What) -> AssertionError:
    return AssertionError(f"not within {timeout_s} s: {what() if callable(what) else what}")


async def until(
    check: Callable[[], T | None | Awaitable[T | None]],
    timeout_s: float = 10.0,
    what: What = "the condition",
    every_s: float = 0.02,
) -> T:
    """Poll ``check`` (plain or async: another thread's state, an HTTP answer) until it
    returns something true, and return that; fail naming ``what`` (a text, or a function
    that describes the state at the timeout) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result: Any = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise _timed_out(timeout_s, what)
        await asyncio.sleep(every_s)


def until_sync(
    check: Callable[[], T | None],
    timeout_s: float = 10.0,
    what: What = "the condition",
    every_s: float = 0.02,
) -> T:
    """``until`` for code without an event loop (a test thread, a subprocess's log): it
    sleeps the thread between the checks."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise _timed_out(timeout_s, what)
        time.sleep(every_s)


def wait_for(
    done: Callable[[], object],
    seconds: float,
    what: str,
    detail: Callable[[], str] = lambda: "",
    every_s: float = 0.05,
) -> float:
    """``until_sync`` for a test that reports the wait: fail naming ``what`` and then
    ``detail()`` (the state at the timeout) after ``seconds``; return the seconds waited."""
    started = time.monotonic()
    until_sync(done, seconds, lambda: f"{what}. {detail()}", every_s)
    return time.monotonic() - started
