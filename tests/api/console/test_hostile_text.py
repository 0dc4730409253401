"""Text from the platform's data shown as text in every room, and the registry's device list
asked for once.

Hostile markup goes where anyone may write it: a device's address (the registry API), an
alert's summary (written to the alert store as the rules engine writes it, with its work
order, as no API takes a summary) and a dead letter's payload (a bad message over MQTT). Each
room that shows them is opened; none may turn them into elements, handlers or a run script.
The console's CSP would stop an injected handler from running, so the test looks for the
injected elements themselves, not only for their effect.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, urlsplit

from playwright.async_api import expect

from cityiot.storage.tables.alerts import Alert
from cityiot.storage.tables.workorders import WorkOrder
from cityiot.storage.utc import utcnow
from tests.api.console.conftest import ConsolePlatform, Tab
from tests.api.console.test_console import dead_letter, sign_in

HOSTILE = (
    "<img src=x onerror=window.__pwned=1>",
    "<script>window.__pwned=1</script>",
    '"><svg onload=window.__pwned=1>',
)

# What markup from data would have made: the image, the SVG, a script naming the flag, any
# element with an inline handler attribute (the console itself adds listeners, never those).
INJECTED = """() => ({
  pwned: typeof window.__pwned,
  images: document.querySelectorAll('img[src="x"]').length,
  svgs: document.querySelectorAll('svg[onload]').length,
  scripts: [...document.querySelectorAll('script')].filter((s) => s.textContent.includes('__pwned')).length,
  handlers: [...document.querySelectorAll('*')]
    .filter((e) => [...e.attributes].some((a) => a.name.toLowerCase().startsWith('on'))).length,
})"""
CLEAN = {"pwned": "undefined", "images": 0, "svgs": 0, "scripts": 0, "handlers": 0}


def hostile(marker: str, label: str) -> str:
    """Every hostile string after ``label`` and a marker the test finds the row by."""
    return f"{label} {marker} " + " ".join(HOSTILE)


async def assert_not_injected(tab: Tab, room: str) -> None:
    found = await tab.page.evaluate(INJECTED)
    assert found == CLEAN, f"{room}: markup from data became elements: {found}"


async def open_room(tab: Tab, platform: ConsolePlatform, hash_: str) -> None:
    await tab.page.goto(f"{platform.url}/{hash_}")


async def test_hostile_address_summary_and_payload_show_as_text_in_every_room(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    marker = uuid.uuid4().hex[:10]
    device_id = f"xss-{marker}"
    address = hostile(marker, "地址")
    summary_zh, summary_en = hostile(marker, "井盖打开"), hostile(marker, "Cover open")
    manhole = platform.alerting_manhole()

    # The address, through the registry API as any importer or operator writes it.
    created = await platform.register_manhole(device_id, address=address)
    assert created["address"] == address

    # The summary, on a firing alert and its work order, as the rules engine stores them.
    now = utcnow()
    alert_id, order_id = uuid.uuid4().hex, uuid.uuid4().hex
    async with platform.sessions() as session, session.begin():
        session.add(
            Alert(
                id=alert_id,
                rule="console-hostile-text",
                device_id=device_id,
                kind="manhole",
                district=manhole.district,
                vendor=manhole.vendor,
                severity="critical",
                state="firing",
                started_at=now,
                fired_at=now,
                values={"cover_open": True},
                summary=f"{summary_zh} / {summary_en}",
            )
        )
        await session.flush()
        session.add(
            WorkOrder(
                id=order_id,
                alert_id=alert_id,
                team="console-hostile-text",
                device_id=device_id,
                kind="manhole",
                district=manhole.district,
                severity="critical",
                title=f"{summary_zh} / {summary_en}",
                created_at=now,
                verify_due_at=now + dt.timedelta(hours=1),
                close_due_at=now + dt.timedelta(days=1),
            )
        )
    listed = (await platform.http.get("/alerts", params={"device_id": device_id})).json()
    assert [a["summary"] for a in listed["items"]] == [f"{summary_zh} / {summary_en}"]

    # The payload, a bad message over MQTT: its dead letter keeps it as it came.
    payload = hostile(marker, "payload")
    letter = await dead_letter(platform, manhole, payload)

    tab = await open_tab()
    page = tab.page
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))

    # The overview's alert list: both languages of the summary, as text.
    await sign_in(tab, platform, "/#/")
    row = page.locator(f'.alerts-panel li.alert[data-alert-id="{alert_id}"]')
    await expect(row.locator(".alert-summary")).to_have_text(summary_zh)
    await expect(row.locator(".alert-summary-other")).to_have_text(summary_en)
    await assert_not_injected(tab, "overview")

    # The device page: the address among its facts, the summary in its open alerts.
    await open_room(tab, platform, f"#/device/{device_id}")
    device = page.locator(f'.device-page[data-device-id="{device_id}"]')
    await expect(device).to_have_attribute("data-loaded", "true")
    await expect(device.locator(".facts dd", has_text=marker)).to_have_text(address)
    await expect(
        device.locator(f'li.alert[data-alert-id="{alert_id}"] .alert-summary')
    ).to_have_text(summary_zh)
    await expect(device.locator(f'[data-history-id="{alert_id}"]')).to_contain_text(summary_zh)
    await assert_not_injected(tab, "device page")

    # The district page's alert history.
    await open_room(tab, platform, f"#/district/{manhole.district}")
    await expect(page.locator(f'.district-page [data-history-id="{alert_id}"]')).to_contain_text(
        summary_zh
    )
    await assert_not_injected(tab, "district page")

    # The work-order board: the title (the summary) and where to go (the address).
    await open_room(tab, platform, "#/workorders")
    card = page.locator(f'.card[data-workorder-id="{order_id}"]')
    await expect(card.locator(".card-title")).to_have_text(summary_zh)
    await expect(card.locator(".card-title-other")).to_have_text(summary_en)
    await expect(card.locator(".card-address")).to_contain_text(address)
    await assert_not_injected(tab, "work-order board")

    # The big screen's ticker of the newest open alerts.
    await open_room(tab, platform, "#/screen")
    await expect(
        page.locator(f'.screen li.screen-alert[data-alert-id="{alert_id}"] .screen-alert-text')
    ).to_have_text(summary_zh)
    await assert_not_injected(tab, "big screen")

    # The dead letters room, narrowed to the device.
    await open_room(tab, platform, "#/deadletters")
    room = page.locator(".deadletters-page")
    await expect(room).to_have_attribute("data-loaded", "true")
    await page.locator("#dl-device").fill(manhole.device_id)
    await page.locator(".room-filters button.apply").click()
    await expect(room.locator(f'[data-deadletter-id="{letter["id"]}"] pre.payload')).to_have_text(
        payload
    )
    await assert_not_injected(tab, "dead letters")

    # The registry, searched by the address.
    await open_room(tab, platform, f"#/devices?q={marker}")
    table = page.locator(".registry-table")
    await expect(table).to_have_attribute("data-count", "1")
    await expect(table.locator(f'tr[data-device-id="{device_id}"] td.address')).to_have_text(
        address
    )
    await assert_not_injected(tab, "registry")

    assert dialogs == []
    tab.assert_clean()


async def test_the_registry_opened_at_sign_in_asks_for_the_device_list_once(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    """Signed in straight onto #/devices, the registry waits for the list the sign-in loads
    (GET /devices, and again for the decommissioned ones) rather than asking again."""
    total = 0
    for params in ({}, {"status": "decommissioned"}):
        body = (await platform.http.get("/devices", params={**params, "limit": 1000})).json()
        total += len(body["items"])
    tab = await open_tab()
    await sign_in(tab, platform, "/#/devices")
    table = tab.page.locator(".registry-table")
    await expect(table).to_have_attribute("data-loaded", "true")
    await expect(table).to_have_attribute("data-count", str(total))
    asked = Counter(
        parse_qs(urlsplit(url).query).get("status", ["(all)"])[0]
        for url in tab.requests
        if urlsplit(url).path == "/api/v1/devices"
    )
    assert asked == {"(all)": 1, "decommissioned": 1}, asked
    tab.assert_clean()
