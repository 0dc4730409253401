"""``cityiot grafana``: export the dashboards as files, or push them to a Grafana."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cityiot.cli.app import grafana_app
from cityiot.cli.common import err, fail, load_model_from_database, load_settings


@grafana_app.command("export")
def grafana_export(
    out: Annotated[
        Path, typer.Option(help="Directory for the dashboard JSON files (Grafana provisioning).")
    ] = Path("deploy/grafana/dashboards"),
) -> None:
    """Write every dashboard as JSON, one per kind (CITYIOT_KINDS_PATH's and those put
    through the API included); deterministic: exporting again changes nothing."""
    from cityiot.grafana.export import export

    load_model_from_database(load_settings())  # kinds put through the API get dashboards too
    try:
        written = export(out)
    except OSError as exc:
        fail(f"cannot write the dashboards to {out}: {exc.strerror}")
    for path in written:
        print(path)
    err.print(f"{len(written)} dashboards in {out}")


@grafana_app.command("push")
def grafana_push(
    url: Annotated[str, typer.Option(help="Grafana's root URL, e.g. http://grafana:3000.")],
    token: Annotated[
        str,
        typer.Option(
            help="Service account token (role Editor) of that Grafana.",
            envvar="CITYIOT_GRAFANA_TOKEN",
        ),
    ],
    folder: Annotated[str, typer.Option(help="Folder to put them in (created if missing).")] = (
        "cityiot"
    ),
) -> None:
    """Upload every dashboard, one per kind (CITYIOT_KINDS_PATH's and those put through the
    API included), to a running Grafana (overwriting older versions)."""
    from cityiot.grafana.push import GrafanaPushError, push

    load_model_from_database(load_settings())  # kinds put through the API get dashboards too
    try:
        report = push(url, token, folder)
    except GrafanaPushError as exc:
        fail(str(exc))
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {warning}")
    for uid, address in report.saved.items():
        print(f"{uid}\t{address}")
    made = "created" if report.folder_created else "existing"
    err.print(f"{len(report.saved)} dashboards saved in folder {report.folder_uid} ({made})")
