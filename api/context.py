"""What every request handler may use: settings, the SQL store, InfluxDB, keys, rate limits,
the stream hub and the broker's access files. Built once by the app's lifespan
(:mod:`cityiot.api.app`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from fastapi import Request

from cityiot.api.counted import Counted
from cityiot.api.keys import KeyRing
from cityiot.api.people import SessionBook
from cityiot.api.ratelimit import RateLimiter
from cityiot.domain.settings import Settings
from cityiot.storage.influx import InfluxDB
from cityiot.storage.secret import platform_secret

# How old a figure of ``counted`` may be before it is counted again.
COUNTED_MAX_AGE_S = 5.0
# Below this many registered devices (those a key sees) such figures are counted at every
# request: exact, and still cheap.
COUNTED_ABOVE_DEVICES = 20_000

if TYPE_CHECKING:
    from cityiot.api.stream import StreamHub
    from cityiot.ingest.codecs import CodecBook
    from cityiot.ingest.http_link import PushLink
    from cityiot.storage.broker_access import BrokerAccess


@dataclass
class ApiContext:
    settings: Settings
    sessions: Any  # async_sessionmaker
    influx: InfluxDB | None
    keys: KeyRing
    limiter: RateLimiter  # per key
    anonymous: RateLimiter  # per client address, for requests without a valid key
    people: SessionBook  # people's sessions (sign-in with a password)
    hub: StreamHub | None = None  # MQTT: alert events in, ack events out; None without a broker
    broker: BrokerAccess | None = None  # vendor MQTT accounts; None when not managed here
    # The codecs in force (files and the API's), kept fresh with the registry's period.
    codecs: CodecBook | None = None
    # What the HTTP link and the networks' pushes take messages through: the ingest of this
    # process (cityiot run), else the broker (api/relay.py); None with no broker either.
    telemetry: PushLink | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Figures too costly to count per request (the overview's lighting tally and KPIs).
    counted: Counted[Any] = field(default_factory=lambda: Counted(COUNTED_MAX_AGE_S))

    @cached_property
    def secret(self) -> bytes:
        """The platform's secret (cityiot/storage/secret.py), read or made on first use."""
        return platform_secret(self.settings)


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx
