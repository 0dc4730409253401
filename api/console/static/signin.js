// Sign-in: an API key typed in (or given once as #key=… in the link cityiot run prints).

import { Api } from "./api.js";
import { h } from "./dom.js";

export const KEY_STORAGE = "cityiot.key";

/** The key in the address's fragment (#key=…), removed from the address bar at once. */
export function takeKeyFromFragment() {
  if (!location.hash.startsWith("#key=")) return null;
  const key = new URLSearchParams(location.hash.slice(1)).get("key")?.trim() || null;
  history.replaceState(null, "", `${location.pathname}${location.search}`);
  return key;
}

/** Whether `key` opens the API: null when it does, else the error. */
export async function checkKey(key) {
  try {
    await new Api(key).get("/alerts", { limit: 1 });
    return null;
  } catch (error) {
    return error;
  }
}

export class SignInView {
  /** `onKey(key)`: a key that works was entered. `message`: why we are here (optional). */
  constructor(app, { message = "", onKey }) {
    this.app = app;
    this.message = message;
    this.onKey = onKey;
    this.busy = false;
    this.el = h("div", { class: "signin-page" });
  }

  render() {
    const t = (key, params) => this.app.i18n.t(key, params);
    const input = h("input", {
      id: "api-key",
      name: "api-key",
      type: "password",
      autocomplete: "off",
      spellcheck: "false",
      required: true,
      placeholder: "cik_…",
    });
    const status = h("p", { class: this.message ? "error" : "hint", role: "alert", id: "signin-message" }, this.message || t("signin.help"));
    const form = h(
      "form",
      { class: "panel signin", on: { submit: (e) => this.submit(e, input, status) } },
      h("h2", {}, t("signin.title")),
      h("label", { for: "api-key" }, t("signin.key")),
      input,
      h("button", { type: "submit", class: "primary" }, t("signin.submit")),
      status,
      this.message ? h("p", { class: "hint" }, t("signin.help")) : null,
    );
    this.el.replaceChildren(form);
    input.focus();
  }

  async submit(event, input, status) {
    event.preventDefault();
    if (this.busy) return;
    const key = input.value.trim();
    const t = (k, params) => this.app.i18n.t(k, params);
    if (!key) {
      this.show(status, t("error.empty"));
      return;
    }
    this.busy = true;
    status.className = "hint";
    status.textContent = t("signin.checking");
    const error = await checkKey(key);
    this.busy = false;
    if (error) {
      this.show(status, this.app.describe(error));
      return;
    }
    this.onKey(key);
  }

  show(status, text) {
    this.message = text;
    status.className = "error";
    status.textContent = text;
  }
}
