// Vendors (#/vendors): each vendor with its codec, its devices (how many, over which links),
// its MQTT accounts and its intake token for CTWing and OneNET pushes. An administrator
// registers vendors (POST /vendors), changes a vendor's codec (PATCH /vendors/{id}), issues
// and revokes accounts and issues tokens; a new password or token is shown once, held in
// this page's memory only until it is closed or the page is left.

import { h, focusOf, refocus } from "./dom.js";

export const VENDOR_ROLES = new Set(["admin", "operator"]); // GET /vendors/{id}/credentials (api/routes/vendors.py)
// POST /vendors, PATCH /vendors/{id}, POST …/credentials, DELETE …/credentials/{u}, POST …/intake-token
const ISSUER_ROLES = new Set(["admin"]);
const STANDARD_CODEC = "json"; // VendorIn's default: the access standard itself

function blankVendor() {
  return { id: "", name: "", codec: STANDARD_CODEC };
}

const path = (vendorId, rest) => `/vendors/${encodeURIComponent(vendorId)}/${rest}`;

export class VendorsView {
  constructor(app) {
    this.app = app;
    this.vendors = [];
    this.codecs = new Map(); // codec name → its description ("中文 / English")
    this.accounts = new Map(); // vendor id → its MQTT accounts (no secrets)
    this.secret = null; // what was just issued ({kind: "mqtt" | "intake", vendor, …}), until closed
    this.confirming = null; // "vendor/username" whose Revoke was pressed once
    this.busy = new Set(); // actions under way
    this.draft = blankVendor(); // the "register a vendor" form
    this.draftError = "";
    this.codecChoice = new Map(); // vendor id → the codec chosen in its "change codec" select
    this.codecErrors = new Map(); // vendor id → why its codec was not changed
    this.loaded = false;
    this.error = null;
    this.el = h("div", { class: "vendors-page" });
  }

  get issuer() {
    return ISSUER_ROLES.has(this.app.session?.role);
  }

  async load() {
    const api = this.app.api;
    try {
      const [vendors, codecs] = await Promise.all([api.all("/vendors"), api.all("/codecs")]);
      const accounts = await Promise.all(vendors.map((v) => api.all(path(v.id, "credentials"))));
      this.vendors = vendors;
      this.codecs = new Map(codecs.map((c) => [c.name, c.description]));
      this.accounts = new Map(vendors.map((v, i) => [v.id, accounts[i]]));
      this.loaded = true;
      this.error = null;
    } catch (error) {
      this.error = this.app.describe(error);
    }
    this.render();
  }

  async loadAccounts(vendorId) {
    this.accounts.set(vendorId, await this.app.api.all(path(vendorId, "credentials")));
  }

  /** The page is left: the secret shown goes with it. */
  destroy() {
    this.secret = null;
  }

  devicesChanged() {
    this.render();
  }

  render() {
    const t = (key, params) => this.app.i18n.t(key, params);
    // Typing in a form keeps its focus through a re-render (devices arriving, a language switch).
    const focused = focusOf(this.el);
    const head = h(
      "section",
      { class: "panel" },
      h("div", { class: "panel-head" }, h("h2", {}, t("vendors.title")), h("span", { class: "hint" }, t(this.issuer ? "vendors.hint" : "vendors.readonly"))),
      this.error ? h("p", { class: "error" }, this.error) : null,
      !this.loaded && !this.error ? h("p", { class: "hint" }, t("history.loading")) : null,
      this.loaded && !this.vendors.length ? h("p", { class: "empty" }, t("vendors.empty")) : null,
    );
    this.el.dataset.loaded = String(this.loaded);
    const stats = new Map();
    for (const d of this.app.devices.values()) {
      const s = stats.get(d.vendor) ?? { n: 0, online: 0, links: new Set() };
      s.n += 1;
      if (d.status === "online") s.online += 1;
      if (d.link) s.links.add(d.link);
      stats.set(d.vendor, s);
    }
    this.el.replaceChildren(
      ...[head, this.issuer && this.loaded ? this.registerForm() : null, h("ul", { class: "vendor-list" }, this.vendors.map((v) => this.card(v, stats.get(v.id))))].filter(Boolean),
    );
    refocus(this.el, focused);
  }

  /** A codec's title in this language, from its "中文 / English" description; else its name. */
  codecTitle(name) {
    const description = this.codecs.get(name);
    // Some codec files write "中文）/ English": the halves are cut at the first "/ " either way.
    return description ? this.app.i18n.summary(description.replace(/\s*\/\s+/, " / "))[0] : name;
  }

  /** A select of the codecs in force (GET /codecs), by title and name, set to `value`. */
  codecSelect(id, value, onChange) {
    const names = [...this.codecs.keys()];
    if (!names.includes(value)) names.unshift(value); // not in force (any more): still shown as it is
    const select = h(
      "select",
      { id, class: "codec-select", on: { change: (e) => onChange(e.currentTarget.value) } },
      names.map((name) => {
        const title = this.codecTitle(name);
        return h("option", { value: name }, title === name ? name : `${title} (${name})`);
      }),
    );
    select.value = value;
    return select;
  }

  /** "Register a vendor": id, name and codec, as POST /vendors takes them. */
  registerForm() {
    const t = (key, params) => this.app.i18n.t(key, params);
    const draft = this.draft;
    const input = (id, name, props) => {
      const el = h("input", { id, type: "text", required: true, autocomplete: "off", ...props, on: { input: (e) => (draft[name] = e.currentTarget.value) } });
      el.value = draft[name];
      return el;
    };
    return h(
      "section",
      { class: "panel", dataset: { section: "register" } },
      h("h3", {}, t("vendors.register")),
      h("p", { class: "hint" }, t("vendors.register.hint")),
      h(
        "form",
        { class: "vendor-form", on: { submit: (e) => this.register(e) } },
        h("label", { for: "vd-id" }, t("vendors.id")),
        input("vd-id", "id", { maxlength: 64, spellcheck: "false", autocapitalize: "none", placeholder: "acme" }),
        h("label", { for: "vd-name" }, t("vendors.name")),
        input("vd-name", "name", { maxlength: 200 }),
        h("label", { for: "vd-codec" }, t("vendors.codec")),
        this.codecSelect("vd-codec", draft.codec, (value) => (draft.codec = value)),
        h("p", { class: "error form-error vendor-error", role: "alert", hidden: !this.draftError }, this.draftError),
        h("button", { type: "submit", class: "primary create-vendor", disabled: this.busy.has("register") }, t("vendors.register.save")),
      ),
    );
  }

  async register(event) {
    event.preventDefault();
    if (this.busy.has("register")) return;
    const body = { id: this.draft.id.trim(), name: this.draft.name.trim(), codec: this.draft.codec };
    this.busy.add("register");
    this.render();
    try {
      const vendor = await this.app.api.post("/vendors", body);
      this.vendors = [...this.vendors.filter((v) => v.id !== vendor.id), vendor].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      this.accounts.set(vendor.id, []);
      this.draft = blankVendor();
      this.draftError = "";
    } catch (error) {
      this.draftError = this.app.describe(error);
    } finally {
      this.busy.delete("register");
    }
    this.render();
  }

  /** "Change codec" on a vendor's card: a select of the codecs in force and a save button. */
  codecForm(vendor) {
    const t = (key, params) => this.app.i18n.t(key, params);
    const id = `codec-of-${vendor.id}`;
    const chosen = this.codecChoice.get(vendor.id) ?? vendor.codec;
    const error = this.codecErrors.get(vendor.id) ?? "";
    return h(
      "form",
      { class: "codec-form", on: { submit: (e) => this.changeCodec(e, vendor.id) } },
      h("label", { for: id }, t("vendors.codec.change")),
      this.codecSelect(id, chosen, (value) => {
        this.codecChoice.set(vendor.id, value);
        this.codecErrors.delete(vendor.id);
        this.render();
      }),
      h("button", { type: "submit", class: "save-codec", disabled: chosen === vendor.codec || this.busy.has(`codec:${vendor.id}`) }, t("vendors.codec.save")),
      h("p", { class: "error form-error codec-error", role: "alert", hidden: !error }, error),
    );
  }

  async changeCodec(event, vendorId) {
    event.preventDefault();
    const key = `codec:${vendorId}`;
    const codec = this.codecChoice.get(vendorId);
    if (this.busy.has(key) || codec === undefined) return;
    this.busy.add(key);
    this.render();
    try {
      const vendor = await this.app.api.patch(`/vendors/${encodeURIComponent(vendorId)}`, { codec });
      this.vendors = this.vendors.map((v) => (v.id === vendor.id ? vendor : v));
      this.codecChoice.delete(vendorId);
      this.codecErrors.delete(vendorId);
    } catch (error) {
      this.codecErrors.set(vendorId, this.app.describe(error));
    } finally {
      this.busy.delete(key);
    }
    this.render();
  }

  card(vendor, stats = { n: 0, online: 0, links: new Set() }) {
    const { i18n } = this.app;
    const t = (key, params) => i18n.t(key, params);
    const fact = (name, label, ...value) => h("div", { dataset: { fact: name } }, h("dt", {}, label), h("dd", {}, ...value));
    const title = this.codecs.has(vendor.codec) ? this.codecTitle(vendor.codec) : null;
    const links = [...stats.links].sort().map((link) => i18n.link(link));
    return h(
      "li",
      { class: "panel vendor", dataset: { vendorId: vendor.id } },
      h("h3", {}, h("span", { class: "vendor-name" }, vendor.name), " ", h("span", { class: "device-id" }, vendor.id)),
      h(
        "dl",
        { class: "facts" },
        fact("codec", t("vendors.codec"), h("code", {}, vendor.codec), title ? h("span", { class: "hint" }, ` · ${title}`) : null),
        fact("devices", t("vendors.devices"), t("vendors.devices.count", { n: stats.n, online: stats.online })),
        fact("links", t("vendors.links"), links.length ? links.join(i18n.lang === "zh" ? "、" : ", ") : t("kpi.none")),
        fact("created", t("vendors.created"), i18n.time(vendor.created_at)),
        fact("publish", t("vendors.publish"), h("code", {}, vendor.topics.publish.join(" "))),
        fact("subscribe", t("vendors.subscribe"), h("code", {}, vendor.topics.subscribe.join(" "))),
      ),
      this.issuer ? this.codecForm(vendor) : null,
      this.secret?.vendor === vendor.id ? this.secretPanel() : null,
      this.accountsSection(vendor),
      this.intakeSection(vendor),
    );
  }

  accountsSection(vendor) {
    const { i18n } = this.app;
    const t = (key, params) => i18n.t(key, params);
    const accounts = this.accounts.get(vendor.id) ?? [];
    const revokeButton = (account) => {
      const key = `${vendor.id}/${account.username}`;
      const confirming = this.confirming === key;
      return h(
        "button",
        { type: "button", class: ["revoke", confirming ? "confirming" : ""], disabled: this.busy.has(`revoke:${key}`), on: { click: () => this.revoke(vendor.id, account.username) } },
        t(confirming ? "vendors.revoke.confirm" : "vendors.revoke"),
      );
    };
    return h(
      "div",
      { class: "vendor-section", dataset: { section: "accounts" } },
      h("h4", {}, t("vendors.accounts")),
      accounts.length
        ? h(
            "div",
            { class: "table-wrap" },
            h(
              "table",
              { class: "registry accounts" },
              h("thead", {}, h("tr", {}, ["vendors.username", "device.status", "vendors.issued_at", "vendors.issued_by", "vendors.revoked_at", null].map((key) => h("th", { scope: "col" }, key ? t(key) : "")))),
              h(
                "tbody",
                {},
                accounts.map((a) =>
                  h(
                    "tr",
                    { dataset: { username: a.username, active: String(a.active) } },
                    h("td", { class: "device-id" }, a.username),
                    h("td", {}, h("span", { class: ["chip", a.active ? "state-online" : "state-decommissioned"] }, t(a.active ? "vendors.active" : "vendors.revoked"))),
                    h("td", {}, i18n.time(a.created_at)),
                    h("td", {}, a.created_by),
                    h("td", {}, i18n.time(a.revoked_at)),
                    h("td", {}, this.issuer && a.active ? revokeButton(a) : null),
                  ),
                ),
              ),
            ),
          )
        : h("p", { class: "empty" }, t("vendors.accounts.empty")),
      this.issuer
        ? h("button", { type: "button", class: "issue", dataset: { issue: "mqtt" }, disabled: this.busy.has(`mqtt:${vendor.id}`), on: { click: () => this.issue(vendor.id, "mqtt") } }, t("vendors.issue"))
        : null,
    );
  }

  intakeSection(vendor) {
    const t = (key, params) => this.app.i18n.t(key, params);
    return h(
      "div",
      { class: "vendor-section", dataset: { section: "intake" } },
      h("h4", {}, t("vendors.intake")),
      h("p", { class: "hint" }, t("vendors.intake.help", { ctwing: `/api/v1/intake/ctwing/${vendor.id}?token=…`, onenet: `/api/v1/intake/onenet/${vendor.id}` })),
      this.issuer
        ? h("button", { type: "button", class: "issue", dataset: { issue: "intake" }, disabled: this.busy.has(`intake:${vendor.id}`), on: { click: () => this.issue(vendor.id, "intake") } }, t("vendors.intake.issue"))
        : null,
    );
  }

  /** What was just issued: the secret, once, with a copy button and the warning. */
  secretPanel() {
    const { i18n } = this.app;
    const t = (key, params) => i18n.t(key, params);
    const s = this.secret;
    const value = s.kind === "mqtt" ? s.password : s.token;
    const code = h("code", { class: "secret-value" }, value);
    const fact = (label, ...v) => h("div", {}, h("dt", {}, label), h("dd", {}, ...v));
    return h(
      "div",
      { class: "secret", role: "alert", dataset: { secret: s.kind } },
      h("p", { class: "secret-warning" }, t(s.kind === "mqtt" ? "secret.once.password" : "secret.once.token")),
      h(
        "dl",
        { class: "facts" },
        s.kind === "mqtt"
          ? [fact(t("vendors.username"), h("code", { class: "secret-username" }, s.username)), fact(t("secret.password"), code), fact(t("secret.broker"), s.mqtt_url || t("kpi.none"))]
          : fact(t("secret.token"), code),
      ),
      h(
        "div",
        { class: "secret-tools" },
        h("button", { type: "button", class: "copy", on: { click: (e) => this.copy(value, code, e.currentTarget) } }, t("secret.copy")),
        h("button", { type: "button", class: "done", on: { click: () => this.closeSecret() } }, t("secret.done")),
      ),
      s.kind === "mqtt" && !s.broker_reloaded ? h("p", { class: "hint" }, t("secret.not_reloaded")) : null,
      s.kind === "intake" && s.replaced ? h("p", { class: "hint" }, t("secret.replaced")) : null,
      s.kind === "intake" ? h("p", { class: "hint", lang: "en" }, s.note) : null,
    );
  }

  closeSecret() {
    this.secret = null;
    this.render();
  }

  async copy(value, code, button) {
    const t = (key) => this.app.i18n.t(key);
    try {
      await navigator.clipboard.writeText(value);
      button.textContent = t("secret.copied");
    } catch {
      // No clipboard here (refused, or not a secure origin): select it for Ctrl+C.
      const range = document.createRange();
      range.selectNodeContents(code);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      button.textContent = t("secret.copy.manual");
    }
  }

  /** Issue an MQTT account (`mqtt`) or the intake token (`intake`) of the vendor. */
  async issue(vendorId, kind) {
    const key = `${kind}:${vendorId}`;
    if (this.busy.has(key)) return;
    this.busy.add(key);
    this.render();
    try {
      const answer = await this.app.api.post(path(vendorId, kind === "mqtt" ? "credentials" : "intake-token"));
      this.secret = { ...answer, kind, vendor: vendorId };
      if (kind === "mqtt") await this.loadAccounts(vendorId);
    } catch (error) {
      this.app.notify(this.app.describe(error));
    } finally {
      this.busy.delete(key);
    }
    this.render();
  }

  /** Revoke an account: the first press asks, the second revokes. */
  async revoke(vendorId, username) {
    const key = `${vendorId}/${username}`;
    if (this.confirming !== key) {
      this.confirming = key;
      this.render();
      return;
    }
    this.confirming = null;
    this.busy.add(`revoke:${key}`);
    this.render();
    try {
      await this.app.api.delete(path(vendorId, `credentials/${encodeURIComponent(username)}`));
      await this.loadAccounts(vendorId);
    } catch (error) {
      this.app.notify(this.app.describe(error));
    } finally {
      this.busy.delete(`revoke:${key}`);
    }
    this.render();
  }
}
