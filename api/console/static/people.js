// People and keys (#/people): people's accounts (GET/POST /users, PATCH /users/{username}:
// disable, enable, unlock, a new password) and machines' API keys (GET/POST /keys,
// DELETE /keys/{id}). Administrators only. A password the platform makes and a new key are
// shown once, held in this page's memory only until closed or the page is left.

import { h, replace, focusOf, refocus } from "./dom.js";

/** Roles the API lets manage accounts and keys (allow("admin") in api/routes/users.py, keys.py). */
export const PEOPLE_ROLES = new Set(["admin"]);
const ROLES = ["admin", "operator", "field", "department", "vendor"]; // Role in api/routes/keys.py
const MIN_PASSWORD = 12; // api/people.py
const EXPIRY_DAYS = ["30", "90", "180", "365"];
const NEVER = "never";
const UNTIL = "until"; // the expiry choice that asks for a date

/** The grant fields a role takes (the API refuses the others). */
const GRANT_FIELDS = { department: ["kinds", "districts"], vendor: ["vendor"], field: ["teams"] };

function blankPerson() {
  return { username: "", display_name: "", role: "operator", kinds: "", districts: "", vendor: "", teams: "", made: true, password: "", password2: "" };
}

function blankKey() {
  return { name: "", role: "operator", kinds: "", districts: "", vendor: "", teams: "", expiry: "90", until: "" };
}

const list = (text) =>
  text
    .split(/[,，\s]+/)
    .map((s) => s.trim())
    .filter(Boolean);

/** The grant of a draft as the API takes it: only the fields of its role, lists split on commas. */
export function grantOf(draft) {
  const grant = {};
  for (const field of GRANT_FIELDS[draft.role] ?? []) {
    if (field === "vendor") {
      if (draft.vendor.trim()) grant.vendor = draft.vendor.trim();
    } else if (list(draft[field]).length) grant[field] = list(draft[field]);
  }
  return grant;
}

/** The end of `date` (YYYY-MM-DD) in the time zone `zone`, as RFC 3339 with its offset. */
export function endOfDay(date, zone) {
  const probe = new Date(`${date}T12:00:00Z`);
  let offset = "";
  try {
    const name = new Intl.DateTimeFormat("en-US", { timeZone: zone, timeZoneName: "longOffset" }).formatToParts(probe).find((p) => p.type === "timeZoneName")?.value;
    offset = /^GMT([+-]\d{2}:\d{2})$/.exec(name ?? "")?.[1] ?? (name === "GMT" ? "+00:00" : "");
  } catch {
    offset = "";
  }
  if (!offset) {
    const min = -probe.getTimezoneOffset();
    const abs = Math.abs(min);
    offset = `${min < 0 ? "-" : "+"}${String(Math.floor(abs / 60)).padStart(2, "0")}:${String(abs % 60).padStart(2, "0")}`;
  }
  return `${date}T23:59:59${offset}`;
}

/** When a key made now stops working: in n days, at the end of a date, or never (null). */
export function expiryOf(draft, zone, now = Date.now()) {
  if (draft.expiry === NEVER) return null;
  if (draft.expiry === UNTIL) return draft.until ? endOfDay(draft.until, zone) : null;
  return new Date(now + Number(draft.expiry) * 86_400_000).toISOString();
}

export class PeopleView {
  constructor(app) {
    this.app = app;
    this.users = [];
    this.keys = [];
    this.loaded = false;
    this.error = null;
    this.person = blankPerson();
    this.personError = "";
    this.key = blankKey();
    this.keyError = "";
    this.secret = null; // {kind: "password" | "key", who, value} just made, until closed
    this.passwordFor = null; // the username whose new-password form is open
    this.newPassword = { password: "", password2: "" };
    this.passwordError = "";
    this.confirming = null; // the key id whose Revoke was pressed once
    this.busy = new Set();
    this.el = h("div", { class: "people-page" });
  }

  async load() {
    try {
      const [users, keys] = await Promise.all([this.app.api.all("/users"), this.app.api.all("/keys")]);
      this.users = users;
      this.keys = keys;
      this.loaded = true;
      this.error = null;
    } catch (error) {
      this.error = this.app.describe(error);
    }
    this.render();
  }

  /** The page is left: the secret shown goes with it. */
  destroy() {
    this.secret = null;
  }

  t(key, params) {
    return this.app.i18n.t(key, params);
  }

  render() {
    const t = (key, params) => this.t(key, params);
    // Typing in a form keeps its focus through a re-render (a language switch).
    const focused = focusOf(this.el);
    this.el.dataset.loaded = String(this.loaded);
    replace(
      this.el,
      h("div", { class: "room-head" }, h("h2", {}, t("people.title")), h("p", { class: "hint" }, t("people.hint"))),
      this.error ? h("p", { class: "error" }, this.error) : null,
      !this.loaded && !this.error ? h("p", { class: "hint" }, t("history.loading")) : null,
      this.secret ? this.secretPanel() : null,
      h(
        "section",
        { class: "panel", dataset: { section: "users" } },
        h("h3", {}, t("people.users"), " ", h("span", { class: "count" }, String(this.users.length))),
        this.usersTable(),
        this.personForm(),
      ),
      h(
        "section",
        { class: "panel", dataset: { section: "keys" } },
        h("h3", {}, t("people.keys"), " ", h("span", { class: "count" }, String(this.keys.length))),
        this.keysTable(),
        this.keyForm(),
      ),
    );
    refocus(this.el, focused);
  }

  grantText(item) {
    const { i18n } = this.app;
    const sep = i18n.lang === "zh" ? "、" : ", ";
    const parts = [];
    if (item.kinds?.length) parts.push(`${this.t("people.kinds")}: ${item.kinds.map((k) => i18n.kind(k)).join(sep)}`);
    if (item.districts?.length) parts.push(`${this.t("people.districts")}: ${item.districts.map((d) => i18n.district(d)).join(sep)}`);
    if (item.vendor) parts.push(`${this.t("people.vendor")}: ${item.vendor}`);
    if (item.teams?.length) parts.push(`${this.t("people.teams")}: ${item.teams.join(sep)}`);
    return parts.length ? parts.join("; ") : this.t("kpi.none");
  }

  // -- people -------------------------------------------------------------------------

  userState(user) {
    if (user.disabled) return "disabled";
    if (user.locked_until) return "locked";
    return "active";
  }

  usersTable() {
    const { i18n } = this.app;
    const t = (key, params) => this.t(key, params);
    if (this.loaded && !this.users.length) return h("p", { class: "empty" }, t("people.users.empty"));
    const heads = ["people.username", "people.display_name", "people.role", "people.grant", "people.state", "people.password_changed", "people.created", null];
    return h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "registry people" },
        h("thead", {}, h("tr", {}, heads.map((key) => h("th", { scope: "col" }, key ? t(key) : "")))),
        h(
          "tbody",
          {},
          this.users.map((u) => {
            const state = this.userState(u);
            const self = u.username === this.app.session?.username;
            return [
              h(
                "tr",
                { dataset: { username: u.username, state, role: u.role } },
                h("td", { class: "device-id" }, u.username),
                h("td", {}, u.display_name),
                h("td", {}, t(`people.role.${u.role}`)),
                h("td", { class: "grant" }, this.grantText(u)),
                h(
                  "td",
                  {},
                  h("span", { class: ["chip", state === "active" ? "state-online" : "state-decommissioned"] }, t(`people.state.${state}`)),
                  state === "locked" ? h("span", { class: "hint" }, ` ${t("people.locked_until", { time: i18n.time(u.locked_until) })}`) : null,
                ),
                h("td", {}, i18n.time(u.password_changed_at)),
                h("td", {}, `${i18n.time(u.created_at)} · ${u.created_by}`),
                h("td", { class: "actions" }, this.userActions(u, state, self)),
              ),
              this.passwordFor === u.username ? h("tr", { class: "password-row" }, h("td", { colspan: heads.length }, this.passwordForm(u))) : null,
            ];
          }),
        ),
      ),
    );
  }

  userActions(user, state, self) {
    const t = (key) => this.t(key);
    const busy = this.busy.has(`user:${user.username}`);
    const button = (action, label, change) => h("button", { type: "button", class: action, dataset: { action }, disabled: busy, on: { click: () => this.change(user.username, change) } }, t(label));
    return [
      state === "locked" ? button("unlock", "people.unlock", { unlock: true }) : null,
      // An administrator cannot disable themself (the API answers 409): no button for it.
      user.disabled ? button("enable", "people.enable", { disabled: false }) : self ? null : button("disable", "people.disable", { disabled: true }),
      h(
        "button",
        { type: "button", class: "set-password", dataset: { action: "password" }, disabled: busy, on: { click: () => this.openPassword(user.username) } },
        t("people.set_password"),
      ),
    ];
  }

  openPassword(username) {
    this.passwordFor = this.passwordFor === username ? null : username;
    this.newPassword = { password: "", password2: "" };
    this.passwordError = "";
    this.render();
  }

  passwordForm(user) {
    const t = (key, params) => this.t(key, params);
    const draft = this.newPassword;
    const field = (id, name, label) => {
      const input = h("input", { id, type: "password", autocomplete: "new-password", required: true, minlength: MIN_PASSWORD, on: { input: (e) => (draft[name] = e.currentTarget.value) } });
      input.value = draft[name];
      return [h("label", { for: id }, label), input];
    };
    return h(
      "form",
      { class: "password-form", on: { submit: (e) => this.setPassword(e, user.username) } },
      h("p", { class: "hint" }, t("people.password.hint", { n: MIN_PASSWORD })),
      field("pw-new", "password", t("people.password")),
      field("pw-new2", "password2", t("people.password2")),
      h("p", { class: "error form-error", role: "alert", hidden: !this.passwordError }, this.passwordError),
      h("button", { type: "submit", class: "primary save-password", disabled: this.busy.has(`user:${user.username}`) }, t("people.password.save")),
      h("button", { type: "button", class: "cancel", on: { click: () => this.openPassword(user.username) } }, t("people.cancel")),
    );
  }

  async setPassword(event, username) {
    event.preventDefault();
    const { password, password2 } = this.newPassword;
    if (password !== password2) {
      this.passwordError = this.t("people.password.mismatch");
      this.render();
      return;
    }
    const done = await this.change(username, { password }, (error) => (this.passwordError = error));
    if (done) {
      this.passwordFor = null;
      this.app.notify(this.t("people.password.changed", { username }));
    }
    this.render();
  }

  /** PATCH /users/{username}; on a refusal, `onError(text)` or the page's notice. */
  async change(username, body, onError = null) {
    const key = `user:${username}`;
    if (this.busy.has(key)) return false;
    this.busy.add(key);
    this.render();
    let done = false;
    try {
      const row = await this.app.api.patch(`/users/${encodeURIComponent(username)}`, body);
      this.users = this.users.map((u) => (u.username === row.username ? row : u));
      done = true;
    } catch (error) {
      if (onError) onError(this.app.describe(error));
      else this.app.notify(this.app.describe(error));
    }
    this.busy.delete(key);
    this.render();
    return done;
  }

  grantInputs(prefix, draft) {
    const t = (key) => this.t(key);
    return (GRANT_FIELDS[draft.role] ?? []).map((field) => {
      const id = `${prefix}-${field}`;
      const input = h("input", { id, type: "text", required: field === "teams" || field === "vendor", placeholder: t(`people.${field}.placeholder`), on: { input: (e) => (draft[field] = e.currentTarget.value) } });
      input.value = draft[field];
      return h("div", { class: "field" }, h("label", { for: id }, t(`people.${field}`)), input);
    });
  }

  roleSelect(id, draft) {
    const select = h(
      "select",
      { id, on: { change: (e) => ((draft.role = e.currentTarget.value), this.render()) } },
      ROLES.map((role) => h("option", { value: role }, this.t(`people.role.${role}`))),
    );
    select.value = draft.role;
    return h("div", { class: "field" }, h("label", { for: id }, this.t("people.role")), select);
  }

  textInput(id, draft, name, label, props = {}) {
    const input = h("input", { id, type: "text", ...props, on: { input: (e) => (draft[name] = e.currentTarget.value) } });
    input.value = draft[name];
    return h("div", { class: "field" }, h("label", { for: id }, label), input);
  }

  personForm() {
    const t = (key, params) => this.t(key, params);
    const draft = this.person;
    const made = h("input", { id: "person-made", type: "checkbox", on: { change: (e) => ((draft.made = e.currentTarget.checked), this.render()) } });
    made.checked = draft.made;
    return h(
      "form",
      { class: "person-form", on: { submit: (e) => this.createPerson(e) } },
      h("h4", {}, t("people.new")),
      this.textInput("person-username", draft, "username", t("people.username"), { required: true, autocomplete: "off" }),
      this.textInput("person-display", draft, "display_name", t("people.display_name"), { maxlength: 200 }),
      this.roleSelect("person-role", draft),
      this.grantInputs("person", draft),
      h("div", { class: "field" }, made, h("label", { for: "person-made" }, t("people.password.made"))),
      draft.made
        ? null
        : [
            this.textInput("person-password", draft, "password", t("people.password"), { type: "password", autocomplete: "new-password", required: true }),
            this.textInput("person-password2", draft, "password2", t("people.password2"), { type: "password", autocomplete: "new-password", required: true }),
            h("p", { class: "hint" }, t("people.password.hint", { n: MIN_PASSWORD })),
          ],
      h("p", { class: "error form-error", role: "alert", hidden: !this.personError }, this.personError),
      h("button", { type: "submit", class: "primary create", disabled: this.busy.has("person") }, t("people.create")),
    );
  }

  async createPerson(event) {
    event.preventDefault();
    const draft = this.person;
    if (!draft.made && draft.password !== draft.password2) {
      this.personError = this.t("people.password.mismatch");
      this.render();
      return;
    }
    const body = { username: draft.username.trim(), role: draft.role, display_name: draft.display_name.trim(), ...grantOf(draft) };
    if (!draft.made) body.password = draft.password;
    this.busy.add("person");
    this.personError = "";
    this.render();
    try {
      const made = await this.app.api.post("/users", body);
      const { password, ...row } = made;
      this.users = [...this.users.filter((u) => u.username !== row.username), row].sort((a, b) => (a.username < b.username ? -1 : 1));
      this.secret = password ? { kind: "password", who: row.username, value: password } : null;
      this.person = blankPerson();
    } catch (error) {
      // The API's detail says what to change (the password's length, a grant): shown as it comes.
      this.personError = this.app.describe(error);
    }
    this.busy.delete("person");
    this.render();
  }

  // -- keys ---------------------------------------------------------------------------

  keyState(key) {
    if (key.revoked_at) return "revoked";
    if (key.expired) return "expired";
    return "active";
  }

  keysTable() {
    const { i18n } = this.app;
    const t = (key) => this.t(key);
    if (this.loaded && !this.keys.length) return h("p", { class: "empty" }, t("people.keys.empty"));
    const heads = ["people.key_id", "people.key_name", "people.role", "people.grant", "people.state", "people.expires", "people.created", null];
    return h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "registry keys" },
        h("thead", {}, h("tr", {}, heads.map((key) => h("th", { scope: "col" }, key ? t(key) : "")))),
        h(
          "tbody",
          {},
          this.keys.map((k) => {
            const state = this.keyState(k);
            return h(
              "tr",
              { dataset: { keyId: k.id, state, role: k.role } },
              h("td", { class: "device-id" }, k.id),
              h("td", {}, k.name),
              h("td", {}, t(`people.role.${k.role}`)),
              h("td", { class: "grant" }, this.grantText(k)),
              h("td", {}, h("span", { class: ["chip", state === "active" ? "state-online" : "state-decommissioned"] }, t(`people.state.${state}`))),
              h("td", {}, k.expires_at ? i18n.time(k.expires_at) : t("people.expires.never")),
              h("td", {}, `${i18n.time(k.created_at)} · ${k.created_by}`),
              h("td", { class: "actions" }, state === "revoked" ? null : this.revokeButton(k)),
            );
          }),
        ),
      ),
    );
  }

  revokeButton(key) {
    const confirming = this.confirming === key.id;
    return h(
      "button",
      { type: "button", class: ["revoke", confirming ? "confirming" : ""], disabled: this.busy.has(`key:${key.id}`), on: { click: () => this.revoke(key.id) } },
      this.t(confirming ? "vendors.revoke.confirm" : "vendors.revoke"),
    );
  }

  keyForm() {
    const t = (key, params) => this.t(key, params);
    const draft = this.key;
    const expiry = h(
      "select",
      { id: "key-expiry", on: { change: (e) => ((draft.expiry = e.currentTarget.value), this.render()) } },
      EXPIRY_DAYS.map((n) => h("option", { value: n }, t("people.expires.days", { n }))),
      h("option", { value: UNTIL }, t("people.expires.until")),
      h("option", { value: NEVER }, t("people.expires.never")),
    );
    expiry.value = draft.expiry;
    const until = h("input", { id: "key-until", type: "date", required: true, on: { input: (e) => (draft.until = e.currentTarget.value) } });
    until.value = draft.until;
    return h(
      "form",
      { class: "key-form", on: { submit: (e) => this.createKey(e) } },
      h("h4", {}, t("people.key.new")),
      this.textInput("key-name", draft, "name", t("people.key_name"), { maxlength: 200 }),
      this.roleSelect("key-role", draft),
      this.grantInputs("key", draft),
      h("div", { class: "field" }, h("label", { for: "key-expiry" }, t("people.expires")), expiry),
      draft.expiry === UNTIL ? h("div", { class: "field" }, h("label", { for: "key-until" }, t("people.expires.date")), until) : null,
      h("p", { class: "error form-error", role: "alert", hidden: !this.keyError }, this.keyError),
      h("button", { type: "submit", class: "primary create", disabled: this.busy.has("key") }, t("people.key.create")),
    );
  }

  async createKey(event) {
    event.preventDefault();
    const draft = this.key;
    const body = { role: draft.role, name: draft.name.trim(), ...grantOf(draft) };
    const expires = expiryOf(draft, this.app.i18n.zone);
    if (expires) body.expires_at = expires;
    this.busy.add("key");
    this.keyError = "";
    this.render();
    try {
      const made = await this.app.api.post("/keys", body);
      const { key, ...row } = made;
      this.keys = [...this.keys.filter((k) => k.id !== row.id), row];
      this.secret = { kind: "key", who: row.name || row.id, value: key };
      this.key = blankKey();
    } catch (error) {
      this.keyError = this.app.describe(error);
    }
    this.busy.delete("key");
    this.render();
  }

  /** Revoke a key: the first press asks, the second revokes. */
  async revoke(id) {
    if (this.confirming !== id) {
      this.confirming = id;
      this.render();
      return;
    }
    this.confirming = null;
    this.busy.add(`key:${id}`);
    this.render();
    try {
      const row = await this.app.api.delete(`/keys/${encodeURIComponent(id)}`);
      this.keys = this.keys.map((k) => (k.id === row.id ? row : k));
    } catch (error) {
      this.app.notify(this.app.describe(error));
    }
    this.busy.delete(`key:${id}`);
    this.render();
  }

  // -- the secret shown once ----------------------------------------------------------

  secretPanel() {
    const t = (key, params) => this.t(key, params);
    const s = this.secret;
    const code = h("code", { class: "secret-value" }, s.value);
    return h(
      "div",
      { class: "secret", role: "alert", dataset: { secret: s.kind } },
      h("p", { class: "secret-warning" }, t(s.kind === "key" ? "people.once.key" : "people.once.password")),
      h(
        "dl",
        { class: "facts" },
        h("div", {}, h("dt", {}, t(s.kind === "key" ? "people.key_name" : "people.username")), h("dd", {}, h("code", { class: "secret-who" }, s.who))),
        h("div", {}, h("dt", {}, t(s.kind === "key" ? "people.key" : "secret.password")), h("dd", {}, code)),
      ),
      h(
        "div",
        { class: "secret-tools" },
        h("button", { type: "button", class: "copy", on: { click: (e) => this.copy(s.value, code, e.currentTarget) } }, t("secret.copy")),
        h("button", { type: "button", class: "done", on: { click: () => ((this.secret = null), this.render()) } }, t("secret.done")),
      ),
    );
  }

  async copy(value, code, button) {
    try {
      await navigator.clipboard.writeText(value);
      button.textContent = this.t("secret.copied");
    } catch {
      // No clipboard here (refused, or not a secure origin): select it for Ctrl+C.
      const range = document.createRange();
      range.selectNodeContents(code);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      button.textContent = this.t("secret.copy.manual");
    }
  }
}
