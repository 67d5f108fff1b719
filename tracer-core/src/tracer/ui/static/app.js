// Tracer's live dashboard: a hash router over three views and one event stream that feeds
// whichever view is open. Loaded as an ES module (no globals; the page's CSP allows only
// scripts from this server).

import { showStatus, subscribe } from "./api.js";
import { CompareView } from "./compare.js";
import { el, fill } from "./escape.js";
import { RunView } from "./run.js";
import { RunsView } from "./runs.js";

let view = null;

/** The route in the URL hash: {name: "runs"|"run"|"compare", ...}. */
export function parseRoute(hash) {
  const raw = (hash || "").replace(/^#/, "") || "/";
  const [path, query = ""] = raw.split("?");
  const params = new URLSearchParams(query);
  const run = path.match(/^\/run\/(.+)$/);
  if (run) {
    let id = run[1];
    try {
      id = decodeURIComponent(id);
    } catch (error) {
      // a malformed escape: use the text as written
    }
    return { name: "run", run: id };
  }
  if (path === "/compare") {
    const list = (key) => (params.get(key) || "").split(",").filter(Boolean);
    return { name: "compare", runs: list("runs"), metrics: list("metrics").concat(list("metric")) };
  }
  return { name: "runs" };
}

function navigate(hash) {
  if (window.location.hash === hash) route();
  else window.location.hash = hash;
}

function route() {
  const main = document.getElementById("view");
  if (view) {
    view.unmount();
    view = null;
  }
  const target = parseRoute(window.location.hash);
  const root = el("div", { class: `view view-${target.name}` });
  fill(main, root);
  document.title = "Tracer";
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.route === target.name);
  }
  if (target.name === "run") view = new RunView(root, target.run);
  else if (target.name === "compare") view = new CompareView(root, target.runs, target.metrics);
  else view = new RunsView(root, navigate);
  window.scrollTo(0, 0);
  const opened = view;
  opened.load().catch((error) => {
    if (view === opened) showStatus("view", `Could not show this page: ${error && error.message}`);
  });
}

function start() {
  // The page's own links keep the token: it lives in the query string, the route in the hash.
  window.addEventListener("hashchange", route);
  subscribe({
    runs: (data) => {
      if (view && data && Array.isArray(data.runs)) view.onRuns(data.runs, data.removed || []);
    },
    anomalies: (data) => {
      if (view && data) view.onAnomalies(data);
    },
  });
  route();
}

start();
