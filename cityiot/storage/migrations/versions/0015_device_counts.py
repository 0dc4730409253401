"""device_counts kept by triggers; composite indexes for the filtered device pages and the
alerts' newest-first listing.

``device_counts`` holds the devices in service per kind, district and status
(:mod:`cityiot.storage.device_counts`); triggers on ``devices`` keep it, and this migration
fills it from the devices already registered. The single-column indexes on ``devices.kind``
and ``district`` become (column, id), beside (kind, district, id), (status, id) and (kind,
status, id): a filtered page in id order reads its hundred rows off an index instead of
sorting every match, and the lighting tally finds the online lights without passing over
every online device.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 22:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = "kind = {r}.kind AND district = {r}.district AND status = {r}.status"


def _sqlite_add(row: str) -> str:
    """Statements adding one device of ``row`` (NEW or OLD) to its key's single row."""
    return (
        "INSERT INTO device_counts (kind, district, status, devices) "
        f"SELECT {row}.kind, {row}.district, {row}.status, 0 WHERE NOT EXISTS "
        f"(SELECT 1 FROM device_counts WHERE {_KEY.format(r=row)}); "
        f"UPDATE device_counts SET devices = devices + 1 WHERE {_KEY.format(r=row)};"
    )


def _sqlite_remove(row: str) -> str:
    return f"UPDATE device_counts SET devices = devices - 1 WHERE {_KEY.format(r=row)};"


# A change the counts see: kind, district or status moved, or the device left or came back.
_CHANGED = (
    "OLD.kind IS NOT NEW.kind OR OLD.district IS NOT NEW.district "
    "OR OLD.status IS NOT NEW.status "
    "OR (OLD.decommissioned_at IS NULL) <> (NEW.decommissioned_at IS NULL)"
)

SQLITE_TRIGGERS = (
    "CREATE TRIGGER device_counts_insert AFTER INSERT ON devices "
    f"WHEN NEW.decommissioned_at IS NULL BEGIN {_sqlite_add('NEW')} END",
    "CREATE TRIGGER device_counts_delete AFTER DELETE ON devices "
    f"WHEN OLD.decommissioned_at IS NULL BEGIN {_sqlite_remove('OLD')} END",
    "CREATE TRIGGER device_counts_leave AFTER UPDATE OF kind, district, status, decommissioned_at "
    f"ON devices WHEN OLD.decommissioned_at IS NULL AND ({_CHANGED}) "
    f"BEGIN {_sqlite_remove('OLD')} END",
    "CREATE TRIGGER device_counts_enter AFTER UPDATE OF kind, district, status, decommissioned_at "
    f"ON devices WHEN NEW.decommissioned_at IS NULL AND ({_CHANGED}) "
    f"BEGIN {_sqlite_add('NEW')} END",
)

# PostgreSQL appends signed rows (no hot row to wait on); a statement's inserts and deletes
# are added up per key from its transition table, a changed row appends its -1 and +1.
POSTGRESQL_TRIGGERS = (
    """CREATE FUNCTION device_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO device_counts (kind, district, status, devices)
  SELECT kind, district, status, count(*) FROM inserted_devices
  WHERE decommissioned_at IS NULL GROUP BY kind, district, status;
  RETURN NULL;
END $$""",
    """CREATE FUNCTION device_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO device_counts (kind, district, status, devices)
  SELECT kind, district, status, -count(*) FROM deleted_devices
  WHERE decommissioned_at IS NULL GROUP BY kind, district, status;
  RETURN NULL;
END $$""",
    """CREATE FUNCTION device_counts_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.decommissioned_at IS NULL THEN
    INSERT INTO device_counts (kind, district, status, devices)
    VALUES (OLD.kind, OLD.district, OLD.status, -1);
  END IF;
  IF NEW.decommissioned_at IS NULL THEN
    INSERT INTO device_counts (kind, district, status, devices)
    VALUES (NEW.kind, NEW.district, NEW.status, 1);
  END IF;
  RETURN NULL;
END $$""",
    """CREATE FUNCTION device_counts_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM device_counts;
  RETURN NULL;
END $$""",
    "CREATE TRIGGER device_counts_insert AFTER INSERT ON devices "
    "REFERENCING NEW TABLE AS inserted_devices FOR EACH STATEMENT "
    "EXECUTE FUNCTION device_counts_inserted()",
    "CREATE TRIGGER device_counts_delete AFTER DELETE ON devices "
    "REFERENCING OLD TABLE AS deleted_devices FOR EACH STATEMENT "
    "EXECUTE FUNCTION device_counts_deleted()",
    "CREATE TRIGGER device_counts_update AFTER UPDATE OF kind, district, status, "
    "decommissioned_at ON devices FOR EACH ROW WHEN ("
    "OLD.kind IS DISTINCT FROM NEW.kind OR OLD.district IS DISTINCT FROM NEW.district "
    "OR OLD.status IS DISTINCT FROM NEW.status "
    "OR (OLD.decommissioned_at IS NULL) <> (NEW.decommissioned_at IS NULL)) "
    "EXECUTE FUNCTION device_counts_changed()",
    "CREATE TRIGGER device_counts_truncate AFTER TRUNCATE ON devices "
    "FOR EACH STATEMENT EXECUTE FUNCTION device_counts_truncated()",
)

_FILL = (
    "INSERT INTO device_counts (kind, district, status, devices) "
    "SELECT kind, district, status, count(*) FROM devices WHERE decommissioned_at IS NULL "
    "GROUP BY kind, district, status"
)

# (old single-column index, its column) → (column, id)
_PAGED = (("ix_devices_kind", "kind"), ("ix_devices_district", "district"))


def upgrade() -> None:
    op.create_table(
        "device_counts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("district", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("devices", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_counts")),
    )
    op.create_index("ix_device_counts_key", "device_counts", ["kind", "district", "status"])
    # Triggers first, then the fill: on PostgreSQL creating a trigger locks out writers of
    # ``devices`` until this transaction commits, so no change falls between the two.
    dialect = op.get_bind().dialect.name
    for statement in POSTGRESQL_TRIGGERS if dialect == "postgresql" else SQLITE_TRIGGERS:
        op.execute(statement)
    op.execute(_FILL)
    for old, column in _PAGED:
        op.drop_index(old, table_name="devices")
        op.create_index(f"ix_devices_{column}_id", "devices", [column, "id"])
    op.create_index("ix_devices_kind_district_id", "devices", ["kind", "district", "id"])
    op.create_index("ix_devices_status_id", "devices", ["status", "id"])
    op.create_index("ix_devices_kind_status_id", "devices", ["kind", "status", "id"])
    op.create_index("ix_alerts_started_at_id", "alerts", ["started_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_alerts_started_at_id", table_name="alerts")
    op.drop_index("ix_devices_kind_status_id", table_name="devices")
    op.drop_index("ix_devices_status_id", table_name="devices")
    op.drop_index("ix_devices_kind_district_id", table_name="devices")
    for old, column in _PAGED:
        op.drop_index(f"ix_devices_{column}_id", table_name="devices")
        op.create_index(old, "devices", [column])
    dialect = op.get_bind().dialect.name
    for trigger in ("insert", "delete", "update", "truncate", "leave", "enter"):
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS device_counts_{trigger} ON devices")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS device_counts_{trigger}")
    if dialect == "postgresql":
        for function in ("inserted", "deleted", "changed", "truncated"):
            op.execute(f"DROP FUNCTION IF EXISTS device_counts_{function}()")
    op.drop_index("ix_device_counts_key", table_name="device_counts")
    op.drop_table("device_counts")
