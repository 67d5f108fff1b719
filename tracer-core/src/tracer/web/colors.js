// Colours: a fixed palette, a run's colour from a hash of its id, and translucent variants.

// A fixed palette (Tableau 10 with its red swapped out: red marks NaN/Inf and critical
// anomalies): a run keeps its colour from page to page.
export const PALETTE = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b",
  "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#393b79",
];
export const SEVERITY_COLORS = { critical: "#d62728", warning: "#ff7f0e", info: "#1f77b4" };
export const NONFINITE_COLOR = "#d62728";

function paletteIndex(key) {
  let hash = 0x811c9dc5; // FNV-1a
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash % PALETTE.length;
}

/** The colour of a run: a hash of its id into PALETTE, the same on every page. */
export function colorFor(key) {
  return PALETTE[paletteIndex(key)];
}

/**
 * Colours for runs shown together: each its hashed colour, except that when two hash to the
 * same one, the later id (in sorted order, so the URL's order does not matter) takes the next
 * free colour of the palette. Returns a Map id -> colour.
 */
export function colorsFor(keys) {
  const taken = new Set();
  const out = new Map();
  for (const key of [...new Set(keys)].sort()) {
    let index = paletteIndex(key);
    for (let probe = 0; probe < PALETTE.length && taken.has(index); probe++) index = (index + 1) % PALETTE.length;
    taken.add(index);
    out.set(key, PALETTE[index]);
  }
  return out;
}

export function withAlpha(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}
