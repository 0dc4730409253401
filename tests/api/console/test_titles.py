"""The console names kinds, metrics, attributes and districts by their titles, from the live
thing model: its reference data (``/console/catalogue.json``) follows the model, the device
page shows titles with units in either language and never a raw name, and a kind added
while the platform runs reaches an open console with no reload and no restart.

The added kind leaves the model with the module's platform (conftest).
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import orjson
from playwright.async_api import expect

from cityiot.domain.catalogue import MODEL, Kind
from cityiot.storage.kinds import refresh_kinds, save_kind
from tests.api.console.conftest import ConsolePlatform, screenshot
from tests.api.console.test_console import listed, sign_in
from tests.operator_files import NOISE
from tests.waiting import until

NOISE_DEVICE = "ns-console-0001"
REFERENCE = "/console/catalogue.json"
# The main part's text, less what a room marks raw-id (#/catalogue's kind, codec and rule ids,
# shown as the ids they are beside their titles): hidden and shown again in one task.
MAIN_TEXT_BUT_IDS = """() => {
  const ids = [...document.querySelectorAll("main .raw-id")].filter((el) => !el.hidden);
  ids.forEach((el) => (el.hidden = true));
  const text = document.querySelector("main").innerText;
  ids.forEach((el) => (el.hidden = false));
  return text;
}"""
# What the device page shows of a device: its facts, latest readings and charts.
DEVICE_PARTS = ".device-head, .latest, .charts"


def raw_names_in(text: str, names: list[str]) -> list[str]:
    """The names that stand as words of ``text``."""
    return [
        n for n in names if re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", text)
    ]


async def reference(platform: ConsolePlatform) -> httpx.Response:
    async with httpx.AsyncClient(base_url=platform.url) as http:
        return await http.get(REFERENCE)


async def test_the_reference_data_lists_every_kind_of_the_model_with_titles_and_units(
    platform: ConsolePlatform,
) -> None:
    answer = await reference(platform)
    assert answer.status_code == 200
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["cache-control"] == "no-cache" and answer.headers["etag"]
    data = answer.json()
    assert list(data["kinds"]) == list(MODEL.kinds)
    for name, kind in MODEL.kinds.items():
        shown = data["kinds"][name]
        assert shown["title"] == {"zh": kind.title_zh, "en": kind.title_en}, name
        assert shown["report_interval_s"] == kind.report_interval_s
        assert [m["name"] for m in shown["metrics"]] == [m.name for m in kind.metrics]
        for metric, model in zip(shown["metrics"], kind.metrics, strict=True):
            where = f"{name}.{model.name}"
            assert metric["type"] == model.type, where
            assert metric["unit"] == model.unit, where
            assert metric["title"] == {"zh": model.title_zh, "en": model.title_en}, where
            assert metric["title"]["zh"] and metric["title"]["en"], where
            if model.type == "float":
                assert metric["range"] == [model.low, model.high], where
            else:
                assert "range" not in metric, where
            if model.type == "enum":
                assert metric["values"] == list(model.values), where
        assert [(a["name"], a["type"], a["required"], a["title"]) for a in shown["attributes"]] == [
            (a.name, a.type.__name__, a.required, {"zh": a.title_zh, "en": a.title_en})
            for a in kind.attributes
        ], name
    # How often the console looks again: the platform's refresh, at least a second.
    assert data["refresh_s"] == max(1.0, platform.settings.registry_refresh_s)
    city = MODEL.city
    assert data["city"]["name"] == {"zh": city.name_zh, "en": city.name_en}
    assert data["city"]["timezone"] == city.timezone
    assert data["districts"] == {
        d.id: {"zh": d.name_zh, "en": d.name_en} for d in MODEL.districts.values()
    }
    # The metrics' units reach the page: the manhole's tilt is in degrees.
    tilt = next(m for k in data["kinds"].values() for m in k["metrics"] if m["name"] == "tilt_deg")
    assert tilt["unit"] == "°" and tilt["title"] == {"zh": "倾角", "en": "tilt"}


async def test_a_device_page_shows_titles_with_units_in_either_language_never_raw_names(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    device = platform.alerting_manhole()
    kind = MODEL.kinds[device.kind]
    latest = (await platform.http.get(f"/devices/{device.device_id}/latest")).json()
    reported = [m.name for m in kind.metrics if m.name in latest["metrics"]]
    assert len(reported) >= 4, latest  # the hour of history carries most metrics
    registered = (await platform.http.get(f"/devices/{device.device_id}")).json()
    attributes = [a for a in kind.attributes if a.name in registered["attributes"]]
    assert attributes, registered  # the manhole's shaft depth
    raw = [m.name for m in kind.metrics] + [a.name for a in kind.attributes]

    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform)
    await page.evaluate(f"location.hash = '#/device/{device.device_id}'")
    view = page.locator(f'.device-page[data-device-id="{device.device_id}"]')
    await expect(view).to_have_attribute("data-loaded", "true")
    for lang in ("zh", "en"):
        for name in reported:
            label = kind.metric(name).label(lang)  # type: ignore[union-attr]
            await expect(view.locator(f".reading[data-metric={name}] .reading-name")).to_have_text(
                label
            )
        for metric in kind.metrics:
            caption = view.locator(f"figure.chart[data-metric={metric.name}] .chart-name")
            await expect(caption).to_have_text(metric.label(lang))
        for attribute in attributes:
            title = attribute.title_zh if lang == "zh" else attribute.title_en
            await expect(view.locator(f"[data-attribute={attribute.name}] dt")).to_have_text(title)
        kind_title = (
            kind.title_zh if lang == "zh" else kind.title_en[:1].upper() + kind.title_en[1:]
        )
        await expect(view.locator(".facts")).to_contain_text(kind_title)
        district = MODEL.districts[device.district]
        await expect(view.locator(".facts")).to_contain_text(
            district.name_zh if lang == "zh" else district.name_en
        )
        # Units come with the values too: the tilt is shown in degrees.
        await expect(view.locator(".reading[data-metric=tilt_deg] .reading-value")).to_contain_text(
            "°"
        )
        flags = [m.name for m in kind.metrics if m.type == "bool" and m.name in reported]
        for name in flags:
            await expect(view.locator(f".reading[data-metric={name}] .reading-value")).to_have_text(
                re.compile("^(是|否)$" if lang == "zh" else "^(yes|no)$")
            )
        shown = "\n".join(await page.locator(DEVICE_PARTS).all_inner_texts())
        assert not raw_names_in(shown, raw), (lang, raw_names_in(shown, raw), shown)
        if lang == "zh":
            await page.locator("button.lang").click()
            await expect(page.locator("html")).to_have_attribute("lang", "en")
    tab.assert_clean()


async def test_the_map_filters_by_kind_named_by_its_title(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    kinds: dict[str, int] = {}
    for device in platform.fleet.devices:
        kinds[device.kind] = kinds.get(device.kind, 0) + 1
    assert len(kinds) >= 2, kinds
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform)
    map_ = page.locator(".map")
    await expect(map_).to_have_attribute("data-drawn", str(len(platform.fleet.devices)))
    options = page.locator(".kind-filter select option")
    await expect(options).to_have_count(len(kinds) + 1)  # and "every kind"
    order = [k for k in MODEL.kinds if k in kinds]
    expected = ["全部类型"] + [f"{MODEL.kinds[k].title_zh}（{kinds[k]}）" for k in order]
    await expect(options).to_have_text(expected)
    chosen = order[-1]
    await page.locator(".kind-filter select").select_option(chosen)
    await expect(map_).to_have_attribute("data-drawn", str(kinds[chosen]))
    await expect(map_).to_have_attribute("data-kind", chosen)
    await page.locator("button.lang").click()
    title = MODEL.kinds[chosen].title_en
    await expect(page.locator(".kind-filter select option:checked")).to_have_text(
        f"{title[:1].upper()}{title[1:]} ({kinds[chosen]})"
    )
    await page.locator(".kind-filter select").select_option("")
    await expect(map_).to_have_attribute("data-drawn", str(len(platform.fleet.devices)))
    tab.assert_clean()


async def test_an_unknown_name_shows_as_it_is(platform: ConsolePlatform, open_tab: Any) -> None:
    tab = await open_tab()
    await tab.page.goto(f"{platform.url}/")
    shown = await tab.page.evaluate(
        """async () => {
        const {Catalogue} = await import('/console/catalogue.js');
        const {I18n} = await import('/console/i18n.js');
        const storage = new Map();
        const i18n = new I18n({getItem: k => storage.get(k) ?? null, setItem: (k, v) => storage.set(k, v)},
                              new Catalogue());
        return [i18n.kind('kind_x'), i18n.metric('kind_x', 'depth_x_cm'), i18n.district('d_x'),
                i18n.attribute('kind_x', 'a_x'), i18n.value(undefined, true), i18n.value(undefined, 'night'),
                i18n.appTitle()];
    }"""
    )
    assert shown == ["kind_x", "depth_x_cm", "d_x", "a_x", "是", "night", "城市物联网 · 运营控制台"]


async def test_the_console_looks_again_at_the_platforms_period(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    tab = await open_tab()
    await tab.page.goto(f"{platform.url}/")
    periods = await tab.page.evaluate(
        """async () => {
        const {Catalogue, REFERENCE_URL} = await import('/console/catalogue.js');
        const catalogue = new Catalogue();
        const before = catalogue.periodMs;
        await catalogue.load();
        window.looks = 0;
        const fetchOnce = window.fetch;
        window.fetch = (url, init) => {
            if (url === REFERENCE_URL) window.looks += 1;
            return fetchOnce(url, init);
        };
        catalogue.start();
        window.lookingCatalogue = catalogue;
        return [before, catalogue.period];
    }"""
    )
    assert periods == [60_000, max(1.0, platform.settings.registry_refresh_s) * 1000]
    # It looks again by itself (an unchanged answer is a 304), not once a minute.
    await until(lambda: tab.page.evaluate("window.looks >= 2"), what="the console's second look")
    await tab.page.evaluate("clearInterval(window.lookingCatalogue.timer)")
    tab.assert_clean()


async def test_a_kind_added_while_running_reaches_the_open_console_without_a_reload(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    before = await reference(platform)
    assert NOISE["kind"] not in before.json()["kinds"]
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform)
    await expect(page.locator(".map")).not_to_have_attribute("data-drawn", "0")
    loads: list[str] = []
    page.on("load", lambda loaded: loads.append(loaded.url))

    # The operator's new kind goes into the database and the running model: no restart.
    kind: Kind = MODEL.check_change(NOISE)
    await save_kind(platform.sessions, kind, "console test")
    await refresh_kinds(platform.sessions)  # or the API's own round took it already
    assert NOISE["kind"] in MODEL.kinds
    async with httpx.AsyncClient(base_url=platform.url) as http:
        after = await http.get(REFERENCE, headers={"If-None-Match": before.headers["etag"]})
    assert after.status_code == 200 and after.headers["etag"] != before.headers["etag"]
    added = after.json()["kinds"][NOISE["kind"]]
    assert added["title"] == NOISE["title"]
    assert [(m["name"], m["unit"], m["title"]["zh"]) for m in added["metrics"]] == [
        ("laeq_db", "dB(A)", "等效声级"),
        ("alarm", "", "超标报警"),
        ("period", "", "时段"),
    ]
    assert added["metrics"][0]["range"] == [20.0, 140.0]
    assert added["metrics"][2]["values"] == ["day", "night"]

    # A device of it reports a reading; the console, open all along, meets the kind.
    vendor = platform.alerting_manhole().vendor
    created = await platform.http.post(
        "/devices",
        json={
            "device_id": NOISE_DEVICE,
            "vendor": vendor,
            "kind": NOISE["kind"],
            "district": platform.alerting_manhole().district,
            "lat": platform.alerting_manhole().lat,
            "lon": platform.alerting_manhole().lon,
            "report_interval_s": 60,
            "attributes": {"limit_db": 55, "zone_class": "2"},
        },
    )
    assert created.status_code == 201, created.text
    metrics = {"laeq_db": 63.5, "alarm": True, "period": "night"}
    ts_ms = int(time.time() * 1000)

    async def stored() -> bool:
        platform.publisher.publish(
            f"city/{vendor}/{NOISE_DEVICE}/telemetry",
            orjson.dumps({"ts": ts_ms, "metrics": metrics}),
            qos=1,
        ).wait_for_publish(5)
        answer = await platform.http.get(f"/devices/{NOISE_DEVICE}/latest")
        return answer.status_code == 200 and set(answer.json()["metrics"]) == set(metrics)

    await until(stored, 20, "the new kind's reading stored", every_s=0.5)

    await page.evaluate(f"location.hash = '#/device/{NOISE_DEVICE}'")
    view = page.locator(f'.device-page[data-device-id="{NOISE_DEVICE}"]')
    await expect(view).to_have_attribute("data-loaded", "true")
    await expect(view.locator(".facts")).to_contain_text("环境噪声")
    await expect(view.locator("[data-attribute=limit_db] dt")).to_have_text("限值")
    await expect(view.locator("[data-attribute=zone_class] dt")).to_have_text("声环境功能区")
    for name, label, value in (
        ("laeq_db", "等效声级 (dB(A))", "63.5 dB(A)"),
        ("alarm", "超标报警", "是"),
        ("period", "时段", "night"),
    ):
        reading = view.locator(f".reading[data-metric={name}]")
        await expect(reading.locator(".reading-name")).to_have_text(label)
        await expect(reading.locator(".reading-value")).to_have_text(value)
        chart = view.locator(f"figure.chart[data-metric={name}]")
        await expect(chart.locator(".chart-name")).to_have_text(label)
        await expect(chart).to_have_attribute("data-points", "1")
    # The enum's axis is labelled with its values, the flag's with 是/否.
    await expect(view.locator("figure.chart[data-metric=period]")).to_have_attribute(
        "data-levels", re.compile(r"\bnight\b")
    )
    await expect(view.locator("figure.chart[data-metric=alarm]")).to_have_attribute(
        "data-levels", "否 | 是"
    )
    shown = "\n".join(await page.locator(DEVICE_PARTS).all_inner_texts())
    assert not raw_names_in(shown, [*NOISE["metrics"], *NOISE["attributes"], NOISE["kind"]])

    await screenshot(page, "console-device-added-kind")

    await page.locator("button.lang").click()
    await expect(view.locator(".facts")).to_contain_text("Environmental noise")
    await expect(view.locator(".reading[data-metric=laeq_db] .reading-name")).to_have_text(
        "equivalent level (dB(A))"
    )
    await expect(view.locator(".reading[data-metric=alarm] .reading-value")).to_have_text("yes")
    assert loads == []  # picked up by the open page, not by a reload
    tab.assert_clean()


# Pixels of the canvas painted exactly in the districts' colour.
AREA_PIXELS = """canvas => {
  const hex = getComputedStyle(canvas.closest('.map')).getPropertyValue('--map-area').trim();
  const want = [1, 3, 5].map(i => parseInt(hex.slice(i, i + 2), 16));
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] === want[0] && data[i + 1] === want[1] && data[i + 2] === want[2]) n++;
  }
  return n;
}"""


async def test_the_map_draws_the_districts_zooms_and_filters_by_district_and_state(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    city = MODEL.city
    assert city.boundaries is not None  # the shipped city has its districts' boundaries
    drawn = {f["properties"]["id"] for f in city.boundaries["features"]}
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform)
    # Every registered device with a position (other tests of the module may add some).
    registry = await listed(platform)
    placed = [d for d in registry if d["lat"] is not None and d["lon"] is not None]
    map_ = page.locator(".map")
    everyone = str(len(placed))
    await expect(map_).to_have_attribute("data-drawn", everyone)
    await expect(map_).to_have_attribute("data-boundaries", str(len(drawn)))
    canvas = page.locator("canvas.map-canvas")
    area = await canvas.evaluate(AREA_PIXELS)
    assert area > 1000, area  # the districts' areas are painted

    # A district: its devices only, the list naming districts by their titles.
    district = next(d["district"] for d in placed if d["district"] in drawn)
    in_district = sum(d["district"] == district for d in placed)
    await page.locator(".district-filter select").select_option(district)
    await expect(map_).to_have_attribute("data-drawn", str(in_district))
    await expect(page.locator(".district-filter select option:checked")).to_have_text(
        city.districts[district].name_zh
    )
    await page.locator(".district-filter select").select_option("")

    # A state: the devices the legend counts in it.
    await expect(map_).to_have_attribute("data-drawn", everyone)
    offline = await map_.get_attribute("data-offline")
    assert offline and int(offline) > 0
    await page.locator(".state-filter select").select_option("offline")
    await expect(map_).to_have_attribute("data-drawn", offline)
    await expect(map_).to_have_attribute("data-state", "offline")
    await page.locator(".state-filter select").select_option("")
    await expect(map_).to_have_attribute("data-drawn", everyone)

    # The wheel zooms in.
    await expect(map_).to_have_attribute("data-zoom", "1.00")
    box = await canvas.bounding_box()
    assert box
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    await page.mouse.wheel(0, -400)
    await expect(map_).not_to_have_attribute("data-zoom", "1.00")
    await page.locator("button.lang").click()
    await page.locator(".district-filter select").select_option(district)
    await expect(page.locator(".district-filter select option:checked")).to_have_text(
        city.districts[district].name_en
    )
    tab.assert_clean()


async def test_the_map_folds_nearby_devices_into_counted_cells(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform)
    groups = await page.evaluate(
        """async () => {
          const { cluster } = await import('/console/map.js');
          const devices = [];
          for (let i = 0; i < 1000; i++) devices.push({ id: `a${i}`, lon: 114.01 + (i % 10) * 1e-4, lat: 33.01, s: i < 700 ? 'online' : 'offline' });
          for (let i = 0; i < 5; i++) devices.push({ id: `b${i}`, lon: 114.51, lat: 32.51, s: 'offline' });
          const cell = (d) => `${Math.floor(d.lon * 10)}:${Math.floor(d.lat * 10)}`;
          return cluster(devices, cell, (d) => d.s).map((g) => ({ n: g.devices.length, state: g.state, lon: g.lon }))
            .sort((a, b) => b.n - a.n);
        }"""
    )
    assert [(g["n"], g["state"]) for g in groups] == [(1000, "online"), (5, "offline")]
    assert abs(groups[0]["lon"] - 114.01045) < 1e-9  # the cell's devices' mean
    tab.assert_clean()


GAP_DEVICE = "gap-console-0001"


async def test_a_chart_shows_the_rules_limit_a_tooltip_and_a_silence_as_a_gap(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    manhole = platform.alerting_manhole()
    await platform.register_manhole(GAP_DEVICE)
    now_ms = int(time.time() * 1000)
    # Two readings a minute apart, then half an hour of silence, then one more.
    sent = [(now_ms - 40 * 60_000, 3.0), (now_ms - 39 * 60_000, 4.0), (now_ms - 5 * 60_000, 5.0)]

    async def stored() -> bool:
        # Sent again until stored: the ingest takes the new device at its next registry look.
        for ts_ms, tilt in sent:
            platform.publisher.publish(
                f"city/{manhole.vendor}/{GAP_DEVICE}/telemetry",
                orjson.dumps({"ts": ts_ms, "metrics": {"tilt_deg": tilt, "cover_open": False}}),
                qos=1,
            ).wait_for_publish(5)
        answer = await platform.http.get(
            f"/devices/{GAP_DEVICE}/readings", params={"metric": "tilt_deg"}
        )
        return answer.status_code == 200 and len(answer.json()["points"]) == len(sent)

    await until(stored, 20, "the three readings stored", every_s=0.5)
    tab = await open_tab()
    page = tab.page
    await sign_in(tab, platform, f"/#/device/{GAP_DEVICE}")
    view = page.locator(f'.device-page[data-device-id="{GAP_DEVICE}"]')
    await expect(view).to_have_attribute("data-loaded", "true")
    chart = view.locator("figure.chart[data-metric=tilt_deg]")
    await expect(chart).to_have_attribute("data-points", "3")
    await expect(chart).to_have_attribute("data-gaps", "1")
    # manhole_cover_open: "cover_open or tilt_deg > 15", drawn as its line.
    await expect(chart).to_have_attribute("data-limits", ">15")
    flag = view.locator("figure.chart[data-metric=cover_open]")
    await expect(flag).to_have_attribute("data-gaps", "1")
    await expect(flag).to_have_attribute("data-limits", "")

    # Hovering the chart's last stretch shows the time and value of the nearest reading.
    title = MODEL.kinds["manhole"].metric("tilt_deg").title_zh
    await hover_until_tip(page, chart, re.compile(rf"{title}.*: 5(\.0)?°"))
    tab.assert_clean()


async def hover_until_tip(page: Any, chart: Any, tip: re.Pattern[str], turns: int = 10) -> None:
    """Point at the chart's last stretch until its tooltip shows ``tip``. A pointer moved once
    can miss: the page may still move under it (the header growing its tools, the chart its
    first draw), and a tooltip appears only on a move over the drawn chart. Counted in turns,
    each waiting for the tip a while before pointing again."""
    canvas = chart.locator("canvas")
    for turn in range(turns):
        # In view whatever the header's height (its rooms and tools may wrap it to two lines).
        await canvas.scroll_into_view_if_needed()
        box = await canvas.bounding_box()
        assert box
        await page.mouse.move(box["x"] + 2, box["y"] + 2)  # off the lines, so the next is a move
        await page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] / 2)
        try:
            await expect(chart).to_have_attribute("data-tip", tip, timeout=3000)
            return
        except AssertionError:
            if turn == turns - 1:
                raise


async def test_every_room_in_both_languages_shows_no_raw_kind_or_metric_name(
    platform: ConsolePlatform, open_tab: Any
) -> None:
    """Every page an administrator opens (dead letters aside: their reasons name the field a
    vendor must fix), in Chinese and in English: kinds and metrics by their titles only."""
    devices = await listed(platform)
    manhole = platform.alerting_manhole()
    rooms = {
        "#/": ".map:not([data-drawn='0'])",
        "#/devices": ".registry-table[data-loaded=true]",
        "#/workorders": ".board[data-loaded=true]",
        "#/screen": ".screen[data-ready=true]",
        "#/vendors": ".vendors-page[data-loaded=true]",
        "#/silences": ".silences-page[data-loaded=true]",
        "#/people": ".people-page[data-loaded=true]",
        "#/catalogue": ".catalogue-page[data-loaded=true]",
        "#/parking": ".parking-page[data-loaded=true]",
        "#/audit": ".audit-page[data-loaded=true]",
        f"#/device/{manhole.device_id}": ".device-page[data-loaded=true]",
        f"#/district/{manhole.district}": ".district-page [data-loaded=true]",
    }
    names = sorted({m.name for k in MODEL.kinds.values() for m in k.metrics} | set(MODEL.kinds))
    # In English a kind's id may be a word of its title (gas in "Town gas"): not a raw name there.
    titles_en = " ".join(
        [k.title_en for k in MODEL.kinds.values()]
        + [m.title_en for k in MODEL.kinds.values() for m in k.metrics]
    ).lower()
    words_en = set(re.findall(r"[a-z0-9_]+", titles_en))
    tab = await open_tab(viewport=(1920, 1080))
    page = tab.page
    await sign_in(tab, platform)
    for lang in ("zh", "en"):
        if lang == "en":
            await page.locator("button.lang").click()
        for hash_, ready in rooms.items():
            await page.evaluate(f"location.hash = {hash_!r}")
            await expect(page.locator(ready).first).to_be_attached()
            await expect(page.locator("html")).to_have_attribute(
                "lang", "zh-CN" if lang == "zh" else "en"
            )
            text = await page.evaluate(MAIN_TEXT_BUT_IDS)
            for device in devices:  # a device's id may hold its kind's id, as it should
                text = text.replace(device["id"], "")
            found = raw_names_in(text, [n for n in names if lang == "zh" or n not in words_en])
            where = [
                text[max(0, m.start() - 40) : m.end() + 20]
                for n in found
                for m in re.finditer(n, text)
            ]
            assert not found, (lang, hash_, found, where[:3])
    tab.assert_clean()
