// The device registry (#/devices): every device the person may see, searched by id or
// address and filtered by kind, district, vendor and status (shown by their titles), a page
// of rows at a time (a city has 100,000 devices); and, for whoever may import, a CSV import
// that lists each refused row with the API's own reason, and a form that registers one device.

import { h, replace, focusOf, refocus } from "./dom.js";
import { deviceOf, draftOf, keepDevice, kindChoices, registryFields } from "./device_form.js";

export const IMPORTER_ROLES = new Set(["admin", "operator"]); // POST /devices/import (api/routes/devices.py)
const VENDOR_READERS = new Set(["admin", "operator", "vendor"]); // GET /vendors (api/routes/vendors.py)
const PAGE_ROWS = 200;
const STATUSES = ["online", "offline", "unknown", "decommissioned"];
const FILTERS = ["kind", "district", "vendor", "status"];
// The columns every device CSV starts with (docs/api.md, "CSV import"); a kind's attribute
// columns and install_date follow.
export const CSV_COLUMNS = ["device_id", "vendor", "kind", "district", "lat", "lon", "address", "report_interval_s"];
const COLUMNS = ["registry.id", "device.kind", "device.district", "device.vendor", "device.status", "device.address", "device.link", "device.last_seen"];

/** The header line of a device CSV for `kind` (from the reference data): its attribute columns too. */
export function csvTemplate(kind) {
  return `${[...CSV_COLUMNS, ...(kind?.attributes ?? []).map((a) => a.name), "install_date"].join(",")}\r\n`;
}

const byId = (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** The register form's inputs, empty. */
function blankDevice() {
  return { ...draftOf(null), device_id: "", vendor: "", kind: "" };
}

export class RegistryView {
  /** `params`: filters from the address (#/devices?district=yicheng&kind=manhole&q=…). */
  constructor(app, params = new URLSearchParams()) {
    this.app = app;
    this.query = params.get("q") ?? "";
    this.filters = Object.fromEntries(FILTERS.map((name) => [name, params.get(name) ?? ""]));
    this.page = 0;
    this.loaded = app.devices.size > 0;
    this.vendorNames = new Map(); // vendor id → name, for the roles that may list vendors
    this.sortedFrom = null; // the device list `byId` was sorted from
    this.byId = [];
    this.templateKind = "";
    this.importing = false;
    this.report = null; // the last import's answer
    this.importError = null;
    this.newDevice = blankDevice(); // the register form's inputs
    this.registering = false;
    this.registerError = "";
    this.el = h("div", { class: "registry-page" });
    this.tableEl = h("div", { class: "registry-table", dataset: { loaded: String(this.loaded) } });
    this.resultEl = h("div", { class: "import-result", role: "status" });
  }

  async load() {
    const vendors = VENDOR_READERS.has(this.app.session?.role) ? this.loadVendors() : null;
    // Opened first, the console's device list may still be on its way: wait for that load
    // (loadDevices shares it), or ask for the list when none is.
    if (!this.app.devices.size) await this.app.loadDevices();
    this.loaded = true;
    await vendors;
    this.render();
  }

  async loadVendors() {
    try {
      const vendors = await this.app.api.all("/vendors");
      this.vendorNames = new Map(vendors.map((v) => [v.id, v.name]));
    } catch {
      // the vendors stay shown by their ids
    }
  }

  devicesChanged() {
    this.loaded = true;
    this.render();
  }

  vendorName(id) {
    return this.vendorNames.get(id) || id;
  }

  /** Every device by id, sorted once per list the console loads (not once per keystroke). */
  sorted() {
    if (this.sortedFrom !== this.app.devices) {
      this.sortedFrom = this.app.devices;
      this.byId = [...this.app.devices.values()].sort(byId);
    }
    return this.byId;
  }

  /** The devices the search and the filters leave, by id. */
  matching() {
    const q = this.query.trim().toLowerCase();
    const { kind, district, vendor, status } = this.filters;
    const rows = [];
    for (const d of this.sorted()) {
      if ((kind && d.kind !== kind) || (district && d.district !== district) || (vendor && d.vendor !== vendor) || (status && d.status !== status)) continue;
      if (q && !d.id.toLowerCase().includes(q) && !(d.address ?? "").toLowerCase().includes(q)) continue;
      rows.push(d);
    }
    return rows;
  }

  render() {
    const { i18n, catalogue } = this.app;
    const t = (key, params) => i18n.t(key, params);
    // The search box keeps its focus and caret through a re-render (a language switch, new devices).
    const active = document.activeElement;
    const caret = active?.id === "registry-search" ? [active.selectionStart, active.selectionEnd] : null;
    const focused = caret ? null : focusOf(this.el); // a field of the register form
    const search = h("input", {
      type: "search",
      id: "registry-search",
      placeholder: t("registry.search.placeholder"),
      "aria-label": t("registry.search"),
      on: {
        input: (e) => {
          this.query = e.currentTarget.value;
          this.page = 0;
          this.renderTable();
        },
      },
    });
    search.value = this.query;
    const seen = { kind: new Set(catalogue.kindIds()), district: new Set(Object.keys(catalogue.data.districts)), vendor: new Set(this.vendorNames.keys()) };
    for (const d of this.app.devices.values()) {
      seen.kind.add(d.kind);
      seen.district.add(d.district);
      seen.vendor.add(d.vendor);
    }
    for (const name of ["kind", "district", "vendor"]) if (this.filters[name]) seen[name].add(this.filters[name]);
    const titled = (ids, title) => [...ids].map((id) => [id, title(id)]).sort((a, b) => a[1].localeCompare(b[1], i18n.locale));
    const choice = (name, label, all, options) => {
      const select = h(
        "select",
        {
          dataset: { filter: name },
          on: {
            change: (e) => {
              this.filters[name] = e.currentTarget.value;
              this.page = 0;
              this.renderTable();
            },
          },
        },
        h("option", { value: "" }, all),
        options.map(([value, text]) => h("option", { value }, text)),
      );
      select.value = this.filters[name];
      return h("label", { class: "map-filter" }, h("span", {}, label), select);
    };
    replace(
      this.el,
      h(
        "section",
        { class: "panel" },
        h("div", { class: "panel-head" }, h("h2", {}, t("registry.title"))),
        h(
          "div",
          { class: "registry-filters" },
          search,
          choice("kind", t("map.kind"), t("map.kinds"), titled(seen.kind, (id) => i18n.kind(id))),
          choice("district", t("map.district"), t("map.districts"), titled(seen.district, (id) => i18n.district(id))),
          choice("vendor", t("device.vendor"), t("registry.vendors"), titled(seen.vendor, (id) => this.vendorName(id))),
          choice("status", t("map.state"), t("map.states"), STATUSES.map((s) => [s, t(`status.${s}`)])),
        ),
        this.tableEl,
      ),
      IMPORTER_ROLES.has(this.app.session?.role) ? h("div", { class: "registry-writers" }, this.registerPanel(), this.importPanel()) : null,
    );
    this.renderTable();
    this.renderResult();
    if (caret) {
      search.focus();
      search.setSelectionRange(...caret);
    }
    refocus(this.el, focused);
  }

  renderTable() {
    const { i18n } = this.app;
    const t = (key, params) => i18n.t(key, params);
    const rows = this.matching();
    const pages = Math.max(1, Math.ceil(rows.length / PAGE_ROWS));
    this.page = Math.min(this.page, pages - 1);
    const shown = rows.slice(this.page * PAGE_ROWS, (this.page + 1) * PAGE_ROWS);
    Object.assign(this.tableEl.dataset, { loaded: String(this.loaded), count: String(rows.length), shown: String(shown.length), page: String(this.page + 1) });
    const turn = (to) => {
      this.page = to;
      this.renderTable();
    };
    replace(
      this.tableEl,
      h("p", { class: "registry-count" }, this.loaded ? t("registry.count", { n: rows.length, total: this.app.devices.size }) : t("registry.loading")),
      shown.length
        ? h(
            "div",
            { class: "table-wrap" },
            h(
              "table",
              { class: "registry" },
              h("thead", {}, h("tr", {}, COLUMNS.map((key) => h("th", { scope: "col" }, t(key))))),
              h("tbody", {}, shown.map((d) => this.row(d))),
            ),
          )
        : this.loaded
          ? h("p", { class: "empty" }, t("registry.empty"))
          : null,
      pages > 1
        ? h(
            "div",
            { class: "pager" },
            h("button", { type: "button", class: "prev", disabled: this.page === 0, on: { click: () => turn(this.page - 1) } }, t("registry.prev")),
            h("span", {}, t("registry.page", { page: this.page + 1, pages })),
            h("button", { type: "button", class: "next", disabled: this.page === pages - 1, on: { click: () => turn(this.page + 1) } }, t("registry.next")),
          )
        : null,
    );
  }

  row(d) {
    const { i18n } = this.app;
    const t = (key, params) => i18n.t(key, params);
    return h(
      "tr",
      { dataset: { deviceId: d.id } },
      h("td", {}, h("a", { href: `#/device/${encodeURIComponent(d.id)}`, class: "device-id" }, d.id)),
      h("td", { dataset: { col: "kind" } }, i18n.kind(d.kind)),
      h("td", { dataset: { col: "district" } }, h("a", { href: `#/district/${encodeURIComponent(d.district)}` }, i18n.district(d.district))),
      h("td", { dataset: { col: "vendor" } }, this.vendorName(d.vendor)),
      h("td", { dataset: { col: "status" } }, h("span", { class: ["chip", `state-${d.status}`] }, t(`status.${d.status}`))),
      h("td", { class: "address", dataset: { col: "address" } }, d.address || t("kpi.none")),
      h("td", { dataset: { col: "link" } }, i18n.link(d.link)),
      h("td", { dataset: { col: "last_seen" } }, i18n.time(d.last_seen)),
    );
  }

  // -- registering one device ------------------------------------------------------------

  registerPanel() {
    const { i18n, catalogue } = this.app;
    const t = (key, params) => i18n.t(key, params);
    const draft = this.newDevice;
    const kinds = kindChoices(this.app);
    if (!kinds.some(([id]) => id === draft.kind)) this.chooseKind(kinds[0]?.[0] ?? "");
    const vendors = [...this.vendorNames.keys()]
      .map((id) => [id, this.vendorName(id)])
      .sort((a, b) => a[1].localeCompare(b[1], i18n.locale));
    const label = { vendor: t("device.vendor"), kind: t("device.kind") };
    const select = (name, options, onChange) => {
      const el = h(
        "select",
        { id: `reg-${name}`, on: { change: (e) => onChange(e.currentTarget.value) } },
        draft[name] ? null : h("option", { value: "" }, t("devform.choose")),
        options.map(([value, title]) => h("option", { value }, title)),
      );
      el.value = draft[name];
      return h("div", { class: "field", dataset: { field: name } }, h("label", { for: el.id }, label[name]), el);
    };
    const id = h("input", { id: "reg-device-id", type: "text", maxlength: 64, autocomplete: "off", on: { input: (e) => (draft.device_id = e.currentTarget.value) } });
    id.value = draft.device_id;
    return h(
      "section",
      { class: "panel register", dataset: { panel: "register" } },
      h("div", { class: "panel-head" }, h("h2", {}, t("register.title"))),
      h("p", { class: "hint" }, t("register.hint")),
      h(
        "form",
        { class: "device-form register-form", novalidate: true, on: { submit: (e) => this.register(e) } },
        h(
          "div",
          { class: "device-fields" },
          h("div", { class: "field", dataset: { field: "device_id" } }, h("label", { for: id.id }, t("registry.id")), id),
          select("vendor", vendors, (value) => (draft.vendor = value)),
          select("kind", kinds, (value) => {
            this.chooseKind(value);
            this.render();
          }),
          registryFields(this.app, draft, catalogue.kind(draft.kind), "reg"),
        ),
        h("p", { class: "error form-error", role: "alert", hidden: !this.registerError }, this.registerError),
        h("div", { class: "form-buttons" }, h("button", { type: "submit", class: "primary register-submit", disabled: this.registering }, t(this.registering ? "register.sending" : "register.submit"))),
      ),
    );
  }

  /** The kind of the device to register; its report interval is the kind's unless typed. */
  chooseKind(id) {
    const draft = this.newDevice;
    const interval = (kindId) => String(this.app.catalogue.kind(kindId)?.report_interval_s ?? "");
    if (!draft.report_interval_s || draft.report_interval_s === interval(draft.kind)) draft.report_interval_s = interval(id);
    draft.kind = id;
  }

  async register(event) {
    event.preventDefault();
    if (this.registering) return;
    const body = deviceOf(this.newDevice, this.app.catalogue.kind(this.newDevice.kind));
    this.registering = true;
    this.registerError = "";
    this.render();
    let device = null;
    try {
      device = await this.app.api.post("/devices", body);
    } catch (error) {
      this.registerError = this.app.describe(error);
    } finally {
      this.registering = false;
    }
    if (!device) {
      this.render();
      return;
    }
    this.newDevice = blankDevice();
    keepDevice(this.app, device);
    this.app.openDevice(device.id);
  }

  // -- CSV import -----------------------------------------------------------------------

  importPanel() {
    const { i18n, catalogue } = this.app;
    const t = (key, params) => i18n.t(key, params);
    const admin = this.app.session?.role === "admin";
    const file = h("input", { type: "file", id: "import-file", accept: ".csv,text/csv" });
    const createVendors = admin ? h("input", { type: "checkbox", id: "import-create-vendors" }) : null;
    const kinds = catalogue.kindIds();
    if (!kinds.includes(this.templateKind)) this.templateKind = kinds[0] ?? "";
    const template = h("a", { class: "template" }, t("import.template"));
    const setTemplate = () => {
      // A byte-order mark, so that a spreadsheet opens the Chinese in it as UTF-8.
      template.href = `data:text/csv;charset=utf-8,${encodeURIComponent(`\ufeff${csvTemplate(catalogue.kind(this.templateKind))}`)}`;
      template.download = `devices-${this.templateKind || "template"}.csv`;
    };
    setTemplate();
    const kindSelect = h(
      "select",
      {
        id: "template-kind",
        on: {
          change: (e) => {
            this.templateKind = e.currentTarget.value;
            setTemplate();
          },
        },
      },
      kinds.map((id) => h("option", { value: id }, i18n.kind(id))),
    );
    kindSelect.value = this.templateKind;
    const submit = h("button", { type: "submit", class: "primary", disabled: this.importing }, t(this.importing ? "import.sending" : "import.submit"));
    return h(
      "section",
      { class: "panel import", dataset: { panel: "import" } },
      h("div", { class: "panel-head" }, h("h2", {}, t("import.title"))),
      h("p", { class: "hint" }, t("import.help", { columns: CSV_COLUMNS.join(",") })),
      h("div", { class: "template-row" }, h("label", { class: "map-filter" }, h("span", {}, t("import.template.kind")), kindSelect), template),
      h(
        "form",
        {
          class: "import-form",
          on: {
            submit: (e) => {
              e.preventDefault();
              this.send(file.files[0], createVendors?.checked ?? false);
            },
          },
        },
        h("label", { for: "import-file" }, t("import.file")),
        file,
        createVendors ? h("label", { class: "check" }, createVendors, h("span", {}, t("import.create_vendors"))) : null,
        submit,
      ),
      this.resultEl,
    );
  }

  async send(file, createVendors) {
    this.report = null;
    this.importError = file ? null : this.app.i18n.t("import.choose");
    if (!file) {
      this.renderResult();
      return;
    }
    this.importing = true;
    this.render();
    try {
      this.report = await this.app.api.upload("/devices/import", file, "text/csv", createVendors ? { create_vendors: "true" } : undefined);
    } catch (error) {
      this.importError = this.app.describe(error);
    } finally {
      this.importing = false;
    }
    this.render();
    if (this.report && (this.report.created || this.report.updated)) {
      await this.app.devicesLoading; // a load begun before the import would miss its rows
      await this.app.loadDevices(); // shows them here
    }
  }

  renderResult() {
    const t = (key, params) => this.app.i18n.t(key, params);
    const r = this.report;
    this.resultEl.dataset.state = this.importError ? "error" : r ? "done" : this.importing ? "sending" : "idle";
    if (this.importError) {
      this.resultEl.replaceChildren(h("p", { class: "error" }, this.importError));
      return;
    }
    if (!r) {
      this.resultEl.replaceChildren();
      return;
    }
    const refused = new Set(r.errors.map((e) => e.line)).size;
    Object.assign(this.resultEl.dataset, { created: r.created, updated: r.updated, unchanged: r.unchanged, refused });
    replace(
      this.resultEl,
      h("p", { class: "import-counts" }, t("import.result", { created: r.created, updated: r.updated, unchanged: r.unchanged, refused })),
      r.vendors_created.length ? h("p", { class: "hint" }, t("import.vendors_created", { list: r.vendors_created.join(", ") })) : null,
      r.errors.length ? this.problems("errors", t("import.errors"), r.errors) : null,
      r.warnings.length ? this.problems("warnings", t("import.warnings"), r.warnings) : null,
    );
  }

  /** Problems with rows, each with its line in the file, its column and the API's words. */
  problems(name, title, list) {
    const t = (key, params) => this.app.i18n.t(key, params);
    return h(
      "div",
      { class: "import-problems", dataset: { problems: name } },
      h("h3", {}, title),
      h("p", { class: "hint" }, t("import.lines")),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "registry" },
          h("thead", {}, h("tr", {}, ["import.line", "import.column", "import.reason"].map((key) => h("th", { scope: "col" }, t(key))))),
          h(
            "tbody",
            {},
            list.map((p) =>
              h(
                "tr",
                { dataset: { line: String(p.line) } },
                h("td", { class: "problem-line" }, String(p.line)),
                h("td", { class: "problem-column" }, p.column ?? t("kpi.none")),
                h("td", { class: "problem-reason" }, p.message),
              ),
            ),
          ),
        ),
      ),
    );
  }
}
