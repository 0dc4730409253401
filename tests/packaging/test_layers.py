"""The floors of the house: the import-contract checker over the installed layout.

import-linter reads a package from where Python finds it; the checkout keeps the stages in
folders of their own (ingest/, rules/, api/, simulators/), so the check runs over a copy
laid out as an installation lays it out.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.packaging.layout import REPO, assemble, mapped_roots, package_dirs

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=site, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_every_package_folder_exists_and_is_a_package() -> None:
    for package, folder in package_dirs().items():
        assert (folder / "__init__.py").is_file(), f"{package}: {folder} is not a package"


def test_every_package_in_the_folders_is_listed() -> None:
    """A new package folder the build does not list would be missing from the wheel."""
    listed = set(package_dirs().values())
    found = {init.parent for root in mapped_roots().values() for init in root.rglob("__init__.py")}
    assert found - listed == set(), (
        f"add these to [tool.setuptools] packages: {sorted(found - listed)}"
    )


def test_no_import_runs_up_a_floor(tmp_path: Path) -> None:
    done = lint(assemble(tmp_path / "site"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout, done.stdout


def test_an_import_running_up_is_caught(tmp_path: Path) -> None:
    """The check can fail: the domain importing the API breaks the contract."""
    site = assemble(tmp_path / "site")
    catalogue = site / "cityiot" / "domain" / "catalogue.py"
    catalogue.write_text(catalogue.read_text(encoding="utf-8") + "\nimport cityiot.api.app\n")
    done = lint(site)
    assert done.returncode != 0
    assert "cityiot.domain.catalogue -> cityiot.api.app" in done.stdout, done.stdout
