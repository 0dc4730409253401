"""``cityiot devices import`` and ``cityiot vendors``: the registry from the command line."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from cityiot.cli.app import devices_app, vendors_app
from cityiot.cli.common import err, fail, load_model_from_database, load_settings


@devices_app.command("import")
def devices_import(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV: device_id,vendor,kind,district,lat,lon,address,report_interval_s, then "
            "the kinds' attribute columns (GET /api/v1/kinds)."
        ),
    ],
    create_vendors: Annotated[
        bool, typer.Option(help="Create vendors the file names that are not registered yet.")
    ] = True,
) -> None:
    """Register or update devices from a CSV file; every bad row is reported with its line."""
    from cityiot.storage.device_csv import parse_device_csv
    from cityiot.storage.engine import make_engine, migrate, sessionmaker
    from cityiot.storage.registry import IdentityTaken, import_devices

    settings = load_settings()
    load_model_from_database(settings)  # a kind put through the API is a kind here too
    try:
        text = file.read_text(encoding="utf-8-sig")
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}")
    except UnicodeDecodeError:
        fail(f"{file} is not UTF-8 text; save the CSV as UTF-8")
    parsed = parse_device_csv(text)

    def say(line: str, style: str | None = None) -> None:
        # One line per problem, never wrapped, never read as markup: scripts grep them.
        err.print(line, style=style, soft_wrap=True, markup=False, highlight=False)

    for problem in parsed.errors:
        say(f"{file}:{problem}", "yellow")

    async def main() -> Any:
        await migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            return await import_devices(sessionmaker(engine), parsed.rows, create_vendors)
        finally:
            await engine.dispose()

    try:
        report = asyncio.run(main())
    except IdentityTaken as exc:  # another import took an identity meanwhile: nothing written
        fail(f"{file}: nothing imported: {exc}")
    for problem in report.errors:
        say(f"{file}:{problem}", "yellow")
    for warning in report.warnings:
        say(f"{file}:{warning}")
    errors = len(parsed.errors) + len(report.errors)
    print(
        f"created={report.created} updated={report.updated} unchanged={report.unchanged} "
        f"errors={errors}"
    )
    if errors:
        raise typer.Exit(2)


@vendors_app.command("add")
def vendors_add(
    vendor_id: Annotated[str, typer.Argument(help="Vendor id: [A-Za-z0-9_-]{1,64}.")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    codec: Annotated[
        str,
        typer.Option(
            help="Payload codec of its devices: json (the access standard), a shipped codec "
            "(hexframe), one in CITYIOT_CODECS_PATH or one put through the API; cityiot codecs "
            "list shows them."
        ),
    ] = "json",
) -> None:
    """Register a vendor (or update its name and codec)."""
    from cityiot.cli.codecs import codecs_in_force
    from cityiot.domain.catalogue import is_valid_id, reserved_vendor
    from cityiot.storage.codecs import codec_overrides
    from cityiot.storage.engine import make_engine, migrate, sessionmaker
    from cityiot.storage.registry import upsert_vendor

    if not is_valid_id(vendor_id):
        fail(f"vendor id {vendor_id!r} is not allowed: use [A-Za-z0-9_-]{{1,64}}")
    problem = reserved_vendor(vendor_id)
    if problem is not None:
        fail(f"vendor id {problem}")
    settings = load_settings()

    async def main() -> None:
        await migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            sessions = sessionmaker(engine)
            # Any codec the ingest would take in: the files' and the API's, examples passed.
            codecs_in_force(settings, await codec_overrides(sessions)).loaded(codec)
            await upsert_vendor(sessions, vendor_id, name or vendor_id, codec=codec)
        finally:
            await engine.dispose()

    asyncio.run(main())
    print(vendor_id)
    err.print(f"vendor {vendor_id} registered (codec {codec})")


@vendors_app.command("credentials")
def vendors_credentials(
    vendor_id: Annotated[str, typer.Argument(help="The vendor to issue an MQTT account for.")],
) -> None:
    """Issue an MQTT account for a vendor; prints USERNAME PASSWORD (the password only now).

    Writes the broker's password and ACL files (CITYIOT_BROKER_PASSWORD_FILE, _ACL_FILE)
    and reloads it (CITYIOT_BROKER_PID_FILE). Revoke with DELETE
    /api/v1/vendors/{id}/credentials/{username}.
    """
    from cityiot.storage.broker_access import (
        BrokerAccess,
        BrokerAccessError,
        IssuedCredential,
        UnknownVendor,
    )
    from cityiot.storage.engine import make_engine, migrate, sessionmaker

    settings = load_settings()
    if settings.broker_password_file is None or settings.broker_acl_file is None:
        fail(
            "set CITYIOT_BROKER_PASSWORD_FILE and CITYIOT_BROKER_ACL_FILE to the files Mosquitto "
            "reads (and CITYIOT_BROKER_PID_FILE to its pid file, so it reloads at once)"
        )

    async def main() -> IssuedCredential:
        await migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            access = BrokerAccess.from_settings(settings, sessionmaker(engine))
            assert access is not None  # both files are set
            return await access.issue(vendor_id, actor="cli")
        finally:
            await engine.dispose()

    try:
        issued = asyncio.run(main())
    except UnknownVendor:
        fail(f"no vendor {vendor_id!r}; register it first: cityiot vendors add {vendor_id}")
    except BrokerAccessError as exc:
        fail(str(exc))
    print(f"{issued.username} {issued.password}")
    reload = "broker reloaded" if issued.broker_reloaded else "reload the broker (SIGHUP) to apply"
    err.print(f"MQTT account {issued.username} issued for vendor {vendor_id}; {reload}")


@vendors_app.command("intake-token")
def vendors_intake_token(
    vendor_id: Annotated[str, typer.Argument(help="The vendor to issue an intake token for.")],
) -> None:
    """Issue the vendor's intake token for its CTWing and OneNET pushes; prints the token
    alone on stdout (shown only now). Issuing again replaces the previous token at once.
    """
    from cityiot.storage.engine import make_engine, migrate, sessionmaker
    from cityiot.storage.intake_tokens import IssuedToken, UnknownVendor, issue_intake_token
    from cityiot.storage.secret import SecretError, platform_secret

    settings = load_settings()
    try:
        secret = platform_secret(settings)
    except (SecretError, OSError) as exc:
        fail(str(exc))

    async def main() -> IssuedToken:
        await migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            return await issue_intake_token(
                sessionmaker(engine), vendor_id, secret=secret, actor="cli"
            )
        finally:
            await engine.dispose()

    try:
        issued = asyncio.run(main())
    except UnknownVendor:
        fail(f"no vendor {vendor_id!r}; register it first: cityiot vendors add {vendor_id}")
    print(issued.token)
    replaced = ""
    if issued.replaced:
        replaced = "; the previous one stops working (in a running API within 5 s)"
    err.print(
        f"intake token issued for vendor {vendor_id}{replaced} (store it now; it is not shown "
        f"again). CTWing push: /api/v1/intake/ctwing/{vendor_id}?token=TOKEN; OneNET push: "
        f"/api/v1/intake/onenet/{vendor_id} with TOKEN as its token",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
