// The parking room (#/parking): free, occupied and unknown spaces now, overall, per district
// and per lot (GET /api/v1/parking/availability), with the share free and the time the API
// counted them; a district filter (the API's `district`). Asked again every 30 seconds while
// the room is open; the timer stops when the room is left (destroy).

import { focusOf, h, latestAnswer, refocus, replace } from "./dom.js";

/** Roles the API lets read parking (allow(...) in api/routes/parking.py); a department key
 * needs the parking kind granted, else the API's 403 is shown in the room. */
export const PARKING_ROLES = new Set(["admin", "operator", "field", "department"]);
const REFRESH_MS = 30_000;
const COUNTS = ["total", "free", "occupied", "unknown"];

export class ParkingView {
  constructor(app) {
    this.app = app;
    this.data = null; // the API's last answer
    this.loaded = false;
    this.busy = false;
    this.error = "";
    this.district = ""; // "" = every district the key may see
    this.shownDistrict = ""; // the filter the answer shown was asked with
    this.asked = 0; // answers to an earlier question (filter changed, room left) are dropped
    this.el = h("div", { class: "parking-page" });
    this.timer = setInterval(() => this.fetch(), REFRESH_MS);
  }

  destroy() {
    clearInterval(this.timer);
    this.timer = null;
    this.asked += 1;
  }

  load() {
    return this.fetch();
  }

  async fetch() {
    if (this.timer === null) return; // the room was left
    const district = this.district;
    await latestAnswer(
      this,
      () => this.app.api.get("/parking/availability", district ? { district } : {}),
      (data) => {
        this.data = data;
        this.shownDistrict = district;
        this.error = "";
        this.loaded = true;
      },
      (error) => (this.error = this.app.describe(error)),
    );
  }

  catalogueChanged() {
    this.render();
  }

  render() {
    const t = (key, params) => this.app.i18n.t(key, params);
    const { data } = this;
    const focused = focusOf(this.el); // the district list keeps its focus across a refresh
    this.el.dataset.busy = String(this.busy);
    replace(
      this.el,
      h("div", { class: "room-head" }, h("h2", {}, t("parking.title")), h("p", { class: "hint" }, t("parking.hint"))),
      this.filterForm(),
      h("p", { class: "error form-error", role: "alert", hidden: !this.error }, this.error),
      !this.loaded && !this.error ? h("p", { class: "hint" }, t("parking.loading")) : null,
      data && !data.overall.total ? h("p", { class: "empty parking-empty" }, t(this.shownDistrict ? "parking.empty.district" : "parking.empty")) : null,
      data && data.overall.total ? this.summary(data) : null,
      data && data.districts.length ? this.districtTable(data.districts) : null,
      data && data.lots.length ? this.lotTable(data.lots) : null,
    );
    refocus(this.el, focused);
    // "true" once the API's first answer is drawn.
    this.el.dataset.loaded = String(this.loaded);
  }

  filterForm() {
    const t = (key, params) => this.app.i18n.t(key, params);
    const ids = Object.keys(this.app.catalogue.data.districts);
    const select = h(
      "select",
      {
        id: "parking-district",
        on: {
          change: (e) => {
            this.district = e.currentTarget.value;
            this.fetch();
          },
        },
      },
      h("option", { value: "" }, t("parking.districts.all")),
      [...new Set([...ids, this.district].filter(Boolean))].map((id) => h("option", { value: id }, this.app.i18n.district(id))),
    );
    select.value = this.district;
    return h("form", { class: "room-filters", on: { submit: (e) => e.preventDefault() } }, h("label", { for: "parking-district" }, t("parking.district")), select);
  }

  summary(data) {
    const { i18n } = this.app;
    const t = (key, params) => i18n.t(key, params);
    const all = data.overall;
    return h(
      "section",
      { class: "parking-summary", dataset: counts(all) },
      h("p", { class: "parking-share" }, h("span", { class: "parking-share-value" }, share(all, i18n)), " ", t("parking.share.free")),
      h("meter", { min: 0, max: all.total, value: all.free, "aria-label": t("parking.share.free") }),
      h("p", { class: "parking-counts" }, t("parking.counts", all)),
      h("p", { class: "hint parking-at" }, t("parking.at"), " ", h("time", { datetime: data.at }, i18n.time(data.at, { seconds: true }))),
    );
  }

  districtTable(districts) {
    const { i18n } = this.app;
    const t = (key, params) => i18n.t(key, params);
    return h(
      "section",
      { class: "panel" },
      h("h3", {}, t("parking.by.district")),
      h(
        "table",
        { class: "registry parking-districts" },
        head(t, ["district", "lots", ...COUNTS, "share"]),
        h(
          "tbody",
          {},
          districts.map((d) =>
            h(
              "tr",
              { dataset: { district: d.district, ...counts(d) } },
              h("td", {}, h("a", { href: `#/district/${encodeURIComponent(d.district)}` }, i18n.district(d.district))),
              h("td", { class: "num" }, i18n.number(d.lots, 0)),
              cells(d, i18n),
            ),
          ),
        ),
      ),
    );
  }

  lotTable(lots) {
    const { i18n } = this.app;
    const t = (key, params) => i18n.t(key, params);
    return h(
      "section",
      { class: "panel" },
      h("h3", {}, t("parking.by.lot")),
      h(
        "table",
        { class: "registry parking-lots" },
        head(t, ["lot", "district", ...COUNTS, "share"]),
        h(
          "tbody",
          {},
          lots.map((lot) =>
            h(
              "tr",
              { dataset: { lot: lot.lot_id ?? "", district: lot.district, ...counts(lot) } },
              h("td", {}, lot.lot_id ? h("code", { class: "raw-id" }, lot.lot_id) : t("parking.lot.none")),
              h("td", {}, i18n.district(lot.district)),
              cells(lot, i18n),
            ),
          ),
        ),
      ),
    );
  }
}

/** The API's counts as data attributes (data-total, data-free, …): what tests compare. */
function counts(spaces) {
  return Object.fromEntries(COUNTS.map((c) => [c, String(spaces[c])]));
}

/** Free spaces over all spaces with a sensor; "—" when there are none. */
function share(spaces, i18n) {
  return spaces.total ? i18n.percent(spaces.free / spaces.total) : i18n.t("kpi.none");
}

function head(t, columns) {
  const text = new Set(["district", "lot"]);
  return h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: text.has(c) ? null : "num" }, t(`parking.col.${c}`)))));
}

function cells(spaces, i18n) {
  return [
    ...COUNTS.map((c) => h("td", { class: ["num", `parking-${c}`] }, i18n.number(spaces[c], 0))),
    h("td", { class: "num parking-share-cell" }, share(spaces, i18n), " ", h("meter", { min: 0, max: spaces.total || 1, value: spaces.free, "aria-hidden": "true" })),
  ];
}
