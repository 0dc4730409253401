"""The ``cityiot`` command and its groups; the commands live in the modules beside it."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    help="Unified IoT access platform for Zhumadian's city operations centre.",
    no_args_is_help=True,
    add_completion=False,
)
devices_app = typer.Typer(help="The device registry.", no_args_is_help=True)
vendors_app = typer.Typer(help="Device vendors.", no_args_is_help=True)
app.add_typer(devices_app, name="devices")
app.add_typer(vendors_app, name="vendors")
codecs_app = typer.Typer(
    help="Payload codecs: vendors' decoders and mappings (docs/design.md §4a).",
    no_args_is_help=True,
)
app.add_typer(codecs_app, name="codecs")
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
users_app = typer.Typer(
    help="People's accounts: they sign in to the console with a password.", no_args_is_help=True
)
app.add_typer(users_app, name="users")
grafana_app = typer.Typer(help="Grafana dashboards (cityiot/grafana).", no_args_is_help=True)
app.add_typer(grafana_app, name="grafana")
docs_app = typer.Typer(help="Docs generated from the code.", no_args_is_help=True)
app.add_typer(docs_app, name="docs")


def show_version(value: bool) -> None:
    if value:
        from cityiot.domain.version import platform_version

        print(f"cityiot {platform_version()}")
        raise typer.Exit()


@app.callback()
def root_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=show_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Options of `cityiot` itself; --version is handled (and ends) in its own callback."""
