// Alerts that are noticed: when a critical or major alert fires live, its row flashes for a
// few seconds and, with the top bar's sound toggle on, two short beeps sound (Web Audio: an oscillator,
// no audio file, no request) and a desktop notification shows when the browser allows them.
// Alerts already open when the page loads stay quiet.

export const LOUD = new Set(["critical", "major"]);
const STORAGE_KEY = "cityiot.alerting"; // "on" / "off": a preference, not a secret
const FLASH_MS = 6000;
const BEEPS = [0, 0.28]; // start of each beep, seconds after the first
const BEEP_S = 0.18;
const PITCH_HZ = { critical: 880, major: 660 };

export class Alerting {
  /**
   * `root`: the element the views draw into; a flashing alert's rows (`[data-alert-id]`) get
   * the `flash` class there, also when a view draws them again while the flash lasts.
   */
  constructor({ storage, i18n, root, onOpen }) {
    this.storage = storage;
    this.i18n = i18n;
    this.root = root;
    this.onOpen = onOpen;
    const kept = storage.getItem(STORAGE_KEY);
    this.chosen = kept === "on" || kept === "off"; // the person switched it in this browser
    this.on = kept === "on"; // off by default in the console
    this.audio = null;
    this.flashing = new Map(); // alert id → timer ending its flash
    this.listeners = new Set();
    new MutationObserver(() => this.paint()).observe(root, { childList: true, subtree: true });
    // Browsers keep audio shut until a gesture on the page: after a reload with the toggle
    // on, the first click or key opens it.
    for (const type of ["pointerdown", "keydown"]) document.addEventListener(type, () => this.on && this.unlock(), { capture: true });
  }

  /** Turn sound and notifications on by default for a view (the big screen, #/screen, calls
   * this): on unless the person switched them off in this browser; not remembered. */
  enable() {
    if (this.chosen || this.on) return;
    this.on = true;
    this.changed();
  }

  /** The top bar's toggle: a user gesture, so audio can start and permission can be asked. */
  toggle() {
    this.on = !this.on;
    this.chosen = true;
    this.storage.setItem(STORAGE_KEY, this.on ? "on" : "off");
    if (this.on) {
      this.unlock();
      // Asked once: the browser remembers the answer, and a "denied" is not asked again.
      if ("Notification" in window && Notification.permission === "default") Promise.resolve(Notification.requestPermission()).catch(() => {});
    }
    this.changed();
  }

  onChange(listener) {
    this.listeners.add(listener);
  }

  changed() {
    for (const listener of this.listeners) listener(this.on);
  }

  /** An alert event from the live stream that opened a firing alert (not one loaded with the page). */
  arrived(alert) {
    if (!LOUD.has(alert.severity)) return;
    this.flash(alert.id);
    if (!this.on) return;
    this.beep(alert);
    this.desktop(alert);
  }

  flash(id) {
    clearTimeout(this.flashing.get(id));
    this.flashing.set(
      id,
      setTimeout(() => {
        this.flashing.delete(id);
        this.paint(id);
      }, FLASH_MS),
    );
    this.paint();
  }

  /** The flash classes on the page and on the rows of flashing alerts (`ended`: one whose flash is over). */
  paint(ended = null) {
    if (!this.flashing.size && ended === null) return;
    document.documentElement.classList.toggle("alert-flash", this.flashing.size > 0);
    for (const row of this.root.querySelectorAll("[data-alert-id]")) {
      const id = row.dataset.alertId;
      if (this.flashing.has(id)) row.classList.add("flash");
      else if (id === ended) row.classList.remove("flash");
    }
  }

  /** The AudioContext, made and resumed inside a user gesture. */
  unlock() {
    const Context = window.AudioContext ?? window.webkitAudioContext;
    if (!Context) return;
    this.audio ??= new Context();
    if (this.audio.state === "suspended") this.audio.resume().catch(() => {});
  }

  /** Two short beeps. Each sound played is counted on `<html data-tones>` (a test reads it). */
  beep(alert) {
    const ctx = this.audio;
    if (!ctx || ctx.state !== "running") return; // no gesture yet: silent rather than late
    const start = ctx.currentTime + 0.02;
    BEEPS.forEach((offset, i) => {
      const at = start + offset;
      const tone = ctx.createOscillator();
      const gain = ctx.createGain();
      tone.type = "sine";
      tone.frequency.value = PITCH_HZ[alert.severity] ?? PITCH_HZ.major;
      gain.gain.setValueAtTime(0.0001, at);
      gain.gain.exponentialRampToValueAtTime(0.3, at + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, at + BEEP_S);
      tone.connect(gain).connect(ctx.destination);
      if (i === BEEPS.length - 1) tone.addEventListener("ended", () => played(alert));
      tone.start(at);
      tone.stop(at + BEEP_S + 0.02);
    });
  }

  /** A desktop notification in the console's language, when the browser allows them. */
  desktop(alert) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    const { i18n } = this;
    try {
      const note = new Notification(i18n.t("alerting.notification", { severity: i18n.t(`severity.${alert.severity}`), device: alert.device_id }), {
        body: i18n.summary(alert.summary ?? "")[0],
        tag: alert.id,
        lang: i18n.lang === "zh" ? "zh-CN" : "en",
      });
      note.onclick = () => {
        window.focus();
        this.onOpen?.(alert.device_id);
      };
    } catch {
      // a browser that only notifies from a service worker (Android): the sound and flash remain
    }
  }
}

/** Sounds played so far and the alert of the latest, on `<html>`: what a test can observe of a sound. */
function played(alert) {
  const data = document.documentElement.dataset;
  data.tones = String(Number(data.tones ?? 0) + 1);
  data.toneAlert = alert.id;
}
