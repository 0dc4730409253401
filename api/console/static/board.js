// The work-order board for field teams: one column per step (a stacked list on a phone),
// each card with where to go (address, a navigation link), the SLA clock running, the
// order's journal, a note and the one button that moves it on.

import { h } from "./dom.js";

export const COLUMNS = ["dispatched", "accepted", "on_site", "resolved"];
const NEXT = { dispatched: "accept", accepted: "on_site", on_site: "resolve", resolved: "close" };
const TEAM_KEY = "cityiot.team";
const NOTE_MAX = 1000; // StepIn.note's max_length (api/routes/workorders.py)
const TICK_MS = 1000;
// A journal line as rules/workorders.py writes it: "{time} {action} by {who}: {note}".
const JOURNAL_LINE = /^(\S+) (accept|on_site|resolve|close)(?: by (.+?))?(?:: (.*))?$/;

/** A `geo:` URI (RFC 5870) that opens the phone's map app at the position, with a label. */
export function geoUri(lat, lon, label) {
  // encodeURIComponent leaves ( ) ! ' * alone: a ")" would end the label early.
  const text = encodeURIComponent(label).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `geo:${lat},${lon}?q=${lat},${lon}(${text})`;
}

/** The clock a card shows: on site by `verify_due_at` until the team is there, then closed by `close_due_at`. */
export function slaClock(order) {
  return order.on_site_at ? { which: "close", due: order.close_due_at } : { which: "verify", due: order.verify_due_at };
}

export class BoardView {
  constructor(app) {
    this.app = app;
    this.orders = new Map(); // id → work order (not closed)
    this.team = app.storage.getItem(TEAM_KEY) ?? "";
    this.loaded = false;
    this.refreshTimer = null;
    this.drafts = new Map(); // work order id → note being typed (kept across re-renders)
    this.teams = new Map(); // team id → its title ({zh, en}) from the routing file
    this.el = h("div", { class: "board-page" });
    // One timer for every card's clock, not one per card.
    this.clockTimer = setInterval(() => this.tick(), TICK_MS);
  }

  async load() {
    try {
      // Titles of the teams; without them the board shows the teams' ids.
      const teams = this.teams.size ? null : this.app.api.get("/teams").catch(() => null);
      const lists = await Promise.all(COLUMNS.map((state) => this.app.api.all("/workorders", { state })));
      this.orders = new Map(lists.flat().map((o) => [o.id, o]));
      const named = await teams;
      if (named) this.teams = new Map(named.items.map((team) => [team.id, team.title]));
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

  /** A team by its title in the console's language; its id while the title is unknown. */
  teamName(team) {
    return this.app.i18n.title(this.teams.get(team)) || team;
  }

  destroy() {
    clearTimeout(this.refreshTimer);
    clearInterval(this.clockTimer);
  }

  render() {
    const { i18n } = this.app;
    const t = (key, params) => i18n.t(key, params);
    // A note being typed keeps its focus and caret through a re-render (an alert event reloads the board).
    const active = document.activeElement;
    const typing = this.el.contains(active) && active.dataset.noteFor ? { id: active.dataset.noteFor, start: active.selectionStart, end: active.selectionEnd } : null;
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
      teams.map((team) => h("option", { value: team }, this.teamName(team))),
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
    this.tick();
    if (typing) {
      const input = [...this.el.querySelectorAll("input.step-note")].find((el) => el.dataset.noteFor === typing.id);
      input?.focus();
      input?.setSelectionRange(typing.start, typing.end);
    }
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
    const clock = slaClock(order);
    return h(
      "li",
      { class: ["card", `sev-${order.severity}`], dataset: { workorderId: order.id, state: order.state } },
      h("div", { class: "card-head" }, h("span", { class: ["chip", `sev-${order.severity}`] }, t(`severity.${order.severity}`)), h("span", { class: "team", dataset: { team: order.team } }, this.teamName(order.team))),
      h("p", { class: "card-title" }, primary),
      secondary ? h("p", { class: "card-title-other" }, secondary) : null,
      h("p", { class: "sla-clock", dataset: { clock: clock.which, due: clock.due }, role: "timer" }),
      this.place(order),
      h(
        "ul",
        { class: "card-meta" },
        h("li", {}, h("a", { href: `#/device/${encodeURIComponent(order.device_id)}` }, order.device_id), ` · ${i18n.kind(order.kind)}`),
        h("li", {}, `${t("board.created")} ${i18n.time(order.created_at)}`),
        due("board.verify_due", order.verify_due_at, Boolean(order.on_site_at)),
        due("board.close_due", order.close_due_at, Boolean(order.closed_at)),
        order.assignee ? h("li", {}, `${t("board.assignee")} ${order.assignee}`) : null,
      ),
      this.journal(order),
      action ? this.stepForm(order, action) : null,
    );
  }

  /** The device's address and district, with a link that opens navigation when the position is known. */
  place(order) {
    const { i18n } = this.app;
    const known = Number.isFinite(order.lat) && Number.isFinite(order.lon);
    const label = order.address || order.device_id;
    return h(
      "div",
      { class: "card-place" },
      h("p", { class: "card-address" }, order.address || i18n.t("kpi.none"), " · ", h("span", { class: "card-district" }, i18n.district(order.district))),
      known
        ? h("a", { class: "navigate", href: geoUri(order.lat, order.lon, label), title: i18n.t("board.navigate.title") }, i18n.t("board.navigate"))
        : null,
    );
  }

  /** The order's journal, one line per step: when, what, who and their note. */
  journal(order) {
    const { i18n } = this.app;
    const lines = (order.note ?? "").split("\n").filter(Boolean);
    if (!lines.length) return null;
    return h(
      "ol",
      { class: "journal", "aria-label": i18n.t("board.journal") },
      lines.map((line) => {
        const m = JOURNAL_LINE.exec(line);
        if (!m) return h("li", {}, line);
        const [, at, action, who, note] = m;
        return h(
          "li",
          {},
          h("time", { datetime: at }, i18n.time(at)),
          ` ${i18n.t(`action.${action}`)}`,
          who ? ` · ${who}` : "",
          note ? [": ", h("span", { class: "journal-note" }, note)] : null,
        );
      }),
    );
  }

  stepForm(order, action) {
    const { i18n } = this.app;
    const note = h("input", {
      type: "text",
      class: "step-note",
      maxlength: NOTE_MAX,
      placeholder: i18n.t("board.note.placeholder"),
      "aria-label": i18n.t("board.note"),
      dataset: { noteFor: order.id },
      on: { input: (e) => this.drafts.set(order.id, e.currentTarget.value) },
    });
    note.value = this.drafts.get(order.id) ?? "";
    return h(
      "form",
      {
        class: "step-form",
        on: {
          submit: (e) => {
            e.preventDefault();
            this.step(order, action, e.currentTarget.querySelector("button.step"), note.value.trim());
          },
        },
      },
      note,
      h("button", { type: "submit", class: "step", dataset: { action } }, i18n.t(`action.${action}`)),
    );
  }

  /** Every card's clock, from the one timer: time left, or overdue in the warning colour. */
  tick() {
    const { i18n } = this.app;
    const now = Date.now();
    for (const el of this.el.querySelectorAll(".sla-clock")) {
      const left = Date.parse(el.dataset.due) - now;
      const late = left < 0;
      const span = duration(Math.abs(left), i18n);
      const text = `${i18n.t(`sla.${el.dataset.clock}`)} · ${i18n.t(late ? "sla.overdue" : "sla.left", { d: span })}`;
      if (el.textContent !== text) el.textContent = text;
      el.classList.toggle("overdue", late);
    }
  }

  async step(order, action, button, note) {
    button.disabled = true;
    try {
      const moved = await this.app.api.post(`/workorders/${encodeURIComponent(order.id)}/${action}`, note ? { note } : undefined);
      this.drafts.delete(order.id);
      if (moved.state === "closed") this.orders.delete(moved.id);
      else this.orders.set(moved.id, moved);
    } catch (error) {
      this.app.notify(this.app.describe(error));
      if (error.status === 409) await this.load();
    }
    this.render();
  }
}

/** A span of time as a clock shows it: days and hours, hours and minutes, or minutes and seconds. */
function duration(ms, i18n) {
  const s = Math.floor(ms / 1000);
  const [d, hr, min, sec] = [Math.floor(s / 86400), Math.floor(s / 3600) % 24, Math.floor(s / 60) % 60, s % 60];
  if (d) return i18n.t("sla.d_h", { d, h: hr });
  if (hr) return i18n.t("sla.h_min", { h: hr, m: min });
  return i18n.t("sla.min_s", { m: min, s: sec });
}
