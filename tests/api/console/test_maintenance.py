"""Maintenance windows in the silences room (#/silences), driven by headless Chromium: made
through the form (a refused one shows the API's reason), listed with readable days, hours and
matchers, in both languages, and ended."""

from __future__ import annotations

import uuid
from typing import Any

from playwright.async_api import expect

from cityiot.domain.catalogue import DISTRICTS
from tests.api.console.conftest import ConsolePlatform, screenshot
from tests.api.console.test_console import sign_in


async def test_a_window_is_made_in_the_form_listed_and_ended(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform, "/#/silences")
    room = page.locator(".silences-page")
    await expect(room).to_have_attribute("data-loaded", "true")
    section = room.locator("[data-list=windows]")
    await expect(section.locator("h3")).to_contain_text("维护时段")
    form = section.locator("form.window-form")

    # No day ticked: the API's 422 names the field, shown in the form.
    for day in ("mon", "tue", "wed", "thu", "fri"):
        await form.locator(f"#mw-day-{day}").uncheck()
    # Matching no real alert (a device id no one has), so no other test's alert is muted.
    device = f"nosuch-{uuid.uuid4().hex[:8]}"
    name = f"weekend night works {uuid.uuid4().hex[:6]}"
    await form.locator("#mw-name").fill(name)
    await form.locator("#mw-start").fill("22:00")
    await form.locator("#mw-end").fill("06:00")
    await form.locator("#mw-label-0").select_option("device_id")
    await form.locator("#mw-value-0").fill(device)
    await form.locator("button.create-window").click()
    error = form.locator(".window-error")
    await expect(error).to_contain_text("422")
    await expect(error).to_contain_text("weekdays")
    assert name not in {w["name"] for w in await platform.listed("/maintenance-windows", True)}

    await form.locator("#mw-day-sat").check()
    await form.locator("#mw-day-sun").check()
    await form.locator("button.add-window-matcher").click()
    await form.locator("#mw-label-1").select_option("district")
    await form.locator("#mw-value-1").fill("yicheng")
    await form.locator("#mw-comment").fill("console window")
    await form.locator("button.create-window").click()
    await expect(error).to_be_hidden()

    item = section.locator("ol.windows:not(.windows-ended) .window", has_text=name)
    await expect(item).to_have_attribute("data-source", "api")
    await expect(item.locator(".window-source")).to_have_text("本平台创建")
    await expect(item.locator(".matcher-chip")).to_have_text(
        [f"设备编号 = {device}", f"区县 = {DISTRICTS['yicheng'].name_zh}"]
    )
    await expect(item.locator(".window-hours")).to_have_text("周六、周日 22:00 至次日 06:00")
    await expect(item.locator(".window-origin")).to_contain_text(platform.username)
    (made,) = [w for w in await platform.listed("/maintenance-windows", False) if w["name"] == name]
    assert made["source"] == "api" and made["active"]
    assert (made["weekdays"], made["start"], made["end"]) == (["sat", "sun"], "22:00", "06:00")
    assert made["matchers"] == [
        {"label": "device_id", "op": "=", "value": device},
        {"label": "district", "op": "=", "value": "yicheng"},
    ]
    assert made["created_by"].startswith(f"user:{platform.username}")
    await expect(item).to_have_attribute("data-window-id", made["id"])
    assert made["id"] not in await section.inner_text()  # ids are not shown
    # The form is cleared for the next one.
    await expect(form.locator("#mw-name")).to_have_value("")
    await section.scroll_into_view_if_needed()
    await screenshot(page, "console-maintenance")

    # In English.
    await page.locator("button.lang").click()
    await expect(section.locator("h3")).to_contain_text("Maintenance windows")
    await expect(item.locator(".window-hours")).to_have_text(
        "Sat, Sun, 22:00 to 06:00 the next day"
    )
    await expect(item.locator(".matcher-chip").nth(1)).to_have_text(
        f"District = {DISTRICTS['yicheng'].name_en}"
    )
    await expect(item.locator("button.end-window")).to_have_text("End window")

    # Ended: listed among the ended, no longer in force for the API either.
    await item.locator("button.end-window").click()
    ended = section.locator(f'.windows-ended [data-window-id="{made["id"]}"]')
    await expect(ended).to_have_attribute("data-state", "ended")
    await expect(ended.locator(".chip").first).to_have_text("Ended")
    await expect(ended.locator("button.end-window")).to_have_count(0)
    await expect(
        section.locator(f'ol.windows:not(.windows-ended) [data-window-id="{made["id"]}"]')
    ).to_have_count(0)
    assert made["id"] not in {w["id"] for w in await platform.listed("/maintenance-windows", False)}
    (gone,) = [
        w for w in await platform.listed("/maintenance-windows", True) if w["id"] == made["id"]
    ]
    assert not gone["active"] and gone["ended_at"]
    await page.locator("button.lang").click()
    await expect(ended.locator(".chip").first).to_have_text("已结束")
    # The browser logs the refused request (the 422): expected.
    tab.assert_clean(refused=("422 (Unprocessable Entity)",))


async def test_the_routing_files_windows_are_shown_read_only(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    """A window of the routing file, as GET /maintenance-windows lists it, is drawn by the
    room with its source and where to change it, and no button to end it."""
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform, "/#/silences")
    await expect(page.locator(".silences-page")).to_have_attribute("data-loaded", "true")
    shown = await page.evaluate(
        """async () => {
        const {SilencesView} = await import('/console/silences.js');
        const {I18n} = await import('/console/i18n.js');
        const i18n = new I18n({getItem: () => null, setItem: () => {}}, {});
        const view = Object.create(SilencesView.prototype);
        view.app = {i18n};
        view.windowEnding = new Set();
        const li = view.windowItem({
            id: null, name: "kaifaqu-night-works", source: "file",
            matchers: [{label: "severity", op: "!=", value: "critical"}],
            weekdays: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            start: "01:00", end: "05:00", comment: "", created_by: "", created_at: null,
            ended_at: null, active: true, open: true,
        });
        return {
            text: li.innerText || li.textContent,
            state: li.dataset.state,
            source: li.dataset.source,
            buttons: li.querySelectorAll("button").length,
        };
    }"""
    )
    assert shown["state"] == "open" and shown["source"] == "file"
    assert shown["buttons"] == 0
    for part in ("维护中", "路由文件", "每天 01:00–05:00", "级别 != 紧急", "rules/routing.yaml"):
        assert part in shown["text"], (part, shown["text"])
    tab.assert_clean()
