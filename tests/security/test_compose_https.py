"""The compose examples of HTTPS to the API (docs/deployment.md "HTTPS from the API"),
checked on the files (no Docker runs here): behind the proxy, the API believes
X-Forwarded-For from the proxy's fixed address only; with deploy/api-https.yml, the API
serves the certificate of deploy/certs/ itself on 443, the proxy is left out, and no other
port is public."""

from __future__ import annotations

import ipaddress
from typing import Any

import yaml

from cityiot.domain.settings import Settings
from tests.grafana.test_compose import DEPLOY, SERVICES
from tests.grafana.test_compose_ports import _published

BASE: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text("utf-8"))
OVERRIDE: dict[str, Any] = yaml.safe_load((DEPLOY / "api-https.yml").read_text("utf-8"))


def test_behind_the_proxy_the_api_trusts_the_proxys_address_only() -> None:
    proxy_address = SERVICES["proxy"]["networks"]["edge"]["ipv4_address"]
    subnet = BASE["networks"]["edge"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(proxy_address) in ipaddress.ip_network(subnet)
    api = SERVICES["api"]
    assert api["environment"]["CITYIOT_API_FORWARDED_ALLOW_IPS"] == proxy_address
    assert set(api["networks"]) == {"default", "edge"}
    assert set(SERVICES["proxy"]["networks"]) == {"edge"}  # nothing else on it but the API
    caddyfile = (DEPLOY / "proxy/Caddyfile").read_text("utf-8")
    assert "reverse_proxy api:8080" in caddyfile


def _merged(name: str) -> dict[str, Any]:
    """A service of docker-compose.yml with api-https.yml over it, as compose merges them:
    mappings key by key, ports and volumes appended, a healthcheck's test replaced."""
    service: dict[str, Any] = dict(SERVICES.get(name, {}))
    for key, value in OVERRIDE["services"].get(name, {}).items():
        if key in ("ports", "volumes"):
            service[key] = [*service.get(key, []), *value]
        elif isinstance(value, dict):
            service[key] = {**service.get(key, {}), **value}
        else:
            service[key] = value
    return service


def test_the_api_serving_https_itself_is_the_only_new_public_door() -> None:
    api = _merged("api")
    environment = api["environment"]
    fields = Settings.model_fields
    for variable in OVERRIDE["services"]["api"]["environment"]:
        assert variable.removeprefix("CITYIOT_").lower() in fields, variable
    mounts = {v.split(":")[1]: v.split(":")[0] for v in api["volumes"]}
    assert mounts["/certs"] == "./certs"
    assert environment["CITYIOT_API_TLS_CERT_FILE"] == "/certs/server.crt"
    assert environment["CITYIOT_API_TLS_KEY_FILE"] == "/certs/server.key"
    assert environment["CITYIOT_API_FORWARDED_ALLOW_IPS"] == ""  # no proxy to believe
    port = int(environment["CITYIOT_API_PORT"])
    public = {
        (_published(entry)[1], _published(entry)[2])
        for entry in api["ports"]
        if _published(entry)[0] in ("", "0.0.0.0")
    }
    assert public == {(443, port)}
    assert OVERRIDE["services"]["proxy"]["profiles"] == ["proxy"]  # not started
    assert f"https://127.0.0.1:{port}/" in " ".join(api["healthcheck"]["test"])
    grafana = _merged("grafana")["environment"]["CITYIOT_API_URL"]
    assert grafana == f"https://${{PUBLIC_HOST}}:{port}"
    aliases = api["networks"]["default"]["aliases"]
    assert aliases[0].startswith("${PUBLIC_HOST:?")  # the name in the certificate
    assert set(OVERRIDE["services"]) == {"api", "grafana", "proxy"}
