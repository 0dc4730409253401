"""One version: pyproject.toml's, shown by `cityiot --version` and the API."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from cityiot.api.app import create_app
from cityiot.domain.settings import Settings
from cityiot.domain.version import platform_version

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def project_version() -> str:
    with PYPROJECT.open("rb") as file:
        return str(tomllib.load(file)["project"]["version"])


def test_cli_prints_the_pyproject_version() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "cityiot"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"cityiot {project_version()}\n"


def test_api_reports_the_same_version(tmp_path: Path) -> None:
    app = create_app(Settings(run_dir=tmp_path))
    assert app.version == project_version()
    assert app.openapi()["info"]["version"] == project_version()


def test_not_installed_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    assert platform_version() == "unknown"
