// What a job's summary says about size, speed and quality, in one place for every view: the
// same numbers in the jobs list, the job page and the comparison.

/// The evaluation's headline metric of the original and the compressed model, and the change.
export function quality(evalReport) {
  if (!evalReport) return null;
  const metric = evalReport.metric;
  const compressed = evalReport.compressed.metrics[metric];
  const original = evalReport.original.metrics[metric];
  const lowerIsBetter = metric === "perplexity" || metric.endsWith("loss") || metric === "mse";
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
    quality: quality(evalReport),
    evalError: summary.eval_error,
    wallSeconds: summary.wall_seconds,
    peakRss: summary.peak_rss_bytes,
    format: summary.format,
  };
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
