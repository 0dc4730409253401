"""LoRaWAN devices' applications on their network server (ChirpStack), learned from uplinks."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from cityiot.storage.tables.base import Base, UTCDateTime
from cityiot.storage.utc import utcnow


class LorawanApplication(Base):
    """The ChirpStack application a device (by DevEUI) last sent an uplink in: a command's
    downlink topic names it (``application/{id}/device/{devEui}/command/down``), and a
    command sent before the device's next uplink after a restart still finds it here."""

    __tablename__ = "lorawan_applications"

    dev_eui: Mapped[str] = mapped_column(String(16), primary_key=True)  # upper-case hex
    application_id: Mapped[str] = mapped_column(String(64))
    seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
