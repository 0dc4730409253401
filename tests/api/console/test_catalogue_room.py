"""The catalogue room (#/catalogue): kinds, codecs and rules listed, opened and edited in
the console as the API serves them, against a real platform in headless Chromium.

The tests put a kind and a rule of their own first (through the API) and edit those, never a
shipped one: the rule's override is taken out again, and the kind leaves the model with the
module's platform (conftest resets MODEL).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from playwright.async_api import expect
from sqlalchemy import delete

from cityiot.storage.tables.rules import RuleOverride
from tests.api.console.conftest import ConsolePlatform, Tab, screenshot
from tests.api.console.test_console import sign_in
from tests.operator_files import NOISE

PROBE_RULE = "catalogue_probe_tilt"
PROBE_DEFINITION: dict[str, Any] = {
    "kind": "manhole",
    "severity": "minor",
    "when": "tilt_deg > 80",
    "summary": {
        "zh": "井盖几乎翻转（倾角 {tilt_deg}°）",
        "en": "Cover nearly overturned ({tilt_deg}°)",
    },
}
PROBE_KIND = "cat_noise"
# The shipped hexframe codec's own examples (ingest/codecs/files/hexframe.yaml): a gas
# detector's frame with no time of its own, and a frame corrupted in transit.
GAS_FRAME = bytes(
    [65, 53, 48, 49, 48, 56, 48, 48, 48, 48, 48, 48, 48, 67, 48, 48, 48, 48, 48, 48, 48, 48, 48]
    + [51, 48, 49, 48, 48, 48, 48, 48, 56, 51, 52, 48, 53, 48, 48, 48, 48, 48, 55, 68, 48, 48]
    + [52, 48, 48, 48, 48, 48, 51, 69, 56, 70, 66, 57, 50]
).hex()
CORRUPT_FRAME = bytes(
    [65, 53, 48, 49, 48, 49, 48, 48, 48, 48, 48, 48, 48, 56, 54, 57, 50, 50, 52, 69, 56, 48]
    + [48, 49, 48, 49, 48, 48, 48, 48, 48, 57, 67, 52, 51, 66, 50, 48]
).hex()


async def open_room(tab: Tab, platform: ConsolePlatform, username: str | None = None) -> Any:
    await sign_in(tab, platform, "/#/catalogue", username=username)
    room = tab.page.locator(".catalogue-page")
    await expect(room).to_have_attribute("data-loaded", "true")
    return room


async def open_item(room: Any, tab: str, item: str) -> Any:
    await room.locator(f".cat-tab[data-tab={tab}]").click()
    await expect(room).to_have_attribute("data-tab", tab)
    await room.locator(f".cat-list tr[data-id={item}] .cat-open").click()
    detail = room.locator(f".cat-detail[data-id={item}]")
    await expect(detail.locator("textarea.cat-text")).to_be_attached()
    return detail


async def fill_json(detail: Any, value: Any) -> None:
    await detail.locator("textarea.cat-text").fill(json.dumps(value, ensure_ascii=False))


async def test_an_administrator_edits_a_rule_and_a_bad_edit_shows_the_api_refusal(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    put = await platform.http.put(f"/rules/{PROBE_RULE}", json=PROBE_DEFINITION)
    assert put.status_code == 200, put.text
    try:
        tab = await open_tab()
        room = await open_room(tab, platform)
        # The kinds tab opens first: each kind by its title, with its metrics counted.
        manhole = room.locator(".cat-list tr[data-id=manhole]")
        await expect(manhole.locator(".cat-title")).to_have_text("井盖")
        await expect(manhole.locator(".cat-origin")).to_contain_text("平台内置")
        await screenshot(tab.page, "console-catalogue")
        await room.locator(".cat-tab[data-tab=codecs]").click()
        await expect(room.locator(".cat-list tr[data-id=hexframe]")).to_contain_text("旧型号")

        detail = await open_item(room, "rules", PROBE_RULE)
        row = room.locator(f".cat-list tr[data-id={PROBE_RULE}]")
        await expect(row.locator(".cat-title")).to_have_text("井盖几乎翻转（倾角 ‹倾角›°）")
        await expect(row.locator(".cat-kind")).to_have_text("井盖")
        await expect(detail.locator(".cat-limits")).to_have_text("倾角 (°) > 80")
        shown = json.loads(await detail.locator("textarea.cat-text").input_value())
        assert shown == {**PROBE_DEFINITION, "id": PROBE_RULE}

        # A stricter threshold: saved, and the API serves it.
        await fill_json(detail, {**shown, "when": "tilt_deg > 85"})
        await detail.locator("button.cat-save").click()
        await expect(detail.locator(".saved")).to_contain_text("已保存")
        await expect(detail.locator(".cat-limits")).to_have_text("倾角 (°) > 85")
        got = (await platform.http.get(f"/rules/{PROBE_RULE}")).json()
        assert got["definition"]["when"] == "tilt_deg > 85" and got["source"] == "api"
        await expect(detail.locator(".saved")).to_contain_text(got["updated_by"])

        # A severity the rules do not have: the API's 422 beside the form, naming the field.
        await fill_json(detail, {**shown, "when": "tilt_deg > 60", "severity": "urgent"})
        await detail.locator("button.cat-save").click()
        error = detail.locator(".form-error")
        await expect(error).to_be_visible()
        await expect(error).to_contain_text("422")
        await expect(error).to_contain_text(f"rule {PROBE_RULE}.severity: 'urgent'")
        await expect(detail.locator(".saved")).to_be_hidden()
        after = (await platform.http.get(f"/rules/{PROBE_RULE}")).json()
        assert after == got  # nothing changed
        # Text that is not JSON is refused before it goes anywhere.
        await detail.locator("textarea.cat-text").fill("{not json")
        await detail.locator("button.cat-save").click()
        await expect(error).to_contain_text("不是有效的 JSON")
        tab.assert_clean(refused=("422 (Unprocessable Entity)",))
    finally:
        async with platform.sessions() as session, session.begin():
            await session.execute(delete(RuleOverride).where(RuleOverride.id == PROBE_RULE))


async def test_an_administrator_retitles_a_kind_and_the_console_names_it_anew(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    spec = {k: v for k, v in copy.deepcopy(NOISE).items() if k != "kind"}
    put = await platform.http.put(f"/kinds/{PROBE_KIND}", json=spec)
    assert put.status_code == 200, put.text
    tab = await open_tab()
    room = await open_room(tab, platform)
    await expect(room.locator(f".cat-list tr[data-id={PROBE_KIND}] .cat-title")).to_have_text(
        "环境噪声"
    )
    detail = await open_item(room, "kinds", PROBE_KIND)
    metric = detail.locator(".cat-metrics-table tr[data-metric=laeq_db] td")
    await expect(metric).to_have_text(["等效声级", "dB(A)", "20 – 140"])
    shown = json.loads(await detail.locator("textarea.cat-text").input_value())
    assert shown == put.json()

    retitled = {**shown, "title": {"zh": "区域环境噪声", "en": "area noise"}}
    await fill_json(detail, retitled)
    await detail.locator("button.cat-save").click()
    await expect(detail.locator(".saved")).to_contain_text("已保存")
    got = (await platform.http.get(f"/kinds/{PROBE_KIND}")).json()
    assert got["title"] == {"zh": "区域环境噪声", "en": "area noise"} and got["origin"] == "api"
    # The titles cache follows: the list names the kind anew, in either language.
    row = room.locator(f".cat-list tr[data-id={PROBE_KIND}] .cat-title")
    await expect(row).to_have_text("区域环境噪声")
    await expect(detail.locator(".cat-kind-title")).to_contain_text("区域环境噪声")
    await tab.page.locator("button.lang").click()
    await expect(row).to_have_text("area noise")
    await expect(tab.page.locator(".cat-tab[data-tab=kinds]")).to_contain_text("Kinds")
    await tab.page.locator("button.lang").click()

    # A metric type the model has not: 422 naming the metric's field; nothing changes.
    bad = copy.deepcopy(retitled)
    bad["metrics"]["laeq_db"]["type"] = "complex"
    await fill_json(detail, bad)
    await detail.locator("button.cat-save").click()
    error = detail.locator(".form-error")
    await expect(error).to_contain_text("422")
    await expect(error).to_contain_text("metrics.laeq_db.type: 'complex'")
    assert (await platform.http.get(f"/kinds/{PROBE_KIND}")).json() == got
    tab.assert_clean(refused=("422 (Unprocessable Entity)",))


async def test_a_codec_try_out_shows_decoded_metrics_or_the_reason(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    tab = await open_tab()
    room = await open_room(tab, platform)
    detail = await open_item(room, "codecs", "hexframe")
    # The spec and its script, as GET /codecs/hexframe answers them.
    codec = (await platform.http.get("/codecs/hexframe")).json()
    assert json.loads(await detail.locator("textarea.cat-text").input_value()) == codec["spec"]
    script = detail.locator("textarea.cat-script[data-file='hexframe.js']")
    assert await script.input_value() == codec["scripts"]["hexframe.js"]
    # A spec naming another codec is refused (422 naming spec.codec) and changes nothing.
    await fill_json(detail, {**codec["spec"], "codec": "otherframe"})
    await detail.locator("button.cat-save").click()
    await expect(detail.locator(".form-error")).to_contain_text(
        "spec.codec 'otherframe' differs from the path's 'hexframe'"
    )
    assert (await platform.http.get("/codecs/hexframe")).json() == codec

    trial = detail.locator("form.cat-trial")
    await trial.locator("#cat-trial-payload").fill(GAS_FRAME)
    await trial.locator("button.cat-try").click()
    result = trial.locator(".trial-result")
    await expect(result).to_have_attribute("data-readings", "1")
    await expect(result.locator("[data-metric=pressure_kpa] dd")).to_have_text("2.1")
    await expect(result.locator("[data-metric=alarm_state] dd")).to_have_text("high")
    await expect(result.locator("[data-metric=valve_closed] dd")).to_have_text("是")
    await expect(trial.locator(".trial-error")).to_be_hidden()

    await trial.locator("#cat-trial-payload").fill(CORRUPT_FRAME)
    await trial.locator("button.cat-try").click()
    error = trial.locator(".trial-error")
    await expect(error).to_contain_text("无法解码")
    await expect(error).to_contain_text("CRC mismatch (frame corrupted in transit)")
    await expect(result).to_have_count(0)
    tab.assert_clean(refused=("422 (Unprocessable Entity)",))


async def test_the_room_is_for_the_roles_the_api_lets_read_it_and_saving_for_an_administrator(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    """A department may not read every codec nor decode: no link, no room. An operator reads
    and tries frames, and has no save button (PUT takes an administrator)."""
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform, "/#/catalogue", username=await platform.person_of("department"))
    await expect(page.locator("[data-nav=overview]")).to_have_attribute("aria-current", "page")
    await expect(page.locator("[data-nav=catalogue]")).to_have_count(0)
    await expect(page.locator(".catalogue-page")).to_have_count(0)
    tab.assert_clean()

    tab = await open_tab()
    room = await open_room(tab, platform, await platform.person_of("operator"))
    await expect(tab.page.locator("[data-nav=catalogue]")).to_have_text("设备类型与规则")
    detail = await open_item(room, "rules", "battery_low")
    await expect(detail.locator("textarea.cat-text")).to_have_attribute("readonly", "")
    await expect(detail.locator("button.cat-save")).to_have_count(0)
    tab.assert_clean()


async def test_an_administrator_saves_a_codec_and_a_broken_script_changes_nothing(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    """The hexframe script gains a comment line in the room and is served so; a script that
    does not parse is refused with the API's own 422 detail beside the form. The shipped
    codec's spec and scripts are put back through the API at the end."""
    original = (await platform.http.get("/codecs/hexframe")).json()
    try:
        tab = await open_tab()
        page = tab.page
        room = await open_room(tab, platform)
        detail = await open_item(room, "codecs", "hexframe")
        script = detail.locator("textarea.cat-script[data-file='hexframe.js']")
        edited = "// hexframe, checked in the console\n" + original["scripts"]["hexframe.js"]
        await script.fill(edited)
        await detail.locator("button.cat-save").click()
        await expect(detail.locator(".saved")).to_contain_text("已保存")
        got = (await platform.http.get("/codecs/hexframe")).json()
        assert got["scripts"] == {**original["scripts"], "hexframe.js": edited}
        assert got["spec"] == original["spec"] and got["source"] == "api"
        # The room shows the version saved: its script, its source, who put it.
        await expect(detail.locator(".saved")).to_contain_text(got["updated_by"])
        await expect(script).to_have_value(edited)
        await expect(detail.locator(".cat-source-line")).to_contain_text("经 API 修改")
        await expect(detail.locator(".cat-version")).to_contain_text(got["updated_by"])
        await expect(room.locator(".cat-list tr[data-id=hexframe] .cat-source")).to_have_text(
            "经 API 修改"
        )

        # A script that does not parse: the API's 422 detail beside the form; nothing changes.
        await script.fill(edited + "\nfunction decodeUplink(input {\n")
        async with page.expect_response(
            lambda r: r.url.endswith("/codecs/hexframe") and r.request.method == "PUT"
        ) as answer:
            await detail.locator("button.cat-save").click()
        refused = await answer.value
        assert refused.status == 422
        reason = (await refused.json())["detail"]
        assert "hexframe.js does not load: SyntaxError" in reason, reason
        error = detail.locator(".form-error")
        await expect(error).to_be_visible()
        await expect(error).to_contain_text("422")
        await expect(error).to_contain_text(reason)
        await expect(detail.locator(".saved")).to_be_hidden()
        assert (await platform.http.get("/codecs/hexframe")).json() == got
        tab.assert_clean(refused=("422 (Unprocessable Entity)",))
    finally:
        put = await platform.http.put(
            "/codecs/hexframe", json={"spec": original["spec"], "scripts": original["scripts"]}
        )
        assert put.status_code == 200, put.text
