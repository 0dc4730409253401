// An alert history: the alerts of a device or a district that started in the last 30 days,
// in every state, newest first (GET /alerts?device_id=…|district=…&since=…), a page at a
// time; alert events arriving live are changed in place or added at the top.

import { alertRow } from "./alerts.js";
import { h, replace } from "./dom.js";

export const HISTORY_DAYS = 30;
const PAGE = 200;
const DAY_MS = 86_400_000;

const newestFirst = (a, b) => Date.parse(b.started_at) - Date.parse(a.started_at);

export class AlertHistory {
  /** `filter`: what GET /alerts is asked with, {device_id} or {district}. */
  constructor(app, filter) {
    this.app = app;
    this.filter = filter;
    this.since = new Date(Date.now() - HISTORY_DAYS * DAY_MS).toISOString();
    this.items = [];
    this.cursor = null;
    this.loaded = false;
    this.loading = false;
    this.error = null;
    this.el = h("div", { class: "alert-history" });
  }

  /** The first page, or (`more`) the next one. */
  async load(more = false) {
    if (this.loading) return;
    this.loading = true;
    try {
      const page = await this.app.api.get("/alerts", {
        ...this.filter,
        since: this.since,
        limit: PAGE,
        cursor: more ? this.cursor : undefined,
      });
      const known = new Set(more ? this.items.map((a) => a.id) : []);
      this.items = [...(more ? this.items : []), ...page.items.filter((a) => !known.has(a.id))];
      this.cursor = page.next_cursor;
      this.loaded = true;
      this.error = null;
    } catch (error) {
      this.error = this.app.describe(error);
    } finally {
      this.loading = false;
    }
    this.render();
  }

  /** An alert event (live, or after an acknowledgement): shown when it belongs here. */
  upsert(alert) {
    if (!this.loaded || !Object.entries(this.filter).every(([name, value]) => alert[name] === value)) return;
    const at = this.items.findIndex((a) => a.id === alert.id);
    if (at >= 0) this.items[at] = alert;
    else if (Date.parse(alert.started_at) >= Date.parse(this.since)) this.items.push(alert);
    else return;
    this.items.sort(newestFirst);
    this.render();
  }

  render() {
    const { i18n } = this.app;
    const t = (key, params) => i18n.t(key, params);
    this.el.dataset.loaded = String(this.loaded);
    this.el.dataset.count = String(this.items.length);
    if (this.error) {
      this.el.replaceChildren(h("p", { class: "error" }, this.error));
      return;
    }
    if (!this.loaded) {
      this.el.replaceChildren(h("p", { class: "hint" }, t("history.loading")));
      return;
    }
    const rows = this.items.map((alert) => {
      // A record, not the open alert itself: acknowledging stays with the open alerts' list,
      // and the row answers to its own attribute (an open alert's row is found by data-alert-id).
      const row = alertRow(alert, { i18n, onAck: () => {} });
      row.querySelector("button.ack")?.remove();
      delete row.dataset.alertId;
      delete row.dataset.alertDevice;
      row.dataset.historyId = alert.id;
      if (alert.resolved_at) row.append(h("p", { class: "alert-resolved" }, t("history.resolved", { time: i18n.time(alert.resolved_at) })));
      return row;
    });
    replace(
      this.el,
      h("ol", { class: "alerts history" }, rows.length ? rows : h("li", { class: "empty" }, t("history.empty", { days: HISTORY_DAYS }))),
      this.cursor
        ? h("button", { type: "button", class: "more", on: { click: () => this.load(true) } }, t("history.more"))
        : null,
    );
  }
}
