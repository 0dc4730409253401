"""work order groups: one open work order per group of alerts, and the alerts it gathered.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 21:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("work_orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("open_group", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("alert_count", sa.Integer(), server_default="1", nullable=False)
        )
    with op.batch_alter_table("work_orders", schema=None) as batch_op:
        batch_op.create_unique_constraint(batch_op.f("uq_work_orders_open_group"), ["open_group"])
    op.create_table(
        "work_order_alerts",
        sa.Column("alert_id", sa.String(length=32), nullable=False),
        sa.Column("work_order_id", sa.String(length=32), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name=op.f("fk_work_order_alerts_alert_id_alerts")
        ),
        sa.ForeignKeyConstraint(
            ["work_order_id"],
            ["work_orders.id"],
            name=op.f("fk_work_order_alerts_work_order_id_work_orders"),
        ),
        sa.PrimaryKeyConstraint("alert_id", name=op.f("pk_work_order_alerts")),
    )
    op.create_index(
        op.f("ix_work_order_alerts_work_order_id"), "work_order_alerts", ["work_order_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_work_order_alerts_work_order_id"), table_name="work_order_alerts")
    op.drop_table("work_order_alerts")
    with op.batch_alter_table("work_orders", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_work_orders_open_group"), type_="unique")
        batch_op.drop_column("alert_count")
        batch_op.drop_column("open_group")
