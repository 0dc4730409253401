"""``python -m cityiot``: the same command as the ``cityiot`` script."""

from cityiot.cli import app

app()
