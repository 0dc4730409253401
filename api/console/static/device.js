// One device: what the registry knows, its latest values, its open alerts, its alerts of
// 30 days (history.js) and charts of its recent readings, kept live by the stream's
// `reading` events. Metrics and attributes are shown by their titles (with units) from the
// reference data, in the model's order. Whoever may change the registry edits the device
// here (PATCH), decommissions it (DELETE) and brings it back into service.

import { AlertList } from "./alerts.js";
import { h, focusOf, refocus } from "./dom.js";
import { draftOf, keepDevice, mayWrite, patchOf, registryFields } from "./device_form.js";
import { SeriesChart } from "./chart.js";
import { AlertHistory, HISTORY_DAYS } from "./history.js";

// Range → how the API is asked: raw points for the last hour, buckets beyond.
const RANGES = [
  { id: "1h", ms: 3600_000, every: null, everyMs: 0 },
  { id: "24h", ms: 86_400_000, every: "10m", everyMs: 600_000 },
  { id: "7d", ms: 7 * 86_400_000, every: "1h", everyMs: 3600_000 },
];

export class DeviceView {
  constructor(app, deviceId) {
    this.app = app;
    this.id = deviceId;
    this.device = null;
    this.latest = null;
    this.range = RANGES[0];
    this.charts = new Map(); // metric → SeriesChart
    this.limits = null; // metric → the rules' fixed limits on it, once read
    this.error = null;
    this.draft = null; // the edit form's inputs while it is open
    this.formError = ""; // the API's refusal of the form's change
    this.actionError = ""; // the API's refusal of a decommission or a recommission
    this.saving = false; // a change of the device under way
    this.confirming = false; // Decommission pressed once: the next press decommissions
    this.alerts = new AlertList({ i18n: app.i18n, onAck: (a, b) => app.acknowledge(a, b), empty: "alerts.empty" });
    this.history = new AlertHistory(app, { device_id: deviceId });
    this.el = h("div", { class: "device-page", dataset: { deviceId } });
  }

  async load() {
    const api = this.app.api;
    const path = `/devices/${encodeURIComponent(this.id)}`;
    try {
      [this.device, this.latest] = await Promise.all([api.get(path), api.get(`${path}/latest`)]);
    } catch (error) {
      this.error = error.status === 404 ? this.app.i18n.t("device.notfound", { id: this.id }) : this.app.describe(error);
      this.render();
      return;
    }
    this.buildCharts();
    this.render();
    await Promise.all([this.loadSeries(), this.loadLimits(), this.history.load()]);
  }

  /** The fixed limits of the rules on this device's kind, drawn on its charts. */
  async loadLimits() {
    let rules;
    try {
      rules = await this.app.api.get("/rules", { kind: this.device.kind, limit: 500 });
    } catch {
      return; // the charts stay without their limits; the rules page says why
    }
    this.limits = new Map();
    for (const rule of rules.items) {
      for (const l of rule.thresholds ?? []) {
        const list = this.limits.get(l.metric) ?? [];
        list.push({ op: l.op, value: l.value, severity: rule.severity, rule: rule.id });
        this.limits.set(l.metric, list);
      }
    }
    for (const [name, chart] of this.charts) chart.setLimits(this.limits.get(name) ?? []);
  }

  /** The page is left: its charts let go of their canvases. */
  destroy() {
    for (const chart of this.charts.values()) chart.close();
  }

  /** The metrics charted: the kind's, in its order; while the kind is unknown, those reported. */
  metricNames() {
    const kind = this.app.catalogue.kind(this.device.kind);
    const names = kind ? kind.metrics.map((m) => m.name) : [];
    for (const name of Object.keys(this.latest?.metrics ?? {})) if (!names.includes(name)) names.push(name);
    return names;
  }

  /** One chart per metric, kept when the metric was charted already. */
  buildCharts() {
    const old = this.charts;
    this.charts = new Map(
      this.metricNames().map((name) => [name, old.get(name) ?? new SeriesChart(this.device.kind, name, this.app.i18n)]),
    );
    for (const [name, chart] of this.charts) if (!old.has(name)) chart.limits = this.limits?.get(name) ?? [];
    return this.charts.size !== old.size || [...this.charts.keys()].some((name) => !old.has(name));
  }

  /** The reference data changed (a kind was added or changed): new metrics get their charts. */
  catalogueChanged() {
    if (this.device && this.buildCharts()) this.loadSeries();
  }

  async loadSeries() {
    const range = this.range;
    const start = new Date(Date.now() - range.ms).toISOString();
    let series;
    try {
      series = await this.app.api.get(`/devices/${encodeURIComponent(this.id)}/readings`, {
        start,
        every: range.every ?? undefined,
        limit: 5000,
      });
    } catch (error) {
      this.app.notify(this.app.describe(error));
      return;
    }
    if (range !== this.range) return; // another range was chosen meanwhile
    // Points come every report interval, or every bucket when that is longer.
    const reportMs = (this.app.catalogue.kind(this.device.kind)?.report_interval_s ?? 0) * 1000;
    const stepMs = reportMs ? Math.max(reportMs, range.everyMs) : 0;
    for (const [name, chart] of this.charts) {
      const points = [];
      for (const p of series.points) if (name in p.values) points.push({ t: Date.parse(p.ts), v: p.values[name] });
      chart.set(points, range.ms, stepMs);
    }
    this.el.dataset.loaded = "true";
  }

  /** A live reading of this device (stream event `reading`). */
  reading(reading) {
    if (reading.device_id !== this.id || !this.latest) return;
    for (const [name, value] of Object.entries(reading.metrics)) {
      this.latest.metrics[name] = { value, ts: reading.ts };
      const chart = this.charts.get(name);
      if (chart) chart.add(reading.ts_ms, value);
      else this.app.catalogue.metric(this.device.kind, name); // unknown here: look again
    }
    this.latest.ts = reading.ts;
    this.renderLatest();
  }

  alertsChanged(event) {
    if (event) this.history.upsert(event);
    this.alerts.render([...this.app.alerts.values()].filter((a) => a.device_id === this.id));
  }

  render() {
    const { i18n } = this.app;
    const t = (key, params) => i18n.t(key, params);
    const back = h("a", { href: "#/", class: "back" }, t("device.back"));
    if (this.error) {
      this.el.replaceChildren(back, h("p", { class: "error" }, this.error));
      return;
    }
    if (!this.device) {
      this.el.replaceChildren(back);
      return;
    }
    const focused = focusOf(this.el);
    const d = this.device;
    const state = this.app.alertingDevices().has(d.id) ? "alerting" : d.status;
    const fact = (label, value, attribute) => h("div", { dataset: attribute ? { attribute } : null }, h("dt", {}, label), h("dd", {}, value));
    this.latestEl = h("div", { class: "latest" });
    this.el.replaceChildren(
      back,
      h(
        "section",
        { class: "panel device-head" },
        h("h2", {}, h("span", { class: "device-id" }, d.id), " ", h("span", { class: ["chip", `state-${state}`] }, t(`status.${state}`))),
        h(
          "dl",
          { class: "facts" },
          fact(t("device.kind"), i18n.kind(d.kind)),
          h("div", { dataset: { fact: "district" } }, h("dt", {}, t("device.district")), h("dd", {}, h("a", { href: `#/district/${encodeURIComponent(d.district)}` }, i18n.district(d.district)))),
          fact(t("device.vendor"), d.vendor),
          h("div", { dataset: { fact: "link" } }, h("dt", {}, t("device.link")), h("dd", {}, i18n.link(d.link))),
          fact(t("device.address"), d.address || t("kpi.none")),
          fact(t("device.last_seen"), i18n.time(d.last_seen)),
          fact(t("device.battery"), d.battery_pct === null ? t("kpi.none") : `${i18n.number(d.battery_pct, 0)}%`),
          this.attributeNames().map((name) => fact(i18n.attribute(d.kind, name), attributeValue(i18n, d.attributes[name]), name)),
          d.decommissioned_at ? h("div", { dataset: { fact: "decommissioned_at" } }, h("dt", {}, t("device.decommissioned_at")), h("dd", {}, i18n.time(d.decommissioned_at))) : null,
        ),
        d.decommissioned_at ? h("p", { class: "hint decommissioned-note" }, t("device.decommissioned.hint")) : null,
        mayWrite(this.app.session) ? this.actions() : null,
      ),
      ...(this.draft ? [this.editForm()] : []), // replaceChildren would show a null as text
      h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", {}, t("device.latest")), h("span", { class: "live-dot" }, t("device.live"))), this.latestEl),
      h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", {}, t("device.alerts"))), this.alerts.el),
      h(
        "section",
        { class: "panel", dataset: { panel: "history" } },
        h("div", { class: "panel-head" }, h("h2", {}, t("device.history")), h("span", { class: "hint" }, t("history.window", { days: HISTORY_DAYS }))),
        this.history.el,
      ),
      h(
        "section",
        { class: "panel" },
        h(
          "div",
          { class: "panel-head" },
          h("h2", {}, t("device.charts")),
          h(
            "div",
            { class: "ranges", role: "group" },
            RANGES.map((range) =>
              h(
                "button",
                {
                  type: "button",
                  "aria-pressed": String(range === this.range),
                  dataset: { range: range.id },
                  on: { click: () => this.choose(range) },
                },
                t(`device.range.${range.id}`),
              ),
            ),
          ),
        ),
        h("div", { class: "charts" }, [...this.charts.values()].map((c) => c.el)),
      ),
    );
    for (const chart of this.charts.values()) chart.render();
    this.renderLatest();
    this.history.render();
    this.alertsChanged();
    refocus(this.el, focused);
  }

  // -- changing the device (WRITER_ROLES) ---------------------------------------------------

  actions() {
    const t = (key) => this.app.i18n.t(key);
    const button = (action, label, onClick, extra = {}) =>
      h("button", { type: "button", class: action, dataset: { action }, disabled: this.saving, on: { click: onClick }, ...extra }, t(label));
    return h(
      "div",
      { class: "device-actions" },
      this.draft ? null : button("edit", "device.edit", () => this.openForm()),
      this.device.decommissioned_at
        ? button("recommission", "device.recommission", () => this.recommission())
        : button("decommission", this.confirming ? "device.decommission.confirm" : "device.decommission", () => this.decommission(), {
            class: ["decommission", this.confirming ? "confirming" : ""],
          }),
      this.actionError ? h("p", { class: "error action-error", role: "alert" }, this.actionError) : null,
    );
  }

  openForm() {
    this.draft = draftOf(this.device);
    this.formError = "";
    this.confirming = false;
    this.render();
    this.el.querySelector("#dev-address")?.focus();
  }

  editForm() {
    const t = (key) => this.app.i18n.t(key);
    const kind = this.app.catalogue.kind(this.device.kind);
    return h(
      "section",
      { class: "panel device-edit", dataset: { panel: "edit" } },
      h("div", { class: "panel-head" }, h("h2", {}, t("device.edit.title"))),
      h(
        "form",
        { class: "device-form", novalidate: true, on: { submit: (e) => this.save(e) } },
        h("div", { class: "device-fields" }, registryFields(this.app, this.draft, kind, "dev")),
        h("p", { class: "error form-error", role: "alert", hidden: !this.formError }, this.formError),
        h(
          "div",
          { class: "form-buttons" },
          h("button", { type: "submit", class: "primary save", disabled: this.saving }, t(this.saving ? "device.saving" : "device.save")),
          h("button", { type: "button", class: "cancel", disabled: this.saving, on: { click: () => ((this.draft = null), this.render()) } }, t("device.cancel")),
        ),
      ),
    );
  }

  /** Send what the form changed (nothing changed: the form just closes). */
  async save(event) {
    event.preventDefault();
    const patch = patchOf(this.device, this.draft, this.app.catalogue.kind(this.device.kind));
    if (!Object.keys(patch).length) {
      this.draft = null;
      this.render();
      return;
    }
    const path = `/devices/${encodeURIComponent(this.id)}`;
    if (await this.change(() => this.app.api.patch(path, patch), (error) => (this.formError = error))) this.draft = null;
    this.render();
  }

  /** Take the device out of service: the first press asks, the second decommissions. */
  async decommission() {
    if (!this.confirming) {
      this.confirming = true;
      this.render();
      return;
    }
    this.confirming = false;
    await this.change(() => this.app.api.delete(`/devices/${encodeURIComponent(this.id)}`));
    this.render();
  }

  async recommission() {
    await this.change(() => this.app.api.patch(`/devices/${encodeURIComponent(this.id)}`, { decommissioned: false }));
    this.render();
  }

  /** One change of the device; the page shows the API's answer. False when refused (its
   * words go to `onError`, else beside the buttons). */
  async change(request, onError = (error) => (this.actionError = error)) {
    if (this.saving) return false;
    this.saving = true;
    this.formError = "";
    this.actionError = "";
    this.render();
    try {
      this.device = await request();
      keepDevice(this.app, this.device);
      return true;
    } catch (error) {
      onError(this.app.describe(error));
      return false;
    } finally {
      this.saving = false;
    }
  }

  /** The device's registry attributes: the kind's in its order, then any other it carries. */
  attributeNames() {
    const carried = Object.keys(this.device?.attributes ?? {});
    const kind = this.app.catalogue.kind(this.device?.kind);
    const names = (kind?.attributes ?? []).map((a) => a.name).filter((name) => carried.includes(name));
    return [...names, ...carried.filter((name) => !names.includes(name))];
  }

  renderLatest() {
    if (!this.latestEl) return;
    const { i18n, catalogue } = this.app;
    const latest = this.latest?.metrics ?? {};
    const names = this.metricNames().filter((name) => name in latest);
    if (!names.length) {
      this.latestEl.replaceChildren(h("p", { class: "hint" }, i18n.t("device.latest.none")));
      return;
    }
    const kind = this.device.kind;
    this.latestEl.replaceChildren(
      ...names.map((name) => {
        const { value, ts } = latest[name];
        return h(
          "div",
          { class: "reading", dataset: { metric: name } },
          h("span", { class: "reading-name" }, i18n.metric(kind, name)),
          h("span", { class: "reading-value" }, i18n.value(catalogue.metric(kind, name), value)),
          h("time", { datetime: ts }, i18n.time(ts, { seconds: true })),
        );
      }),
    );
  }

  choose(range) {
    if (range === this.range) return;
    this.range = range;
    this.render();
    this.loadSeries();
  }
}

function attributeValue(i18n, value) {
  if (value === null || value === undefined || value === "") return i18n.t("kpi.none");
  return typeof value === "number" ? i18n.number(value, 2) : String(value);
}
