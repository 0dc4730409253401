"""``python -m bench.link_platform``: the platform the links section measures — ingest, rules
and API in one process, as ``cityiot run`` composes them (the CTWing receiver needs the API
and the ingest together), configured by ``CITYIOT_*`` like ``cityiot ingest``, with no
simulator, no local services and no console. Logs ``event=bench_platform_ready`` once the
API answers and the ingest takes readings; SIGTERM drains and stops it.

A process of its own, so the bench can SIGSTOP it for a backlog and read its CPU time, and
its pushers do not share its event loop.
"""

from __future__ import annotations

import asyncio
import logging


def main() -> None:
    from cityiot.cli.common import load_settings, run_until_signal
    from cityiot.platform.gcpolicy import settle
    from cityiot.platform.logs import configure_logging
    from cityiot.platform.wiring import platform

    settings = load_settings()
    configure_logging(settings)
    log = logging.getLogger("bench.link_platform")
    stop = asyncio.Event()

    async def run() -> None:
        async with platform(settings, rules=True, api=True) as running:
            settle(settings.gc_full_every_s)
            running.start()
            assert running.api is not None
            log.info("event=bench_platform_ready url=%s", running.api.url)
            await stop.wait()

    run_until_signal(run(), stop, settings)


if __name__ == "__main__":
    main()
