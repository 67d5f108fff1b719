// Building DOM without ever parsing a string as HTML, and formatting values for display.
//
// Every string that comes from a run (names, tags, config, notes, messages) reaches the page
// through `text()` or `el()`, which create text nodes: a run named `<img src=x onerror=...>`
// is shown as those characters. Nothing in this app assigns innerHTML/outerHTML or calls
// insertAdjacentHTML.

/** A text node holding `value` as plain characters (null/undefined: empty). */
export function text(value) {
  return document.createTextNode(value === null || value === undefined ? "" : String(value));
}

/**
 * `el("td", {class: "num", title: "x", dataset: {step: 3}, onclick: fn}, child, "text", ...)`.
 * Attributes are set with setAttribute (values are never parsed as markup); `on*` keys add
 * listeners; `style` takes an object applied through CSSOM (allowed by the page's CSP);
 * children may be nodes, strings (text nodes), numbers, arrays or null (skipped).
 */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      for (const [name, item] of Object.entries(value)) node.dataset[name] = String(item);
    } else if (key === "style") {
      for (const [name, item] of Object.entries(value)) node.style[name] = item;
    } else if (key === "class") {
      node.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : String(value);
    } else if (key === "checked" || key === "disabled" || key === "selected" || key === "value") {
      node[key] = value;
    } else {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else if (child instanceof Node) node.appendChild(child);
    else node.appendChild(text(child));
  }
}

/** Replace all children of `node` with `children` (same rules as `el`). */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

// -- formatting ---------------------------------------------------------------------------

/** A number for a table cell or legend: compact, never "NaN" for a missing value. */
export function fmtNumber(value) {
  if (value === null || value === undefined || value === "") return "";
  if (typeof value === "string") return value; // "NaN", "+Inf", "-Inf" markers from the API
  if (typeof value !== "number") return String(value);
  if (!Number.isFinite(value)) return value > 0 ? "+Inf" : value < 0 ? "-Inf" : "NaN";
  if (Number.isInteger(value) && Math.abs(value) < 1e15) return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(3);
  return String(Number(value.toPrecision(5)));
}

/** Seconds as "1h 02m", "3m 04s", "12.3 s". */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, seconds);
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

/** A unix time (seconds) as local "YYYY-MM-DD HH:MM:SS". */
export function fmtTime(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  const d = new Date(seconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

/** A config value as one line of text (objects as JSON), cut to `max` characters. */
export function fmtValue(value, max = 80) {
  let out;
  if (value === null || value === undefined) out = "";
  else if (typeof value === "number") out = fmtNumber(value);
  else if (typeof value === "object") out = JSON.stringify(value);
  else out = String(value);
  return out.length > max ? `${out.slice(0, max - 1)}…` : out;
}

/** Stable comparison for sorting table columns: numbers numerically, the rest as text. */
export function compareValues(a, b) {
  const missingA = a === null || a === undefined || a === "";
  const missingB = b === null || b === undefined || b === "";
  if (missingA || missingB) return missingA === missingB ? 0 : missingA ? 1 : -1;
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(typeof a === "object" ? JSON.stringify(a) : a).localeCompare(
    String(typeof b === "object" ? JSON.stringify(b) : b),
    undefined,
    { numeric: true },
  );
}

/** Loss-like metric names (what to chart first and compare by default). */
export function isLossLike(name) {
  return /loss/i.test(name) && !/^(grad|system|optimizer|rank)\//.test(name) && !name.startsWith("_");
}
