// One line chart (uPlot) for one metric: one or several lines (a run, or runs overlaid), each
// drawn raw (faint) and smoothed, with non-finite points as explicit markers on the plot's
// edges, anomaly episodes as shaded bands, an optional "diverges here" line, drag-to-zoom
// (the view refetches that step window) and double-click to reset.

import uPlot from "./vendor/uplot/uPlot.esm.js";
import { NONFINITE_COLOR, SEVERITY_COLORS, withAlpha } from "./colors.js";
import { el, fill, fmtDuration, fmtNumber } from "./escape.js";

/**
 * TensorBoard's smoothing: an exponential moving average `s = w*s + (1-w)*v`, debiased by
 * 1 - w^n so the first points are not pulled towards zero. Missing (null) values stay missing
 * and do not enter the average.
 */
export function smooth(values, weight) {
  if (!(weight > 0)) return values.slice();
  const out = new Array(values.length);
  let last = 0;
  let count = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || v === undefined || !Number.isFinite(v)) {
      out[i] = v === undefined ? undefined : null;
      continue;
    }
    last = last * weight + (1 - weight) * v;
    count += 1;
    out[i] = last / (1 - Math.pow(weight, count));
  }
  return out;
}

/** The index of the point nearest `step` in ascending `steps` (-1 if empty). */
function nearestIndex(steps, step) {
  let lo = 0;
  let hi = steps.length - 1;
  if (hi < 0) return -1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (steps[mid] < step) lo = mid + 1;
    else hi = mid;
  }
  if (lo > 0 && Math.abs(steps[lo - 1] - step) <= Math.abs(steps[lo] - step)) return lo - 1;
  return lo;
}

/**
 * One line's points on the chosen x axis: `xs` (step, unix time, or seconds since the run's
 * start), `ys` (null where non-finite, or not positive on a log scale), and the step of each
 * point, for mapping anomaly steps and zoom windows back and forth.
 */
function linePoints(series, settings, startTime) {
  const steps = series.steps || [];
  const values = series.values || [];
  const times = series.times || null;
  const xs = [];
  const ys = [];
  const pointSteps = [];
  let hiddenByLog = 0;
  for (let i = 0; i < steps.length; i++) {
    let x = steps[i];
    if (settings.xMode !== "step") {
      const t = times ? times[i] : null;
      if (t === null || t === undefined) continue;
      x = settings.xMode === "wall" ? t : t - (startTime || 0);
      if (xs.length && x <= xs[xs.length - 1]) x = xs[xs.length - 1] + 1e-6; // keep x ascending
    }
    let y = values[i] === undefined ? null : values[i];
    if (settings.log && y !== null && !(y > 0)) {
      y = null;
      hiddenByLog += 1;
    }
    xs.push(x);
    ys.push(y);
    pointSteps.push(steps[i]);
  }
  const kinds = new Map((series.nonfinite || []).map((m) => [m.step, m.kind]));
  return { xs, ys, steps: pointSteps, kinds, hiddenByLog };
}

export class MetricChart {
  /**
   * `container`: an element to draw into. `onZoom(startStep, endStep)` after a drag;
   * `onReset()` on double-click.
   */
  constructor(container, { title, onZoom, onReset, height = 220 } = {}) {
    this.container = container;
    this.onZoom = onZoom;
    this.onReset = onReset;
    this.height = height;
    this.plot = null;
    this.shapeKey = null;
    this.lines = [];
    this.decorations = { anomalies: [], divergence: null };
    this.settings = { xMode: "step", log: false, smoothing: 0 };
    this.body = el("div", { class: "chart-body" });
    this.note = el("div", { class: "chart-note" });
    container.classList.add("chart");
    fill(container, title ? el("h3", { class: "chart-title" }, title) : null, this.body, this.note);
    this.resizer = new ResizeObserver(() => this.resize());
    this.resizer.observe(container);
  }

  width() {
    return Math.max(200, Math.floor(this.container.clientWidth || 600) - 4);
  }

  resize() {
    if (this.plot && Math.abs(this.plot.width - this.width()) > 2) {
      this.plot.setSize({ width: this.width(), height: this.height });
    }
  }

  /**
   * Draw `lines` ([{key, label, color, series, startTime}], `series` an API series object)
   * with `settings` ({xMode, log, smoothing}) and `decorations` ({anomalies, divergence}).
   */
  update(lines, settings, decorations) {
    this.lines = lines;
    this.settings = { ...settings };
    if (decorations) this.decorations = decorations;
    const points = lines.map((line) => linePoints(line.series, this.settings, line.startTime));
    this.points = points;
    const anyPositive = points.some((p) => p.ys.some((y) => y !== null && y > 0));
    const log = this.settings.log && anyPositive;
    const tables = points.map((p) => [p.xs, smooth(p.ys, this.settings.smoothing), p.ys]);
    let data;
    if (tables.length === 1) data = tables[0].map((column) => column.slice());
    else if (tables.length === 0) data = [[]];
    else data = uPlot.join(tables);
    this.alignedKinds = points.map((p) => {
      const byX = new Map(p.xs.map((x, i) => [x, p.kinds.get(p.steps[i])]));
      return data[0].map((x) => byX.get(x));
    });
    const key = JSON.stringify([lines.map((l) => [l.key, l.label, l.color]), this.settings.xMode, log]);
    if (!this.plot || key !== this.shapeKey) {
      if (this.plot) this.plot.destroy();
      this.shapeKey = key;
      this.plot = new uPlot(this.options(lines, log), data, this.body);
      this.plot.over.addEventListener("dblclick", () => this.onReset && this.onReset());
    } else {
      this.plot.setData(data);
    }
    this.container.classList.toggle("multi", lines.length > 1);
    this.container.classList.toggle("smoothed", this.settings.smoothing > 0);
    this.writeNote(points, log);
  }

  /** Redraw with new anomaly bands / divergence line, without new data. */
  decorate(decorations) {
    this.decorations = decorations;
    if (this.plot) this.plot.redraw(false, false);
  }

  writeNote(points, log) {
    const parts = [];
    points.forEach((p, index) => {
      const label = this.lines.length > 1 ? `${this.lines[index].label}: ` : "";
      const markers = this.lines[index].series.nonfinite || [];
      if (markers.length) {
        const shown = markers.slice(0, 5).map((m) => `${m.kind} at step ${m.step}`).join(", ");
        const more = markers.length > 5 ? ` and ${markers.length - 5} more` : "";
        parts.push(el("span", { class: "nonfinite-note" }, `${label}${shown}${more}`));
      }
      if (p.hiddenByLog) parts.push(el("span", {}, `${label}${p.hiddenByLog} values ≤ 0 not shown on a log scale`));
      if (this.lines[index].series.reduced) {
        parts.push(el("span", { class: "reduced-note" }, `${label}${this.lines[index].series.count} points, min/max per pixel`));
      }
    });
    if (this.settings.log && !log) parts.push(el("span", {}, "no positive values: linear scale"));
    const steps = new Set();
    for (const line of this.lines) for (const m of line.series.nonfinite || []) steps.add(m.step);
    this.container.dataset.nonfiniteSteps = [...steps].sort((a, b) => a - b).join(" ");
    fill(this.note, parts);
  }

  options(lines, log) {
    const xMode = this.settings.xMode;
    const xLabel = xMode === "step" ? "step" : xMode === "wall" ? "time" : "elapsed";
    const series = [
      {
        label: xLabel,
        value: (u, v) => (v === null || v === undefined ? "" : this.formatX(v)),
      },
    ];
    lines.forEach((line, index) => {
      const value = (u, v, sidx, idx) => {
        if (v !== null && v !== undefined) return fmtNumber(v);
        const kind = idx === null || idx === undefined ? undefined : this.alignedKinds[index][idx];
        return kind || "—";
      };
      series.push({ label: line.label, stroke: line.color, width: 1.6, spanGaps: false, value, points: { show: false } });
      series.push({
        label: `${line.label} raw`,
        stroke: withAlpha(line.color, 0.3),
        width: 1,
        spanGaps: false,
        value,
        points: { show: false },
      });
    });
    return {
      width: this.width(),
      height: this.height,
      scales: { x: { time: xMode === "wall" }, y: { distr: log ? 3 : 1 } },
      axes: [
        {
          values: xMode === "relative" ? (u, splits) => splits.map((s) => fmtDuration(s)) : undefined,
          stroke: "#555",
          grid: { stroke: "#eee" },
        },
        { size: 64, values: (u, splits) => splits.map((s) => fmtNumber(s)), stroke: "#555", grid: { stroke: "#eee" } },
      ],
      series,
      legend: { live: true },
      cursor: { drag: { x: true, y: false, setScale: false }, points: { size: 6 } },
      hooks: {
        setSelect: [(u) => this.selected(u)],
        draw: [(u) => this.drawDecorations(u)],
        ready: [(u) => this.markRawLegend(u)],
      },
    };
  }

  formatX(v) {
    if (this.settings.xMode === "step") return String(Math.round(v));
    if (this.settings.xMode === "relative") return fmtDuration(v);
    return new Date(v * 1000).toLocaleTimeString();
  }

  markRawLegend(u) {
    const rows = u.root.querySelectorAll(".u-legend .u-series");
    rows.forEach((row, index) => {
      if (index > 0 && index % 2 === 0) row.classList.add("raw-series");
    });
  }

  /** The x position of `step` on line `lineIndex` (null when that line has no points). */
  stepToX(step, lineIndex = 0) {
    if (this.settings.xMode === "step") return step;
    const p = this.points && this.points[lineIndex];
    if (!p || !p.steps.length) return null;
    return p.xs[nearestIndex(p.steps, step)];
  }

  /** The step window under an x range (the points' own steps in time modes). */
  xRangeToSteps(x0, x1) {
    if (this.settings.xMode === "step") return [Math.floor(x0), Math.ceil(x1)];
    let lo = Infinity;
    let hi = -Infinity;
    for (const p of this.points || []) {
      p.xs.forEach((x, i) => {
        if (x >= x0 && x <= x1) {
          lo = Math.min(lo, p.steps[i]);
          hi = Math.max(hi, p.steps[i]);
        }
      });
    }
    return Number.isFinite(lo) ? [lo, hi] : null;
  }

  selected(u) {
    const { left, width } = u.select;
    if (!(width > 2)) return;
    const range = this.xRangeToSteps(u.posToVal(left, "x"), u.posToVal(left + width, "x"));
    u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
    if (range && this.onZoom) this.onZoom(Math.max(0, range[0]), Math.max(range[0], range[1]));
  }

  drawDecorations(u) {
    const ctx = u.ctx;
    const { left, top, width, height } = u.bbox;
    const px = uPlot.pxRatio || 1;
    ctx.save();
    ctx.textAlign = "left";
    ctx.textBaseline = "alphabetic";
    ctx.beginPath();
    ctx.rect(left, top, width, height);
    ctx.clip();
    for (const anomaly of this.decorations.anomalies || []) {
      const x0 = this.stepToX(anomaly.step);
      if (x0 === null || x0 === undefined) continue;
      const endStep = anomaly.end_step === null || anomaly.end_step === undefined ? anomaly.step : anomaly.end_step;
      const x1 = this.stepToX(endStep);
      const color = SEVERITY_COLORS[anomaly.severity] || SEVERITY_COLORS.info;
      const p0 = u.valToPos(x0, "x", true);
      const p1 = Math.max(p0, u.valToPos(x1, "x", true));
      ctx.fillStyle = withAlpha(color, 0.12);
      ctx.fillRect(p0 - 1 * px, top, p1 - p0 + 2 * px, height);
      ctx.strokeStyle = color;
      ctx.lineWidth = 1 * px;
      ctx.setLineDash([4 * px, 3 * px]);
      ctx.beginPath();
      ctx.moveTo(p0, top);
      ctx.lineTo(p0, top + height);
      ctx.stroke();
    }
    ctx.setLineDash([]);
    const divergence = this.decorations.divergence;
    if (divergence !== null && divergence !== undefined) {
      const x = this.stepToX(divergence);
      if (x !== null) {
        const p = u.valToPos(x, "x", true);
        ctx.strokeStyle = "#444";
        ctx.lineWidth = 1.5 * px;
        ctx.setLineDash([6 * px, 4 * px]);
        ctx.beginPath();
        ctx.moveTo(p, top);
        ctx.lineTo(p, top + height);
        ctx.stroke();
        ctx.setLineDash([]);
        ctx.fillStyle = "#444";
        ctx.font = `${11 * px}px sans-serif`;
        ctx.fillText(`diverges at step ${divergence}`, p + 4 * px, top + 24 * px);
      }
    }
    this.lines.forEach((line, index) => this.drawNonFinite(u, line, index));
    ctx.restore();
  }

  /** Non-finite points: triangles on the top edge (+Inf up, NaN down) or bottom edge (-Inf). */
  drawNonFinite(u, line, index) {
    const ctx = u.ctx;
    const px = uPlot.pxRatio || 1;
    const { top, height } = u.bbox;
    const size = 6 * px;
    let lastLabel = -Infinity;
    ctx.font = `bold ${10 * px}px sans-serif`;
    for (const marker of line.series.nonfinite || []) {
      const x = this.stepToX(marker.step, index);
      if (x === null || x === undefined) continue;
      const p = u.valToPos(x, "x", true);
      const bottom = marker.kind === "-Inf";
      const edge = bottom ? top + height - 1 : top + 1;
      // +Inf points up from the top edge, -Inf down onto the bottom edge, NaN down from the top.
      const nan = marker.kind === "NaN";
      const tip = nan ? edge + size * 1.4 : edge;
      const base = nan ? edge : bottom ? edge - size * 1.4 : edge + size * 1.4;
      ctx.fillStyle = this.lines.length > 1 ? line.color : NONFINITE_COLOR;
      ctx.strokeStyle = NONFINITE_COLOR;
      ctx.lineWidth = 1 * px;
      ctx.beginPath();
      ctx.moveTo(p, tip);
      ctx.lineTo(p - size, base);
      ctx.lineTo(p + size, base);
      ctx.closePath();
      ctx.fill();
      ctx.stroke();
      if (p - lastLabel > 36 * px) {
        ctx.fillStyle = NONFINITE_COLOR;
        const y = bottom ? edge - size * 1.4 - 3 * px : edge + size * 1.4 + 11 * px;
        ctx.fillText(marker.kind, p + size + 2 * px, y);
        lastLabel = p;
      }
    }
  }

  destroy() {
    this.resizer.disconnect();
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}
