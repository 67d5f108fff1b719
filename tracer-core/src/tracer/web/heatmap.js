// The per-layer gradient-norm heatmap: one row per layer (names as text beside the canvas),
// one column per checkpoint placed on a numeric step axis, colour = log10 of the norm,
// non-finite cells marked with a red cross, missing cells left blank.

import { el, fill, fmtNumber } from "./escape.js";

// Viridis, sampled at 9 stops.
const STOPS = [
  [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
  [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37],
];

function viridis(t) {
  const x = Math.min(1, Math.max(0, t)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(x));
  const f = x - i;
  const c = STOPS[i].map((v, k) => Math.round(v + (STOPS[i + 1][k] - v) * f));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

/** Draw `heatmap` (the API's {layers, steps, norms, nonfinite}) into `container`. */
export function renderHeatmap(container, heatmap) {
  const layers = (heatmap && heatmap.layers) || [];
  const steps = (heatmap && heatmap.steps) || [];
  let norms = (heatmap && heatmap.norms) || [];
  // The API sends norms[step][layer]; a per-layer table (norms[layer][step]) is turned round.
  if (norms.length === layers.length && layers.length !== steps.length && (norms[0] || []).length === steps.length) {
    norms = steps.map((_, si) => layers.map((__, li) => norms[li][si]));
  }
  if (!layers.length || !steps.length) {
    fill(container, el("p", { class: "empty" }, "No per-layer gradient norms recorded (tracer.watch(model) records them at checkpoints)."));
    return;
  }
  const nonfinite = new Map();
  for (const [si, li, kind] of heatmap.nonfinite || []) nonfinite.set(`${si}:${li}`, kind);
  let lo = Infinity;
  let hi = -Infinity;
  for (const row of norms) {
    for (const v of row || []) {
      if (v !== null && v > 0 && Number.isFinite(v)) {
        lo = Math.min(lo, Math.log10(v));
        hi = Math.max(hi, Math.log10(v));
      }
    }
  }
  if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }

  const rowHeight = layers.length <= 40 ? 16 : Math.max(3, Math.floor(640 / layers.length));
  const labelEvery = Math.max(1, Math.ceil(12 / rowHeight));
  const width = Math.max(300, Math.min(1100, (container.clientWidth || 900) - 260));
  const height = rowHeight * layers.length;
  const canvas = el("canvas", { class: "heatmap-canvas", "aria-label": "per-layer gradient norm heatmap" });
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;

  const first = steps[0];
  const last = steps[steps.length - 1];
  const span = Math.max(1, last - first);
  // Column i covers [edge(i), edge(i+1)): halfway to its neighbours on the step axis.
  const edge = (i) => {
    if (steps.length === 1) return i === 0 ? 0 : width;
    if (i <= 0) return 0;
    if (i >= steps.length) return width;
    return ((steps[i - 1] + steps[i]) / 2 - first) / span * width;
  };
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.fillStyle = "#f4f4f4";
  ctx.fillRect(0, 0, width, height);
  for (let si = 0; si < steps.length; si++) {
    const x0 = edge(si);
    const w = Math.max(1, edge(si + 1) - x0);
    const row = norms[si] || [];
    for (let li = 0; li < layers.length; li++) {
      const kind = nonfinite.get(`${si}:${li}`);
      const v = row[li];
      const y = li * rowHeight;
      if (kind) {
        ctx.fillStyle = "#fff0f0";
        ctx.fillRect(x0, y, w, rowHeight);
        ctx.strokeStyle = "#d62728";
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        ctx.moveTo(x0 + 1, y + 1);
        ctx.lineTo(x0 + w - 1, y + rowHeight - 1);
        ctx.moveTo(x0 + w - 1, y + 1);
        ctx.lineTo(x0 + 1, y + rowHeight - 1);
        ctx.stroke();
      } else if (v !== null && v !== undefined && v > 0) {
        ctx.fillStyle = viridis((Math.log10(v) - lo) / (hi - lo));
        ctx.fillRect(x0, y, w, rowHeight);
      } else if (v === 0) {
        ctx.fillStyle = viridis(0);
        ctx.fillRect(x0, y, w, rowHeight);
      }
    }
  }

  const names = el("div", { class: "heatmap-layers" });
  names.style.height = `${height}px`;
  layers.forEach((name, li) => {
    const label = el("div", { class: "heatmap-layer", title: name }, li % labelEvery === 0 ? name : "");
    label.style.height = `${rowHeight}px`;
    label.style.lineHeight = `${rowHeight}px`;
    label.style.fontSize = `${Math.min(12, Math.max(8, rowHeight - 3))}px`;
    names.appendChild(label);
  });

  // A numeric step axis: about 6 ticks at round steps.
  const axis = el("div", { class: "heatmap-axis" });
  axis.style.width = `${width}px`;
  const rough = span / 6;
  const magnitude = Math.pow(10, Math.floor(Math.log10(Math.max(1, rough))));
  const tick = [1, 2, 5, 10].map((m) => m * magnitude).find((t) => t >= rough) || magnitude * 10;
  for (let s = Math.ceil(first / tick) * tick; s <= last; s += tick) {
    const mark = el("span", { class: "heatmap-tick" }, String(s));
    mark.style.left = `${((s - first) / span) * width}px`;
    axis.appendChild(mark);
  }

  const tooltip = el("div", { class: "heatmap-tooltip", hidden: true });
  canvas.addEventListener("mousemove", (event) => {
    const rect = canvas.getBoundingClientRect();
    const x = event.clientX - rect.left;
    const li = Math.floor((event.clientY - rect.top) / rowHeight);
    let si = 0;
    while (si < steps.length - 1 && edge(si + 1) <= x) si++;
    if (li < 0 || li >= layers.length) return;
    const kind = nonfinite.get(`${si}:${li}`);
    const v = (norms[si] || [])[li];
    fill(tooltip, `${layers[li]} · step ${steps[si]} · ${kind || (v === null || v === undefined ? "no value" : fmtNumber(v))}`);
    tooltip.hidden = false;
    tooltip.style.left = `${x + 12}px`;
    tooltip.style.top = `${event.clientY - rect.top + 12}px`;
  });
  canvas.addEventListener("mouseleave", () => { tooltip.hidden = true; });

  const scale = el("canvas", { class: "heatmap-scale", "aria-label": "colour scale" });
  scale.width = 160;
  scale.height = 10;
  const sctx = scale.getContext("2d");
  for (let i = 0; i < 160; i++) {
    sctx.fillStyle = viridis(i / 159);
    sctx.fillRect(i, 0, 1, 10);
  }
  const legend = el(
    "div", { class: "heatmap-legend" },
    `log10(norm) ${lo.toFixed(1)} `, scale, ` ${hi.toFixed(1)}`,
    el("span", { class: "heatmap-nonfinite-key" }, "✕ non-finite"),
    el("span", {}, `${layers.length} layers × ${steps.length} checkpoints (steps ${first}–${last})`),
  );
  fill(
    container,
    legend,
    el("div", { class: "heatmap" }, names, el("div", { class: "heatmap-plot" }, canvas, tooltip, axis)),
  );
}
