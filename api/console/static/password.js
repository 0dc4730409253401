// One's own password (POST /api/v1/session/password): the header's "Change password" opens
// this small form. The API ends every session of the account when it changes the password,
// so the sign-in page follows; the passwords typed are held only while the form is open.

import { Api } from "./api.js";
import { h, focusOf, refocus } from "./dom.js";

const MIN_PASSWORD = 12; // api/people.py; the API checks it and says which rule a password breaks

function blank() {
  return { current: "", password: "", password2: "" };
}

export class OwnPassword {
  constructor(app) {
    this.app = app;
    this.open = false;
    this.busy = false;
    this.error = "";
    this.draft = blank();
    this.el = h("section", { class: "panel own-password", hidden: true });
  }

  toggle() {
    if (this.open) {
      this.close();
      return;
    }
    this.open = true;
    this.render();
    this.el.querySelector("#own-current")?.focus();
  }

  /** Closed, and the passwords typed forgotten. */
  close() {
    this.open = false;
    this.draft = blank();
    this.error = "";
    this.render();
  }

  render() {
    const t = (key, params) => this.app.i18n.t(key, params);
    const focused = focusOf(this.el);
    this.el.hidden = !this.open;
    this.app.passwordButton?.setAttribute("aria-expanded", String(this.open));
    if (!this.open) {
      this.el.replaceChildren();
      return;
    }
    const draft = this.draft;
    const field = (id, name, label, autocomplete) => {
      const input = h("input", { id, name: id, type: "password", autocomplete, required: true, on: { input: (e) => (draft[name] = e.currentTarget.value) } });
      input.value = draft[name];
      return [h("label", { for: id }, label), input];
    };
    this.el.replaceChildren(
      h(
        "form",
        { class: "own-password-form", on: { submit: (e) => this.submit(e) } },
        h("h2", {}, t("password.title")),
        h("p", { class: "hint" }, t("password.hint", { n: MIN_PASSWORD })),
        field("own-current", "current", t("password.current"), "current-password"),
        field("own-new", "password", t("password.new"), "new-password"),
        field("own-new2", "password2", t("password.new2"), "new-password"),
        h("p", { class: "error form-error", role: "alert", hidden: !this.error }, this.error),
        h(
          "div",
          { class: "form-tools" },
          h("button", { type: "submit", class: "primary save-own-password", disabled: this.busy }, t("password.save")),
          h("button", { type: "button", class: "cancel", on: { click: () => this.close() } }, t("password.cancel")),
        ),
      ),
    );
    refocus(this.el, focused);
  }

  async submit(event) {
    event.preventDefault();
    if (this.busy) return;
    const t = (key, params) => this.app.i18n.t(key, params);
    const { current, password, password2 } = this.draft;
    if (password !== password2) {
      this.error = t("password.mismatch");
      this.render();
      return;
    }
    this.busy = true;
    this.error = "";
    this.render();
    // Not the console's Api: a 401 here is a wrong current password, not an ended session.
    const api = new Api(this.app.session?.csrf_token);
    try {
      await api.post("/session/password", { current_password: current, new_password: password });
    } catch (error) {
      this.busy = false;
      this.error = error.status === 401 ? t("error.other", { status: error.status, detail: error.detail }) : this.app.describe(error);
      this.render();
      return;
    }
    this.busy = false;
    this.close();
    // Every session of the account has ended, this one too: sign in with the new password.
    this.app.ended();
    this.app.notify(t("password.changed"));
  }
}
