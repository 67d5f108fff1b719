// The run view (`#/run/<run>`): header, anomalies, one chart per series in groups, the
// gradient heatmap, checkpoints, samples and config. Charts load their series when they scroll
// into view; a live step count refetches the visible ones (at most once a second).

import { getJSON, runPath } from "./api.js";
import { MetricChart } from "./charts.js";
import { el, fill, fmtDuration, fmtTime } from "./escape.js";
import { groupOf } from "./groups.js";
import { renderHeatmap } from "./heatmap.js";
import { anomalyBadges, statusBadge, tagList } from "./runs.js";
import { anomalyKey, renderAnomalies, renderCheckpoints, renderConfig, renderSamples } from "./tables.js";

const REFRESH_MS = 1000;
const LINE_COLOR = "#1f77b4";

export class RunView {
  constructor(root, run) {
    this.root = root;
    this.run = run; // id or name from the URL; detail.run.run_id once loaded
    this.detail = null;
    this.anomalies = new Map();
    this.charts = new Map(); // series name -> {box, chart, data, visible, stale, abort}
    this.settings = { xMode: "step", log: false, smoothing: 0 };
    this.window = null; // [start, end] steps, or null for the whole run
    this.showInfo = false;
    this.lastRefresh = 0;
    this.refreshTimer = null;
    this.refreshing = false;
    this.observer = new IntersectionObserver((entries) => this.onVisibility(entries), { rootMargin: "300px" });
    this.build();
  }

  build() {
    this.header = el("header", { class: "run-header", id: "run-header" }, el("p", { class: "muted" }, "loading…"));
    this.anomalyBox = el("div", { id: "anomalies" });
    this.infoToggle = el("input", { type: "checkbox", onchange: (e) => { this.showInfo = e.target.checked; this.renderAnomalyTable(); this.decorateCharts(); } });
    this.smoothLabel = el("output", { id: "smoothing-value" }, "0");
    this.zoomLabel = el("span", { id: "zoom-state", class: "muted" });
    this.filter = el("input", { type: "search", placeholder: "filter charts", "aria-label": "filter charts", oninput: () => this.layoutCharts() });
    const controls = el(
      "div", { class: "toolbar chart-controls", id: "chart-controls" },
      el("label", {}, "smoothing ", el("input", {
        id: "smoothing", type: "range", min: "0", max: "0.99", step: "0.01", value: "0",
        oninput: (e) => { this.settings.smoothing = Number(e.target.value); fill(this.smoothLabel, e.target.value); this.redrawCharts(); },
      }), " ", this.smoothLabel),
      el("label", {}, "x axis ", el("select", { id: "x-axis", onchange: (e) => { this.settings.xMode = e.target.value; this.redrawCharts(); } },
        el("option", { value: "step" }, "step"), el("option", { value: "wall" }, "wall time"), el("option", { value: "relative" }, "relative time"))),
      el("label", {}, el("input", { id: "log-scale", type: "checkbox", onchange: (e) => { this.settings.log = e.target.checked; this.redrawCharts(); } }), " log scale"),
      this.filter,
      el("button", { type: "button", id: "zoom-reset", onclick: () => this.zoom(null) }, "Reset zoom"),
      this.zoomLabel,
    );
    this.chartArea = el("div", { id: "charts" });
    this.heatmapBox = el("div", { id: "heatmap" });
    this.checkpointBox = el("div", { id: "checkpoints" });
    this.sampleBox = el("div", { id: "samples" });
    this.configBox = el("div", { id: "config" });
    fill(
      this.root,
      this.header,
      el("section", { class: "panel" }, el("h2", {}, "Anomalies ", el("label", { class: "small" }, this.infoToggle, " show info")), this.anomalyBox),
      el("section", { class: "panel" }, el("h2", {}, "Charts"), controls, this.chartArea),
      el("section", { class: "panel" }, el("h2", {}, "Per-layer gradient norms"), this.heatmapBox),
      el("section", { class: "panel" }, el("h2", {}, "Checkpoints"), this.checkpointBox),
      el("section", { class: "panel" }, el("h2", {}, "Batch samples at anomalies"), this.sampleBox),
      el("section", { class: "panel" }, el("h2", {}, "Config"), this.configBox),
    );
    this.renderZoomLabel();
  }

  get runId() {
    return this.detail ? this.detail.run.run_id : this.run;
  }

  async load() {
    const detail = await getJSON(runPath(this.run), null, { key: "run" });
    if (!detail) {
      fill(this.header, el("h1", {}, this.run), el("p", { class: "muted" }, "This run could not be loaded."));
      return;
    }
    this.applyDetail(detail);
  }

  applyDetail(detail) {
    this.detail = detail;
    this.anomalies = new Map((detail.anomalies || []).map((a) => [anomalyKey(a), a]));
    this.renderHeader();
    this.renderAnomalyTable();
    this.layoutCharts();
    const heatmapKey = JSON.stringify(detail.heatmap || null);
    if (heatmapKey !== this.heatmapKey) {
      this.heatmapKey = heatmapKey;
      renderHeatmap(this.heatmapBox, detail.heatmap);
    }
    renderCheckpoints(this.checkpointBox, detail.checkpoints, detail.model_saves);
    renderSamples(this.sampleBox, detail.samples);
    renderConfig(this.configBox, detail.run.config);
  }

  renderHeader() {
    const r = this.detail.run;
    const fact = (label, value, id) => el("span", { class: "fact" }, el("span", { class: "label" }, label), " ", el("span", { id }, value));
    fill(
      this.header,
      el("h1", {}, r.name || r.run_id, " ", statusBadge(r.status)),
      el("div", { class: "facts" },
        fact("project", r.project, "run-project"),
        fact("steps", String(r.steps ?? 0), "run-steps"),
        fact("duration", fmtDuration(r.duration_s), "run-duration"),
        fact("started", fmtTime(r.start_time), "run-started"),
        r.end_time ? fact("ended", fmtTime(r.end_time), "run-ended") : null,
        r.host ? fact("host", `${r.host}${r.pid ? ` (pid ${r.pid})` : ""}`, "run-host") : null,
        fact("id", r.run_id, "run-id"),
      ),
      el("div", { class: "facts" }, el("span", { class: "label" }, "anomalies"), " ", anomalyBadges(r.anomalies), " ", tagList(r.tags)),
      r.error ? el("p", { class: "run-error" }, r.error) : null,
      r.notes ? el("p", { class: "notes" }, r.notes) : null,
    );
    document.title = `${r.name || r.run_id} · Tracer`;
  }

  shownAnomalies() {
    return [...this.anomalies.values()].filter((a) => this.showInfo || a.severity !== "info");
  }

  renderAnomalyTable() {
    const lastStep = this.detail ? this.detail.run.steps : 0;
    renderAnomalies(this.anomalyBox, this.shownAnomalies(), ([start, end]) => this.zoom([start, end]), lastStep);
  }

  // -- charts -------------------------------------------------------------------------------

  /** Put a chart box for every series in its group's section, in order (boxes are reused). */
  layoutCharts() {
    if (!this.detail) return;
    const needle = this.filter.value.trim().toLowerCase();
    const series = [...(this.detail.series || [])].sort((a, b) => {
      const ga = groupOf(a.name, a.category);
      const gb = groupOf(b.name, b.category);
      return ga.rank - gb.rank || ga.label.localeCompare(gb.label) || a.name.localeCompare(b.name);
    });
    const layoutKey = series.map((s) => s.name).join("\n");
    const fresh = layoutKey !== this.layoutKey;
    this.layoutKey = layoutKey;
    const sections = [];
    let current = null;
    for (const s of series) {
      const group = groupOf(s.name, s.category);
      if (!current || current.key !== group.key) {
        current = { key: group.key, label: group.label, boxes: [] };
        sections.push(current);
      }
      const entry = this.chartEntry(s.name);
      entry.box.hidden = Boolean(needle) && !s.name.toLowerCase().includes(needle);
      current.boxes.push(entry.box);
    }
    if (!fresh) return;
    fill(
      this.chartArea,
      sections.length ? null : el("p", { class: "empty" }, "No series logged yet."),
      sections.map((g) => el("section", { class: "chart-group", dataset: { group: g.key } }, el("h3", { class: "group-title" }, g.label), el("div", { class: "chart-grid" }, g.boxes))),
    );
  }

  chartEntry(name) {
    let entry = this.charts.get(name);
    if (entry) return entry;
    const box = el("div", { class: "chart-box", dataset: { metric: name } });
    const chart = new MetricChart(box, {
      title: name,
      onZoom: (start, end) => this.zoom([start, end]),
      onReset: () => this.zoom(null),
    });
    fill(chart.note, "loading…");
    entry = { name, box, chart, data: null, visible: false, stale: true, abort: null };
    this.charts.set(name, entry);
    this.observer.observe(box);
    return entry;
  }

  onVisibility(entries) {
    for (const item of entries) {
      const entry = this.charts.get(item.target.dataset.metric);
      if (!entry) continue;
      entry.visible = item.isIntersecting;
      if (entry.visible && entry.stale) this.fetchSeries(entry);
    }
  }

  async fetchSeries(entry) {
    if (entry.abort) entry.abort.abort();
    const abort = new AbortController();
    entry.abort = abort;
    entry.stale = false;
    const params = { metric: entry.name, points: Math.min(2000, Math.max(200, entry.chart.width())) };
    if (this.window) [params.start, params.end] = this.window;
    const data = await getJSON(`${runPath(this.runId)}/series`, params, { signal: abort.signal, key: `series:${entry.name}` });
    if (entry.abort !== abort) return; // a newer request replaced this one
    entry.abort = null;
    if (!data) { entry.stale = true; return; }
    entry.data = data;
    this.drawChart(entry);
  }

  drawChart(entry) {
    if (!entry.data) return;
    const line = { key: this.runId, label: "value", color: LINE_COLOR, series: entry.data, startTime: this.detail.run.start_time };
    entry.chart.update([line], this.settings, { anomalies: this.shownAnomalies(), divergence: null });
  }

  redrawCharts() {
    for (const entry of this.charts.values()) this.drawChart(entry);
  }

  decorateCharts() {
    const decorations = { anomalies: this.shownAnomalies(), divergence: null };
    for (const entry of this.charts.values()) entry.chart.decorate(decorations);
  }

  /** Refetch every visible chart (others refetch when they scroll into view). */
  refetchCharts() {
    for (const entry of this.charts.values()) {
      entry.stale = true;
      if (entry.visible && !entry.box.hidden) this.fetchSeries(entry);
    }
  }

  zoom(window) {
    this.window = window;
    this.renderZoomLabel();
    this.refetchCharts();
  }

  renderZoomLabel() {
    fill(this.zoomLabel, this.window
      ? `steps ${this.window[0]}–${this.window[1]} at full resolution (double-click a chart to reset)`
      : "drag across a chart to zoom");
  }

  // -- live -----------------------------------------------------------------------------------

  matches(runId, name) {
    return runId === this.run || runId === this.runId || (name !== undefined && name === this.run);
  }

  onRuns(rows) {
    if (!this.detail) return;
    const row = rows.find((r) => this.matches(r.run_id, r.name));
    if (!row) return;
    const before = this.detail.run;
    this.detail.run = row;
    this.renderHeader();
    if (row.steps !== before.steps || row.status !== before.status || JSON.stringify(row.anomalies) !== JSON.stringify(before.anomalies)) {
      this.scheduleRefresh();
    }
  }

  onAnomalies(data) {
    if (!this.detail || !this.matches(data.run_id)) return;
    for (const a of data.anomalies || []) this.anomalies.set(anomalyKey(a), a);
    this.renderAnomalyTable();
    this.decorateCharts();
  }

  /** Refresh the run's detail and its visible charts, at most once per REFRESH_MS. */
  scheduleRefresh() {
    if (this.refreshTimer !== null) return;
    const wait = Math.max(0, this.lastRefresh + REFRESH_MS - Date.now());
    this.refreshTimer = window.setTimeout(() => this.refresh(), this.refreshing ? REFRESH_MS : wait);
  }

  async refresh() {
    this.refreshTimer = null;
    if (this.refreshing) { this.scheduleRefresh(); return; }
    this.refreshing = true;
    this.lastRefresh = Date.now();
    try {
      const detail = await getJSON(runPath(this.runId), null, { key: "run" });
      if (detail && !this.closed) {
        this.applyDetail(detail);
        this.refetchCharts();
      }
    } finally {
      this.refreshing = false;
    }
  }

  unmount() {
    this.closed = true;
    if (this.refreshTimer !== null) window.clearTimeout(this.refreshTimer);
    this.observer.disconnect();
    for (const entry of this.charts.values()) {
      if (entry.abort) entry.abort.abort();
      entry.chart.destroy();
    }
    this.charts.clear();
  }
}
