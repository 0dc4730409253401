"""The built-in console (api/console) in headless Chromium against a running platform.

The tests run in file order on one platform: the alert raised in one is acknowledged there
and its work order is taken from the phone board in the next.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import expect
from rich.console import Console

from cityiot.platform.launcher import ADMIN_PASSWORD_SECRET, show_where
from tests.api.console.conftest import ConsolePlatform, Tab, screenshot

# A safety net for what the stream pushes (the console polls nothing); the pages loaded
# meanwhile are counted: none. How fast it shows is printed, and is the benchmark's.
LIVE_MS = 10_000

# The canvas's centroid of the pixels painted in the map's alerting colour, in CSS pixels.
FIND_ALERTING = """canvas => {
  const map = canvas.closest('.map');
  const hex = getComputedStyle(map).getPropertyValue('--alerting').trim();
  const want = [1, 3, 5].map(i => parseInt(hex.slice(i, i + 2), 16));
  const {width, height} = canvas;
  const data = canvas.getContext('2d').getImageData(0, 0, width, height).data;
  let sx = 0, sy = 0, n = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] === want[0] && data[i + 1] === want[1] && data[i + 2] === want[2]) {
      const p = i / 4; sx += p % width; sy += Math.floor(p / width); n++;
    }
  }
  const ratio = width / canvas.getBoundingClientRect().width;
  return n ? {x: sx / n / ratio, y: sy / n / ratio, pixels: n} : null;
}"""


async def sign_in(
    tab: Tab, platform: ConsolePlatform, path: str = "/", username: str | None = None
) -> None:
    """Open the console at ``path`` and sign in with a username and password, as a person does."""
    await tab.page.goto(f"{platform.url}{path}")
    await tab.page.locator("#username").fill(username or platform.username)
    await tab.page.locator("#password").fill(platform.password)
    await tab.page.locator("form.signin button[type=submit]").click()
    await expect(tab.page.locator("#app")).to_have_attribute("data-signed-in", "true")


async def registry_count(platform: ConsolePlatform) -> int:
    """Devices GET /devices lists (decommissioned ones are listed only when asked for)."""
    total = 0
    for params in ({}, {"status": "decommissioned"}):
        body = (await platform.http.get("/devices", params={**params, "limit": 1000})).json()
        assert body["next_cursor"] is None
        total += len(body["items"])
    return total


async def test_console_files_are_served_with_types_csp_and_revalidation(
    platform: ConsolePlatform,
) -> None:
    async with httpx.AsyncClient(base_url=platform.url) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cache-control"] == "no-cache"
        assert "<script" in page.text and "<script>" not in page.text  # no inline script
        for name, content_type in (
            ("app.js", "text/javascript; charset=utf-8"),
            ("console.css", "text/css; charset=utf-8"),
            ("icon.svg", "image/svg+xml"),
            ("catalogue.json", "application/json"),
        ):
            asset = await http.get(f"/console/{name}")
            assert asset.status_code == 200, name
            assert asset.headers["content-type"] == content_type
            assert "default-src 'self'" in asset.headers["content-security-policy"]
            again = await http.get(
                f"/console/{name}", headers={"If-None-Match": asset.headers["etag"]}
            )
            assert again.status_code == 304 and not again.content, name
        catalogue = (await http.get("/console/catalogue.json")).json()
        assert catalogue["districts"]["yicheng"] == {"zh": "驿城区", "en": "Yicheng District"}
        for missing in ("/console/nope.js", "/console/..%2F__init__.py", "/console/index.html"):
            assert (await http.get(missing)).status_code == 404, missing
        # The rest of the app is undisturbed.
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/metrics")).status_code == 200
        assert (await http.get("/docs")).status_code == 200
        assert (await http.get("/api/v1/devices")).status_code == 401
        paths = (await http.get("/openapi.json")).json()["paths"]
        assert "/" not in paths and not any(p.startswith("/console") for p in paths)


async def test_signing_in_with_a_password_shows_the_fleet_and_keeps_no_secret(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    tab = await open_tab()
    await sign_in(tab, platform)
    page = tab.page
    await expect(page.locator(".who")).to_have_text("值班长")
    # The session is in an HttpOnly cookie the page cannot read; nothing is in storage.
    assert await page.evaluate("document.cookie") == ""
    stored = await page.evaluate(
        "[...Object.keys(localStorage), ...Object.keys(sessionStorage)]"
        ".map(k => [k, localStorage.getItem(k) ?? sessionStorage.getItem(k)])"
    )
    assert all(name == "cityiot.lang" for name, _ in stored), stored
    cookies = await tab.context.cookies()
    assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
        ("cityiot_session", True, "Strict")
    ]
    count = await registry_count(platform)
    assert count == len(platform.fleet.devices)
    map_ = page.locator(".map")
    await expect(map_).to_have_attribute("data-drawn", str(count))
    await expect(map_).to_have_attribute("data-decommissioned", "2")
    await expect(map_).to_have_attribute("data-unknown", "4")
    await expect(map_).to_have_attribute("data-offline", "3")
    await expect(map_).to_have_attribute("data-online", str(count - 9))
    await expect(page.locator(".live")).to_have_attribute("data-state", "live")
    await expect(page.locator("[data-kpi=online] .tile-value")).to_have_text(
        f"{(count - 9) / (count - 2) * 100:.1f}%".replace(".0%", "%")
    )
    await expect(page.locator("[data-kpi=lighting] .tile-value")).not_to_be_empty()
    tab.assert_clean()


async def test_an_alert_shows_live_is_acknowledged_and_opens_its_device(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform)
    await expect(page.locator(".live")).to_have_attribute("data-state", "live")
    await expect(page.locator(".map")).to_have_attribute("data-alerting", "0")

    manhole = platform.alerting_manhole()
    row = page.locator(f'.alerts-panel [data-alert-device="{manhole.device_id}"]')
    loads: list[str] = []
    page.on("load", lambda loaded: loads.append(loaded.url))
    started = time.monotonic()
    platform.publish(manhole, {"cover_open": True, "tilt_deg": 31.0}, int(time.time() * 1000))
    await expect(row).to_be_visible(timeout=LIVE_MS)
    shown_after = time.monotonic() - started
    assert loads == []  # shown live, without a reload
    await expect(row).to_have_attribute("data-state", "firing")
    await expect(row.locator(".alert-summary")).to_contain_text("井盖打开或倾斜")
    await expect(row.locator(".alert-summary-other")).to_contain_text("Manhole cover open")
    await expect(page.locator(".map")).to_have_attribute("data-alerting", "1", timeout=LIVE_MS)
    await expect(page.locator("[data-kpi=alerts] [data-severity=critical]")).to_have_attribute(
        "data-count", "1", timeout=LIVE_MS
    )
    alert_id = await row.get_attribute("data-alert-id")
    assert alert_id
    print(f"alert shown {shown_after * 1000:.0f} ms after its reading was published")
    await screenshot(page, "console-overview")

    # Acknowledge from the page: the API agrees, and the row says so.
    await row.locator("button.ack").click()
    await expect(row).to_have_attribute("data-state", "acknowledged", timeout=LIVE_MS)
    alert = (await platform.http.get(f"/alerts/{alert_id}")).json()
    assert alert["state"] == "acknowledged"
    await expect(row.locator("button.ack")).to_have_count(0)

    # The red dot on the map is the alerting manhole: clicking it opens its page.
    canvas = page.locator("canvas.map-canvas")
    spot = await canvas.evaluate(FIND_ALERTING)
    assert spot, "no device painted in the alerting colour"
    await canvas.click(position={"x": spot["x"], "y": spot["y"]})
    await expect(page).to_have_url(f"{platform.url}/#/device/{manhole.device_id}")
    device = page.locator(f'.device-page[data-device-id="{manhole.device_id}"]')
    await expect(device).to_have_attribute("data-loaded", "true")
    chart = device.locator("figure.chart[data-metric=tilt_deg]")
    history_points = int(await chart.get_attribute("data-points") or 0)
    assert history_points >= 25, history_points  # the hour of history, every 2 minutes
    await expect(device.locator(f'[data-alert-id="{alert_id}"]')).to_be_visible()

    # A new reading arrives through the stream's `reading` events: tile and chart move.
    await expect(page.locator(".live")).to_have_attribute("data-state", "live")
    platform.publish(manhole, {"cover_open": True, "tilt_deg": 42.5}, int(time.time() * 1000))
    tile = device.locator(".reading[data-metric=tilt_deg] .reading-value")
    await expect(tile).to_contain_text("42.5", timeout=LIVE_MS)
    await expect(chart).to_have_attribute("data-points", str(history_points + 1))
    await screenshot(page, "console-device")
    tab.assert_clean()


async def test_work_order_board_on_a_phone(platform: ConsolePlatform, open_tab: Any) -> None:
    manhole = platform.alerting_manhole()
    orders = (await platform.http.get("/workorders", params={"state": "dispatched"})).json()
    order = next(o for o in orders["items"] if o["device_id"] == manhole.device_id)
    assert order["team"] == "urban"  # routing.yaml: manholes → urban management

    tab = await open_tab(viewport=(390, 844), is_mobile=True, has_touch=True, device_scale_factor=2)
    page = tab.page
    await sign_in(tab, platform, "/")
    await page.locator("[data-nav=workorders]").tap()
    card = page.locator(f'[data-workorder-id="{order["id"]}"]')
    await expect(card).to_have_attribute("data-state", "dispatched")
    columns = page.locator(".board .column")
    boxes = [await columns.nth(i).bounding_box() for i in range(await columns.count())]
    assert all(b and b["width"] > 340 for b in boxes), boxes  # stacked, full width
    assert [b["y"] for b in boxes if b] == sorted(b["y"] for b in boxes if b)
    accept = card.locator("button[data-action=accept]")
    box = await accept.bounding_box()
    assert box and box["height"] >= 44, box  # touch-sized
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await screenshot(page, "console-workorders-phone")

    await accept.tap()
    await expect(card).to_have_attribute("data-state", "accepted")
    taken = (await platform.http.get(f"/workorders/{order['id']}")).json()
    assert taken["state"] == "accepted" and taken["assignee"] == "值班长"  # the person
    await expect(card.locator("button[data-action=on_site]")).to_be_visible()
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    # The overview on a phone does not scroll sideways either.
    await page.locator("[data-nav=overview]").tap()
    await expect(page.locator(".map")).not_to_have_attribute("data-drawn", "0")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    tab.assert_clean()


async def test_language_toggle_switches_labels_and_is_remembered(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform)
    nav = page.locator("[data-nav=workorders]")
    await expect(nav).to_have_text("工单")
    await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    await expect(page.locator("[data-kpi=online] h3")).to_have_text("设备在线率")
    await page.locator("button.lang").click()
    await expect(nav).to_have_text("Work orders")
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await expect(page.locator("[data-kpi=online] h3")).to_have_text("Devices online")
    await expect(page.locator(".legend [data-state=alerting]")).to_contain_text("Alerting")
    await expect(page.locator(".map")).not_to_have_attribute("data-drawn", "0")
    await screenshot(page, "console-overview-en")
    await page.reload()
    await expect(nav).to_have_text("Work orders")  # remembered in localStorage
    await page.locator("button.lang").click()
    await expect(nav).to_have_text("工单")
    tab.assert_clean()


async def test_a_device_page_shows_its_link_in_both_languages(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    """接入方式 / Link: how the device reports, as GET /devices says (issue 26); "—" for a
    device that has not reported yet."""
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform)
    reporting, silent = platform.reporting[0], platform.fleet.devices[0]  # SILENT come first
    assert (await platform.http.get(f"/devices/{reporting.device_id}")).json()["link"] == "mqtt"
    assert (await platform.http.get(f"/devices/{silent.device_id}")).json()["link"] is None
    for device, zh, en in ((reporting, "MQTT", "MQTT"), (silent, "—", "—")):
        await page.goto(f"{platform.url}/#/device/{device.device_id}")
        view = page.locator(f'.device-page[data-device-id="{device.device_id}"]')
        await expect(view).to_have_attribute("data-loaded", "true")
        link = view.locator("[data-fact=link]")
        await expect(link.locator("dt")).to_have_text("接入方式")
        await expect(link.locator("dd")).to_have_text(zh)
        await page.locator("button.lang").click()
        await expect(link.locator("dt")).to_have_text("Link")
        await expect(link.locator("dd")).to_have_text(en)
        await page.locator("button.lang").click()  # back to Chinese for the next device
        await expect(link.locator("dt")).to_have_text("接入方式")
    # Every link the platform names has its title in both languages (the fleet here is MQTT).
    titles = await page.evaluate(
        """async () => {
        const {I18n} = await import('/console/i18n.js');
        const storage = {getItem: () => null, setItem: () => {}};
        const out = {};
        for (const lang of ['zh', 'en']) {
          const i18n = new I18n(storage, {});
          i18n.lang = lang;
          out[lang] = ['mqtt', 'http', 'chirpstack', 'ctwing', 'onenet', null, 'lorawan2']
            .map(link => i18n.link(link));
        }
        return out;
    }"""
    )
    assert titles == {
        "zh": ["MQTT", "HTTP", "LoRaWAN（ChirpStack）", "NB-IoT（电信 CTWing）",
               "NB-IoT（移动 OneNET）", "—", "lorawan2"],
        "en": ["MQTT", "HTTP", "LoRaWAN (ChirpStack)", "NB-IoT (CTWing)", "NB-IoT (OneNET)",
               "—", "lorawan2"],
    }  # fmt: skip
    tab.assert_clean()


async def test_a_wrong_password_and_a_forbidden_view_say_what_is_wrong(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    tab = await open_tab()
    page = tab.page
    await page.goto(f"{platform.url}/")
    await page.locator("#username").fill(platform.username)
    await page.locator("#password").fill("not the password at all")
    await page.locator("form.signin button[type=submit]").click()
    await expect(page.locator("#signin-message")).to_have_text("用户名或密码错误。")
    assert await page.locator("#password").input_value() == ""  # not left in the form
    # An earlier console's stored key is removed, never used.
    await page.evaluate("localStorage.setItem('cityiot.key', 'cik_old')")
    await page.reload()
    await expect(page.locator("#username")).to_be_visible()
    assert await page.evaluate("localStorage.getItem('cityiot.key')") is None
    # A vendor's person may list its devices but not the city's statistics (403).
    vendor = await platform.person_of("vendor", vendor=platform.alerting_manhole().vendor)
    await sign_in(tab, platform, username=vendor)
    await expect(page.locator(".tiles-error")).to_contain_text("无权执行该操作")
    # The browser logs each refused request (the wrong password's 401, the 403s): expected.
    refused = ("status of 401 (Unauthorized)", "status of 403 (Forbidden)")
    tab.errors = [e for e in tab.errors if not e.endswith(refused)]
    tab.assert_clean()


async def test_the_sse_parser_takes_events_split_anywhere(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    tab = await open_tab()
    await tab.page.goto(f"{platform.url}/")
    events = await tab.page.evaluate(
        """async () => {
        const {SseParser} = await import('/console/sse.js');
        const text = ': ping\\r\\nevent: ready\\r\\ndata: {"a":1}\\r\\n\\r\\n' +
          'event: alert\\ndata: line 1\\ndata: line 2\\n\\n' + 'data: plain\\r\\r';
        const out = [];
        for (const size of [1, 2, 3, 7, text.length]) {
          const seen = [];
          const parser = new SseParser(e => seen.push([e.event, e.data]));
          for (let i = 0; i < text.length; i += size) parser.push(text.slice(i, i + size));
          out.push(seen);
        }
        return out;
    }"""
    )
    expected = [["ready", '{"a":1}'], ["alert", "line 1\nline 2"], ["message", "plain"]]
    assert all(seen == expected for seen in events), events


async def test_every_label_exists_in_both_languages(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    tab = await open_tab()
    await tab.page.goto(f"{platform.url}/")
    missing = await tab.page.evaluate(
        """async () => {
        const {LABELS} = await import('/console/i18n.js');
        const keys = new Set(Object.values(LABELS).flatMap(Object.keys));
        return Object.entries(LABELS).flatMap(
          ([lang, labels]) => [...keys].filter(k => !(k in labels)).map(k => `${lang}: ${k}`));
    }"""
    )
    assert not missing, missing


def test_run_prints_the_console_address_and_where_its_password_is(tmp_path: Path) -> None:
    from cityiot.domain.settings import Settings

    (tmp_path / ADMIN_PASSWORD_SECRET).write_text("run-password-1234\n")
    settings = Settings(mqtt_url="mqtt://127.0.0.1:1883", influx_url="http://127.0.0.1:8086")
    for terminal in (True, False):
        screen = io.StringIO()
        show_where(
            settings,
            tmp_path,
            Console(file=screen, force_terminal=terminal, color_system=None, width=300),
            "http://127.0.0.1:8080",
        )
        shown = screen.getvalue()
        assert "console       http://127.0.0.1:8080/" in shown
        assert f"sign in as admin, password in {tmp_path / ADMIN_PASSWORD_SECRET}" in shown
        if terminal:  # on the operator's own screen
            assert "password: run-password-1234" in shown
        else:  # redirected output (logs) never holds it
            assert "run-password-1234" not in shown


async def test_signing_out_ends_the_session_for_every_tab_and_a_copied_cookie(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    tab = await open_tab()
    await sign_in(tab, platform)
    page = tab.page
    await expect(page.locator(".live")).to_have_attribute("data-state", "live")
    (cookie,) = await tab.context.cookies()
    second = await tab.context.new_page()  # another tab of the same browser: same session
    await second.goto(f"{platform.url}/")
    await expect(second.locator("#app")).to_have_attribute("data-signed-in", "true")
    await page.locator("button.signout").click()
    await expect(page.locator("#username")).to_be_visible()
    # The other tab's live stream ends with the session: it shows the sign-in form too.
    await expect(second.locator("#app")).to_have_attribute("data-signed-in", "false")
    await expect(second.locator("#signin-message")).to_have_text("会话已结束，请重新登录。")
    async with httpx.AsyncClient(base_url=platform.url) as thief:
        thief.cookies.set(cookie["name"], cookie["value"])
        r = await thief.get("/api/v1/devices")
        assert r.status_code == 401 and "signed out" in r.json()["detail"]
    refused = ("status of 401 (Unauthorized)",)
    tab.errors = [e for e in tab.errors if not e.endswith(refused)]
    tab.assert_clean()


async def test_a_page_of_another_site_cannot_act_with_the_session(
    platform: ConsolePlatform, open_tab: Any, tmp_path: Path
) -> None:
    """A CSRF attempt from another origin: the browser, signed in to the console, opens a
    hostile page (served from localhost, another site than 127.0.0.1) that posts to the API.
    The SameSite=Strict cookie is not sent, and without the session's CSRF token the API
    would refuse it anyway (tests/security/test_people.py)."""
    import http.server
    import threading
    from functools import partial

    from cityiot.platform.local_services import free_port

    tab = await open_tab()
    await sign_in(tab, platform)
    target = f"{platform.url}/api/v1/users"
    (tmp_path / "index.html").write_text(
        f"""<!doctype html><form id="f" method="post" action="{target}"
        enctype="text/plain"><input name='{{"username":"csrf.victim","role":"admin","x":"'
        value='"}}'></form>
        <script>
        fetch("{target}", {{method: "POST", credentials: "include", mode: "no-cors",
          headers: {{"Content-Type": "text/plain"}},
          body: JSON.stringify({{username: "csrf.fetch", role: "admin"}})}})
          .finally(() => document.getElementById("f").submit());
        </script>"""
    )
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        hostile = await tab.context.new_page()
        await hostile.goto(f"http://localhost:{server.server_address[1]}/index.html")
        await expect(hostile).to_have_url(target)  # the form went, without the cookie:
        assert '"status":401' in (await hostile.content()).replace(" ", "")
    finally:
        server.shutdown()
    for name in ("csrf.victim", "csrf.fetch"):
        assert (await platform.http.get(f"/users/{name}")).status_code == 404
    # The console itself is still signed in and works.
    await tab.page.reload()
    await expect(tab.page.locator("#app")).to_have_attribute("data-signed-in", "true")
