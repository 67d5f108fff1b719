// The runs view (`#/`): every run in a table, filtered, searched and sorted in the page,
// updated live from the event stream. Loads /api/runs only, never a metric history.

import { getJSON } from "./api.js";
import { compareValues, el, fill, fmtDuration, fmtTime, fmtValue } from "./escape.js";

const STATUSES = ["running", "finished", "failed", "killed", "crashed"];
const COLUMN_KEY = "tracer.ui.configColumns";

function configKeys(rows) {
  const keys = new Set();
  for (const row of rows) for (const key of Object.keys(row.config || {})) keys.add(key);
  return [...keys].sort();
}

/** Config keys whose values are not all the same across `rows` (missing counts as a value). */
function differingKeys(rows) {
  return configKeys(rows).filter((key) => {
    const seen = new Set(rows.map((row) => JSON.stringify((row.config || {})[key] ?? null)));
    return seen.size > 1;
  });
}

function anomalyTotal(row) {
  const a = row.anomalies || {};
  return (a.critical || 0) * 1e6 + (a.warning || 0) * 1e3 + (a.info || 0);
}

const FIXED_COLUMNS = [
  { key: "project", label: "project", value: (r) => r.project },
  { key: "name", label: "name", value: (r) => r.name || r.run_id },
  { key: "status", label: "status", value: (r) => r.status },
  { key: "steps", label: "steps", value: (r) => r.steps, num: true },
  { key: "duration", label: "duration", value: (r) => r.duration_s, num: true },
  { key: "anomalies", label: "anomalies", value: anomalyTotal, num: true },
  { key: "tags", label: "tags", value: (r) => (r.tags || []).join(" ") },
];

export function statusBadge(status) {
  return el("span", { class: `status status-${STATUSES.includes(status) ? status : "other"}` }, status || "?");
}

export function anomalyBadges(counts) {
  const a = counts || {};
  const badges = ["critical", "warning", "info"]
    .filter((severity) => a[severity])
    .map((severity) => el("span", { class: `badge sev-${severity}`, title: `${a[severity]} ${severity}` }, `${a[severity]} ${severity}`));
  return badges.length ? badges : el("span", { class: "muted" }, "none");
}

export function tagList(tags) {
  return (tags || []).map((tag) => el("span", { class: "tag" }, tag));
}

export class RunsView {
  constructor(root, navigate) {
    this.root = root;
    this.navigate = navigate;
    this.rows = new Map();
    this.projects = [];
    this.selected = new Set();
    this.filters = { project: "", status: "", search: "" };
    this.sort = { key: "start", dir: -1 };
    let saved = null;
    try {
      saved = JSON.parse(window.localStorage.getItem(COLUMN_KEY) || "null");
    } catch (error) {
      saved = null;
    }
    this.chosenKeys = Array.isArray(saved) ? saved : null; // null: the keys that differ
    this.build();
  }

  async load() {
    const body = await getJSON("/api/runs", null, { key: "runs" });
    if (!body) return;
    this.projects = body.projects || [];
    for (const row of body.runs || []) {
      const live = this.rows.get(row.run_id); // a live event may have brought a newer row
      if (!live || (row.steps ?? 0) >= (live.steps ?? 0)) this.rows.set(row.run_id, row);
    }
    this.render();
  }

  /** Rows from a live `runs` event: new runs appear, changed ones are replaced. */
  onRuns(rows, removed) {
    for (const id of removed || []) {
      this.rows.delete(id);
      this.selected.delete(id);
    }
    for (const row of rows) {
      this.rows.set(row.run_id, row);
      if (row.project && !this.projects.includes(row.project)) this.projects.push(row.project);
    }
    this.render();
  }

  onAnomalies() {}

  unmount() {}

  build() {
    this.projectSelect = el("select", { id: "filter-project", "aria-label": "project", onchange: (e) => { this.filters.project = e.target.value; this.render(); } });
    this.statusSelect = el(
      "select", { id: "filter-status", "aria-label": "status", onchange: (e) => { this.filters.status = e.target.value; this.render(); } },
      el("option", { value: "" }, "all statuses"),
      STATUSES.map((s) => el("option", { value: s }, s)),
    );
    this.search = el("input", { id: "filter-search", type: "search", placeholder: "search name, tags, config", "aria-label": "search", oninput: (e) => { this.filters.search = e.target.value; this.render(); } });
    this.compareButton = el("button", { id: "compare-button", type: "button", disabled: true, onclick: () => this.compare() }, "Compare");
    this.columnsMenu = el("div", { class: "columns-menu" });
    this.columnsPicker = el("details", { class: "columns-picker" }, el("summary", {}, "Config columns"), this.columnsMenu);
    this.count = el("span", { class: "muted", id: "runs-count" });
    this.table = el("table", { class: "runs-table", id: "runs-table" });
    fill(
      this.root,
      el("div", { class: "toolbar" }, this.projectSelect, this.statusSelect, this.search, this.columnsPicker, this.compareButton, this.count),
      el("div", { class: "table-wrap" }, this.table),
    );
  }

  visibleRows() {
    const needle = this.filters.search.trim().toLowerCase();
    return [...this.rows.values()].filter((row) => {
      if (this.filters.project && row.project !== this.filters.project) return false;
      if (this.filters.status && row.status !== this.filters.status) return false;
      if (!needle) return true;
      const haystack = [row.name, row.run_id, row.project, ...(row.tags || [])];
      for (const [key, value] of Object.entries(row.config || {})) haystack.push(`${key}=${fmtValue(value, 1000)}`);
      return haystack.some((item) => String(item ?? "").toLowerCase().includes(needle));
    });
  }

  shownKeys(rows) {
    if (this.chosenKeys) return this.chosenKeys;
    return differingKeys(rows).slice(0, 12);
  }

  columns(rows) {
    const config = this.shownKeys(rows).map((key) => ({
      key: `config:${key}`, label: key, config: true, value: (r) => (r.config || {})[key],
    }));
    return [...FIXED_COLUMNS, ...config, { key: "start", label: "started", value: (r) => r.start_time, num: true }];
  }

  render() {
    const current = this.projectSelect.value;
    fill(this.projectSelect, el("option", { value: "" }, "all projects"), [...this.projects].sort().map((p) => el("option", { value: p }, p)));
    this.projectSelect.value = this.projects.includes(current) ? current : "";
    this.filters.project = this.projectSelect.value;

    const rows = this.visibleRows();
    const columns = this.columns(rows);
    const column = columns.find((c) => c.key === this.sort.key) || columns[columns.length - 1];
    rows.sort((a, b) => compareValues(column.value(a), column.value(b)) * this.sort.dir || compareValues(a.run_id, b.run_id));

    const allChecked = rows.length > 0 && rows.every((r) => this.selected.has(r.run_id));
    const head = el("tr", {}, el("th", { class: "select" }, el("input", {
      type: "checkbox", "aria-label": "select all shown runs", checked: allChecked,
      onchange: (e) => { for (const r of rows) { if (e.target.checked) this.selected.add(r.run_id); else this.selected.delete(r.run_id); } this.render(); },
    })));
    for (const c of columns) {
      const sorted = c.key === this.sort.key;
      head.appendChild(el(
        "th",
        { class: [c.num && "num", c.config && "config", "sortable"], dataset: { col: c.key }, "aria-sort": sorted ? (this.sort.dir > 0 ? "ascending" : "descending") : "none",
          onclick: () => { this.sort = { key: c.key, dir: sorted ? -this.sort.dir : c.num ? -1 : 1 }; this.render(); } },
        c.label, sorted ? (this.sort.dir > 0 ? " ▲" : " ▼") : "",
      ));
    }
    const body = el("tbody");
    for (const row of rows) body.appendChild(this.renderRow(row, columns));
    if (!rows.length) {
      body.appendChild(el("tr", {}, el("td", { colspan: columns.length + 1, class: "empty" }, this.rows.size ? "No run matches the filters." : "No runs in this store yet.")));
    }
    fill(this.table, el("thead", {}, head), body);
    fill(this.count, `${rows.length} of ${this.rows.size} runs`);
    this.renderColumnsMenu(rows);
    const chosen = [...this.selected].filter((id) => this.rows.has(id));
    this.compareButton.disabled = chosen.length < 2;
    fill(this.compareButton, chosen.length ? `Compare ${chosen.length}` : "Compare");
  }

  renderRow(row, columns) {
    const open = () => this.navigate(`#/run/${encodeURIComponent(row.run_id)}`);
    const tr = el("tr", { dataset: { runId: row.run_id }, class: "clickable", onclick: (e) => { if (!e.target.closest("input, a")) open(); } });
    tr.appendChild(el("td", { class: "select" }, el("input", {
      type: "checkbox", "aria-label": `select ${row.name || row.run_id}`, checked: this.selected.has(row.run_id),
      onchange: (e) => { if (e.target.checked) this.selected.add(row.run_id); else this.selected.delete(row.run_id); this.render(); },
    })));
    for (const c of columns) {
      let content;
      if (c.key === "name") content = el("a", { href: `#/run/${encodeURIComponent(row.run_id)}`, class: "run-link" }, row.name || row.run_id);
      else if (c.key === "status") content = statusBadge(row.status);
      else if (c.key === "duration") content = fmtDuration(row.duration_s);
      else if (c.key === "anomalies") content = anomalyBadges(row.anomalies);
      else if (c.key === "tags") content = tagList(row.tags);
      else if (c.key === "start") content = fmtTime(row.start_time);
      else content = c.config ? fmtValue(c.value(row), 40) : c.value(row);
      const title = c.config ? fmtValue(c.value(row), 1000) : null;
      tr.appendChild(el("td", { class: [c.num && "num", c.config && "config"], dataset: { col: c.key }, title }, content));
    }
    return tr;
  }

  renderColumnsMenu(rows) {
    if (this.columnsPicker.open && this.columnsMenu.childElementCount) return; // don't redraw under the pointer
    const shown = new Set(this.shownKeys(rows));
    const keys = configKeys([...this.rows.values()]);
    const toggle = (key, on) => {
      const next = new Set(this.shownKeys(this.visibleRows()));
      if (on) next.add(key); else next.delete(key);
      this.chosenKeys = keys.filter((k) => next.has(k));
      this.saveKeys();
      this.columnsMenu.replaceChildren();
      this.render();
    };
    fill(
      this.columnsMenu,
      el("button", { type: "button", onclick: () => { this.chosenKeys = null; this.saveKeys(); this.columnsMenu.replaceChildren(); this.render(); } }, "Default: the keys that differ"),
      keys.length ? null : el("p", { class: "muted" }, "No config values recorded."),
      keys.map((key) => el("label", {}, el("input", { type: "checkbox", checked: shown.has(key), onchange: (e) => toggle(key, e.target.checked) }), key)),
    );
  }

  saveKeys() {
    try {
      if (this.chosenKeys) window.localStorage.setItem(COLUMN_KEY, JSON.stringify(this.chosenKeys));
      else window.localStorage.removeItem(COLUMN_KEY);
    } catch (error) {
      // storage may be off (private mode): the choice then lasts until the page is left
    }
  }

  compare() {
    const ids = [...this.selected].filter((id) => this.rows.has(id));
    if (ids.length >= 2) this.navigate(`#/compare?runs=${ids.map(encodeURIComponent).join(",")}`);
  }
}
