"""The installed layout of the package, assembled from the checkout's folders."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def _setuptools() -> dict[str, Any]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return config["tool"]["setuptools"]  # type: ignore[no-any-return]


def mapped_roots() -> dict[str, Path]:
    """The build's mapping: installed package → the checkout folder holding it and its
    subpackages (``cityiot.ingest`` → ``ingest/``)."""
    return {package: REPO / folder for package, folder in _setuptools()["package-dir"].items()}


def package_dirs() -> dict[str, Path]:
    """Every listed package → the checkout folder it is built from."""
    setuptools = _setuptools()
    mapping: dict[str, str] = setuptools["package-dir"]
    dirs: dict[str, Path] = {}
    for package in setuptools["packages"]:
        root = max(
            (name for name in mapping if package == name or package.startswith(name + ".")), key=len
        )
        rest = package[len(root) :].lstrip(".").replace(".", "/")
        dirs[package] = REPO / mapping[root] / rest
    return dirs


def assemble(target: Path) -> Path:
    """Copy every package's Python files to where an installation puts them; returns ``target``."""
    for package, folder in package_dirs().items():
        into = target / package.replace(".", "/")
        into.mkdir(parents=True, exist_ok=True)
        for source in folder.glob("*.py"):
            shutil.copy2(source, into / source.name)
    return target


if __name__ == "__main__":  # make lint: type-check the package as it is installed
    import sys

    print(assemble(Path(sys.argv[1])))
