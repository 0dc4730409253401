"""HTTPS from the API itself (docs/design.md §10, ``CITYIOT_API_TLS_CERT_FILE`` /
``_KEY_FILE``) and the caller's address behind a reverse proxy
(``CITYIOT_API_FORWARDED_ALLOW_IPS``).

The platform as ``cityiot run`` composes it (ingest, rules and API in one process) serves
HTTPS with certificates made for the test by trustme: a client trusting the CA is answered,
one trusting another CA is refused by certificate verification, plain HTTP to the port gets
no data, and the HTTP link, the CTWing intake and the live stream work over HTTPS. A missing,
unreadable or mismatched file is a start-up error naming the setting.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trustme
from pydantic import ValidationError
from typer.testing import CliRunner

from cityiot.api.server import ApiServer, own_certificate_context
from cityiot.cli import app
from cityiot.domain.settings import Settings
from cityiot.platform.local_services import LocalBroker, LocalInflux
from tests.api.conftest import running_api
from tests.api.test_ctwing_intake import data_report
from tests.api.test_stream import Events
from tests.api.test_telemetry_link import Link, reading, running_link
from tests.waiting import until

IMEI = "869975031238888"


@dataclass(frozen=True)
class Pki:
    ca: ssl.SSLContext  # a client context trusting the test's CA
    other_ca: ssl.SSLContext  # one trusting a CA that signed nothing here
    cert: Path  # the API's certificate, for localhost and 127.0.0.1
    key: Path
    public_cert: Path  # for iot.example.gov.cn only, by an intermediate CA (chain after it)
    public_key: Path
    sibling_cert: Path  # another certificate of that intermediate, its chain after it


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("api-pki")
    ca = trustme.CA()
    local = ca.issue_cert("localhost", "127.0.0.1")
    intermediate = ca.create_child_ca()
    public = intermediate.issue_cert("iot.example.gov.cn")
    sibling = intermediate.issue_cert("other.example.gov.cn")
    names = ("api.pem", "api.key", "pub.pem", "pub.key", "sibling.pem")
    files = {name: folder / name for name in names}
    local.cert_chain_pems[0].write_to_path(str(files["api.pem"]))
    local.private_key_pem.write_to_path(str(files["api.key"]))
    for blob, name in ((public, "pub.pem"), (sibling, "sibling.pem")):
        files[name].write_bytes(b"".join(pem.bytes() for pem in blob.cert_chain_pems))
    public.private_key_pem.write_to_path(str(files["pub.key"]))
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    other = ssl.create_default_context()
    trustme.CA().configure_trust(other)
    return Pki(trusting, other, *(files[name] for name in names))


@pytest.fixture(scope="module")
async def link(
    pki: Pki, broker: LocalBroker, influx: LocalInflux, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Link]:
    tls = {"api_tls_cert_file": str(pki.cert), "api_tls_key_file": str(pki.key)}
    async with running_link(tmp_path_factory.mktemp("https"), broker, influx, **tls) as link:
        yield link


def client(link: Link, verify: ssl.SSLContext, who: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {link.keys[who]}"} if who else {}
    made = httpx.AsyncClient(base_url=link.url, headers=headers, verify=verify, timeout=60.0)
    link.clients.append(made)
    return made


async def test_a_client_trusting_the_ca_is_answered_over_https(link: Link, pki: Pki) -> None:
    assert link.url.startswith("https://127.0.0.1:"), link.url
    r = await client(link, pki.ca).get("/api/v1/healthz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok"}
    assert r.url.scheme == "https"


async def test_a_client_trusting_another_ca_is_refused(link: Link, pki: Pki) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        await client(link, pki.other_ca).get("/api/v1/healthz")


def _plain_request(port: int) -> bytes:
    """What a plain-HTTP GET to ``port`` gets back before the connection ends."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /api/v1/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


async def test_plain_http_to_the_https_port_gets_no_data(link: Link) -> None:
    port = int(link.url.rsplit(":", 1)[1])
    received = await asyncio.to_thread(_plain_request, port)
    assert b"HTTP/" not in received and b"ok" not in received, received
    # An HTTP client says the connection failed, not what the API would have answered.
    with pytest.raises(httpx.HTTPError):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as plain:
            await plain.get("/api/v1/healthz")


async def test_the_http_link_the_intake_and_the_stream_work_over_https(
    link: Link, pki: Pki
) -> None:
    admin = client(link, pki.ca, "admin")
    async with client(link, pki.ca, "admin").stream("GET", "/api/v1/stream") as response:
        assert response.status_code == 200, await response.aread()
        name, ready = await Events(response).next()
        assert name == "ready" and ready["connected"] is True

    # The HTTP link (design §4a).
    ts = link.ts()
    r = await client(link, pki.ca, "acme").post(
        "/api/v1/telemetry/acme/mh-1", content=orjson.dumps(reading(ts, 1, tilt_deg=2.0))
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"stored": 1, "rejected": [], "duplicates": 0}
    assert await link.holds("manhole", "mh-1", "tilt_deg", ts)

    # CTWing's push with the vendor's intake token.
    device = {
        "device_id": "nb-tls", "vendor": "acme", "kind": "manhole", "district": "yicheng",
        "lat": 32.98, "lon": 114.02, "report_interval_s": 86400,
        "attributes": {"depth_cm": 180, "imei": IMEI},
    }  # fmt: skip
    r = await admin.post("/api/v1/devices", json=device)
    assert r.status_code == 201, r.text
    r = await admin.post("/api/v1/vendors/acme/intake-token")
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    devices = link.running.ingest.intake.devices
    await until(lambda: IMEI in devices.by_imei, 15, "the ingest knows the NB-IoT device")
    ts = link.ts()
    message = data_report(IMEI, {"serviceData": {"tilt_deg": 4.5}}, ts, 1)
    r = await client(link, pki.ca).post(
        "/api/v1/intake/ctwing/acme", json=message, params={"token": token}
    )
    assert r.status_code == 200, r.text
    assert r.json()["stored"] == 1
    assert await link.points("manhole", "nb-tls", "tilt_deg") == [ts]


async def test_the_platforms_own_requests_trust_its_certificate_whatever_its_names(
    pki: Pki,
    sqlite_url: str,
    influx: LocalInflux,
    influx_db: str,
    broker: LocalBroker,
    tmp_path: Path,
) -> None:
    # cityiot run's simulated pushes go to CITYIOT_API_HOST, here 127.0.0.1, while the
    # certificate names only the public host.
    tls = {"api_tls_cert_file": str(pki.public_cert), "api_tls_key_file": str(pki.public_key)}
    async with running_api(sqlite_url, influx, influx_db, broker, tmp_path, **tls) as api:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            async with httpx.AsyncClient(base_url=api.url, verify=pki.ca) as by_ca:
                await by_ca.get("/api/v1/healthz")  # the CA is right, the name is not
        own = own_certificate_context(api.settings)
        async with httpx.AsyncClient(base_url=api.url, verify=own) as pinned:
            assert (await pinned.get("/api/v1/healthz")).status_code == 200
        # Pinned means that certificate only: one of the same intermediate CA (whose file
        # carries that CA too) is refused.
        sibling = {"api_tls_cert_file": str(pki.sibling_cert)}
        other = own_certificate_context(api.settings.model_copy(update=sibling))
        async with httpx.AsyncClient(base_url=api.url, verify=other) as wrong:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await wrong.get("/api/v1/healthz")


def tls_of(pki: Pki) -> dict[str, str]:
    return {"api_tls_cert_file": str(pki.cert), "api_tls_key_file": str(pki.key)}


# -- start-up errors ----------------------------------------------------------------------


def _refusal(**values: Any) -> str:
    with pytest.raises(ValidationError) as raised:
        Settings.model_validate(values)
    return str(raised.value)


@pytest.mark.parametrize("field", ["api_tls_cert_file", "api_tls_key_file"])
def test_a_missing_or_unreadable_file_names_the_setting_and_the_path(
    field: str, pki: Pki, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.pem"
    text = _refusal(**(tls_of(pki) | {field: str(missing)}))
    assert f"CITYIOT_{field.upper()}: cannot read {missing}" in text, text
    assert "give a readable PEM file" in text
    # A folder is not readable as a file, whoever runs the test (root reads any file).
    text = _refusal(**(tls_of(pki) | {field: str(tmp_path)}))
    assert f"CITYIOT_{field.upper()}: cannot read {tmp_path}" in text, text


def test_a_certificate_without_its_key_and_a_key_of_another_are_refused(pki: Pki) -> None:
    text = _refusal(api_tls_cert_file=str(pki.cert))
    assert "CITYIOT_API_TLS_CERT_FILE is set but CITYIOT_API_TLS_KEY_FILE is not" in text, text
    text = _refusal(api_tls_key_file=str(pki.key))
    assert "CITYIOT_API_TLS_KEY_FILE is set but CITYIOT_API_TLS_CERT_FILE is not" in text, text
    text = _refusal(api_tls_cert_file=str(pki.cert), api_tls_key_file=str(pki.public_key))
    assert "are not a PEM certificate and its private key" in text, text
    assert str(pki.cert) in text and str(pki.public_key) in text


def test_cityiot_api_ends_with_the_setting_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYIOT_RUN_DIR", str(tmp_path))
    missing = tmp_path / "api.pem"
    monkeypatch.setenv("CITYIOT_API_TLS_CERT_FILE", str(missing))
    monkeypatch.setenv("CITYIOT_API_TLS_KEY_FILE", str(missing))
    result = CliRunner().invoke(app, ["api"])
    output = " ".join(result.output.split())
    assert result.exit_code == 1, output
    assert f"CITYIOT_API_TLS_CERT_FILE: cannot read {missing}" in output, output


def test_the_server_says_https_only_with_both_files(pki: Pki) -> None:
    assert ApiServer(Settings.model_validate(tls_of(pki))).url.startswith("https://")
    assert ApiServer(Settings()).url.startswith("http://")


# -- behind a reverse proxy ---------------------------------------------------------------

FORWARDED = {"X-Forwarded-For": "203.0.113.7"}


async def _second_refusal(api_url: str, headers: dict[str, str]) -> str:
    """The 429 of the second request without a key (the anonymous burst is 1)."""
    async with httpx.AsyncClient(base_url=api_url, headers=headers) as anonymous:
        first = await anonymous.get("/api/v1/devices")
        assert first.status_code == 401, first.text
        second = await anonymous.get("/api/v1/devices")
        assert second.status_code == 429, second.text
        detail: str = second.json()["detail"]
        return detail


LIMITED = {"api_anonymous_rate_per_s": 0.001, "api_anonymous_rate_burst": 1}


async def test_a_trusted_proxys_forwarded_address_is_the_callers(
    sqlite_url: str, influx: LocalInflux, influx_db: str, broker: LocalBroker, tmp_path: Path
) -> None:
    async with running_api(
        sqlite_url, influx, influx_db, broker, tmp_path,
        api_forwarded_allow_ips="10.0.0.0/8, 127.0.0.1", **LIMITED,
    ) as api:  # fmt: skip
        assert api.settings.api_forwarded_allow_list == ["10.0.0.0/8", "127.0.0.1"]
        detail = await _second_refusal(api.url, FORWARDED)
        assert "from 203.0.113.7 without a valid API key" in detail, detail
        # Another client behind the same proxy has a limit of its own.
        async with httpx.AsyncClient(base_url=api.url) as other:
            r = await other.get("/api/v1/devices", headers={"X-Forwarded-For": "203.0.113.8"})
            assert r.status_code == 401, r.text


@pytest.mark.parametrize("allowed", ["", "10.0.0.5"])
async def test_an_untrusted_peers_forwarded_address_is_ignored(
    allowed: str,
    sqlite_url: str,
    influx: LocalInflux,
    influx_db: str,
    broker: LocalBroker,
    tmp_path: Path,
) -> None:
    async with running_api(
        sqlite_url, influx, influx_db, broker, tmp_path,
        api_forwarded_allow_ips=allowed, **LIMITED,
    ) as api:  # fmt: skip
        detail = await _second_refusal(api.url, FORWARDED)
        assert "from 127.0.0.1 without a valid API key" in detail, detail


@pytest.mark.parametrize("entry", ["*", "proxy.local", "10.0.0.300"])
def test_a_forwarded_allow_entry_that_is_no_address_is_refused(entry: str) -> None:
    text = _refusal(api_forwarded_allow_ips=f"127.0.0.1,{entry}")
    assert "CITYIOT_API_FORWARDED_ALLOW_IPS" in text and repr(entry) in text, text


def test_no_proxy_is_trusted_by_default() -> None:
    assert Settings.model_fields["api_forwarded_allow_ips"].default == ""
    assert Settings.model_validate({}).api_forwarded_allow_list == []
