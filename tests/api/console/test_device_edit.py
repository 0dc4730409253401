"""Changing the device registry from the console, driven by headless Chromium: a device's
fields edited on its page (only what changed is sent; a refused value shows the API's reason
and changes nothing), decommissioned after a second click and brought back into service, a
device registered in the registry room (a taken id shows the API's 409), no such control for
a viewer, and the labels in English.

Each test registers devices of its own (unique ids), so no other test's devices change.
"""

from __future__ import annotations

import uuid
from typing import Any

from playwright.async_api import expect

from cityiot.domain.catalogue import DISTRICTS, MODEL
from tests.api.console.conftest import ConsolePlatform, Tab, screenshot
from tests.api.console.test_console import sign_in

REFUSED = ("422 (Unprocessable Entity)", "409 (Conflict)")


def new_id() -> str:
    return f"mh-edit-{uuid.uuid4().hex[:8]}"


async def device(platform: ConsolePlatform, device_id: str) -> dict[str, Any]:
    answer = await platform.http.get(f"/devices/{device_id}")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


async def open_device(
    tab: Tab, platform: ConsolePlatform, device_id: str, username: str | None = None
) -> Any:
    await sign_in(tab, platform, f"/#/device/{device_id}", username=username)
    view = tab.page.locator(f'.device-page[data-device-id="{device_id}"]')
    await expect(view).to_have_attribute("data-loaded", "true")
    return view


async def opened_device(
    platform: ConsolePlatform, open_tab: Any, **fields: Any
) -> tuple[str, dict[str, Any], Tab, Any]:
    """A manhole of its own registered (``fields`` over the defaults) and its page opened by an
    administrator: its id, the API's answer, the tab and the page's view."""
    device_id = new_id()
    registered = await platform.register_manhole(device_id, **fields)
    tab = await open_tab()
    return device_id, registered, tab, await open_device(tab, platform, device_id)


async def open_registry(tab: Tab, platform: ConsolePlatform, username: str | None = None) -> Any:
    await sign_in(tab, platform, "/#/devices", username=username)
    room = tab.page.locator(".registry-page")
    await expect(room.locator(".registry-table")).to_have_attribute("data-loaded", "true")
    return room


async def test_an_edit_sends_what_changed_and_the_page_shows_the_answer(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    device_id, before, tab, view = await opened_device(
        platform, open_tab, address="驿城区解放路 1 号"
    )
    district = next(d for d in DISTRICTS if d != before["district"])
    page = tab.page
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.post_data or "") if r.method == "PATCH" else None)

    await view.locator(".device-actions button.edit").click()
    form = view.locator("form.device-form")
    await expect(form.locator("#dev-address")).to_have_value("驿城区解放路 1 号")
    await expect(form.locator("#dev-report-interval-s")).to_have_value("60")
    await expect(form.locator("[data-attribute=depth_cm] label")).to_have_text("井深")
    await form.locator("#dev-address").fill("驿城区解放路 3 号")
    await form.locator("#dev-report-interval-s").fill("120")
    await form.locator("#dev-district").select_option(label=DISTRICTS[district].name_zh)
    await form.locator("button.save").click()

    await expect(form).to_be_hidden()
    facts = view.locator(".facts")
    await expect(facts).to_contain_text("驿城区解放路 3 号")
    await expect(facts.locator("[data-fact=district]")).to_contain_text(DISTRICTS[district].name_zh)
    after = await device(platform, device_id)
    assert (after["address"], after["report_interval_s"], after["district"]) == (
        "驿城区解放路 3 号",
        120,
        district,
    )
    assert (after["lat"], after["lon"], after["attributes"]) == (
        before["lat"],
        before["lon"],
        before["attributes"],
    )
    # Only the changed fields went: the rest were not sent again.
    assert len(sent) == 1 and "lat" not in sent[0] and "depth_cm" not in sent[0], sent
    await view.locator(".device-actions button.edit").click()
    await expect(form.locator("#dev-report-interval-s")).to_have_value("120")
    await screenshot(page, "console-device-edit")
    tab.assert_clean()


async def test_a_refused_value_shows_the_apis_reason_and_changes_nothing(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    device_id, before, tab, view = await opened_device(platform, open_tab)

    await view.locator(".device-actions button.edit").click()
    form = view.locator("form.device-form")
    await form.locator("#dev-lat").fill("95")
    await form.locator("#dev-address").fill("不该保存的地址")
    await form.locator("button.save").click()
    error = form.locator(".form-error")
    await expect(error).to_contain_text("422")
    await expect(error).to_contain_text("lat")
    await expect(error).to_contain_text("-90..90")
    await expect(form.locator("#dev-lat")).to_have_value("95")  # the form stays as typed
    after = await device(platform, device_id)
    assert (after["lat"], after["address"], after["updated_at"]) == (
        before["lat"],
        before["address"],
        before["updated_at"],
    )

    await form.locator("button.cancel").click()
    await expect(form).to_be_hidden()
    await expect(view.locator(".facts")).not_to_contain_text("不该保存的地址")
    tab.assert_clean(refused=REFUSED)


async def test_decommission_asks_twice_and_the_device_is_brought_back(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    device_id, _, tab, view = await opened_device(platform, open_tab)
    page = tab.page
    head = view.locator(".device-head")
    decommission = head.locator("button.decommission")

    await decommission.click()
    await expect(decommission).to_have_text("确认停用")
    await expect(decommission).to_have_class("decommission confirming")
    assert (await device(platform, device_id))["decommissioned_at"] is None  # one click: asked

    await decommission.click()
    await expect(head.locator("h2 .chip")).to_have_text("已停用")
    await expect(head.locator(".decommissioned-note")).to_be_visible()
    await expect(head.locator("[data-fact=decommissioned_at] dd")).not_to_have_text("—")
    recommission = head.locator("button.recommission")
    await expect(recommission).to_have_text("恢复使用")
    await expect(decommission).to_have_count(0)
    assert "null" not in await view.inner_text()
    gone = await device(platform, device_id)
    assert gone["decommissioned_at"] is not None and gone["status"] == "decommissioned", gone
    await screenshot(page, "console-device-decommissioned")

    await recommission.click()
    await expect(decommission).to_have_text("停用")
    await expect(head.locator(".decommissioned-note")).to_have_count(0)
    back = await device(platform, device_id)
    assert back["decommissioned_at"] is None and back["status"] != "decommissioned", back
    tab.assert_clean()


async def test_a_device_is_registered_in_the_registry_room_and_a_taken_id_is_refused(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    manhole = platform.alerting_manhole()
    device_id = new_id()
    tab = await open_tab()
    page = tab.page
    room = await open_registry(tab, platform)
    panel = room.locator("[data-panel=register]")
    await expect(panel.locator("h2")).to_have_text("登记设备")
    form = panel.locator("form.register-form")

    async def fill(device_id: str) -> None:
        await form.locator("#reg-device-id").fill(device_id)
        await expect(form.locator(f'#reg-vendor option[value="{manhole.vendor}"]')).to_be_attached()
        await form.locator("#reg-vendor").select_option(manhole.vendor)
        await form.locator("#reg-kind").select_option(label=MODEL.kinds["manhole"].title_zh)
        # The kind's report interval is put in, and its attributes asked for by title.
        await expect(form.locator("#reg-report-interval-s")).to_have_value("300")
        await expect(form.locator("[data-attribute=depth_cm] label")).to_have_text("井深")
        await form.locator("#reg-district").select_option(label=DISTRICTS["xiping"].name_zh)
        await form.locator("#reg-lat").fill("33.38")
        await form.locator("#reg-lon").fill("114.02")
        await form.locator("#reg-address").fill("西平县人民路 8 号")
        await form.locator("#reg-report-interval-s").fill("600")
        await form.locator("#reg-install-date").fill("2025-06-01")
        await form.locator("#reg-attr-depth_cm").fill("180")
        await form.locator("button.register-submit").click()

    await fill(device_id)
    # The new device opens.
    view = page.locator(f'.device-page[data-device-id="{device_id}"]')
    await expect(view.locator(".facts")).to_contain_text("西平县人民路 8 号")
    await expect(view.locator("[data-attribute=depth_cm] dd")).to_have_text("180")
    made = await device(platform, device_id)
    assert {k: made[k] for k in ("vendor", "kind", "district", "lat", "lon", "address")} == {
        "vendor": manhole.vendor,
        "kind": "manhole",
        "district": "xiping",
        "lat": 33.38,
        "lon": 114.02,
        "address": "西平县人民路 8 号",
    }
    assert (made["report_interval_s"], made["install_date"], made["attributes"]) == (
        600,
        "2025-06-01",
        {"depth_cm": 180},
    )

    # The same id again: the API's 409 beside the form, and the form keeps what was typed.
    await page.evaluate("location.hash = '#/devices'")
    await expect(room.locator(".registry-table")).to_have_attribute("data-loaded", "true")
    await expect(room.locator(f'tr[data-device-id="{device_id}"]')).to_have_count(1)
    await fill(device_id)
    error = form.locator(".form-error")
    await expect(error).to_contain_text("409")
    await expect(error).to_contain_text(f"device {device_id} is already registered")
    await expect(form.locator("#reg-device-id")).to_have_value(device_id)
    assert (await device(platform, device_id))["updated_at"] == made["updated_at"]
    await panel.scroll_into_view_if_needed()
    await screenshot(page, "console-device-register")
    tab.assert_clean(refused=REFUSED)


async def test_only_those_who_may_change_the_registry_see_its_controls(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    device_id = new_id()
    await platform.register_manhole(device_id)
    controls = ".device-actions, button.edit, button.decommission, button.recommission"

    operator = await platform.person_of("operator")
    tab = await open_tab()
    view = await open_device(tab, platform, device_id, username=operator)
    await expect(view.locator("button.edit")).to_have_text("编辑")
    await expect(view.locator("button.decommission")).to_have_text("停用")
    room = await open_registry(await open_tab(), platform, username=operator)
    await expect(room.locator("[data-panel=register] h2")).to_have_text("登记设备")

    # Those who only read: a department's viewer, and the vendor of the device.
    vendor = platform.alerting_manhole().vendor
    # The device page asks for the rules' limits, which a vendor may not read (403).
    for reader, refused in (
        (await platform.person_of("department"), ()),
        (await platform.person_of("vendor", vendor=vendor), ("403 (Forbidden)",)),
    ):
        tab = await open_tab()
        view = await open_device(tab, platform, device_id, username=reader)
        await expect(view.locator(".device-head .facts")).to_contain_text("井盖")
        await expect(view.locator(controls)).to_have_count(0)
        await expect(view.locator("form.device-form")).to_have_count(0)
        await tab.page.evaluate("location.hash = '#/devices'")
        room = tab.page.locator(".registry-page")
        await expect(room.locator(".registry-table")).to_have_attribute("data-loaded", "true")
        await expect(room.locator("[data-panel=register], form.register-form")).to_have_count(0)
        await expect(room.locator("[data-panel=import]")).to_have_count(0)
        tab.assert_clean(refused=refused)


async def test_the_controls_speak_english_after_the_switch(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    device_id, _, tab, view = await opened_device(platform, open_tab)
    page = tab.page
    await page.locator("button.lang").click()
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await expect(view.locator("button.edit")).to_have_text("Edit")
    await expect(view.locator("button.decommission")).to_have_text("Decommission")
    await view.locator("button.edit").click()
    form = view.locator("form.device-form")
    await expect(view.locator(".device-edit h2")).to_have_text("Change the device")
    labels = ["Address", "District", "Latitude", "Longitude", "Report interval (s)"]
    await expect(form.locator(".field label")).to_have_text(
        [*labels, "Install date", "shaft depth"]
    )
    await expect(form.locator("button.save")).to_have_text("Save")
    await expect(form.locator("button.cancel")).to_have_text("Cancel")
    await form.locator("button.cancel").click()
    await view.locator("button.decommission").click()
    await expect(view.locator("button.decommission")).to_have_text("Confirm: decommission")
    await view.locator("button.decommission").click()
    await expect(view.locator("button.recommission")).to_have_text("Bring back into service")
    await expect(view.locator("[data-fact=decommissioned_at] dt")).to_have_text("Decommissioned")

    await page.evaluate("location.hash = '#/devices'")
    panel = page.locator("[data-panel=register]")
    await expect(panel.locator("h2")).to_have_text("Register a device")
    await panel.locator("#reg-kind").select_option("manhole")
    await expect(panel.locator(".field label")).to_have_text(
        ["Device id", "Vendor", "Kind", *labels, "Install date", "shaft depth"]
    )
    await expect(panel.locator("button.register-submit")).to_have_text("Register")
    tab.assert_clean()
