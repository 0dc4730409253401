"""``cityiot users …`` (DESIGN §10): the first administrator's account before anyone can sign
in, with the password from standard input or made and printed alone on stdout (as an operator
runs it, a process of its own); list, password, disable, enable, unlock (in this process, as
the same command). Each account is then checked by signing in through the platform's own
session book. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

from typer.testing import CliRunner

from cityiot.api.people import LOCK_AFTER, SessionBook, SignInRefused
from cityiot.cli import app
from cityiot.storage.engine import make_engine, sessionmaker
from tests.operator_files import run_cli

PASSWORD = "night shift duty officer"


def users(db_url: str, *args: str, stdin: str | None = None) -> Any:
    """``cityiot users ARGS`` as its own process."""
    return run_cli("users", *args, env={"CITYIOT_DATABASE_URL": db_url}, stdin=stdin)


class Ran:
    """What an in-process run answered, named as a finished process's."""

    def __init__(self, db_url: str, *args: str, stdin: str | None = None) -> None:
        result = CliRunner().invoke(
            app, ["users", *args], input=stdin, env={"CITYIOT_DATABASE_URL": db_url}
        )
        self.returncode = result.exit_code
        self.stdout = result.stdout
        self.stderr = " ".join(result.stderr.split())  # the console wraps lines


def sign_in(db_url: str, username: str, password: str, times: int = 1) -> list[Any]:
    """Each attempt's outcome: the role signed in with, or the refusal's status."""

    async def run() -> list[Any]:
        engine = make_engine(db_url)
        try:
            book = SessionBook(sessionmaker(engine))
            outcomes: list[Any] = []
            for _ in range(times):
                try:
                    outcomes.append((await book.sign_in(username, password, "cli-test")).user.role)
                except SignInRefused as exc:
                    outcomes.append(exc.status)
            return outcomes
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_an_administrator_account_from_the_command_line(db_url: str) -> None:
    made = users(
        db_url, "add", "duty.officer", "--role", "admin", "--name", "值班员", "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert made.stdout == ""  # the password was given: nothing to print
    assert "account duty.officer created: role=admin" in made.stderr
    assert sign_in(db_url, "duty.officer", PASSWORD) == ["admin"]

    crew = users(db_url, "add", "crew.one", "--role", "field", "--team", "urban")
    assert crew.returncode == 0, crew.stderr
    (printed,) = crew.stdout.splitlines()  # a made password, alone on stdout
    assert len(printed) >= 12 and printed not in crew.stderr
    assert sign_in(db_url, "crew.one", printed) == ["field"]

    listed = users(db_url, "list")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [
        ("crew.one", "field", "active", "urban"),
        ("duty.officer", "admin", "active", "-"),
    ]
    assert rows[1][5] == "值班员"


def test_refusals_say_what_to_change(db_url: str) -> None:
    short = Ran(db_url, "add", "a.b", "--role", "operator", "--password-stdin", stdin="short\n")
    assert short.returncode == 1 and "at least 12" in short.stderr
    empty = Ran(db_url, "add", "a.b", "--role", "operator", "--password-stdin", stdin="")
    assert empty.returncode == 1 and "standard input held no password" in empty.stderr
    field = Ran(db_url, "add", "a.b", "--role", "field")
    assert field.returncode == 1 and "name at least one with --team" in field.stderr
    bad = Ran(db_url, "add", "Not A Name", "--role", "operator")
    assert bad.returncode == 1 and "is not 1–64 lower-case letters" in bad.stderr
    unknown = Ran(db_url, "unlock", "nobody")
    assert unknown.returncode == 1 and "no account 'nobody'" in unknown.stderr
    assert Ran(db_url, "list").stdout == ""  # nothing was made


def test_lock_unlock_password_disable_enable(db_url: str) -> None:
    added = Ran(db_url, "add", "li.na", "--role", "operator", "--password-stdin", stdin=PASSWORD)
    assert added.returncode == 0, added.stderr
    outcomes = sign_in(db_url, "li.na", "a wrong password", times=LOCK_AFTER + 1)
    assert outcomes == [401] * LOCK_AFTER + [423]
    assert Ran(db_url, "list").stdout.split("\t")[2] == "locked"
    unlocked = Ran(db_url, "unlock", "li.na")
    assert unlocked.returncode == 0 and "unlocked" in unlocked.stderr
    assert sign_in(db_url, "li.na", PASSWORD) == ["operator"]

    new = Ran(db_url, "password", "li.na")
    (password,) = new.stdout.splitlines()
    assert sign_in(db_url, "li.na", PASSWORD) == [401]
    assert sign_in(db_url, "li.na", password) == ["operator"]
    assert Ran(db_url, "disable", "li.na").returncode == 0
    assert sign_in(db_url, "li.na", password) == [401]
    assert Ran(db_url, "list").stdout.split("\t")[2] == "disabled"
    assert Ran(db_url, "enable", "li.na").returncode == 0
    assert sign_in(db_url, "li.na", password) == ["operator"]
