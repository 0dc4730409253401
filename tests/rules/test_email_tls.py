"""Mail is encrypted by default (issue 27, item 3): STARTTLS unless a channel says otherwise,
implicit TLS on port 465, the server's certificate checked. Real SMTP servers (aiosmtpd)
with certificates made for the test (trustme)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller

from cityiot.domain.settings import Settings
from cityiot.platform.local_services import free_port
from cityiot.rules.notifiers import DeliveryError, build_channel
from tests.rules.test_notifiers import Mailbox, mail_config, sample_message


class TlsMailbox(Mailbox):
    """A mailbox that also notes whether each mail came over TLS."""

    def __init__(self) -> None:
        super().__init__()
        self.encrypted: list[bool] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        # session.ssl after STARTTLS; the transport's TLS object for implicit TLS.
        implicit = server.transport.get_extra_info("ssl_object") is not None
        self.encrypted.append(session.ssl is not None or implicit)
        return await super().handle_DATA(server, session, envelope)


@dataclass
class MailServer:
    mailbox: TlsMailbox
    port: int
    ca_file: str  # the CA the server's certificate is signed by


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, ssl.SSLContext, str]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    ca_file = tmp_path_factory.mktemp("mail-pki") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ca, server, str(ca_file)


@pytest.fixture
def starttls_server(pki: tuple[trustme.CA, ssl.SSLContext, str]) -> Iterator[MailServer]:
    """A submission server that takes mail only after STARTTLS."""
    mailbox = TlsMailbox()
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=free_port(), tls_context=pki[1], require_starttls=True
    )
    controller.start()
    try:
        yield MailServer(mailbox, controller.port, pki[2])
    finally:
        controller.stop()


@pytest.fixture
def plain_server() -> Iterator[MailServer]:
    """An old relay that offers no STARTTLS at all."""
    mailbox = TlsMailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield MailServer(mailbox, controller.port, "")
    finally:
        controller.stop()


async def test_a_channel_upgrades_with_starttls_by_default(starttls_server: MailServer) -> None:
    server = starttls_server
    channel = build_channel(mail_config(server.port, ca_file=server.ca_file))
    assert (channel.starttls, channel.tls) == (True, False)  # type: ignore[attr-defined]
    await channel.send(sample_message())
    assert server.mailbox.encrypted == [True]
    assert server.mailbox.mails[0][2]["Subject"] == "[FIRING:2] manhole_cover_open yicheng"


async def test_the_platform_default_is_starttls_too(starttls_server: MailServer) -> None:
    server = starttls_server
    settings = Settings()
    platform = {
        "host": "127.0.0.1",
        "port": server.port,
        "from": "cityiot@zhumadian.example",
        "starttls": settings.smtp_starttls,
        "ca_file": server.ca_file,
    }
    channel = build_channel(
        {"type": "email", "name": "ops-email", "to": "duty@ops.example"}, smtp=platform
    )
    await channel.send(sample_message())
    assert server.mailbox.encrypted == [True]


async def test_a_server_without_starttls_is_refused_with_what_to_change(
    plain_server: MailServer,
) -> None:
    channel = build_channel(mail_config(plain_server.port))
    with pytest.raises(DeliveryError) as caught:
        await channel.send(sample_message())
    assert "offers no STARTTLS, so the mail would travel in the clear" in caught.value.reason
    assert "set starttls: false on the channel" in caught.value.reason
    assert not caught.value.retryable  # the server will not learn STARTTLS by itself
    assert plain_server.mailbox.mails == []
    # Asked for explicitly, a trusted relay takes it in the clear.
    await build_channel(mail_config(plain_server.port, starttls=False)).send(sample_message())
    assert plain_server.mailbox.encrypted == [False]


async def test_a_certificate_from_an_unknown_ca_is_refused(starttls_server: MailServer) -> None:
    server = starttls_server
    with pytest.raises(DeliveryError) as caught:  # the system's trust store: not the test CA
        await build_channel(mail_config(server.port)).send(sample_message())
    assert (
        "CERTIFICATE_VERIFY_FAILED" in caught.value.reason or "certificate" in caught.value.reason
    )
    assert server.mailbox.mails == []


def test_port_465_means_implicit_tls_and_the_platform_starttls_yields(tmp_path: Path) -> None:
    on_465 = build_channel(mail_config(465))
    assert (on_465.tls, on_465.starttls) == (True, False)  # type: ignore[attr-defined]
    platform = {"host": "mail.example", "port": 465, "from": "a@b.example", "starttls": True}
    shared = build_channel({"type": "email", "name": "m", "to": "c@d.example"}, smtp=platform)
    assert (shared.tls, shared.starttls, shared.port) == (True, False, 465)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="option 'starttls' cannot go with tls"):
        build_channel(mail_config(465, starttls=True))
    with pytest.raises(ValueError, match="option 'ca_file' names no file"):
        build_channel(mail_config(587, ca_file=str(tmp_path / "nope.pem")))
    assert Settings.model_fields["smtp_starttls"].default is True


async def test_implicit_tls_delivers_over_tls(pki: tuple[trustme.CA, ssl.SSLContext, str]) -> None:
    mailbox = TlsMailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, ssl_context=pki[1])
    controller.start()
    try:
        await build_channel(mail_config(port, tls=True, ca_file=pki[2])).send(sample_message())
    finally:
        controller.stop()
    assert mailbox.encrypted == [True]
