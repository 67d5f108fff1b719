// The run view's tables: anomalies, checkpoints, config and batch samples. Plain DOM, every
// value from the run as text.

import { compareValues, el, fill, fmtNumber, fmtTime, fmtValue } from "./escape.js";

function table(id, headers, rows, emptyText) {
  const head = el("tr", {}, headers.map((h) => el("th", { class: h.num ? "num" : null }, h.label)));
  const body = el("tbody", {}, rows);
  if (!rows.length) body.appendChild(el("tr", {}, el("td", { colspan: headers.length, class: "empty" }, emptyText)));
  return el("table", { id, class: "data-table" }, el("thead", {}, head), body);
}

/** The identity of an anomaly episode, to merge live updates into the list. */
export function anomalyKey(a) {
  return `${a.step}|${a.anomaly_type}|${a.subject ?? ""}`;
}

/** The step window to show for an episode: step..end_step with a margin on both sides. */
export function episodeWindow(anomaly, lastStep) {
  const start = anomaly.step;
  const end = anomaly.end_step ?? (anomaly.open ? Math.max(start, lastStep || start) : start);
  const margin = Math.max(10, Math.ceil((end - start) * 0.5));
  return [Math.max(0, start - margin), end + margin];
}

export function renderAnomalies(container, anomalies, onPick, lastStep) {
  const sorted = [...anomalies].sort((a, b) => compareValues(a.step, b.step) || compareValues(a.anomaly_type, b.anomaly_type));
  const rows = sorted.map((a) => el(
    "tr",
    { class: ["clickable", `sev-row-${a.severity}`], dataset: { step: a.step, type: a.anomaly_type }, title: "show this episode in the charts", onclick: () => onPick(episodeWindow(a, lastStep)) },
    el("td", { class: "num" }, a.step),
    el("td", { class: "num" }, a.open ? "open" : a.end_step ?? a.step),
    el("td", {}, a.anomaly_type),
    el("td", {}, el("span", { class: `badge sev-${a.severity}` }, a.severity)),
    el("td", {}, a.subject ?? ""),
    el("td", { class: "message" }, a.message ?? "", a.count > 1 ? el("span", { class: "muted" }, ` (×${a.count})`) : null),
    el("td", { class: "hint" }, a.hint ?? ""),
  ));
  const headers = ["step", "end", "type", "severity", "subject", "message", "hint"].map((label) => ({ label, num: label === "step" || label === "end" }));
  fill(container, table("anomalies-table", headers, rows, "No anomalies detected."));
}

/** Where Tracer keeps a save it pinned (pin_checkpoints), shown under the save's own path. */
function pinnedNote(save) {
  return save.pinned_path ? el("div", { class: "pinned-path" }, "pinned: ", save.pinned_path) : null;
}

export function renderCheckpoints(container, checkpoints, modelSaves) {
  const saves = new Map();
  for (const save of modelSaves || []) {
    if (!saves.has(save.step)) saves.set(save.step, []);
    saves.get(save.step).push(save);
  }
  const rows = (checkpoints || []).map((c) => el(
    "tr",
    { class: c.last_healthy ? "last-healthy" : null, dataset: { step: c.step } },
    el("td", { class: "num" }, c.step),
    el("td", {}, fmtTime(c.timestamp)),
    el("td", {}, c.reason ?? ""),
    el("td", {}, c.healthy ? el("span", { class: "ok" }, "healthy") : el("span", { class: "bad" }, "unhealthy"),
      c.last_healthy ? el("span", { class: "badge last-healthy-badge" }, "last healthy") : null),
    el("td", { class: "path" }, (saves.get(c.step) || []).map((save) => el("div", {}, save.path ?? "",
      save.last_healthy ? el("span", { class: "badge last-healthy-badge" }, "last healthy model") : null,
      pinnedNote(save)))),
  ));
  const headers = ["step", "time", "reason", "health", "model saved"].map((label) => ({ label, num: label === "step" }));
  const listed = new Set((checkpoints || []).map((c) => c.step));
  const orphanSaves = (modelSaves || []).filter((s) => !listed.has(s.step));
  fill(
    container,
    table("checkpoints-table", headers, rows, "No checkpoints recorded."),
    orphanSaves.length
      ? el("p", { class: "muted" }, "Model saves: ", orphanSaves.map((s) => `step ${s.step}: ${s.path}${s.pinned_path ? ` (pinned at ${s.pinned_path})` : ""}`).join("; "))
      : null,
  );
}

export function renderConfig(container, config) {
  const keys = Object.keys(config || {}).sort();
  const rows = keys.map((key) => el("tr", {}, el("td", { class: "key" }, key), el("td", { class: "value" }, fmtValue(config[key], 500))));
  fill(container, table("config-table", [{ label: "key" }, { label: "value" }], rows, "No config recorded."));
}

/** A sample's values, flattened and cut to 24; a null is the kind its marker names. */
function sampleValues(values, nonfinite) {
  if (values === null || values === undefined) return "";
  if (typeof values === "number" || typeof values === "string") return fmtNumber(values);
  const kinds = new Map();
  for (const marker of nonfinite || []) {
    if (Array.isArray(marker)) kinds.set(marker.slice(0, -1).join(","), marker[marker.length - 1]);
  }
  const flat = [];
  const walk = (v, path) => {
    if (flat.length > 24) return;
    if (Array.isArray(v)) v.forEach((item, i) => walk(item, [...path, i]));
    else flat.push(v === null ? kinds.get(path.join(",")) || "non-finite" : fmtNumber(v));
  };
  walk(values, []);
  return flat.slice(0, 24).join(", ") + (flat.length > 24 ? ", …" : "");
}

export function renderSamples(container, samples) {
  const rows = (samples || []).map((s) => el(
    "tr",
    { dataset: { step: s.step } },
    el("td", { class: "num" }, s.step),
    el("td", {}, s.reason ?? ""),
    el("td", {}, s.role ?? ""),
    el("td", {}, s.name ?? ""),
    el("td", {}, Array.isArray(s.shape) ? `[${s.shape.join(", ")}]` : fmtValue(s.shape)),
    el("td", {}, s.dtype ?? ""),
    el("td", { class: "values" }, sampleValues(s.values, s.nonfinite), s.truncated ? el("span", { class: "muted" }, " (truncated)") : null),
  ));
  const headers = ["step", "reason", "role", "name", "shape", "dtype", "values"].map((label) => ({ label, num: label === "step" }));
  fill(container, table("samples-table", headers, rows, "No batch samples captured (they are taken at anomaly steps)."));
}
