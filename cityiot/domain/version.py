"""The platform's version: the one in pyproject.toml, as the installed package reports it."""

from __future__ import annotations

from importlib import metadata


def platform_version() -> str:
    """``[project] version`` of the installed ``cityiot``, or "unknown" when not installed."""
    try:
        return metadata.version("cityiot")
    except metadata.PackageNotFoundError:
        return "unknown"
