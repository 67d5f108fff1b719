// The compare view (`#/compare?runs=a,b,c[&metrics=m1,m2]`): the chosen runs overlaid, one
// chart per metric, a stable colour per run, the config values that differ, and the first step
// where the curves diverge marked on the chart.

import { getJSON, runPath } from "./api.js";
import { MetricChart } from "./charts.js";
import { colorsFor } from "./colors.js";
import { el, fill, fmtValue, isLossLike } from "./escape.js";
import { statusBadge } from "./runs.js";

const REFRESH_MS = 1000;

/** The step where the API says the curves first diverge, or null. */
export function divergenceStep(divergence) {
  if (divergence === null || divergence === undefined) return null;
  if (typeof divergence === "number") return divergence;
  if (Array.isArray(divergence)) {
    const steps = divergence.map(divergenceStep).filter((s) => s !== null);
    return steps.length ? Math.min(...steps) : null;
  }
  for (const key of ["step", "first_divergence_step", "first_step"]) {
    if (typeof divergence[key] === "number") return divergence[key];
  }
  for (const key of ["pairs", "runs"]) {
    if (Array.isArray(divergence[key]) && divergence[key].some((d) => typeof d === "object")) return divergenceStep(divergence[key]);
  }
  return null;
}

/** The metric to compare first: a loss ("loss", then train losses), else the first name. */
export function defaultMetric(names) {
  const losses = names.filter(isLossLike).sort((a, b) => {
    const rank = (n) => (n === "loss" ? 0 : /train/i.test(n) ? 1 : 2);
    return rank(a) - rank(b) || a.localeCompare(b);
  });
  return losses[0] || names[0] || null;
}

export class CompareView {
  constructor(root, runs, metrics) {
    this.root = root;
    this.runs = runs;
    this.metrics = metrics;
    this.rows = new Map();
    this.charts = new Map(); // metric -> {box, chart, data}
    this.settings = { xMode: "step", log: false, smoothing: 0 };
    this.refreshTimer = null;
    this.lastRefresh = 0;
    this.build();
  }

  build() {
    this.legend = el("div", { class: "compare-legend", id: "compare-runs" });
    this.metricSelect = el("select", { id: "compare-metric", "aria-label": "metric", onchange: (e) => this.setMetrics([e.target.value, ...this.metrics.slice(1)]) });
    this.divergenceBox = el("p", { id: "divergence", class: "muted" });
    this.chartArea = el("div", { class: "chart-grid compare-charts", id: "compare-charts" });
    this.diffBox = el("div", { id: "config-diff" });
    const controls = el(
      "div", { class: "toolbar" },
      el("label", {}, "metric ", this.metricSelect),
      el("button", { type: "button", id: "add-chart", onclick: () => this.addChart() }, "Add as another chart"),
      el("label", {}, "smoothing ", el("input", { type: "range", min: "0", max: "0.99", step: "0.01", value: "0", oninput: (e) => { this.settings.smoothing = Number(e.target.value); this.redraw(); } })),
      el("label", {}, el("input", { type: "checkbox", onchange: (e) => { this.settings.log = e.target.checked; this.redraw(); } }), " log scale"),
    );
    fill(
      this.root,
      el("header", { class: "run-header" }, el("h1", {}, `Compare ${this.runs.length} runs`), this.legend),
      el("section", { class: "panel" }, el("h2", {}, "Metrics"), controls, this.divergenceBox, this.chartArea),
      el("section", { class: "panel" }, el("h2", {}, "Config values that differ"), this.diffBox),
    );
  }

  async load() {
    if (this.runs.length < 1) {
      fill(this.chartArea, el("p", { class: "empty" }, "Pick runs to compare on the runs page."));
      return;
    }
    const details = await Promise.all(this.runs.map((run) => getJSON(runPath(run), null, { key: `run:${run}` })));
    const present = details.filter(Boolean);
    for (const d of present) this.rows.set(d.run.run_id, d.run);
    let common = null;
    for (const d of present) {
      const names = new Set((d.series || []).map((s) => s.name));
      common = common === null ? names : new Set([...common].filter((n) => names.has(n)));
    }
    this.common = [...(common || [])].sort((a, b) => Number(isLossLike(b)) - Number(isLossLike(a)) || a.localeCompare(b));
    fill(this.metricSelect, this.common.map((name) => el("option", { value: name }, name)));
    this.metrics = this.metrics.filter((m) => this.common.includes(m));
    if (!this.metrics.length) {
      const first = defaultMetric(this.common);
      this.metrics = first ? [first] : [];
    }
    this.renderLegend();
    if (!this.metrics.length) {
      fill(this.chartArea, el("p", { class: "empty" }, "These runs have no metric in common."));
      return;
    }
    this.setMetrics(this.metrics);
  }

  setMetrics(metrics) {
    this.metrics = [...new Set(metrics)];
    this.metricSelect.value = this.metrics[0];
    const params = new URLSearchParams({ runs: this.runs.join(",") });
    params.set("metrics", this.metrics.join(","));
    window.history.replaceState(null, "", `${window.location.pathname}${window.location.search}#/compare?${params}`);
    for (const [metric, entry] of this.charts) {
      if (!this.metrics.includes(metric)) { entry.chart.destroy(); this.charts.delete(metric); }
    }
    fill(this.chartArea, this.metrics.map((metric) => this.chartEntry(metric).box));
    for (const metric of this.metrics) this.fetchMetric(metric);
  }

  addChart() {
    const metric = this.metricSelect.value;
    if (metric && !this.metrics.includes(metric)) this.setMetrics([...this.metrics, metric]);
  }

  chartEntry(metric) {
    let entry = this.charts.get(metric);
    if (entry) return entry;
    const box = el("div", { class: "chart-box", dataset: { metric } });
    const remove = el("button", { type: "button", class: "chart-remove", title: "remove this chart", onclick: () => this.setMetrics(this.metrics.filter((m) => m !== metric)) }, "×");
    const chart = new MetricChart(box, {
      title: metric,
      height: 300,
      onZoom: (start, end) => entry.chart.plot && entry.chart.plot.setScale("x", { min: start, max: end }),
      onReset: () => this.drawChart(entry),
    });
    box.prepend(remove);
    fill(chart.note, "loading…");
    entry = { metric, box, chart, data: null };
    this.charts.set(metric, entry);
    return entry;
  }

  async fetchMetric(metric) {
    const entry = this.chartEntry(metric);
    const points = Math.min(2000, Math.max(200, entry.chart.width()));
    const data = await getJSON("/api/compare", { runs: this.runs.join(","), metric, points }, { key: `compare:${metric}` });
    if (!data || this.charts.get(metric) !== entry) return;
    entry.data = data;
    for (const row of data.runs || []) this.rows.set(row.run_id, row);
    this.drawChart(entry);
    if (metric === this.metrics[0]) {
      this.renderLegend();
      this.renderDiff(data.config_diff || {});
      this.renderDivergence(data);
    }
  }

  lines(data) {
    return (data.runs || []).filter((row) => data.series && data.series[row.run_id]).map((row) => ({
      key: row.run_id,
      label: row.name || row.run_id,
      color: this.color(row.run_id),
      series: data.series[row.run_id],
      startTime: row.start_time,
    }));
  }

  drawChart(entry) {
    if (!entry.data) return;
    entry.chart.update(this.lines(entry.data), this.settings, { anomalies: [], divergence: divergenceStep(entry.data.divergence) });
    entry.box.dataset.divergence = String(divergenceStep(entry.data.divergence) ?? "");
  }

  redraw() {
    for (const entry of this.charts.values()) this.drawChart(entry);
  }

  color(runId) {
    return colorsFor([...this.rows.keys()]).get(runId) || "#7f7f7f";
  }

  orderedRows() {
    return [...this.rows.values()].sort((a, b) => this.position(a) - this.position(b));
  }

  position(row) {
    const index = this.runs.findIndex((r) => r === row.run_id || r === row.name);
    return index < 0 ? this.runs.length : index;
  }

  renderLegend() {
    fill(this.legend, this.orderedRows().map((row) => {
      const swatch = el("span", { class: "swatch" });
      swatch.style.backgroundColor = this.color(row.run_id);
      return el("span", { class: "legend-run", dataset: { runId: row.run_id } }, swatch,
        el("a", { href: `#/run/${encodeURIComponent(row.run_id)}` }, row.name || row.run_id), " ", statusBadge(row.status), ` ${row.steps ?? 0} steps`);
    }));
  }

  renderDivergence(data) {
    const step = divergenceStep(data.divergence);
    const d = data.divergence || {};
    const name = (id) => {
      const row = this.rows.get(id);
      return row ? row.name || row.run_id : id;
    };
    let text;
    if (this.rows.size < 2) text = "";
    else if (step === null) text = `${data.metric}: the curves do not diverge.`;
    else if (d.run_id && d.reference) text = `${data.metric}: ${name(d.run_id)} first leaves ${name(d.reference)} at step ${step} (dashed line).`;
    else text = `${data.metric}: the curves first diverge at step ${step} (dashed line).`;
    fill(this.divergenceBox, text);
  }

  renderDiff(diff) {
    const rows = this.orderedRows();
    const keys = Object.keys(diff).sort();
    const head = el("tr", {}, el("th", {}, "key"), rows.map((row) => {
      const swatch = el("span", { class: "swatch" });
      swatch.style.backgroundColor = this.color(row.run_id);
      return el("th", {}, swatch, row.name || row.run_id);
    }));
    const body = el("tbody", {}, keys.map((key) => el("tr", {}, el("td", { class: "key" }, key),
      rows.map((row) => el("td", { class: "value", title: fmtValue(diff[key][row.run_id], 2000) }, fmtValue(diff[key][row.run_id], 60))))));
    if (!keys.length) body.appendChild(el("tr", {}, el("td", { colspan: rows.length + 1, class: "empty" }, "The runs' configs are the same.")));
    fill(this.diffBox, el("table", { class: "data-table", id: "config-diff-table" }, el("thead", {}, head), body));
  }

  onRuns(rows) {
    let grew = false;
    for (const row of rows) {
      const before = this.rows.get(row.run_id);
      if (!before) continue;
      if (row.steps !== before.steps || row.status !== before.status) grew = true;
      this.rows.set(row.run_id, row);
    }
    if (!grew) return;
    this.renderLegend();
    if (this.refreshTimer === null) {
      const wait = Math.max(0, this.lastRefresh + REFRESH_MS - Date.now());
      this.refreshTimer = window.setTimeout(() => {
        this.refreshTimer = null;
        this.lastRefresh = Date.now();
        for (const metric of this.metrics) this.fetchMetric(metric);
      }, wait);
    }
  }

  onAnomalies() {}

  unmount() {
    if (this.refreshTimer !== null) window.clearTimeout(this.refreshTimer);
    for (const entry of this.charts.values()) entry.chart.destroy();
    this.charts.clear();
  }
}
