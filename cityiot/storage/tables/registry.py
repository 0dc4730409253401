"""The registry's tables: vendors, their devices, each device's latest values and the
vendors' MQTT accounts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cityiot.storage.tables.base import Base, UTCDateTime
from cityiot.storage.utc import utcnow


class Vendor(Base):
    __tablename__ = "vendors"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Payload format of the vendor's devices: "json" (the access standard) or a codec name.
    codec: Mapped[str] = mapped_column(String(64), default="json")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Device(Base):
    __tablename__ = "devices"
    # (filter, id): a filtered page in id order reads its rows off the index, unsorted.
    __table_args__ = (
        Index("ix_devices_kind_id", "kind", "id"),
        Index("ix_devices_district_id", "district", "id"),
        Index("ix_devices_kind_district_id", "kind", "district", "id"),
        Index("ix_devices_status_id", "status", "id"),
        Index("ix_devices_kind_status_id", "kind", "status", "id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    district: Mapped[str] = mapped_column(String(32))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    address: Mapped[str] = mapped_column(Text, default="")
    install_date: Mapped[dt.date | None] = mapped_column(default=None)
    report_interval_s: Mapped[int] = mapped_column(Integer)
    # Kind-specific attributes (depth_cm, lot_id, max_stay_min, zone) as a JSON object.
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Identities on a network (docs/design.md §4a): unique when present, so that two imports
    # at once cannot give one to two devices (NULLs do not collide).
    dev_eui: Mapped[str | None] = mapped_column(String(16), unique=True, index=True, default=None)
    imei: Mapped[str | None] = mapped_column(String(15), unique=True, index=True, default=None)
    onenet_dev_id: Mapped[str | None] = mapped_column(
        String(64), unique=True, index=True, default=None
    )
    status: Mapped[str] = mapped_column(String(16), default="unknown")  # online|offline|unknown
    last_seen: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    # The link of its latest message (docs/design.md §4a): mqtt, http, chirpstack, ctwing, onenet.
    link: Mapped[str | None] = mapped_column(String(16), default=None)
    decommissioned_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Bumped on every registry change; the ingest refreshes its map from it.
    updated_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, index=True
    )


class DeviceCount(Base):
    """Devices in service (not decommissioned) per kind, district and status, kept by
    triggers on ``devices`` (:mod:`cityiot.storage.device_counts`). A key's count is the sum
    of its rows: PostgreSQL's triggers append signed rows, SQLite's keep one per key."""

    __tablename__ = "device_counts"
    __table_args__ = (Index("ix_device_counts_key", "kind", "district", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    district: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    devices: Mapped[int] = mapped_column(Integer)


class LatestReading(Base):
    """The newest value of each metric of a device, kept by the ingest (fresh within a second).

    ``metrics`` maps a metric name to ``[value, ts_ms]``; the API answers
    ``/devices/{id}/latest`` from here without asking InfluxDB.
    """

    __tablename__ = "latest_readings"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ts_ms: Mapped[int] = mapped_column(BigInteger)  # time of the newest reading
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Not indexed: nothing queries by it, and the ingest rewrites it with every reading.
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MqttCredential(Base):
    """An MQTT account issued to a vendor; the password is kept only as Mosquitto's hash."""

    __tablename__ = "mqtt_credentials"

    username: Mapped[str] = mapped_column(String(128), primary_key=True)
    vendor_id: Mapped[str] = mapped_column(ForeignKey("vendors.id"), index=True)
    password_hash: Mapped[str] = mapped_column(Text)  # Mosquitto password-file format ($7$...)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
