"""kind_overrides: kinds changed or added through PUT /kinds/{kind} (docs/design.md §4a).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 18:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "kind_overrides",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("kind", name=op.f("pk_kind_overrides")),
    )
    with op.batch_alter_table("kind_overrides", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_kind_overrides_updated_at"), ["updated_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("kind_overrides", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_kind_overrides_updated_at"))
    op.drop_table("kind_overrides")
