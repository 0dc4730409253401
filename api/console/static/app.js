// The console: sign-in, the page frame, routing (#/, #/device/{id}, #/devices, #/district/{id},
// #/vendors, #/workorders, #/screen and the rooms below) and the state every view draws
// from — devices, open alerts, the overview — kept current by the live stream, never by
// polling; the reference data (names of kinds, metrics, districts) is looked at again every
// minute and when something unknown turns up.

import { Alerting } from "./alerting.js";
import { OPEN_STATES } from "./alerts.js";
import { Api } from "./api.js";
import { AUDIT_ROLES, AuditView } from "./audit.js";
import { BoardView } from "./board.js";
import { Catalogue } from "./catalogue.js";
import { CATALOGUE_ROLES, CatalogueRoomView } from "./catalogue_room.js";
import { DEADLETTER_ROLES, DeadLettersView } from "./deadletters.js";
import { DeviceView } from "./device.js";
import { DistrictView } from "./district.js";
import { h, replace } from "./dom.js";
import { I18n } from "./i18n.js";
import { OverviewView } from "./overview.js";
import { OwnPassword } from "./password.js";
import { PARKING_ROLES, ParkingView } from "./parking.js";
import { PEOPLE_ROLES, PeopleView } from "./people.js";
import { RegistryView } from "./registry.js";
import { ScreenView } from "./screen.js";
import { LEGACY_KEY_STORAGE, SignInView, currentSession } from "./signin.js";
import { SILENCE_ROLES, SilencesView } from "./silences.js";
import { LiveStream } from "./stream.js";
import { VENDOR_ROLES, VendorsView } from "./vendors.js";

const OVERVIEW_REFRESH_MS = 300; // after an alert event, at most this often

// The rooms only some roles may open (the roles the API lets use them), in the nav's order:
// the address opens the view; its section name (the address's last part) labels it `nav.{name}`.
const ROOMS = [
  ["#/vendors", VendorsView, VENDOR_ROLES],
  ["#/deadletters", DeadLettersView, DEADLETTER_ROLES],
  ["#/silences", SilencesView, SILENCE_ROLES],
  ["#/people", PeopleView, PEOPLE_ROLES],
  ["#/catalogue", CatalogueRoomView, CATALOGUE_ROLES],
  ["#/audit", AuditView, AUDIT_ROLES],
  ["#/parking", ParkingView, PARKING_ROLES],
];
const sectionOf = (address) => address.slice("#/".length);

class Console {
  constructor(root, catalogue, storage) {
    this.root = root;
    this.catalogue = catalogue;
    this.storage = storage;
    this.i18n = new I18n(storage, catalogue);
    this.api = null;
    this.stream = null;
    this.devices = new Map();
    this.devicesLoading = null; // the device list's load under way
    this.alerts = new Map(); // open alerts (firing, acknowledged) by id
    this.alertEvents = null; // ids changed by events while the alert list loads
    this.overview = null;
    this.overviewError = null;
    this.overviewTimer = null;
    this.view = null;
    this.overviewView = null;
    this.liveState = "connecting";
    this.liveWaitMs = 0;

    this.nav = h("nav", { class: "nav" });
    this.live = h("span", { class: "live", role: "status" });
    this.langButton = h("button", { type: "button", class: "lang", on: { click: () => this.i18n.toggle() } });
    this.alertingButton = h("button", { type: "button", class: "alerting", on: { click: () => this.alerting.toggle() } });
    this.signOutButton = h("button", { type: "button", class: "signout", on: { click: () => this.signOut() } });
    // One's own password: for a person signed in with a password (GET /session names them).
    this.ownPassword = new OwnPassword(this);
    this.passwordButton = h("button", { type: "button", class: "own-password-open", on: { click: () => this.ownPassword.toggle() } });
    this.who = h("span", { class: "who" });
    this.brand = h("a", { class: "brand", href: "#/" });
    this.notice = h("div", { class: "notice", role: "alert", hidden: true });
    this.main = h("main", { id: "view" });
    replace(
      root,
      h("header", { class: "bar" }, this.brand, this.nav, h("div", { class: "bar-tools" }, this.live, this.who, this.alertingButton, this.langButton, this.passwordButton, this.signOutButton)),
      this.ownPassword.el,
      this.notice,
      this.main,
    );
    // Sound, flash and desktop notification for critical and major alerts arriving live;
    // a view that wants them on by default (the big screen) calls this.alerting.enable().
    this.alerting = new Alerting({ storage, i18n: this.i18n, root: this.main, onOpen: (id) => this.openDevice(id) });
    this.alerting.onChange(() => this.render());
    this.i18n.onChange(() => this.render());
    catalogue.onChange(() => {
      this.view?.catalogueChanged?.();
      this.render();
    });
    window.addEventListener("hashchange", () => this.route());
  }

  async boot() {
    // Earlier consoles kept an API key in the browser's storage: no secret stays there now.
    this.storage.removeItem(LEGACY_KEY_STORAGE);
    if (location.hash.startsWith("#key=")) history.replaceState(null, "", `${location.pathname}${location.search}`);
    let session = null;
    try {
      session = await currentSession();
    } catch (error) {
      this.showSignIn(this.describe(error));
      return;
    }
    if (session) this.start(session);
    else this.showSignIn();
  }

  // -- signing in and out ---------------------------------------------------------------

  showSignIn(message = "") {
    this.ownPassword.close();
    this.stream?.stop();
    this.stream = null;
    this.api = null;
    this.session = null;
    this.root.dataset.signedIn = "false";
    delete this.root.dataset.role;
    this.show(new SignInView(this, { message, onSession: (session) => this.start(session) }));
  }

  /** Sign out: the API ends the session (every tab of it), then the sign-in form. */
  async signOut(message = "") {
    const api = this.api;
    this.ended(message);
    try {
      await api?.delete("/session");
    } catch {
      // already ended (idle, or signed out in another tab): nothing more to do
    }
  }

  /** The session is over (signed out, or the API says it ended): forget what it showed. */
  ended(message = "") {
    this.devices.clear();
    this.alerts.clear();
    this.overview = null;
    this.overviewView = null;
    this.showSignIn(message);
  }

  start(session) {
    this.session = session;
    this.api = new Api(session.csrf_token, () => this.ended(this.i18n.t("error.401")));
    this.root.dataset.signedIn = "true";
    this.root.dataset.role = session.role;
    this.stream = new LiveStream({
      status: (state, waitMs) => this.setLive(state, waitMs),
      ready: (_, reconnected) => reconnected && this.reload(),
      alert: (event) => this.alertEvent(event),
      reading: (reading) => this.view?.reading?.(reading),
      refused: (status, detail) => (status === 401 ? this.ended(this.i18n.t("error.401")) : this.notify(this.i18n.t("error.403", { detail }))),
      ended: () => this.ended(this.i18n.t("error.401")),
    });
    this.route();
    this.reload();
  }

  /** Everything the views show, fetched afresh (at sign-in, and after the stream was away). */
  async reload() {
    await Promise.all([this.loadDevices(), this.loadAlerts(), this.loadOverview(), this.catalogue.refresh()]);
  }

  /** The device list afresh; a load already under way is shared, not asked for twice
   * (the registry opened at sign-in asks while the sign-in's reload is loading it). */
  loadDevices() {
    this.devicesLoading ??= this.fetchDevices().finally(() => (this.devicesLoading = null));
    return this.devicesLoading;
  }

  async fetchDevices() {
    try {
      // The list leaves decommissioned devices out unless asked for them.
      const lists = await Promise.all([this.api.all("/devices"), this.api.all("/devices", { status: "decommissioned" })]);
      this.devices = new Map(lists.flat().map((d) => [d.id, d]));
      this.view?.devicesChanged?.();
    } catch (error) {
      this.notify(this.describe(error));
    }
  }

  async loadAlerts() {
    const changed = new Set();
    this.alertEvents = changed;
    try {
      const lists = await Promise.all([...OPEN_STATES].map((state) => this.api.all("/alerts", { state })));
      const fresh = new Map(lists.flat().map((a) => [a.id, a]));
      for (const id of changed) {
        if (this.alerts.has(id)) fresh.set(id, this.alerts.get(id));
        else fresh.delete(id); // resolved meanwhile
      }
      this.alerts = fresh;
      this.view?.alertsChanged?.();
    } catch (error) {
      this.notify(this.describe(error));
    } finally {
      if (this.alertEvents === changed) this.alertEvents = null;
    }
  }

  async loadOverview() {
    try {
      this.overview = await this.api.get("/stats/overview");
      this.overviewError = null;
    } catch (error) {
      if (error.unauthorized) return;
      this.overviewError = this.describe(error);
    }
    this.view?.overviewChanged?.();
  }

  // -- live events ----------------------------------------------------------------------

  alertEvent(event) {
    // New: firing and not open before (an acknowledgement or a repeat is not news).
    const arrived = event.state === "firing" && !this.alerts.has(event.id);
    this.upsertAlert(event);
    this.view?.alertsChanged?.(event);
    if (arrived) this.alerting.arrived(event);
    // The tiles count alerts: ask for them again, at most once per interval of events.
    this.overviewTimer ??= setTimeout(() => {
      this.overviewTimer = null;
      this.loadOverview();
    }, OVERVIEW_REFRESH_MS);
  }

  upsertAlert(alert) {
    this.alertEvents?.add(alert.id);
    if (OPEN_STATES.has(alert.state)) this.alerts.set(alert.id, alert);
    else this.alerts.delete(alert.id);
  }

  /** Device id → severity of its open alerts (the map paints these red). */
  alertingDevices() {
    const alerting = new Map();
    for (const alert of this.alerts.values()) alerting.set(alert.device_id, alert.severity);
    return alerting;
  }

  async acknowledge(alert, button) {
    button.disabled = true;
    button.textContent = this.i18n.t("alerts.acking");
    try {
      this.alertEvent(await this.api.post(`/alerts/${encodeURIComponent(alert.id)}/ack`));
    } catch (error) {
      this.notify(this.describe(error));
      if (error.status === 409) {
        this.alertEvent(await this.api.get(`/alerts/${encodeURIComponent(alert.id)}`).catch(() => alert));
      } else {
        button.disabled = false;
        button.textContent = this.i18n.t("alerts.ack");
      }
    }
  }

  setLive(state, waitMs = 0) {
    this.liveState = state;
    this.liveWaitMs = waitMs;
    this.renderLive();
  }

  // -- pages ----------------------------------------------------------------------------

  openDevice(id) {
    location.hash = `#/device/${encodeURIComponent(id)}`;
  }

  route() {
    if (!this.api) return;
    const hash = location.hash;
    const room = ROOMS.find(([address, , roles]) => hash === address && roles.has(this.session?.role));
    const device = /^#\/device\/(.+)$/.exec(hash);
    if (device) {
      const id = decodeURIComponent(device[1]);
      const view = new DeviceView(this, id);
      this.show(view, "overview");
      this.stream.watch(id);
      view.load();
    } else if (hash === "#/devices" || hash.startsWith("#/devices?")) {
      this.open(new RegistryView(this, new URLSearchParams(hash.slice("#/devices?".length))), "devices");
    } else if (/^#\/district\/[^/]+$/.test(hash)) {
      this.open(new DistrictView(this, decodeURIComponent(hash.slice("#/district/".length))), "devices");
    } else if (hash === "#/screen") {
      this.show(new ScreenView(this), "screen");
      this.stream.watch(null);
    } else if (hash === "#/workorders") {
      this.open(new BoardView(this), "workorders");
    } else if (room) {
      const [address, View] = room;
      this.open(new View(this), sectionOf(address));
    } else {
      this.overviewView ??= new OverviewView(this);
      this.show(this.overviewView, "overview");
      this.stream.watch(null);
    }
  }

  /** Show a view that loads its data itself and follows no device on the stream. */
  open(view, section) {
    this.show(view, section);
    this.stream.watch(null);
    view.load();
  }

  show(view, section = null) {
    this.view?.destroy?.();
    this.view = view;
    this.section = section;
    this.notice.hidden = true;
    this.main.replaceChildren(view.el);
    this.render();
  }

  render() {
    const t = (key, params) => this.i18n.t(key, params);
    document.documentElement.lang = this.i18n.lang === "zh" ? "zh-CN" : "en";
    document.title = this.i18n.appTitle();
    this.brand.textContent = this.i18n.appTitle();
    this.langButton.textContent = t("lang.switch");
    this.langButton.title = t("lang.switch.title");
    this.alertingButton.textContent = t(this.alerting.on ? "alerting.on" : "alerting.off");
    this.alertingButton.title = t("alerting.title");
    this.alertingButton.setAttribute("aria-pressed", String(this.alerting.on));
    this.signOutButton.textContent = t("nav.signout");
    const signedIn = Boolean(this.api);
    this.signOutButton.hidden = !signedIn;
    this.passwordButton.textContent = t("nav.password");
    this.passwordButton.hidden = !(signedIn && this.session?.username);
    this.ownPassword.render();
    this.alertingButton.hidden = !signedIn;
    this.who.hidden = !signedIn;
    this.who.textContent = signedIn && this.session ? this.session.display_name || this.session.username : "";
    this.live.hidden = !signedIn;
    this.nav.replaceChildren(
      ...(signedIn
        ? [
            ["overview", "#/", "nav.overview"],
            ["devices", "#/devices", "nav.devices"],
            ["workorders", "#/workorders", "nav.workorders"],
            ["screen", "#/screen", "nav.screen"],
            // Rooms only for the roles the API lets use them.
            ...ROOMS.filter(([, , roles]) => roles.has(this.session?.role)).map(([address]) => [sectionOf(address), address, `nav.${sectionOf(address)}`]),
          ].map(([name, href, label]) =>
            h("a", { href, dataset: { nav: name }, "aria-current": this.section === name ? "page" : null }, t(label)),
          )
        : []),
    );
    this.renderLive();
    this.view?.render();
  }

  renderLive() {
    const t = (key, params) => this.i18n.t(key, params);
    this.live.dataset.state = this.liveState;
    this.live.title = t("live.title");
    this.live.textContent =
      this.liveState === "waiting" ? t("live.waiting", { s: Math.ceil(this.liveWaitMs / 1000) }) : t(`live.${this.liveState}`);
  }

  // -- messages -------------------------------------------------------------------------

  /** A user-facing sentence for an API error. */
  describe(error) {
    const t = (key, params) => this.i18n.t(key, params);
    if (!error.status) return t("error.network");
    if (error.status === 401) return t("error.401");
    if (error.status === 403) return t("error.403", { detail: error.detail });
    return t("error.other", { status: error.status, detail: error.detail });
  }

  notify(text) {
    this.notice.replaceChildren(
      h("span", {}, text),
      h("button", { type: "button", class: "dismiss", "aria-label": "×", on: { click: () => (this.notice.hidden = true) } }, "×"),
    );
    this.notice.hidden = false;
  }
}

async function main() {
  const root = document.getElementById("app");
  const catalogue = new Catalogue();
  await catalogue.load(); // on failure names fall back to ids until the next look
  catalogue.start();
  await new Console(root, catalogue, window.localStorage).boot();
}

main();
