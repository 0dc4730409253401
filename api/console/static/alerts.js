// Alert rows (overview and device page): severity colour, both languages of the summary,
// the device, and an Acknowledge button while the alert is firing.

import { h } from "./dom.js";

export const SEVERITIES = ["critical", "major", "minor", "warning"];
export const OPEN_STATES = new Set(["firing", "acknowledged"]);
const MAX_ROWS = 200; // the most urgent; the rest are counted

/** Open alerts, most severe first, then newest first. */
export function byUrgency(a, b) {
  return (
    SEVERITIES.indexOf(a.severity) - SEVERITIES.indexOf(b.severity) ||
    (a.started_at < b.started_at ? 1 : a.started_at > b.started_at ? -1 : 0)
  );
}

/** `onAck(alert, button)`: the Acknowledge button was pressed. */
export function alertRow(alert, { i18n, onAck }) {
  const [primary, secondary] = i18n.summary(alert.summary ?? "");
  const firing = alert.state === "firing";
  return h(
    "li",
    {
      class: ["alert", `sev-${alert.severity}`, `state-${alert.state}`],
      dataset: { alertId: alert.id, alertDevice: alert.device_id, state: alert.state },
    },
    h(
      "div",
      { class: "alert-head" },
      h("span", { class: ["chip", `sev-${alert.severity}`] }, i18n.t(`severity.${alert.severity}`)),
      h("span", { class: "alert-state" }, i18n.t(`alert.${alert.state}`)),
      h("time", { datetime: alert.started_at }, i18n.time(alert.started_at, { seconds: true })),
    ),
    h("p", { class: "alert-summary", lang: i18n.lang === "zh" ? "zh-CN" : "en" }, primary),
    secondary ? h("p", { class: "alert-summary-other", lang: i18n.lang === "zh" ? "en" : "zh-CN" }, secondary) : null,
    h(
      "div",
      { class: "alert-foot" },
      h("a", { href: `#/device/${encodeURIComponent(alert.device_id)}`, class: "device-link" }, alert.device_id),
      h("span", {}, `${i18n.kind(alert.kind)} · ${i18n.district(alert.district)}`),
      firing
        ? h(
            "button",
            { type: "button", class: "ack", on: { click: (e) => onAck(alert, e.currentTarget) } },
            i18n.t("alerts.ack"),
          )
        : null,
    ),
  );
}

/** A list of alerts, re-rendered whole (they are few: the open ones). */
export class AlertList {
  constructor({ i18n, onAck, empty }) {
    this.i18n = i18n;
    this.onAck = onAck;
    this.empty = empty;
    this.el = h("ol", { class: "alerts", "aria-live": "polite" });
  }

  render(alerts) {
    const rows = alerts.filter((a) => OPEN_STATES.has(a.state)).sort(byUrgency);
    this.el.dataset.count = String(rows.length);
    const shown = rows.slice(0, MAX_ROWS).map((a) => alertRow(a, { i18n: this.i18n, onAck: this.onAck }));
    if (rows.length > MAX_ROWS) shown.push(h("li", { class: "empty" }, this.i18n.t("alerts.more", { n: rows.length - MAX_ROWS })));
    this.el.replaceChildren(...(rows.length ? shown : [h("li", { class: "empty" }, this.i18n.t(this.empty))]));
  }
}
