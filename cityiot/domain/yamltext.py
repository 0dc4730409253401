"""The operators' YAML files (kinds, city, codecs, rules, routing), read by PyYAML's safe
loader on libyaml when PyYAML was built with it: some ten times faster than the pure-Python
reader, and every stage reads those files when it starts and when they change. Same safe
subset, same :class:`yaml.YAMLError` with the line and column of a mistake."""

from __future__ import annotations

from typing import Any

import yaml

_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> Any:
    """The data of one YAML document (None when empty); raises :class:`yaml.YAMLError`."""
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
