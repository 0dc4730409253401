"""``cityiot``: the one console script (docs/design.md §7).

Scriptable: results on stdout, details and progress on stderr, errors exit non-zero with
a message naming what to fix. One module per group of commands.
"""

from cityiot.cli import codecs, docs, grafana, keys, registry, stages, users
from cityiot.cli.app import app

__all__ = ["app", "codecs", "docs", "grafana", "keys", "registry", "stages", "users"]
