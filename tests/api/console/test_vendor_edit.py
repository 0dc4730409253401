"""Registering a vendor and changing its codec in the vendors room (#/vendors), driven by
headless Chromium: POST /vendors and PATCH /vendors/{id} through the page's forms, the API's
refusals (409, 422) shown beside them, and the forms offered only to the roles the API lets
change vendors (administrators)."""

from __future__ import annotations

import re
import uuid
from typing import Any

from playwright.async_api import expect

from tests.api.console.conftest import ConsolePlatform
from tests.api.console.test_console import sign_in


async def _codecs(platform: ConsolePlatform) -> dict[str, str]:
    """Name → description of the codecs in force (GET /codecs)."""
    body = (await platform.http.get("/codecs", params={"limit": 1000})).json()
    return {c["name"]: c["description"] for c in body["items"]}


async def _vendor(platform: ConsolePlatform, vendor_id: str) -> dict[str, Any]:
    answer = await platform.http.get(f"/vendors/{vendor_id}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_a_vendor_is_registered_and_its_codec_changed_in_the_room(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    codecs = await _codecs(platform)
    other = next(name for name in codecs if name != "json")  # a shipped codec (hexframe)
    vendor_id = f"reg-{uuid.uuid4().hex[:8]}"
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform, "/#/vendors")
    room = page.locator(".vendors-page")
    await expect(room).to_have_attribute("data-loaded", "true")
    section = room.locator("[data-section=register]")
    await expect(section.locator("h3")).to_have_text("登记厂商")
    form = section.locator("form.vendor-form")
    error = form.locator(".vendor-error")
    await expect(error).to_be_hidden()

    # The codecs in force, by their titles; the standard (json) chosen until another is.
    select = form.locator("#vd-codec")
    await expect(select).to_have_value("json")
    values = await select.locator("option").evaluate_all("os => os.map(o => o.value)")
    assert values == list(codecs), values
    title = re.split(r"\s*/\s+", codecs[other], maxsplit=1)[0]  # its Chinese half
    await expect(select.locator(f'option[value="{other}"]')).to_have_text(f"{title} ({other})")

    # An id the API refuses (not a topic segment): its 422 beside the form, nothing registered.
    await form.locator("#vd-id").fill("no spaces here")
    await form.locator("#vd-name").fill("登记测试厂商")
    await form.locator("button.create-vendor").click()
    await expect(error).to_contain_text("422")
    await expect(error).to_contain_text("id")
    assert (await platform.http.get("/vendors/no%20spaces%20here")).status_code != 200

    # Registered with a codec chosen in the form: listed at once, and the API has it.
    await form.locator("#vd-id").fill(vendor_id)
    await select.select_option(other)
    await form.locator("button.create-vendor").click()
    card = room.locator(f'.vendor[data-vendor-id="{vendor_id}"]')
    await expect(card.locator(".vendor-name")).to_have_text("登记测试厂商")
    await expect(card.locator("[data-fact=codec] code")).to_have_text(other)
    await expect(card.locator("[data-section=accounts] .empty")).to_be_visible()
    await expect(error).to_be_hidden()
    await expect(form.locator("#vd-id")).to_have_value("")
    await expect(select).to_have_value("json")
    made = await _vendor(platform, vendor_id)
    assert (made["name"], made["codec"]) == ("登记测试厂商", other)

    # The same id again: the API's 409 beside the form; still one vendor of that id.
    await form.locator("#vd-id").fill(vendor_id)
    await form.locator("#vd-name").fill("另一个名称")
    await form.locator("button.create-vendor").click()
    await expect(error).to_contain_text("409")
    await expect(error).to_contain_text(f"vendor '{vendor_id}' is already registered")
    await expect(room.locator(f'.vendor[data-vendor-id="{vendor_id}"]')).to_have_count(1)
    assert (await _vendor(platform, vendor_id))["name"] == "登记测试厂商"

    # Its codec changed on its card: saved only once another is chosen; the API has it.
    codec_form = card.locator("form.codec-form")
    await expect(codec_form.locator("label")).to_have_text("更换编解码器")
    change = codec_form.locator(f"#codec-of-{vendor_id}")
    await expect(change).to_have_value(other)
    await expect(codec_form.locator("button.save-codec")).to_be_disabled()
    await change.select_option("json")
    await codec_form.locator("button.save-codec").click()
    await expect(card.locator("[data-fact=codec] code")).to_have_text("json")
    await expect(codec_form.locator("button.save-codec")).to_be_disabled()
    assert (await _vendor(platform, vendor_id))["codec"] == "json"

    # In English.
    await page.locator("button.lang").click()
    await expect(section.locator("h3")).to_have_text("Register a vendor")
    await expect(codec_form.locator("label")).to_have_text("Change codec")
    await page.locator("button.lang").click()
    # The browser logs the refused requests (the 422 and the 409): expected.
    tab.assert_clean(refused=("422 (Unprocessable Entity)", "409 (Conflict)"))


async def test_a_codec_change_the_api_refuses_shows_its_detail_on_the_card(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    """A codec taken out of the select's reach meanwhile (another administrator's page):
    PATCH answers 422 naming the codecs in force, shown on the card; nothing changes."""
    vendor_id = f"reg-{uuid.uuid4().hex[:8]}"
    made = await platform.http.post(
        "/vendors", json={"id": vendor_id, "name": "编解码测试厂商", "codec": "json"}
    )
    assert made.status_code == 201, made.text
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform, "/#/vendors")
    room = page.locator(".vendors-page")
    await expect(room).to_have_attribute("data-loaded", "true")
    card = room.locator(f'.vendor[data-vendor-id="{vendor_id}"]')
    change = card.locator(f"#codec-of-{vendor_id}")
    # An option for a codec no longer in force, as a page loaded before it went would offer.
    await change.evaluate("(select) => select.append(new Option('gone-codec', 'gone-codec'))")
    await change.select_option("gone-codec")
    await card.locator("button.save-codec").click()
    error = card.locator(".codec-error")
    await expect(error).to_contain_text("422")
    await expect(error).to_contain_text("unknown codec 'gone-codec'")
    await expect(card.locator("[data-fact=codec] code")).to_have_text("json")
    assert (await _vendor(platform, vendor_id))["codec"] == "json"
    tab.assert_clean(refused=("422 (Unprocessable Entity)",))


async def test_only_administrators_are_offered_to_register_vendors_or_change_codecs(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    """POST /vendors and PATCH /vendors/{id} are for administrators (allow("admin") in
    api/routes/vendors.py): an operator reads the room without the forms, and the API
    refuses an operator's own attempt likewise."""
    username = await platform.person_of("operator")
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform, "/#/vendors", username=username)
    room = page.locator(".vendors-page")
    await expect(room).to_have_attribute("data-loaded", "true")
    await expect(room.locator(".vendor").first).to_be_visible()
    await expect(room.locator("[data-section=register]")).to_have_count(0)
    await expect(room.locator("form.vendor-form")).to_have_count(0)
    await expect(room.locator("form.codec-form")).to_have_count(0)
    vendor = platform.fleet.vendors[0]
    # What the console leaves out, the API refuses: the operator's own session asks.
    refused = await page.evaluate(
        """async ([id]) => {
        const session = await (await fetch('/api/v1/session')).json();
        const headers = {'Content-Type': 'application/json', 'X-CSRF-Token': session.csrf_token};
        const post = await fetch('/api/v1/vendors', {method: 'POST', headers,
            body: JSON.stringify({id: 'operator-made', name: 'x', codec: 'json'})});
        const patch = await fetch(`/api/v1/vendors/${id}`, {method: 'PATCH', headers,
            body: JSON.stringify({codec: 'json'})});
        return [post.status, patch.status];
    }""",
        [vendor.id],
    )
    assert refused == [403, 403], refused
    tab.assert_clean(refused=("403 (Forbidden)",))
