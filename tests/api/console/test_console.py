"""The built-in console (api/console) in headless Chromium against a running platform.

The tests run in file order on one platform: the alert raised in one is acknowledged there
and its work order is taken from the phone board in the next.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
from playwright.async_api import expect
from rich.console import Console
from sqlalchemy import delete, update

from cityiot.platform.launcher import ADMIN_PASSWORD_SECRET, show_where
from cityiot.simulators.fleet import SimDevice
from cityiot.storage.device_csv import REQUIRED_COLUMNS
from cityiot.storage.tables.alerts import Alert
from cityiot.storage.tables.registry import Device
from cityiot.storage.tables.workorders import WorkOrder
from cityiot.storage.utc import utcnow
from tests.api.console.conftest import ConsolePlatform, Tab, screenshot
from tests.waiting import until

# A safety net for what the stream pushes (the console polls nothing); the pages loaded
# meanwhile are counted: none. How fast it shows is printed, and is the benchmark's.
LIVE_MS = 10_000

# Where the map draws a device ([lon, lat]) in CSS pixels of its canvas, and whether that
# pixel is painted in the alerting colour. The map's own ECharts instance converts.
FIND_DEVICE = """async ([lon, lat]) => {
  const echarts = await import('/console/vendor/echarts.esm.min.js');
  const box = document.querySelector('.map-box');
  const [x, y] = echarts.getInstanceByDom(box).convertToPixel({geoIndex: 0}, [lon, lat]);
  const canvas = box.querySelector('canvas.map-canvas');
  const ratio = canvas.width / canvas.getBoundingClientRect().width;
  const pixel = canvas.getContext('2d').getImageData(Math.round(x * ratio), Math.round(y * ratio), 1, 1).data;
  const hex = getComputedStyle(box.closest('.map')).getPropertyValue('--alerting').trim();
  const want = [1, 3, 5].map(i => parseInt(hex.slice(i, i + 2), 16));
  return {x, y, alerting: [0, 1, 2].every(i => pixel[i] === want[i])};
}"""


# Stands in for the desktop: counts the notifications the console makes (the permission is
# the browser's, granted by the test).
COUNT_NOTIFICATIONS = """(() => {
  const Real = window.Notification;
  window.__notifications = [];
  function Desktop(title, options = {}) { window.__notifications.push({title, body: options.body ?? ""}); }
  Object.defineProperty(Desktop, "permission", {get: () => Real.permission});
  Desktop.requestPermission = (...args) => Real.requestPermission(...args);
  window.Notification = Desktop;
})()"""
FLASH = re.compile(r"\bflash\b")
OVERDUE = re.compile(r"\boverdue\b")


def manholes(platform: ConsolePlatform) -> list[SimDevice]:
    """The JSON manholes; the first is :meth:`ConsolePlatform.alerting_manhole`, the others
    are the ones later tests open."""
    found = [d for d in platform.reporting if d.kind == "manhole" and d.codec == "json"]
    assert found[0] is platform.alerting_manhole() and len(found) >= 4
    return found


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
    return len(await listed(platform))


async def _painted(page: Any, where: list[float]) -> dict[str, Any] | None:
    spot: dict[str, Any] = await page.evaluate(FIND_DEVICE, where)
    return spot if spot["alerting"] else None


async def _zoomed_past(page: Any, before: float) -> float | None:
    zoom = float(await page.locator(".map").get_attribute("data-zoom") or 1)
    return zoom if zoom > before else None


async def open_alerts(platform: ConsolePlatform) -> tuple[set[str], int]:
    """The devices with an open (firing or acknowledged) alert, and the open critical alerts."""
    devices: set[str] = set()
    critical = 0
    for state in ("firing", "acknowledged"):
        body = (await platform.http.get("/alerts", params={"state": state, "limit": 1000})).json()
        devices |= {a["device_id"] for a in body["items"]}
        critical += sum(a["severity"] == "critical" for a in body["items"])
    return devices, critical


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
    # Other tests of this process may have raised alerts on other devices before this one.
    alerting, critical = await open_alerts(platform)
    await expect(page.locator(".map")).to_have_attribute("data-alerting", str(len(alerting)))

    manhole = platform.alerting_manhole()
    assert manhole.device_id not in alerting  # only this test opens its cover
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
    await expect(page.locator(".map")).to_have_attribute(
        "data-alerting", str(len(alerting) + 1), timeout=LIVE_MS
    )
    await expect(page.locator("[data-kpi=alerts] [data-severity=critical]")).to_have_attribute(
        "data-count", str(critical + 1), timeout=LIVE_MS
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

    # The red dot on the map is the alerting manhole: zoomed in on (other devices near it
    # part), clicking it opens its page.
    canvas = page.locator("canvas.map-canvas")
    where = [manhole.lon, manhole.lat]
    box = await canvas.bounding_box()
    assert box
    zoom = 1.0
    while zoom < 50:  # a street's width apart: the manholes near it stand apart
        spot = await page.evaluate(FIND_DEVICE, where)
        await page.mouse.move(box["x"] + spot["x"], box["y"] + spot["y"])
        await page.mouse.wheel(0, -600)
        zoom = await until(lambda before=zoom: _zoomed_past(page, before), 10, "the map zoomed in")
    spot = await until(
        lambda: _painted(page, where), 10, "the alerting manhole painted red where it stands"
    )
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


async def test_a_work_order_card_shows_where_to_go_its_clock_and_its_journal(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    """The board on a phone, one card whole: the device's address (text, whatever it holds)
    and district, a geo: link for the phone's navigation, the SLA clock counting down and
    overdue once past due, touch-sized steps taken by the person signed in, and a note sent
    with a step, stored and shown in the journal. The order is this test's own."""
    manhole = manholes(platform)[1]
    address = "<img src=x onerror=alert(1)> 驿城区解放路 (东) 3 号"
    r = await platform.http.patch(f"/devices/{manhole.device_id}", json={"address": address})
    assert r.status_code == 200, r.text
    device = r.json()
    platform.publish(manhole, {"cover_open": True, "tilt_deg": 25.0}, int(time.time() * 1000))

    async def dispatched() -> dict[str, Any] | None:
        body = (await platform.http.get("/workorders", params={"state": "dispatched"})).json()
        return next((o for o in body["items"] if o["device_id"] == manhole.device_id), None)

    order = await until(dispatched, 10, f"a work order for {manhole.device_id}")
    assert order["team"] == "urban"  # routing.yaml: manholes → urban management
    assert (order["address"], order["lat"], order["lon"]) == (
        address,
        device["lat"],
        device["lon"],
    )
    catalogue = (await platform.http.get(f"{platform.url}/console/catalogue.json")).json()
    district = catalogue["districts"][device["district"]]["zh"]

    tab = await open_tab(viewport=(390, 844), is_mobile=True, has_touch=True, device_scale_factor=2)
    page = tab.page
    await sign_in(tab, platform)
    await page.locator("[data-nav=workorders]").tap()
    card = page.locator(f'[data-workorder-id="{order["id"]}"]')
    await expect(card).to_have_attribute("data-state", "dispatched")
    await expect(card.locator(".card-address")).to_have_text(f"{address} · {district}")
    await expect(card.locator(".team")).to_have_text("城市管理局")  # routing.yaml's title
    assert await card.locator(".card-address img").count() == 0  # text, not markup
    label = quote(address, safe="-_.~")
    lat, lon = device["lat"], device["lon"]
    geo = f"geo:{lat},{lon}?q={lat},{lon}({label})"
    await expect(card.locator("a.navigate")).to_have_attribute("href", geo)

    # The clock runs: on site within 30 minutes of dispatch (critical), counting down.
    clock = card.locator(".sla-clock")
    await expect(clock).to_have_attribute("data-clock", "verify")
    await expect(clock).to_contain_text(re.compile(r"到场 · 剩 \d+ 分 \d+ 秒"))
    await expect(clock).not_to_have_class(OVERDUE)
    shown = await clock.text_content()
    await expect(clock).not_to_have_text(shown or "")  # it moved on
    columns = page.locator(".board .column")
    boxes = [await columns.nth(i).bounding_box() for i in range(await columns.count())]
    assert all(b and b["width"] > 340 for b in boxes), boxes  # stacked, full width
    assert [b["y"] for b in boxes if b] == sorted(b["y"] for b in boxes if b)
    box = await card.locator("button[data-action=accept]").bounding_box()
    assert box and box["height"] >= 44, box  # touch-sized
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await screenshot(page, "console-workorders-phone")

    # A note typed on accept goes with the step: stored in the journal and shown on the card.
    note = "带上新井盖 <b>2</b>"
    await card.locator("input.step-note").fill(note)
    await card.locator("button[data-action=accept]").tap()
    await expect(card).to_have_attribute("data-state", "accepted")
    taken = (await platform.http.get(f"/workorders/{order['id']}")).json()
    assert taken["state"] == "accepted" and taken["assignee"] == "值班长"  # the person
    assert taken["note"].endswith(f"accept by 值班长: {note}"), taken["note"]
    await expect(card.locator(".journal")).to_contain_text(f"接单 · 值班长: {note}")
    await expect(card.locator("input.step-note")).to_have_value("")

    # Past due: the clock says by how much, in the warning colour.
    async with platform.sessions() as session, session.begin():
        await session.execute(
            update(WorkOrder)
            .where(WorkOrder.id == order["id"])
            .values(verify_due_at=utcnow() - dt.timedelta(minutes=12, seconds=5))
        )
    await page.reload()
    await expect(clock).to_have_class(OVERDUE)
    await expect(clock).to_contain_text("到场 · 超时 12 分")
    colour = await clock.evaluate("el => getComputedStyle(el).color")
    assert colour == "rgb(215, 38, 61)", colour  # --critical
    # The overview on a phone does not scroll sideways either.
    await page.locator("[data-nav=overview]").tap()
    await expect(page.locator(".map")).not_to_have_attribute("data-drawn", "0")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    tab.assert_clean()


async def test_a_critical_alert_arriving_live_sounds_flashes_and_notifies(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    """Issue 28, item 4: a critical or major alert arriving live flashes its row; with the
    top bar's bell on it also sounds (two beeps, Web Audio) and shows a desktop
    notification. Alerts open at load, and minor or warning ones, stay quiet."""
    tab = await open_tab()
    page = tab.page
    await tab.context.grant_permissions(["notifications"], origin=platform.url)
    await page.add_init_script(COUNT_NOTIFICATIONS)
    await sign_in(tab, platform)
    await expect(page.locator(".live")).to_have_attribute("data-state", "live")
    alerts = page.locator(".alerts-panel .alerts")
    await expect(alerts).to_have_attribute("data-count", re.compile(r"\d"))  # loaded: quiet
    html = page.locator("html")
    bell = page.locator("button.alerting")
    await expect(bell).to_have_attribute("aria-pressed", "false")  # off by default
    await expect(bell).to_have_text("提示音 关")

    def row(device: SimDevice) -> Any:
        return page.locator(f'.alerts-panel [data-alert-device="{device.device_id}"]')

    # Bell off: the row flashes (a static highlight with reduced motion), no sound.
    quiet, loud = manholes(platform)[2:4]
    await page.emulate_media(reduced_motion="reduce")
    platform.publish(quiet, {"cover_open": True, "tilt_deg": 20.0}, int(time.time() * 1000))
    await expect(row(quiet)).to_have_class(FLASH, timeout=LIVE_MS)
    assert await row(quiet).evaluate("el => getComputedStyle(el).animationName") == "none"
    await expect(html).to_have_class(re.compile(r"\balert-flash\b"))
    await page.emulate_media(reduced_motion="no-preference")

    # Bell on (the click is the gesture that lets audio play).
    await bell.click()
    await expect(bell).to_have_attribute("aria-pressed", "true")
    await expect(bell).to_have_text("提示音 开")
    parking = next(d for d in platform.reporting if d.kind == "parking" and d.codec == "json")
    platform.publish(parking, {"battery_pct": 10.0}, int(time.time() * 1000))
    warning = row(parking).filter(has_text="电池电量")
    await expect(warning).to_be_visible(timeout=LIVE_MS)
    await expect(warning).not_to_have_class(FLASH)

    platform.publish(loud, {"cover_open": True, "tilt_deg": 33.0}, int(time.time() * 1000))
    await expect(row(loud)).to_have_class(FLASH, timeout=LIVE_MS)
    animation = await row(loud).evaluate("el => getComputedStyle(el).animationName")
    assert animation == "alert-flash", animation
    loud_id = await row(loud).get_attribute("data-alert-id")
    # Sounds end in the order they start: when the loud one's has played, a sound for the
    # quiet or the warning alert would have played before it.
    await expect(html).to_have_attribute("data-tone-alert", loud_id or "", timeout=LIVE_MS)
    await expect(html).to_have_attribute("data-tones", "1")
    shown = await page.evaluate("window.__notifications")
    assert [n["title"] for n in shown] == [f"紧急告警 · {loud.device_id}"], shown
    assert shown[0]["body"].startswith("井盖打开或倾斜（倾角 33"), shown  # this language's
    await expect(row(loud)).not_to_have_class(FLASH, timeout=LIVE_MS)  # for a few seconds

    # Remembered; after a reload the open alerts stay quiet.
    await page.reload()
    await expect(page.locator("#app")).to_have_attribute("data-signed-in", "true")
    await expect(bell).to_have_attribute("aria-pressed", "true")
    await expect(row(loud)).to_be_visible()
    assert await html.get_attribute("data-tones") is None
    assert await page.evaluate("window.__notifications") == []
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
    tab.assert_clean(refused=("401 (Unauthorized)", "403 (Forbidden)"))


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


XSS = "<img src=x onerror=alert(1)>"
VENDORS_SHOWN = "els => els.map(e => e.dataset.vendor)"  # of the dead letters listed


def two_vendors(platform: ConsolePlatform) -> tuple[SimDevice, SimDevice]:
    """Two reporting JSON devices of different vendors."""
    json_devices = [d for d in platform.reporting if d.codec == "json"]
    first = json_devices[0]
    return first, next(d for d in json_devices if d.vendor != first.vendor)


async def dead_letter(platform: ConsolePlatform, device: SimDevice, text: str) -> dict[str, Any]:
    """Publish ``text`` (no reading: it is rejected) on ``device``'s topic; its dead letter."""
    platform.publisher.publish(device.telemetry_topic, text.encode(), qos=1).wait_for_publish(5)

    async def stored() -> dict[str, Any] | None:
        params = {"device_id": device.device_id, "limit": 1000}
        body = (await platform.http.get("/deadletters", params=params)).json()
        return next((d for d in body["items"] if d["payload"] == text), None)

    found: dict[str, Any] = await until(stored, 10, f"the dead letter of {device.device_id}")
    return found


async def test_dead_letters_show_payloads_as_text_and_filter_by_vendor(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    first, second = two_vendors(platform)
    marker = uuid.uuid4().hex
    xss = await dead_letter(platform, first, f"{XSS} {marker}")
    other = await dead_letter(platform, second, f"not json {marker}")
    long = await dead_letter(platform, first, f"{marker} " + "x" * 3000)  # past the preview
    tab = await open_tab()
    page = tab.page
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await sign_in(tab, platform, "/#/deadletters")
    room = page.locator(".deadletters-page")
    await expect(room).to_have_attribute("data-loaded", "true")
    await expect(page.locator("[data-nav=deadletters]")).to_have_attribute("aria-current", "page")
    await expect(page.locator("[data-nav=deadletters]")).to_have_text("死信")
    await expect(room.locator("h2")).to_have_text("死信")
    # Narrowed to the device (the API's filter): the XSS payload is shown as text.
    await page.locator("#dl-device").fill(first.device_id)
    await page.locator(".room-filters button.apply").click()
    row = room.locator(f'[data-deadletter-id="{xss["id"]}"]')
    await expect(row.locator("pre.payload")).to_have_text(f"{XSS} {marker}")
    await expect(row.locator(".dl-reason")).to_have_text(xss["reason"])
    await expect(row.locator(".dl-vendor")).to_have_text(first.vendor)
    assert await room.locator("img").count() == 0  # text, not markup
    assert dialogs == []
    # A long payload is cut until "show all".
    cut = room.locator(f'[data-deadletter-id="{long["id"]}"]')
    await expect(cut.locator("pre.payload")).to_have_text(re.compile(r"^[0-9a-f]{32} x+…$"))
    await cut.locator("button.show-all").click()
    await expect(cut.locator("pre.payload")).to_have_text(long["payload"])
    await expect(cut.locator("button.show-all")).to_have_attribute("aria-expanded", "true")
    # The vendor filter narrows the list to that vendor's letters.
    await page.locator("#dl-device").fill("")
    await page.locator("#dl-vendor").select_option(second.vendor)
    await page.locator(".room-filters button.apply").click()
    await expect(room.locator(f'[data-deadletter-id="{other["id"]}"]')).to_be_visible()
    await expect(row).to_have_count(0)
    vendors = await room.locator(".deadletter").evaluate_all(VENDORS_SHOWN)
    assert vendors and set(vendors) == {second.vendor}, vendors
    await expect(room).not_to_contain_text("null")
    await screenshot(page, "console-deadletters")
    # In English.
    await page.locator("button.lang").click()
    await expect(page.locator("[data-nav=deadletters]")).to_have_text("Dead letters")
    await expect(room.locator("h2")).to_have_text("Dead letters")
    await expect(room.locator("label[for=dl-vendor]")).to_have_text("Vendor")
    await expect(page.locator("#dl-vendor")).to_have_value(second.vendor)  # kept
    await page.locator("button.lang").click()
    await expect(room.locator("h2")).to_have_text("死信")
    tab.assert_clean()


async def test_dead_letters_page_with_more_and_a_vendor_sees_only_its_own(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    first, second = two_vendors(platform)
    marker = uuid.uuid4().hex
    mine = await dead_letter(platform, first, f"mine {marker}")
    theirs = await dead_letter(platform, second, f"theirs {marker}")
    for n in range(51):  # past the room's page of 50
        await dead_letter(platform, first, f"page {n} {marker}")
    person = await platform.person_of("vendor", vendor=first.vendor)
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform, "/#/deadletters", username=person)
    room = page.locator(".deadletters-page")
    await expect(room).to_have_attribute("data-loaded", "true")
    # A vendor reads dead letters but may not manage silences: no link, no room.
    await expect(page.locator("[data-nav=deadletters]")).to_be_visible()
    await expect(page.locator("[data-nav=silences]")).to_have_count(0)
    await expect(room.locator(".deadletter")).to_have_count(50)
    await expect(room.locator(f'[data-deadletter-id="{mine["id"]}"]')).to_have_count(0)
    await room.locator("button.more").click()
    await expect(room.locator(f'[data-deadletter-id="{mine["id"]}"]')).to_be_visible()
    vendors = await room.locator(".deadletter").evaluate_all(VENDORS_SHOWN)
    assert set(vendors) == {first.vendor}, vendors
    assert await room.locator(f'[data-deadletter-id="{theirs["id"]}"]').count() == 0
    await page.goto(f"{platform.url}/#/silences")
    await expect(page.locator(".overview")).to_be_visible()
    assert await page.locator(".silences-page").count() == 0
    # The vendor's overview asks for the city's statistics: refused (403), as expected.
    tab.assert_clean(refused=("403 (Forbidden)",))


async def test_a_silence_is_created_and_ended_early_in_the_console(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform, "/#/silences")
    room = page.locator(".silences-page")
    await expect(room).to_have_attribute("data-loaded", "true")
    await expect(page.locator("[data-nav=silences]")).to_have_text("屏蔽与维护")
    await expect(room.locator(".maintenance")).to_contain_text("rules/routing.yaml")
    # A matcher the API refuses: its 422 says what to change, in the form.
    await page.locator("#sil-label-0").select_option("kind")
    await page.locator("#sil-value-0").fill("no-such-kind")
    await page.locator("form.silence-form button.create").click()
    error = room.locator(".form-error")
    await expect(error).to_contain_text("422")
    await expect(error).to_contain_text("is not a kind")
    # Matching no real alert (a device id no one has), so no other test's alert is muted.
    device = f"nosuch-{uuid.uuid4().hex[:8]}"
    comment = f"console silence {uuid.uuid4().hex}"
    await page.locator("#sil-label-0").select_option("device_id")
    await page.locator("#sil-value-0").fill(device)
    await page.locator("button.add-matcher").click()
    await page.locator("#sil-label-1").select_option("severity")
    await page.locator("#sil-op-1").select_option("!=")
    await page.locator("#sil-value-1").fill("warning")
    await page.locator("#sil-duration").select_option("60")
    await page.locator("#sil-comment").fill(comment)
    await page.locator("form.silence-form button.create").click()
    await expect(error).to_be_hidden()
    current = room.locator("[data-list=current] .silence", has_text=comment)
    await expect(current).to_have_attribute("data-state", "active")
    await expect(current.locator(".matcher-chip")).to_have_text(
        [f"device_id = {device}", "severity != warning"]
    )
    made = next(s for s in await platform.listed("/silences", False) if s["comment"] == comment)
    assert made["active"] and made["matchers"] == [
        {"label": "device_id", "op": "=", "value": device},
        {"label": "severity", "op": "!=", "value": "warning"},
    ]
    assert made["created_by"].startswith(f"user:{platform.username}")
    await expect(current).to_have_attribute("data-silence-id", made["id"])
    await screenshot(page, "console-silences")
    # In English.
    await page.locator("button.lang").click()
    await expect(page.locator("[data-nav=silences]")).to_have_text("Silences")
    await expect(room.locator("h2")).to_have_text("Silences and maintenance")
    await expect(current.locator("button.expire")).to_have_text("End now")
    # Ended early: gone from those in force, listed as ended, by the API too.
    await current.locator("button.expire").click()
    ended = room.locator(f'[data-list=expired] [data-silence-id="{made["id"]}"]')
    await expect(ended).to_have_attribute("data-state", "expired")
    await expect(ended.locator(".chip")).to_have_text("Ended")
    in_force = room.locator(f'[data-list=current] [data-silence-id="{made["id"]}"]')
    await expect(in_force).to_have_count(0)
    assert made["id"] not in {s["id"] for s in await platform.listed("/silences", False)}
    (gone,) = [s for s in await platform.listed("/silences", True) if s["id"] == made["id"]]
    assert not gone["active"]
    await page.locator("button.lang").click()
    await expect(ended.locator(".chip")).to_have_text("已结束")
    # The browser logs the refused request (the 422): expected.
    tab.assert_clean(refused=("422 (Unprocessable Entity)",))


async def test_sla_tiles_show_rates_over_the_orders_due(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    tab = await open_tab()
    await tab.page.goto(f"{platform.url}/")
    shown = await tab.page.evaluate(
        """async () => {
        const {OverviewView} = await import('/console/overview.js');
        const {I18n} = await import('/console/i18n.js');
        const i18n = new I18n({getItem: () => null, setItem: () => {}}, {});
        const view = Object.create(OverviewView.prototype);  // the tiles only, no map
        view.tiles = document.createElement('section');
        const base = {verification_target: 0.97, closure_target: 0.95, created: 3};
        const cases = [
          // One order dispatched a minute ago: nothing due yet.
          {verification_due: 0, verified_on_time: 0, on_time_verification_rate: null,
           meets_verification_target: true, closure_due: 0, closed: 0, closure_rate: null,
           meets_closure_target: true, on_time_closure_rate: null},
          {verification_due: 2, verified_on_time: 2, on_time_verification_rate: 1,
           meets_verification_target: true, closure_due: 2, closed: 1, closure_rate: 0.5,
           meets_closure_target: false, on_time_closure_rate: 0.5},
        ];
        const out = [];
        for (const lang of ['zh', 'en']) {
          i18n.lang = lang;
          for (const kpis of cases) {
            view.app = {i18n, overview: {devices: {}, lighting: null,
              alerts: {open: 0, by_severity: {}, pending: 0}, kpis: {...base, ...kpis}}};
            view.renderTiles();
            for (const name of ['verify', 'closure']) {
              const el = view.tiles.querySelector(`[data-kpi=${name}]`);
              out.push([el.className, el.dataset.count, el.dataset.due,
                ...['h3', '.tile-value', '.tile-sub'].map(s => el.querySelector(s).textContent)]);
            }
          }
        }
        return out;
    }"""
    )
    assert shown == [
        ["tile not-due", "0", "0", "按时核查率", "—", "目标 97% · 无到期案件（近 30 天派发 3 单）"],
        ["tile not-due", "0", "0", "结案率", "—", "目标 95% · 无到期案件（近 30 天派发 3 单）"],
        ["tile meets", "2", "2", "按时核查率", "100%", "目标 97% · 按时核查 2 / 应核查 2"],
        ["tile misses", "1", "2", "结案率", "50%", "目标 95% · 结案 1 / 应结案 2 · 按期结案率 50%"],
        ["tile not-due", "0", "0", "On-time verification", "—",
         "target 97% · no case due yet (3 dispatched in 30 days)"],
        ["tile not-due", "0", "0", "Closure rate", "—",
         "target 95% · no case due yet (3 dispatched in 30 days)"],
        ["tile meets", "2", "2", "On-time verification", "100%",
         "target 97% · 2 of 2 due verified on time"],
        ["tile misses", "1", "2", "Closure rate", "50%",
         "target 95% · 1 of 2 due closed · on time 50%"],
    ]  # fmt: skip
    tab.assert_clean()


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
    tab.assert_clean(refused=("401 (Unauthorized)",))


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


async def test_the_big_screen_shows_the_city_at_1920_by_1080(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    """#/screen: dark, no bar, KPIs, the map, the 24-hour alert counts, the work-order
    funnel, devices online by link and the newest open alerts, on one 1920×1080 screen."""
    tab = await open_tab(viewport=(1920, 1080))
    page = tab.page
    await sign_in(tab, platform, "/#/screen")
    screen = page.locator(".screen")
    await expect(screen).to_have_attribute("data-ready", "true")
    await expect(page.locator("header.bar")).to_be_hidden()
    assert await page.evaluate("document.documentElement.scrollHeight") <= 1080
    assert await page.evaluate("document.documentElement.scrollWidth") <= 1920

    count = await registry_count(platform)
    await expect(screen.locator(".map")).to_have_attribute("data-drawn", str(count))
    await expect(screen.locator("[data-kpi=online] .screen-kpi-value")).to_have_text(
        re.compile(r"\d+(\.\d)?%")
    )
    await expect(screen.locator(".screen-title")).to_have_text("驻马店市城市物联网运行监测")
    for panel in ("districts", "kinds", "funnel", "links"):
        await expect(screen.locator(f"[data-panel={panel}] canvas")).not_to_have_count(0)

    # The figures are the platform's: alerts started in 24 h, open ones, links of the fleet.
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86_400 + 60))
    day = (await platform.http.get("/alerts", params={"since": since, "limit": 1000})).json()
    shown = int(await screen.get_attribute("data-day-alerts") or -1)
    assert shown >= len(day["items"]), (shown, len(day["items"]))
    opened = 0
    for state in ("firing", "acknowledged"):
        opened += len((await platform.http.get("/alerts", params={"state": state})).json()["items"])
    await expect(screen).to_have_attribute("data-ticker", str(min(8, opened)))
    links = {d.link for d in platform.reporting}
    plot = screen.locator("[data-panel=links] .screen-plot")
    for link in links:
        await expect(plot).to_have_attribute("data-links", re.compile(rf"\b{link}\b"))
    text = await screen.inner_text()
    assert not re.search(r"\b(manhole|streetlight|hydrant|tilt_deg|battery_pct)\b", text), text
    await screenshot(page, "console-screen")
    tab.assert_clean()


# -- the device registry, vendors and alert history (issue 28, item 5) ---------------------

KIND_IDS = re.compile(
    r"^(manhole|streetlight|hydrant|drainage|gas|parking|tunnel|water|waterlogging)$"
)


async def catalogue_titles(platform: ConsolePlatform) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=platform.url) as http:
        body: dict[str, Any] = (await http.get("/console/catalogue.json")).json()
    return body


async def listed(platform: ConsolePlatform, **params: str) -> list[dict[str, Any]]:
    """Every device GET /devices lists with ``params``, decommissioned ones included."""
    items: list[dict[str, Any]] = []
    for extra in ({}, {"status": "decommissioned"}):
        body = (
            await platform.http.get("/devices", params={**params, **extra, "limit": 1000})
        ).json()
        assert body["next_cursor"] is None
        items += body["items"]
    return items


async def forget_devices(platform: ConsolePlatform, prefix: str) -> None:
    """Take a test's own devices (and their alerts) out of the registry again: the other
    tests of the module count the fleet's devices."""
    async with platform.sessions() as session, session.begin():
        await session.execute(delete(Alert).where(Alert.device_id.startswith(prefix)))
        await session.execute(delete(Device).where(Device.id.startswith(prefix)))


def device_csv(platform: ConsolePlatform, rows: list[dict[str, str]]) -> str:
    """A device CSV with the fleet's columns: each row a fleet manhole's, changed by ``rows``."""
    fleet = list(csv.DictReader(io.StringIO(platform.fleet.csv_text())))
    manhole = next(r for r in fleet if r["kind"] == "manhole")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fleet[0]), lineterminator="\n")
    writer.writeheader()
    for changes in rows:
        writer.writerow({**manhole, **changes})
    return out.getvalue()


async def test_the_registry_searches_filters_and_imports_a_csv_row_by_row(
    platform: ConsolePlatform, open_tab: Any, tmp_path: Path
) -> None:
    """#/devices: the devices GET /devices lists, narrowed by a search and a kind filter (by
    its title); a CSV of 2 good and 2 bad rows imports the good ones and lists the refused
    ones with their lines and the API's own reasons; an address is shown as text."""
    prefix = f"reg-console-{uuid.uuid4().hex[:6]}"
    xss = "<img src=x onerror=alert(1)>"
    manhole_kind = (await catalogue_titles(platform))["kinds"]["manhole"]
    titles = manhole_kind["title"]
    tab = await open_tab()
    page = tab.page
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    try:
        await sign_in(tab, platform, "/#/devices")
        table = page.locator(".registry-table")
        await expect(table).to_have_attribute("data-loaded", "true")
        await expect(table).to_have_attribute("data-count", str(await registry_count(platform)))
        await expect(page.locator("[data-nav=devices]")).to_have_attribute("aria-current", "page")

        # The kind filter, by its title: the rows GET /devices?kind=manhole lists.
        manholes = await listed(platform, kind="manhole")
        await page.locator("select[data-filter=kind]").select_option(label=titles["zh"])
        await expect(table).to_have_attribute("data-count", str(len(manholes)))
        kinds = await table.locator("td[data-col=kind]").all_inner_texts()
        assert kinds == [titles["zh"]] * len(manholes)
        ids = await table.locator("tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.deviceId)"
        )
        assert ids == sorted(d["id"] for d in manholes)
        options = await page.locator("select[data-filter=kind] option").all_inner_texts()
        assert not [o for o in options if KIND_IDS.match(o)], options
        await page.locator("select[data-filter=kind]").select_option("")

        # The template of a kind: the columns every device has, the kind's, install_date.
        await page.locator("#template-kind").select_option(label=titles["zh"])
        href = await page.locator("a.template").get_attribute("href") or ""
        assert href.startswith("data:text/csv;charset=utf-8,")
        header = unquote(href.split(",", 1)[1]).lstrip("\ufeff").strip().split(",")
        assert header == [
            *REQUIRED_COLUMNS,
            *(a["name"] for a in manhole_kind["attributes"]),
            "install_date",
        ]
        assert await page.locator("a.template").get_attribute("download") == "devices-manhole.csv"

        # The import: 2 good rows (one with markup for an address), 2 bad ones.
        text = device_csv(
            platform,
            [
                {"device_id": f"{prefix}-1", "address": xss},
                {"device_id": f"{prefix}-2", "address": "驿城区台账测试路 2 号"},
                {"device_id": f"{prefix}-3", "district": "atlantis"},
                {"device_id": f"{prefix}-4", "lat": "north"},
            ],
        )
        upload = tmp_path / "devices.csv"
        upload.write_text(text, encoding="utf-8")
        await page.locator("#import-file").set_input_files(str(upload))
        await page.locator(".import-form button[type=submit]").click()
        result = page.locator(".import-result")
        await expect(result).to_have_attribute("data-state", "done")
        # The same file again through the API: the same refusals, the good rows unchanged.
        again = await platform.http.post(
            "/devices/import", content=text.encode(), headers={"Content-Type": "text/csv"}
        )
        report = again.json()
        assert (report["created"], report["unchanged"]) == (0, 2), report
        assert sorted((e["line"], e["column"]) for e in report["errors"]) == [
            (4, "district"),
            (5, "lat"),
        ], report
        mine = {d["id"] for d in await listed(platform) if d["id"].startswith(prefix)}
        assert mine == {f"{prefix}-1", f"{prefix}-2"}
        await expect(result).to_have_attribute("data-created", "2")
        await expect(result).to_have_attribute("data-refused", "2")
        await expect(result.locator(".import-counts")).to_contain_text("新增 2 台")
        refused = result.locator("[data-problems=errors] tbody tr")
        await expect(refused).to_have_count(2)
        for error in report["errors"]:
            row = result.locator(f'[data-problems=errors] tr[data-line="{error["line"]}"]')
            await expect(row.locator(".problem-line")).to_have_text(str(error["line"]))
            await expect(row.locator(".problem-column")).to_have_text(error["column"])
            # The reason in the API's own words.
            await expect(row.locator(".problem-reason")).to_have_text(error["message"])

        # The imported devices are in the registry at once; the search narrows to them.
        await page.locator("#registry-search").fill(prefix)
        await expect(table).to_have_attribute("data-count", "2")
        await page.locator("#registry-search").fill("台账测试路")
        await expect(table).to_have_attribute("data-count", "1")
        await page.locator("#registry-search").fill(prefix)
        address = table.locator(f'tr[data-device-id="{prefix}-1"] td[data-col=address]')
        await expect(address).to_have_text(xss)  # text, not markup
        assert await table.locator("img").count() == 0
        assert dialogs == []
        assert "null" not in await page.locator("main").inner_text()
        await screenshot(page, "console-registry")

        # Both languages; the district column opens the district's page.
        await page.locator("button.lang").click()
        await expect(table.locator("th").first).to_have_text("Device id")
        await expect(table.locator("td[data-col=kind]").first).to_have_text(
            titles["en"][:1].upper() + titles["en"][1:]
        )
        await expect(result.locator(".import-counts")).to_contain_text("2 created")
        await page.locator("button.lang").click()
        await expect(table.locator("th").first).to_have_text("设备编号")
        district = table.locator(f'tr[data-device-id="{prefix}-2"] td[data-col=district] a')
        title = await district.inner_text()
        await district.click()
        view = page.locator(".district-page")
        await expect(view.locator("h2").first).to_have_text(title)
        await expect(view.locator(".alert-history")).to_have_attribute("data-loaded", "true")
        tab.assert_clean()
    finally:
        await forget_devices(platform, prefix)


async def test_the_registry_offers_the_import_and_vendors_only_to_the_roles_allowed(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    """POST /devices/import: admin and operator; GET /vendors/{id}/credentials: admin and
    operator, and only an admin issues (api/routes/devices.py, vendors.py)."""
    for role, importer, vendors in (("operator", True, True), ("department", False, False)):
        tab = await open_tab()
        page = tab.page
        await sign_in(tab, platform, "/#/devices", username=await platform.person_of(role))
        await expect(page.locator("[data-nav=devices]")).to_have_text("设备台账")
        await expect(page.locator(".registry-table")).to_have_attribute("data-loaded", "true")
        await expect(page.locator("[data-panel=import]")).to_have_count(int(importer))
        await expect(page.locator("[data-nav=vendors]")).to_have_count(int(vendors))
        if vendors:
            await page.locator("[data-nav=vendors]").click()
            await expect(page.locator(".vendors-page")).to_have_attribute("data-loaded", "true")
            await expect(page.locator(".vendor").first).to_be_visible()
            await expect(page.locator(".vendors-page .hint").first).to_have_text(
                "签发与吊销需管理员权限。"
            )
            await expect(page.locator("button.issue")).to_have_count(0)  # only an admin issues
        tab.assert_clean()


async def test_the_vendors_room_lists_the_fleets_vendors_and_shows_a_secret_once(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    """#/vendors: every vendor with its codec and devices; an MQTT password and an intake
    token issued from the page are shown once, and kept in no storage."""
    vendor_id = f"console-{uuid.uuid4().hex[:6]}"
    created = await platform.http.post(
        "/vendors", json={"id": vendor_id, "name": "台账测试厂商", "codec": "json"}
    )
    assert created.status_code == 201, created.text
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform, "/#/vendors")
    room = page.locator(".vendors-page")
    await expect(room).to_have_attribute("data-loaded", "true")
    await expect(page.locator("[data-nav=vendors]")).to_have_text("厂商")
    for vendor in platform.fleet.vendors:
        card = room.locator(f'.vendor[data-vendor-id="{vendor.id}"]')
        await expect(card.locator(".vendor-name")).to_have_text(vendor.name)
        await expect(card.locator("[data-fact=codec] code")).to_have_text(vendor.codec)
        count = len(await listed(platform, vendor=vendor.id))
        await expect(card.locator("[data-fact=devices] dd")).to_have_text(
            re.compile(rf"^{count} 台")
        )
        await expect(card.locator("[data-fact=links] dd")).to_have_text("MQTT")
    text = await room.inner_text()
    assert not re.search(r"\b(manhole|streetlight|hydrant|tilt_deg|battery_pct)\b", text)

    card = room.locator(f'.vendor[data-vendor-id="{vendor_id}"]')
    await expect(card.locator("[data-section=accounts] .empty")).to_be_visible()
    async with page.expect_response(lambda r: r.url.endswith("/credentials")) as answered:
        await card.locator("button[data-issue=mqtt]").click()
    issued = await (await answered.value).json()
    password = issued["password"]
    secret = card.locator("[data-secret=mqtt]")
    await expect(secret.locator(".secret-value")).to_have_text(password)
    await expect(secret.locator(".secret-username")).to_have_text(vendor_id)
    await expect(secret.locator(".secret-warning")).to_contain_text("只显示这一次")
    await secret.scroll_into_view_if_needed()
    await screenshot(page, "console-vendors")
    await expect(card.locator(f'tr[data-username="{vendor_id}"]')).to_have_attribute(
        "data-active", "true"
    )
    await page.locator("button.lang").click()  # still there in the other language
    await expect(secret.locator(".secret-warning")).to_contain_text("shown this once")
    await expect(secret.locator(".secret-value")).to_have_text(password)
    await page.locator("button.lang").click()
    stored = await page.evaluate(
        "[...Object.keys(localStorage).map(k => localStorage.getItem(k)),"
        " ...Object.keys(sessionStorage).map(k => sessionStorage.getItem(k))]"
    )
    assert not [v for v in stored if password in (v or "")], stored
    await secret.locator("button.done").click()
    await expect(card.locator("[data-secret]")).to_have_count(0)
    assert password not in await page.content()

    # The intake token: shown once likewise; issuing again replaces it.
    for replaced in (False, True):
        async with page.expect_response(lambda r: r.url.endswith("/intake-token")) as answered:
            await card.locator("button[data-issue=intake]").click()
        body = await (await answered.value).json()
        assert body["replaced"] is replaced
        shown = card.locator("[data-secret=intake]")
        await expect(shown.locator(".secret-value")).to_have_text(body["token"])
        await shown.locator("button.done").click()
        await expect(shown).to_have_count(0)
        assert body["token"] not in await page.content()

    # Revoking asks once more, then the API and the page agree.
    row = card.locator(f'tr[data-username="{vendor_id}"]')
    await row.locator("button.revoke").click()
    await expect(row.locator("button.revoke")).to_have_text("确认吊销")
    await row.locator("button.revoke").click()
    await expect(row).to_have_attribute("data-active", "false")
    accounts = (await platform.http.get(f"/vendors/{vendor_id}/credentials")).json()["items"]
    assert [(a["username"], a["active"]) for a in accounts] == [(vendor_id, False)]

    # Come back to the room: the secrets are gone for good.
    await page.goto(f"{platform.url}/#/")
    await page.goto(f"{platform.url}/#/vendors")
    await expect(room).to_have_attribute("data-loaded", "true")
    assert password not in await page.content()
    tab.assert_clean()


async def test_a_device_and_its_district_show_their_alerts_of_30_days(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    """The device page's alert history and the district page list the alerts GET /alerts
    lists for them since 30 days ago, in every state; a quiet device says it had none.

    The alerts are written to the alert store as the rules engine leaves a resolved one
    (raising a live alert would change the open alerts other tests count): one 10 days old,
    shown, and one 40 days old, not."""
    prefix = f"hist-console-{uuid.uuid4().hex[:6]}"
    manhole = platform.alerting_manhole()
    try:
        for n in (1, 2):
            # Reporting daily: neither goes offline (a live alert) while the test runs.
            await platform.register_manhole(f"{prefix}-{n}", report_interval_s=86_400)
        noisy, quiet = f"{prefix}-1", f"{prefix}-2"
        now = utcnow()
        alerts: dict[int, str] = {}
        async with platform.sessions() as session, session.begin():
            for days in (10, 40):
                alert = Alert(
                    id=uuid.uuid4().hex,
                    rule="console-history",
                    device_id=noisy,
                    kind="manhole",
                    district=manhole.district,
                    vendor=manhole.vendor,
                    severity="major",
                    state="resolved",
                    started_at=now - dt.timedelta(days=days),
                    fired_at=now - dt.timedelta(days=days),
                    resolved_at=now - dt.timedelta(days=days, hours=-1),
                    values={"cover_open": True},
                    summary="井盖打开（历史） / Manhole cover open (history)",
                )
                session.add(alert)
                alerts[days] = alert.id
        since = (now - dt.timedelta(days=30)).isoformat()
        listed_alerts = (
            await platform.http.get("/alerts", params={"device_id": noisy, "since": since})
        ).json()["items"]
        assert [a["id"] for a in listed_alerts] == [alerts[10]]

        tab = await open_tab()
        page = tab.page
        await sign_in(tab, platform, f"/#/device/{noisy}")
        history = page.locator("[data-panel=history] .alert-history")
        await expect(history).to_have_attribute("data-loaded", "true")
        await expect(page.locator("[data-panel=history] h2")).to_have_text("告警历史")
        await expect(history).to_have_attribute("data-count", "1")
        row = history.locator(f'[data-history-id="{alerts[10]}"]')
        await expect(row).to_have_attribute("data-state", "resolved")
        await expect(row.locator(".alert-summary")).to_have_text("井盖打开（历史）")
        await expect(history.locator(f'[data-history-id="{alerts[40]}"]')).to_have_count(0)
        await row.scroll_into_view_if_needed()
        assert "null" not in await page.locator("main").inner_text()
        await screenshot(page, "console-alert-history")

        # The district fact opens the district, whose history has the alert too.
        await page.locator(".device-page [data-fact=district] a").click()
        await expect(page).to_have_url(f"{platform.url}/#/district/{manhole.district}")
        district = page.locator(".district-page [data-panel=history] .alert-history")
        await expect(district).to_have_attribute("data-loaded", "true")
        await expect(district.locator(f'[data-history-id="{alerts[10]}"]')).to_be_visible()
        await expect(district.locator(f'[data-history-id="{alerts[40]}"]')).to_have_count(0)
        in_district = (
            await platform.http.get(
                "/alerts", params={"district": manhole.district, "since": since, "limit": 200}
            )
        ).json()["items"]
        await expect(district).to_have_attribute("data-count", str(len(in_district)))

        # A quiet device: none in 30 days, in both languages.
        await page.goto(f"{platform.url}/#/device/{quiet}")
        history = page.locator("[data-panel=history] .alert-history")
        await expect(history).to_have_attribute("data-loaded", "true")
        await expect(history.locator(".empty")).to_have_text("近 30 天没有告警。")
        await page.locator("button.lang").click()
        await expect(page.locator("[data-panel=history] h2")).to_have_text("Alert history")
        await expect(history.locator(".empty")).to_have_text("No alerts in 30 days.")
        await page.locator("button.lang").click()
        tab.assert_clean()
    finally:
        await forget_devices(platform, prefix)


STORED = (
    "[...Object.keys(localStorage).map(k => localStorage.getItem(k)),"
    " ...Object.keys(sessionStorage).map(k => sessionStorage.getItem(k))]"
)


async def signs_in(platform: ConsolePlatform, username: str, password: str) -> bool:
    """Whether POST /session takes the password (a client of its own: no cookie is kept)."""
    async with httpx.AsyncClient(base_url=f"{platform.url}/api/v1") as person:
        answer = await person.post("/session", json={"username": username, "password": password})
    return answer.status_code == 200


async def test_people_are_added_disabled_and_given_a_password_in_the_console(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    """#/people: a person added in the console is the API's, with the role and grant; a
    short password's 422 shows under the form; a made password is shown once; disabling
    and enabling reach the API."""
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform, "/#/people")
    room = page.locator(".people-page")
    await expect(room).to_have_attribute("data-loaded", "true")
    await expect(page.locator("[data-nav=people]")).to_have_text("人员与密钥")
    form = room.locator("form.person-form")
    error = form.locator(".form-error")

    # Typed twice, too short: the API's detail, as it comes.
    typed = f"typed.{uuid.uuid4().hex[:6]}"
    await page.locator("#person-username").fill(typed)
    await page.locator("#person-role").select_option("department")
    await page.locator("#person-kinds").fill("manhole, hydrant")
    await page.locator("#person-made").uncheck()
    await page.locator("#person-password").fill("short")
    await page.locator("#person-password2").fill("shorter")
    await form.locator("button.create").click()
    await expect(error).to_have_text("两次输入的密码不一致，请重新输入。")
    await page.locator("#person-password2").fill("short")
    await form.locator("button.create").click()
    await expect(error).to_contain_text("422")
    await expect(error).to_contain_text("12")
    await page.locator("#person-password").fill(platform.password)
    await page.locator("#person-password2").fill(platform.password)
    await form.locator("button.create").click()
    await expect(error).to_be_hidden()
    await expect(room.locator(f'tr[data-username="{typed}"]')).to_have_attribute(
        "data-role", "department"
    )
    await expect(room.locator("[data-secret]")).to_have_count(0)  # typed: nothing to show
    account = (await platform.http.get(f"/users/{typed}")).json()
    assert (account["role"], sorted(account["kinds"])) == ("department", ["hydrant", "manhole"])

    # Made by the platform: shown once, in no storage, and it signs in.
    made = f"made.{uuid.uuid4().hex[:6]}"
    await page.locator("#person-username").fill(made)
    await page.locator("#person-display").fill("李娜")
    await page.locator("#person-role").select_option("operator")
    async with page.expect_response(lambda r: r.url.endswith("/api/v1/users")) as answered:
        await form.locator("button.create").click()
    password = (await (await answered.value).json())["password"]
    secret = room.locator("[data-secret=password]")
    await expect(secret.locator(".secret-value")).to_have_text(password)
    await expect(secret.locator(".secret-warning")).to_contain_text("只显示这一次")
    assert not [v for v in await page.evaluate(STORED) if password in (v or "")]
    await screenshot(page, "console-people")
    account = (await platform.http.get(f"/users/{made}")).json()
    assert (account["role"], account["display_name"]) == ("operator", "李娜")
    assert await signs_in(platform, made, password)
    await secret.locator("button.done").click()
    assert password not in await page.content()

    # Disabled, then enabled again: the API agrees each time.
    row = room.locator(f'tr[data-username="{made}"]')
    await row.locator("button[data-action=disable]").click()
    await expect(row).to_have_attribute("data-state", "disabled")
    assert (await platform.http.get(f"/users/{made}")).json()["disabled"] is True
    await page.locator("button.lang").click()
    await expect(page.locator("[data-nav=people]")).to_have_text("People & keys")
    await expect(row.locator(".chip")).to_have_text("Disabled")
    await row.locator("button[data-action=enable]").click()
    await expect(row).to_have_attribute("data-state", "active")
    assert (await platform.http.get(f"/users/{made}")).json()["disabled"] is False

    # A new password, typed twice: the old one no longer signs in.
    await row.locator("button[data-action=password]").click()
    await page.locator("#pw-new").fill("a new console passphrase")
    await page.locator("#pw-new2").fill("a new console passphrase")
    await room.locator("form.password-form button.save-password").click()
    await expect(room.locator("form.password-form")).to_have_count(0)
    assert await signs_in(platform, made, "a new console passphrase")
    assert not await signs_in(platform, made, password)
    await page.locator("button.lang").click()
    tab.assert_clean(refused=("422 (Unprocessable Entity)",))


async def test_an_api_key_is_shown_once_works_and_is_revoked_in_the_console(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    """#/people: a key made in the console is shown once, kept in no storage, works against
    the API until revoked there (the second press revokes), then 401."""
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform, "/#/people")
    room = page.locator(".people-page")
    await expect(room).to_have_attribute("data-loaded", "true")
    name = f"console key {uuid.uuid4().hex[:8]}"
    form = room.locator("form.key-form")
    await page.locator("#key-name").fill(name)
    await page.locator("#key-role").select_option("operator")
    await page.locator("#key-expiry").select_option("until")
    await page.locator("#key-until").fill((dt.date.today() + dt.timedelta(days=30)).isoformat())
    async with page.expect_response(lambda r: r.url.endswith("/api/v1/keys")) as answered:
        await form.locator("button.create").click()
    made = await (await answered.value).json()
    key = made["key"]
    assert made["expires_at"] and made["role"] == "operator" and made["name"] == name
    secret = room.locator("[data-secret=key]")
    await expect(secret.locator(".secret-value")).to_have_text(key)
    await expect(secret.locator(".secret-warning")).to_contain_text("只显示这一次")
    await page.locator("button.lang").click()
    await expect(secret.locator(".secret-warning")).to_contain_text("shown this once")
    await expect(secret.locator(".secret-value")).to_have_text(key)
    assert not [v for v in await page.evaluate(STORED) if key in (v or "")]
    row = room.locator(f'tr[data-key-id="{made["id"]}"]')
    await expect(row).to_have_attribute("data-state", "active")
    await expect(row.locator(".chip")).to_have_text("Active")

    async with httpx.AsyncClient(base_url=f"{platform.url}/api/v1") as machine:
        bearer = {"Authorization": f"Bearer {key}"}
        assert (await machine.get("/devices", headers=bearer)).status_code == 200
        await secret.locator("button.done").click()
        assert key not in await page.content()
        await row.locator("button.revoke").click()
        await expect(row.locator("button.revoke")).to_have_text("Confirm revoking")
        assert (await machine.get("/devices", headers=bearer)).status_code == 200
        await row.locator("button.revoke").click()
        await expect(row).to_have_attribute("data-state", "revoked")
        await expect(row.locator(".chip")).to_have_text("Revoked")
        assert (await machine.get("/devices", headers=bearer)).status_code == 401
    await page.locator("button.lang").click()
    await expect(row.locator(".chip")).to_have_text("已吊销")
    # Come back to the room: the key is gone for good.
    await page.goto(f"{platform.url}/#/")
    await page.goto(f"{platform.url}/#/people")
    await expect(room).to_have_attribute("data-loaded", "true")
    assert key not in await page.content()
    tab.assert_clean()


async def test_people_and_keys_are_only_for_an_administrator(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    """GET /users and /keys take an administrator: an operator sees no link and no room."""
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform, "/#/people", username=await platform.person_of("operator"))
    await expect(page.locator("[data-nav=overview]")).to_have_attribute("aria-current", "page")
    await expect(page.locator("[data-nav=people]")).to_have_count(0)
    await expect(page.locator(".people-page")).to_have_count(0)
    await page.locator("button.lang").click()
    await expect(page.locator("[data-nav=overview]")).to_have_text("Overview")
    await expect(page.locator("[data-nav=people]")).to_have_count(0)
    await page.locator("button.lang").click()
    tab.assert_clean()
