"""devices: identities on a network (dev_eui, imei, onenet_dev_id), unique when present
(docs/design.md §4a).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 22:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# name → length; a unique index each (NULLs never collide, on SQLite and PostgreSQL alike).
_IDENTITIES = {"dev_eui": 16, "imei": 15, "onenet_dev_id": 64}


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        for name, length in _IDENTITIES.items():
            batch_op.add_column(sa.Column(name, sa.String(length=length), nullable=True))
    with op.batch_alter_table("devices", schema=None) as batch_op:
        for name in _IDENTITIES:
            batch_op.create_index(batch_op.f(f"ix_devices_{name}"), [name], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        for name in _IDENTITIES:
            batch_op.drop_index(batch_op.f(f"ix_devices_{name}"))
    with op.batch_alter_table("devices", schema=None) as batch_op:
        for name in _IDENTITIES:
            batch_op.drop_column(name)
