// A line chart of one metric over time on ECharts (vendored), captioned with the metric's
// title and unit: a tooltip with the time and value, the rules' fixed limits on the metric as
// dashed lines in their severity's colour, and a silence longer than a few report intervals
// drawn as a gap, not a line. Flags (是/否) and enum values (one level per value) as steps.

import * as echarts from "./vendor/echarts.esm.min.js";
import { h } from "./dom.js";
import { metricLabel } from "./i18n.js";

// A pause of more than this many expected steps (the kind's report interval, or the
// aggregation's bucket) between two points is a gap.
const GAP_STEPS = 2.5;

export class SeriesChart {
  /** The metric `name` of kind `kindId`; `fallback` ({name, type?}) while the reference data does not know it. */
  constructor(kindId, name, i18n, fallback = { name }) {
    this.kindId = kindId;
    this.name = name;
    this.fallback = fallback;
    this.i18n = i18n;
    this.points = []; // [{t: epoch ms, v: number | boolean | string}], in time order
    this.windowMs = 3600_000;
    this.stepMs = 0; // the expected time between points (0: not known, no gaps drawn)
    this.limits = []; // [{op, value, severity, rule}] of the rules on this metric
    this.caption = h("span", { class: "chart-name" });
    this.value = h("span", { class: "chart-value" });
    this.plot = h("div", { class: "chart-plot" });
    this.el = h("figure", { class: "chart", dataset: { metric: name } }, h("figcaption", {}, this.caption, this.value), this.plot);
    this.chart = null;
    this.frame = 0;
    this.resizer = new ResizeObserver(() => this.plot.clientWidth && this.chart?.resize());
    this.resizer.observe(this.plot);
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

  /** Replace the series: points of the window [endMs - windowMs, endMs], `stepMs` apart when
   * the device reports as it should. */
  set(points, windowMs, stepMs = this.stepMs) {
    this.points = points.slice().sort((a, b) => a.t - b.t);
    this.windowMs = windowMs;
    this.stepMs = stepMs;
    this.render();
  }

  /** The rules' fixed limits on this metric: [{op, value, severity, rule}]. */
  setLimits(limits) {
    this.limits = limits;
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

  /** The chart's series data: [t, level] pairs, a [t, null] inside each gap. */
  data(level) {
    const data = [];
    const gap = this.stepMs * GAP_STEPS;
    let gaps = 0;
    let before = null;
    for (const p of this.points) {
      if (gap && before !== null && p.t - before > gap) {
        data.push([before + 1, null]);
        gaps += 1;
      }
      data.push([p.t, level(p.v)]);
      before = p.t;
    }
    return { data, gaps };
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
      this.dispose();
      this.plot.replaceChildren(h("p", { class: "chart-empty" }, this.i18n.t("device.nodata")));
      return;
    }
    // A burst of live points costs one drawing.
    this.frame ||= requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  draw() {
    if (!this.points.length) return;
    if (!this.chart) {
      this.plot.replaceChildren();
      this.chart = echarts.init(this.plot, null, { renderer: "canvas" });
    }
    const last = this.points.at(-1);
    const end = Math.max(Date.now(), last.t);
    const start = Math.min(end - this.windowMs, this.points[0].t);
    const flag = this.flag;
    const levels = !flag && this.enumerated ? this.levels() : null;
    const step = flag || levels !== null;
    const level = (v) => (levels ? levels.indexOf(v) : flag ? Number(Boolean(v)) : Number(v));
    const { data, gaps } = this.data(level);
    const style = getComputedStyle(this.el);
    const colour = (name) => style.getPropertyValue(`--${name}`).trim();
    const limits = step ? [] : this.limits;
    const values = this.points.map((p) => level(p.v));
    // Levels (a flag's 否/是, an enum's values) are the categories of their axis.
    const names = step ? (levels ?? [false, true]).map((v) => (flag ? this.format(v) : String(v))) : null;
    const tick = (v) => (names ? (names[Math.round(v)] ?? "") : this.i18n.number(v, 2));
    let yAxis;
    if (names) yAxis = { type: "category", data: names, boundaryGap: true };
    else {
      // The axis holds the values and the limits drawn on it, with round ends.
      const all = [...values, ...limits.map((l) => l.value)];
      let [lo, hi] = [Math.min(...all), Math.max(...all)];
      const pad = hi > lo ? (hi - lo) * 0.1 : Math.abs(hi) * 0.05 || 1;
      // A quantity that is never negative keeps its axis at 0 or above.
      [lo, hi] = [lo >= 0 ? Math.max(0, lo - pad) : lo - pad, hi + pad];
      const interval = roundStep((hi - lo) / 3);
      yAxis = { type: "value", min: Math.floor(lo / interval) * interval, max: Math.ceil(hi / interval) * interval, interval };
    }
    const muted = colour("muted");
    this.chart.setOption(
      {
        animation: false,
        grid: { top: 12, right: 14, bottom: 24, left: 52 },
        tooltip: {
          trigger: "axis",
          renderMode: "richText", // drawn on the canvas: the console's CSP allows no inline style
          confine: true,
          formatter: (params) => {
            const p = (Array.isArray(params) ? params : [params]).find((x) => x.value?.[1] !== null);
            if (!p) return "";
            const text = `${this.i18n.time(new Date(p.value[0]).toISOString(), { seconds: true })}\n${this.label}: ${
              step ? tick(p.value[1]) : this.format(p.value[1])
            }`;
            this.el.dataset.tip = text;
            return text;
          },
        },
        xAxis: {
          type: "time",
          min: start,
          max: end,
          splitNumber: 3,
          axisLabel: { color: muted, fontSize: 11, hideOverlap: true, formatter: (t) => this.i18n.time(new Date(t).toISOString()) },
          axisLine: { lineStyle: { color: colour("line") } },
        },
        yAxis: {
          ...yAxis,
          axisLabel: { color: muted, fontSize: 11, formatter: names ? undefined : tick },
          axisTick: { show: false },
          axisLine: { show: false },
          splitLine: { show: true, lineStyle: { color: colour("map-grid") } },
        },
        series: [
          {
            type: "line",
            data,
            step: step ? "end" : false,
            connectNulls: false,
            showSymbol: this.points.length < 30, // a lone reading shows as a dot
            symbolSize: 5,
            lineStyle: { color: colour("accent"), width: 2 },
            itemStyle: { color: colour("accent") },
            markLine: {
              silent: true,
              symbol: "none",
              data: limits.map((l) => ({
                yAxis: l.value,
                lineStyle: { color: colour(l.severity) || muted, type: "dashed", width: 1.5 },
                label: { formatter: `${l.op} ${this.i18n.number(l.value, 2)}`, color: colour(l.severity) || muted, fontSize: 10, position: "insideEndTop" },
              })),
            },
          },
        ],
      },
      { notMerge: true },
    );
    Object.assign(this.el.dataset, {
      // The axis's levels as labelled (a flag's 否/是, an enum's values): the canvas holds no text.
      levels: names ? names.join(" | ") : "",
      gaps: String(gaps),
      limits: limits.map((l) => `${l.op}${l.value}`).join(" "),
    });
    const canvas = this.plot.querySelector("canvas");
    if (canvas) {
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", this.label);
    }
  }

  /** Let go of the chart (the page is left). */
  dispose() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.chart?.dispose();
    this.chart = null;
  }

  close() {
    this.dispose();
    this.resizer.disconnect();
  }
}

/** A round step near `raw`: 1, 2 or 5 times a power of ten. */
function roundStep(raw) {
  if (!(raw > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= raw);
}
