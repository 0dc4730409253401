// The dead-letter room (#/deadletters): every message the platform rejected, newest first,
// with why (GET /api/v1/deadletters), filtered by the API's own filters — vendor, device and
// text in the reason — a page at a time. Payloads are shown as text, never as markup.

import { h, latestAnswer, replace } from "./dom.js";

/** Roles the API lets read dead letters (READERS in api/routes/deadletters.py). */
export const DEADLETTER_ROLES = new Set(["admin", "operator", "vendor"]);
const PAGE = 50;
const PREVIEW_CHARS = 2000; // a payload longer than this is cut until "show all"
const REASON_MAX = 200; // the reason filter's max_length
const UNDECODABLE = "\uFFFD"; // the API's stand-in for bytes that are not UTF-8

/** How a payload is best read: as text, or as base64 when its bytes are not UTF-8 text. */
export function payloadShown(letter) {
  return letter.payload.includes(UNDECODABLE) ? { encoding: "base64", text: letter.payload_base64 } : { encoding: "text", text: letter.payload };
}

/** Bytes the platform kept of a payload (the API sends them as base64). */
function storedBytes(base64) {
  const padding = base64.endsWith("==") ? 2 : base64.endsWith("=") ? 1 : 0;
  return (base64.length / 4) * 3 - padding;
}

export class DeadLettersView {
  constructor(app) {
    this.app = app;
    this.items = [];
    this.cursor = null;
    this.loaded = false;
    this.busy = false;
    this.asked = 0; // answers to an earlier question (filters changed since) are dropped
    this.filters = { vendor: "", device_id: "", reason: "" }; // as typed
    this.applied = { ...this.filters }; // as asked for: "more" pages on with these
    this.vendors = [];
    this.whole = new Set(); // ids whose whole payload is shown
    this.el = h("div", { class: "deadletters-page" });
  }

  async load() {
    this.loadVendors();
    await this.fetch({ more: false });
  }

  async loadVendors() {
    try {
      this.vendors = (await this.app.api.all("/vendors")).map((v) => v.id).sort();
    } catch (error) {
      this.app.notify(this.app.describe(error));
    }
    this.render();
  }

  /** The first page for the filters (`more`: false), or the next one. */
  async fetch({ more }) {
    if (!more) this.applied = { ...this.filters };
    const params = { limit: PAGE, cursor: more ? this.cursor : undefined };
    for (const [name, value] of Object.entries(this.applied)) if (value) params[name] = value;
    await latestAnswer(
      this,
      () => this.app.api.get("/deadletters", params),
      (page) => {
        this.items = more ? [...this.items, ...page.items] : page.items;
        this.cursor = page.next_cursor;
        this.loaded = true;
      },
      (error) => this.app.notify(this.app.describe(error)),
    );
  }

  devicesChanged() {
    this.render();
  }

  render() {
    const t = (key, params) => this.app.i18n.t(key, params);
    this.el.dataset.loaded = String(this.loaded);
    this.el.dataset.busy = String(this.busy);
    replace(
      this.el,
      h("div", { class: "room-head" }, h("h2", {}, t("dl.title")), h("p", { class: "hint" }, t("dl.hint"))),
      this.filterForm(),
      this.loaded && !this.items.length ? h("p", { class: "empty" }, t("dl.empty")) : null,
      h("ol", { class: "deadletters" }, this.items.map((letter) => this.letter(letter))),
      this.cursor
        ? h("button", { type: "button", class: "more", disabled: this.busy, on: { click: () => this.fetch({ more: true }) } }, t(this.busy ? "dl.loading" : "dl.more"))
        : null,
    );
  }

  filterForm() {
    const t = (key, params) => this.app.i18n.t(key, params);
    const keep = (name) => (e) => (this.filters[name] = e.currentTarget.value.trim());
    const vendors = [...new Set([...this.vendors, this.filters.vendor].filter(Boolean))];
    const vendor = h(
      "select",
      { id: "dl-vendor", on: { change: keep("vendor") } },
      h("option", { value: "" }, t("dl.vendors")),
      vendors.map((id) => h("option", { value: id }, id)),
    );
    vendor.value = this.filters.vendor;
    const device = h("input", { id: "dl-device", type: "text", maxlength: 64, on: { input: keep("device_id") } });
    device.value = this.filters.device_id;
    const reason = h("input", { id: "dl-reason", type: "search", maxlength: REASON_MAX, placeholder: t("dl.reason.placeholder"), on: { input: keep("reason") } });
    reason.value = this.filters.reason;
    return h(
      "form",
      {
        class: "room-filters",
        on: {
          submit: (e) => {
            e.preventDefault();
            this.whole.clear();
            this.fetch({ more: false });
          },
        },
      },
      h("label", { for: "dl-vendor" }, t("dl.vendor")),
      vendor,
      h("label", { for: "dl-device" }, t("dl.device")),
      device,
      h("label", { for: "dl-reason" }, t("dl.reason")),
      reason,
      h("button", { type: "submit", class: "apply" }, t("dl.apply")),
    );
  }

  letter(letter) {
    const { i18n } = this.app;
    const t = (key, params) => i18n.t(key, params);
    const shown = payloadShown(letter);
    const whole = this.whole.has(letter.id) || shown.text.length <= PREVIEW_CHARS;
    const device = letter.device_id
      ? this.app.devices.has(letter.device_id)
        ? h("a", { href: `#/device/${encodeURIComponent(letter.device_id)}` }, letter.device_id)
        : letter.device_id
      : t("kpi.none");
    return h(
      "li",
      { class: "deadletter", dataset: { deadletterId: String(letter.id), vendor: letter.vendor ?? "" } },
      h(
        "dl",
        { class: "facts" },
        h("div", {}, h("dt", {}, t("dl.time")), h("dd", {}, h("time", { datetime: letter.received_at }, i18n.time(letter.received_at, { seconds: true })))),
        h("div", {}, h("dt", {}, t("dl.vendor")), h("dd", { class: "dl-vendor" }, letter.vendor ?? t("kpi.none"))),
        h("div", {}, h("dt", {}, t("dl.device")), h("dd", { class: "dl-device" }, device)),
        h("div", {}, h("dt", {}, t("dl.topic")), h("dd", { class: "dl-topic" }, letter.topic)),
      ),
      h("p", { class: "dl-reason" }, letter.reason),
      h(
        "p",
        { class: "hint dl-size" },
        t(shown.encoding === "base64" ? "dl.payload.base64" : "dl.payload.text", { size: letter.payload_size }),
        letter.truncated ? ` · ${t("dl.payload.cut", { stored: storedBytes(letter.payload_base64) })}` : "",
      ),
      h("pre", { class: "payload", dataset: { encoding: shown.encoding } }, whole ? shown.text : `${shown.text.slice(0, PREVIEW_CHARS)}…`),
      shown.text.length > PREVIEW_CHARS
        ? h(
            "button",
            {
              type: "button",
              class: "show-all",
              "aria-expanded": String(whole),
              on: {
                click: () => {
                  if (this.whole.has(letter.id)) this.whole.delete(letter.id);
                  else this.whole.add(letter.id);
                  this.render();
                },
              },
            },
            t(whole ? "dl.less" : "dl.all", { n: shown.text.length }),
          )
        : null,
    );
  }
}
