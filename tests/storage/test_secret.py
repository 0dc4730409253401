"""The platform's secret (cityiot/storage/secret.py): CITYIOT_SECRET_KEY, else a file in the
run directory made once, owner-only, the same for every process that reads it."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cityiot.domain.settings import Settings
from cityiot.storage.secret import SECRET_FILE, SecretError, platform_secret


def test_the_run_directory_keeps_one_secret_readable_by_its_owner_only(tmp_path: Path) -> None:
    settings = Settings(run_dir=tmp_path / "run")
    with ThreadPoolExecutor(8) as pool:  # processes starting at once agree on one secret
        secrets = set(pool.map(lambda _: platform_secret(settings), range(8)))
    [secret] = secrets
    assert len(secret) == 64
    path = tmp_path / "run" / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert platform_secret(Settings(run_dir=tmp_path / "run")) == secret
    assert [p.name for p in path.parent.iterdir()] == [SECRET_FILE]  # no temporary left


def test_the_setting_wins_and_must_be_long_enough(tmp_path: Path) -> None:
    key = "k" * 40
    assert platform_secret(Settings(run_dir=tmp_path, secret_key=key)) == key.encode()
    assert not (tmp_path / SECRET_FILE).exists()
    with pytest.raises(
        SecretError, match="CITYIOT_SECRET_KEY has 10 characters; give it at least 32"
    ):
        platform_secret(Settings(run_dir=tmp_path, secret_key="k" * 10))


def test_a_cut_short_secret_file_is_refused_naming_the_fix(tmp_path: Path) -> None:
    (tmp_path / SECRET_FILE).write_text("short")
    with pytest.raises(SecretError, match="delete it to have a new one made"):
        platform_secret(Settings(run_dir=tmp_path))
