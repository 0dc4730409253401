"""``cityiot run``'s TLS listener for vendors: the CA and broker certificate it makes under
its run dir (cityiot/platform/certificates.py) are what a vendor's device trusts and checks,
kept across runs, and the listener has the same accounts as the plain one."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import pytest

from cityiot.domain.settings import MqttTarget, MqttTls
from cityiot.ingest.broker import BrokerLink
from cityiot.platform.certificates import local_tls
from cityiot.platform.local_services import LocalBroker, TlsListener


def test_the_private_keys_are_for_their_owner_only(tmp_path: Path) -> None:
    tls = local_tls(tmp_path / "tls")
    assert stat.S_IMODE(tls.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls" / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700


def test_the_files_are_kept_across_runs(tmp_path: Path) -> None:
    first = local_tls(tmp_path / "tls")
    contents = [p.read_bytes() for p in (first.ca, first.cert, first.key)]
    again = local_tls(tmp_path / "tls")
    assert [p.read_bytes() for p in (again.ca, again.cert, again.key)] == contents
    first.cert.unlink()  # a lost broker certificate: a new one, signed by the same CA
    renewed = local_tls(tmp_path / "tls")
    assert renewed.ca.read_bytes() == contents[0]
    assert renewed.cert.read_bytes() != contents[1]


@pytest.fixture
def run_broker(tmp_path: Path) -> LocalBroker:
    tls = local_tls(tmp_path / "tls")
    return LocalBroker(tmp_path, tls_listener=TlsListener(tls.cert, tls.key, tls.ca))


async def test_a_vendor_reaches_the_run_broker_over_tls_with_its_ca(
    run_broker: LocalBroker, tmp_path: Path
) -> None:
    with run_broker:
        ca = str(tmp_path / "tls" / "ca.pem")
        # Verified against the CA, by name and by address (both in the certificate).
        for url in (run_broker.tls_url, f"mqtts://127.0.0.1:{run_broker.tls_port}"):
            target = MqttTarget(url, tls=MqttTls(ca))
            async with BrokerLink(target, f"vendor-{uuid.uuid4().hex[:8]}", []) as link:
                assert link.stats.connected
