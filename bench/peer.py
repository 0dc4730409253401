"""The benchmark's peer: Node-RED 4.x running MQTT in → join → function → InfluxDB batch write.

``ensure_installed()`` puts ``node-red@4`` and ``node-red-contrib-influxdb@0.7`` into a cache
dir with npm (once; later calls only check the versions). ``NodeRedPeer`` renders a headless
settings file and the flow from ``bench/nodered/`` into a work dir, starts ``node red.js`` and
returns once the flow runs and its telemetry subscription is live; it stops Node-RED on exit.

    red_js = ensure_installed()
    with NodeRedPeer(red_js, Path(".bench/peer"), mqtt_host=broker.host,
                     mqtt_port=broker.port, influx_url=influx.url, database="bench_peer",
                     kinds={"MH-001": "manhole"}) as peer:
        ...  # publish; read /proc/{peer.pid}/stat and status for CPU and peak RSS

The flow validates nothing (that is the point of the comparison): each message's metrics
become one point of measurement ``kinds[device_id]`` tagged ``device_id`` and ``vendor``
(from the topic) at the message's ``ts`` in ms. Messages of devices not in ``kinds`` have
no measurement and are dropped. Metric values line protocol cannot carry (null, objects,
arrays) are left out, since one would make InfluxDB refuse the whole batch; every number
is written as a float (``87`` and ``87.5`` never conflict), so only a metric that changes
between number, string and boolean can cost points, and then only those points.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from string import Template
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

TEMPLATE_DIR = Path(__file__).resolve().parent / "nodered"
# The checkout's .bench/ (gitignored), beside bench/ in an editable install.
DEFAULT_CACHE_DIR = Path(__file__).resolve().parent.parent / ".bench" / "node-red"
DEFAULT_TOPIC_FILTER = "city/+/+/telemetry"

# npm ranges, and the version prefixes an installed copy must have to be reused.
PACKAGES: dict[str, tuple[str, str]] = {
    "node-red": ("^4.0.0", "4."),
    "node-red-contrib-influxdb": ("~0.7.0", "0.7."),
}
MIN_NODE = (18, 5)  # node-red 4's "engines"
_INSTALL_TIMEOUT_S = 600.0
_STAMP = ".installed.json"  # written after a complete install: a killed npm leaves none
_PROBE_EVERY_S = 0.5


class PeerError(RuntimeError):
    """The peer could not be installed, started or stopped; the message says what to do."""


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- install ------------------------------------------------------------------------------


def ensure_installed(
    cache_dir: Path = DEFAULT_CACHE_DIR, progress: Callable[[str], None] = _to_stderr
) -> Path:
    """Node-RED 4.x and node-red-contrib-influxdb 0.7.x installed under ``cache_dir``.

    Runs ``npm install`` only when they are missing, incomplete or of other versions (safe
    to call from several processes at once: they take turns). Reports each step to
    ``progress`` as a structured line. Returns the path of ``red.js``; raises ``PeerError``
    when node or npm is missing or too old, or npm fails.
    """
    node = _executable("node")
    npm = _executable("npm")
    node_version = _node_version(node)
    cache_dir = Path(cache_dir).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    red_js = cache_dir / "node_modules" / "node-red" / "red.js"
    with _locked(cache_dir / ".install.lock"):
        versions = _complete_install(cache_dir)
        if versions is not None:
            progress(f"event=peer_install_cached dir={cache_dir} {_pairs(versions)}")
            return red_js
        wanted = " ".join(f"{name}@{spec}" for name, (spec, _) in PACKAGES.items())
        progress(f"event=peer_install_start dir={cache_dir} node={node_version} want={wanted!r}")
        (cache_dir / _STAMP).unlink(missing_ok=True)
        manifest = {
            "name": "cityiot-bench-peer",
            "private": True,
            "description": "Node-RED for `cityiot bench`, installed by bench/peer.py",
            "dependencies": {name: spec for name, (spec, _) in PACKAGES.items()},
        }
        (cache_dir / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
        log_path = cache_dir / "npm-install.log"
        started = time.monotonic()
        argv = [npm, "install", "--no-audit", "--no-fund", "--omit=dev", "--loglevel=warn"]
        try:
            with log_path.open("wb") as log:
                code = subprocess.run(
                    argv,
                    cwd=cache_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=_INSTALL_TIMEOUT_S,
                    check=False,
                ).returncode
        except subprocess.TimeoutExpired as e:
            raise PeerError(
                f"npm install did not finish within {_INSTALL_TIMEOUT_S:g} s in {cache_dir}: "
                f"check that the npm registry is reachable, then run it again\n"
                f"{_tail(log_path)}"
            ) from e
        if code != 0:
            raise PeerError(
                f"npm install failed with code {code} in {cache_dir} (log: {log_path}): fix "
                f"what npm says below, or delete {cache_dir} and try again\n{_tail(log_path)}"
            )
        versions = _package_versions(cache_dir)
        if not _wanted(versions):
            raise PeerError(
                f"npm installed {_pairs(versions) or 'nothing'} in {cache_dir}, not {wanted}: "
                f"delete {cache_dir} and try again"
            )
        (cache_dir / _STAMP).write_text(json.dumps(versions) + "\n")
        took_s = time.monotonic() - started
        progress(f"event=peer_installed dir={cache_dir} {_pairs(versions)} s={took_s:.1f}")
    return red_js


def installed_versions(cache_dir: Path = DEFAULT_CACHE_DIR) -> dict[str, str]:
    """Versions of node, node-red and node-red-contrib-influxdb the peer runs with.

    Raises ``PeerError`` when ``cache_dir`` holds no complete install (see
    ``ensure_installed``).
    """
    versions = _complete_install(Path(cache_dir).resolve())
    if versions is None:
        raise PeerError(f"no complete Node-RED install in {cache_dir}: run ensure_installed()")
    return {"node": _node_version(_executable("node")), **versions}


def _executable(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise PeerError(
            f"{name} not found: the Node-RED peer needs Node.js "
            f"{MIN_NODE[0]}.{MIN_NODE[1]} or newer with npm (e.g. `apt-get install nodejs npm`)"
        )
    return found


def _node_version(node: str) -> str:
    """``node --version`` without the "v"; raises ``PeerError`` if older than ``MIN_NODE``."""
    try:
        out = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
        version = out.removeprefix("v")
        major, minor = (int(part) for part in version.split(".")[:2])
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        raise PeerError(f"could not run `{node} --version`: {e}") from e
    if (major, minor) < MIN_NODE:
        raise PeerError(
            f"Node.js {version} is too old for Node-RED 4: install Node.js "
            f"{MIN_NODE[0]}.{MIN_NODE[1]} or newer"
        )
    return version


def _package_versions(cache_dir: Path) -> dict[str, str]:
    """The version of each of ``PACKAGES`` found under ``cache_dir/node_modules``."""
    versions: dict[str, str] = {}
    for name in PACKAGES:
        manifest = cache_dir / "node_modules" / name / "package.json"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            versions[name] = str(json.loads(manifest.read_text())["version"])
    return versions


def _wanted(versions: Mapping[str, str]) -> bool:
    return all(versions.get(name, "").startswith(prefix) for name, (_, prefix) in PACKAGES.items())


def _complete_install(cache_dir: Path) -> dict[str, str] | None:
    """The installed versions when a finished install of the wanted ones is there, else None."""
    versions = _package_versions(cache_dir)
    try:
        stamped = json.loads((cache_dir / _STAMP).read_text())
    except (OSError, ValueError):
        return None
    red_js = cache_dir / "node_modules" / "node-red" / "red.js"
    if stamped != versions or not _wanted(versions) or not red_js.is_file():
        return None
    return versions


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _pairs(values: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())


def _tail(path: Path, offset: int = 0, limit: int = 3000) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return text[-limit:].strip()


# -- run ----------------------------------------------------------------------------------


class NodeRedPeer:
    """Node-RED running the peer flow; a context manager that starts and stops it.

    On ``start()`` (or ``with``) it writes ``settings.js``, ``flow.json``, ``flow_cred.json``
    (mode 600) and ``kinds.json`` into ``work_dir``, starts ``node red.js`` with its output
    in ``work_dir/node-red.log``, and returns once the flows have started, the broker node
    is connected and a probe published on the same connection came back: from then on
    every message published on ``topic_filter`` reaches the flow. It raises ``PeerError``
    with the tail of the log when that does not happen within ``ready_timeout_s``, and at
    once when the broker refuses the connection. A Node-RED that a killed bench left
    running on the same ``work_dir`` (its pid in ``node-red.pid``) is stopped first.

    The flow: ``mqtt in`` (clean session, ``qos``, JSON parsed) → ``join`` (``batch_size``
    messages, or what came within ``batch_timeout_s`` of a batch's first) → ``function``
    (messages → points) → ``influxdb batch`` (InfluxDB 1.x ``influx_url``, ``database``,
    precision ms). ``kinds`` maps device_id → kind, the measurement.
    """

    def __init__(
        self,
        red_js: Path,
        work_dir: Path,
        *,
        mqtt_host: str,
        mqtt_port: int,
        influx_url: str,
        database: str,
        kinds: Mapping[str, str],
        mqtt_username: str | None = None,
        mqtt_password: str | None = None,
        topic_filter: str = DEFAULT_TOPIC_FILTER,
        qos: int = 0,
        batch_size: int = 5000,
        batch_timeout_s: float = 1.0,
        ready_timeout_s: float = 60.0,
        stop_timeout_s: float = 15.0,
    ) -> None:
        if qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, not {qos!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if batch_timeout_s <= 0:
            raise ValueError(f"batch_timeout_s must be positive, not {batch_timeout_s}")
        if not database:
            raise ValueError("database must name an InfluxDB database")
        url = urlsplit(influx_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"influx_url must look like http://HOST:PORT, not {influx_url!r}")
        self.red_js = Path(red_js).resolve()
        self.work_dir = Path(work_dir).resolve()
        self.mqtt_host = mqtt_host
        self.mqtt_port = mqtt_port
        self.mqtt_username = mqtt_username
        self.mqtt_password = mqtt_password
        self.influx_url = influx_url
        self.database = database
        self.kinds = dict(kinds)
        self.topic_filter = topic_filter
        self.qos = qos
        self.batch_size = batch_size
        self.batch_timeout_s = batch_timeout_s
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.log_path = self.work_dir / "node-red.log"
        self.settings_path = self.work_dir / "settings.js"
        self.flow_path = self.work_dir / "flow.json"
        self.pid_path = self.work_dir / "node-red.pid"
        self._influx_tls = url.scheme == "https"
        self._influx_host = url.hostname
        self._influx_port = url.port or (443 if self._influx_tls else 8086)
        self._process: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    # -- public -------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The node process (for /proc/<pid>/stat CPU times and /proc/<pid>/status VmHWM)."""
        if self._process is None:
            raise PeerError("Node-RED is not running: call start() first")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Render the files, start Node-RED and wait until the flow receives telemetry."""
        if self.running:
            return self
        if not self.red_js.is_file():
            raise PeerError(f"{self.red_js} not found: run ensure_installed() first")
        node = _executable("node")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        nonce = secrets.token_hex(6)
        self._render(nonce)
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    node,
                    str(self.red_js),
                    "--settings",
                    str(self.settings_path),
                    "--userDir",
                    str(self.work_dir),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.work_dir,
                start_new_session=True,  # Ctrl-C reaches the bench, which stops us in order
            )
        self.pid_path.write_text(f"{self._process.pid}\n")
        try:
            self._wait_ready(nonce)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM (Node-RED closes its flows), then SIGKILL after ``stop_timeout_s``."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.pid_path.unlink(missing_ok=True)

    def log(self) -> str:
        """What Node-RED printed since the last ``start()``."""
        return _tail(self.log_path, self._log_start, limit=sys.maxsize)

    def errors(self) -> list[str]:
        """Node-RED's ``[error]`` lines since the last ``start()`` (e.g. refused writes)."""
        return [line for line in self.log().splitlines() if "[error]" in line]

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
        return f"NodeRedPeer({self.work_dir}, running={self.running})"

    # -- internals ----------------------------------------------------------------------

    def _probe_topic(self, nonce: str) -> str:
        return f"cityiot-bench/peer-probe/{nonce}"

    def _render(self, nonce: str) -> None:
        """Write settings.js, flow.json, its credentials and kinds.json into ``work_dir``."""
        kinds_path = self.work_dir / "kinds.json"
        kinds_path.write_text(json.dumps(self.kinds, sort_keys=True) + "\n")

        nodes: list[dict[str, Any]] = json.loads((TEMPLATE_DIR / "flow.json").read_text())
        by_id = {node["id"]: node for node in nodes}
        by_id["peer-broker"].update(
            broker=self.mqtt_host,
            port=str(self.mqtt_port),
            clientid=f"bench-peer-{nonce}",
            cleansession=True,
        )
        by_id["peer-influxdb"].update(
            hostname=self._influx_host,
            port=str(self._influx_port),
            protocol="https" if self._influx_tls else "http",
            usetls=self._influx_tls,
            database=self.database,
        )
        by_id["peer-mqtt-in"].update(topic=self.topic_filter, qos=str(self.qos))
        by_id["peer-batch"].update(count=str(self.batch_size), timeout=f"{self.batch_timeout_s:g}")
        by_id["peer-to-points"]["func"] = (TEMPLATE_DIR / "to_points.js").read_text()
        by_id["peer-probe-in"]["topic"] = self._probe_topic(nonce)
        self.flow_path.write_text(json.dumps(nodes, indent=2) + "\n")

        # Node-RED reads <flow>_cred.json; plain JSON with credentialSecret: false.
        credentials: dict[str, dict[str, str]] = {"peer-influxdb": {}}
        if self.mqtt_username is not None:
            credentials["peer-broker"] = {"user": self.mqtt_username}
            if self.mqtt_password is not None:
                credentials["peer-broker"]["password"] = self.mqtt_password
        cred_path = self.flow_path.with_name(f"{self.flow_path.stem}_cred.json")
        fd = os.open(cred_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(credentials, f)
        os.chmod(cred_path, 0o600)  # an older file keeps its mode through O_TRUNC

        settings = Template((TEMPLATE_DIR / "settings.js").read_text()).substitute(
            flow_file=json.dumps(str(self.flow_path)),
            kinds_file=json.dumps(str(kinds_path)),
        )
        self.settings_path.write_text(settings)

    def _wait_ready(self, nonce: str) -> None:
        """Until the flows run, the broker node is connected and our probe came back."""
        assert self._process is not None
        deadline = time.monotonic() + self.ready_timeout_s
        probe: mqtt.Client | None = None
        next_probe = 0.0
        try:
            while True:
                code = self._process.poll()
                if code is not None:
                    raise PeerError(
                        f"Node-RED exited with code {code} while starting: see "
                        f"{self.log_path}\n{self._log_tail()}"
                    )
                text = self.log()
                if "Waiting for missing types" in text:
                    raise PeerError(
                        "Node-RED does not know the flow's node types (is "
                        "node-red-contrib-influxdb installed next to node-red? run "
                        f"ensure_installed()): see {self.log_path}\n{self._log_tail()}"
                    )
                started = "Started flows" in text
                connected = "Connected to broker" in text
                # The bench starts the broker first: a refused connection is a wrong setting.
                if not connected and "Connection failed to broker" in text:
                    raise PeerError(
                        f"Node-RED could not connect to the MQTT broker at {self.mqtt_host}:"
                        f"{self.mqtt_port}: check host, port, username and password; see "
                        f"{self.log_path}\n{self._log_tail()}"
                    )
                if started and connected:
                    if f"event=probe nonce={nonce}" in text:
                        return
                    if probe is None:
                        probe = self._probe_client(nonce)
                    if time.monotonic() >= next_probe:
                        probe.publish(self._probe_topic(nonce), json.dumps(nonce), qos=1)
                        next_probe = time.monotonic() + _PROBE_EVERY_S
                if time.monotonic() > deadline:
                    if not started:
                        waiting_for = "start its flows"
                    elif not connected:
                        waiting_for = (
                            f"connect to the MQTT broker at {self.mqtt_host}:{self.mqtt_port} "
                            "(check host, port, username and password)"
                        )
                    else:
                        waiting_for = f"receive its probe on {self._probe_topic(nonce)}"
                    raise PeerError(
                        f"Node-RED did not {waiting_for} within {self.ready_timeout_s:g} s: "
                        f"see {self.log_path}\n{self._log_tail()}"
                    )
                time.sleep(0.05)
        finally:
            if probe is not None:
                probe.disconnect()
                probe.loop_stop()

    def _probe_client(self, nonce: str) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-probe-{nonce}")
        if self.mqtt_username is not None:
            client.username_pw_set(self.mqtt_username, self.mqtt_password)
        try:
            client.connect(self.mqtt_host, self.mqtt_port)
        except OSError as e:
            raise PeerError(
                f"cannot reach the MQTT broker at {self.mqtt_host}:{self.mqtt_port} to probe "
                f"Node-RED's subscription: {e}"
            ) from e
        client.loop_start()
        return client

    def _stop_leftover(self) -> None:
        """End a Node-RED that a killed bench left running on this work dir: it would still
        be subscribed (to a broker that may come back on the same port) and double the load."""
        try:
            pid = int(self.pid_path.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            self.pid_path.unlink(missing_ok=True)
            return
        if str(self.settings_path).encode() in cmdline:  # else the pid was reused
            for sig, wait_s in ((signal.SIGTERM, self.stop_timeout_s), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                deadline = time.monotonic() + wait_s
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if not _alive(pid):
                    break
        self.pid_path.unlink(missing_ok=True)

    def _log_tail(self) -> str:
        return _tail(self.log_path, self._log_start)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
