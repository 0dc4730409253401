"""deploy/docker-compose.yml publishes only what must be public (issue 27, item 3): the
vendors' MQTT over TLS and the API over HTTPS through its proxy; every other published port
is bound to the host's 127.0.0.1. Checked on the file (no Docker runs here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.grafana.test_compose import DEPLOY, SERVICES

# service → the ports it may publish on every interface, and why.
PUBLIC = {
    "mosquitto": {8883},  # vendors' devices, over TLS
    "proxy": {443},  # the API and console, over HTTPS
}


def _published(entry: Any) -> tuple[str, int, int]:
    """(host address, host port, container port) of one ``ports`` entry; address "" for all."""
    if isinstance(entry, dict):  # the long syntax
        return str(entry.get("host_ip", "")), int(entry["published"]), int(entry["target"])
    parts = str(entry).split("/")[0].split(":")
    if len(parts) == 1:
        raise AssertionError(f"{entry!r} publishes a random host port: name one")
    address = ":".join(parts[:-2])
    return address, int(parts[-2]), int(parts[-1])


def test_only_the_public_doors_bind_every_interface() -> None:
    everywhere = {}
    for name, service in SERVICES.items():
        for entry in service.get("ports", []):
            address, host_port, _ = _published(entry)
            if address in ("", "0.0.0.0", "::", "[::]"):
                everywhere.setdefault(name, set()).add(host_port)
            else:
                assert address == "127.0.0.1", f"{name} publishes {entry!r}: 127.0.0.1 or public"
    assert everywhere == PUBLIC


def test_the_private_ports_stay_on_the_host() -> None:
    local = {
        (name, _published(entry)[1])
        for name, service in SERVICES.items()
        for entry in service.get("ports", [])
        if _published(entry)[0] == "127.0.0.1"
    }
    # InfluxDB, plain MQTT, the API's plain HTTP, Grafana; PostgreSQL is not published at all.
    assert local == {("influxdb", 8086), ("mosquitto", 1883), ("api", 8080), ("grafana", 3000)}
    assert "ports" not in SERVICES["postgres"]


def test_the_public_doors_serve_tls_with_the_mounted_certificate() -> None:
    conf = (DEPLOY / "mosquitto/mosquitto.conf").read_text("utf-8")
    tls_listener = conf.split("listener 8883", 1)[1].split("listener ", 1)[0]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["mosquitto"]["volumes"]}
    for option in ("certfile", "keyfile"):
        path = re.search(rf"^{option} (\S+)$", tls_listener, re.MULTILINE)
        assert path is not None, f"the 8883 listener has no {option}"
        assert Path(path.group(1)).parent.as_posix() in mounts, option
    assert mounts["/mosquitto/certs"] == "./certs"
    caddyfile = (DEPLOY / "proxy/Caddyfile").read_text("utf-8")
    assert "tls /certs/server.crt /certs/server.key" in caddyfile
    api_port = SERVICES["api"]["environment"]["CITYIOT_API_PORT"]
    assert f"reverse_proxy api:{api_port}" in caddyfile
    assert "./certs:/certs:ro" in SERVICES["proxy"]["volumes"]
    assert (DEPLOY / "certs/README.md").is_file()
