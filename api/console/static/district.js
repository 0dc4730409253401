// One district (#/district/{id}): its devices by status, a link to them in the registry,
// and its alerts of the last 30 days in every state, newest first.

import { h } from "./dom.js";
import { AlertHistory, HISTORY_DAYS } from "./history.js";

const STATUSES = ["online", "offline", "unknown", "decommissioned"];

export class DistrictView {
  constructor(app, districtId) {
    this.app = app;
    this.id = districtId;
    this.history = new AlertHistory(app, { district: districtId });
    this.el = h("div", { class: "district-page", dataset: { district: districtId } });
  }

  load() {
    return this.history.load();
  }

  devicesChanged() {
    this.render();
  }

  alertsChanged(event) {
    if (event) this.history.upsert(event);
  }

  render() {
    const { i18n } = this.app;
    const t = (key, params) => i18n.t(key, params);
    const counts = new Map(STATUSES.map((status) => [status, 0]));
    let total = 0;
    for (const device of this.app.devices.values()) {
      if (device.district !== this.id) continue;
      total += 1;
      counts.set(device.status, (counts.get(device.status) ?? 0) + 1);
    }
    this.el.replaceChildren(
      h("a", { href: "#/", class: "back" }, t("device.back")),
      h(
        "section",
        { class: "panel" },
        h("div", { class: "panel-head" }, h("h2", {}, i18n.district(this.id)), h("a", { href: `#/devices?district=${encodeURIComponent(this.id)}`, class: "to-registry" }, t("district.registry"))),
        h(
          "ul",
          { class: "legend", dataset: { devices: String(total) } },
          h("li", {}, t("district.devices", { n: total })),
          STATUSES.map((status) => h("li", { dataset: { status } }, h("span", { class: ["swatch", status] }), `${t(`status.${status}`)} ${counts.get(status)}`)),
        ),
      ),
      h(
        "section",
        { class: "panel", dataset: { panel: "history" } },
        h("div", { class: "panel-head" }, h("h2", {}, t("district.history")), h("span", { class: "hint" }, t("history.window", { days: HISTORY_DAYS }))),
        this.history.el,
      ),
    );
    this.history.render();
  }
}
