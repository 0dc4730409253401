"""``cityiot users``: people's accounts from the command line (the first administrator's
account, before anyone can sign in; DESIGN §10)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from cityiot.cli.app import users_app
from cityiot.cli.common import err, fail, load_model_from_database, load_settings
from cityiot.cli.keys import _names, field_teams

T = TypeVar("T")


def _with_store(work: Callable[[Any], Awaitable[T]]) -> T:
    """``work(sessions)`` against the migrated SQL store of the settings."""
    from cityiot.storage.engine import make_engine, migrate, sessionmaker

    settings = load_settings()

    async def main() -> T:
        await migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            return await work(sessionmaker(engine))
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _password_from_stdin() -> str:
    """The password on standard input: its first line, without the line ending."""
    if sys.stdin.isatty():
        err.print("password (then Enter): ", end="")
    line = sys.stdin.readline()
    password = line.rstrip("\r\n")
    if not password:
        fail("--password-stdin: standard input held no password; pipe one in (one line)")
    return password


Username = Annotated[str, typer.Argument(help="The username people sign in with.")]


@users_app.command("add")
def users_add(
    username: Username,
    role: Annotated[
        str, typer.Option(help="admin, operator, field, department (read-only) or vendor.")
    ],
    name: Annotated[str, typer.Option(help="The person's name as shown, e.g. 张伟.")] = "",
    kinds: Annotated[
        str | None, typer.Option(help="Department accounts: kinds granted, comma-separated.")
    ] = None,
    districts: Annotated[
        str | None,
        typer.Option(help="Department accounts: districts granted, comma-separated."),
    ] = None,
    vendor: Annotated[str | None, typer.Option(help="Vendor accounts: the vendor id.")] = None,
    team: Annotated[
        list[str] | None,
        typer.Option("--team", help="Field accounts: a team of the routing file; repeatable."),
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the password (at least 12 characters) from standard input. Without "
            "it a password is made and printed alone on stdout.",
        ),
    ] = False,
) -> None:
    """Create a person's account with the role and grant of an API key of that role."""
    from cityiot.api.people import AccountError, create_user, new_password

    settings = load_settings()
    if kinds is not None:
        load_model_from_database(settings)
    known = field_teams(settings) if role == "field" else []
    made = None if password_stdin else new_password()
    password = _password_from_stdin() if password_stdin else made or ""

    async def work(sessions: Any) -> Any:
        return await create_user(
            sessions,
            username,
            role,
            password,
            display_name=name,
            kinds=_names(kinds),
            districts=_names(districts),
            vendor=vendor,
            teams=_names(",".join(team)) if team else None,
            known_teams=known,
        )

    try:
        row = _with_store(work)
    except AccountError as exc:
        fail(str(exc))
    if made is not None:
        print(made)
    shown = " (the password above: give it to them, it is not shown again)" if made else ""
    err.print(f"account {row.username} created: role={row.role}{shown}")


@users_app.command("list")
def users_list() -> None:
    """The accounts: username, role, state (active, locked, disabled), grant, name."""
    from cityiot.api.people import list_users, locked_until
    from cityiot.storage.utc import utcnow

    now = utcnow()
    for row in _with_store(list_users):
        state = (
            "disabled"
            if row.disabled_at
            else "locked"
            if locked_until(row, now) is not None
            else "active"
        )
        grant = ",".join(row.kinds or ["*"]) + "/" + ",".join(row.districts or ["*"])
        extra = row.vendor_id or ",".join(row.teams or []) or "-"
        print(f"{row.username}\t{row.role}\t{state}\t{grant}\t{extra}\t{row.display_name}")


def _change(username: str, change: Any, done: str) -> None:
    from cityiot.api.people import AccountError, update_user

    async def work(sessions: Any) -> Any:
        return await update_user(sessions, username, change)

    try:
        row = _with_store(work)
    except AccountError as exc:
        fail(str(exc))
    if row is None:
        fail(f"no account {username!r}; cityiot users list shows them")
    err.print(f"account {username}: {done}")


@users_app.command("password")
def users_password(
    username: Username,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the new password from standard input; else one is made and printed.",
        ),
    ] = False,
) -> None:
    """Set a new password (the account's sessions end)."""
    from cityiot.api.people import Change, new_password

    made = None if password_stdin else new_password()
    password = _password_from_stdin() if password_stdin else made or ""
    _change(username, Change(password=password), "password set; its sessions ended")
    if made is not None:
        print(made)


@users_app.command("disable")
def users_disable(username: Username) -> None:
    """Stop the account signing in (its sessions end at once)."""
    from cityiot.api.people import Change

    _change(username, Change(disabled=True), "disabled; its sessions ended")


@users_app.command("enable")
def users_enable(username: Username) -> None:
    """Let a disabled account sign in again."""
    from cityiot.api.people import Change

    _change(username, Change(disabled=False), "enabled")


@users_app.command("unlock")
def users_unlock(username: Username) -> None:
    """Lift the lock that failed sign-ins put on the account."""
    from cityiot.api.people import Change

    _change(username, Change(unlock=True), "unlocked")
