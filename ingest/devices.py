"""The ingest's in-memory view of the registry: one dict lookup per message, never a query.

Refreshed from the SQL registry every ``registry_refresh_s`` (only rows changed since the
last refresh), so a device registered through the API or the CLI is accepted within
seconds, also when the ingest runs as its own process.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cityiot.influx import series_key
from cityiot.registry import DeviceEntry, load_devices, load_vendor_codecs

log = logging.getLogger("cityiot.ingest.devices")

REREAD_MARGIN = dt.timedelta(seconds=10)


@dataclass(frozen=True, slots=True)
class KnownDevice:
    """What the hot path needs of a device, with its line-protocol series key made once."""

    device_id: str
    vendor: str
    kind: str
    district: str
    report_interval_s: int
    decommissioned: bool
    series_key: str  # kind,device_id=…,district=…,vendor=…
    status_key: str  # device_status,device_id=…,district=…,kind=…,vendor=…
    attributes: Mapping[str, Any]  # kind-specific: depth_cm, lot_id, max_stay_min, zone

    @classmethod
    def from_entry(cls, e: DeviceEntry) -> KnownDevice:
        tags = {"device_id": e.device_id, "district": e.district, "vendor": e.vendor}
        return cls(
            e.device_id,
            e.vendor,
            e.kind,
            e.district,
            e.report_interval_s,
            e.decommissioned,
            series_key(e.kind, tags),
            series_key("device_status", {**tags, "kind": e.kind}),
            dict(e.attributes or {}),
        )


class DeviceMap:
    """device id → :class:`KnownDevice`, and vendor id → codec name."""

    def __init__(self, session_factory: Any) -> None:
        self._sessions = session_factory
        self.devices: dict[str, KnownDevice] = {}
        self.codecs: dict[str, str] = {}
        self._watermark: dt.datetime | None = None

    async def refresh(self) -> int:
        """Load what changed since the last refresh; returns how many devices changed."""
        # updated_at is stamped before commit: re-read a margin so a change committed
        # late, behind a newer stamp already seen, is not missed. Re-reading is harmless.
        since = self._watermark - REREAD_MARGIN if self._watermark else None
        entries = await load_devices(self._sessions, since=since)
        for e in entries:
            self.devices[e.device_id] = KnownDevice.from_entry(e)
            if self._watermark is None or e.updated_at > self._watermark:
                self._watermark = e.updated_at
        self.codecs = await load_vendor_codecs(self._sessions)
        if entries and since is None:
            log.info(
                "event=registry_refreshed changed=%d total=%d", len(entries), len(self.devices)
            )
        return len(entries)

    def get(self, device_id: str) -> KnownDevice | None:
        return self.devices.get(device_id)

    def __len__(self) -> int:
        return len(self.devices)
