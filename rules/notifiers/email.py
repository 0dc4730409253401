"""Email channel: one mail per notification over SMTP, plain text with an HTML alternative.

Options (routing file)::

    - type: email
      name: water-duty-mail            # required; the channel's name
      to: [duty@water.example]         # required; a list, or one string "a@x, b@y"
      host: smtp.zhumadian.gov.cn      # required; SMTP server
      port: 587                        # optional; default 465 with tls, else 25
      from: cityiot@zhumadian.gov.cn   # required; envelope and header sender
      tls: false                       # optional; implicit TLS (SMTPS), default true on 465
      starttls: true                   # optional; upgrade with STARTTLS, default true unless tls
      ca_file: /etc/cityiot/mail-ca.pem  # optional; CAs for the server, default the system's
      username: cityiot                # optional; with password, log in (AUTH)
      password: ...                    # optional; only with username
      timeout_s: 30                    # optional; default 30

Every option but ``name`` and ``to`` may instead come from the platform's SMTP settings
(``build_channel(config, smtp={"host": ..., "from": ...})``); the channel's own win.

Mail is encrypted unless a channel says otherwise: implicit TLS on port 465 (or with
``tls: true``), STARTTLS on any other port, the server's certificate and name checked. A
server that offers no STARTTLS is a failure that says so; ``starttls: false`` (or
``CITYIOT_SMTP_STARTTLS=false`` for the platform's server) sends in the clear, for a relay on
the same host or a trusted network only. The platform's STARTTLS setting yields to a
channel's implicit TLS; both asked of one channel is an error.

Subject: ``[FIRING:2] manhole_cover_open yicheng`` (firing alerts counted) or
``[RESOLVED] manhole_cover_open yicheng``. The body has the Chinese heading, the English
one and one line per alert.

Outcome: the server accepting the mail for every recipient is delivered; connection
errors, timeouts and 4xx replies are retryable; 5xx replies (unknown recipient, refused
login) are not. A mail accepted for some recipients only is a failure that is not retried
(the others have it already); the error names the refused ones.
"""

from __future__ import annotations

import email.message
import email.utils
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiosmtplib

from cityiot.rules.notifiers import ChannelOptions, DeliveryError, NotificationMessage, render

DEFAULT_TIMEOUT_S = 30.0
SMTPS_PORT = 465  # implicit TLS (RFC 8314)


def build_mail(
    message: NotificationMessage, sender: str, to: list[str]
) -> email.message.EmailMessage:
    mail = email.message.EmailMessage()
    mail["Subject"] = render.title(message)
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    mail["Date"] = email.utils.formatdate(localtime=False)
    mail["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2] or None)
    mail.set_content(render.text(message))
    mail.add_alternative(render.html_body(message), subtype="html")
    return mail


class EmailChannel:
    type = "email"

    def __init__(
        self,
        name: str,
        host: str,
        sender: str,
        to: list[str],
        *,
        port: int | None = None,
        starttls: bool | None = None,
        tls: bool | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        ca_file: str | None = None,
    ) -> None:
        """``tls`` None: implicit TLS on port 465; ``starttls`` None: STARTTLS unless TLS."""
        if tls is None:
            tls = port == SMTPS_PORT
        if starttls is None:
            starttls = not tls
        if starttls and tls:
            raise ValueError(f"channel {name!r} (email): choose STARTTLS or implicit TLS, not both")
        self.name = name
        self.host = host
        self.port = port if port is not None else (SMTPS_PORT if tls else 25)
        self.sender = sender
        self.to = list(to)
        self.starttls = starttls
        self.tls = tls
        self.ca_file = ca_file
        self.username = username
        self.password = password
        self.timeout_s = timeout_s

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None
    ) -> EmailChannel:
        """``defaults``: the platform's SMTP options, under the channel's own."""
        o = ChannelOptions(
            {**(defaults or {}), **config},
            {
                "host",
                "port",
                "from",
                "to",
                "starttls",
                "tls",
                "username",
                "password",
                "timeout_s",
                "ca_file",
            },
        )
        username = o.text("username", None)
        password = o.text("password", None)
        if (username is None) != (password is None):
            raise o.error(
                "password" if username else "username", "is needed too: give both or neither"
            )
        port = o.integer("port", None, low=1)
        tls = o.flag("tls", port == SMTPS_PORT)
        starttls = o.flag("starttls", not tls)
        if starttls and tls:
            if config.get("starttls") is None:
                starttls = False  # the platform's STARTTLS yields to this channel's TLS
            else:
                raise o.error(
                    "starttls",
                    "cannot go with tls (implicit TLS, the default on port 465): choose one",
                )
        ca_file = o.text("ca_file", None)
        if ca_file is not None and not Path(ca_file).is_file():
            raise o.error("ca_file", f"names no file: {ca_file!r} (a PEM file of CA certificates)")
        host, sender = o.text("host", None), o.text("from", None)
        for option, value in (("host", host), ("from", sender)):
            if value is None:
                raise o.missing(option, " (on the channel or in the platform's SMTP settings)")
        if "@" not in email.utils.parseaddr(sender)[1]:
            raise o.error("from", f"must be an email address, got {sender!r}")
        # "a@x, b@y" (e.g. from one environment variable) is two recipients.
        to = [address for _, address in email.utils.getaddresses(o.strings("to"))]
        if not to or not all("@" in address for address in to):
            raise o.error("to", f"must be email addresses, got {config.get('to')!r}")
        return cls(
            o.name,
            host,
            sender,
            to,
            port=port,
            starttls=starttls,
            tls=tls,
            username=username,
            password=password,
            timeout_s=o.seconds("timeout_s", DEFAULT_TIMEOUT_S),
            ca_file=ca_file,
        )

    async def send(self, message: NotificationMessage) -> None:
        mail = build_mail(message, self.sender, self.to)
        where = f"SMTP {self.host}:{self.port}"
        try:
            refused, _ = await aiosmtplib.send(
                mail,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                use_tls=self.tls,
                start_tls=self.starttls,
                cert_bundle=self.ca_file,
                timeout=self.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as e:
            detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in e.recipients)
            retryable = all(400 <= r.code < 500 for r in e.recipients)
            raise DeliveryError(f"{where}: recipients refused: {detail}", retryable) from e
        except aiosmtplib.SMTPResponseException as e:
            retryable = not 500 <= e.code < 600
            raise DeliveryError(f"{where}: {e.code} {e.message}", retryable) from e
        except aiosmtplib.SMTPException as e:
            if self.starttls and "STARTTLS" in str(e):
                raise DeliveryError(
                    f"{where} offers no STARTTLS, so the mail would travel in the clear; enable "
                    "STARTTLS on the server, or set starttls: false on the channel (or "
                    "CITYIOT_SMTP_STARTTLS=false) if the way to it is trusted",
                    False,
                ) from e
            raise DeliveryError(f"{where}: {type(e).__name__}: {e}", True) from e
        except ssl.SSLCertVerificationError as e:
            # Retried: a renewed certificate or a fixed CA file lets the mail through later.
            raise DeliveryError(
                f"{where}: the server's certificate is not trusted ({e.verify_message}); give "
                "the CA that signed it with ca_file on the channel, and use the host name the "
                "certificate names",
                True,
            ) from e
        except OSError as e:  # connect, timeout, disconnect
            raise DeliveryError(f"{where}: {type(e).__name__}: {e}", True) from e
        if refused:
            # Sent to the others already: a retry would send them a second copy.
            detail = "; ".join(f"{r}: {c.code} {c.message}" for r, c in refused.items())
            raise DeliveryError(f"{where}: sent, but recipients refused: {detail}", False)
