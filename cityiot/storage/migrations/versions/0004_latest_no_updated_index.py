"""latest_readings: no index on updated_at.

Nothing queries it, and every upsert of the ingest's latest values (one per reading a
device sends) moved its entry: 4.0 → 2.3 µs of SQLite per row without it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 08:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("latest_readings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_latest_readings_updated_at"))


def downgrade() -> None:
    with op.batch_alter_table("latest_readings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_latest_readings_updated_at"), ["updated_at"], unique=False
        )
