// Job detail: summary cards (size, ratio, bits per weight, latency, accuracy against the
// original, wall time, peak memory), live progress while it runs, the per-tensor table
// (sortable, colour-scaled error, worst N), the artifact files, the recipe as JSON and curl,
// and the error of a failed job.

import { api, follow, getJson, parseJson, problemOf } from "../api.js";
import { statCard as card, h, progressBar, sortableTable, stateBadge } from "../dom.js";
import { errorDomain, figureInfo, figureOrder, figures, formatFigure, method } from "../figures.js";
import * as fmt from "../format.js";
import { cancel, qualityCell, rerun } from "./jobs.js";

export async function render(container, { argument: id, signal }) {
  const head = h("div", { id: "job-head" });
  const cards = h("div", { id: "job-cards", class: "cards" });
  const problem = h("div", { id: "job-problem" });
  const evaluation = h("section", { id: "job-evaluation" });
  const tensors = h("section", { id: "job-tensors" });
  const files = h("section", { id: "job-files" });
  const recipe = h("section", { id: "job-recipe" });
  const message = h("p", { class: "error", role: "alert" });
  container.append(head, message, problem, cards, evaluation, tensors, files, recipe);
  let shownState = null;
  const draw = async (job) => {
    drawHead(head, job, message);
    drawCards(cards, job);
    problem.replaceChildren(job.error
      ? h("div", { class: "card error-card", role: "alert" }, h("h3", {}, job.state === "failed" ? "Why it failed" : "Last attempt's error"), h("pre", { id: "job-error-text" }, job.error))
      : "");
    if (job.state !== shownState) {
      shownState = job.state;
      drawRecipe(recipe, job);
      await drawEvaluation(evaluation, job);
      if (job.state === "succeeded") {
        await Promise.all([drawTensors(tensors, id, job.result?.format), drawFiles(files, id)]);
      }
    }
  };
  await draw(await getJson(`/jobs/${id}`));
  if (!["succeeded", "failed", "canceled"].includes(shownState)) {
    // Draws wait on fetches: one at a time, in the events' order, so a slow earlier state
    // never paints over a later one.
    let drawn = Promise.resolve();
    follow(`/jobs/${id}/events`, (kind, data) => {
      const job = parseJson(data);
      drawn = drawn.then(() => draw(job)).catch((error) => console.error(error));
    }, signal, { reconnect: true });
  }
}

function drawHead(head, job, message) {
  const act = (label, run) => h("button", {
    type: "button",
    class: "secondary",
    onclick: async () => {
      const response = await run(job);
      if (!response.ok) {
        message.textContent = (await problemOf(response)).detail;
        return;
      }
      const changed = parseJson(await response.text());
      if (changed.id !== job.id) location.hash = `#/jobs/${changed.id}`;
    },
  }, label);
  const live = ["queued", "running"].includes(job.state);
  head.replaceChildren(...[
    h("h2", {}, job.name || `Job ${job.id.slice(0, 8)}`, " ", stateBadge(job.state)),
    h("p", { class: "muted" },
      `${method(job.recipe)} on `,
      job.model_id ? h("a", { href: `#/models/${job.model_id}` }, job.model_name || job.model_id) : "a deleted model",
      ` · submitted ${fmt.when(job.created_at)} by ${job.created_by || "a deleted token"} · attempt ${job.attempt} of ${job.max_attempts}`,
      job.finished_at ? ` · finished ${fmt.when(job.finished_at)}` : ""),
    live ? h("div", { id: "job-progress" }, progressBar(job)) : null,
    h("div", { class: "row" },
      live && !job.cancel_requested ? act("Cancel", cancel) : null,
      !live && job.model_id ? act("Re-run", rerun) : null,
      job.model_id ? h("a", { class: "button secondary", href: `#/compare?model=${job.model_id}&select=${job.id}` }, "Compare") : null),
  ].filter(Boolean));
}


function drawCards(cards, job) {
  const f = job.result ? figures(job) : null;
  const made = job.progress && job.progress.compressed;
  if (!f && made && job.state === "running") {
    // Compression is done and the job is evaluating: its size is already known.
    cards.replaceChildren(
      card("Size", `${fmt.bytes(made.bytes_in)} → ${fmt.bytes(made.bytes_out)}`, "compressed; evaluating now"),
      card("Ratio", fmt.ratio(made.ratio)),
      card("Bits per weight", fmt.bits(made.bits_per_weight)),
    );
    return;
  }
  if (!f) {
    cards.replaceChildren();
    return;
  }
  const summary = job.result;
  const q = f.quality;
  cards.replaceChildren(
    card("Size", `${fmt.bytes(f.bytesIn)} → ${fmt.bytes(f.bytesOut)}`, `${summary.compressed_tensors} tensors compressed · ${f.format}`),
    card("Ratio", fmt.ratio(f.ratio)),
    card("Bits per weight", fmt.bits(f.bitsPerWeight), summary.theoretical_bits_per_weight ? `${summary.theoretical_bits_per_weight.toFixed(2)} bit from the schemes alone` : null),
    latencyCard(f),
    card(q ? q.metric : "Accuracy", q ? qualityCell(q) : f.evalError ? "evaluation failed" : "not evaluated",
      q ? `original ${q.lowerIsBetter || q.original > 1 ? q.original.toFixed(4) : fmt.percent(q.original)}${q.accepted === undefined || q.accepted === null ? "" : q.accepted ? " · within budget" : " · over budget"}` : f.evalError || null),
    card("Weight error", `${fmt.percent(f.meanError)} mean`, `worst ${fmt.percent(f.worstError)}${summary.worst_tensor ? ` (${summary.worst_tensor})` : ""}`),
    wallTimeCard(job, f, summary),
    card("Peak memory", fmt.bytes(f.peakRss), "of the process while this job ran"),
  );
}

/// The headline latency, the speed-up measured in interleaved rounds with its spread, and
/// whether a speed-up can be expected in this runtime at all.
function latencyCard(f) {
  if (f.latencyMs === null || f.latencyMs === undefined) return card("Latency", "not evaluated");
  const spread = f.speedupSpread ? ` (${f.speedupSpread[0].toFixed(2)}–${f.speedupSpread[1].toFixed(2)})` : "";
  const speed = !f.speedupExpected
    ? `${fmt.ratio(f.speedup)}${spread}: no speed-up expected, the runtime multiplies dense weights for both`
    : f.speedup >= 1 ? `${fmt.ratio(f.speedup)} faster${spread}` : `${fmt.ratio(1 / f.speedup)} slower (speed-up ${f.speedup.toFixed(2)}×${spread})`;
  return h("div", { class: "card stat", id: "latency-card" }, h("span", { class: "stat-label" }, "Latency"),
    h("strong", { class: "stat-value" }, fmt.ms(f.latencyMs)),
    h("span", { class: "muted" }, `original ${fmt.ms(f.originalLatencyMs)} · ${speed}`));
}

/// What one latency measurement timed, in words.
function measureName(m) {
  if (m.name === "decode_token") return "one token after a 16-token prompt (KV cache)";
  if (m.name === "prompt") return `a ${m.tokens}-token prompt in one forward`;
  return `a batch of ${m.batch}${m.tokens ? ` × ${m.tokens} tokens` : ""}`;
}

/// Every figure the evaluation measured, original beside compressed, the latency of each
/// measurement with its spread, where it ran, and on which set.
async function drawEvaluation(section, job) {
  const report = job.result?.eval;
  if (!job.eval) {
    section.replaceChildren();
    return;
  }
  const set = await getJson(`/datasets/${job.eval.dataset_id}`).catch(() => null);
  const setName = set ? set.name : `a deleted set (${job.eval.dataset_id.slice(0, 8)})`;
  const budget = job.eval.max_drop !== undefined && job.eval.max_drop !== null
    ? (job.eval.metric || report?.metric
      ? ` · budget: ${figureInfo(job.eval.metric || report.metric).budget || "drop"} of ${job.eval.metric || report.metric} at most ${job.eval.max_drop}`
      : ` · budget: max_drop ${job.eval.max_drop} on the architecture's default metric`)
    : "";
  const heading = [h("h3", {}, "Evaluation"), h("p", { id: "evaluation-set" }, `On the set “${setName}”${set ? ` (${set.stats.rows} ${set.kind === "tensors" ? "rows" : "sequences"})` : ""}${budget}.`)];
  if (!report) {
    section.replaceChildren(...heading, h("p", { class: "muted" }, job.result?.eval_error ? `The evaluation failed: ${job.result.eval_error}` : job.state === "succeeded" ? "No evaluation figures." : "Figures appear when the job ends."));
    return;
  }
  const names = figureOrder(Object.keys(report.compressed.metrics).filter((n) => n !== "latency_ms"));
  const change = (name, o, c) => {
    if (!Number.isFinite(o) || !Number.isFinite(c) || o === c) return "";
    const info = figureInfo(name);
    const text = info.unit === "rate" ? fmt.points(c - o) : o !== 0 ? `${c >= o ? "+" : "−"}${fmt.percent(Math.abs(c / o - 1), 1)}` : "";
    const worse = info.lower_is_better ? c > o : c < o;
    return h("span", { class: worse ? "worse" : "better" }, text);
  };
  const figureRows = names.map((name) => {
    const info = figureInfo(name);
    const o = report.original.metrics[name];
    const c = report.compressed.metrics[name];
    return h("tr", { dataset: { figure: name } },
      h("th", { scope: "row" }, `${info.label} ${info.lower_is_better ? "↓" : "↑"}`, name === report.metric ? h("span", { class: "muted" }, " (budget metric)") : ""),
      h("td", { class: "num" }, formatFigure(name, o)), h("td", { class: "num" }, formatFigure(name, c)), h("td", { class: "num" }, change(name, o, c)));
  });
  const figuresTable = h("table", { class: "data", id: "evaluation-figures" },
    h("thead", {}, h("tr", {}, ["Figure", "Original", "Compressed", "Change"].map((t, i) => h("th", { scope: "col", class: i ? "num" : null }, t)))),
    h("tbody", {}, figureRows));
  const speedups = report.speedups || [];
  const latencyRows = report.compressed.latency.map((c, i) => {
    const o = report.original.latency[i] || {};
    const s = speedups[i];
    return h("tr", {},
      h("th", { scope: "row" }, measureName(c)),
      h("td", { class: "num" }, `${fmt.ms(o.median_ms)} / ${fmt.ms(o.p90_ms)}`),
      h("td", { class: "num" }, `${fmt.ms(c.median_ms)} / ${fmt.ms(c.p90_ms)}`),
      h("td", { class: "num" }, s ? `${fmt.ratio(s.median)} (${s.p10.toFixed(2)}–${s.p90.toFixed(2)}, ${s.rounds} rounds)` : ""));
  });
  const latencyTable = h("table", { class: "data", id: "evaluation-latency" },
    h("thead", {}, h("tr", {}, ["Latency of", "Original median / p90", "Compressed median / p90", "Speed-up (p10–p90)"].map((t, i) => h("th", { scope: "col", class: i ? "num" : null }, t)))),
    h("tbody", {}, latencyRows));
  const kernel = (f) => `${f.kernel}${f.kernel_types && f.kernel_types.length ? ` (${f.kernel_types.join(", ")})` : ""}`;
  const notes = [
    h("p", { class: "muted", id: "evaluation-runtime" },
      `${report.architecture} model, ${report.evaluated} ${report.architecture === "mlp" ? "rows" : "sequences"} scored · runtime ${report.runtime.engine} on ${report.runtime.cpu}, ${report.runtime.threads} threads · kernel: original ${kernel(report.original)}, compressed ${kernel(report.compressed)} · weights in the runtime ${fmt.bytes(report.original.weights_bytes)} → ${fmt.bytes(report.compressed.weights_bytes)}`),
    h("p", { class: "muted" }, "Both models are timed in alternating rounds in this job, so they share the machine's load; the speed-up is the median of the per-round ratios, with the 10th–90th percentile of the rounds.",
      report.speedup_expected ? "" : " No speed-up is expected here: the runtime multiplies dense f32 weights for both models, so the ratio only shows the noise between two equal workloads."),
    report.original_reused ? h("p", { class: "muted" }, report.architecture === "mlp" || report.architecture === "bert"
      ? "The original's accuracy figures come from an earlier job on the same model, set and CPU."
      : "The original's next-token outputs were kept from an earlier job on the same model and set: only the compressed model ran over the set.") : null,
  ].filter(Boolean);
  section.replaceChildren(...heading, h("div", { class: "scroll" }, figuresTable), h("div", { class: "scroll" }, latencyTable), ...notes);
}

/// The job's whole time from start to finish, and each phase's: compression (with its
/// throughput) and evaluation, when the job had one.
function wallTimeCard(job, f, summary) {
  const total = job.started_at && job.finished_at ? (Date.parse(job.finished_at) - Date.parse(job.started_at)) / 1000 : null;
  const phases = [`compression ${fmt.seconds(f.wallSeconds)} (${fmt.rate(summary.throughput_bytes_per_s)})`];
  if (summary.eval_seconds !== undefined && summary.eval_seconds !== null) {
    const stages = summary.eval && summary.eval.accuracy_seconds ? ` (accuracy ${fmt.seconds(summary.eval.accuracy_seconds)}, latency ${fmt.seconds(summary.eval.latency_seconds)})` : "";
    phases.push(`evaluation ${fmt.seconds(summary.eval_seconds)}${stages}`);
  }
  return h("div", { class: "card stat", id: "wall-time" }, h("span", { class: "stat-label" }, "Wall time"),
    h("strong", { class: "stat-value" }, total === null ? fmt.seconds(f.wallSeconds) : `${fmt.seconds(total)} in all`),
    h("span", { class: "muted" }, phases.join(" · ")));
}

/// A red scale on log10 of the relative error, from the smallest to the largest in view.
export function errorColour(value, low, high) {
  if (!(value > 0)) return "transparent";
  const span = Math.log10(high) - Math.log10(low) || 1;
  const t = Math.min(1, Math.max(0, (Math.log10(value) - Math.log10(low)) / span));
  return `hsl(4 80% ${96 - t * 36}%)`;
}

/// Tensor names in reading order: layers.2 before layers.10.
const byName = (a, b) => a.localeCompare(b, undefined, { numeric: true });

/// Where the artifact's bytes are: the compressed tensors against those kept as they were, the
/// largest kept ones named, and why a format keeps them.
function bytesSplit(all, format) {
  const kept = all.filter((t) => t.scheme === "unchanged");
  const compressed = all.filter((t) => t.scheme !== "unchanged");
  const sum = (ts, key) => ts.reduce((a, t) => a + t[key], 0);
  const total = sum(all, "bytes_out") || 1;
  const largest = [...kept].sort((a, b) => b.bytes_out - a.bytes_out).slice(0, 3);
  const embeddingsKept = kept.some((t) => /(embed_tokens|word_embeddings|wte|lm_head)/.test(t.name));
  return h("div", { id: "bytes-split", class: "card wide" },
    h("h3", {}, "Where the bytes are"),
    h("p", {}, `${compressed.length} compressed tensors: ${fmt.bytes(sum(compressed, "bytes_in"))} → ${fmt.bytes(sum(compressed, "bytes_out"))} `,
      `(${fmt.percent(sum(compressed, "bytes_out") / total, 0)} of the weights file). `,
      `${kept.length} kept as they were: ${fmt.bytes(sum(kept, "bytes_out"))} (${fmt.percent(sum(kept, "bytes_out") / total, 0)})`,
      largest.length ? `, the largest ${largest.map((t) => `${t.name} ${fmt.bytes(t.bytes_out)}`).join(", ")}.` : "."),
    embeddingsKept && format === "compressed-tensors"
      ? h("p", { class: "muted" }, "compressed-tensors keeps embeddings and lm_head in their own dtype (llm-compressor's convention; vLLM loads neither quantized), which caps the ratio. GGUF quantizes them: the q8_0 … q4_0 presets. To quantize them here anyway, name them in the recipe's targets.")
      : null);
}

async function drawTensors(section, id, format) {
  const report = await getJson(`/jobs/${id}/report`);
  const all = [...report.tensors].sort((a, b) => byName(a.name, b.name));
  const [low, high] = errorDomain(all.map((t) => t.rel_error));
  // A large model's hundreds of tensors start as its worst 20; the select shows them all.
  const initial = all.length > 50 ? "20" : "all";
  const worst = h("select", { id: "worst-n" }, [["all", `all ${all.length} tensors`], ["5", "worst 5"], ["10", "worst 10"], ["20", "worst 20"], ["50", "worst 50"]].map(([v, t]) => h("option", { value: v, selected: v === initial }, t)));
  const holder = h("div", { class: "scroll" });
  const draw = () => {
    const n = worst.value === "all" ? all.length : Number(worst.value);
    const rows = [...all].sort((a, b) => b.rel_error - a.rel_error).slice(0, n);
    holder.replaceChildren(sortableTable({
      sort: { key: "rel_error", descending: true },
      rows,
      columns: [
        { key: "name", label: "Tensor" },
        { key: "scheme", label: "Scheme", cell: (t) => (t.note ? h("span", { title: t.note }, `${t.scheme} *`) : t.scheme) },
        { key: "shape", label: "Shape", value: (t) => t.shape.reduce((a, b) => a * b, 1), cell: (t) => t.shape.join(" × ") },
        { key: "bytes_in", label: "Bytes in", numeric: true, cell: (t) => fmt.bytes(t.bytes_in) },
        { key: "bytes_out", label: "Bytes out", numeric: true, cell: (t) => fmt.bytes(t.bytes_out) },
        { key: "sparsity", label: "Sparsity", numeric: true, cell: (t) => fmt.percent(t.sparsity, 1) },
        { key: "rel_error", label: "Relative error", numeric: true, cell: (t) => h("span", { class: "heat", style: `background:${errorColour(t.rel_error, low, high)}` }, fmt.percent(t.rel_error, 3)) },
        { key: "sqnr_db", label: "SQNR", numeric: true, cell: (t) => (t.sqnr_db === null ? "exact" : `${t.sqnr_db.toFixed(1)} dB`) },
        { key: "cosine", label: "Cosine", numeric: true, cell: (t) => (t.cosine === null ? "" : t.cosine.toFixed(5)) },
      ],
    }));
  };
  worst.addEventListener("change", draw);
  // Tensors that got other steps than the recipe names: a format's per-tensor rule or a
  // fallback for rows that are not whole blocks or groups.
  const noted = all.filter((t) => t.note);
  const notes = noted.length === 0 ? [] : [h("details", { id: "tensor-notes", open: true },
    h("summary", {}, `${noted.length} ${noted.length === 1 ? "tensor differs" : "tensors differ"} from the recipe`),
    h("div", { class: "scroll" }, sortableTable({
      rows: noted,
      columns: [
        { key: "name", label: "Tensor" },
        { key: "scheme", label: "Stored as" },
        { key: "note", label: "Why" },
      ],
    })))];
  section.replaceChildren(bytesSplit(all, format), h("h3", {}, `Tensors (${all.length})`), ...notes, h("label", { class: "filter" }, "Show ", worst), holder);
  draw();
}

async function download(id, file, status) {
  status.textContent = `downloading ${file.name}…`;
  const response = await api(`/jobs/${id}/files/${encodeURIComponent(file.name)}`);
  if (!response.ok) {
    status.textContent = `Download failed: ${(await problemOf(response)).detail}`;
    return;
  }
  const url = URL.createObjectURL(await response.blob());
  const link = h("a", { href: url, download: file.name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  status.textContent = `${file.name} downloaded`;
}

async function drawFiles(section, id) {
  const page = await getJson(`/jobs/${id}/files`);
  const status = h("p", { class: "muted", id: "download-status", "aria-live": "polite" });
  const origin = location.origin;
  section.replaceChildren(h("h3", {}, "Artifact files"), sortableTable({
    rows: page.items,
    columns: [
      { key: "name", label: "File" },
      { key: "bytes", label: "Size", numeric: true, cell: (f) => fmt.bytes(f.bytes) },
      { key: "sha256", label: "sha256", cell: (f) => h("code", { class: "hash", title: f.sha256 }, f.sha256) },
      {
        key: "get", label: "", sortable: false, cell: (f) => h("span", { class: "actions" },
          h("button", { type: "button", class: "download", dataset: { file: f.name }, onclick: () => download(id, f, status) }, "Download"),
          copyButton("curl", () => `curl -fOJ -H "Authorization: Bearer $SQUEEZE_TOKEN" ${origin}/api/v1/jobs/${id}/files/${encodeURIComponent(f.name)}`)),
      },
    ],
  }), status, h("p", { class: "muted" }, "Large files: use the curl line, which streams to disk and can resume with -C -."));
}

function copyButton(label, text) {
  return h("button", {
    type: "button",
    class: "secondary",
    onclick: async (event) => {
      const button = event.currentTarget;
      try {
        await navigator.clipboard.writeText(text());
        button.textContent = "copied";
      } catch {
        prompt("Copy this:", text());
      }
      setTimeout(() => { button.textContent = label; }, 1500);
    },
  }, label);
}

function drawRecipe(section, job) {
  const body = { model_id: job.model_id, name: job.name || undefined, recipe: job.recipe };
  if (job.eval) body.eval = job.eval;
  const json = JSON.stringify(job.recipe, null, 2);
  const curl = `curl -X POST -H "Authorization: Bearer $SQUEEZE_TOKEN" -H 'Content-Type: application/json' \\\n  -d '${JSON.stringify(body).replaceAll("'", "'\\''")}' \\\n  ${location.origin}/api/v1/jobs`;
  section.replaceChildren(...[h("h3", {}, "Recipe"),
    h("div", { class: "row" }, copyButton("Copy JSON", () => json), copyButton("Copy as curl", () => curl)),
    h("pre", { class: "code", id: "recipe-json" }, json),
  ].filter(Boolean));
}
