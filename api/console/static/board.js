// The work-order board for field teams: one column per step (a stacked list on a phone),
// each card with the one button that moves it on.

import { h } from "./dom.js";

export const COLUMNS = ["dispatched", "accepted", "on_site", "resolved"];
const NEXT = { dispatched: "accept", accepted: "on_site", on_site: "resolve", resolved: "close" };
const TEAM_KEY = "cityiot.team";

export class BoardView {
  constructor(app) {
    this.app = app;
    this.orders = new Map(); // id → work order (not closed)
    this.team = app.storage.getItem(TEAM_KEY) ?? "";
    this.loaded = false;
    this.refreshTimer = null;
    this.el = h("div", { class: "board-page" });
  }

  async load() {
    try {
      const lists = await Promise.all(COLUMNS.map((state) => this.app.api.all("/workorders", { state })));
      this.orders = new Map(lists.flat().map((o) => [o.id, o]));
      this.loaded = true;
    } catch (error) {
      this.app.notify(this.app.describe(error));
    }
    this.render();
  }

  /** An alert changed: a firing one opens a work order a moment later, so look again then. */
  alertsChanged(event) {
    if (!event || event.state !== "firing" || this.refreshTimer) return;
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      this.load();
    }, 1500);
  }

  destroy() {
    clearTimeout(this.refreshTimer);
  }

  render() {
    const { i18n } = this.app;
    const t = (key, params) => i18n.t(key, params);
    const teams = [...new Set([...this.orders.values()].map((o) => o.team))].sort();
    if (this.team && !teams.includes(this.team)) teams.push(this.team);
    const shown = [...this.orders.values()].filter((o) => !this.team || o.team === this.team);
    const select = h(
      "select",
      {
        id: "team",
        on: {
          change: (e) => {
            this.team = e.currentTarget.value;
            this.app.storage.setItem(TEAM_KEY, this.team);
            this.render();
          },
        },
      },
      h("option", { value: "" }, t("board.all")),
      teams.map((team) => h("option", { value: team }, team)),
    );
    select.value = this.team;
    this.el.replaceChildren(
      h(
        "div",
        { class: "board-head" },
        h("h2", {}, t("board.title")),
        h("label", { class: "team-filter" }, h("span", {}, t("board.team")), select),
      ),
      h(
        "div",
        { class: "board", dataset: { loaded: String(this.loaded) } },
        COLUMNS.map((state) => {
          const cards = shown.filter((o) => o.state === state).sort((a, b) => (a.created_at < b.created_at ? -1 : 1));
          return h(
            "section",
            { class: "column", dataset: { state } },
            h("h3", {}, t(`wo.${state}`), " ", h("span", { class: "count" }, String(cards.length))),
            cards.length
              ? h("ol", { class: "cards" }, cards.map((o) => this.card(o)))
              : h("p", { class: "empty" }, t("board.empty")),
          );
        }),
      ),
    );
  }

  card(order) {
    const { i18n } = this.app;
    const t = (key, params) => i18n.t(key, params);
    const [primary, secondary] = i18n.summary(order.title);
    const now = Date.now();
    const due = (label, when, done) => {
      const late = !done && Date.parse(when) < now;
      return h("li", { class: late ? "overdue" : "" }, `${t(label)} ${i18n.time(when)}`, late ? ` · ${t("board.overdue")}` : "");
    };
    const action = NEXT[order.state];
    return h(
      "li",
      { class: ["card", `sev-${order.severity}`], dataset: { workorderId: order.id, state: order.state } },
      h("div", { class: "card-head" }, h("span", { class: ["chip", `sev-${order.severity}`] }, t(`severity.${order.severity}`)), h("span", { class: "team" }, order.team)),
      h("p", { class: "card-title" }, primary),
      secondary ? h("p", { class: "card-title-other" }, secondary) : null,
      h(
        "ul",
        { class: "card-meta" },
        h("li", {}, h("a", { href: `#/device/${encodeURIComponent(order.device_id)}` }, order.device_id), ` · ${i18n.kind(order.kind)} · ${i18n.district(order.district)}`),
        h("li", {}, `${t("board.created")} ${i18n.time(order.created_at)}`),
        due("board.verify_due", order.verify_due_at, Boolean(order.on_site_at)),
        due("board.close_due", order.close_due_at, Boolean(order.closed_at)),
        order.assignee ? h("li", {}, `${t("board.assignee")} ${order.assignee}`) : null,
      ),
      action
        ? h("button", { type: "button", class: "step", dataset: { action }, on: { click: (e) => this.step(order, action, e.currentTarget) } }, t(`action.${action}`))
        : null,
    );
  }

  async step(order, action, button) {
    button.disabled = true;
    try {
      const moved = await this.app.api.post(`/workorders/${encodeURIComponent(order.id)}/${action}`);
      if (moved.state === "closed") this.orders.delete(moved.id);
      else this.orders.set(moved.id, moved);
    } catch (error) {
      this.app.notify(this.app.describe(error));
      if (error.status === 409) await this.load();
    }
    this.render();
  }
}
