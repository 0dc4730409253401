"""The console's city map with a city's devices: time to first draw, a zoom's redraw and the
page's JavaScript heap, for N devices beside 1,000 in the same run.

The console's own files are served by the API's console router (uvicorn, a free port); the
map is made in headless Chromium with the console's own modules (CityMap, I18n, Catalogue,
the shipped city's boundaries) and given N synthetic devices spread over the city's box:
90% online, 5% offline, 5% never reported, 0.5% alerting. Nothing of the platform's data
path is involved: this measures the browser's side only.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI
from playwright.async_api import async_playwright

from cityiot.api import console
from cityiot.platform.local_services import free_port

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--enable-precise-memory-info",
    "--js-flags=--expose-gc",
]
BASELINE_DEVICES = 1_000
ZOOMS = 5  # wheel steps in, each timed

HARNESS = """async (n) => {
  const { Catalogue } = await import('/console/catalogue.js');
  const { I18n } = await import('/console/i18n.js');
  const { CityMap, extent } = await import('/console/map.js');
  const catalogue = new Catalogue();
  await catalogue.load();
  const i18n = new I18n(localStorage, catalogue);
  if (!document.querySelector('link[href="/console/console.css"]')) {
    const css = document.createElement('link');
    css.rel = 'stylesheet';
    css.href = '/console/console.css';
    document.head.append(css);
    await new Promise((r) => css.addEventListener('load', r));
  }
  document.body.replaceChildren();
  const box = document.createElement('div');
  box.style.width = '1280px';
  box.style.height = '800px';
  document.body.append(box);
  const settle = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const map = new CityMap({ i18n, onOpen: () => {} });
  box.append(map.el);
  map.el.style.height = '800px';
  await settle();
  window.gc();
  const heap0 = performance.memory.usedJSHeapSize;

  const [w, s, e, north] = extent([], catalogue.city.boundaries, catalogue.city.center);
  const kinds = catalogue.kindIds();
  const districts = Object.keys(catalogue.data.districts);
  let seed = 7;
  const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
  const devices = [];
  const alerting = new Map();
  for (let i = 0; i < n; i++) {
    const roll = random();
    const id = `bench-${i}`;
    devices.push({
      id, kind: kinds[i % kinds.length], district: districts[i % districts.length],
      lat: s + random() * (north - s), lon: w + random() * (e - w),
      status: roll < 0.9 ? 'online' : roll < 0.95 ? 'offline' : 'unknown',
      link: 'mqtt', address: '',
    });
    if (random() < 0.005) alerting.set(id, 'major');
  }
  const draws = [];
  const draw = map.draw.bind(map);
  map.draw = () => { const t = performance.now(); draw(); draws.push(performance.now() - t); };
  const t0 = performance.now();
  map.setAlerting(alerting);
  map.setDevices(devices);
  while (map.el.dataset.drawn !== String(n)) {
    if (performance.now() - t0 > 300_000) {
      throw new Error(`the map drew ${map.el.dataset.drawn} of ${n} devices in 300 s`);
    }
    await new Promise((r) => requestAnimationFrame(r));
  }
  await settle();
  const firstDrawMs = performance.now() - t0;
  window.gc();
  const heap1 = performance.memory.usedJSHeapSize;

  window.bench = { map, draws, n, firstDrawMs, heap: heap1 - heap0 };
  const rect = map.el.querySelector('canvas').getBoundingClientRect();
  return { x: rect.left + rect.width / 2, y: rect.top + rect.height / 2 };
}"""


# After a wheel step: the redraw it caused (folded maps redraw their bubbles; dots need none).
AFTER_ZOOM = """async (before) => {
  const { draws } = window.bench;
  const frame = () => new Promise((r) => requestAnimationFrame(r));
  for (let f = 0; f < 10 && draws.length === before; f++) await frame();
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  return performance.now();
}"""
RESULT = """() => {
  const { map, draws, n, firstDrawMs, heap } = window.bench;
  const result = {
    devices: n, folded: map.el.dataset.folded === '1', first_draw_ms: firstDrawMs,
    draw_ms: draws[0] ?? null, heap_mib: heap / 2 ** 20, zoom: Number(map.el.dataset.zoom),
  };
  map.close();
  return result;
}"""


@dataclass
class MapDraw:
    devices: int
    folded: bool
    first_draw_ms: float
    draw_ms: float | None
    zoom_ms: float
    heap_mib: float
    zoom: float


@dataclass
class MapResult:
    """The map at the asked size and at the baseline's, from the same browser."""

    city: MapDraw
    baseline: MapDraw

    def as_dict(self) -> dict[str, Any]:
        return {"city": asdict(self.city), "baseline": asdict(self.baseline)}


@contextlib.contextmanager
def console_server() -> Iterator[str]:
    """The console's files (and its catalogue.json) on a free port, in a thread."""
    app = FastAPI()
    app.include_router(console.make_router())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the console's server did not start")
        threading.Event().wait(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


async def _measure(url: str, devices: int) -> MapResult:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(f"{exc}"))
            await page.goto(f"{url}/console/catalogue.json")  # an HTML page of our origin
            runs = {}
            # A first map, not counted: the modules load and the engine warms up on it.
            for n in (BASELINE_DEVICES, BASELINE_DEVICES, devices):
                centre = await page.evaluate(HARNESS, n)
                await page.mouse.move(centre["x"], centre["y"])
                zooms = []
                for _ in range(ZOOMS):
                    before = await page.evaluate("window.bench.draws.length")
                    started = await page.evaluate("performance.now()")
                    await page.mouse.wheel(0, -300)
                    zooms.append(await page.evaluate(AFTER_ZOOM, before) - started)
                result = await page.evaluate(RESULT)
                runs[n] = MapDraw(**result, zoom_ms=sorted(zooms)[len(zooms) // 2])
                if errors:
                    raise RuntimeError(f"the map failed in the browser: {errors[0]}")
            return MapResult(city=runs[devices], baseline=runs[BASELINE_DEVICES])
        finally:
            await browser.close()


def measure_map(devices: int) -> MapResult:
    """Draw the map with ``devices`` and with the baseline's 1,000, in one browser."""
    with console_server() as url:
        return asyncio.run(_measure(url, devices))


if __name__ == "__main__":
    import sys

    print(measure_map(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000).as_dict())
