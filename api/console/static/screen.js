// The big screen (大屏, #/screen): 1920×1080, dark, nothing to click. The city's KPIs, the
// map with live alerts, alerts per district and per kind over the last 24 hours, the
// work-order funnel with the SLA rates, devices online by link, and the newest open alerts.
// Built to run for days: every chart is made once and only its data is set again; one
// timer for the clock, one for the 24-hour counts; nothing grows with time.

import * as echarts from "./vendor/echarts.esm.min.js";
import { SEVERITIES, byUrgency } from "./alerts.js";
import { h } from "./dom.js";
import { CityMap } from "./map.js";

const DAY_MS = 86_400_000;
const RECOUNT_MS = 60_000; // the 24-hour counts, looked at again
const TICKER = 8; // the newest open alerts listed
const FUNNEL = ["dispatched", "accepted", "on_site", "resolved", "closed"];
const LINKS = ["mqtt", "http", "chirpstack", "ctwing", "onenet"];

export class ScreenView {
  constructor(app) {
    this.app = app;
    const i18n = app.i18n;
    this.title = h("h1", { class: "screen-title" });
    this.clock = h("time", { class: "screen-clock" });
    this.kpis = h("section", { class: "screen-kpis" });
    this.map = new CityMap({ i18n, onOpen: () => {} }); // a screen is watched, not clicked
    this.boxes = {};
    const panel = (name) => {
      const plot = h("div", { class: "screen-plot" });
      this.boxes[name] = { title: h("h2", {}), plot, chart: null };
      return h("section", { class: ["screen-panel", `screen-${name}`], dataset: { panel: name } }, this.boxes[name].title, plot);
    };
    this.tickerTitle = h("h2", {});
    this.ticker = h("ol", { class: "screen-ticker" });
    this.mapTitle = h("h2", {});
    this.el = h(
      "div",
      { class: "screen", dataset: { ready: "false" } },
      h("header", { class: "screen-head" }, this.title, this.clock),
      this.kpis,
      h("div", { class: "screen-left" }, panel("districts"), panel("kinds")),
      h("section", { class: "screen-panel screen-map" }, this.mapTitle, this.map.el, this.map.legend),
      h("div", { class: "screen-right" }, panel("funnel"), panel("links"), h("section", { class: "screen-panel screen-alerts" }, this.tickerTitle, this.ticker)),
    );
    // A chart keeps the size it was made with: a panel that changes size resizes its chart.
    this.resizer = new ResizeObserver(() => {
      for (const box of Object.values(this.boxes)) if (box.plot.clientHeight) box.chart?.resize();
    });
    for (const box of Object.values(this.boxes)) this.resizer.observe(box.plot);
    this.day = null; // {byDistrict, byKind, total} of the alerts started in the last 24 h
    this.clockTimer = setInterval(() => this.tick(), 1000);
    this.recountTimer = setInterval(() => this.recount(), RECOUNT_MS);
    document.documentElement.classList.add("screen-mode");
    // The big screen sounds critical and major alerts unless this browser switched it off.
    app.alerting.enable();
    this.recount();
  }

  destroy() {
    clearInterval(this.clockTimer);
    clearInterval(this.recountTimer);
    this.resizer.disconnect();
    for (const box of Object.values(this.boxes)) box.chart?.dispose();
    this.map.close();
    document.documentElement.classList.remove("screen-mode");
  }

  /** The alerts started in the last 24 hours, counted per district and per kind. */
  async recount() {
    let alerts;
    try {
      alerts = await this.app.api.all("/alerts", { since: new Date(Date.now() - DAY_MS).toISOString() });
    } catch {
      return; // the counts shown stay; the next look tries again
    }
    const byDistrict = new Map();
    const byKind = new Map();
    for (const a of alerts) {
      byDistrict.set(a.district, (byDistrict.get(a.district) ?? 0) + 1);
      byKind.set(a.kind, (byKind.get(a.kind) ?? 0) + 1);
    }
    this.day = { byDistrict, byKind, total: alerts.length };
    this.el.dataset.dayAlerts = String(alerts.length);
    this.renderCharts();
  }

  tick() {
    this.clock.textContent = this.app.i18n.time(new Date().toISOString(), { seconds: true });
  }

  render() {
    const t = (key, params) => this.app.i18n.t(key, params);
    this.title.textContent = t("screen.title", { city: this.app.i18n.title(this.app.catalogue.city?.name) });
    this.mapTitle.textContent = t("map.title");
    this.tickerTitle.textContent = t("screen.ticker");
    this.boxes.districts.title.textContent = t("screen.districts");
    this.boxes.kinds.title.textContent = t("screen.kinds");
    this.boxes.funnel.title.textContent = t("screen.funnel");
    this.boxes.links.title.textContent = t("screen.links");
    this.tick();
    this.devicesChanged();
    this.alertsChanged();
    this.overviewChanged();
  }

  devicesChanged() {
    this.map.setDevices([...this.app.devices.values()]);
    this.renderCharts();
  }

  alertsChanged(event) {
    this.map.setAlerting(this.app.alertingDevices());
    this.renderTicker();
    // A new alert counts at once; the minute's recount keeps the rest right.
    if (event?.state === "firing" && this.day && !this.seen?.has(event.id)) {
      this.seen ??= new Set();
      this.seen.add(event.id);
      if (this.seen.size > 10_000) this.seen.clear();
      this.day.byDistrict.set(event.district, (this.day.byDistrict.get(event.district) ?? 0) + 1);
      this.day.byKind.set(event.kind, (this.day.byKind.get(event.kind) ?? 0) + 1);
      this.renderCharts();
    }
  }

  overviewChanged() {
    this.renderKpis();
    this.renderCharts();
  }

  renderKpis() {
    const { i18n, overview } = this.app;
    const t = (key, params) => i18n.t(key, params);
    if (!overview) return;
    const counts = Object.values(overview.devices);
    const total = counts.reduce((n, c) => n + c.total, 0);
    const online = counts.reduce((n, c) => n + c.online, 0);
    const k = overview.kpis;
    const rate = (value, target, meets) =>
      value === null ? ["—", "not-due"] : [i18n.percent(value), meets ? "meets" : "misses", t("screen.target", { target: i18n.percent(target) })];
    const tiles = [
      ["online", t("kpi.online"), total ? i18n.percent(online / total) : "—", "", t("kpi.online.sub", { online, total })],
      ["alerts", t("kpi.alerts"), i18n.number(overview.alerts.open, 0), overview.alerts.by_severity.critical ? "misses" : "", SEVERITIES.map((s) => `${t(`severity.${s}`)} ${overview.alerts.by_severity[s] ?? 0}`).join(" · ")],
      ["verify", t("kpi.verify"), ...rate(k.on_time_verification_rate, k.verification_target, k.meets_verification_target)],
      ["closure", t("kpi.closure"), ...rate(k.closure_rate, k.closure_target, k.meets_closure_target)],
    ];
    if (overview.lighting?.is_dark) tiles.splice(1, 0, ["lighting", t("kpi.lighting"), i18n.percent(overview.lighting.rate), "", ""]);
    this.kpis.replaceChildren(
      ...tiles.map(([name, label, value, cls, sub]) =>
        h("article", { class: ["screen-kpi", cls], dataset: { kpi: name } }, h("h3", {}, label), h("p", { class: "screen-kpi-value" }, value), h("p", { class: "screen-kpi-sub" }, sub ?? "")),
      ),
    );
  }

  renderTicker() {
    const { i18n } = this.app;
    const open = [...this.app.alerts.values()].sort(byUrgency).slice(0, TICKER);
    this.ticker.replaceChildren(
      ...open.map((a) => {
        const [primary] = i18n.summary(a.summary);
        return h(
          "li",
          { class: ["screen-alert", `sev-${a.severity}`], dataset: { alertId: a.id } },
          h("span", { class: ["chip", `sev-${a.severity}`] }, i18n.t(`severity.${a.severity}`)),
          h("span", { class: "screen-alert-text" }, primary),
          h("span", { class: "screen-alert-where" }, `${i18n.district(a.district)} · ${i18n.time(a.started_at)}`),
        );
      }),
    );
    this.el.dataset.ticker = String(open.length);
  }

  /** The charts, each made once when its box has a size; then only their data is set. */
  chart(name) {
    const box = this.boxes[name];
    if (!box.chart && box.plot.clientWidth && box.plot.clientHeight) box.chart = echarts.init(box.plot, null, { renderer: "canvas" });
    return box.chart;
  }

  renderCharts() {
    const { i18n } = this.app;
    const style = getComputedStyle(this.el);
    const colour = (name) => style.getPropertyValue(`--${name}`).trim();
    const ink = colour("screen-ink");
    const muted = colour("screen-muted");
    const axis = { axisLabel: { color: muted, fontSize: 13 }, axisLine: { lineStyle: { color: muted } }, splitLine: { lineStyle: { color: colour("screen-grid") } } };
    const bars = (name, entries, label, barColour) => {
      const chart = this.chart(name);
      if (!chart) return;
      const sorted = [...entries].sort((a, b) => a[1] - b[1]).slice(-10);
      chart.setOption({
        animation: false,
        grid: { top: 8, right: 40, bottom: 8, left: 8, containLabel: true },
        xAxis: { type: "value", minInterval: 1, ...axis },
        yAxis: { type: "category", data: sorted.map(([id]) => label(id)), ...axis, axisLabel: { color: ink, fontSize: 14 } },
        series: [{ type: "bar", data: sorted.map(([, n]) => n), itemStyle: { color: barColour }, label: { show: true, position: "right", color: ink, fontSize: 13 } }],
      });
    };
    if (this.day) {
      bars("districts", this.day.byDistrict, (id) => i18n.district(id), colour("major"));
      bars("kinds", this.day.byKind, (id) => i18n.kind(id), colour("warning"));
      this.boxes.districts.plot.dataset.count = String(this.day.total);
    }
    const k = this.app.overview?.kpis;
    const funnel = this.chart("funnel");
    if (k && funnel) {
      // Orders that reached each step: those in it and in every later one.
      const reached = FUNNEL.map((_, i) => FUNNEL.slice(i).reduce((n, s) => n + (k.by_state[s] ?? 0), 0));
      funnel.setOption({
        animation: false,
        series: [
          {
            type: "funnel",
            sort: "none",
            top: 8,
            bottom: 8,
            left: "8%",
            width: "84%",
            minSize: "12%",
            gap: 2,
            label: { color: ink, fontSize: 14, formatter: (p) => `${p.name} ${p.value}` },
            itemStyle: { borderWidth: 0 },
            data: FUNNEL.map((s, i) => ({ name: i18n.t(`wo.${s}`), value: reached[i], itemStyle: { color: colour("accent"), opacity: 1 - i * 0.13 } })),
          },
        ],
      });
      this.boxes.funnel.plot.dataset.created = String(reached[0]);
    }
    const links = this.chart("links");
    if (links) {
      const online = new Map();
      const all = new Map();
      for (const d of this.app.devices.values()) {
        if (d.status === "decommissioned") continue;
        const link = d.link ?? "none";
        all.set(link, (all.get(link) ?? 0) + 1);
        if (d.status === "online") online.set(link, (online.get(link) ?? 0) + 1);
      }
      const shown = [...LINKS.filter((l) => all.has(l)), ...[...all.keys()].filter((l) => !LINKS.includes(l))];
      links.setOption({
        animation: false,
        grid: { top: 24, right: 8, bottom: 8, left: 8, containLabel: true },
        legend: { top: 0, textStyle: { color: muted }, data: [i18n.t("status.online"), i18n.t("screen.registered")] },
        xAxis: { type: "category", data: shown.map((l) => (l === "none" ? i18n.t("status.unknown") : i18n.link(l))), ...axis, axisLabel: { color: ink, fontSize: 12, interval: 0 } },
        yAxis: { type: "value", minInterval: 1, ...axis },
        series: [
          { name: i18n.t("screen.registered"), type: "bar", data: shown.map((l) => all.get(l) ?? 0), itemStyle: { color: colour("screen-grid") }, barGap: "-100%" },
          { name: i18n.t("status.online"), type: "bar", data: shown.map((l) => online.get(l) ?? 0), itemStyle: { color: colour("online") }, label: { show: true, position: "top", color: ink } },
        ],
      });
      this.boxes.links.plot.dataset.links = shown.join(" ");
    }
    this.el.dataset.ready = String(Boolean(this.day && k));
  }
}
