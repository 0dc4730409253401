"""Write Mosquitto's password and ACL files from the database, before the broker starts.

Run once by the ``broker-files`` service of deploy/docker-compose.yml: it migrates the
database, then renders ``CITYIOT_BROKER_PASSWORD_FILE`` and ``CITYIOT_BROKER_ACL_FILE``
(the platform's own account from ``CITYIOT_MQTT_URL`` plus every active vendor account),
so Mosquitto, which refuses to start without them, finds both. Later changes (``cityiot
vendors credentials``, ``POST /api/v1/vendors/{id}/credentials``) rewrite them and reload
the broker themselves.
"""

from __future__ import annotations

import asyncio
import sys

from cityiot.domain.settings import Settings
from cityiot.storage.broker_access import BrokerAccess
from cityiot.storage.engine import make_engine, migrate, sessionmaker


async def main() -> int:
    settings = Settings()
    if not settings.mqtt_url:
        print(
            "error: set CITYIOT_MQTT_URL (mqtt://cityiot:PASSWORD@mosquitto:1883)", file=sys.stderr
        )
        return 1
    await migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        access = BrokerAccess.from_settings(settings, sessionmaker(engine))
        if access is None:
            print(
                "error: set CITYIOT_BROKER_PASSWORD_FILE and CITYIOT_BROKER_ACL_FILE",
                file=sys.stderr,
            )
            return 1
        await access.sync(reload=False)
    finally:
        await engine.dispose()
    print(f"wrote {settings.broker_password_file} and {settings.broker_acl_file}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
