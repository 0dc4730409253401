"""The big screen left running: `cityiot run` with its simulated fleet and incidents, the
console's #/screen open in headless Chromium at 1920×1080 with no reload, and every minute
the page's JavaScript heap (after a garbage collection), its DOM nodes and the browser's
resident memory. A screen that keeps something per event grows; one that does not stays flat.

    python -m bench.screen_soak --minutes 60

prints a line a sample and, at the end, the first and last samples, the largest and the
growth per hour of the heap fitted over the second half (after the first alerts and work
orders have come and the caches filled); `--json FILE` keeps every sample.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import async_playwright

from bench.map_draw import ARGS as MEASURING_ARGS
from bench.map_draw import CHROMIUM
from cityiot.platform.local_services import free_port

# The map's measuring browser, allowed to sound the big screen's alerts without a click.
ARGS = [*MEASURING_ARGS, "--autoplay-policy=no-user-gesture-required"]
SAMPLE = """async () => {
  window.gc();
  await new Promise((r) => setTimeout(r, 200));
  return {
    heap: performance.memory.usedJSHeapSize,
    nodes: document.getElementsByTagName('*').length,
    ready: document.querySelector('.screen')?.dataset.ready,
    day_alerts: Number(document.querySelector('.screen')?.dataset.dayAlerts ?? -1),
    drawn: Number(document.querySelector('.screen .map')?.dataset.drawn ?? -1),
  };
}"""


def rss_of_tree(pid: int) -> int:
    """Resident bytes of a process and its children (the browser's processes)."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
        pending += [int(c) for c in children]
    return total


def slope_per_hour(samples: list[dict[str, Any]], key: str) -> float:
    """Least-squares growth of ``key`` per hour over the samples' second half."""
    half = samples[len(samples) // 2 :]
    if len(half) < 2:
        return 0.0
    xs = [s["t_s"] / 3600 for s in half]
    ys = [float(s[key]) for s in half]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


async def soak(minutes: float, devices: int, rate: float, every_s: float) -> list[dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="cityiot-soak-"))
    port = free_port()
    env = {
        **os.environ,
        "CITYIOT_RUN_DIR": str(work / "run"),
        "CITYIOT_API_PORT": str(port),
    }
    log = (work / "run.log").open("w")
    platform = subprocess.Popen(  # noqa: ASYNC220 - started once, before the loop's work
        [sys.executable, "-m", "cityiot", "run", "--devices", str(devices), "--rate", str(rate)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    samples: list[dict[str, Any]] = []
    try:
        password_file = work / "run" / "admin-password"
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            for _ in range(600):
                try:
                    if password_file.exists() and (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if platform.poll() is not None:
                    raise SystemExit(f"cityiot run stopped; see {work / 'run.log'}")
                await asyncio.sleep(1)
            else:
                raise SystemExit(f"the platform did not become ready; see {work / 'run.log'}")
        password = password_file.read_text().strip()
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = await browser.new_page(viewport={"width": 1920, "height": 1080})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{url}/#/screen")
            await page.locator("#username").fill("admin")
            await page.locator("#password").fill(password)
            await page.locator("form.signin button[type=submit]").click()
            await page.locator(".screen[data-ready=true]").wait_for(timeout=60_000)
            started = time.monotonic()
            browser_pid = browser_process_pid()
            while True:
                t_s = time.monotonic() - started
                sample = await page.evaluate(SAMPLE)
                sample.update(t_s=round(t_s), rss=rss_of_tree(browser_pid), errors=len(errors))
                samples.append(sample)
                print(
                    f"{t_s / 60:6.1f} min  heap {sample['heap'] / 2**20:7.2f} MiB  "
                    f"nodes {sample['nodes']:5d}  browser RSS {sample['rss'] / 2**20:7.1f} MiB  "
                    f"alerts 24 h {sample['day_alerts']}  errors {len(errors)}",
                    flush=True,
                )
                if t_s >= minutes * 60:
                    break
                await asyncio.sleep(every_s)
            await browser.close()
    finally:
        os.killpg(platform.pid, signal.SIGTERM)
        try:
            platform.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(platform.pid, signal.SIGKILL)
        log.close()
    return samples


def browser_process_pid() -> int:
    """The headless Chromium started last (the browser process, parent of its renderers)."""
    found = subprocess.run(
        ["pgrep", "-n", "-f", "chromium.*--headless"], capture_output=True, text=True, check=False
    )
    return int(found.stdout.split()[0]) if found.stdout.strip() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--every-s", type=float, default=60.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    samples = asyncio.run(soak(args.minutes, args.devices, args.rate, args.every_s))
    if args.json:
        args.json.write_text(json.dumps(samples, indent=1))
    first, last = samples[0], samples[-1]
    mib = 2**20
    print(
        f"heap {first['heap'] / mib:.2f} → {last['heap'] / mib:.2f} MiB "
        f"(largest {max(s['heap'] for s in samples) / mib:.2f}; second half "
        f"{slope_per_hour(samples, 'heap') / mib:+.2f} MiB/h); DOM nodes {first['nodes']} → "
        f"{last['nodes']}; browser RSS {first['rss'] / mib:.0f} → {last['rss'] / mib:.0f} MiB "
        f"({slope_per_hour(samples, 'rss') / mib:+.1f} MiB/h); page errors {last['errors']}; "
        f"{len(samples)} samples over {last['t_s'] / 60:.0f} min"
    )


if __name__ == "__main__":
    main()
