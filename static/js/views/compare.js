// Compare: for one model, a Pareto plot of size (or ratio) against accuracy (or its drop, or
// the weight error when nothing was evaluated) with latency as colour; the frontier joined
// and highlighted, dominated jobs dimmed, the original as a star. Selecting 2-10 jobs gives a
// side-by-side table ("differences only") and a tensors × jobs error heatmap.

import { follow, getJson, parseJson } from "../api.js";
import { emptyState, h } from "../dom.js";
import { errorDomain, figureInfo, figureOrder, figures, formatFigure } from "../figures.js";
import * as fmt from "../format.js";
import { setParams } from "../route.js";

const MAX_SELECTED = 10;

/// The evaluation's metric over these jobs: its name and which way is better.
function metricOf(rows) {
  return rows.map((r) => figures(r)?.quality).find(Boolean) || null;
}

/// Each y axis names its figure and which way is better; the evaluation's metric decides both
/// for "metric" (perplexity: lower; accuracy: higher), so the frontier joins the best jobs.
const Y_AXES = {
  metric: {
    name: (rows) => metricOf(rows)?.metric || "metric",
    label: (rows) => {
      const q = metricOf(rows);
      return q ? `${q.lowerIsBetter ? "↓" : "↑"} ${q.metric} (compressed; ${q.lowerIsBetter ? "lower" : "higher"} is better)` : "metric";
    },
    value: (f) => f.quality?.compressed,
    original: (rows) => metricOf(rows)?.original,
    better: (rows) => (metricOf(rows)?.lowerIsBetter ? "lower" : "higher"),
    needsEval: true,
  },
  drop: { name: () => "drop", label: () => "↓ drop against the original (lower is better)", value: (f) => f.quality?.drop, original: () => 0, better: () => "lower", needsEval: true },
  error: { name: () => "weight error", label: () => "↓ mean relative weight error (lower is better)", value: (f) => f.meanError, original: () => 0, better: () => "lower", needsEval: false },
};

/// One y axis per evaluation figure the jobs report (KL, top-1 agreement, prompt tokens/s,
/// latency, speed-up…), each with its direction from the server's catalogue.
function figureAxes(rows) {
  const names = new Set();
  for (const r of rows) for (const n of Object.keys(r.eval?.compressed?.metrics || {})) names.add(n);
  if (rows.some((r) => r.eval)) names.add("speedup");
  const valueOf = (row, name) => (name === "speedup" ? row.eval?.speedup : row.eval?.compressed?.metrics?.[name]);
  const originalOf = (name) => {
    if (name === "speedup") return 1;
    const r = rows.find((x) => x.eval && x.eval.original.metrics[name] !== undefined);
    return r ? r.eval.original.metrics[name] : undefined;
  };
  return Object.fromEntries(figureOrder([...names]).map((name) => {
    const info = figureInfo(name);
    const better = info.lower_is_better ? "lower" : "higher";
    return [`figure:${name}`, {
      name: () => info.label,
      label: () => `${info.lower_is_better ? "↓" : "↑"} ${info.label}${info.unit === "number" || info.unit === "rate" ? "" : ` (${info.unit})`} (${better} is better)`,
      value: (f) => valueOf(f.row, name),
      original: () => originalOf(name),
      better: () => better,
      needsEval: true,
      percent: info.unit === "rate",
    }];
  }));
}

/// The binary unit that keeps a model's sizes readable on an axis.
function sizeUnit(rows) {
  const largest = Math.max(...rows.map((r) => r.bytes_in));
  const units = [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]];
  return units.find(([, scale]) => largest >= scale * 2) || ["B", 1];
}

const X_AXES = {
  size: {
    label: (rows) => `size (${sizeUnit(rows)[0]}) →`,
    value: (f, rows) => f.bytesOut / sizeUnit(rows)[1],
    original: (rows) => rows[0].bytes_in / sizeUnit(rows)[1],
  },
  ratio: { label: () => "← compression ratio", value: (f) => f.ratio, original: () => 1 },
};

/// The jobs no other job beats on both axes (smaller or equal size and better or equal y, one
/// strictly), in order of size.
export function frontier(points, yBetter) {
  const better = (a, b) => (yBetter === "higher" ? a > b : a < b);
  const sorted = [...points].sort((a, b) => a.size - b.size || (better(a.y, b.y) ? -1 : 1));
  const front = [];
  for (const p of sorted) {
    if (front.length === 0 || better(p.y, front[front.length - 1].y)) front.push(p);
  }
  return front;
}

export async function render(container, { params, signal }) {
  const models = await getJson("/models?limit=100");
  container.append(h("h2", {}, "Compare"));
  if (models.items.length === 0) {
    container.append(emptyState("No models yet: upload one, or load the demo from the Models view.", h("a", { class: "button", href: "#/models" }, "Models")));
    return;
  }
  const modelId = params.get("model") || models.items[0].id;
  const modelSelect = h("select", { id: "compare-model", onchange: () => { location.hash = `#/compare?model=${modelSelect.value}`; } },
    models.items.map((m) => h("option", { value: m.id, selected: m.id === modelId }, m.name)));
  const xSelect = h("select", { id: "compare-x" }, Object.entries(X_AXES).map(([k, a]) => h("option", { value: k, selected: params.get("x") === k }, k)));
  const ySelect = h("select", { id: "compare-y" });
  const colour = h("input", { id: "compare-colour", type: "checkbox", checked: params.get("colour") !== "0" });
  // One outlier (a broken job's perplexity in the thousands) flattens a linear axis.
  const logScale = h("input", { id: "compare-log", type: "checkbox", checked: params.get("log") === "1" });
  const controls = h("div", { class: "filters" },
    h("label", { class: "filter" }, "Model ", modelSelect),
    h("label", { class: "filter" }, "x ", xSelect),
    h("label", { class: "filter" }, "y ", ySelect),
    h("label", { class: "filter check" }, colour, " latency as colour"),
    h("label", { class: "filter check" }, logScale, " log scale (y)"));
  const status = h("p", { class: "muted", id: "compare-status", "aria-live": "polite" });
  const plot = h("figure", { id: "pareto", class: "plot" });
  const list = h("div", { id: "compare-list" });
  const side = h("section", { id: "side-by-side" });
  const heat = h("section", { id: "heatmap" });
  container.append(controls, status, plot, list, side, heat);

  const selected = new Set((params.get("select") || "").split(",").filter(Boolean));
  let rows = [];
  const keep = () => {
    params.set("model", modelId);
    params.set("x", xSelect.value);
    params.set("y", ySelect.value);
    params.set("colour", colour.checked ? "1" : "0");
    params.set("log", logScale.checked ? "1" : "0");
    if (selected.size) params.set("select", [...selected].join(","));
    else params.delete("select");
    setParams(params);
  };

  function drawAll() {
    const evaluated = rows.some((r) => r.eval);
    // "accuracy" was the metric axis's name in links made before it named the metric.
    const asked = params.get("y") === "accuracy" ? "metric" : params.get("y");
    const wanted = asked || ySelect.value || (evaluated ? "metric" : "error");
    const axes = { ...Y_AXES, ...figureAxes(rows) };
    ySelect.replaceChildren(...Object.entries(axes).filter(([, a]) => evaluated || !a.needsEval)
      .map(([k, a]) => h("option", { value: k, selected: k === wanted }, a.name(rows))));
    if (!ySelect.value || !axes[ySelect.value]) ySelect.value = evaluated ? "metric" : "error";
    keep();
    drawPlot(plot, rows, X_AXES[xSelect.value], axes[ySelect.value], colour.checked, logScale.checked);
    drawList(list, rows, selected, () => { keep(); drawSelection(side, heat, rows, selected); });
    drawSelection(side, heat, rows, selected);
    status.textContent = rows.length
      ? `${rows.length} succeeded job${rows.length === 1 ? "" : "s"}${evaluated ? "" : "; none evaluated, so y is the weight error (give a job an evaluation set for accuracy and latency)"}`
      : "";
  }
  for (const input of [xSelect, ySelect, colour, logScale]) input.addEventListener("change", () => { params.set("y", ySelect.value); drawAll(); });

  // The event stream's opening and other jobs' events reload the figures; a redraw only when
  // they changed keeps the plot under the pointer (a redrawn chart forgets the hovered point).
  let drawn = null;
  async function load() {
    const items = (await getJson(`/compare?model_id=${modelId}`)).items;
    const fingerprint = JSON.stringify(items);
    if (fingerprint === drawn) return;
    drawn = fingerprint;
    rows = items;
    if (rows.length === 0) {
      plot.replaceChildren(emptyState("No succeeded jobs for this model yet: start one.", h("a", { class: "button", href: `#/new?model=${modelId}` }, "New job")));
      list.replaceChildren();
      side.replaceChildren();
      heat.replaceChildren();
      status.textContent = "";
      return;
    }
    drawAll();
  }
  await load();
  let pending = null;
  follow("/events", (kind, data) => {
    if (kind === "job") {
      const job = parseJson(data);
      if (job.model_id !== modelId || job.state !== "succeeded" || rows.some((r) => r.job_id === job.id)) return;
    }
    clearTimeout(pending);
    pending = setTimeout(load, 300);
  }, signal, { onOpen: load });
}

function summaryText(row, f) {
  const q = f.quality;
  return [
    row.name || row.job_id.slice(0, 8),
    row.method,
    `${fmt.bytes(f.bytesOut)} (${fmt.ratio(f.ratio)}), ${fmt.bits(f.bitsPerWeight)}/weight`,
    f.latencyMs !== null ? `latency ${fmt.ms(f.latencyMs)}` : null,
    q ? `${q.metric} ${q.compressed.toFixed(4)} (${q.change >= 0 ? "+" : ""}${q.change.toFixed(4)})` : `weight error ${fmt.percent(f.meanError)}`,
  ].filter(Boolean).join("\n");
}

/// Labels of a log colour legend in percent ("10m" is SI for 0.01): over a decade or more, only
/// the powers of ten are labelled, so the labels do not overlap.
function percentTick(values) {
  const wide = Math.max(...values) / Math.min(...values) >= 10;
  return (v) => {
    const power = Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-9;
    return wide && !power ? "" : `${Number((v * 100).toPrecision(2))} %`;
  };
}

/// An axis tick as a person writes it: 150, 0.25, 1200 (never 1.5e+2).
const plainNumber = (v) => String(Number(Number(v).toPrecision(4)));

/// A scale's extent with room around it; a single value (one job, or jobs of one size) gets
/// ±5 % instead of a zero-width domain, whose ticks print as "516.519850".
function padded(values) {
  const finite = values.filter(Number.isFinite);
  if (finite.length === 0) return undefined;
  const low = Math.min(...finite);
  const high = Math.max(...finite);
  const pad = high > low ? (high - low) * 0.05 : Math.abs(high) * 0.05 || 1;
  return [low - pad, high + pad];
}

function drawPlot(figure, rows, xAxis, yAxis, withColour, logY) {
  if (!window.Plot) {
    figure.replaceChildren(h("p", { class: "error" }, "The chart library is missing: run scripts/setup (it installs Observable Plot into static/vendor)."));
    return;
  }
  const points = rows.map((row) => {
    const f = { ...figures(row), row };
    return { row, f, x: xAxis.value(f, rows), y: yAxis.value(f), size: f.bytesOut, latency: f.latencyMs, title: summaryText(row, f) };
  }).filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  const front = frontier(points, yAxis.better(rows));
  const onFront = new Set(front);
  const dominated = points.filter((p) => !onFront.has(p));
  const original = { x: xAxis.original(rows), y: yAxis.original(rows), title: "the original model" };
  // A log axis needs positive values: offered only when every figure is.
  // A log axis needs positive values. The original's KL or drop is 0 by definition: under a log
  // axis it is left off rather than turning the scale back to linear.
  const log = logY && points.length > 0 && points.every((p) => p.y > 0);
  const showOriginal = Number.isFinite(original.x) && Number.isFinite(original.y) && !(log && original.y <= 0);
  // Colour only when every job has a latency: Plot would drop points without one.
  const fill = withColour && points.length > 0 && points.every((p) => p.latency !== null) ? "latency" : null;
  const dot = (data, { defaultFill, ...options }) => Plot.dot(data, { x: "x", y: "y", r: 6, title: "title", fill: fill || defaultFill, ...options });
  const chart = Plot.plot({
    width: Math.min(1100, Math.max(320, figure.clientWidth || 900)),
    height: 380,
    marginLeft: 60,
    grid: true,
    x: { label: xAxis.label(rows), nice: true, domain: padded([...points.map((p) => p.x), original.x]), tickFormat: plainNumber },
    y: { label: yAxis.label(rows), nice: true, type: log ? "log" : "linear", tickFormat: log ? plainNumber : undefined, percent: (yAxis === Y_AXES.error || yAxis.percent) && !log, domain: log || yAxis === Y_AXES.error || yAxis.percent ? undefined : padded([...points.map((p) => p.y), original.y]) },
    color: fill ? { type: "linear", scheme: "viridis", label: "latency (ms)", legend: true } : undefined,
    marks: [
      Plot.line(front, { x: "x", y: "y", stroke: "#0b5cad", strokeWidth: 2, className: "frontier-line" }),
      dot(dominated, { className: "dominated", opacity: 0.5, defaultFill: "#57606a" }),
      dot(front, { className: "frontier", stroke: "#111", strokeWidth: 2, defaultFill: "#0b5cad" }),
      showOriginal
        ? Plot.dot([original], { x: "x", y: "y", symbol: "star", r: 9, fill: "#f0b400", stroke: "#111", title: "title", className: "original" })
        : null,
      Plot.tip(points, Plot.pointer({ x: "x", y: "y", title: "title" })),
    ].filter(Boolean),
  });
  // Circles come out in data order: tie each to its job for tests and assistive technology.
  for (const [group, data] of [["dominated", dominated], ["frontier", front]]) {
    chart.querySelectorAll(`g.${group} circle`).forEach((circle, i) => {
      if (!data[i]) return;
      circle.dataset.job = data[i].row.job_id;
      circle.setAttribute("aria-label", data[i].title.replaceAll("\n", ", "));
    });
  }
  // A click opens the job whose tip is showing (the point nearest the pointer): the tip is
  // drawn over the point, so the circle itself may not get the click.
  chart.style.cursor = "pointer";
  // Without a tip (the chart drawn under a pointer that has not moved since), the circle
  // nearest the click within its radius and a margin is the one meant.
  chart.addEventListener("click", (event) => {
    if (chart.value && chart.value.row) {
      location.hash = `#/jobs/${chart.value.row.job_id}`;
      return;
    }
    let nearest = null;
    let best = 12 * 12;
    for (const circle of chart.querySelectorAll("circle[data-job]")) {
      const box = circle.getBoundingClientRect();
      const distance = (box.x + box.width / 2 - event.clientX) ** 2 + (box.y + box.height / 2 - event.clientY) ** 2;
      if (distance <= best) [nearest, best] = [circle, distance];
    }
    if (nearest) location.hash = `#/jobs/${nearest.dataset.job}`;
  });
  figure.replaceChildren(chart, h("figcaption", { class: "muted" },
    `${front.length} of ${points.length} jobs on the frontier (joined); dominated jobs dimmed; ${showOriginal ? "★ the original" : "the original (0 on this axis) is off the log scale"}.${logY && !log ? " Log scale off: a job's value is 0 or less." : ""} Click a point to open its job.`));
}

function drawList(holder, rows, selected, changed) {
  const table = h("table", { class: "data" }, h("caption", {}, `Select 2 to ${MAX_SELECTED} jobs to compare side by side`),
    h("thead", {}, h("tr", {}, ["", "Job", "Method", "Size", "Ratio", "Bits/weight", "Latency", "Quality"].map((t, i) => h("th", { scope: "col", class: i >= 3 ? "num" : null }, t)))));
  const body = h("tbody");
  body.append(originalRow(rows));
  for (const row of rows) {
    const f = figures(row);
    const box = h("input", {
      type: "checkbox",
      checked: selected.has(row.job_id),
      "aria-label": `select ${row.name || row.job_id}`,
      dataset: { job: row.job_id },
      onchange: () => {
        if (box.checked && selected.size >= MAX_SELECTED) {
          box.checked = false;
          return;
        }
        if (box.checked) selected.add(row.job_id);
        else selected.delete(row.job_id);
        changed();
      },
    });
    const q = f.quality;
    body.append(h("tr", {}, h("td", {}, box), h("td", {}, h("a", { href: `#/jobs/${row.job_id}` }, row.name || row.job_id.slice(0, 8))),
      h("td", {}, row.method), h("td", { class: "num" }, fmt.bytes(f.bytesOut)), h("td", { class: "num" }, fmt.ratio(f.ratio)),
      h("td", { class: "num" }, fmt.bits(f.bitsPerWeight)), h("td", { class: "num" }, fmt.ms(f.latencyMs)),
      h("td", { class: "num" }, q ? `${q.metric} ${formatFigure(q.metric, q.compressed)}` : `error ${fmt.percent(f.meanError)}`)));
  }
  table.append(body);
  holder.replaceChildren(h("div", { class: "scroll" }, table));
}

/// The uploaded model as the list's first row: every job is read against it.
function originalRow(rows) {
  const first = rows[0];
  const evaluated = rows.find((r) => r.eval);
  const parameters = first.bits_per_weight && first.bytes_out ? (first.bytes_out * 8) / first.bits_per_weight : null;
  const metric = evaluated ? evaluated.eval.metric : null;
  const cell = (text) => h("td", { class: "num" }, text);
  return h("tr", { id: "compare-original", class: "original-row" }, h("td", {}, "★"), h("td", {}, "the original"),
    h("td", {}, "uploaded weights"), cell(fmt.bytes(first.bytes_in)), cell("1.00×"),
    cell(parameters ? fmt.bits((first.bytes_in * 8) / parameters) : ""),
    cell(evaluated ? fmt.ms(evaluated.eval.original.metrics.latency_ms) : ""),
    cell(metric ? `${metric} ${formatFigure(metric, evaluated.eval.original.metrics[metric])}` : ""));
}

const SIDE_ROWS = [
  ["Method", (r) => r.method],
  ["Format", (r) => r.format],
  ["Size", (r, f) => fmt.bytes(f.bytesOut)],
  ["Ratio", (r, f) => fmt.ratio(f.ratio)],
  ["Bits per weight", (r, f) => fmt.bits(f.bitsPerWeight)],
  ["Sparsity", (r) => fmt.percent(r.sparsity, 1)],
  ["Mean weight error", (r, f) => fmt.percent(f.meanError, 3)],
  ["Worst weight error", (r, f) => fmt.percent(f.worstError, 3)],
  ["Latency", (r, f) => fmt.ms(f.latencyMs)],
  ["Speed-up", (r, f) => (f.speedup ? `${f.speedup.toFixed(2)}×${f.speedupSpread ? ` (${f.speedupSpread[0].toFixed(2)}–${f.speedupSpread[1].toFixed(2)})` : ""}${f.speedupExpected === false ? ", none expected" : ""}` : "")],
  ["KL mean", (r) => formatFigure("kl_mean", r.eval?.compressed?.metrics?.kl_mean)],
  ["Top-1 agreement", (r) => formatFigure("top1_agreement", r.eval?.compressed?.metrics?.top1_agreement)],
  ["Prompt tokens/s", (r) => formatFigure("prompt_tokens_per_s", r.eval?.compressed?.metrics?.prompt_tokens_per_s)],
  ["Quality", (r, f) => (f.quality ? `${f.quality.metric} ${f.quality.compressed.toFixed(4)}` : "")],
  ["Change", (r, f) => (f.quality ? `${f.quality.change >= 0 ? "+" : ""}${f.quality.change.toFixed(4)}` : "")],
  ["Within budget", (r, f) => (f.quality && f.quality.accepted !== undefined && f.quality.accepted !== null ? (f.quality.accepted ? "yes" : "no") : "")],
  ["Wall time", (r, f) => fmt.seconds(f.wallSeconds)],
];

async function drawSelection(side, heat, rows, selected) {
  const chosen = rows.filter((r) => selected.has(r.job_id));
  if (chosen.length < 2) {
    side.replaceChildren(chosen.length === 1 ? h("p", { class: "muted" }, "Select one more job to compare.") : "");
    heat.replaceChildren();
    return;
  }
  const only = h("input", { id: "differences-only", type: "checkbox" });
  const table = h("table", { class: "data side" });
  const draw = () => {
    const head = h("tr", {}, h("th", { scope: "col" }, ""), chosen.map((r) => h("th", { scope: "col" }, h("a", { href: `#/jobs/${r.job_id}` }, r.name || r.job_id.slice(0, 8)))));
    const body = SIDE_ROWS.map(([label, value]) => {
      const cells = chosen.map((r) => value(r, figures(r)));
      if (only.checked && cells.every((c) => c === cells[0])) return null;
      return h("tr", {}, h("th", { scope: "row" }, label), cells.map((c) => h("td", {}, c)));
    }).filter(Boolean);
    table.replaceChildren(h("thead", {}, head), h("tbody", {}, body));
  };
  only.addEventListener("change", draw);
  draw();
  side.replaceChildren(h("h3", {}, "Side by side"), h("label", { class: "check" }, only, " differences only"), h("div", { class: "scroll" }, table));
  const reports = await Promise.all(chosen.map((r) => getJson(`/jobs/${r.job_id}/report`)));
  const cells = [];
  reports.forEach((report, i) => {
    const job = chosen[i].name || chosen[i].job_id.slice(0, 8);
    // A non-finite error has no colour on the scale: its cell stays empty (the table names it).
    for (const t of report.tensors) if (t.scheme !== "unchanged" && Number.isFinite(t.rel_error)) cells.push({ job, tensor: t.name, error: Math.max(t.rel_error, 1e-9) });
  });
  if (!window.Plot || cells.length === 0) {
    heat.replaceChildren();
    return;
  }
  const tensors = new Set(cells.map((c) => c.tensor)).size;
  const chart = Plot.plot({
    marginLeft: Math.min(320, 7 * Math.max(...cells.map((c) => c.tensor.length))),
    height: 40 + 16 * tensors,
    width: Math.max(360, 120 * chosen.length + 320),
    // Long job names are cut so columns do not overlap (the title keeps the whole name).
    x: { label: null, axis: "top", tickFormat: (name) => (name.length > 16 ? `${name.slice(0, 15)}…` : name) },
    // Tensors in reading order: layers.2 before layers.10.
    y: { label: null, domain: [...new Set(cells.map((c) => c.tensor))].sort((a, b) => a.localeCompare(b, undefined, { numeric: true })) },
    // Relative error as percentages, not SI prefixes ("10m").
    // From the 2nd percentile up: one exactly stored tensor (an embedding already on the
    // type's grid) would otherwise stretch the scale down to 1e-9 and turn every other cell
    // the same dark red.
    color: { type: "log", scheme: "reds", label: "relative error", legend: true, domain: errorDomain(cells.map((c) => c.error)), clamp: true, tickFormat: percentTick(cells.map((c) => c.error)) },
    marks: [Plot.cell(cells, { x: "job", y: "tensor", fill: "error", title: (c) => `${c.tensor} in ${c.job}: ${fmt.percent(c.error, 3)}`, className: "heat-cell" })],
  });
  heat.replaceChildren(h("h3", {}, "Per-tensor relative error"), h("div", { class: "scroll" }, chart));
}
