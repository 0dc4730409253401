// The catalogue room (#/catalogue): the kinds of device (GET/PUT /api/v1/kinds), the codecs
// (GET/PUT /api/v1/codecs, POST /api/v1/codecs/{name}/decode: try a frame) and the rules
// (GET/PUT /api/v1/rules), each listed, opened and edited as the API serves it. Saving is an
// administrator's; an operator reads everything and tries frames. Every answer is shown as
// text: the mappings in text areas, the API's refusals word for word beside the form.
// (catalogue.js is the console's reference data, the titles cache: a saved kind refreshes it.)

import { h, replace, focusOf, refocus } from "./dom.js";
import { LABELS } from "./i18n.js";

/** Roles the API lets read every kind, codec (spec and scripts) and rule, and decode with any
 * codec (STAFF in api/routes/codecs.py; MANAGERS in tests/api/test_roles.py). */
export const CATALOGUE_ROLES = new Set(["admin", "operator"]);
/** Roles the API lets put a kind, a codec or a rule (allow("admin") on every PUT). */
export const CATALOGUE_EDIT_ROLES = new Set(["admin"]);
export const CATALOGUE_TABS = ["kinds", "codecs", "rules"];
const PATHS = { kinds: "/kinds", codecs: "/codecs", rules: "/rules" };
const TRIAL_MODES = ["hex", "json"];

/** A mapping as the text area shows it: the API's JSON, indented. */
function pretty(value) {
  return JSON.stringify(value ?? null, null, 2);
}

export class CatalogueRoomView {
  constructor(app) {
    this.app = app;
    this.tab = "kinds";
    this.lists = { kinds: [], codecs: [], rules: [] };
    this.loaded = false;
    this.open = null; // {tab, id, data, text, scripts, error, saved, saving, loading}
    this.trial = { mode: "hex", payload: "", fport: "0", device: "", result: null, error: "", trying: false };
    this.el = h("div", { class: "catalogue-page" });
  }

  get editable() {
    return CATALOGUE_EDIT_ROLES.has(this.app.session?.role);
  }

  async load() {
    try {
      const [kinds, codecs, rules] = await Promise.all(CATALOGUE_TABS.map((tab) => this.app.api.all(PATHS[tab])));
      this.lists = { kinds, codecs, rules };
      this.loaded = true;
    } catch (error) {
      this.app.notify(this.app.describe(error));
    }
    this.render();
  }

  catalogueChanged() {
    this.render();
  }

  t(key, params) {
    return this.app.i18n.t(key, params);
  }

  render() {
    const t = (key, params) => this.t(key, params);
    // Typing in a text area keeps its focus through a re-render (a language switch).
    const focused = focusOf(this.el);
    this.el.dataset.loaded = String(this.loaded);
    this.el.dataset.tab = this.tab;
    replace(
      this.el,
      h("div", { class: "room-head" }, h("h2", {}, t("cat.title")), h("p", { class: "hint" }, t(this.editable ? "cat.hint" : "cat.hint.readonly"))),
      h(
        "div",
        { class: "cat-tabs", role: "tablist" },
        CATALOGUE_TABS.map((tab) =>
          h(
            "button",
            { type: "button", role: "tab", class: "cat-tab", dataset: { tab }, "aria-selected": String(this.tab === tab), on: { click: () => this.select(tab) } },
            t(`cat.tab.${tab}`),
            " ",
            h("span", { class: "count" }, String(this.lists[tab].length)),
          ),
        ),
      ),
      h("section", { class: "panel cat-list", dataset: { list: this.tab } }, this.list()),
      this.open && this.open.tab === this.tab ? this.detail() : null,
    );
    refocus(this.el, focused);
  }

  select(tab) {
    this.tab = tab;
    this.render();
  }

  // -- lists ----------------------------------------------------------------------------

  list() {
    const t = (key, params) => this.t(key, params);
    const items = this.lists[this.tab];
    if (!items.length) return h("p", { class: "empty" }, t(this.loaded ? "cat.none" : "cat.loading"));
    const heads = { kinds: ["title", "id", "metrics", "origin", ""], codecs: ["name", "description", "source", "scripts", "vendors", ""], rules: ["title", "id", "kind", "type", "severity", "source", ""] }[this.tab];
    const row = { kinds: (k) => this.kindRow(k), codecs: (c) => this.codecRow(c), rules: (r) => this.ruleRow(r) }[this.tab];
    return h(
      "div",
      { class: "table-wrap" },
      h("table", { class: "registry cat-table" }, h("thead", {}, h("tr", {}, heads.map((name) => h("th", {}, name ? t(`cat.col.${name}`) : "")))), h("tbody", {}, items.map(row))),
    );
  }

  openButton(id) {
    const current = this.open?.tab === this.tab && this.open.id === id;
    return h("td", { class: "actions" }, h("button", { type: "button", class: "cat-open", "aria-pressed": String(current), on: { click: () => this.openItem(this.tab, id) } }, this.t("cat.open")));
  }

  kindRow(kind) {
    const { i18n } = this.app;
    return h(
      "tr",
      { dataset: { id: kind.kind } },
      h("td", { class: "cat-title" }, i18n.title(kind.title) || kind.kind),
      h("td", {}, h("code", { class: "raw-id" }, kind.kind)),
      h("td", { class: "cat-metrics" }, String(Object.keys(kind.metrics ?? {}).length)),
      h("td", { class: "cat-origin" }, this.t(`cat.origin.${kind.origin}`), kind.file ? [" · ", h("code", { class: "raw-id" }, kind.file)] : null),
      this.openButton(kind.kind),
    );
  }

  codecRow(codec) {
    const t = (key, params) => this.t(key, params);
    const [description] = this.app.i18n.summary(codec.description ?? "");
    const scripts = [codec.has_decoder ? t("cat.codec.decoder") : null, codec.has_encoder ? t("cat.codec.encoder") : null].filter(Boolean);
    return h(
      "tr",
      { dataset: { id: codec.name } },
      h("td", {}, h("code", { class: "raw-id" }, codec.name)),
      h("td", { class: "cat-description" }, description),
      h("td", { class: "cat-source" }, this.source(codec.source)),
      h("td", {}, scripts.length ? scripts.join(" · ") : t("cat.codec.noscript"), " ", t("cat.codec.examples", { n: codec.examples?.uplink ?? 0 })),
      h("td", {}, codec.vendors ? codec.vendors.join(", ") : "—"),
      this.openButton(codec.name),
    );
  }

  ruleRow(rule) {
    const t = (key, params) => this.t(key, params);
    return h(
      "tr",
      { dataset: { id: rule.id } },
      h("td", { class: "cat-title" }, this.ruleTitle(rule)),
      h("td", {}, h("code", { class: "raw-id" }, rule.id)),
      h("td", { class: "cat-kind" }, rule.kind === "*" ? t("cat.rule.every_kind") : this.app.i18n.kind(rule.kind)),
      h("td", {}, t(`cat.rule.type.${rule.type}`)),
      h("td", {}, h("span", { class: ["chip", `sev-${rule.severity}`] }, t(`severity.${rule.severity}`))),
      h("td", { class: "cat-source" }, this.source(rule.source)),
      this.openButton(rule.id),
    );
  }

  /** A rule's summary in this language, each {metric} placeholder named by its title. */
  ruleTitle(rule) {
    const { i18n } = this.app;
    const line = i18n.title(rule.summary) || rule.id;
    const kinds = rule.kinds ?? [];
    return line.replace(/\{(\w+)\}/g, (_, name) => {
      for (const kind of kinds) {
        const known = this.app.catalogue.data.kinds[kind];
        const metric = known?.metricsByName.get(name) ?? known?.attributesByName.get(name);
        if (metric?.title) return `‹${i18n.title(metric.title)}›`;
      }
      return "…";
    });
  }

  /** Where a version in force came from: shipped, a file (its path), or put through the API. */
  source(source) {
    const key = `cat.source.${source}`;
    return key in LABELS.zh ? this.t(key) : h("code", { class: "raw-id" }, source);
  }

  // -- one item -------------------------------------------------------------------------

  async openItem(tab, id) {
    this.open = { tab, id, data: null, text: "", scripts: {}, error: "", saved: "", saving: false, loading: true };
    this.trial = { ...this.trial, result: null, error: "" };
    this.render();
    await this.fetchItem(this.open);
  }

  async fetchItem(open) {
    try {
      this.show(open, await this.app.api.get(`${PATHS[open.tab]}/${encodeURIComponent(open.id)}`));
    } catch (error) {
      open.error = this.app.describe(error);
    }
    open.loading = false;
    if (this.open === open) this.render();
  }

  /** The API's answer as the form shows it (after opening, and after a save). */
  show(open, data) {
    open.data = data;
    if (open.tab === "kinds") open.text = pretty(data);
    else if (open.tab === "rules") open.text = pretty(data.definition);
    else {
      open.text = data.spec ? pretty(data.spec) : "";
      open.scripts = { ...(data.scripts ?? {}) };
    }
  }

  detail() {
    const t = (key, params) => this.t(key, params);
    const open = this.open;
    const { data } = open;
    const head = h("h3", {}, t(`cat.open.${open.tab}`), " ", h("code", { class: "raw-id" }, open.id));
    if (!data) {
      return h("section", { class: "panel cat-detail", dataset: { id: open.id } }, head, h("p", { class: "error form-error", role: "alert", hidden: !open.error }, open.error), open.loading ? h("p", { class: "hint" }, t("cat.loading")) : null);
    }
    const facts = this.facts(open);
    const editor = open.tab === "codecs" && !data.spec ? h("p", { class: "hint cat-note" }, data.note ?? "") : this.form(open);
    return h(
      "section",
      { class: "panel cat-detail", dataset: { id: open.id, tab: open.tab } },
      head,
      facts,
      editor,
      open.tab === "codecs" ? this.trialForm(open) : null,
    );
  }

  /** What the opened item is made of: a kind's metrics, a rule's limits, who put it last. */
  facts(open) {
    const t = (key, params) => this.t(key, params);
    const { i18n } = this.app;
    const { data } = open;
    const put = data.updated_at ? h("p", { class: "hint cat-version" }, t("cat.version", { at: i18n.time(data.updated_at), by: data.updated_by ?? "" })) : null;
    if (open.tab === "kinds") {
      const metrics = Object.entries(data.metrics ?? {});
      return [
        h("p", { class: "cat-kind-title" }, i18n.title(data.title), " · ", t(`cat.origin.${data.origin}`), " · ", t("cat.kind.interval", { s: data.report_interval_s })),
        put,
        h(
          "table",
          { class: "registry cat-metrics-table" },
          h("thead", {}, h("tr", {}, ["metric", "unit", "range"].map((c) => h("th", {}, t(`cat.col.${c}`))))),
          h(
            "tbody",
            {},
            metrics.map(([name, m]) =>
              h(
                "tr",
                { dataset: { metric: name } },
                h("td", {}, i18n.title(m.title) || name),
                h("td", {}, m.unit ?? ""),
                h("td", {}, Array.isArray(m.range) ? `${m.range[0]} – ${m.range[1]}` : Array.isArray(m.values) ? m.values.join(" / ") : m.type === "bool" ? `${t("bool.true")} / ${t("bool.false")}` : "—"),
              ),
            ),
          ),
        ),
      ];
    }
    if (open.tab === "rules") {
      const limits = (data.thresholds ?? []).map((l) => {
        const kind = (data.kinds ?? []).find((k) => this.app.catalogue.data.kinds[k]?.metricsByName.has(l.metric));
        return h("li", { dataset: { metric: l.metric } }, `${kind ? i18n.metric(kind, l.metric) : l.metric} ${l.op} ${l.value}`);
      });
      return [h("p", { class: "cat-rule-title" }, this.ruleTitle(data)), put, limits.length ? h("ul", { class: "cat-limits" }, limits) : null];
    }
    return [h("p", { class: "cat-source-line" }, t("cat.col.source"), ": ", this.source(data.source)), put];
  }

  form(open) {
    const t = (key, params) => this.t(key, params);
    const readonly = !this.editable;
    const text = h("textarea", {
      id: `cat-text-${open.tab}`,
      class: "cat-text",
      rows: 18,
      spellcheck: "false",
      readonly,
      "aria-label": t(`cat.text.${open.tab}`),
      on: { input: (e) => (open.text = e.currentTarget.value) },
    });
    text.value = open.text;
    const scripts = open.tab === "codecs"
      ? Object.keys(open.scripts).map((file, i) => {
          const area = h("textarea", { id: `cat-script-${i}`, class: "cat-script", dataset: { file }, rows: 14, spellcheck: "false", readonly, "aria-label": file, on: { input: (e) => (open.scripts[file] = e.currentTarget.value) } });
          area.value = open.scripts[file];
          return [h("label", { for: `cat-script-${i}` }, t("cat.script", { file })), area];
        })
      : null;
    return h(
      "form",
      { class: "cat-form", on: { submit: (e) => this.save(e, open) } },
      h("label", { for: `cat-text-${open.tab}` }, t(`cat.text.${open.tab}`)),
      text,
      scripts,
      h("p", { class: "error form-error", role: "alert", hidden: !open.error }, open.error),
      h("p", { class: "saved", role: "status", hidden: !open.saved }, open.saved),
      this.editable ? h("button", { type: "submit", class: "primary cat-save", disabled: open.saving }, t(open.saving ? "cat.saving" : "cat.save")) : null,
    );
  }

  async save(event, open) {
    event.preventDefault();
    if (!this.editable || open.saving) return;
    let parsed;
    try {
      parsed = JSON.parse(open.text);
    } catch (error) {
      open.error = this.t("cat.json.bad", { reason: error.message });
      open.saved = "";
      this.render();
      return;
    }
    const body = open.tab === "codecs" ? { spec: parsed, scripts: open.scripts } : parsed;
    open.saving = true;
    open.error = "";
    open.saved = "";
    this.render();
    try {
      const answer = await this.app.api.request("PUT", `${PATHS[open.tab]}/${encodeURIComponent(open.id)}`, { body });
      this.show(open, answer);
      open.saved = this.t("cat.saved", { at: this.app.i18n.time(answer.updated_at), by: answer.updated_by ?? "" });
      this.lists[open.tab] = await this.app.api.all(PATHS[open.tab]).catch(() => this.lists[open.tab]); // saved: the list is only older
      if (open.tab === "kinds") this.app.catalogue.refresh(); // titles everywhere follow the kind
    } catch (error) {
      // The API's detail names the field and what to change: shown as it comes.
      open.error = this.app.describe(error);
    }
    open.saving = false;
    this.render();
  }

  // -- trying a frame -------------------------------------------------------------------

  trialForm(open) {
    const t = (key, params) => this.t(key, params);
    const { trial } = this;
    const mode = h("select", { id: "cat-trial-mode", on: { change: (e) => ((trial.mode = e.currentTarget.value), this.render()) } }, TRIAL_MODES.map((m) => h("option", { value: m }, t(`cat.trial.mode.${m}`))));
    mode.value = trial.mode;
    const payload = h("textarea", { id: "cat-trial-payload", class: "cat-trial-payload", rows: 3, spellcheck: "false", placeholder: t(`cat.trial.placeholder.${trial.mode}`), on: { input: (e) => (trial.payload = e.currentTarget.value) } });
    payload.value = trial.payload;
    const fport = h("input", { id: "cat-trial-fport", type: "number", min: 0, max: 255, on: { input: (e) => (trial.fport = e.currentTarget.value) } });
    fport.value = trial.fport;
    const device = h("input", { id: "cat-trial-device", type: "text", maxlength: 64, list: "cat-trial-devices", on: { input: (e) => (trial.device = e.currentTarget.value) } });
    device.value = trial.device;
    return h(
      "form",
      { class: "cat-trial", on: { submit: (e) => this.tryFrame(e, open) } },
      h("h4", {}, t("cat.trial.title")),
      h("p", { class: "hint" }, t("cat.trial.hint")),
      h("label", { for: "cat-trial-mode" }, t("cat.trial.mode")),
      mode,
      h("label", { for: "cat-trial-payload" }, t("cat.trial.payload")),
      payload,
      h("label", { for: "cat-trial-fport" }, t("cat.trial.fport")),
      fport,
      h("label", { for: "cat-trial-device" }, t("cat.trial.device")),
      device,
      h("datalist", { id: "cat-trial-devices" }, [...this.app.devices.keys()].sort().map((id) => h("option", { value: id }))),
      h("button", { type: "submit", class: "cat-try", disabled: trial.trying }, t(trial.trying ? "cat.trial.trying" : "cat.trial.try")),
      h("p", { class: "error trial-error", role: "alert", hidden: !trial.error }, trial.error),
      trial.result ? this.trialResult(trial.result) : null,
    );
  }

  async tryFrame(event, open) {
    event.preventDefault();
    const { trial } = this;
    const body = { fPort: Number(trial.fport) || 0 };
    if (trial.device.trim()) body.device_id = trial.device.trim();
    if (trial.mode === "hex") body.bytes_hex = trial.payload.trim();
    else {
      try {
        body.json = JSON.parse(trial.payload);
      } catch (error) {
        trial.result = null;
        trial.error = this.t("cat.json.bad", { reason: error.message });
        this.render();
        return;
      }
    }
    trial.trying = true;
    trial.error = "";
    trial.result = null;
    this.render();
    try {
      trial.result = await this.app.api.post(`/codecs/${encodeURIComponent(open.id)}/decode`, body);
    } catch (error) {
      // The dead letter's reason, word for word: what the ingest would say of this payload.
      trial.error = error.status === 422 ? this.t("cat.trial.refused", { reason: error.detail }) : this.app.describe(error);
    }
    trial.trying = false;
    this.render();
  }

  trialResult(result) {
    const t = (key, params) => this.t(key, params);
    const { i18n, catalogue } = this.app;
    const label = (name) => (result.kind && catalogue.metric(result.kind, name) ? i18n.metric(result.kind, name) : name);
    const value = (name, v) => (result.kind ? i18n.value(catalogue.metric(result.kind, name), v) : typeof v === "boolean" ? t(v ? "bool.true" : "bool.false") : String(v));
    return h(
      "div",
      { class: "trial-result", dataset: { readings: String(result.readings.length), rejected: String(result.rejected.length) } },
      h("p", {}, t("cat.trial.readings", { n: result.readings.length }), result.kind ? [" · ", i18n.kind(result.kind)] : null),
      h(
        "ol",
        { class: "trial-readings" },
        result.readings.map((r) =>
          h(
            "li",
            { class: "trial-reading" },
            h("span", { class: "trial-time" }, i18n.time(r.time, { seconds: true }), r.ts_assumed ? ` ${t("cat.trial.assumed")}` : ""),
            h("dl", { class: "trial-metrics" }, Object.entries(r.metrics).map(([name, v]) => h("div", { dataset: { metric: name } }, h("dt", {}, label(name)), h("dd", {}, value(name, v))))),
          ),
        ),
      ),
      result.rejected.length ? h("ul", { class: "trial-rejected" }, result.rejected.map((r) => h("li", {}, t("cat.trial.rejected", { n: r.index + 1, reason: r.reason })))) : null,
      result.note ? h("p", { class: "hint trial-note" }, result.note) : null,
    );
  }
}

