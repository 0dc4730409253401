"""What each city-scale section's own command does once its options are read: run it under
a status line, print its table, write its figures as JSON, exit 1 when they are not valid."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson
import typer
from rich.console import Console


class Result(Protocol):
    def as_dict(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=Result)


def run_section(
    run: Callable[[Callable[[str], None]], R],
    show: Callable[[R, Console], None],
    out: Path | None,
) -> None:
    """``run(say)`` under a status line, ``show`` its result, write it to ``out``."""
    with Console(stderr=True).status("starting…") as status:
        result = run(lambda text: status.update(text))
    show(result, Console())
    as_dict: Any = result.as_dict
    if out is not None:
        out.write_bytes(orjson.dumps(as_dict(), option=orjson.OPT_INDENT_2))
    if not getattr(result, "ok", True):
        raise typer.Exit(1)
