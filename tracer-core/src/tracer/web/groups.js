// Which section of a run's page a series is drawn in (the dashboard's run view and the report
// group their charts alike).

import { isLossLike } from "./escape.js";

/** Which section a series is drawn in: losses, metrics by prefix, grad/, system/, the rest. */
export function groupOf(name, category) {
  if (category === "gradient" || /^(grad|optimizer)\//.test(name) || /[./]grad\//.test(name)) return { key: "grad", label: "Gradients", rank: 2 };
  if (category === "system" || name.startsWith("system/")) return { key: "system", label: "System", rank: 3 };
  if (name.startsWith("_") || name.startsWith("rank/")) return { key: "other", label: "Other series", rank: 4 };
  if (isLossLike(name)) return { key: "loss", label: "Losses", rank: 0 };
  const slash = name.indexOf("/");
  const prefix = slash > 0 ? name.slice(0, slash) : "";
  return { key: `metrics:${prefix}`, label: prefix ? `Metrics: ${prefix}/` : "Metrics", rank: 1 };
}
