"""Settings: one typed object, read once from ``CITYIOT_*`` variables (and an optional file)."""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_SHARE_GROUP = re.compile(r"[A-Za-z0-9_-]{1,64}")


class Settings(BaseSettings):
    """Everything configurable, with the defaults of docs/design.md §7.

    ``mqtt_url`` and ``influx_url`` left empty mean "start local ones" for ``cityiot run``;
    the single-stage commands need them set.
    """

    model_config = SettingsConfigDict(
        env_prefix="CITYIOT_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    mqtt_url: str = Field("", description="mqtt://user:pass@host:port of the broker")
    mqtt_client_id: str = Field("cityiot-ingest", description="stable id: the persistent session")
    # The brokers' in-flight window for the ingest (docs/brokers.en.md): it acknowledges in
    # slices of half of it, so a small window (EMQX's 32) never waits on an open batch.
    mqtt_inflight: int = Field(
        0,
        ge=0,
        description="the broker's in-flight window for the ingest's sessions (Mosquitto "
        "max_inflight_messages, EMQX max_inflight, NATS mqtt max_ack_pending, RabbitMQ "
        "mqtt.prefetch), also ChirpStack's broker's; 0: not known, batches as large as "
        "CITYIOT_BATCH_SIZE",
    )
    # Several sessions of one ingest, members of CITYIOT_SHARE_GROUP: each has a window of its
    # own, so a small window (EMQX's 32) is N windows in flight (docs/brokers.en.md).
    mqtt_sessions: int = Field(
        1,
        ge=1,
        le=16,
        description="MQTT sessions a storing ingest reads the devices' topics by, each a member "
        "of CITYIOT_SHARE_GROUP with a window of its own; more than 1 for a broker with a "
        "small in-flight window (client ids <id>, <id>-s2, …)",
    )
    # LoRaWAN through ChirpStack v4 (docs/design.md §4a): its MQTT integration's broker.
    chirpstack_mqtt_url: str = Field(
        "",
        description="mqtt://user:pass@host:port of ChirpStack's MQTT integration (may be the "
        "platform's broker); empty: no LoRaWAN link",
    )
    # TLS to the broker (docs/deployment.md "TLS to the broker"): for mqtts:// URLs, both of them.
    mqtt_ca_file: str = Field(
        "",
        description="PEM file of the CA(s) the broker's certificate must be signed by "
        "(mqtts:// only); empty: the system's trust store",
    )
    mqtt_cert_file: str = Field(
        "", description="PEM client certificate for a broker that asks for one (mqtts://)"
    )
    mqtt_key_file: str = Field(
        "", description="its private key (PEM); empty: the key is in CITYIOT_MQTT_CERT_FILE"
    )
    influx_url: str = Field("", description="http://host:8086 of InfluxDB (v1 HTTP API)")
    influx_db: str = "city"
    influx_token: str = Field("", description="InfluxDB 2.x/3.x token; empty for 1.x")
    influx_user: str = ""
    influx_password: str = ""
    retention: str = Field("400d", description="retention policy duration (InfluxQL duration)")
    database_url: str = Field(
        "", description="empty: sqlite+aiosqlite:///<run_dir>/cityiot.db (SQLite in the run dir)"
    )
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    # HTTPS from the API itself (docs/security.md "HTTPS from the API"): both or neither.
    api_tls_cert_file: str = Field(
        "",
        description="PEM certificate (with its chain) the API serves HTTPS with; empty: "
        "plain HTTP (behind a TLS proxy, or on loopback)",
    )
    api_tls_key_file: str = Field(
        "", description="its private key (PEM); set with CITYIOT_API_TLS_CERT_FILE"
    )
    # Behind a reverse proxy: whose X-Forwarded-For / X-Forwarded-Proto the API believes.
    api_forwarded_allow_ips: str = Field(
        "",
        description="comma-separated addresses or networks of trusted reverse proxies (e.g. "
        "10.0.0.5,172.18.0.0/16): from them X-Forwarded-For gives the caller's address; "
        "empty: none trusted, the address is the connection's",
    )
    rules_path: Path | None = Field(
        None, description="a rule file or a folder of them; empty: the shipped catalogue"
    )
    kinds_path: Path | None = Field(
        None,
        description="a folder of kind files (docs/design.md §4a) adding kinds or changing a "
        "shipped one compatibly; empty: the shipped kinds only",
    )
    city_path: Path | None = Field(
        None, description="the city file (city.yaml); empty: the shipped city, Zhumadian"
    )
    codecs_path: Path | None = Field(
        None,
        description="a folder of codec files (docs/design.md §4a: device-repository YAML, "
        "TS013 scripts beside it, a metrics mapping) added to the shipped json and hexframe",
    )
    codec_timeout_ms: float = Field(
        100, gt=0, le=10_000, description="the longest one call of a codec script may run"
    )
    codec_memory_mb: int = Field(
        32, ge=4, le=1024, description="the memory one codec script's sandbox may hold"
    )
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "logfmt", "console"] = Field(
        "auto",
        description="log lines as json, logfmt or console text; auto: console on a terminal, "
        "json otherwise (a pipe, a journal, the log file of `cityiot run`)",
    )
    # Email notification channels: the mail server they share (a channel may override).
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = "cityiot@localhost"
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = True  # mail in the clear only when asked (a relay on this host)
    run_dir: Path = Path(".run")
    # The platform's own secret: intake tokens are derived from it (OneNET's signatures need
    # the token itself, which the database does not hold). Empty: <run_dir>/platform-secret,
    # made on first use. Several hosts (API replicas, the CLI elsewhere) must share one value.
    secret_key: str = Field(
        "",
        repr=False,
        description="at least 32 characters; empty: <run_dir>/platform-secret (made once)",
    )

    # API (issue 4): requests per second per key, with bursts up to api_rate_burst.
    api_rate_per_s: float = Field(20.0, gt=0, description="sustained requests per second per key")
    api_rate_burst: int = Field(100, ge=1, description="requests a key may send at once")
    # Vendor MQTT accounts: the broker's password and ACL files the API writes, and how to
    # make the broker reload them (SIGHUP to the pid in this file). Empty: not managed here.
    broker_password_file: Path | None = None
    broker_acl_file: Path | None = None
    broker_pid_file: Path | None = None
    # The spool (issue 6): where batches go while InfluxDB is down or slow; empty: run_dir/spool.
    spool_dir: Path | None = None
    spool_max_bytes: int = Field(1024**3, ge=64 * 1024, description="spool size cap on disk")
    spool_fsync: bool = Field(True, description="fsync each spooled batch before acking it")
    spool_after_s: float = Field(
        2.0, ge=0, description="how long InfluxDB may fail before batches go to the spool"
    )
    # A stage run alone (cityiot ingest / rules) serves its Prometheus metrics on this port.
    metrics_port: int | None = Field(None, ge=1, le=65535)
    # The latest-value table: the ingest writes what changed this often.
    latest_flush_ms: int = Field(500, ge=50, le=1000)

    # Ingest tuning (docs/design.md §8); the defaults suit one worker on a small machine.
    batch_size: int = Field(5000, ge=1, description="flush to InfluxDB at this many points")
    flush_interval_ms: int = Field(200, ge=1, description="... or after this long")
    max_payload_bytes: int = Field(256 * 1024, ge=64)
    max_batch_readings: int = 1000
    future_tolerance_s: int = 300
    dead_letter_payload_bytes: int = 4096
    registry_refresh_s: float = Field(2.0, gt=0, description="pick up registry changes this often")
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop",
        description="the event loop of the long-running stages: uvloop (libuv) or Python's "
        "own asyncio loop",
    )
    gc_full_every_s: float = Field(
        600.0,
        ge=0,
        description="a full garbage collection this often; Python collects only the young "
        "generation by itself in between (cityiot/platform/gcpolicy.py); 0: Python's own schedule",
    )

    # Scale-out (issue 7): several `cityiot ingest --rules` workers share the subscription.
    share_group: str = Field(
        "",
        description="MQTT shared-subscription group: the ingest subscribes to "
        "$share/<group>/city/+/+/telemetry (and status), so workers of one group split the "
        "stream; empty: a plain subscription (one ingest)",
    )
    workers: int = Field(
        1,
        ge=1,
        le=1024,
        description="how many ingest workers share the subscription; devices are partitioned "
        "among them (ingest/partition.py: owner()) for rule state and presence",
    )
    worker_index: int = Field(
        0,
        ge=0,
        description="this worker's index, 0..CITYIOT_WORKERS-1; with workers > 1 its MQTT "
        "session is <mqtt_client_id>-w<index> and its spool <run_dir>/spool-w<index>",
    )

    # Hardening (issue 22): what one caller, vendor or stranger may cost the platform.
    api_max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="largest request body the API reads (413 past it); read only after the "
        "caller's key is checked",
    )
    api_max_import_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        description="largest CSV body of POST /devices/import (413 past it), read streamed",
    )
    api_max_connections: int = Field(
        1000, ge=1, description="open HTTP connections the API serves at once (503 past it)"
    )
    api_header_timeout_s: float = Field(
        10.0, gt=0, description="time a client has to send a request's headers (and body)"
    )
    api_anonymous_rate_per_s: float = Field(
        10.0,
        gt=0,
        description="requests per second per client address before its key is known "
        "(unauthenticated or bad keys)",
    )
    api_anonymous_rate_burst: int = Field(
        50, ge=1, description="requests a client address may send at once before auth"
    )
    api_trusted_hosts: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Host header values the API answers (e.g. iot.city.gov.cn); '*': any, "
        "but redirects never carry the Host header either way",
    )
    dead_letter_max_rows: int = Field(
        200_000, ge=100, description="dead letters kept; the oldest are pruned past it"
    )
    dead_letter_max_bytes: int = Field(
        256 * 1024 * 1024,
        ge=64 * 1024,
        description="stored bytes of dead-letter payloads kept; the oldest pruned past it",
    )
    dead_letter_rate_per_s: float = Field(
        20.0,
        gt=0,
        description="dead letters stored per second per vendor (bursts up to "
        "dead_letter_rate_burst); beyond it they are counted, not stored",
    )
    dead_letter_rate_burst: int = Field(200, ge=1)

    @field_validator("rules_path", "kinds_path", "city_path", "codecs_path", mode="before")
    @classmethod
    def _empty_path_is_default(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("chirpstack_mqtt_url")
    @classmethod
    def _chirpstack_url(cls, v: str) -> str:
        if v and (urlsplit(v).scheme not in MQTT_SCHEMES or not urlsplit(v).hostname):
            raise ValueError(
                "CITYIOT_CHIRPSTACK_MQTT_URL must look like mqtt://user:pass@host:1883 or "
                "mqtts://user:pass@host:8883 (the broker of ChirpStack's MQTT integration), "
                f"got {v!r}"
            )
        return v

    @field_validator("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file")
    @classmethod
    def _readable_pem(cls, v: str, info: ValidationInfo) -> str:
        # Checked at start-up, not at the first TLS handshake: a wrong path is a setting to fix.
        if v:
            _check_readable(f"CITYIOT_{(info.field_name or '').upper()}", v)
        return v

    @field_validator("api_tls_cert_file", "api_tls_key_file")
    @classmethod
    def _readable_api_pem(cls, v: str, info: ValidationInfo) -> str:
        if v:
            _check_readable(f"CITYIOT_{(info.field_name or '').upper()}", v)
        return v

    @field_validator("api_forwarded_allow_ips")
    @classmethod
    def _forwarded_allow_ips(cls, v: str) -> str:
        entries = [entry.strip() for entry in v.split(",") if entry.strip()]
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    "CITYIOT_API_FORWARDED_ALLOW_IPS lists the addresses or networks of the "
                    "reverse proxies the API trusts (e.g. 10.0.0.5 or 172.18.0.0/16, comma-"
                    f"separated; '*' and host names are not taken), got {entry!r}"
                ) from None
        return ",".join(entries)

    @field_validator("log_level")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        return v.lower() if isinstance(v, str) else v

    @field_validator("retention")
    @classmethod
    def _retention(cls, v: str) -> str:
        if not v or not v[:-1].isdigit() or v[-1] not in "hdw":
            raise ValueError(f"CITYIOT_RETENTION must look like 400d, 52w or 720h, got {v!r}")
        return v

    @field_validator("share_group")
    @classmethod
    def _share_group(cls, v: str) -> str:
        if v and not _SHARE_GROUP.fullmatch(v):
            raise ValueError(
                f"CITYIOT_SHARE_GROUP must be empty or [A-Za-z0-9_-]{{1,64}} (no '/', '+' or "
                f"'#': it becomes a topic level of $share/<group>/...), got {v!r}"
            )
        return v

    @field_validator("worker_index")
    @classmethod
    def _worker_index(cls, v: int, info: ValidationInfo) -> int:
        workers = info.data.get("workers")
        if workers is not None and v >= workers:
            raise ValueError(
                f"CITYIOT_WORKER_INDEX must be 0..{workers - 1} for CITYIOT_WORKERS={workers}, "
                f"got {v}"
            )
        return v

    @field_validator("workers")
    @classmethod
    def _workers_share(cls, v: int, info: ValidationInfo) -> int:
        if v > 1 and not info.data.get("share_group"):
            raise ValueError(
                f"CITYIOT_WORKERS={v} needs CITYIOT_SHARE_GROUP (e.g. cityiot): without a "
                "shared subscription every worker would store every reading"
            )
        return v

    @model_validator(mode="after")
    def _database_in_run_dir(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.run_dir / 'cityiot.db'}"
        return self

    @model_validator(mode="after")
    def _sessions_share(self) -> Settings:
        if self.mqtt_sessions > 1 and not self.share_group:
            raise ValueError(
                f"CITYIOT_MQTT_SESSIONS={self.mqtt_sessions} needs CITYIOT_SHARE_GROUP (e.g. "
                "cityiot): the sessions split the stream as members of one shared "
                "subscription; without it every session would receive every reading"
            )
        return self

    @model_validator(mode="after")
    def _key_needs_cert(self) -> Settings:
        if self.mqtt_key_file and not self.mqtt_cert_file:
            raise ValueError(
                "CITYIOT_MQTT_KEY_FILE is set but CITYIOT_MQTT_CERT_FILE is not: give the "
                "client certificate the key belongs to"
            )
        return self

    @model_validator(mode="after")
    def _api_tls_pair(self) -> Settings:
        cert, key = self.api_tls_cert_file, self.api_tls_key_file
        if bool(cert) != bool(key):
            given, missing = (
                ("CITYIOT_API_TLS_CERT_FILE", "CITYIOT_API_TLS_KEY_FILE")
                if cert
                else ("CITYIOT_API_TLS_KEY_FILE", "CITYIOT_API_TLS_CERT_FILE")
            )
            raise ValueError(
                f"{given} is set but {missing} is not: HTTPS needs both the certificate and "
                "its private key (or set neither for plain HTTP)"
            )
        if cert:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
            except ssl.SSLError as exc:
                raise ValueError(
                    f"CITYIOT_API_TLS_CERT_FILE / CITYIOT_API_TLS_KEY_FILE: {cert} and {key} "
                    f"are not a PEM certificate and its private key ({exc.reason or exc}); give "
                    "the certificate (its chain after it) and the key it was issued for"
                ) from None
        return self

    @property
    def api_tls(self) -> bool:
        """Whether the API serves HTTPS (``CITYIOT_API_TLS_CERT_FILE`` and ``_KEY_FILE``)."""
        return bool(self.api_tls_cert_file)

    @property
    def api_forwarded_allow_list(self) -> list[str]:
        """``CITYIOT_API_FORWARDED_ALLOW_IPS`` as a list; empty: no proxy trusted."""
        return self.api_forwarded_allow_ips.split(",") if self.api_forwarded_allow_ips else []

    @property
    def mqtt_tls(self) -> MqttTls:
        """The TLS files for ``mqtts://`` URLs (both the platform's and ChirpStack's)."""
        return MqttTls(self.mqtt_ca_file, self.mqtt_cert_file, self.mqtt_key_file)

    def mqtt_target(self) -> MqttTarget:
        """``CITYIOT_MQTT_URL`` with the TLS files: what every platform client connects to."""
        return MqttTarget(self.mqtt_url, tls=self.mqtt_tls)

    def chirpstack_mqtt_target(self) -> MqttTarget:
        """``CITYIOT_CHIRPSTACK_MQTT_URL`` with the same TLS files."""
        return MqttTarget(
            self.chirpstack_mqtt_url, tls=self.mqtt_tls, setting="CITYIOT_CHIRPSTACK_MQTT_URL"
        )

    @property
    def worker_client_id(self) -> str:
        """The ingest's MQTT client id (its persistent session): ``mqtt_client_id``, with
        ``-w<index>`` appended when there are several workers, so no two share a session."""
        if self.workers > 1:
            return f"{self.mqtt_client_id}-w{self.worker_index}"
        return self.mqtt_client_id

    @property
    def broker_message_size_limit(self) -> int:
        """The broker's ``message_size_limit``: four times the payload cap, so a message a
        little over the cap still reaches the ingest and becomes a dead letter saying what to
        change, while one of megabytes never leaves the broker."""
        return 4 * self.max_payload_bytes

    @property
    def spool_path(self) -> Path:
        """``spool_dir``, else ``<run_dir>/spool`` (``spool-w<index>`` with several workers)."""
        if self.spool_dir is not None:
            return self.spool_dir
        if self.workers > 1:
            return self.run_dir / f"spool-w{self.worker_index}"
        return self.run_dir / "spool"

    @property
    def retention_s(self) -> int:
        unit = {"h": 3600, "d": 86400, "w": 7 * 86400}[self.retention[-1]]
        return int(self.retention[:-1]) * unit


MQTT_SCHEMES = ("mqtt", "tcp", "mqtts", "ssl")
_TLS_SCHEMES = ("mqtts", "ssl")


def _check_readable(setting: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ValueError(
            f"{setting}: cannot read {path} ({exc.strerror}); give a readable PEM file"
        ) from None


class MqttTls:
    """The PEM files of TLS to the broker: the CA to trust (empty: the system's trust store)
    and an optional client certificate and key."""

    def __init__(
        self,
        ca_file: str = "",
        cert_file: str = "",
        key_file: str = "",
        *,
        names: tuple[str, str, str] = (
            "CITYIOT_MQTT_CA_FILE",
            "CITYIOT_MQTT_CERT_FILE",
            "CITYIOT_MQTT_KEY_FILE",
        ),
    ) -> None:
        self.ca_file = ca_file
        self.cert_file = cert_file
        self.key_file = key_file
        # What messages call the three files: the settings, or e.g. a channel's options.
        self.ca_name, self.cert_name, self.key_name = names

    @property
    def trusted(self) -> str:
        """Who the broker's certificate must be signed by, for messages."""
        if self.ca_file:
            return f"{self.ca_name} ({self.ca_file})"
        return f"a CA of the system's trust store ({self.ca_name} is empty)"

    def context(self, *, check_hostname: bool = True) -> ssl.SSLContext:
        """A client context: the broker's chain verified against the CA, its host name
        checked (``check_hostname=False`` only to read the names of a refused certificate),
        our certificate sent when one is set. Raises ValueError naming a bad file."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.check_hostname = check_hostname
        for setting, path in (
            (self.ca_name, self.ca_file),
            (self.cert_name, self.cert_file),
            (self.key_name, self.key_file),
        ):
            if path:
                _check_readable(setting, path)
        if self.ca_file:
            try:
                context.load_verify_locations(cafile=self.ca_file)
            except ssl.SSLError as exc:
                raise ValueError(
                    f"{self.ca_name}: {self.ca_file} holds no PEM certificate ({exc}); "
                    "give the CA certificate that signed the broker's"
                ) from None
        if self.cert_file:
            try:
                context.load_cert_chain(self.cert_file, self.key_file or None)
            except ssl.SSLError as exc:
                raise ValueError(
                    f"{self.cert_name} / {self.key_name}: {self.cert_file} and "
                    f"{self.key_file or '(key in the same file)'} are not a PEM certificate and "
                    f"its private key ({exc})"
                ) from None
        return context


class MqttTarget:
    """The parts of an ``mqtt://user:pass@host:port`` (or ``mqtts://…:8883``) URL, and for
    ``mqtts://`` the TLS context to connect with.

    ``setting`` names the URL's variable in messages (``CITYIOT_MQTT_URL`` by default)."""

    def __init__(
        self, url: str, *, tls: MqttTls | None = None, setting: str = "CITYIOT_MQTT_URL"
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in MQTT_SCHEMES or not parts.hostname:
            raise ValueError(
                f"{setting} must look like mqtt://user:pass@host:1883 or "
                f"mqtts://user:pass@host:8883, got {url!r}"
            )
        self.setting = setting
        self.tls: MqttTls | None = (tls or MqttTls()) if parts.scheme in _TLS_SCHEMES else None
        self.host: str = parts.hostname
        self.port: int = parts.port or (8883 if self.tls else 1883)
        self.username: str | None = unquote(parts.username) if parts.username else None
        self.password: str | None = unquote(parts.password) if parts.password else None

    @property
    def scheme(self) -> str:
        return "mqtts" if self.tls else "mqtt"

    @property
    def address(self) -> str:
        """``mqtt(s)://host:port``, no account: for messages and printing."""
        return f"{self.scheme}://{self.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for ``mqtts://`` (host name checked), None for plain ``mqtt://``."""
        return None if self.tls is None else self.tls.context()

    def certificate_names(self, timeout_s: float = 5.0) -> list[str]:
        """The names in the broker's certificate (its subjectAltName), read by a handshake
        that verifies the chain but not the host name: what a host-name refusal should
        name. Empty when that handshake fails too. Blocking: call it in a thread."""
        if self.tls is None:
            return []
        try:
            context = self.tls.context(check_hostname=False)
            with (
                socket.create_connection((self.host, self.port), timeout=timeout_s) as raw,
                context.wrap_socket(raw) as tls,
            ):
                cert = tls.getpeercert() or {}
        except (OSError, ValueError):
            return []
        sans = cert.get("subjectAltName", ())  # ((type, name), ...), e.g. ("DNS", "localhost")
        return [str(entry[1]) for entry in sans if isinstance(entry, tuple) and len(entry) == 2]

    def explain_tls_failure(
        self, error: BaseException | str, names: list[str] | None = None
    ) -> str:
        """What to fix, for a failed TLS handshake with this broker (``error`` is the
        exception or, where a library kept only its text, that text). ``names``: the
        certificate's names (``certificate_names``) for a host-name refusal."""
        text = str(error)
        where = f"the MQTT broker at {self.host}:{self.port} ({self.setting})"
        tls = self.tls or MqttTls()
        if "Hostname mismatch" in text or "IP address mismatch" in text:
            given = ", ".join(names) if names else "another name"
            return (
                f"{where}: the certificate is for {given}, not {self.host}: connect by that "
                f"name (in {self.setting}), or have the broker's certificate issued for "
                f"{self.host}"
            )
        if "certificate has expired" in text:
            return f"{where}: the broker's certificate has expired: renew it ({text})"
        if "CERTIFICATE_VERIFY_FAILED" in text or isinstance(error, ssl.SSLCertVerificationError):
            return (
                f"{where}: the broker's certificate is not signed by {tls.trusted}: set "
                f"{tls.ca_name} to the CA that signed it ({text})"
            )
        if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
            return (
                f"{where}: this port does not speak TLS: use mqtt:// for it, or the broker's "
                "TLS port (8883)"
            )
        if "certificate required" in text.lower() and not tls.cert_file:
            return (
                f"{where}: the broker asks for a client certificate: set "
                f"{tls.cert_name} and {tls.key_name}"
            )
        if "unknown ca" in text.lower() or "bad certificate" in text.lower():
            return (
                f"{where}: the broker refused our client certificate "
                f"({tls.cert_name} {tls.cert_file}): have it signed by a CA the broker "
                f"trusts ({text})"
            )
        return f"{where}: TLS handshake failed: {text}"

    def __repr__(self) -> str:  # never shows the password
        return f"MqttTarget({self.scheme}://{self.host}:{self.port}, user={self.username!r})"
