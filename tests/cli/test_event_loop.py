"""The event loop of the long-running commands (``CITYIOT_EVENT_LOOP``, cityiot/cli/)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest
import uvloop
from pydantic import ValidationError

from cityiot.cli.common import run_until_signal
from cityiot.domain.settings import Settings


@pytest.fixture
def thresholds() -> Iterator[None]:
    """run_until_signal sets the collector's thresholds (cityiot/platform/gcpolicy.py): put them back."""
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def loop_of_a_stage(event_loop: str) -> asyncio.AbstractEventLoop:
    """The loop a stage run by ``run_until_signal`` finds itself on."""
    seen: list[asyncio.AbstractEventLoop] = []

    async def stage() -> None:
        seen.append(asyncio.get_running_loop())
        await asyncio.sleep(0.01)  # a timer on that loop, as every stage has

    run_until_signal(stage(), asyncio.Event(), Settings(event_loop=event_loop))
    (loop,) = seen
    assert loop.is_closed()  # and it is closed afterwards
    return loop


def test_a_stage_runs_on_uvloop_by_default_and_on_asyncios_loop_when_asked(
    thresholds: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CITYIOT_EVENT_LOOP", raising=False)
    assert Settings().event_loop == "uvloop"
    assert isinstance(loop_of_a_stage("uvloop"), uvloop.Loop)
    plain = loop_of_a_stage("asyncio")
    assert isinstance(plain, asyncio.BaseEventLoop) and not isinstance(plain, uvloop.Loop)
    monkeypatch.setenv("CITYIOT_EVENT_LOOP", "asyncio")
    assert Settings().event_loop == "asyncio"


def test_an_unknown_event_loop_is_refused_with_the_choices() -> None:
    with pytest.raises(ValidationError, match="'uvloop' or 'asyncio'"):
        Settings(event_loop="trio")
