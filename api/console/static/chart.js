// A small SVG line chart of one metric over time; flags (true/false) as a step line.

import { h, s } from "./dom.js";

const W = 560;
const H = 150;
const M = { top: 10, right: 12, bottom: 22, left: 46 };

export class SeriesChart {
  /** `metric`: {name, type, unit} from the catalogue. */
  constructor(metric, i18n) {
    this.metric = metric;
    this.i18n = i18n;
    this.points = []; // [{t: epoch ms, v: number | boolean}], in time order
    this.windowMs = 3600_000;
    this.value = h("span", { class: "chart-value" });
    this.plot = h("div", { class: "chart-plot" });
    this.el = h(
      "figure",
      { class: "chart", dataset: { metric: metric.name } },
      h("figcaption", {}, h("span", { class: "chart-name", title: metric.description || null }, metric.name), this.value),
      this.plot,
    );
  }

  get flag() {
    return this.metric.type === "bool";
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
    if (this.flag) return this.i18n.t(v ? "bool.true" : "bool.false");
    const unit = this.metric.unit ? ` ${this.metric.unit}` : "";
    return `${this.i18n.number(v, 2)}${unit}`;
  }

  render() {
    const last = this.points.at(-1);
    this.value.textContent = last ? this.format(last.v) : "";
    this.el.dataset.points = String(this.points.length);
    if (!this.points.length) {
      this.plot.replaceChildren(h("p", { class: "chart-empty" }, this.i18n.t("device.nodata")));
      return;
    }
    const end = Math.max(Date.now(), last.t);
    const start = Math.min(end - this.windowMs, this.points[0].t);
    const values = this.points.map((p) => Number(p.v));
    let [lo, hi] = this.flag ? [0, 1] : [Math.min(...values), Math.max(...values)];
    if (!this.flag) {
      const pad = hi > lo ? (hi - lo) * 0.1 : Math.abs(hi) * 0.05 || 1;
      // A quantity that is never negative keeps its axis at 0 or above.
      [lo, hi] = [lo >= 0 ? Math.max(0, lo - pad) : lo - pad, hi + pad];
    }
    const x = (t) => M.left + ((t - start) / (end - start || 1)) * (W - M.left - M.right);
    const y = (v) => H - M.bottom - ((v - lo) / (hi - lo)) * (H - M.top - M.bottom);

    let d = "";
    this.points.forEach((p, i) => {
      const [px, py] = [x(p.t).toFixed(1), y(Number(p.v)).toFixed(1)];
      if (i === 0) d = `M${px},${py}`;
      else if (this.flag) d += `H${px}V${py}`;
      else d += `L${px},${py}`;
    });
    if (this.flag) d += `H${x(end).toFixed(1)}`;

    const ticksY = this.flag ? [0, 1] : [lo, (lo + hi) / 2, hi];
    const ticksX = [start, (start + end) / 2, end];
    const svg = s(
      "svg",
      { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img", "aria-label": this.metric.name },
      ticksY.map((v) =>
        s(
          "g",
          { class: "tick" },
          s("line", { x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }),
          s("text", { x: M.left - 6, y: y(v) + 4, "text-anchor": "end" }, this.flag ? this.format(Boolean(v)) : this.i18n.number(v, 2)),
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
      s("circle", { class: "last", cx: x(last.t), cy: y(Number(last.v)), r: 3.5 }),
    );
    this.plot.replaceChildren(svg);
  }
}
