"""``cityiot docs``: pages generated from the code, and a check that committed ones are fresh."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cityiot.cli.app import docs_app
from cityiot.cli.common import err, load_settings


@docs_app.command("access-standard")
def docs_access_standard(
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Change nothing; exit 1 naming each page whose tables are stale."
        ),
    ] = False,
    docs_dir: Annotated[
        Path, typer.Option(help="Folder holding access-standard.zh.md and access-standard.en.md.")
    ] = Path("docs"),
) -> None:
    """Write the kinds' metric and attribute tables and the city's districts into the vendors'
    access standard pages (between <!-- metrics:begin --> and <!-- metrics:end -->), from the
    kinds and the city in force (shipped, CITYIOT_KINDS_PATH, CITYIOT_CITY_PATH)."""
    from cityiot.cli.accessdoc import AccessDocError, refresh

    load_settings()

    def say(text: str) -> None:
        # One line each, never wrapped: CI logs and scripts look for the paths.
        err.print(text, soft_wrap=True, markup=False, highlight=False)

    try:
        states = refresh(docs_dir, write=not check)
    except AccessDocError as exc:
        say(f"error: {exc}")
        raise typer.Exit(1) from None
    except OSError as exc:
        say(f"error: cannot write the access standard pages in {docs_dir}: {exc}")
        raise typer.Exit(1) from None
    stale = [state.path for state in states if not state.current]
    if check:
        for path in stale:
            say(f"{path} is stale: run cityiot docs access-standard")
        if stale:
            raise typer.Exit(1)
        say(f"{len(states)} pages up to date")
        return
    for path in stale:
        print(path)
    say(f"{len(stale)} of {len(states)} pages rewritten")
