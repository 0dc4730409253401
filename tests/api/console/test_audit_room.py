"""The audit log room (#/audit), driven by headless Chromium against a real platform: changes
made through the API listed newest first with their actor, action and resource, filtered by
the API's own filters a page at a time, a refused filter shown with the API's reason, hostile
text shown as text, both languages, and no room for anyone but an administrator."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from playwright.async_api import expect

from tests.api.console.conftest import ConsolePlatform, Tab, screenshot
from tests.api.console.test_console import sign_in
from tests.api.console.test_hostile_text import CLEAN, HOSTILE, INJECTED

PAGE = 50  # the room asks for this many entries at a time (PAGE in audit.js)
ADMIN_KEY_NAME = "console test admin"  # the name of the module's admin key (conftest)


async def audit_entries(platform: ConsolePlatform, **filters: str) -> list[dict[str, Any]]:
    """The newest entries GET /audit lists for ``filters`` (one page of up to 1000)."""
    answer = await platform.http.get("/audit", params={**filters, "limit": 1000})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


async def make_silence(platform: ConsolePlatform, comment: str) -> None:
    """A silence through the API (the admin key), matching no real alert."""
    ends_at = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    made = await platform.http.post(
        "/silences",
        json={
            "matchers": [
                {"label": "device_id", "op": "=", "value": f"nosuch-{uuid.uuid4().hex[:8]}"}
            ],
            "ends_at": ends_at,
            "comment": comment,
        },
    )
    assert made.status_code == 201, made.text


async def open_room(tab: Tab, platform: ConsolePlatform) -> Any:
    await sign_in(tab, platform, "/#/audit")
    room = tab.page.locator(".audit-page")
    await expect(room).to_have_attribute("data-loaded", "true")
    await expect(tab.page.locator("[data-nav=audit]")).to_have_attribute("aria-current", "page")
    return room


async def filter_by(room: Any, **fields: str) -> None:
    """Fill the filter form's ``fields`` (others emptied) and wait for the answer drawn."""
    for name in ("actor", "action", "resource", "since", "until"):
        await room.locator(f"#audit-{name}").fill(fields.get(name, ""))
    await room.locator("button.apply").click()
    await expect(room).to_have_attribute("data-busy", "false")


async def test_a_change_through_the_api_is_listed_and_filtered_by_action_family(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    comment = f"audit room {uuid.uuid4().hex[:8]}"
    await make_silence(platform, comment)
    (entry,) = [
        e
        for e in await audit_entries(platform, action="silence")
        if e["detail"]["comment"] == comment
    ]
    assert (entry["action"], entry["resource"]) == ("silence.create", "silences")
    assert ADMIN_KEY_NAME in entry["actor"]

    tab = await open_tab()
    page = tab.page
    room = await open_room(tab, platform)
    await expect(page.locator("[data-nav=audit]")).to_have_text("审计日志")
    await expect(room.locator("h2")).to_have_text("审计日志")
    row = room.locator(f'tr.audit-entry[data-audit-id="{entry["id"]}"]')
    await expect(row.locator(".audit-actor")).to_contain_text(entry["actor"])
    await expect(row.locator(".audit-actor")).to_contain_text("管理员")
    await expect(row.locator(".audit-action")).to_contain_text("新建屏蔽")
    await expect(row.locator(".audit-action code")).to_have_text("silence.create")
    await expect(row.locator(".audit-resource")).to_have_text("silences")
    await expect(row.locator(".audit-detail li", has_text="comment =")).to_have_text(
        f"comment = {comment}"
    )
    # Newest first: the sign-in just made is above the silence.
    (signed_in, *_) = await audit_entries(platform, action="session.sign_in")
    order = await room.locator("tr.audit-entry").evaluate_all(
        "(rows) => rows.map((r) => Number(r.dataset.auditId))"
    )
    assert order == sorted(order, reverse=True)
    assert order.index(signed_in["id"]) < order.index(entry["id"])

    # The action's family shows it; another family hides it.
    await filter_by(room, action="silence")
    await expect(row).to_be_visible()
    await expect(room.locator("tr.audit-entry:not([data-action^='silence.'])")).to_have_count(0)
    await filter_by(room, action="device")
    await expect(row).to_have_count(0)
    await expect(room.locator("tr.audit-entry").first).to_have_attribute(
        "data-action", "device.update"
    )
    assert not [e for e in await audit_entries(platform, action="device") if e["id"] == entry["id"]]
    # The actor filter: the module's admin key made it; no one named so did.
    await filter_by(room, actor=ADMIN_KEY_NAME.upper(), action="silence.create")
    await expect(row).to_be_visible()
    await filter_by(room, actor=f"nobody-{uuid.uuid4().hex[:6]}")
    await expect(room.locator("tr.audit-entry")).to_have_count(0)
    await expect(room.locator(".empty")).to_have_text("没有符合条件的记录。")
    await expect(room.locator("button.more")).to_have_count(0)
    # A time span in the city's time: from an hour before the entry, not from an hour after.
    at = dt.datetime.fromisoformat(entry["at"])  # +08:00, the city's
    before = (at - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    after = (at + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    await filter_by(room, action="silence", since=before, until=after)
    await expect(row).to_be_visible()
    await filter_by(room, action="silence", since=after)
    await expect(row).to_have_count(0)
    await expect(room.locator(".empty")).to_be_visible()

    # A time the API cannot take: its reason beside the form, the list as it was.
    await filter_by(room, since="0001-01-01T00:00")
    error = room.locator(".form-error")
    await expect(error).to_contain_text("422")
    await expect(error).to_contain_text("since is out of range")
    await filter_by(room)
    await expect(error).to_be_hidden()
    await expect(row).to_be_visible()
    await screenshot(page, "console-audit")
    # The browser logs the refused request (the 422): expected.
    tab.assert_clean(refused=("422 (Unprocessable Entity)",))


async def test_more_appends_the_next_page_of_the_same_filters(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    device = platform.fleet.devices[0].device_id  # a silent device: no test reads its address
    for n in range(PAGE + 3):
        changed = await platform.http.patch(
            f"/devices/{device}", json={"address": f"驿城区解放路 {n} 号"}
        )
        assert changed.status_code == 200, changed.text
    made = await audit_entries(platform, action="device.update", resource=f"devices/{device}")
    assert len(made) >= PAGE + 3

    tab = await open_tab()
    room = await open_room(tab, platform)
    await filter_by(room, action="device.update", resource=f"devices/{device}")
    rows = room.locator("tr.audit-entry")
    await expect(rows).to_have_count(PAGE)
    await expect(rows.first).to_have_attribute("data-audit-id", str(made[0]["id"]))
    await expect(rows.first.locator(".audit-detail")).to_have_text(
        f"address = 驿城区解放路 {PAGE + 2} 号"
    )
    # A filter the API refuses leaves the list, and what "more" pages on, as they were.
    await room.locator("#audit-action").fill("silence")
    await room.locator("#audit-since").fill("0001-01-01T00:00")
    await room.locator("button.apply").click()
    await expect(room.locator(".form-error")).to_contain_text("since is out of range")
    await expect(rows).to_have_count(PAGE)
    await room.locator("button.more").click()
    await expect(rows).to_have_count(len(made))
    await expect(room.locator("button.more")).to_have_count(0)
    shown = await rows.evaluate_all("(rows) => rows.map((r) => Number(r.dataset.auditId))")
    assert shown == [e["id"] for e in made]
    tab.assert_clean(refused=("422 (Unprocessable Entity)",))


async def test_hostile_text_in_an_entry_is_shown_as_text(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    marker = uuid.uuid4().hex[:8]
    comment = f"{marker} {' '.join(HOSTILE)}"
    await make_silence(platform, comment)
    device = platform.fleet.devices[1].device_id  # silent: no other test reads its address
    address = f"{marker} <img src=x onerror=alert(1)>"
    changed = await platform.http.patch(f"/devices/{device}", json={"address": address})
    assert changed.status_code == 200, changed.text

    tab = await open_tab()
    page = tab.page
    dialogs: list[str] = []

    async def dismissed(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", dismissed)
    room = await open_room(tab, platform)
    details = room.locator(".audit-detail li", has_text=marker)
    await expect(details).to_have_text([f"address = {address}", f"comment = {comment}"])
    assert await page.evaluate(INJECTED) == CLEAN
    assert await room.locator("img, script, svg").count() == 0
    assert dialogs == []
    tab.assert_clean()


async def test_the_room_in_english(platform: ConsolePlatform, open_tab: Any) -> None:
    comment = f"in english {uuid.uuid4().hex[:8]}"
    await make_silence(platform, comment)
    (entry,) = [
        e
        for e in await audit_entries(platform, action="silence")
        if e["detail"]["comment"] == comment
    ]
    tab = await open_tab()
    page = tab.page
    room = await open_room(tab, platform)
    await page.locator("button.lang").click()
    await expect(page.locator("[data-nav=audit]")).to_have_text("Audit log")
    await expect(room.locator("h2")).to_have_text("Audit log")
    await expect(room.locator("thead th")).to_have_text(
        ["Time", "Actor", "Action", "Resource", "Details"]
    )
    await expect(room.locator("label[for=audit-action]")).to_have_text("Action")
    await expect(room.locator("label[for=audit-since]")).to_have_text("From (city time)")
    await expect(room.locator("button.apply")).to_have_text("Filter")
    row = room.locator(f'tr.audit-entry[data-audit-id="{entry["id"]}"]')
    await expect(row.locator(".audit-action-title")).to_have_text("Silence created")
    await expect(row.locator(".audit-action code")).to_have_text("silence.create")
    await expect(row.locator(".audit-role")).to_have_text("Administrator")
    await filter_by(room, actor=f"nobody-{uuid.uuid4().hex[:6]}")
    await expect(room.locator(".empty")).to_have_text("No entries match.")
    await page.locator("button.lang").click()
    await expect(room.locator("h2")).to_have_text("审计日志")
    tab.assert_clean()


async def test_anyone_but_an_administrator_has_no_room(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    """GET /audit takes an administrator: an operator sees no link and no room."""
    operator = await platform.person_of("operator")
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform, "/#/audit", username=operator)
    await expect(page.locator("[data-nav=overview]")).to_have_attribute("aria-current", "page")
    await expect(page.locator("[data-nav=audit]")).to_have_count(0)
    await expect(page.locator(".audit-page")).to_have_count(0)
    # Asked for again once signed in: still the overview.
    await page.evaluate("location.hash = '#/devices'")
    await expect(page.locator("[data-nav=devices]")).to_have_attribute("aria-current", "page")
    await page.evaluate("location.hash = '#/audit'")
    await expect(page.locator("[data-nav=overview]")).to_have_attribute("aria-current", "page")
    await expect(page.locator(".audit-page")).to_have_count(0)
    await page.locator("button.lang").click()
    await expect(page.locator("[data-nav=overview]")).to_have_text("Overview")
    await expect(page.locator("[data-nav=audit]")).to_have_count(0)
    await page.locator("button.lang").click()
    # The console never asked; the API would refuse an operator's key.
    assert not [u for u in tab.requests if "/api/v1/audit" in u]
    made = await platform.http.post(
        "/keys", json={"name": "audit room operator", "role": "operator"}
    )
    assert made.status_code == 201, made.text
    refused = await platform.http.get(
        "/audit", headers={"Authorization": f"Bearer {made.json()['key']}"}
    )
    assert refused.status_code == 403, refused.text
    tab.assert_clean()
