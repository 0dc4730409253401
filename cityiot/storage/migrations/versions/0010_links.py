"""Links (docs/design.md §4a): intake tokens' salts, and the link each device last came by.

``intake_tokens.salt``: tokens are derived from the platform's secret and this salt, so
OneNET's signatures can be checked; a token issued before (empty salt) still serves CTWing.
``devices.link``: ``mqtt``, ``http``, ``chirpstack``, ``ctwing`` or ``onenet``; null until
the device's first message.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 00:05:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("intake_tokens") as batch:
        batch.add_column(sa.Column("salt", sa.String(length=32), nullable=False, server_default=""))
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("link", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("link")
    with op.batch_alter_table("intake_tokens") as batch:
        batch.drop_column("salt")
