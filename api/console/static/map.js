// The city map: every device at its lat/lon on a canvas, coloured by state, district names at
// the centroid of their devices, a filter by kind (titles and counts). No tiles: the map needs
// no outside server, and a canvas draws a city's hundred thousand points where one SVG node
// per device would not.

import { h } from "./dom.js";

export const STATES = ["online", "offline", "unknown", "decommissioned", "alerting"];
const DRAW_ORDER = ["decommissioned", "unknown", "offline", "online"]; // alerting goes on top
const GRID_STEPS = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2];
const PAD = 28; // px around the devices
const HIT_PX = 9;

/** The projection of lat/lon into a w×h box: equirectangular, lon scaled by cos(lat). With no
 * device, the box around `center` ([lat, lon], the city's centre). */
export function projection(devices, width, height, center = [0, 0]) {
  let [w, e, s, n] = [Infinity, -Infinity, Infinity, -Infinity];
  for (const d of devices) {
    w = Math.min(w, d.lon);
    e = Math.max(e, d.lon);
    s = Math.min(s, d.lat);
    n = Math.max(n, d.lat);
  }
  if (!Number.isFinite(w)) [w, e, s, n] = [center[1] - 0.5, center[1] + 0.5, center[0] - 0.25, center[0] + 0.25];
  const span = Math.max(e - w, n - s, 0.01);
  const cx = (w + e) / 2;
  const cy = (s + n) / 2;
  const kx = Math.cos((cy * Math.PI) / 180);
  const halfW = Math.max((e - w) * kx, span * 0.05) / 2;
  const halfH = Math.max(n - s, span * 0.05) / 2;
  const scale = Math.min((width - 2 * PAD) / (2 * halfW), (height - 2 * PAD) / (2 * halfH));
  return {
    x: (lon) => width / 2 + (lon - cx) * kx * scale,
    y: (lat) => height / 2 - (lat - cy) * scale,
    lon: (x) => cx + (x - width / 2) / (kx * scale),
    lat: (y) => cy - (y - height / 2) / scale,
  };
}

export class CityMap {
  /** `onOpen(deviceId)`: a device was clicked. */
  constructor({ i18n, onOpen }) {
    this.i18n = i18n;
    this.onOpen = onOpen;
    this.all = []; // every device with a position
    this.devices = []; // those of the chosen kind
    this.kind = ""; // "": every kind
    this.kindOptions = "";
    this.kindSelect = h("select", { class: "kind-select", on: { change: (e) => this.chooseKind(e.currentTarget.value) } });
    this.kindLabel = h("span", {});
    this.filter = h("label", { class: "kind-filter" }, this.kindLabel, this.kindSelect);
    this.alerting = new Map(); // device id → severity of its worst open alert
    this.points = [];
    this.canvas = h("canvas", { class: "map-canvas", role: "img" });
    this.tip = h("div", { class: "map-tip", hidden: true });
    this.legend = h("ul", { class: "legend" });
    this.el = h("div", { class: "map", dataset: { drawn: "0" } }, this.canvas, this.tip);
    this.canvas.addEventListener("mousemove", (e) => this.hover(e));
    this.canvas.addEventListener("mouseleave", () => this.hover(null));
    this.canvas.addEventListener("click", (e) => {
      const hit = this.hit(e);
      if (hit) this.onOpen(hit.device.id);
    });
    this.frame = 0;
    new ResizeObserver(() => this.schedule()).observe(this.el);
  }

  setDevices(devices) {
    this.all = devices.filter((d) => Number.isFinite(d.lat) && Number.isFinite(d.lon));
    this.filterDevices();
  }

  chooseKind(kind) {
    this.kind = kind;
    this.filterDevices();
  }

  filterDevices() {
    this.devices = this.kind ? this.all.filter((d) => d.kind === this.kind) : this.all;
    this.el.dataset.kind = this.kind;
    this.schedule();
  }

  /** The kind filter's choices: every kind on the map by its title and count, in the model's order. */
  renderKinds() {
    const counts = new Map();
    for (const d of this.all) counts.set(d.kind, (counts.get(d.kind) ?? 0) + 1);
    if (this.kind && !counts.has(this.kind)) counts.set(this.kind, 0);
    const order = this.i18n.catalogue.kindIds();
    const rank = (kind) => (order.includes(kind) ? order.indexOf(kind) : order.length);
    const kinds = [...counts.keys()].sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : 1));
    const t = this.i18n;
    const options = [["", t.t("map.kinds")], ...kinds.map((kind) => [kind, t.t("map.kind.count", { kind: t.kind(kind), n: counts.get(kind) })])];
    this.kindLabel.textContent = t.t("map.kind");
    const key = JSON.stringify(options);
    if (key === this.kindOptions) return; // unchanged: an open list stays open
    this.kindOptions = key;
    this.kindSelect.replaceChildren(...options.map(([value, label]) => h("option", { value }, label)));
    this.kindSelect.value = this.kind;
  }

  setAlerting(alerting) {
    this.alerting = alerting;
    this.schedule();
  }

  /** Draw at the next frame: a burst of events costs one drawing. */
  schedule() {
    this.frame ||= requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  stateOf(device) {
    return this.alerting.has(device.id) ? "alerting" : device.status;
  }

  draw() {
    const { width, height } = this.el.getBoundingClientRect();
    if (!width || !height) return;
    const ratio = window.devicePixelRatio || 1;
    this.canvas.width = Math.round(width * ratio);
    this.canvas.height = Math.round(height * ratio);
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const style = getComputedStyle(this.el);
    const colour = (name) => style.getPropertyValue(`--${name}`).trim();
    ctx.fillStyle = colour("map-bg");
    ctx.fillRect(0, 0, width, height);

    const project = projection(this.devices, width, height, this.i18n.catalogue.city?.center);
    this.grid(ctx, project, width, height, colour("map-grid"), colour("map-label"));

    const byState = Object.fromEntries(STATES.map((state) => [state, []]));
    this.points = [];
    for (const device of this.devices) {
      const point = { x: project.x(device.lon), y: project.y(device.lat), device };
      byState[this.stateOf(device)]?.push(point);
      this.points.push(point);
    }
    const n = this.devices.length;
    const r = n > 20_000 ? 1.2 : n > 5_000 ? 2 : n > 1_000 ? 3 : 4.5;
    for (const state of DRAW_ORDER) {
      ctx.fillStyle = colour(state);
      ctx.beginPath();
      for (const { x, y } of byState[state]) {
        ctx.moveTo(x + r, y);
        ctx.arc(x, y, r, 0, 2 * Math.PI);
      }
      ctx.fill();
    }
    this.districtLabels(ctx, project, colour("map-label"), colour("map-bg"));
    ctx.fillStyle = colour("alerting");
    ctx.strokeStyle = colour("map-bg");
    ctx.lineWidth = 2;
    for (const { x, y } of byState.alerting) {
      ctx.beginPath();
      ctx.arc(x, y, r + 3, 0, 2 * Math.PI);
      ctx.fill();
      ctx.stroke();
    }

    const counts = Object.fromEntries(STATES.map((state) => [state, byState[state].length]));
    Object.assign(this.el.dataset, { drawn: String(n), ...mapCounts(counts) });
    this.canvas.setAttribute("aria-label", `${this.i18n.t("map.title")}: ${this.i18n.t("map.count", { n })}`);
    this.renderKinds();
    this.legend.replaceChildren(
      ...STATES.map((state) =>
        h(
          "li",
          { dataset: { state } },
          h("span", { class: ["swatch", state] }),
          `${this.i18n.t(`status.${state}`)} `,
          h("b", {}, this.i18n.number(counts[state], 0)),
        ),
      ),
    );
  }

  grid(ctx, project, width, height, line, label) {
    const span = project.lon(width) - project.lon(0);
    const step = GRID_STEPS.find((s) => span / s <= 8) ?? 5;
    ctx.strokeStyle = line;
    ctx.lineWidth = 1;
    ctx.fillStyle = label;
    ctx.font = "10px system-ui, sans-serif";
    ctx.beginPath();
    const digits = step < 0.01 ? 3 : step < 0.1 ? 2 : 1;
    for (let lon = Math.ceil(project.lon(0) / step) * step; lon < project.lon(width); lon += step) {
      const x = Math.round(project.x(lon)) + 0.5;
      ctx.moveTo(x, 0);
      ctx.lineTo(x, height);
      ctx.fillText(`${lon.toFixed(digits)}°E`, x + 3, height - 4);
    }
    for (let lat = Math.ceil(project.lat(height) / step) * step; lat < project.lat(0); lat += step) {
      const y = Math.round(project.y(lat)) + 0.5;
      ctx.moveTo(0, y);
      ctx.lineTo(width, y);
      ctx.fillText(`${lat.toFixed(digits)}°N`, 3, y - 3);
    }
    ctx.stroke();
  }

  districtLabels(ctx, project, ink, halo) {
    const sums = new Map();
    for (const d of this.devices) {
      const sum = sums.get(d.district) ?? { lat: 0, lon: 0, n: 0 };
      sum.lat += d.lat;
      sum.lon += d.lon;
      sum.n += 1;
      sums.set(d.district, sum);
    }
    ctx.font = "600 13px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.lineJoin = "round";
    ctx.lineWidth = 4;
    ctx.strokeStyle = halo;
    ctx.fillStyle = ink;
    // Largest districts first; a label that would cover another moves up or down a line.
    const placed = [];
    const order = [...sums].sort((a, b) => b[1].n - a[1].n);
    for (const [district, { lat, lon, n }] of order) {
      const name = this.i18n.district(district);
      const x = project.x(lon / n);
      const halfW = ctx.measureText(name).width / 2 + 2;
      const free = (y) => placed.every((b) => Math.abs(b.x - x) > b.halfW + halfW || Math.abs(b.y - y) > 16);
      const y0 = project.y(lat / n);
      const y = [0, 16, -16, 32, -32].map((dy) => y0 + dy).find(free) ?? y0;
      placed.push({ x, y, halfW });
      ctx.strokeText(name, x, y);
      ctx.fillText(name, x, y);
    }
    ctx.textAlign = "start";
    ctx.textBaseline = "alphabetic";
  }

  hit(event) {
    const box = this.canvas.getBoundingClientRect();
    const [x, y] = [event.clientX - box.left, event.clientY - box.top];
    let best = null;
    let bestD = HIT_PX * HIT_PX;
    for (const point of this.points) {
      const d = (point.x - x) ** 2 + (point.y - y) ** 2;
      // An alerting device wins a tie: it is drawn on top.
      if (d < bestD || (d === bestD && this.alerting.has(point.device.id))) {
        best = point;
        bestD = d;
      }
    }
    return best;
  }

  hover(event) {
    const found = event && this.hit(event);
    this.canvas.classList.toggle("pointing", Boolean(found));
    if (!found) {
      this.tip.hidden = true;
      return;
    }
    const { device, x, y } = found;
    const t = this.i18n;
    this.tip.replaceChildren(
      h("b", {}, device.id),
      h("span", {}, `${t.kind(device.kind)} · ${t.district(device.district)}`),
      h("span", {}, `${t.t(`status.${this.stateOf(device)}`)} · ${t.link(device.link)}`),
      device.address ? h("span", {}, device.address) : null,
    );
    this.tip.hidden = false;
    const left = Math.min(x + 12, this.el.clientWidth - this.tip.offsetWidth - 4);
    this.tip.style.left = `${Math.max(4, left)}px`;
    this.tip.style.top = `${Math.max(4, y - this.tip.offsetHeight - 8)}px`;
  }
}

function mapCounts(counts) {
  return Object.fromEntries(Object.entries(counts).map(([state, n]) => [state, String(n)]));
}
