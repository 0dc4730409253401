"""The parking room (#/parking), driven by headless Chromium against a real platform: the
fleet's parking sensors report through the broker, and the room shows the free, occupied and
unknown spaces GET /parking/availability counts, per district and per lot, in both languages,
filtered by district, refreshed while open and no longer once left; a role the API refuses
has no way in, and a key that sees no parking sensor is told so."""

from __future__ import annotations

import time
from typing import Any

from playwright.async_api import expect

from cityiot.api.keys import create_key
from cityiot.domain.catalogue import DISTRICTS
from tests.api.console.conftest import OFFLINE, ConsolePlatform, screenshot
from tests.api.console.test_console import sign_in
from tests.waiting import until

COUNTS = ("total", "free", "occupied", "unknown")
AVAILABILITY = "**/api/v1/parking/availability*"


async def availability(platform: ConsolePlatform, **params: str) -> dict[str, Any]:
    answer = await platform.http.get("/parking/availability", params=params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def report_spaces(platform: ConsolePlatform) -> dict[str, Any]:
    """Every online parking sensor reports now: within each lot the first is free, the others
    occupied. Returns the API's count once it reflects these readings."""
    online = [d for d in platform.reporting[:-OFFLINE] if d.kind == "parking"]
    lots: dict[str, int] = {}
    now_ms = int(time.time() * 1000)
    for device in online:
        lot = str(device.attribute("lot_id"))
        occupied = lots.get(lot, 0) > 0
        lots[lot] = lots.get(lot, 0) + 1
        platform.publish(
            device, {"occupied": occupied, "battery_pct": 88.0, "rssi_dbm": -85.0}, now_ms
        )
    free = len(lots)
    taken = len(online) - free
    assert free and taken, "the fleet has a lot with two online parking sensors"

    # Lot by lot: the totals alone can match while the fleet's earlier readings still count in
    # some lots and these in others.
    want = {lot: (1, sensors - 1) for lot, sensors in lots.items()}

    async def counted() -> dict[str, Any] | None:
        body = await availability(platform)
        overall = body["overall"]
        got = {
            str(x["lot_id"]): (x["free"], x["occupied"])
            for x in body["lots"]
            if str(x["lot_id"]) in want
        }
        ready = (overall["free"], overall["occupied"]) == (free, taken) and got == want
        return body if ready else None

    return await until(
        counted, 20, f"the API counts {free} free and {taken} occupied spaces, lot by lot"
    )


def counts_of(spaces: dict[str, Any]) -> dict[str, str]:
    return {c: str(spaces[c]) for c in COUNTS}


async def shown_counts(row: Any) -> dict[str, str | None]:
    return {c: await row.get_attribute(f"data-{c}") for c in COUNTS}


async def test_the_room_shows_the_spaces_the_api_counts_per_district_and_lot(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    expected = await report_spaces(platform)
    assert expected["overall"]["unknown"] >= 1  # the offline sensor of the fleet
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform, "/#/parking")
    room = page.locator(".parking-page")
    await expect(room).to_have_attribute("data-loaded", "true")
    await expect(page.locator("[data-nav=parking]")).to_have_text("停车")
    await expect(page.locator("[data-nav=parking]")).to_have_attribute("aria-current", "page")
    await expect(room.locator("h2")).to_have_text("停车位空闲情况")

    overall = expected["overall"]
    summary = room.locator(".parking-summary")
    assert await shown_counts(summary) == counts_of(overall)
    await expect(summary.locator(".parking-counts")).to_have_text(
        f"共 {overall['total']} 个车位：空闲 {overall['free']}，占用 {overall['occupied']}，"
        f"未知 {overall['unknown']}"
    )
    share = round(overall["free"] / overall["total"] * 100, 1)
    await expect(summary.locator(".parking-share-value")).to_have_text(f"{share:g}%")
    assert (await summary.locator("time").get_attribute("datetime") or "").endswith("+08:00")

    # Each district by its title, with the API's counts.
    rows = room.locator("table.parking-districts tbody tr")
    await expect(rows).to_have_count(len(expected["districts"]))
    for district in expected["districts"]:
        row = room.locator(f"table.parking-districts tr[data-district={district['district']}]")
        assert await shown_counts(row) == counts_of(district)
        share = round(district["free"] / district["total"] * 100, 1)
        cells = [DISTRICTS[district["district"]].name_zh, str(district["lots"])]
        cells += [str(district[c]) for c in COUNTS] + [f"{share:g}%"]
        await expect(row.locator("td")).to_have_text(cells)
    # Each lot: a lot with one free and one occupied space is half free.
    lots = room.locator("table.parking-lots tbody tr")
    await expect(lots).to_have_count(len(expected["lots"]))
    for lot in expected["lots"]:
        row = room.locator(f"table.parking-lots tr[data-lot='{lot['lot_id']}']")
        assert await shown_counts(row) == counts_of(lot)
    (shared,) = [x for x in expected["lots"] if x["free"] and x["occupied"]]
    row = room.locator(f"table.parking-lots tr[data-lot='{shared['lot_id']}']")
    await expect(row.locator(".parking-share-cell")).to_have_text("50%")
    await expect(row.locator("td").nth(1)).to_have_text(DISTRICTS[shared["district"]].name_zh)
    await screenshot(page, "console-parking")

    # One district: the API's filter, and only that district's lots.
    district = shared["district"]
    only = await availability(platform, district=district)
    async with page.expect_request(f"**/parking/availability?district={district}"):
        await room.locator("#parking-district").select_option(district)
    await expect(lots).to_have_count(len(only["lots"]))
    await expect(rows).to_have_count(1)
    assert await shown_counts(room.locator(".parking-summary")) == counts_of(only["overall"])
    # A district without parking sensors: said so, no tables.
    bare = next(d for d in DISTRICTS if d not in {x["district"] for x in expected["districts"]})
    await room.locator("#parking-district").select_option(bare)
    await expect(room.locator(".parking-empty")).to_have_text("该区县没有停车位检测器。")
    await expect(room.locator("table")).to_have_count(0)

    # In English.
    await room.locator("#parking-district").select_option(district)
    await expect(rows).to_have_count(1)
    await page.locator("button.lang").click()
    await expect(page.locator("[data-nav=parking]")).to_have_text("Parking")
    await expect(room.locator("h2")).to_have_text("Parking spaces free")
    await expect(room.locator("table.parking-districts th")).to_have_text(
        ["District", "Lots", "Spaces", "Free", "Occupied", "Unknown", "Share free"]
    )
    await expect(rows.locator("td").first).to_have_text(DISTRICTS[district].name_en)
    await expect(room.locator("label[for=parking-district]")).to_have_text("District")
    tab.assert_clean()


async def test_the_room_asks_again_every_30_seconds_and_stops_when_left(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    tab = await open_tab()
    page = tab.page
    await page.clock.install()
    await sign_in(tab, platform, "/#/parking")
    room = page.locator(".parking-page")
    await expect(room).to_have_attribute("data-loaded", "true")
    async with page.expect_request(AVAILABILITY):
        await page.clock.run_for(30_000)

    await page.locator("[data-nav=workorders]").click()
    await expect(room).to_have_count(0)
    asked = sum("/parking/availability" in url for url in tab.requests)
    await page.clock.run_for(95_000)  # three periods: a timer left running would ask thrice
    # Back in the room: its own first question is the only one since it was left.
    async with page.expect_request(AVAILABILITY):
        await page.locator("[data-nav=parking]").click()
    await expect(room).to_have_attribute("data-loaded", "true")
    assert sum("/parking/availability" in url for url in tab.requests) == asked + 1
    tab.assert_clean()


async def test_a_role_the_api_refuses_sees_no_parking_and_an_empty_grant_is_told_so(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    """A vendor may not read parking (403): no link, no room. A department granted parking
    where the city has no parking sensor sees the room say so."""
    vendor = platform.reporting[0].vendor
    _, key = await create_key(platform.sessions, "vendor", name="parking probe", vendor=vendor)
    refused = await platform.http.get(
        "/parking/availability", headers={"Authorization": f"Bearer {key}"}
    )
    assert refused.status_code == 403, refused.text
    tab = await open_tab()
    page = tab.page
    username = await platform.person_of("vendor", vendor=vendor)
    await sign_in(tab, platform, "/#/parking", username=username)
    await expect(page.locator("#app")).to_have_attribute("data-role", "vendor")
    await expect(page.locator("[data-nav=parking]")).to_have_count(0)
    await expect(page.locator(".parking-page")).to_have_count(0)
    await expect(page.locator(".overview")).to_be_visible()
    assert not [u for u in tab.requests if "/parking/" in u]
    # The vendor's overview asks for the city's statistics: refused (403), as expected.
    tab.assert_clean(refused=("403 (Forbidden)",))

    spaces = await availability(platform)
    bare = next(d for d in DISTRICTS if d not in {x["district"] for x in spaces["districts"]})
    tab = await open_tab()
    page = tab.page
    username = await platform.person_of("department", kinds=["parking"], districts=[bare])
    await sign_in(tab, platform, "/#/parking", username=username)
    room = page.locator(".parking-page")
    await expect(room).to_have_attribute("data-loaded", "true")
    await expect(room.locator(".parking-empty")).to_have_text(
        "没有可查看的停车位检测器：本市尚未安装，或您的权限范围内没有。"
    )
    await expect(room.locator(".parking-summary, table")).to_have_count(0)
    tab.assert_clean()
