"""lorawan_applications: the ChirpStack application of each LoRaWAN device, learned from
its uplinks, for the topic of its commands' downlinks (docs/design.md §4a).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 23:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lorawan_applications",
        sa.Column("dev_eui", sa.String(length=16), nullable=False),
        sa.Column("application_id", sa.String(length=64), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("dev_eui", name=op.f("pk_lorawan_applications")),
    )


def downgrade() -> None:
    op.drop_table("lorawan_applications")
