// The JSON API and the event stream, with every failure shown in the status bar (never thrown
// at the page). If the page was opened with `?token=XYZ`, the token goes on every request.

import { el, fill } from "./escape.js";

const TOKEN = new URLSearchParams(window.location.search).get("token");

/** `path` ("/api/...") with `params` (null/undefined skipped) and the page's token. */
export function apiUrl(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") query.set(key, String(value));
  }
  if (TOKEN) query.set("token", TOKEN);
  const search = query.toString();
  return search ? `${path}?${search}` : path;
}

/** The API path of one run (its id or name, escaped as one path segment). */
export function runPath(run) {
  return `/api/runs/${encodeURIComponent(run)}`;
}

// -- status bar ---------------------------------------------------------------------------

const messages = new Map(); // key -> {text, kind}
let liveState = { text: "connecting…", kind: "info" };

function renderStatus() {
  const bar = document.getElementById("statusbar");
  if (!bar) return;
  const items = [el("span", { class: `live live-${liveState.kind}`, id: "live-state" }, liveState.text)];
  for (const [key, message] of messages) {
    items.push(
      el(
        "span",
        { class: `message message-${message.kind}`, dataset: { key } },
        message.text,
        el("button", { type: "button", class: "dismiss", title: "dismiss", onclick: () => clearStatus(key) }, "×"),
      ),
    );
  }
  fill(bar, items);
}

/** Show `text` in the status bar under `key` (a later message with the same key replaces it). */
export function showStatus(key, text, kind = "error") {
  messages.set(key, { text, kind });
  renderStatus();
}

export function clearStatus(key) {
  if (messages.delete(key)) renderStatus();
}

export function setLiveState(text, kind) {
  liveState = { text, kind };
  renderStatus();
}

// -- requests -----------------------------------------------------------------------------

/**
 * GET `path` as JSON. Resolves to the parsed body, or to null after showing what went wrong
 * (network error, HTTP error with the server's message, bad JSON) in the status bar; an
 * aborted request (a newer one replaced it) resolves to null silently.
 */
export async function getJSON(path, params, { signal, key } = {}) {
  const url = apiUrl(path, params);
  const statusKey = key || path;
  let response;
  try {
    response = await fetch(url, { signal, headers: { Accept: "application/json" } });
  } catch (error) {
    if (error && error.name === "AbortError") return null;
    showStatus(statusKey, `Could not reach the server for ${path}: ${error && error.message}`);
    return null;
  }
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    if (error && error.name === "AbortError") return null;
    body = null;
  }
  if (!response.ok) {
    const detail = body && (body.error || body.detail || body.message);
    showStatus(statusKey, `${path}: HTTP ${response.status}${detail ? ` — ${detail}` : ""}`);
    return null;
  }
  if (body === null) {
    showStatus(statusKey, `${path}: the server's answer is not JSON`);
    return null;
  }
  clearStatus(statusKey);
  return body;
}

// -- live events --------------------------------------------------------------------------

/**
 * Subscribe to `GET /api/events`; `handlers.runs(data)` and `handlers.anomalies(data)` get the
 * parsed payloads. EventSource reconnects by itself; the status bar says whether it is live.
 * Returns a function that closes the stream.
 */
export function subscribe(handlers) {
  if (typeof window.EventSource !== "function") {
    setLiveState("no live updates (EventSource unsupported)", "warn");
    return () => {};
  }
  const source = new EventSource(apiUrl("/api/events"));
  const dispatch = (name) => (event) => {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch (error) {
      showStatus("events", `A live ${name} event was not JSON`);
      return;
    }
    try {
      handlers[name](data);
    } catch (error) {
      showStatus("events", `Could not apply a live ${name} event: ${error && error.message}`);
    }
  };
  source.addEventListener("open", () => setLiveState("live", "ok"));
  source.addEventListener("error", () => {
    setLiveState(
      source.readyState === EventSource.CLOSED ? "live updates stopped" : "reconnecting…",
      "warn",
    );
  });
  source.addEventListener("runs", dispatch("runs"));
  source.addEventListener("anomalies", dispatch("anomalies"));
  return () => source.close();
}
