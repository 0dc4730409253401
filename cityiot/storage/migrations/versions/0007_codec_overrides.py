"""codec_overrides: codecs put through PUT /codecs/{name} (docs/design.md §4a).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 21:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "codec_overrides",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("scripts", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_codec_overrides")),
    )
    with op.batch_alter_table("codec_overrides", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_codec_overrides_updated_at"), ["updated_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("codec_overrides", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_codec_overrides_updated_at"))
    op.drop_table("codec_overrides")
