"""The SQL store's tables, one module per part of the platform, on one declarative base.

Importing any of them imports this package, which loads them all: ``Base.metadata`` then
holds every table, which is what Alembic compares the migrated schema with.
"""

from cityiot.storage.tables import (
    alerts,
    audit,
    base,
    codecs,
    control,
    deadletters,
    intake,
    keys,
    kinds,
    lorawan,
    people,
    registry,
    rules,
    workorders,
)

__all__ = [
    "alerts",
    "audit",
    "base",
    "codecs",
    "control",
    "deadletters",
    "intake",
    "keys",
    "kinds",
    "lorawan",
    "people",
    "registry",
    "rules",
    "workorders",
]
