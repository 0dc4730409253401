"""Local Mosquitto and InfluxDB processes for ``cityiot run`` and the tests (docs/design.md §3).

Each service lives entirely under ``<run_dir>/<name>/``: rendered config, data, log, pid
file and the ports it last used. ``start()`` reuses that data (so ``make run`` keeps its
readings) and, when it can, the same ports; ``restart()`` always keeps both, which is what
fault tests need. Everything here is synchronous: call it from tests, the CLI, or
``asyncio.to_thread``.

    with LocalBroker(Path(".run")) as broker, LocalInflux(Path(".run")) as influx:
        print(broker.url, influx.url)
"""

from __future__ import annotations

import abc
import base64
import contextlib
import fcntl
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from types import TracebackType
from typing import ClassVar, Self

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
HOST = "127.0.0.1"
# Debian keeps daemons in sbin, which a non-root PATH often lacks.
_SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
_PACKAGES = {"mosquitto": "mosquitto", "influxd": "influxdb", "nats-server": "nats-server"}
_START_ATTEMPTS = 3  # fresh ports after an "address already in use" race with another process


class ServiceError(RuntimeError):
    """A local service could not be found, started or stopped; the message says what to do."""


class ExecutableNotFound(ServiceError):
    """The service's program is not installed."""


def find_executable(name: str, path: str | None = None) -> str:
    """Absolute path of ``name`` on ``path`` (default: ``$PATH`` plus the sbin directories)."""
    if path is None:
        path = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN_DIRS])
    found = shutil.which(name, path=path)
    if found is None:
        package = _PACKAGES.get(name, name)
        raise ExecutableNotFound(
            f"{name} not found: install it with `apt-get install {package}` "
            "or run `make run`, which installs it"
        )
    return found


# Ports handed out by free_port(): by default below the range the kernel takes outgoing
# connections' local ports from (32768-60999 on Linux), so a connection made between the pick
# and the server's bind cannot hold it, and above the well-known services' ports. A machine
# whose outgoing range covers these gets the widest stretch outside its range instead.
FREE_PORTS = range(20000, 32768)
_LOWEST_PORT = 10000
# A port free_port() handed out stays claimed for CLAIM_S, for every process on the machine
# (test workers side by side, a benchmark beside them): a server stopped for a restart finds
# its port still its own, and two processes never pick the same port at once.
CLAIM_S = 600.0
_CLAIMS_PATH = Path(tempfile.gettempdir()) / "cityiot-port-claims"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on or is bound to right now and that no
    process here has been handed in the last :data:`CLAIM_S` seconds, picked at random
    outside the kernel's range for outgoing connections."""
    ports = ports_outside(*_ephemeral_range())
    with _claims() as claimed:
        for _ in range(200):
            port = secrets.choice(ports)
            if port not in claimed and port_is_free(port):
                claimed[port] = time.time() + CLAIM_S
                return port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a crowded machine
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        claimed[port] = time.time() + CLAIM_S
        return port


def ports_outside(low: int, high: int) -> range:
    """:data:`FREE_PORTS` when the kernel's outgoing range ``low``-``high`` leaves it alone,
    else the widest stretch of ports from 10000 up outside that range."""
    if high < FREE_PORTS.start or low >= FREE_PORTS.stop:
        return FREE_PORTS
    below, above = range(_LOWEST_PORT, low), range(high + 1, 65536)
    widest = max(below, above, key=len)
    return widest if len(widest) >= 1000 else FREE_PORTS


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux; 32768-60999 else)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii")
        low, high = (int(part) for part in text.split()[:2])
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


@contextlib.contextmanager
def _claims() -> Iterator[dict[int, float]]:
    """The ports handed out and when their claims end, read and written back under an
    exclusive lock on the shared claims file (ended claims dropped)."""
    fd = os.open(_CLAIMS_PATH, os.O_RDWR | os.O_CREAT, 0o666)
    with os.fdopen(fd, "r+", encoding="ascii") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        now = time.time()
        claimed: dict[int, float] = {}
        for line in file.read().splitlines():
            with contextlib.suppress(ValueError):
                port, until = line.split()
                if float(until) > now:
                    claimed[int(port)] = float(until)
        yield claimed
        file.seek(0)
        file.truncate()
        file.write("".join(f"{port} {until:.0f}\n" for port, until in claimed.items()))
        file.flush()


def port_is_free(port: int) -> bool:
    """True when a server could listen on ``port`` (connections in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option the servers set, so only a live listener makes the port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


class LocalService(abc.ABC):
    """One local server process under ``<run_dir>/<name>/``; subclasses say how to run it."""

    name: ClassVar[str]
    executable: ClassVar[str]
    template_name: ClassVar[str]
    port_count: ClassVar[int] = 1

    def __init__(
        self,
        run_dir: Path,
        port: int | None = None,
        *,
        ready_timeout_s: float = 30.0,
        template: Path | None = None,
    ) -> None:
        self.dir = Path(run_dir).resolve() / self.name
        self.config_path = self.dir / f"{self.name}.conf"
        self.log_path = self.dir / f"{self.name}.log"
        self.pid_path = self.dir / f"{self.name}.pid"
        self._ports_path = self.dir / "ports"
        self._template = template or TEMPLATE_DIR / self.template_name
        self._requested_port = port
        self._ready_timeout_s = ready_timeout_s
        self._ports: list[int] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._started = False

    # -- what a subclass provides -------------------------------------------------------

    @abc.abstractmethod
    def _placeholders(self) -> dict[str, str]:
        """Values for the config template's placeholders."""

    @abc.abstractmethod
    def _argv(self, program: str) -> list[str]:
        """The command line that starts the server."""

    @abc.abstractmethod
    def _answers(self) -> bool:
        """True once the server serves requests on its port."""

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """Where clients reach the server."""

    # -- public -------------------------------------------------------------------------

    @property
    def ports_needed(self) -> int:
        """How many ports the server listens on (the client port first)."""
        return self.port_count

    @property
    def port(self) -> int:
        """The client port; known once started, and kept by ``restart()``."""
        if not self._ports:
            raise ServiceError(f"{self.name} has not been started: call start() first")
        return self._ports[0]

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start the server and wait until it answers; a no-op when already running."""
        if self.running:
            return self
        program = find_executable(self.executable)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        if self._started:  # restart(): the same ports, or an error
            error = self._launch(program)
        else:
            for _ in range(_START_ATTEMPTS):
                self._ports = self._choose_ports()
                error = self._launch(program)
                raced = error is not None and "address already in use" in error.lower()
                if not raced or self._requested_port is not None:
                    break
        if error is not None:
            raise ServiceError(error)
        self._started = True
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (the server saves its data), then SIGKILL after ``timeout_s``."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            if self._paused:
                process.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._paused = False
        self.pid_path.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL: a crash, for fault tests (only what was saved before survives)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None
        self._paused = False
        self.pid_path.unlink(missing_ok=True)

    def restart(self) -> Self:
        """Stop (if running) and start again on the same port(s) and data."""
        self.stop()
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a hung server)."""
        if not self.running:
            raise ServiceError(f"{self.name} is not running: cannot pause it")
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after ``pause()``."""
        if self._process is not None and self._paused:
            self._process.send_signal(signal.SIGCONT)
        self._paused = False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"port {self._ports[0]}" if self._ports else "not started"
        return f"{type(self).__name__}({self.dir}, {where}, running={self.running})"

    # -- internals ----------------------------------------------------------------------

    def _choose_ports(self) -> list[int]:
        """The requested port, else the ones used last time in this run dir if free, else new."""
        previous: list[int] = []
        with contextlib.suppress(OSError, ValueError):
            previous = [int(p) for p in self._ports_path.read_text().split()]
        if self._requested_port is not None:
            previous[:1] = [self._requested_port]
        ports: list[int] = []
        for i in range(self.ports_needed):
            if i < len(previous) and previous[i] not in ports and port_is_free(previous[i]):
                ports.append(previous[i])
            elif i == 0 and self._requested_port is not None:
                raise ServiceError(
                    f"{self.name}: port {self._requested_port} is in use: choose another port "
                    "or leave it unset to pick a free one"
                )
            else:
                port = free_port()
                while port in ports:
                    port = free_port()
                ports.append(port)
        return ports

    def _launch(self, program: str) -> str | None:
        """Start the process and wait until it answers; the error message when it does not."""
        template = Template(self._template.read_text(encoding="utf-8"))
        try:
            rendered = template.substitute(self._placeholders())
        except (KeyError, ValueError) as e:
            raise ServiceError(f"{self._template}: bad placeholder {e}") from e
        self.config_path.write_text(rendered, encoding="utf-8")
        self._ports_path.write_text(" ".join(map(str, self._ports)) + "\n")
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = self._environment()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._argv(program),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=env,
                start_new_session=True,  # Ctrl-C reaches the CLI, which stops us in order
            )
        self.pid_path.write_text(f"{self._process.pid}\n")
        deadline = time.monotonic() + self._ready_timeout_s
        while True:
            code = self._process.poll()
            if code is not None:
                self._process = None
                self.pid_path.unlink(missing_ok=True)
                return (
                    f"{self.name} exited with code {code} while starting on port "
                    f"{self._ports[0]}: see {self.log_path}\n{self._log_tail(log_start)}"
                )
            # Something answers: ours only if our process holds the listening socket (another
            # run may have taken the same free port a moment before us; ours then fails).
            if self._answers() and _listens(self._process.pid, self._ports[0]):
                return None
            if time.monotonic() > deadline:
                self.kill()
                return (
                    f"{self.name} did not answer on port {self._ports[0]} within "
                    f"{self._ready_timeout_s:g} s: see {self.log_path}\n{self._log_tail(log_start)}"
                )
            time.sleep(0.05)

    def _environment(self) -> dict[str, str]:
        """The process's environment: ours, less the server's own variables (e.g.
        INFLUXDB_HTTP_BIND_ADDRESS would override the file)."""
        return {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}

    def _log_tail(self, offset: int, limit: int = 2000) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return text[-limit:].strip()

    def _stop_leftover(self) -> None:
        """End a process a crashed earlier run left on this run dir: it holds our data files."""
        try:
            pid = int(self.pid_path.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            self.pid_path.unlink(missing_ok=True)
            return
        if str(self.config_path).encode() not in cmdline:  # pid reused by something else
            self.pid_path.unlink(missing_ok=True)
            return
        for sig, wait_s in ((signal.SIGCONT, 0.0), (signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait_s
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if sig != signal.SIGCONT and not _alive(pid):
                break
        self.pid_path.unlink(missing_ok=True)


def write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by its owner only, from its first byte."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _listens(pid: int, port: int) -> bool:
    """True when process ``pid`` holds a socket listening on TCP ``port``.

    Read from /proc (Linux); where /proc is missing it cannot be told, and the answer is True.
    """
    if not Path("/proc/net/tcp").exists():
        return True
    inodes: set[str] = set()
    try:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(FileNotFoundError), open(table, encoding="ascii") as f:
                next(f, None)  # the header
                for line in f:
                    fields = line.split()
                    # local address "0100007F:1F90", state 0A = LISTEN, inode in column 10
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{fields[9]}]")
        fds = Path(f"/proc/{pid}/fd")
        return any(os.readlink(fd) in inodes for fd in fds.iterdir())
    except OSError:  # the process ended meanwhile, or its fds are not ours to read
        return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


# The broker plugin that keeps the platform's client ids to the platform's accounts
# (cityiot/platform/broker_plugin/README.md): package data, so an installed cityiot finds it too.
PLUGIN_SOURCE = Path(__file__).resolve().parent / "broker_plugin" / "cityiot_clientid.c"
_PLUGIN_PACKAGES = "gcc libc6-dev mosquitto-dev libmosquitto-dev"


def plugin_cache_dir() -> Path:
    """Where compiled plugins are kept: ``$XDG_CACHE_HOME/cityiot`` (default ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cityiot"


def clientid_plugin(cache_dir: Path | None = None, source: Path = PLUGIN_SOURCE) -> Path:
    """The compiled client-id plugin (a ``.so`` for Mosquitto's ``plugin`` line).

    Built with ``cc -shared -fPIC`` on first use and kept under ``cache_dir`` by the source's
    hash, so a changed source is built again and concurrent callers never see half a file.
    Raises ServiceError naming the Debian packages when the compiler or headers are missing.
    """
    try:
        code = source.read_bytes()
    except OSError as exc:
        raise ServiceError(f"broker plugin source {source} unreadable ({exc.strerror})") from None
    directory = cache_dir or plugin_cache_dir()
    target = directory / f"cityiot_clientid-{hashlib.sha256(code).hexdigest()[:16]}.so"
    if target.exists():
        return target
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise ServiceError(
            "no C compiler to build the broker's client-id plugin: "
            f"install one with `apt-get install {_PLUGIN_PACKAGES}` (or run `make deps`)"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ServiceError(
            f"cannot create {directory} for the broker plugin ({exc.strerror}); "
            "set XDG_CACHE_HOME to a writable directory"
        ) from None
    tmp = directory / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}"
    argv = [compiler, "-shared", "-fPIC", "-O2", "-o", str(tmp), str(source)]
    try:
        built = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        if built.returncode != 0:
            headers = "mosquitto" in built.stderr and "No such file" in built.stderr
            hint = "the Mosquitto headers are missing" if headers else "compiling failed"
            raise ServiceError(
                f"cannot build the broker plugin {source}: {hint}; install "
                f"`apt-get install {_PLUGIN_PACKAGES}` (or run `make deps`)\n"
                f"{built.stderr.strip()[-1500:]}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


@dataclass(frozen=True, slots=True)
class SideListener:
    """A second listener of a :class:`LocalBroker`, on a port of its own, whose accounts
    and ACL are its own files: accounts the platform does not manage (its password and ACL
    files are rewritten from the database on every vendor change), e.g. the simulated
    ChirpStack's, which may publish only under ``application/#``. Messages cross listeners:
    the platform's clients on the main one receive what is published here."""

    password_file: Path
    acl_file: Path


@dataclass(frozen=True, slots=True)
class TlsListener:
    """A TLS listener of a :class:`LocalBroker` beside the plain one, on a port of its own,
    with the same accounts and ACL: ``certfile`` / ``keyfile`` are the broker's certificate
    and key (PEM), ``cafile`` the CA that signed client certificates. With
    ``require_certificate`` a client must present one signed by ``cafile``."""

    certfile: Path
    keyfile: Path
    cafile: Path
    require_certificate: bool = False


class LocalBroker(LocalService):
    """Mosquitto 2 on 127.0.0.1, persistence on (QoS 1 sessions survive restarts).

    Anonymous by default; given ``password_file`` (``mosquitto_passwd`` format) anonymous
    clients are refused unless ``allow_anonymous`` says otherwise; ``acl_file`` restricts
    topics. With a ``password_file`` (or ``guard_client_ids=True``) the client-id plugin
    loads: client ids starting with one of ``reserved_prefixes`` are refused to all but
    ``platform_users``; with ``vendor_map`` a vendor's ids must start with its vendor id; and
    telemetry is never retained. ``max_payload_bytes`` becomes ``message_size_limit`` (None:
    no limit). The log is rotated at start when over ``log_max_bytes`` (see ``rotate_log``).
    ``side_listener`` opens a second port (``side_port``) with its own accounts and ACL
    (Mosquitto's ``per_listener_settings``), guarded by the client-id plugin like the first.
    ``max_inflight`` is ``max_inflight_messages``: how many QoS 1 messages the broker sends a
    client before it waits for their PUBACKs (EMQX's default window is 32).
    """

    name = "mosquitto"
    executable = "mosquitto"
    template_name = "mosquitto.conf"

    def __init__(
        self,
        run_dir: Path,
        port: int | None = None,
        *,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        allow_anonymous: bool | None = None,
        max_payload_bytes: int | None = None,
        guard_client_ids: bool | None = None,
        reserved_prefixes: Sequence[str] = ("cityiot",),
        platform_users: Sequence[str] = ("cityiot",),
        vendor_map: Path | None = None,
        plugin_cache_dir: Path | None = None,
        log_max_bytes: int = 16 << 20,
        side_listener: SideListener | None = None,
        tls_listener: TlsListener | None = None,
        max_inflight: int = 40000,
        ready_timeout_s: float = 30.0,
        template: Path | None = None,
    ) -> None:
        super().__init__(run_dir, port, ready_timeout_s=ready_timeout_s, template=template)
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be at least 1 (got {max_inflight})")
        self.max_inflight = max_inflight
        self.side_listener = side_listener
        self.tls_listener = tls_listener
        self.password_file = password_file
        self.acl_file = acl_file
        self.allow_anonymous = password_file is None if allow_anonymous is None else allow_anonymous
        self.max_payload_bytes = max_payload_bytes
        # Anonymous test brokers let clients take any id, the ingest's included.
        guard = password_file is not None if guard_client_ids is None else guard_client_ids
        self.guard_client_ids = guard
        self.reserved_prefixes = list(reserved_prefixes)
        self.platform_users = list(platform_users)
        self.vendor_map = vendor_map
        self._plugin_cache_dir = plugin_cache_dir
        self.log_max_bytes = log_max_bytes

    def start(self) -> Self:
        if not self.running and self.log_path.exists():
            with contextlib.suppress(OSError):
                if self.log_path.stat().st_size > self.log_max_bytes:
                    self.log_path.replace(self.log_path.with_name(self.log_path.name + ".1"))
        return super().start()

    def rotate_log(self) -> None:
        """Move the log to ``<log>.1`` (one old file kept) and make Mosquitto reopen it.

        SIGHUP makes Mosquitto 2.0 reopen its log, and re-read its password and ACL files,
        which is harmless."""
        self.log_path.replace(self.log_path.with_name(self.log_path.name + ".1"))
        if self.running and self._process is not None:
            self._process.send_signal(signal.SIGHUP)

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

    @property
    def host(self) -> str:
        return HOST

    @property
    def ports_needed(self) -> int:
        # The main port, then the side listener's, then the TLS listener's.
        return 1 + (self.side_listener is not None) + (self.tls_listener is not None)

    @property
    def tls_port(self) -> int:
        """The TLS listener's port (ServiceError without one, or before start)."""
        if self.tls_listener is None:
            raise ServiceError("this broker has no TLS listener: pass tls_listener=")
        self.port  # noqa: B018 -- raises when not started
        return self._ports[-1]

    @property
    def tls_url(self) -> str:
        """``mqtts://localhost:<tls_port>``: by name, the name a local certificate is for."""
        return f"mqtts://localhost:{self.tls_port}"

    @property
    def side_port(self) -> int:
        """The side listener's port (ServiceError without one, or before start)."""
        if self.side_listener is None:
            raise ServiceError("this broker has no side listener: pass side_listener=")
        self.port  # noqa: B018 -- raises when not started
        return self._ports[1]

    def _plugin_lines(self) -> list[str]:
        if not self.guard_client_ids:
            return []
        lines = [
            f"plugin {clientid_plugin(self._plugin_cache_dir)}",
            f"plugin_opt_reserved_prefixes {','.join(self.reserved_prefixes)}",
            f"plugin_opt_platform_users {','.join(self.platform_users)}",
        ]
        if self.vendor_map is not None:
            lines.append(f"plugin_opt_vendor_map {Path(self.vendor_map).resolve()}")
        return lines

    def _side_lines(self) -> list[str]:
        side = self.side_listener
        if side is None:
            return []
        return [
            "# The side listener: accounts and ACL of its own (per_listener_settings).",
            f"listener {self._ports[1]} {HOST}",
            "max_connections 100",
            "allow_anonymous false",
            f"password_file {Path(side.password_file).resolve()}",
            f"acl_file {Path(side.acl_file).resolve()}",
            # No vendor map here: its accounts are no vendors'.
            *(line for line in self._plugin_lines() if "vendor_map" not in line),
        ]

    def _tls_lines(self) -> list[str]:
        tls = self.tls_listener
        if tls is None:
            return []
        lines = [
            "# The TLS listener: the same accounts and ACL as the plain one.",
            f"listener {self._ports[-1]} {HOST}",
            f"certfile {Path(tls.certfile).resolve()}",
            f"keyfile {Path(tls.keyfile).resolve()}",
            f"cafile {Path(tls.cafile).resolve()}",
            f"require_certificate {'true' if tls.require_certificate else 'false'}",
        ]
        if self.side_listener is not None:  # per_listener_settings: auth lines of its own
            lines += [
                f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
                *self._auth_lines(),
                *self._plugin_lines(),
            ]
        return lines

    def _auth_lines(self) -> list[str]:
        auth = []
        if self.password_file is not None:
            auth.append(f"password_file {Path(self.password_file).resolve()}")
        if self.acl_file is not None:
            auth.append(f"acl_file {Path(self.acl_file).resolve()}")
        return auth

    def _placeholders(self) -> dict[str, str]:
        auth = self._auth_lines()
        plugin = self._plugin_lines()
        return {
            "port": str(self.port),
            # As root Mosquitto would drop to user "mosquitto", who cannot write our run dir.
            "user": pwd.getpwuid(os.geteuid()).pw_name,
            "run_dir": f"{self.dir}/",
            "log_file": str(self.log_path),
            "allow_anonymous": "true" if self.allow_anonymous else "false",
            "auth": "\n".join(auth),
            "plugin": "\n".join(plugin),
            "max_payload": str(self.max_payload_bytes or 0),
            "max_inflight": str(self.max_inflight),
            "per_listener_settings": "true" if self.side_listener is not None else "false",
            "side_listener": "\n".join(self._side_lines()),
            "tls_listener": "\n".join(self._tls_lines()),
        }

    def _argv(self, program: str) -> list[str]:
        return [program, "-c", str(self.config_path)]

    def _answers(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1.0):
                return True
        except OSError:
            return False


class LocalNats(LocalService):
    """A NATS server with MQTT on JetStream on 127.0.0.1: a second MQTT broker
    implementation for the tests (``port`` is the MQTT port, ``nats_port`` the NATS one).

    Anonymous; JetStream keeps the MQTT sessions and their QoS 1 messages under its run dir,
    so they survive a restart. ``max_ack_pending`` is the in-flight window of a QoS 1
    subscription, ``ack_wait`` how long a delivery may stay unacknowledged before NATS sends
    it again.
    """

    name = "nats"
    executable = "nats-server"
    template_name = "nats.conf"
    port_count = 2

    def __init__(
        self,
        run_dir: Path,
        port: int | None = None,
        *,
        max_ack_pending: int = 1024,
        ack_wait: str = "30s",
        ready_timeout_s: float = 30.0,
        template: Path | None = None,
    ) -> None:
        super().__init__(run_dir, port, ready_timeout_s=ready_timeout_s, template=template)
        if not 1 <= max_ack_pending <= 65535:
            raise ValueError(f"max_ack_pending must be 1..65535 (got {max_ack_pending})")
        self.max_ack_pending = max_ack_pending
        self.ack_wait = ack_wait

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

    @property
    def host(self) -> str:
        return HOST

    @property
    def nats_port(self) -> int:
        self.port  # noqa: B018 -- raises when not started
        return self._ports[1]

    def _placeholders(self) -> dict[str, str]:
        return {
            "server_name": f"cityiot-{self.port}",
            "port": str(self.nats_port),
            "mqtt_port": str(self.port),
            "store_dir": str(self.dir / "jetstream"),
            "log_file": str(self.log_path),
            "max_ack_pending": str(self.max_ack_pending),
            "ack_wait": self.ack_wait,
            "lame_duck_duration": "30s",
        }

    def _argv(self, program: str) -> list[str]:
        return [program, "-c", str(self.config_path)]

    def _answers(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1.0):
                return True
        except OSError:
            return False


# InfluxDB is a Go program: its heap is collected whenever it has grown by GOGC % since the
# last collection. Collecting four times less often costs it a third less CPU in a drain, CPU
# the ingest gets on a shared machine, for a larger peak heap (figures: the CHANGELOG and
# docs/benchmark.md). GOMEMLIMIT bounds that: near it Go collects more often, whatever GOGC says.
INFLUX_GOGC = "400"
# InfluxDB 1.x's series indexes: on disk (the platform's) and in memory (its default).
INFLUX_INDEXES = ("tsi1", "inmem")


def influx_memory_limit() -> int:
    """GOMEMLIMIT for the local InfluxDB (bytes): a quarter of the machine's memory, at
    least 1 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        total = 0
    return max(1 << 30, total // 4)


class LocalInflux(LocalService):
    """InfluxDB 1.x on 127.0.0.1: HTTP API on ``port``, RPC (backup/restore) on ``rpc_port``.

    With ``auth=True`` every request but ``/ping`` needs credentials: an admin user
    (``username``) whose generated password is kept in ``<dir>/admin-password`` (0600) and
    reused, and created on the first start. Without, no credentials are asked (the tests'
    shared instance). ``index`` is the series index of new shards: ``tsi1`` (on disk, the
    platform's) or ``inmem`` (InfluxDB's default, for comparing the two).
    """

    name = "influxdb"
    executable = "influxd"
    template_name = "influxdb.conf"
    port_count = 2
    admin_user = "admin"

    def __init__(
        self,
        run_dir: Path,
        port: int | None = None,
        *,
        auth: bool = False,
        ready_timeout_s: float = 30.0,
        template: Path | None = None,
        index: str = "tsi1",
    ) -> None:
        super().__init__(run_dir, port, ready_timeout_s=ready_timeout_s, template=template)
        if index not in INFLUX_INDEXES:
            raise ValueError(f"index {index!r}: one of {', '.join(INFLUX_INDEXES)}")
        self.auth = auth
        self.index = index
        self.password_path = self.dir / "admin-password"

    @property
    def username(self) -> str:
        """The admin user's name; empty without auth."""
        return self.admin_user if self.auth else ""

    @property
    def password(self) -> str:
        """The admin user's password (read from ``password_path``); empty without auth."""
        if not self.auth:
            return ""
        try:
            return self.password_path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ServiceError(
                f"{self.password_path} unreadable ({exc.strerror}): start() makes it"
            ) from None

    def start(self) -> Self:
        if self.running:
            return self
        if self.auth:
            self.dir.mkdir(parents=True, exist_ok=True)
            if not self.password_path.exists():
                write_private(self.password_path, secrets.token_urlsafe(24) + "\n")
        super().start()
        if self.auth:
            self._ensure_admin()
        return self

    def _query(self, q: str, credentials: bool) -> tuple[int, str]:
        request = urllib.request.Request(
            f"{self.url}/query", urllib.parse.urlencode({"q": q}).encode()
        )
        if credentials:
            basic = base64.b64encode(f"{self.admin_user}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {basic}")
        try:
            with urllib.request.urlopen(request, timeout=10.0) as response:
                return int(response.status), response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")

    def _ensure_admin(self) -> None:
        """The admin user exists and our password is its password (else ServiceError)."""
        status, text = self._query("SHOW USERS", credentials=True)
        if status == 200 and '"error"' not in text:
            return
        # No user yet: InfluxDB lets anyone create the first admin, and only that.
        password = self.password.replace("\\", "\\\\").replace("'", "\\'")
        create = f"CREATE USER {self.admin_user} WITH PASSWORD '{password}' WITH ALL PRIVILEGES"
        status, text = self._query(create, credentials=False)
        if status == 200 and '"error"' not in text:
            return
        raise ServiceError(
            f"InfluxDB in {self.dir} has users but refuses the password in {self.password_path} "
            f"(HTTP {status}); put the admin's password there, or remove {self.dir} to start "
            "with empty data"
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def rpc_port(self) -> int:
        """The RPC port (``influxd backup -host 127.0.0.1:RPC_PORT``)."""
        return self._ports[1] if self._ports else self.port  # self.port raises when not started

    def _placeholders(self) -> dict[str, str]:
        def toml(path: Path) -> str:  # inside a TOML basic string
            return str(path).replace("\\", "\\\\").replace('"', '\\"')

        return {
            "http_port": str(self._ports[0]),
            "rpc_port": str(self._ports[1]),
            "meta_dir": toml(self.dir / "meta"),
            "data_dir": toml(self.dir / "data"),
            "wal_dir": toml(self.dir / "wal"),
            "auth_enabled": "true" if self.auth else "false",
            "index_version": self.index,
        }

    def _argv(self, program: str) -> list[str]:
        return [program, "run", "-config", str(self.config_path)]

    def _environment(self) -> dict[str, str]:
        """Go's collector tuned for InfluxDB (:data:`INFLUX_GOGC`, :func:`influx_memory_limit`),
        unless ``GOGC`` or ``GOMEMLIMIT`` is set in our environment: those are passed on."""
        env = super()._environment()
        env.setdefault("GOGC", INFLUX_GOGC)
        env.setdefault("GOMEMLIMIT", f"{influx_memory_limit() >> 20}MiB")
        return env

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=1.0) as response:
                return int(response.status) == 204
        except (OSError, urllib.error.URLError):
            return False
