"""``cityiot keys``: API keys from the command line (the first admin key, before the API runs)."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

import typer

from cityiot.cli.app import keys_app
from cityiot.cli.common import err, fail, load_model_from_database, load_settings


def _names(values: str | None) -> list[str] | None:
    if values is None:
        return None
    return [v.strip() for v in values.split(",") if v.strip()]


def field_teams(settings: Any) -> list[str]:
    """The routing file's teams, which field keys and accounts act for."""
    from cityiot.api.teams import known_teams
    from cityiot.rules.routing import RoutingError, load_routing
    from cityiot.rules.service import routing_path

    # Only the teams matter here, not the channels dropped for unset variables.
    logging.getLogger("cityiot.rules.routing").setLevel(logging.ERROR)
    try:
        router = load_routing(routing_path(settings))
    except RoutingError as exc:
        fail(f"the routing file names the teams and cannot be read; fix it: {exc}")
    return known_teams(router)


@keys_app.command("create")
def keys_create(
    role: Annotated[
        str, typer.Option(help="admin, operator, field, department (read-only) or vendor.")
    ],
    name: Annotated[str, typer.Option(help="Who holds the key, e.g. 'fire brigade'.")] = "",
    kinds: Annotated[
        str | None, typer.Option(help="Department keys: kinds granted, comma-separated.")
    ] = None,
    districts: Annotated[
        str | None, typer.Option(help="Department keys: districts granted, comma-separated.")
    ] = None,
    vendor: Annotated[str | None, typer.Option(help="Vendor keys: the vendor id.")] = None,
    team: Annotated[
        list[str] | None,
        typer.Option(
            "--team",
            help="Field keys: a team of the routing file it acts for; repeat or comma-separate.",
        ),
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option(
            help="When the key stops working: a duration from now (90d, 12w, 36h) or an ISO "
            "date or time (2027-03-31: through that day; 2027-03-31T18:00, in the city's "
            "time zone unless it has an offset). Default: never.",
        ),
    ] = None,
) -> None:
    """Create an API key; prints the key alone on stdout (it is shown this once)."""
    from cityiot.api.keys import KeyRequestError, create_key, parse_expiry
    from cityiot.domain.sun import CITY_TZ
    from cityiot.rules.events import city_time
    from cityiot.storage.engine import make_engine, migrate, sessionmaker
    from cityiot.storage.utc import utcnow

    expires_at = None
    if expires is not None:
        try:
            expires_at = parse_expiry(expires, utcnow(), CITY_TZ)
        except KeyRequestError as exc:
            fail(str(exc))
    settings = load_settings()
    if kinds is not None:
        load_model_from_database(settings)  # a kind put through the API may be granted too
    teams = _names(",".join(team)) if team else None
    known = field_teams(settings) if role == "field" else []

    async def main() -> tuple[Any, str]:
        await migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            return await create_key(
                sessionmaker(engine),
                role,
                name=name,
                kinds=_names(kinds),
                districts=_names(districts),
                vendor=vendor,
                teams=teams,
                known_teams=known,
                created_by="cli",
                expires_at=expires_at,
            )
        finally:
            await engine.dispose()

    try:
        row, key = asyncio.run(main())
    except KeyRequestError as exc:
        fail(str(exc))
    print(key)
    grant = ""
    if row.kinds or row.districts:
        grant = (
            f" kinds={','.join(row.kinds or ['*'])} districts={','.join(row.districts or ['*'])}"
        )
    if row.vendor_id:
        grant = f" vendor={row.vendor_id}"
    if row.teams:
        grant = f" teams={','.join(row.teams)}"
    until = f", expires {city_time(row.expires_at)}" if row.expires_at else ""
    err.print(
        f"key {row.id} created: role={row.role}{grant}{until} (store it now; it is not shown again)"
    )


@keys_app.command("list")
def keys_list() -> None:
    """The API keys: id, role, state (active, revoked or expired), grant, vendor, expiry
    (- for never) and name; never the secrets."""
    from cityiot.api.keys import list_keys, principal_of
    from cityiot.rules.events import city_time
    from cityiot.storage.engine import make_engine, migrate, sessionmaker
    from cityiot.storage.utc import utcnow

    settings = load_settings()

    async def main() -> list[Any]:
        await migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            return await list_keys(sessionmaker(engine))
        finally:
            await engine.dispose()

    now = utcnow()
    for row in asyncio.run(main()):
        principal = principal_of(row)
        state = "revoked" if row.revoked_at else "expired" if principal.expired(now) else "active"
        grant = ",".join(row.kinds or ["*"]) + "/" + ",".join(row.districts or ["*"])
        until = city_time(principal.expires_at) or "-"
        print(
            f"{row.id}\t{row.role}\t{state}\t{grant}\t{row.vendor_id or '-'}\t{until}\t{row.name}"
        )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (cityiot keys list).")],
) -> None:
    """Revoke an API key (never the last active admin key)."""
    from cityiot.api.keys import LastAdminKey, revoke_key
    from cityiot.storage.engine import make_engine, migrate, sessionmaker

    settings = load_settings()

    async def main() -> Any:
        await migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            return await revoke_key(sessionmaker(engine), key_id, "cli", "admin")
        finally:
            await engine.dispose()

    try:
        revoked = asyncio.run(main())
    except LastAdminKey as exc:
        fail(str(exc))
    if revoked is None:
        fail(f"no API key {key_id!r}; cityiot keys list shows them")
    err.print(f"key {key_id} revoked")
