// Sign-in: a person's username and password (POST /api/v1/session). The session lives in an
// HttpOnly cookie the page cannot read; the CSRF token the answer carries is kept in memory
// only (GET /api/v1/session gives it again after a reload). Nothing is put in storage.

import { Api } from "./api.js";
import { h } from "./dom.js";

export const LEGACY_KEY_STORAGE = "cityiot.key"; // where earlier consoles kept an API key

/** The signed-in person ({username, role, csrf_token, …}), or null when no session is open
 * (no cookie: 204; an ended one: 401, and the browser is told to forget it). */
export async function currentSession() {
  try {
    return await new Api().get("/session");
  } catch (error) {
    if (error.unauthorized) return null;
    throw error;
  }
}

export class SignInView {
  /** `onSession(session)`: signed in. `message`: why we are here (optional). */
  constructor(app, { message = "", onSession }) {
    this.app = app;
    this.message = message;
    this.onSession = onSession;
    this.busy = false;
    this.el = h("div", { class: "signin-page" });
  }

  render() {
    const t = (key, params) => this.app.i18n.t(key, params);
    const username = h("input", {
      id: "username",
      name: "username",
      type: "text",
      autocomplete: "username",
      autocapitalize: "none",
      spellcheck: "false",
      required: true,
    });
    const password = h("input", {
      id: "password",
      name: "password",
      type: "password",
      autocomplete: "current-password",
      required: true,
    });
    const status = h("p", { class: this.message ? "error" : "hint", role: "alert", id: "signin-message" }, this.message || t("signin.help"));
    const form = h(
      "form",
      { class: "panel signin", on: { submit: (e) => this.submit(e, username, password, status) } },
      h("h2", {}, t("signin.title")),
      h("label", { for: "username" }, t("signin.username")),
      username,
      h("label", { for: "password" }, t("signin.password")),
      password,
      h("button", { type: "submit", class: "primary" }, t("signin.submit")),
      status,
      this.message ? h("p", { class: "hint" }, t("signin.help")) : null,
    );
    this.el.replaceChildren(form);
    username.focus();
  }

  async submit(event, username, password, status) {
    event.preventDefault();
    if (this.busy) return;
    const t = (k, params) => this.app.i18n.t(k, params);
    const name = username.value.trim();
    if (!name || !password.value) {
      this.show(status, t("error.empty"));
      return;
    }
    this.busy = true;
    status.className = "hint";
    status.textContent = t("signin.checking");
    try {
      const session = await new Api().post("/session", { username: name, password: password.value });
      password.value = "";
      this.onSession(session);
    } catch (error) {
      password.value = "";
      this.show(status, this.describe(error));
    } finally {
      this.busy = false;
    }
  }

  describe(error) {
    const t = (k, params) => this.app.i18n.t(k, params);
    if (error.status === 401) return t("signin.wrong");
    if (error.status === 423) return t("signin.locked", { detail: error.detail });
    if (error.status === 429) return t("signin.slow");
    return this.app.describe(error);
  }

  show(status, text) {
    this.message = text;
    status.className = "error";
    status.textContent = text;
  }
}
