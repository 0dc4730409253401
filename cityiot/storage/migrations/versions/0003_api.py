"""API: latest readings, MQTT credentials, API keys, audit log, rule overrides.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 05:26:24.830378
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("kinds", sa.JSON(), nullable=True),
        sa.Column("districts", sa.JSON(), nullable=True),
        sa.Column("vendor_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("resource", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_at"), ["at"], unique=False)

    op.create_table(
        "latest_readings",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_latest_readings")),
    )
    with op.batch_alter_table("latest_readings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_latest_readings_updated_at"), ["updated_at"], unique=False
        )

    op.create_table(
        "rule_overrides",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rule_overrides")),
    )
    with op.batch_alter_table("rule_overrides", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_rule_overrides_updated_at"), ["updated_at"], unique=False
        )

    op.create_table(
        "mqtt_credentials",
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("vendor_id", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["vendor_id"], ["vendors.id"], name=op.f("fk_mqtt_credentials_vendor_id_vendors")
        ),
        sa.PrimaryKeyConstraint("username", name=op.f("pk_mqtt_credentials")),
    )
    with op.batch_alter_table("mqtt_credentials", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_mqtt_credentials_vendor_id"), ["vendor_id"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("mqtt_credentials", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mqtt_credentials_vendor_id"))

    op.drop_table("mqtt_credentials")
    with op.batch_alter_table("rule_overrides", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rule_overrides_updated_at"))

    op.drop_table("rule_overrides")
    with op.batch_alter_table("latest_readings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_latest_readings_updated_at"))

    op.drop_table("latest_readings")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_at"))

    op.drop_table("audit_log")
    op.drop_table("api_keys")
