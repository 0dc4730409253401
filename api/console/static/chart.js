// A small SVG line chart of one metric over time, captioned with the metric's title and
// unit; flags (是/否) and enum values (one level per value) as a step line.

import { h, s } from "./dom.js";
import { metricLabel } from "./i18n.js";

const W = 560;
const H = 150;
const M = { top: 10, right: 12, bottom: 22, left: 46 };

export class SeriesChart {
  /** The metric `name` of kind `kindId`; `fallback` ({name, type?}) while the reference data does not know it. */
  constructor(kindId, name, i18n, fallback = { name }) {
    this.kindId = kindId;
    this.name = name;
    this.fallback = fallback;
    this.i18n = i18n;
    this.points = []; // [{t: epoch ms, v: number | boolean | string}], in time order
    this.windowMs = 3600_000;
    this.caption = h("span", { class: "chart-name" });
    this.value = h("span", { class: "chart-value" });
    this.plot = h("div", { class: "chart-plot" });
    this.el = h("figure", { class: "chart", dataset: { metric: name } }, h("figcaption", {}, this.caption, this.value), this.plot);
  }

  /** The metric as the reference data has it now ({name, type, unit, title, range|values}). */
  get metric() {
    return this.i18n.catalogue.metric(this.kindId, this.name) ?? this.fallback;
  }

  get label() {
    return metricLabel(this.metric, this.i18n.lang) ?? this.name;
  }

  get flag() {
    return this.metric.type === "bool" || (this.points.length > 0 && typeof this.points[0].v === "boolean");
  }

  get enumerated() {
    return this.metric.type === "enum" || (this.points.length > 0 && typeof this.points[0].v === "string");
  }

  /** An enum's levels: its values in the model's order, then any other value seen. */
  levels() {
    const levels = [...(this.metric.values ?? [])];
    for (const p of this.points) if (!levels.includes(p.v)) levels.push(p.v);
    return levels;
  }

  /** Replace the series: points of the window [endMs - windowMs, endMs]. */
  set(points, windowMs) {
    this.points = points.slice().sort((a, b) => a.t - b.t);
    this.windowMs = windowMs;
    this.render();
  }

  /** One live point; the window slides to it. */
  add(t, v) {
    const at = this.points.findIndex((p) => p.t >= t);
    if (at < 0) this.points.push({ t, v });
    else if (this.points[at].t === t) this.points[at] = { t, v };
    else this.points.splice(at, 0, { t, v });
    const oldest = Math.max(Date.now(), t) - this.windowMs;
    while (this.points.length && this.points[0].t < oldest) this.points.shift();
    this.render();
  }

  format(v) {
    return this.i18n.value(this.metric, v);
  }

  render() {
    const metric = this.metric;
    this.caption.textContent = this.label;
    if (metric.description) this.caption.title = metric.description;
    else this.caption.removeAttribute("title");
    const last = this.points.at(-1);
    this.value.textContent = last ? this.format(last.v) : "";
    this.el.dataset.points = String(this.points.length);
    if (!this.points.length) {
      this.plot.replaceChildren(h("p", { class: "chart-empty" }, this.i18n.t("device.nodata")));
      return;
    }
    const end = Math.max(Date.now(), last.t);
    const start = Math.min(end - this.windowMs, this.points[0].t);
    const flag = this.flag;
    const levels = !flag && this.enumerated ? this.levels() : null;
    const step = flag || levels !== null;
    // Flags and enum values are drawn as levels 0, 1, …; numbers as they are.
    const level = (v) => (levels ? levels.indexOf(v) : Number(v));
    const values = this.points.map((p) => level(p.v));
    let [lo, hi] = flag ? [0, 1] : levels ? [0, Math.max(levels.length - 1, 1)] : [Math.min(...values), Math.max(...values)];
    if (levels) [lo, hi] = [lo - 0.25, hi + 0.25];
    else if (!flag) {
      const pad = hi > lo ? (hi - lo) * 0.1 : Math.abs(hi) * 0.05 || 1;
      // A quantity that is never negative keeps its axis at 0 or above.
      [lo, hi] = [lo >= 0 ? Math.max(0, lo - pad) : lo - pad, hi + pad];
    }
    const x = (t) => M.left + ((t - start) / (end - start || 1)) * (W - M.left - M.right);
    const y = (v) => H - M.bottom - ((v - lo) / (hi - lo)) * (H - M.top - M.bottom);

    let d = "";
    this.points.forEach((p, i) => {
      const [px, py] = [x(p.t).toFixed(1), y(level(p.v)).toFixed(1)];
      if (i === 0) d = `M${px},${py}`;
      else if (step) d += `H${px}V${py}`;
      else d += `L${px},${py}`;
    });
    if (step) d += `H${x(end).toFixed(1)}`;

    const ticksY = flag ? [0, 1] : levels ? levelTicks(levels.length) : [lo, (lo + hi) / 2, hi];
    const tickText = (v) => (flag ? this.format(Boolean(v)) : levels ? levels[v] : this.i18n.number(v, 2));
    const ticksX = [start, (start + end) / 2, end];
    const svg = s(
      "svg",
      { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img", "aria-label": this.label },
      ticksY.map((v) =>
        s(
          "g",
          { class: "tick" },
          s("line", { x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }),
          s("text", { x: M.left - 6, y: y(v) + 4, "text-anchor": "end" }, tickText(v)),
        ),
      ),
      ticksX.map((t, i) =>
        s(
          "text",
          { class: "tick", x: x(t), y: H - 6, "text-anchor": ["start", "middle", "end"][i] },
          this.i18n.time(new Date(t).toISOString()),
        ),
      ),
      s("path", { class: "line", d }),
      s("circle", { class: "last", cx: x(last.t), cy: y(level(last.v)), r: 3.5 }),
    );
    this.plot.replaceChildren(svg);
  }
}

/** The levels an enum axis labels: every one when few, else the first, middle and last. */
function levelTicks(n) {
  if (n <= 5) return [...Array(n).keys()];
  return [0, Math.floor((n - 1) / 2), n - 1];
}
