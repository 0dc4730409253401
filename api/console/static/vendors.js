// Vendors (#/vendors): each vendor with its codec, its devices (how many, over which links),
// its MQTT accounts and its intake token for CTWing and OneNET pushes. An administrator
// issues and revokes accounts and issues tokens; a new password or token is shown once,
// held in this page's memory only until it is closed or the page is left.

import { h } from "./dom.js";

export const VENDOR_ROLES = new Set(["admin", "operator"]); // GET /vendors/{id}/credentials (api/routes/vendors.py)
const ISSUER_ROLES = new Set(["admin"]); // POST …/credentials, DELETE …/credentials/{u}, POST …/intake-token

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
    this.el.replaceChildren(head, h("ul", { class: "vendor-list" }, this.vendors.map((v) => this.card(v, stats.get(v.id)))));
  }

  card(vendor, stats = { n: 0, online: 0, links: new Set() }) {
    const { i18n } = this.app;
    const t = (key, params) => i18n.t(key, params);
    const fact = (name, label, ...value) => h("div", { dataset: { fact: name } }, h("dt", {}, label), h("dd", {}, ...value));
    const description = this.codecs.get(vendor.codec);
    const links = [...stats.links].sort().map((link) => i18n.link(link));
    return h(
      "li",
      { class: "panel vendor", dataset: { vendorId: vendor.id } },
      h("h3", {}, h("span", { class: "vendor-name" }, vendor.name), " ", h("span", { class: "device-id" }, vendor.id)),
      h(
        "dl",
        { class: "facts" },
        fact("codec", t("vendors.codec"), h("code", {}, vendor.codec), description ? h("span", { class: "hint" }, ` · ${i18n.summary(description)[0]}`) : null),
        fact("devices", t("vendors.devices"), t("vendors.devices.count", { n: stats.n, online: stats.online })),
        fact("links", t("vendors.links"), links.length ? links.join(i18n.lang === "zh" ? "、" : ", ") : t("kpi.none")),
        fact("created", t("vendors.created"), i18n.time(vendor.created_at)),
        fact("publish", t("vendors.publish"), h("code", {}, vendor.topics.publish.join(" "))),
        fact("subscribe", t("vendors.subscribe"), h("code", {}, vendor.topics.subscribe.join(" "))),
      ),
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
