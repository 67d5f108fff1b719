// The report page: the run data embedded in the file (`#tracer-report-data`, JSON built by
// `tracer.analysis.payloads`, the functions behind the dashboard's API) drawn with the
// dashboard's own modules: one MetricChart (uPlot) per series, grouped as the dashboard groups
// them, the gradient heatmap, and the anomaly, checkpoint, sample and config tables.
//
// There is no server: drag-to-zoom narrows the x range within the points embedded here (the
// dashboard would refetch that window at full resolution), double-click or "Reset zoom"
// shows everything again. Bundled into the page by `tracer/report/bundle.py`, which turns the
// imports below into references to the modules bundled before this one.

import { MetricChart } from "./charts.js";
import { el, fill } from "./escape.js";
import { groupOf } from "./groups.js";
import { renderHeatmap } from "./heatmap.js";
import { renderAnomalies, renderCheckpoints, renderConfig, renderSamples } from "./tables.js";

const data = JSON.parse(document.getElementById("tracer-report-data").textContent);
const runs = data.runs;
const settings = { xMode: "step", log: false, smoothing: 0 };
const charts = []; // {name, chart, lines}
let zoomWindow = null; // [start, end] steps, or null for everything

function byId(id) {
  return document.getElementById(id);
}

/** The anomalies drawn on the charts: warnings and critical ones of every run shown. */
function chartAnomalies() {
  return runs.flatMap((run) => run.detail.anomalies.filter((a) => a.severity !== "info"));
}

function linesOf(name) {
  const lines = [];
  for (const run of runs) {
    const series = run.series[name];
    if (!series) continue;
    lines.push({
      key: run.detail.run.run_id,
      label: runs.length > 1 ? run.label : "value",
      color: run.color,
      series,
      startTime: run.detail.run.start_time,
    });
  }
  return lines;
}

function drawCharts() {
  const decorations = { anomalies: chartAnomalies(), divergence: null };
  for (const entry of charts) entry.chart.update(entry.lines, settings, decorations);
  applyZoom();
}

/** Narrow (or widen back) every chart's x scale; the data stays what the file holds. */
function applyZoom() {
  for (const entry of charts) {
    const plot = entry.chart.plot;
    if (!plot) continue;
    const xs = plot.data[0];
    if (!xs.length) continue;
    let lo = xs[0];
    let hi = xs[xs.length - 1];
    if (zoomWindow) {
      const a = entry.chart.stepToX(zoomWindow[0]);
      const b = entry.chart.stepToX(zoomWindow[1]);
      if (a !== null && b !== null && b > a) [lo, hi] = [a, b];
    }
    if (hi <= lo) hi = lo + 1;
    plot.setScale("x", { min: lo, max: hi });
    entry.box.dataset.xRange = `${lo} ${hi}`; // the x range shown (for tests and readers)
  }
  const label = byId("zoom-state");
  if (!label) return;
  fill(label, zoomWindow
    ? `steps ${zoomWindow[0]}–${zoomWindow[1]}, within the points this file holds (double-click a chart to reset)`
    : "drag across a chart to zoom");
}

function zoom(window) {
  zoomWindow = window;
  applyZoom();
}

function buildCharts() {
  const area = byId("charts-area");
  const names = [...new Set(runs.flatMap((run) => Object.keys(run.series)))];
  const categories = new Map();
  for (const run of runs) for (const s of run.detail.series) categories.set(s.name, s.category);
  for (const run of runs) for (const [name, s] of Object.entries(run.series)) if (!categories.has(name)) categories.set(name, s.category);
  names.sort((a, b) => {
    const ga = groupOf(a, categories.get(a));
    const gb = groupOf(b, categories.get(b));
    return ga.rank - gb.rank || ga.label.localeCompare(gb.label) || a.localeCompare(b);
  });
  const sections = [];
  for (const name of names) {
    const group = groupOf(name, categories.get(name));
    if (!sections.length || sections[sections.length - 1].key !== group.key) sections.push({ ...group, boxes: [] });
    const box = el("div", { class: "chart-box", dataset: { metric: name } });
    sections[sections.length - 1].boxes.push(box);
    charts.push({ name, box, lines: linesOf(name), chart: null });
  }
  fill(
    area,
    sections.length ? null : el("p", { class: "empty" }, "No series recorded."),
    sections.map((g) => el("section", { class: "chart-group", dataset: { group: g.key } }, el("h3", { class: "group-title" }, g.label), el("div", { class: "chart-grid" }, g.boxes))),
  );
  for (const entry of charts) {
    entry.chart = new MetricChart(entry.box, { title: entry.name, onZoom: (start, end) => zoom([start, end]), onReset: () => zoom(null) });
  }
  drawCharts();
}

function wireControls() {
  const smoothing = byId("smoothing");
  smoothing.addEventListener("input", () => {
    settings.smoothing = Number(smoothing.value);
    fill(byId("smoothing-value"), smoothing.value);
    drawCharts();
  });
  byId("x-axis").addEventListener("change", (event) => { settings.xMode = event.target.value; drawCharts(); });
  byId("log-scale").addEventListener("change", (event) => { settings.log = event.target.checked; drawCharts(); });
  byId("zoom-reset").addEventListener("click", () => zoom(null));
}

function buildTables() {
  runs.forEach((run, index) => {
    const detail = run.detail;
    const showEpisode = (window) => {
      zoom(window);
      byId("charts").scrollIntoView();
    };
    renderAnomalies(byId(`anomalies-${index}`), detail.anomalies, showEpisode, detail.run.steps);
    renderHeatmap(byId(`heatmap-${index}`), detail.heatmap);
    renderCheckpoints(byId(`checkpoints-${index}`), detail.checkpoints, detail.model_saves);
    renderSamples(byId(`samples-${index}`), detail.samples);
    renderConfig(byId(`config-${index}`), detail.run.config);
  });
}

wireControls();
buildCharts();
buildTables();
document.body.dataset.drawn = "true";
