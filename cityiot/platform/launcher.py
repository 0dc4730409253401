"""``cityiot run``: the whole platform on one machine, with a simulated fleet.

Starts a local Mosquitto and InfluxDB under the run directory unless ``CITYIOT_MQTT_URL``
/ ``CITYIOT_INFLUX_URL`` are set, prepares the registry, runs the stages and the API in one
process and shows live counters until Ctrl-C; then drains the ingest and stops what it
started. The local broker runs with authentication on: the platform's own account
(``cityiot``), one account per simulated vendor (the simulator publishes as each vendor, so
the ACL applies), and the API manages vendors' accounts in its password and ACL files.
Secrets stay in the run directory, readable by their owner only.

The simulated fleet speaks every link (docs/design.md §4a): beside the MQTT vendors, a
LoRaWAN vendor whose devices' uplinks come as a simulated ChirpStack's events (published on
the local broker's side listener under an account of its own, which may use
``application/#`` only; the ingest takes them with ``CITYIOT_CHIRPSTACK_MQTT_URL`` set to
the local broker), and NB-IoT vendors on CTWing and OneNET, whose pushes are posted to the
in-process API with intake tokens issued at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rich.console import Console
from rich.live import Live
from rich.table import Table

from cityiot.api.keys import KeyRing, create_key
from cityiot.api.people import Change, create_user, get_user, new_password, password_ok, update_user
from cityiot.api.server import own_certificate_context
from cityiot.domain.catalogue import KINDS
from cityiot.domain.settings import MqttTarget, MqttTls, Settings
from cityiot.ingest.pipeline import Ingest, IngestCounters
from cityiot.platform.certificates import local_tls
from cityiot.platform.gcpolicy import settle
from cityiot.platform.local_services import (
    LocalBroker,
    LocalInflux,
    SideListener,
    TlsListener,
    write_private,
)
from cityiot.platform.redact import redact_text
from cityiot.platform.wiring import platform
from cityiot.rules.service import RulesStage
from cityiot.simulators import (
    DEFAULT_VENDORS,
    LINK_VENDORS,
    VENDOR_LINKS,
    ChirpStackTarget,
    Fleet,
    IntakeTarget,
    SimulationCounters,
    run_simulation,
)
from cityiot.simulators.fleet import CHIRPSTACK, CTWING, ONENET
from cityiot.storage.broker_access import (
    PLATFORM_USER,
    BrokerAccess,
    mosquitto_hash,
    password_matches,
)
from cityiot.storage.device_csv import parse_device_csv
from cityiot.storage.engine import make_engine, migrate, sessionmaker
from cityiot.storage.intake_tokens import issue_intake_token
from cityiot.storage.registry import import_devices, upsert_vendor
from cityiot.storage.secret import platform_secret

# Files in the run directory; the secrets among them are readable by their owner only.
PLATFORM_SECRET = "mqtt-platform-password"  # the broker account of ingest, rules and API
SIMULATOR_SECRET = "mqtt-simulator-accounts.json"  # one MQTT account per simulated vendor
ADMIN_KEY_SECRET = "admin-api-key"
ADMIN_USER = "admin"  # the console's account in a local run
ADMIN_PASSWORD_SECRET = "admin-password"
PASSWORD_FILE = "passwd"  # under <run_dir>/mosquitto/, written by cityiot.storage.broker_access
ACL_FILE = "acl"
# The simulated ChirpStack's broker account, on the broker's side listener (its own files,
# which the platform's vendor changes never rewrite).
CHIRPSTACK_USER = "chirpstack-sim"
CHIRPSTACK_SECRET = "mqtt-chirpstack-password"
CHIRPSTACK_PASSWORD_FILE = "chirpstack.passwd"  # under <run_dir>/mosquitto/
CHIRPSTACK_ACL_FILE = "chirpstack.acl"
CHIRPSTACK_TOPICS = "application/#"
LINK_TITLES = {"mqtt": "MQTT", CHIRPSTACK: "LoRaWAN", CTWING: "CTWing", ONENET: "OneNET"}


@dataclass(frozen=True)
class Launch:
    """What ``cityiot run`` was asked for beyond the settings."""

    devices: int = 2000
    rate: float = 500.0
    seed: int = 1
    simulate: bool = True
    incidents: list[str] = field(default_factory=list)
    malformed_share: float = 0.0
    # The simulated MQTT devices connect to the local broker's TLS listener (trusting the
    # local CA) instead of its plain one.
    simulator_tls: bool = False


# Under the run dir: the local CA and the broker's certificate (cityiot.platform.certificates).
TLS_DIR = "tls"


@dataclass(frozen=True, slots=True)
class VendorTls:
    """Where vendors reach the local broker over TLS, and the CA they must trust."""

    url: str
    ca: Path


async def run_platform(
    settings: Settings, launch: Launch, stop: asyncio.Event, out: Console
) -> None:
    run_dir = settings.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    _owner_only(run_dir)
    _check_api_port(settings)
    with contextlib.ExitStack() as services:
        updates: dict[str, object] = {}
        lorawan = launch.simulate and simulates_lorawan(settings)
        # The registry first: a local broker starts on account files written from it.
        fleet = (
            await prepare_registry(settings, launch, run_dir, out, lorawan=lorawan)
            if launch.simulate
            else None
        )
        accounts = await prepare_access(settings, run_dir, fleet)
        chirpstack: ChirpStackTarget | None = None
        vendor_tls: VendorTls | None = None
        if not settings.mqtt_url:
            out.print("starting Mosquitto (authentication on) …")
            files = run_dir / "mosquitto"
            side = None
            if lorawan:
                side = SideListener(files / CHIRPSTACK_PASSWORD_FILE, files / CHIRPSTACK_ACL_FILE)
            # Vendors may try TLS: a listener beside the plain one, a CA made here (§10).
            tls = local_tls(run_dir / TLS_DIR)
            broker = services.enter_context(
                LocalBroker(
                    run_dir,
                    password_file=files / PASSWORD_FILE,
                    acl_file=files / ACL_FILE,
                    allow_anonymous=False,
                    max_payload_bytes=settings.broker_message_size_limit,
                    # The platform's client ids (e.g. cityiot-ingest) for its own account only.
                    reserved_prefixes=sorted({PLATFORM_USER, settings.mqtt_client_id}),
                    platform_users=[PLATFORM_USER],
                    side_listener=side,
                    tls_listener=TlsListener(tls.cert, tls.key, tls.ca),
                )
            )
            vendor_tls = VendorTls(broker.tls_url, tls.ca)
            password = quote(accounts.platform_password, safe="")
            platform_url = f"mqtt://{PLATFORM_USER}:{password}@{broker.host}:{broker.port}"
            updates |= {
                "mqtt_url": platform_url,
                "broker_password_file": files / PASSWORD_FILE,
                "broker_acl_file": files / ACL_FILE,
                "broker_pid_file": broker.pid_path,
            }
            if side is not None:
                # The ingest reads ChirpStack's events as the platform, on the main listener.
                updates["chirpstack_mqtt_url"] = platform_url
                chirpstack = ChirpStackTarget(
                    broker.host, broker.side_port, CHIRPSTACK_USER, accounts.chirpstack_password
                )
        if not settings.influx_url:
            out.print("starting InfluxDB (authentication on) …")
            influx = services.enter_context(LocalInflux(run_dir, auth=True))
            updates |= {
                "influx_url": influx.url,
                "influx_user": influx.username,
                "influx_password": influx.password,
            }
        settings = settings.model_copy(update=updates)
        async with platform(settings, rules=True, api=True) as running:
            ingest, rules, api = running.ingest, running.rules, running.api
            assert rules is not None and api is not None
            settle(settings.gc_full_every_s)  # registry and rule state loaded: before readings
            tasks = [running.start()]
            sent = SimulationCounters()
            if fleet is not None:
                # Over HTTPS the pushes go to CITYIOT_API_HOST, which need not be a name in
                # the certificate: they trust that very certificate instead.
                verify = own_certificate_context(settings) if settings.api_tls else True
                intake = IntakeTarget(api.url, accounts.intake_tokens, verify)
                tasks.append(
                    asyncio.create_task(
                        simulate_fleet(
                            settings,
                            fleet,
                            launch.rate,
                            launch.seed,
                            launch.incidents,
                            launch.malformed_share,
                            None,
                            stop,
                            out,
                            vendor_credentials=accounts.vendors or None,
                            chirpstack=chirpstack,
                            intake=intake if accounts.intake_tokens else None,
                            counters=sent,
                            broker=_simulator_broker(settings, launch, vendor_tls),
                        ),
                        name="simulator",
                    )
                )
            show_where(settings, run_dir, out, api.url, chirpstack, vendor_tls)
            try:
                await watch(ingest, rules, stop, tasks, out, sent if fleet is not None else None)
            finally:
                stop.set()
                await running.stop()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        out.print("stopping local services …" if updates else "stopped.")
    if updates:
        out.print("stopped.")


def _check_api_port(settings: Settings) -> None:
    """Fail before starting anything when the API's port is taken (e.g. another run)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((settings.api_host, settings.api_port))
        except OSError as exc:
            raise OSError(
                f"the API cannot listen on {settings.api_host}:{settings.api_port} "
                f"({exc.strerror}); stop what uses it or set CITYIOT_API_PORT to a free port"
            ) from None


@dataclass(frozen=True)
class LocalAccounts:
    """Secrets ``cityiot run`` keeps in the run directory (mode 0600) between runs."""

    platform_password: str = ""  # the broker's service account, when it starts the broker
    vendors: dict[str, tuple[str, str]] = field(default_factory=dict)  # simulator: vendor → login
    admin_key: str = ""
    chirpstack_password: str = ""  # the simulated ChirpStack's account (side listener)
    intake_tokens: dict[str, str] = field(default_factory=dict)  # CTWing/OneNET vendor → token


async def prepare_access(settings: Settings, run_dir: Path, fleet: Fleet | None) -> LocalAccounts:
    """The run's accounts: an admin API key; and, when it starts the broker, the platform's
    account, one MQTT account per simulated vendor and the broker's password and ACL files."""
    await migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        sessions = sessionmaker(engine)
        admin_key = await _admin_key(sessions, run_dir)
        await _admin_person(sessions, run_dir)
        tokens = await _intake_tokens(settings, sessions, fleet) if fleet else {}
        if settings.mqtt_url:  # someone else's broker: its accounts are not ours to write
            return LocalAccounts(admin_key=admin_key, intake_tokens=tokens)
        password = _secret(run_dir / PLATFORM_SECRET, lambda: secrets.token_urlsafe(24))
        files = run_dir / "mosquitto"
        # No pid file: the broker starts after this, reading the files as written.
        access = BrokerAccess(
            sessions, files / PASSWORD_FILE, files / ACL_FILE, None, {PLATFORM_USER: password}
        )
        vendors = await _simulator_accounts(access, fleet, run_dir) if fleet else {}
        await access.sync(reload=False)
        lora = fleet is not None and any(d.link == CHIRPSTACK for d in fleet.devices)
        chirpstack = _chirpstack_account(run_dir) if lora else ""
    finally:
        await engine.dispose()
    return LocalAccounts(password, vendors, admin_key, chirpstack, tokens)


def simulates_lorawan(settings: Settings) -> bool:
    """Whether the run's fleet has LoRaWAN devices: only when it starts the broker (the
    simulated ChirpStack's account lives on it) and ChirpStack's URL is left to it."""
    return not settings.mqtt_url and not getattr(settings, "chirpstack_mqtt_url", "x")


def _chirpstack_account(run_dir: Path) -> str:
    """The simulated ChirpStack's password (kept between runs), and the side listener's
    password and ACL files: its one account may use ``application/#`` and nothing else."""
    password = _secret(run_dir / CHIRPSTACK_SECRET, lambda: secrets.token_urlsafe(24))
    files = run_dir / "mosquitto"
    files.mkdir(parents=True, exist_ok=True)
    header = "# Written by cityiot run for its simulated ChirpStack; rewritten at each start.\n"
    write_private(
        files / CHIRPSTACK_PASSWORD_FILE, f"{header}{CHIRPSTACK_USER}:{mosquitto_hash(password)}\n"
    )
    write_private(
        files / CHIRPSTACK_ACL_FILE,
        f"{header}user {CHIRPSTACK_USER}\ntopic readwrite {CHIRPSTACK_TOPICS}\n",
    )
    return password


async def _intake_tokens(settings: Settings, sessions: Any, fleet: Fleet) -> dict[str, str]:
    """A fresh intake token for each CTWing and OneNET vendor of the fleet (issuing one
    replaces the vendor's previous token: only this run's simulator pushes with it)."""
    secret = platform_secret(settings)
    tokens: dict[str, str] = {}
    used = {d.vendor for d in fleet.devices}
    for vendor in (v for link in (CTWING, ONENET) for v in fleet.vendors_on(link)):
        if vendor in used:
            issued = await issue_intake_token(
                sessions, vendor, secret=secret, actor="cityiot run (simulator)"
            )
            tokens[vendor] = issued.token
    return tokens


async def _simulator_accounts(
    access: BrokerAccess, fleet: Fleet, run_dir: Path
) -> dict[str, tuple[str, str]]:
    """vendor → (username, password) for the simulator's MQTT vendors (the others report
    through their networks); kept between runs, reissued when the database no longer holds
    the account (e.g. after ``make clean``)."""
    path = run_dir / SIMULATOR_SECRET
    try:
        kept = {v: (u, p) for v, (u, p) in json.loads(path.read_text()).items()}
    except (OSError, ValueError, TypeError):
        kept = {}
    accounts: dict[str, tuple[str, str]] = {}
    for vendor_id in fleet.vendors_on("mqtt"):
        active = {c.username: c for c in await access.credentials(vendor_id, active_only=True)}
        username, password = kept.get(vendor_id, ("", ""))
        row = active.get(username)
        if row is None or not password_matches(password, row.password_hash):
            issued = await access.issue(vendor_id, actor="cityiot run (simulator)")
            username, password = issued.username, issued.password
        accounts[vendor_id] = (username, password)
    write_private(path, json.dumps(accounts, indent=1))
    return accounts


async def _admin_person(sessions: Any, run_dir: Path) -> str:
    """The run's administrator account (:data:`ADMIN_USER`) for the console: its password
    kept in the run directory; the account made, or its password set, when they differ."""
    path = run_dir / ADMIN_PASSWORD_SECRET
    kept = ""
    with contextlib.suppress(OSError):
        kept = path.read_text().strip()
    row = await get_user(sessions, ADMIN_USER)
    if row is not None and kept and await password_ok(row, kept):
        return kept
    password = new_password()
    if row is None:
        await create_user(
            sessions,
            ADMIN_USER,
            "admin",
            password,
            display_name="cityiot run (local admin)",
            created_by="cityiot run",
        )
    else:
        await update_user(
            sessions,
            ADMIN_USER,
            Change(password=password, disabled=False, unlock=True),
            by="cityiot run",
        )
    write_private(path, password + "\n")
    return password


async def _admin_key(sessions: Any, run_dir: Path) -> str:
    """The run's admin API key: kept in the run directory; created when missing or unknown."""
    path = run_dir / ADMIN_KEY_SECRET
    with contextlib.suppress(OSError):
        kept = path.read_text().strip()
        if await KeyRing(sessions, ttl_s=0).resolve(kept, time.monotonic()) is not None:
            return kept
    _, key = await create_key(
        sessions, "admin", name="cityiot run (local admin)", created_by="cityiot run"
    )
    write_private(path, key + "\n")
    return key


def _secret(path: Path, make: Callable[[], str]) -> str:
    """The secret kept at ``path``; made and written (0600) the first time."""
    with contextlib.suppress(OSError):
        kept = path.read_text().strip()
        if kept:
            return kept
    value = make()
    write_private(path, value + "\n")
    return value


def _owner_only(run_dir: Path) -> None:
    """The run dir 0700 and the files the platform keeps at its top 0600, also when an
    earlier run (or another umask) left them open to other users."""
    run_dir.chmod(0o700)
    for path in run_dir.glob("cityiot.*"):  # the SQLite database (-wal, -shm) and the log
        if path.is_file():
            path.chmod(0o600)


def simulated_fleet(devices: int, seed: int, *, lorawan: bool = True) -> Fleet:
    """The fleet of ``cityiot run``: the MQTT vendors and those of the other links
    (:data:`~cityiot.simulators.LINK_VENDORS`), the LoRaWAN ones only when ``lorawan``."""
    extra = [v for v in LINK_VENDORS if lorawan or VENDOR_LINKS.get(v.id) != CHIRPSTACK]
    return Fleet.generate(devices, seed, vendors=(*DEFAULT_VENDORS, *extra))


async def prepare_registry(
    settings: Settings, launch: Launch, run_dir: Path, out: Console, *, lorawan: bool = True
) -> Fleet:
    """Generate the simulated fleet and register its vendors (with their codecs) and
    devices (with their identities on their networks)."""
    fleet = simulated_fleet(launch.devices, launch.seed, lorawan=lorawan)
    csv_path = run_dir / "fleet.csv"
    fleet.write_csv(csv_path)
    await migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        sessions = sessionmaker(engine)
        for vendor_id, name, codec in fleet.vendors:
            await upsert_vendor(sessions, vendor_id, name, codec=codec)
        parsed = parse_device_csv(csv_path.read_text(encoding="utf-8"))
        if parsed.errors:
            raise ValueError(f"simulated fleet CSV has errors: {parsed.errors[:3]}")
        report = await import_devices(sessions, parsed.rows)
    finally:
        await engine.dispose()
    out.print(
        f"registry: {len(parsed.rows)} simulated devices from {csv_path} "
        f"(created {report.created}, updated {report.updated}, unchanged {report.unchanged})"
    )
    by_link = Counter(d.link for d in fleet.devices)
    out.print(
        "  by link: "
        + ", ".join(f"{LINK_TITLES.get(k, k)} {n}" for k, n in sorted(by_link.items()))
        + ("" if lorawan else " (no LoRaWAN: CITYIOT_MQTT_URL or CHIRPSTACK_MQTT_URL is set)")
    )
    return fleet


async def simulate_fleet(
    settings: Settings,
    fleet: Fleet,
    rate: float,
    seed: int,
    incidents: list[str],
    malformed_share: float,
    duration_s: float | None,
    stop: asyncio.Event,
    out: Console,
    vendor_credentials: Mapping[str, tuple[str, str]] | None = None,
    chirpstack: ChirpStackTarget | None = None,
    intake: IntakeTarget | None = None,
    counters: SimulationCounters | None = None,
    broker: MqttTarget | None = None,
) -> None:
    """Publish the fleet to ``broker`` (default: ``settings.mqtt_url``, over TLS when it is
    ``mqtts://``, trusting ``CITYIOT_MQTT_CA_FILE``): as each vendor with its own account when
    ``vendor_credentials`` are given (so the broker's ACL applies), else as the URL's user;
    LoRaWAN devices as the simulated ``chirpstack``, NB-IoT ones pushed to ``intake``."""
    target = broker or settings.mqtt_target()
    over = " over TLS" if target.tls is not None else ""
    out.print(f"simulator: {len(fleet.devices)} devices at {rate:g} msg/s, seed {seed}{over}")
    await run_simulation(
        target.host,
        target.port,
        fleet,
        rate=rate,
        seed=seed,
        incidents=incidents,
        malformed_share=malformed_share,
        duration_s=duration_s,
        username=target.username,
        password=target.password,
        vendor_credentials=vendor_credentials,
        chirpstack=chirpstack,
        intake=intake,
        counters=counters,
        stop=stop,
        tls=target if target.tls is not None else None,
    )


def _simulator_broker(
    settings: Settings, launch: Launch, vendor_tls: VendorTls | None
) -> MqttTarget | None:
    """With ``simulator_tls``, the local broker's TLS listener (the same accounts), trusting
    the local CA; else None (the platform's own URL)."""
    if not launch.simulator_tls:
        return None
    if vendor_tls is None:
        raise ValueError(
            "--simulator-tls is for the local broker's TLS listener; with CITYIOT_MQTT_URL "
            "set, the simulated fleet follows it: give an mqtts:// URL and CITYIOT_MQTT_CA_FILE"
        )
    target = MqttTarget(vendor_tls.url, tls=MqttTls(str(vendor_tls.ca)))
    plain = settings.mqtt_target()
    target.username, target.password = plain.username, plain.password
    return target


def show_where(
    settings: Settings,
    run_dir: Path,
    out: Console,
    api_url: str,
    chirpstack: ChirpStackTarget | None = None,
    vendor_tls: VendorTls | None = None,
) -> None:
    db = settings.influx_db
    target = settings.mqtt_target()
    out.print(f"[bold]cityiot is running[/] — run directory {run_dir}")
    out.print(
        f"  MQTT broker   {target.address}  (publish to city/{{vendor}}/{{device_id}}/telemetry)"
    )
    login = ""
    if target.username:
        # Never print a password: point at the file holding ours, or leave a placeholder.
        secret_file = run_dir / PLATFORM_SECRET
        ours = target.username == PLATFORM_USER and secret_file.exists()
        login = f" -u {target.username} -P " + (f'"$(cat {secret_file})"' if ours else "PASSWORD")
        where = f"  (password in {secret_file})" if ours else ""
        out.print(f"  MQTT account  {target.username}{where}")
    if vendor_tls is not None:
        out.print(
            f"  MQTT over TLS {vendor_tls.url}  (same accounts; trust the CA {vendor_tls.ca}: "
            f"mosquitto_sub --cafile {vendor_tls.ca} …)"
        )
    if settings.broker_acl_file is not None:
        out.print(f"  broker ACL    {settings.broker_acl_file}  (vendors: POST /api/v1/vendors)")
    if chirpstack is not None:
        out.print(
            f"  ChirpStack    simulated: {CHIRPSTACK_USER} on mqtt://{chirpstack.host}:"
            f"{chirpstack.port} publishes {CHIRPSTACK_TOPICS} (password in "
            f"{run_dir / CHIRPSTACK_SECRET})"
        )
    out.print(f"  API           {api_url}/api/v1  (docs {api_url}/docs)")
    out.print(
        f"  NB-IoT push   {api_url}/api/v1/intake/ctwing/{{vendor}}?token=T, "
        f"{api_url}/api/v1/intake/onenet/{{vendor}}  (tokens: cityiot vendors intake-token ID)"
    )
    out.print(f"  admin key     {run_dir / ADMIN_KEY_SECRET}  (for scripts: Bearer)")
    password_file = run_dir / ADMIN_PASSWORD_SECRET
    out.print(f"  console       {api_url}/  (sign in as {ADMIN_USER}, password in {password_file})")
    if out.is_terminal and password_file.exists():
        # Only on a terminal: redirected output (CI logs) keeps no password.
        out.print(f"                password: {password_file.read_text().strip()}")
    out.print(f"  InfluxDB      {redact_text(settings.influx_url)}  database {db!r}")
    registry = redact_text(settings.database_url)
    out.print(f"  registry      {registry}  (dead letters in table dead_letters)")
    out.print(
        f"  alerts        mosquitto_sub -h {target.host} -p {target.port}{login} "
        "-t 'city/alerts/#' -v"
    )
    out.print("  query stored readings:")
    influx_secret = run_dir / "influxdb" / "admin-password"  # LocalInflux's, when it started it
    influx_login = ""
    if settings.influx_user:
        secret = f"$(cat {influx_secret})" if influx_secret.exists() else "PASSWORD"
        influx_login = f'-u "{settings.influx_user}:{secret}" '
    out.print(
        f"    curl -sG {influx_login}{settings.influx_url}/query --data-urlencode db={db} "
        f'--data-urlencode "q=SELECT count(*) FROM {next(iter(KINDS), "kind")}"'
    )
    out.print(
        f'    curl -s -H "Authorization: Bearer $(cat {run_dir / ADMIN_KEY_SECRET})" '
        f"{api_url}/api/v1/devices?limit=5"
    )
    out.print(f"  log           {run_dir / 'cityiot.log'}")
    out.print("  Ctrl-C stops everything.")


async def watch(
    ingest: Ingest,
    rules: RulesStage,
    stop: asyncio.Event,
    tasks: list[asyncio.Task[None]],
    out: Console,
    sent: SimulationCounters | None = None,
) -> None:
    """Live counters (per second and totals) until ``stop`` or a stage fails; with the
    simulator's counters (``sent``), its messages per link too."""
    last = _snapshot(ingest.counters)
    last_t = time.monotonic()
    rates = (0.0, 0.0, 0.0)
    links = _LinkRates(sent)
    with Live(
        _table(ingest, rules, rates, links), console=out, auto_refresh=False, redirect_stdout=False
    ) as live:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception():
                    raise task.exception()  # type: ignore[misc]
            now, snap = time.monotonic(), _snapshot(ingest.counters)
            rates = tuple((b - a) / (now - last_t) for a, b in zip(last, snap, strict=True))  # type: ignore[assignment]
            links.tick(now - last_t)
            last, last_t = snap, now
            live.update(_table(ingest, rules, rates, links), refresh=True)
            if not out.is_terminal and int(now) % 5 == 0:
                c = ingest.counters
                out.print(
                    f"received/s={rates[0]:.0f} stored/s={rates[1]:.0f} "
                    f"rejected/s={rates[2]:.0f} stored={c.stored} rejected={c.rejected} "
                    f"alert_events={rules.engine.counters.events} "
                    f"notifications_sent={rules.deliverer.counters.sent}"
                    + "".join(f" sent_{k}={n}" for k, n in links.totals())
                )


def _snapshot(c: IngestCounters) -> tuple[int, int, int]:
    return (c.messages, c.stored, c.rejected)


class _LinkRates:
    """The simulator's telemetry messages by link: totals and the last interval's rate."""

    def __init__(self, sent: SimulationCounters | None) -> None:
        self.sent = sent
        self.rates: dict[str, float] = {}
        self._last: dict[str, int] = {}

    def tick(self, elapsed_s: float) -> None:
        if self.sent is None or elapsed_s <= 0:
            return
        now = dict(self.sent.by_link)
        self.rates = {k: (n - self._last.get(k, 0)) / elapsed_s for k, n in now.items()}
        self._last = now

    def totals(self) -> list[tuple[str, int]]:
        """(link, messages sent) in the order of :data:`LINK_TITLES`."""
        if self.sent is None:
            return []
        return [(k, self.sent.by_link[k]) for k in LINK_TITLES if self.sent.by_link.get(k)]


def _table(
    ingest: Ingest,
    rules: RulesStage,
    rates: tuple[float, float, float],
    links: _LinkRates | None = None,
) -> Table:
    c = ingest.counters
    table = Table(title="cityiot ingest", title_justify="left")
    for column in ("", "per second", "total"):
        table.add_column(column, justify="right")
    table.add_row("received", f"{rates[0]:,.0f}", f"{c.messages:,}")
    table.add_row("stored", f"{rates[1]:,.0f}", f"{c.stored:,}")
    table.add_row("rejected", f"{rates[2]:,.0f}", f"{c.rejected:,}")
    table.add_row("duplicates", "", f"{c.duplicates:,}")
    for link, total in links.totals() if links is not None else ():
        rate = links.rates.get(link, 0.0) if links is not None else 0.0
        table.add_row(f"  sent by {LINK_TITLES[link]}", f"{rate:,.0f}", f"{total:,}")
    for kind in KINDS:
        table.add_row(f"  {kind}", "", f"{c.stored_by_kind.get(kind, 0):,}")
    table.add_row("devices online", "", f"{len(ingest.presence.online):,}/{len(ingest.devices):,}")
    table.add_row("last write", "", f"{c.last_write_ms:.1f} ms")
    r, d = rules.engine.counters, rules.deliverer.counters
    table.add_row("alert events", "", f"{r.events:,}")
    table.add_row(
        "open alerts", "", f"{sum(1 for t in rules.engine.evaluator.tracks.values() if t.firing):,}"
    )
    table.add_row("notifications", "", f"{d.sent:,} sent, {d.failed:,} failed")
    if r.commands:
        table.add_row("commands sent", "", f"{r.commands:,}")
    if c.write_errors:
        table.add_row("[red]storage errors[/]", "", f"{c.write_errors:,}")
    return table
