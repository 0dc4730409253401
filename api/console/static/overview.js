// The overview: KPI tiles, the city map and the live alert list.

import { AlertList, SEVERITIES } from "./alerts.js";
import { h } from "./dom.js";
import { CityMap } from "./map.js";

export class OverviewView {
  constructor(app) {
    this.app = app;
    const i18n = app.i18n;
    this.tiles = h("section", { class: "kpis", "aria-label": "KPI" });
    this.map = new CityMap({ i18n, onOpen: (id) => app.openDevice(id) });
    this.alerts = new AlertList({ i18n, onAck: (a, b) => app.acknowledge(a, b), empty: "alerts.empty" });
    this.mapTitle = h("h2", {});
    this.mapHint = h("span", { class: "hint" });
    this.alertsTitle = h("h2", {});
    this.el = h(
      "div",
      { class: "overview" },
      this.tiles,
      h(
        "div",
        { class: "overview-main" },
        h("section", { class: "panel map-panel" }, h("div", { class: "panel-head" }, this.mapTitle, this.map.filter, this.mapHint), this.map.el, this.map.legend),
        h("section", { class: "panel alerts-panel" }, h("div", { class: "panel-head" }, this.alertsTitle), this.alerts.el),
      ),
    );
  }

  render() {
    const t = (key, params) => this.app.i18n.t(key, params);
    this.mapTitle.textContent = t("map.title");
    this.mapHint.textContent = t("map.hint");
    this.alertsTitle.textContent = t("alerts.title");
    this.renderTiles();
    this.devicesChanged();
    this.alertsChanged();
  }

  devicesChanged() {
    this.map.setDevices([...this.app.devices.values()]);
  }

  alertsChanged() {
    this.map.setAlerting(this.app.alertingDevices());
    this.alerts.render([...this.app.alerts.values()]);
  }

  overviewChanged() {
    this.renderTiles();
  }

  renderTiles() {
    const { i18n, overview, overviewError } = this.app;
    if (overviewError) {
      this.tiles.replaceChildren(h("p", { class: "tiles-error" }, overviewError));
      return;
    }
    if (!overview) {
      this.tiles.replaceChildren();
      return;
    }
    const t = (key, params) => i18n.t(key, params);
    const counts = Object.values(overview.devices);
    const total = counts.reduce((n, c) => n + c.total, 0);
    const online = counts.reduce((n, c) => n + c.online, 0);
    const tiles = [
      tile("online", t("kpi.online"), total ? i18n.percent(online / total) : t("kpi.none"), t("kpi.online.sub", { online, total })),
    ];
    const lighting = overview.lighting;
    if (lighting) {
      tiles.push(
        lighting.is_dark
          ? tile("lighting", t("kpi.lighting"), i18n.percent(lighting.rate), t("kpi.lighting.sub", { on: lighting.on, should: lighting.should_be_on }))
          : tile("lighting", t("kpi.lighting"), t("kpi.lighting.day"), t("kpi.lighting.daysub", { sunset: i18n.time(lighting.sunset) })),
      );
    }
    const alerts = overview.alerts;
    tiles.push(
      tile(
        "alerts",
        t("kpi.alerts"),
        i18n.number(alerts.open, 0),
        h(
          "span",
          { class: "chips" },
          SEVERITIES.map((sev) =>
            h("span", { class: ["chip", `sev-${sev}`], dataset: { severity: sev, count: String(alerts.by_severity[sev] ?? 0) } }, `${t(`severity.${sev}`)} ${alerts.by_severity[sev] ?? 0}`),
          ),
          alerts.pending ? h("span", { class: "chip pending" }, t("kpi.alerts.pending", { n: alerts.pending })) : null,
        ),
      ),
    );
    const k = overview.kpis;
    tiles.push(
      slaTile("verify", k.on_time_verification_rate, k.verification_target, k.meets_verification_target, { n: k.verified_on_time, due: k.verification_due, created: k.created }, i18n),
      slaTile("closure", k.closure_rate, k.closure_target, k.meets_closure_target, { n: k.closed, due: k.closure_due, created: k.created, onTime: i18n.percent(k.on_time_closure_rate) }, i18n),
    );
    this.tiles.replaceChildren(...tiles);
  }
}

function tile(name, label, value, sub, cls) {
  return h(
    "article",
    { class: ["tile", cls], dataset: { kpi: name } },
    h("h3", {}, label),
    h("p", { class: "tile-value" }, value),
    h("div", { class: "tile-sub" }, sub),
  );
}

// Rates are over the orders due (CJJ/T 106): none due is a neutral "—", never a missed 0%.
function slaTile(name, rate, target, meets, counts, i18n) {
  const params = { ...counts, target: i18n.percent(target) };
  const label = i18n.t(`kpi.${name}`);
  const el = counts.due
    ? tile(name, label, i18n.percent(rate), i18n.t(`kpi.${name}.sub`, params), meets ? "meets" : "misses")
    : tile(name, label, i18n.t("kpi.none"), i18n.t("kpi.notdue", params), "not-due");
  Object.assign(el.dataset, { due: String(counts.due), count: String(counts.n) });
  return el;
}
