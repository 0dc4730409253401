"""intake_tokens: vendors' tokens for the CTWing and OneNET pushes (docs/design.md §4a).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 22:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "intake_tokens",
        sa.Column("vendor_id", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["vendor_id"], ["vendors.id"], name=op.f("fk_intake_tokens_vendor_id_vendors")
        ),
        sa.PrimaryKeyConstraint("vendor_id", name=op.f("pk_intake_tokens")),
    )


def downgrade() -> None:
    op.drop_table("intake_tokens")
