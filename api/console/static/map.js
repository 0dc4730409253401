// The city map on ECharts (vendored, drawn on a canvas): the districts' boundaries from the
// city file, zoom and pan, every device at its lat/lon coloured by state, filters by kind,
// state and district. Past CLUSTER_AT devices shown, the devices of a screen cell are drawn
// as one counted bubble in their commonest state's colour, so a city's hundred thousand
// devices stay fluid; alerting devices are never folded into a bubble. No tiles: the map needs no
// outside server.

import * as echarts from "./vendor/echarts.esm.min.js";
import { h } from "./dom.js";

export const STATES = ["online", "offline", "unknown", "decommissioned", "alerting"];
const DRAW_ORDER = ["decommissioned", "unknown", "offline", "online"]; // alerting goes on top
export const CLUSTER_AT = 3_000; // devices in the filter: more are drawn in cells
const CELL_PX = 40; // a bubble's cell on screen
const MAP_NAME = "cityiot-city";

/** The box [west, south, east, north] around the devices and the boundaries; around
 * `center` ([lat, lon]) when there is neither. */
export function extent(devices, boundaries, center = [0, 0]) {
  let [w, s, e, n] = [Infinity, Infinity, -Infinity, -Infinity];
  const take = (lon, lat) => {
    w = Math.min(w, lon);
    e = Math.max(e, lon);
    s = Math.min(s, lat);
    n = Math.max(n, lat);
  };
  for (const d of devices) take(d.lon, d.lat);
  for (const feature of boundaries?.features ?? []) {
    const { type, coordinates } = feature.geometry;
    const polygons = type === "Polygon" ? [coordinates] : coordinates;
    for (const polygon of polygons) for (const ring of polygon) for (const [lon, lat] of ring) take(lon, lat);
  }
  if (!Number.isFinite(w)) return [center[1] - 0.5, center[0] - 0.25, center[1] + 0.5, center[0] + 0.25];
  const pad = Math.max(e - w, n - s, 0.01) * 0.04;
  return [w - pad, s - pad, e + pad, n + pad];
}

/** Devices grouped by screen cell: `cell(d)` gives a device's cell key. Each group becomes
 * {lon, lat (their mean), devices, state (the most frequent)}. */
export function cluster(devices, cell, stateOf) {
  const cells = new Map();
  for (const d of devices) {
    const key = cell(d);
    let group = cells.get(key);
    if (!group) cells.set(key, (group = { lon: 0, lat: 0, devices: [], counts: {} }));
    group.lon += d.lon;
    group.lat += d.lat;
    group.devices.push(d);
    const state = stateOf(d);
    group.counts[state] = (group.counts[state] ?? 0) + 1;
  }
  return [...cells.values()].map((g) => {
    const n = g.devices.length;
    const state = Object.entries(g.counts).sort((a, b) => b[1] - a[1])[0][0];
    return { lon: g.lon / n, lat: g.lat / n, devices: g.devices, counts: g.counts, state };
  });
}

export class CityMap {
  /** `onOpen(deviceId)`: a device was clicked. Colours come from the page's CSS variables
   * (the big screen sets its own). */
  constructor({ i18n, onOpen }) {
    this.i18n = i18n;
    this.onOpen = onOpen;
    this.all = []; // every device with a position
    this.devices = []; // those the filters keep
    this.filters = { kind: "", state: "", district: "" }; // "": every one
    this.alerting = new Map(); // device id → severity of its worst open alert
    this.options = { kind: "", state: "", district: "" }; // the lists' choices drawn last
    this.selects = {};
    this.labels = {};
    const parts = ["kind", "state", "district"].map((name) => {
      this.selects[name] = h("select", { class: `${name}-select`, on: { change: (e) => this.choose(name, e.currentTarget.value) } });
      this.labels[name] = h("span", {});
      return h("label", { class: ["map-filter", `${name}-filter`] }, this.labels[name], this.selects[name]);
    });
    this.filter = h("div", { class: "map-filters" }, ...parts);
    this.tip = h("div", { class: "map-tip", hidden: true });
    this.legend = h("ul", { class: "legend" });
    this.box = h("div", { class: "map-box" });
    this.el = h("div", { class: "map", dataset: { drawn: "0" } }, this.box, this.tip);
    this.chart = null;
    this.boundaries = undefined; // the GeoJSON registered last
    this.frame = 0;
    this.box_ = ""; // the frame the map was last fitted to
    this.shown = {}; // series id → what its points stand for (devices, or bubbles of them)
    this.resizer = new ResizeObserver(() => {
      // Hidden (another page shown): ECharts cannot lay a map out in no room.
      if (!this.el.clientWidth || !this.el.clientHeight) return;
      this.chart?.resize();
      this.schedule();
    });
    this.resizer.observe(this.el);
  }

  /** Let go of the chart (the view is left for good). */
  close() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.resizer.disconnect();
    this.chart?.dispose();
    this.chart = null;
  }

  setDevices(devices) {
    this.all = devices.filter((d) => Number.isFinite(d.lat) && Number.isFinite(d.lon));
    this.extent = null; // framed again at the next drawing
    this.filterDevices();
  }

  chooseKind(kind) {
    this.choose("kind", kind);
  }

  choose(name, value) {
    this.filters[name] = value;
    this.filterDevices();
  }

  filterDevices() {
    const { kind, state, district } = this.filters;
    this.devices = this.all.filter(
      (d) => (!kind || d.kind === kind) && (!district || d.district === district) && (!state || this.stateOf(d) === state),
    );
    Object.assign(this.el.dataset, this.filters);
    this.schedule();
  }

  setAlerting(alerting) {
    this.alerting = alerting;
    if (this.filters.state) this.filterDevices();
    else this.schedule();
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

  colours() {
    const style = getComputedStyle(this.el);
    const colour = (name) => style.getPropertyValue(`--${name}`).trim();
    return Object.fromEntries(
      [...STATES, "map-bg", "map-area", "map-area-hover", "map-border", "map-label", "map-halo"].map((name) => [name, colour(name)]),
    );
  }

  /** The chart, made once the map has a size; the boundaries registered again when they change. */
  ready() {
    const { width, height } = this.el.getBoundingClientRect();
    if (!width || !height) return false;
    const city = this.i18n.catalogue.city;
    const boundaries = city?.boundaries ?? null;
    if (boundaries !== this.boundaries) {
      echarts.registerMap(MAP_NAME, boundaries ?? { type: "FeatureCollection", features: [] });
      this.boundaries = boundaries;
      this.extent = null;
      this.el.dataset.boundaries = String(boundaries?.features?.length ?? 0);
      if (this.chart) {
        this.chart.dispose();
        this.chart = null;
      }
    }
    if (!this.chart) {
      this.chart = echarts.init(this.box, null, { renderer: "canvas" });
      this.chart.on("click", (e) => this.clicked(e));
      this.chart.on("mousemove", (e) => this.hover(e));
      this.chart.on("mouseout", () => this.hover(null));
      // Bubbles are cells of the screen: a zoom folds them again. Dots need no redrawing.
      this.chart.on("georoam", () => {
        this.el.dataset.zoom = (this.chart.getOption().geo[0].zoom ?? 1).toFixed(2);
        if (this.el.dataset.folded === "1") this.schedule();
      });
      this.drawBase();
    }
    return true;
  }

  /** The districts, the frame and the empty series: drawn once per chart. */
  drawBase() {
    const c = this.colours();
    const [w, s, e, n] = extent(this.all, this.boundaries, this.i18n.catalogue.city?.center);
    this.box_ = [w, s, e, n].join();
    this.el.dataset.zoom = "1.00";
    this.chart.setOption({
      animation: false,
      backgroundColor: c["map-bg"],
      geo: {
        map: MAP_NAME,
        nameProperty: "id",
        roam: true,
        scaleLimit: { min: 0.8, max: 400 },
        boundingCoords: [
          [w, n],
          [e, s],
        ],
        layoutCenter: ["50%", "50%"],
        layoutSize: "96%",
        itemStyle: { areaColor: c["map-area"], borderColor: c["map-border"], borderWidth: 1 },
        emphasis: { itemStyle: { areaColor: c["map-area-hover"] }, label: { show: true } },
        select: { disabled: true },
        label: { show: true, color: c["map-label"], fontSize: 13, fontWeight: 600, textBorderColor: c["map-halo"], textBorderWidth: 3, formatter: (p) => this.i18n.district(p.name) },
        silent: false,
      },
      series: [],
    });
  }

  draw() {
    if (!this.ready()) return;
    const c = this.colours();
    this.extent ??= extent(this.all, this.boundaries, this.i18n.catalogue.city?.center);
    const box = this.extent;
    if (box.join() !== this.box_) {
      // The devices first seen, or a fleet moved past the frame: frame the city again.
      this.box_ = box.join();
      const [w, s, e, n] = box;
      this.chart.setOption({ geo: { boundingCoords: [[w, n], [e, s]], zoom: 1 } });
      this.el.dataset.zoom = "1.00";
    }
    const byState = Object.fromEntries(STATES.map((state) => [state, []]));
    for (const device of this.devices) byState[this.stateOf(device)]?.push(device);
    const n = this.devices.length;
    const folded = n - byState.alerting.length > CLUSTER_AT;
    // What each series' points stand for, by series id and index: ECharts copies the
    // options it is given, so they carry plain numbers, not the devices.
    this.shown = {};
    const series = [];
    if (folded) {
      // One pass over every device but the alerting: a bubble takes its cell's commonest state.
      const quiet = DRAW_ORDER.flatMap((state) => byState[state]);
      series.push(this.bubbles(cluster(quiet, this.cellOf(), (d) => this.stateOf(d)), c));
    } else {
      const size = n > 1_000 ? 5 : 9;
      for (const state of DRAW_ORDER) series.push(this.dots(state, byState[state], c[state], size));
    }
    series.push(this.dots("alerting", byState.alerting, c.alerting, 13, c["map-bg"]));
    // Everything is replaced: no series of an earlier drawing lingers.
    this.chart.setOption({ geo: { label: { formatter: (p) => this.i18n.district(p.name) } }, series }, { replaceMerge: ["series"] });

    const counts = Object.fromEntries(STATES.map((state) => [state, byState[state].length]));
    Object.assign(this.el.dataset, { drawn: String(n), folded: folded ? "1" : "0", ...mapCounts(counts) });
    const canvas = this.box.querySelector("canvas");
    if (canvas) {
      canvas.classList.add("map-canvas");
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", `${this.i18n.t("map.title")}: ${this.i18n.t("map.count", { n })}`);
    }
    this.renderFilters();
    this.legend.replaceChildren(
      ...STATES.map((state) =>
        h("li", { dataset: { state } }, h("span", { class: ["swatch", state] }), `${this.i18n.t(`status.${state}`)} `, h("b", {}, this.i18n.number(counts[state], 0))),
      ),
    );
  }

  /** A device's screen cell at the present zoom, as a key. */
  cellOf() {
    const [x0, y0] = this.chart.convertToPixel({ geoIndex: 0 }, [0, 0]);
    const [x1, y1] = this.chart.convertToPixel({ geoIndex: 0 }, [1, 1]);
    const perLon = Math.abs(x1 - x0) / CELL_PX || 1;
    const perLat = Math.abs(y1 - y0) / CELL_PX || 1;
    // A number, not a string: the key of 100,000 devices is made at every zoom step.
    return (d) => Math.floor(d.lon * perLon) * 4_194_304 + Math.floor(d.lat * perLat);
  }

  dots(state, devices, colour, size, ring) {
    this.shown[`dots-${state}`] = devices;
    return {
      id: `dots-${state}`,
      type: "scatter",
      coordinateSystem: "geo",
      large: devices.length > 2_000,
      symbolSize: size,
      itemStyle: { color: colour, opacity: 1, borderColor: ring ?? colour, borderWidth: ring ? 2 : 0 },
      emphasis: { scale: 1.6, itemStyle: { color: colour } }, // hovered, it keeps its state's colour
      data: devices.map((d) => [d.lon, d.lat]),
      z: state === "alerting" ? 5 : 3,
    };
  }

  bubbles(groups, colours) {
    this.shown.cells = groups;
    return {
      id: "cells",
      type: "scatter",
      coordinateSystem: "geo",
      itemStyle: { opacity: 0.85 },
      symbolSize: (value) => Math.min(34, 6 + 4 * Math.log2(value[2])),
      label: { show: true, formatter: (p) => (p.value[2] > 1 ? compact(p.value[2]) : ""), color: "#fff", fontSize: 10 },
      labelLayout: { hideOverlap: true },
      data: groups.map((g) => ({ value: [g.lon, g.lat, g.devices.length], itemStyle: { color: colours[g.state] } })),
      z: 3,
    };
  }

  /** The choices of the three filters: kinds by title and count, states, districts by title. */
  renderFilters() {
    const t = this.i18n;
    const counts = new Map();
    for (const d of this.all) counts.set(d.kind, (counts.get(d.kind) ?? 0) + 1);
    if (this.filters.kind && !counts.has(this.filters.kind)) counts.set(this.filters.kind, 0);
    const order = t.catalogue.kindIds();
    const rank = (kind) => (order.includes(kind) ? order.indexOf(kind) : order.length);
    const kinds = [...counts.keys()].sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : 1));
    const districts = [...new Set([...Object.keys(t.catalogue.data?.districts ?? {}), ...this.all.map((d) => d.district)])];
    const lists = {
      kind: [["", t.t("map.kinds")], ...kinds.map((kind) => [kind, t.t("map.kind.count", { kind: t.kind(kind), n: counts.get(kind) })])],
      state: [["", t.t("map.states")], ...STATES.map((state) => [state, t.t(`status.${state}`)])],
      district: [["", t.t("map.districts")], ...districts.map((d) => [d, t.district(d)])],
    };
    for (const [name, options] of Object.entries(lists)) {
      this.labels[name].textContent = t.t(`map.${name}`);
      const key = JSON.stringify(options);
      if (key === this.options[name]) continue; // unchanged: an open list stays open
      this.options[name] = key;
      this.selects[name].replaceChildren(...options.map(([value, label]) => h("option", { value }, label)));
      this.selects[name].value = this.filters[name];
    }
  }

  /** The device or the bubble of devices under a chart event. */
  pointed(event) {
    const item = event?.seriesId ? this.shown[event.seriesId]?.[event.dataIndex] : undefined;
    if (!item) return {};
    if (event.seriesId !== "cells") return { device: item };
    return item.devices.length === 1 ? { device: item.devices[0] } : { group: item };
  }

  clicked(event) {
    const { device, group } = this.pointed(event);
    if (device) {
      this.onOpen(device.id);
      return;
    }
    if (!group) return;
    // A bubble: zoom in on it, two steps.
    const geo = this.chart.getOption().geo[0];
    this.chart.setOption({ geo: { center: [group.lon, group.lat], zoom: (geo.zoom ?? 1) * 4 } });
    this.schedule();
  }

  hover(event) {
    const { device, group } = this.pointed(event);
    this.box.classList.toggle("pointing", Boolean(device || group));
    if (!device && !group) {
      this.tip.hidden = true;
      return;
    }
    const t = this.i18n;
    if (device) {
      this.tip.replaceChildren(
        h("b", {}, device.id),
        h("span", {}, `${t.kind(device.kind)} · ${t.district(device.district)}`),
        h("span", {}, `${t.t(`status.${this.stateOf(device)}`)} · ${t.link(device.link)}`),
        device.address ? h("span", {}, device.address) : null,
      );
    } else {
      this.tip.replaceChildren(
        h("b", {}, t.t("map.count", { n: group.devices.length })),
        h("span", {}, t.t(`status.${group.state}`)),
        h("span", {}, t.t("map.cluster.hint")),
      );
    }
    this.tip.hidden = false;
    const x = event.event.offsetX;
    const y = event.event.offsetY;
    const left = Math.min(x + 12, this.el.clientWidth - this.tip.offsetWidth - 4);
    this.tip.style.left = `${Math.max(4, left)}px`;
    this.tip.style.top = `${Math.max(4, y - this.tip.offsetHeight - 8)}px`;
  }
}

function compact(n) {
  return n >= 10_000 ? `${Math.round(n / 1000)}k` : n >= 1_000 ? `${(n / 1000).toFixed(1)}k` : String(n);
}

function mapCounts(counts) {
  return Object.fromEntries(Object.entries(counts).map(([state, n]) => [state, String(n)]));
}
