// The audit log room (#/audit): who changed what, newest first (GET /api/v1/audit), filtered
// by the API's own filters — actor, action or its family, resource or its collection, and a
// time span in the city's time — a page at a time. Administrators only. An entry's details
// are shown as `key = value` text, never as markup.

import { h, replace, focusOf, refocus, latestAnswer } from "./dom.js";
import { LABELS } from "./i18n.js";

/** Roles the API lets read the audit log (allow("admin") in api/routes/audit.py). */
export const AUDIT_ROLES = new Set(["admin"]);
const PAGE = 50;
// The filters' max_length in api/routes/audit.py.
const MAX = { actor: 128, action: 64, resource: 200 };

/** A time typed in a datetime-local field, as the API takes it: without an offset, so the
 * API reads it as the city's (+08:00); datetime-local leaves the seconds out. */
export function cityTime(value) {
  return value.length === 16 ? `${value}:00` : value;
}

/** One detail of an entry as a line of text: strings as they are, anything else as JSON. */
export function detailLine(key, value) {
  return `${key} = ${typeof value === "string" ? value : JSON.stringify(value)}`;
}

export class AuditView {
  constructor(app) {
    this.app = app;
    this.items = [];
    this.cursor = null;
    this.loaded = false;
    this.busy = false;
    this.error = "";
    this.asked = 0; // answers to an earlier question (filters changed since) are dropped
    this.filters = { actor: "", action: "", resource: "", since: "", until: "" }; // as typed
    this.applied = { ...this.filters }; // those the list was drawn for: "more" pages on with these
    this.el = h("div", { class: "audit-page" });
  }

  async load() {
    await this.fetch({ more: false });
  }

  /** The first page for the filters (`more`: false), or the next one. */
  async fetch({ more }) {
    const wanted = more ? this.applied : { ...this.filters };
    this.error = "";
    const params = { limit: PAGE, cursor: more ? this.cursor : undefined };
    for (const [name, value] of Object.entries(wanted)) {
      if (value) params[name] = name === "since" || name === "until" ? cityTime(value) : value;
    }
    await latestAnswer(
      this,
      () => this.app.api.get("/audit", params),
      (page) => {
        this.items = more ? [...this.items, ...page.items] : page.items;
        this.cursor = page.next_cursor;
        this.applied = wanted; // a refused filter leaves the list, and its "more", as they were
        this.loaded = true;
      },
      // The API's detail says what to change (a time out of range): shown beside the form.
      (error) => (this.error = this.app.describe(error)),
    );
  }

  devicesChanged() {
    this.render();
  }

  render() {
    const t = (key, params) => this.app.i18n.t(key, params);
    // Typing in the form keeps its focus through a re-render (a language switch, new devices).
    const focused = focusOf(this.el);
    this.el.dataset.loaded = String(this.loaded);
    this.el.dataset.busy = String(this.busy);
    replace(
      this.el,
      h("div", { class: "room-head" }, h("h2", {}, t("audit.title")), h("p", { class: "hint" }, t("audit.hint"))),
      this.filterForm(),
      this.loaded && !this.items.length ? h("p", { class: "empty" }, t("audit.empty")) : null,
      this.items.length ? this.table() : null,
      this.cursor && this.loaded
        ? h("button", { type: "button", class: "more", disabled: this.busy, on: { click: () => this.fetch({ more: true }) } }, t(this.busy ? "audit.loading" : "audit.more"))
        : null,
    );
    refocus(this.el, focused);
  }

  filterForm() {
    const t = (key, params) => this.app.i18n.t(key, params);
    const field = (name, attrs) => {
      const input = h("input", { id: `audit-${name}`, ...attrs, on: { input: (e) => (this.filters[name] = e.currentTarget.value.trim()) } });
      input.value = this.filters[name];
      return [h("label", { for: `audit-${name}` }, t(`audit.${name}`)), input];
    };
    return h(
      "form",
      {
        class: "room-filters",
        on: {
          submit: (e) => {
            e.preventDefault();
            this.fetch({ more: false });
          },
        },
      },
      field("actor", { type: "search", maxlength: MAX.actor, placeholder: t("audit.actor.placeholder") }),
      field("action", { type: "search", maxlength: MAX.action, placeholder: t("audit.action.placeholder") }),
      field("resource", { type: "search", maxlength: MAX.resource, placeholder: t("audit.resource.placeholder") }),
      field("since", { type: "datetime-local" }),
      field("until", { type: "datetime-local" }),
      h("button", { type: "submit", class: "apply", disabled: this.busy }, t("audit.apply")),
      h("p", { class: "error form-error", role: "alert", hidden: !this.error }, this.error),
    );
  }

  table() {
    const t = (key, params) => this.app.i18n.t(key, params);
    const heads = ["audit.col.time", "audit.col.actor", "audit.col.action", "audit.col.resource", "audit.col.detail"];
    return h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "registry audit" },
        h("thead", {}, h("tr", {}, heads.map((key) => h("th", { scope: "col" }, t(key))))),
        h("tbody", {}, this.items.map((entry) => this.row(entry))),
      ),
    );
  }

  /** A label of this language if the console has one (an action's or a role's title). */
  known(key) {
    return key in LABELS[this.app.i18n.lang] ? this.app.i18n.t(key) : null;
  }

  row(entry) {
    const { i18n } = this.app;
    const title = this.known(`audit.act.${entry.action}`);
    const role = this.known(`people.role.${entry.role}`) ?? entry.role;
    const id = entry.resource.startsWith("devices/") ? entry.resource.slice("devices/".length) : null;
    const resource = id && this.app.devices.has(id) ? h("a", { href: `#/device/${encodeURIComponent(id)}` }, entry.resource) : entry.resource;
    const details = Object.entries(entry.detail ?? {});
    return h(
      "tr",
      { class: "audit-entry", dataset: { auditId: String(entry.id), action: entry.action } },
      h("td", { class: "audit-time" }, h("time", { datetime: entry.at }, i18n.time(entry.at, { seconds: true }))),
      h("td", { class: "audit-actor" }, h("span", { class: "raw-id" }, entry.actor), h("span", { class: "hint audit-role" }, role)),
      h("td", { class: "audit-action" }, title ? h("span", { class: "audit-action-title" }, title) : null, h("code", { class: "raw-id" }, entry.action)),
      h("td", { class: "audit-resource" }, h("code", { class: "raw-id" }, resource)),
      h(
        "td",
        { class: "audit-detail" },
        details.length ? h("ul", { class: ["audit-details", "raw-id"] }, details.map(([key, value]) => h("li", {}, detailLine(key, value)))) : i18n.t("kpi.none"),
      ),
    );
  }
}
