"""The platform's own secret (``CITYIOT_SECRET_KEY``, else ``<run_dir>/platform-secret``).

What it keys: vendors' intake tokens are derived from it (cityiot/storage/intake_tokens.py),
so the database keeps only a token's hash and salt while OneNET's signatures, which are
made over the token itself, can still be checked. A copy of the database alone gives no
token.

Every process that issues or checks tokens (API replicas, the CLI on another host) must see
the same secret: set ``CITYIOT_SECRET_KEY`` in production. Left empty, the secret is a file
in the run directory, made once (readable by its owner only), which suits ``cityiot run``
and a single host. A changed secret invalidates the OneNET check of every token issued
before: issue the vendors new tokens.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cityiot.domain.settings import Settings

SECRET_FILE = "platform-secret"
MIN_LENGTH = 32


class SecretError(ValueError):
    """The configured secret cannot be used; the message says what to change."""


def platform_secret(settings: Settings) -> bytes:
    """The secret as bytes: ``CITYIOT_SECRET_KEY``, else the run directory's secret file
    (made now when missing)."""
    if settings.secret_key:
        if len(settings.secret_key) < MIN_LENGTH:
            raise SecretError(
                f"CITYIOT_SECRET_KEY has {len(settings.secret_key)} characters; give it at "
                f"least {MIN_LENGTH} (e.g. `python -c 'import secrets; "
                "print(secrets.token_hex(32))'`), or leave it empty to keep one in the run "
                "directory"
            )
        return settings.secret_key.encode()
    return _secret_file(settings.run_dir / SECRET_FILE)


def _secret_file(path: Path) -> bytes:
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # a new run dir: owner only
    # Written aside, then linked into place: the link fails when another process made the
    # file first (both then use its secret), and nobody ever reads a half-written one.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(secrets.token_hex(32))
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return _read(path)


def _read(path: Path) -> bytes:
    value = path.read_text(encoding="ascii").strip()
    if len(value) < MIN_LENGTH:
        raise SecretError(
            f"{path} holds {len(value)} characters, not a secret of at least {MIN_LENGTH}; "
            "delete it to have a new one made (tokens issued under it must then be issued "
            "again), or set CITYIOT_SECRET_KEY"
        )
    return value.encode()
