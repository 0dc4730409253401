"""One's own password, changed from the console's header (POST /session/password), driven by
headless Chromium: a wrong current password and a password rule broken are shown with the
API's detail, two new passwords that differ are caught before anything is sent, and a good
change ends the session: the sign-in page, where only the new password opens the account."""

from __future__ import annotations

from typing import Any

import httpx
from playwright.async_api import expect

from tests.api.console.conftest import PASSWORD, ConsolePlatform
from tests.api.console.test_console import sign_in

NEW_PASSWORD = "a fresh console passphrase"


def _sent(tab: Any) -> int:
    """Password changes the page has asked the API for."""
    return sum(url.endswith("/api/v1/session/password") for url in tab.requests)


async def _signs_in(platform: ConsolePlatform, username: str, password: str) -> int:
    async with httpx.AsyncClient(base_url=f"{platform.url}/api/v1") as http:
        answer = await http.post("/session", json={"username": username, "password": password})
    return answer.status_code


async def test_a_person_changes_their_own_password_from_the_header(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    username = await platform.person_of("operator")
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform, "/", username=username)
    opener = page.locator("header .bar-tools button.own-password-open")
    await expect(opener).to_have_text("修改密码")
    await expect(opener).to_have_attribute("aria-expanded", "false")
    await opener.click()
    await expect(opener).to_have_attribute("aria-expanded", "true")
    form = page.locator("form.own-password-form")
    await expect(form.locator("h2")).to_have_text("修改密码")
    current, new, again = (
        form.locator(f"#{id_}") for id_ in ("own-current", "own-new", "own-new2")
    )
    await expect(current).to_be_focused()
    await expect(current).to_have_attribute("autocomplete", "current-password")
    await expect(new).to_have_attribute("autocomplete", "new-password")
    await expect(again).to_have_attribute("autocomplete", "new-password")
    error = form.locator(".form-error")
    save = form.locator("button.save-own-password")

    # A wrong current password: the API's 401 detail; the session goes on.
    await current.fill("not the password at all")
    await new.fill(NEW_PASSWORD)
    await again.fill(NEW_PASSWORD)
    await save.click()
    await expect(error).to_contain_text("401")
    await expect(error).to_contain_text("the current password is wrong")
    await expect(page.locator("#app")).to_have_attribute("data-signed-in", "true")
    assert _sent(tab) == 1

    # The two new ones differ: the console says so and sends nothing.
    await current.fill(PASSWORD)
    await again.fill(f"{NEW_PASSWORD}!")
    await save.click()
    await expect(error).to_have_text("两次输入的新密码不一致，请重新输入；尚未提交。")

    # Too short: the API's 422 names the rule (and only this request was sent since).
    await new.fill("short1")
    await again.fill("short1")
    await save.click()
    await expect(error).to_contain_text("422")
    await expect(error).to_contain_text("it needs at least 12")
    assert _sent(tab) == 2
    await expect(page.locator("#app")).to_have_attribute("data-signed-in", "true")

    # The labels in English; what was typed stays through the switch.
    await page.locator("button.lang").click()
    await expect(form.locator("label[for=own-new2]")).to_have_text("New password again")
    await expect(opener).to_have_text("Change password")
    await expect(new).to_have_value("short1")
    await page.locator("button.lang").click()

    # A good one: the session is over, the sign-in page says why; the new password opens
    # the account and the old one no longer does.
    await new.fill(NEW_PASSWORD)
    await again.fill(NEW_PASSWORD)
    await save.click()
    await expect(page.locator("#app")).to_have_attribute("data-signed-in", "false")
    await expect(page.locator("form.signin")).to_be_visible()
    await expect(page.locator(".notice")).to_contain_text("密码已修改")
    await expect(form).to_have_count(0)
    await expect(opener).to_be_hidden()
    assert _sent(tab) == 3
    assert await _signs_in(platform, username, PASSWORD) == 401
    assert await _signs_in(platform, username, NEW_PASSWORD) == 200

    # The page signs in with the new one.
    await page.locator("#username").fill(username)
    await page.locator("#password").fill(NEW_PASSWORD)
    await page.locator("form.signin button[type=submit]").click()
    await expect(page.locator("#app")).to_have_attribute("data-signed-in", "true")
    await expect(opener).to_be_visible()
    tab.assert_clean(refused=("401 (Unauthorized)", "422 (Unprocessable Entity)"))


async def test_cancelling_forgets_what_was_typed(platform: ConsolePlatform, open_tab: Any) -> None:
    username = await platform.person_of("department", districts=["yicheng"])
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform, "/", username=username)
    opener = page.locator("button.own-password-open")
    await opener.click()
    form = page.locator("form.own-password-form")
    await form.locator("#own-current").fill(PASSWORD)
    await form.locator("button.cancel").click()
    await expect(form).to_have_count(0)
    await expect(opener).to_have_attribute("aria-expanded", "false")
    await opener.click()
    await expect(form.locator("#own-current")).to_have_value("")
    assert _sent(tab) == 0
    tab.assert_clean()
