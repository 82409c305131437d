// What a job's summary says about size, speed and quality, in one place for every view: the
// same numbers in the jobs list, the job page and the comparison. What each evaluation figure
// is (label, unit, which way is better) comes from the server's catalogue, loaded once.

import { getJson } from "./api.js";
import * as fmt from "./format.js";

let catalogue = new Map();

/// Loads `/evaluation/figures` once per page load.
export async function loadFigureCatalogue() {
  if (catalogue.size) return;
  useFigureCatalogue(await getJson("/evaluation/figures"));
}

/// Takes `list` (as `/evaluation/figures` returns it) as the catalogue.
export function useFigureCatalogue(list) {
  catalogue = new Map(list.map((f) => [f.name, f]));
}

/// What the figure `name` is; a plain description for one the catalogue does not know.
export function figureInfo(name) {
  return catalogue.get(name) || { name, label: name, unit: "number", lower_is_better: false };
}

/// The evaluation figures in the catalogue's order, then any others by name.
export function figureOrder(names) {
  const known = [...catalogue.keys()];
  const rank = (n) => (known.includes(n) ? known.indexOf(n) : known.length);
  return [...names].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

/// A figure's value in its unit.
export function formatFigure(name, value) {
  if (value === null || value === undefined) return "";
  if (fmt.nonFinite(value)) return fmt.nonFinite(value);
  switch (figureInfo(name).unit) {
    case "rate": return fmt.percent(value);
    case "ms": return fmt.ms(value);
    case "tokens/s": return `${value.toFixed(value >= 100 ? 0 : 1)} tok/s`;
    case "×": return fmt.ratio(value);
    case "nats": return value === 0 ? "0" : value < 0.001 ? value.toExponential(2) : value.toFixed(4);
    default: return Math.abs(value) >= 100 ? value.toFixed(1) : value.toFixed(4);
  }
}

/// A headline metric's value and its change against the original as text, read the way the
/// catalogue says a budget on it is read: points for a rate (accuracy −1.2 pts), relative for
/// perplexity (+3.1 %), absolute for the rest (cosine −0.0042); and whether it got worse.
export function qualityChange({ metric, compressed, original, change, lowerIsBetter }) {
  const info = figureInfo(metric);
  const signed = (x, text) => `${x >= 0 ? "+" : "−"}${text}`;
  let delta;
  if (info.unit === "rate") delta = fmt.points(change);
  else if (info.budget === "relative increase") delta = original ? signed(change, fmt.percent(Math.abs(change / original), 1)) : "";
  else delta = signed(change, formatFigure(metric, Math.abs(change)));
  return {
    label: info.label,
    value: formatFigure(metric, compressed),
    original: formatFigure(metric, original),
    delta,
    worse: lowerIsBetter ? change > 0 : change < 0,
  };
}

/// The evaluation's headline metric of the original and the compressed model, and the change.
export function quality(evalReport) {
  if (!evalReport) return null;
  const metric = evalReport.metric;
  const compressed = evalReport.compressed.metrics[metric];
  const original = evalReport.original.metrics[metric];
  const lowerIsBetter = figureInfo(metric).lower_is_better;
  return {
    metric,
    compressed,
    original,
    change: compressed - original,
    drop: evalReport.drop,
    lowerIsBetter,
    accepted: evalReport.accepted,
  };
}

/// Figures of a job (from `/jobs`) or a comparison row (from `/compare`).
export function figures(item) {
  const summary = item.result || item;
  if (!summary || summary.bytes_out === undefined) return null;
  const evalReport = summary.eval;
  return {
    bytesIn: summary.bytes_in,
    bytesOut: summary.bytes_out,
    ratio: summary.ratio,
    bitsPerWeight: summary.bits_per_weight,
    meanError: summary.mean_rel_error,
    worstError: summary.worst_rel_error,
    latencyMs: evalReport ? evalReport.compressed.metrics.latency_ms : null,
    originalLatencyMs: evalReport ? evalReport.original.metrics.latency_ms : null,
    speedup: evalReport ? evalReport.speedup : null,
    speedupSpread: evalReport && evalReport.speedups && evalReport.speedups[0] ? [evalReport.speedups[0].p10, evalReport.speedups[0].p90] : null,
    speedupExpected: evalReport ? Boolean(evalReport.speedup_expected) : null,
    quality: quality(evalReport),
    evalError: summary.eval_error,
    wallSeconds: summary.wall_seconds,
    peakRss: summary.peak_rss_bytes,
    format: summary.format,
  };
}

/// The span of a colour scale for relative errors: from the 2nd percentile of the positive
/// values (so a few exactly stored tensors do not stretch it) to the largest.
export function errorDomain(values) {
  const positive = values.filter((v) => v > 0 && Number.isFinite(v)).sort((a, b) => a - b);
  if (positive.length === 0) return [1e-9, 1];
  const low = positive[Math.floor(0.02 * (positive.length - 1))];
  const high = positive[positive.length - 1];
  return high > low ? [low, high] : [low / 2, low * 2];
}

/// A short description of a recipe's stages: `prune magnitude 0.5 + quantize int 4 g128`.
export function method(recipe) {
  const stages = (recipe && recipe.stages) || [];
  return stages.map((stage) => {
    const [kind, body] = Object.entries(stage)[0] || ["?", {}];
    const words = [kind];
    for (const key of ["scheme", "type", "method", "bits", "sparsity", "pattern", "rank", "energy", "group_size"]) {
      if (body[key] === undefined) continue;
      words.push(key === "group_size" ? `g${body[key]}` : String(body[key]));
    }
    return words.join(" ");
  }).join(" + ") + (recipe && recipe.format && recipe.format !== "safetensors" ? ` → ${recipe.format}` : "");
}
