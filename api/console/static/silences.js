// The silences room (#/silences): mute the notifications of the alerts some matchers select
// until an end time (POST /api/v1/silences), see the silences in force, to come and ended,
// and end one early (DELETE /api/v1/silences/{id}). Below, maintenance windows (weekly hours
// that mute): the routing file's (rules/routing.yaml, read-only here) and those made through
// the API (GET/POST /api/v1/maintenance-windows, DELETE …/{id} ends one).

import { h, replace, focusOf, refocus } from "./dom.js";

/** Roles the API lets manage silences (MANAGERS in api/routes/silences.py). */
export const SILENCE_ROLES = new Set(["admin", "operator"]);
// What SilenceIn takes (api/routes/silences.py): labels, operators, sizes.
export const MATCHER_LABELS = ["rule", "kind", "district", "severity", "vendor", "device_id", "team"];
const OPS = ["=", "!=", "=~", "!~"];
const SEVERITIES = ["critical", "major", "minor", "warning"];
const MAX_MATCHERS = 32;
const VALUE_MAX = 256;
const COMMENT_MAX = 1000;
const DURATIONS_MIN = [30, 60, 120, 240, 480, 1440, 4320, 10080];
const UNTIL = "until"; // the duration choice that asks for an end time instead
const EXPIRED_SHOWN = 50; // the newest ended ones; the rest are in the audit log and the API
// What WindowIn takes (api/routes/maintenance.py).
export const WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const NAME_MAX = 128;

function blankMatcher() {
  return { label: "device_id", op: "=", value: "" };
}

function blankWindow() {
  return { name: "", weekdays: new Set(WEEKDAYS.slice(0, 5)), start: "01:00", end: "05:00", matchers: [blankMatcher()], comment: "" };
}

/** The order windows are listed in: the routing file's, those in force (newest first), ended. */
function windowRank(w) {
  return w.source === "file" ? 0 : w.active ? 1 : 2;
}

/** An end time from the form: now + minutes, or the city time typed (the API reads a time
 * without an offset as the city's, +08:00). */
export function endsAt(duration, until, now = Date.now()) {
  if (duration !== UNTIL) return new Date(now + Number(duration) * 60_000).toISOString();
  return until.length === 16 ? `${until}:00` : until; // datetime-local leaves seconds out
}

export class SilencesView {
  constructor(app) {
    this.app = app;
    this.silences = [];
    this.loaded = false;
    this.draft = { matchers: [blankMatcher()], duration: "120", until: "", comment: "" };
    this.error = "";
    this.saving = false;
    this.ending = new Set(); // ids being expired
    this.windows = []; // GET /maintenance-windows?expired=true: the file's and the API's
    this.windowsLoaded = false;
    this.windowDraft = blankWindow();
    this.windowError = "";
    this.windowSaving = false;
    this.windowEnding = new Set(); // ids being ended
    this.el = h("div", { class: "silences-page" });
  }

  async load() {
    const [silences, windows] = await Promise.allSettled([this.app.api.all("/silences", { expired: true }), this.app.api.all("/maintenance-windows", { expired: true })]);
    if (silences.status === "fulfilled") {
      this.silences = silences.value;
      this.loaded = true;
    } else this.app.notify(this.app.describe(silences.reason));
    if (windows.status === "fulfilled") {
      this.windows = windows.value;
      this.windowsLoaded = true;
    } else this.app.notify(this.app.describe(windows.reason));
    this.render();
  }

  catalogueChanged() {
    this.render();
  }

  devicesChanged() {
    this.render();
  }

  render() {
    const t = (key, params) => this.app.i18n.t(key, params);
    // Typing in the form keeps its focus through a re-render (a language switch, new devices).
    const focused = focusOf(this.el);
    const now = Date.now();
    const ended = (s) => Date.parse(s.ends_at) <= now;
    const current = this.silences.filter((s) => !ended(s));
    const past = this.silences.filter(ended).sort((a, b) => (a.ends_at < b.ends_at ? 1 : -1));
    this.el.dataset.loaded = String(this.loaded && this.windowsLoaded);
    replace(
      this.el,
      h("div", { class: "room-head" }, h("h2", {}, t("sil.title")), h("p", { class: "hint" }, t("sil.hint"))),
      this.form(),
      h(
        "section",
        { class: "panel silence-list", dataset: { list: "current" } },
        h("h3", {}, t("sil.current"), " ", h("span", { class: "count" }, String(current.length))),
        current.length ? h("ol", { class: "silences" }, current.map((s) => this.silence(s, now))) : h("p", { class: "empty" }, t("sil.none")),
      ),
      h(
        "section",
        { class: "panel silence-list", dataset: { list: "expired" } },
        h("h3", {}, t("sil.expired"), " ", h("span", { class: "count" }, String(past.length))),
        past.length ? h("ol", { class: "silences" }, past.slice(0, EXPIRED_SHOWN).map((s) => this.silence(s, now))) : h("p", { class: "empty" }, t("sil.none")),
        past.length > EXPIRED_SHOWN ? h("p", { class: "hint" }, t("sil.expired.more", { n: past.length - EXPIRED_SHOWN })) : null,
      ),
      this.windowsSection(),
    );
    refocus(this.el, focused);
  }

  form() {
    const t = (key, params) => this.app.i18n.t(key, params);
    const { draft } = this;
    const duration = h(
      "select",
      { id: "sil-duration", on: { change: (e) => ((draft.duration = e.currentTarget.value), this.render()) } },
      DURATIONS_MIN.map((min) => h("option", { value: String(min) }, this.span(min))),
      h("option", { value: UNTIL }, t("sil.until")),
    );
    duration.value = draft.duration;
    const until = h("input", { id: "sil-until", type: "datetime-local", required: draft.duration === UNTIL, on: { input: (e) => (draft.until = e.currentTarget.value) } });
    until.value = draft.until;
    const comment = h("textarea", { id: "sil-comment", rows: 2, maxlength: COMMENT_MAX, placeholder: t("sil.comment.placeholder"), on: { input: (e) => (draft.comment = e.currentTarget.value) } });
    comment.value = draft.comment;
    return h(
      "form",
      { class: "panel silence-form", on: { submit: (e) => this.create(e) } },
      h("h3", {}, t("sil.new")),
      h("p", { class: "hint" }, t("sil.matchers.hint")),
      h("ol", { class: "matchers" }, draft.matchers.map((m, i) => this.matcherRow(m, i, draft.matchers, "sil"))),
      draft.matchers.length < MAX_MATCHERS
        ? h("button", { type: "button", class: "add-matcher", on: { click: () => (draft.matchers.push(blankMatcher()), this.render()) } }, t("sil.matcher.add"))
        : null,
      h(
        "div",
        { class: "silence-when" },
        h("label", { for: "sil-duration" }, t("sil.duration")),
        duration,
        draft.duration === UNTIL ? [h("label", { for: "sil-until" }, t("sil.until.label")), until] : null,
      ),
      h("label", { for: "sil-comment" }, t("sil.comment")),
      comment,
      this.datalists(),
      h("p", { class: "error form-error", role: "alert", hidden: !this.error }, this.error),
      h("button", { type: "submit", class: "primary create", disabled: this.saving }, t(this.saving ? "sil.creating" : "sil.create")),
    );
  }

  /** One matcher of a form's ``matchers``; ``prefix`` keeps the ids of the two forms apart. */
  matcherRow(matcher, i, matchers, prefix) {
    const t = (key, params) => this.app.i18n.t(key, params);
    const label = h(
      "select",
      { id: `${prefix}-label-${i}`, class: "matcher-label", "aria-label": t("sil.label"), on: { change: (e) => ((matcher.label = e.currentTarget.value), this.render()) } },
      MATCHER_LABELS.map((name) => h("option", { value: name }, t(`sil.label.${name}`))),
    );
    label.value = matcher.label;
    const op = h(
      "select",
      { id: `${prefix}-op-${i}`, class: "matcher-op", "aria-label": t("sil.op"), on: { change: (e) => (matcher.op = e.currentTarget.value) } },
      OPS.map((o) => h("option", { value: o, title: t(`sil.op.${OPS.indexOf(o)}`) }, o)),
    );
    op.value = matcher.op;
    const value = h("input", {
      id: `${prefix}-value-${i}`,
      class: "matcher-value",
      type: "text",
      required: true,
      maxlength: VALUE_MAX,
      list: `sil-values-${matcher.label}`,
      "aria-label": t("sil.value"),
      on: { input: (e) => (matcher.value = e.currentTarget.value) },
    });
    value.value = matcher.value;
    return h(
      "li",
      { class: "matcher", dataset: { index: String(i) } },
      label,
      op,
      value,
      matchers.length > 1
        ? h("button", { type: "button", class: "remove-matcher", "aria-label": t("sil.matcher.remove"), title: t("sil.matcher.remove"), on: { click: () => (matchers.splice(i, 1), this.render()) } }, "×")
        : null,
    );
  }

  /** Values to pick from for the labels the console knows the members of (typing is free). */
  datalists() {
    const { i18n, catalogue, devices } = this.app;
    const choices = {
      kind: catalogue.kindIds().map((id) => [id, i18n.kind(id)]),
      district: Object.keys(catalogue.data.districts ?? {}).map((id) => [id, i18n.district(id)]),
      severity: SEVERITIES.map((id) => [id, i18n.t(`severity.${id}`)]),
      vendor: [...new Set([...devices.values()].map((d) => d.vendor).filter(Boolean))].sort().map((id) => [id, id]),
      device_id: [...devices.keys()].sort().map((id) => [id, id]),
    };
    return Object.entries(choices).map(([name, values]) => h("datalist", { id: `sil-values-${name}` }, values.map(([id, title]) => h("option", { value: id }, title))));
  }

  silence(silence, now) {
    const { i18n } = this.app;
    const t = (key, params) => i18n.t(key, params);
    const state = Date.parse(silence.ends_at) <= now ? "expired" : silence.active ? "active" : "pending";
    return h(
      "li",
      { class: ["silence", `silence-${state}`], dataset: { silenceId: silence.id, state } },
      h(
        "div",
        { class: "silence-head" },
        h("span", { class: ["chip", `silence-${state}`] }, t(`sil.state.${state}`)),
        h("ul", { class: "matcher-chips" }, silence.matchers.map((m) => h("li", { class: "matcher-chip" }, `${m.label} ${m.op} ${m.value}`))),
      ),
      h(
        "p",
        { class: "silence-time" },
        t("sil.from_to", { from: i18n.time(silence.starts_at), to: i18n.time(silence.ends_at) }),
        " · ",
        t("sil.by", { who: silence.created_by }),
      ),
      silence.comment ? h("p", { class: "silence-comment" }, silence.comment) : null,
      state !== "expired"
        ? h(
            "button",
            { type: "button", class: "expire", disabled: this.ending.has(silence.id), on: { click: () => this.expire(silence) } },
            t(this.ending.has(silence.id) ? "sil.expiring" : "sil.expire"),
          )
        : null,
    );
  }

  /** A span in minutes as the duration list names it (30 分钟, 2 小时, 1 天 …). */
  span(min) {
    const t = (key, params) => this.app.i18n.t(key, params);
    if (min % 1440 === 0) return t("sil.days", { n: min / 1440 });
    if (min % 60 === 0) return t("sil.hours", { n: min / 60 });
    return t("sil.minutes", { n: min });
  }

  async create(event) {
    event.preventDefault();
    const { draft } = this;
    const body = {
      matchers: draft.matchers.map(({ label, op, value }) => ({ label, op, value })),
      ends_at: endsAt(draft.duration, draft.until),
      comment: draft.comment.trim(),
    };
    this.saving = true;
    this.error = "";
    this.render();
    try {
      const made = await this.app.api.post("/silences", body);
      this.silences = [made, ...this.silences.filter((s) => s.id !== made.id)];
      this.draft = { matchers: [blankMatcher()], duration: draft.duration, until: "", comment: "" };
    } catch (error) {
      // The API's detail says what to change (a matcher, the end time): shown as it comes.
      this.error = this.app.describe(error);
    }
    this.saving = false;
    this.render();
  }

  async expire(silence) {
    this.ending.add(silence.id);
    this.render();
    try {
      const ended = await this.app.api.delete(`/silences/${encodeURIComponent(silence.id)}`);
      this.silences = this.silences.map((s) => (s.id === ended.id ? ended : s));
    } catch (error) {
      this.app.notify(this.app.describe(error));
      if (error.status === 404) await this.load();
    }
    this.ending.delete(silence.id);
    this.render();
  }

  // --- maintenance windows ---------------------------------------------------------------

  windowsSection() {
    const t = (key, params) => this.app.i18n.t(key, params);
    const windows = [...this.windows].sort((a, b) => windowRank(a) - windowRank(b));
    const shown = windows.filter((w) => w.active);
    const ended = windows.filter((w) => !w.active).slice(0, EXPIRED_SHOWN);
    return h(
      "section",
      { class: "panel silence-list maintenance", dataset: { list: "windows" } },
      h("h3", {}, t("sil.windows"), " ", h("span", { class: "count" }, String(shown.length))),
      h("p", { class: "hint" }, t("sil.windows.hint")),
      shown.length ? h("ol", { class: "silences windows" }, shown.map((w) => this.windowItem(w))) : h("p", { class: "empty" }, t("sil.none")),
      ended.length ? [h("h4", {}, t("sil.win.ended")), h("ol", { class: "silences windows windows-ended" }, ended.map((w) => this.windowItem(w)))] : null,
      this.windowForm(),
    );
  }

  /** A matcher as people read it: the label's title, and a kind's, district's or severity's
   * title for an equality on it (a regular expression is shown as written). */
  matcherText(m) {
    const { i18n } = this.app;
    let value = m.value;
    if (m.op === "=" || m.op === "!=") {
      if (m.label === "kind") value = i18n.kind(m.value);
      else if (m.label === "district") value = i18n.district(m.value);
      else if (m.label === "severity" && SEVERITIES.includes(m.value)) value = i18n.t(`severity.${m.value}`);
    }
    return `${i18n.t(`sil.label.${m.label}`)} ${m.op} ${value}`;
  }

  windowItem(w) {
    const { i18n } = this.app;
    const t = (key, params) => i18n.t(key, params);
    const state = !w.active ? "ended" : w.open ? "open" : "waiting";
    const days = w.weekdays.length === WEEKDAYS.length ? t("sil.win.everyday") : w.weekdays.map((d) => t(`sil.day.${d}`)).join(t("sil.win.sep"));
    const overnight = w.end <= w.start && w.end !== "24:00";
    const ending = w.id !== null && this.windowEnding.has(w.id);
    return h(
      "li",
      { class: ["silence", "window", `window-${state}`], dataset: { windowId: w.id ?? "", source: w.source, state } },
      h(
        "div",
        { class: "silence-head" },
        h("span", { class: ["chip", `window-${state}`] }, t(`sil.win.state.${state}`)),
        h("span", { class: ["chip", "window-source"], dataset: { source: w.source } }, t(`sil.win.source.${w.source}`)),
        h("strong", { class: "window-name" }, w.name),
      ),
      h("ul", { class: "matcher-chips" }, w.matchers.map((m) => h("li", { class: "matcher-chip" }, this.matcherText(m)))),
      h("p", { class: "silence-time window-hours" }, t(overnight ? "sil.win.hours.overnight" : "sil.win.hours", { days, from: w.start, to: w.end })),
      h(
        "p",
        { class: "silence-time window-origin" },
        w.source === "file" ? t("sil.win.in_file") : [t("sil.by", { who: w.created_by }), w.ended_at ? [" · ", t("sil.win.ended_at", { when: i18n.time(w.ended_at) })] : null],
      ),
      w.comment ? h("p", { class: "silence-comment" }, w.comment) : null,
      w.source === "api" && w.active
        ? h("button", { type: "button", class: "end-window", disabled: ending, on: { click: () => this.endWindow(w) } }, t(ending ? "sil.expiring" : "sil.win.end"))
        : null,
    );
  }

  windowForm() {
    const t = (key, params) => this.app.i18n.t(key, params);
    const draft = this.windowDraft;
    const input = (id, attrs, key) => {
      const el = h("input", { id, ...attrs, on: { input: (e) => (draft[key] = e.currentTarget.value) } });
      el.value = draft[key];
      return el;
    };
    const comment = h("textarea", { id: "mw-comment", rows: 2, maxlength: COMMENT_MAX, placeholder: t("sil.win.comment.placeholder"), on: { input: (e) => (draft.comment = e.currentTarget.value) } });
    comment.value = draft.comment;
    const day = (d) => {
      const box = h("input", {
        id: `mw-day-${d}`,
        type: "checkbox",
        value: d,
        on: { change: (e) => (e.currentTarget.checked ? draft.weekdays.add(d) : draft.weekdays.delete(d)) },
      });
      box.checked = draft.weekdays.has(d);
      return h("label", { class: "window-day", for: `mw-day-${d}` }, box, t(`sil.day.${d}`));
    };
    return h(
      "form",
      { class: "silence-form window-form", on: { submit: (e) => this.createWindow(e) } },
      h("h4", {}, t("sil.win.new")),
      h("label", { for: "mw-name" }, t("sil.win.name")),
      input("mw-name", { type: "text", required: true, maxlength: NAME_MAX, placeholder: t("sil.win.name.placeholder") }, "name"),
      h("fieldset", { class: "window-days" }, h("legend", {}, t("sil.win.days")), WEEKDAYS.map(day)),
      h(
        "div",
        { class: "silence-when" },
        h("label", { for: "mw-start" }, t("sil.win.start")),
        input("mw-start", { type: "time", required: true }, "start"),
        h("label", { for: "mw-end" }, t("sil.win.end_time")),
        input("mw-end", { type: "time", required: true }, "end"),
      ),
      h("p", { class: "hint" }, t("sil.win.hours.hint")),
      h("p", { class: "hint" }, t("sil.matchers.hint")),
      h("ol", { class: "matchers" }, draft.matchers.map((m, i) => this.matcherRow(m, i, draft.matchers, "mw"))),
      draft.matchers.length < MAX_MATCHERS
        ? h("button", { type: "button", class: "add-window-matcher", on: { click: () => (draft.matchers.push(blankMatcher()), this.render()) } }, t("sil.matcher.add"))
        : null,
      h("label", { for: "mw-comment" }, t("sil.comment")),
      comment,
      h("p", { class: "error window-error", role: "alert", hidden: !this.windowError }, this.windowError),
      h("button", { type: "submit", class: "primary create-window", disabled: this.windowSaving }, t(this.windowSaving ? "sil.creating" : "sil.win.create")),
    );
  }

  async createWindow(event) {
    event.preventDefault();
    const draft = this.windowDraft;
    const body = {
      name: draft.name.trim(),
      matchers: draft.matchers.map(({ label, op, value }) => ({ label, op, value })),
      weekdays: WEEKDAYS.filter((d) => draft.weekdays.has(d)),
      start: draft.start,
      end: draft.end,
      comment: draft.comment.trim(),
    };
    this.windowSaving = true;
    this.windowError = "";
    this.render();
    try {
      const made = await this.app.api.post("/maintenance-windows", body);
      this.windows = [made, ...this.windows.filter((w) => w.id !== made.id)];
      this.windowDraft = blankWindow();
    } catch (error) {
      // The API's detail names the field to change (weekdays, start, a matcher): shown as it comes.
      this.windowError = this.app.describe(error);
    }
    this.windowSaving = false;
    this.render();
  }

  async endWindow(w) {
    this.windowEnding.add(w.id);
    this.render();
    try {
      const ended = await this.app.api.delete(`/maintenance-windows/${encodeURIComponent(w.id)}`);
      this.windows = this.windows.map((x) => (x.id === ended.id ? ended : x));
    } catch (error) {
      this.app.notify(this.app.describe(error));
      if (error.status === 404) await this.load();
    }
    this.windowEnding.delete(w.id);
    this.render();
  }
}
