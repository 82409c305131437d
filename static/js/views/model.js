// One model: what was uploaded (files with sizes and digests), its config.json, the
// architecture evaluation recognises with the budget metrics and the sets that fit, its tensor
// inventory (natural order, filterable, paged from the API), and the team's jobs on it.

import { getJson } from "../api.js";
import { h, sortableTable, statCard, stateBadge } from "../dom.js";
import { figures, method } from "../figures.js";
import * as fmt from "../format.js";
import { qualityCell } from "./jobs.js";

/// Tensors fetched per request; a model with more is fetched page by page.
const TENSOR_PAGE = 1000;

export async function render(container, { argument: id }) {
  const model = await getJson(`/models/${id}`);
  const [config, evaluation, jobs] = await Promise.all([
    getJson(`/models/${id}/config`).catch(() => null),
    getJson(`/models/${id}/evaluation`).catch(() => null),
    getJson(`/jobs?model_id=${id}&limit=20`).catch(() => ({ items: [] })),
  ]);
  container.append(
    h("h2", {}, model.name),
    h("p", { class: "muted" }, `uploaded ${fmt.when(model.created_at)} by ${model.created_by || "a deleted token"} · sha256 `, h("code", { class: "hash", title: model.sha256 }, model.sha256.slice(0, 16))),
    h("div", { class: "row" },
      h("a", { class: "button", href: `#/new?model=${id}` }, "New job"),
      h("a", { class: "button secondary", href: `#/jobs?model=${id}` }, "All its jobs"),
      h("a", { class: "button secondary", href: `#/compare?model=${id}` }, "Compare its jobs")),
    h("div", { class: "cards", id: "model-cards" },
      statCard("Size", fmt.bytes(model.bytes), `${fmt.bytes(model.tensor_bytes)} of tensor data`),
      statCard("Parameters", fmt.count(model.parameters), Object.entries(model.dtypes).map(([d, n]) => `${d} ${fmt.count(n)}`).join(" · ")),
      statCard("Tensors", String(model.tensor_count)),
      statCard("Architecture", evaluation?.architecture || model.model_type || "not recognised",
        model.architecture || (evaluation?.not_evaluable ? `cannot be evaluated: ${evaluation.not_evaluable}` : null))),
    evaluationSection(evaluation),
    filesSection(model),
    configSection(config),
    jobsSection(jobs.items, id),
    await tensorsSection(id, model.tensor_count),
  );
}

function evaluationSection(options) {
  if (!options || options.not_evaluable) return null;
  const fitting = options.datasets.filter((d) => d.fits);
  return h("section", { id: "model-evaluation" }, h("h3", {}, "Evaluation"),
    h("p", {}, `Budget metrics: ${options.metrics.map((m) => `${m.label}${m.needs_labels ? " (labelled sets)" : ""}`).join(", ")}. `,
      `Sets that fit: ${fitting.length ? fitting.map((d) => d.name).join(", ") : "none yet"}`,
      options.takes_text ? ". It has a tokenizer.json, so raw text can be uploaded as a set (New job → Evaluation)." : "."));
}

function filesSection(model) {
  return h("section", { id: "model-files" }, h("h3", {}, `Files (${model.files.length})`), h("div", { class: "scroll" }, sortableTable({
    rows: model.files,
    sort: { key: "name" },
    columns: [
      { key: "name", label: "File" },
      { key: "kind", label: "Kind" },
      { key: "bytes", label: "Size", numeric: true, cell: (f) => fmt.bytes(f.bytes) },
      { key: "sha256", label: "sha256", cell: (f) => h("code", { class: "hash", title: f.sha256 }, f.sha256) },
    ],
  })));
}

function configSection(config) {
  return h("section", { id: "model-config" }, h("h3", {}, "config.json"),
    config
      ? h("details", {}, h("summary", {}, summaryOf(config)), h("pre", { class: "code" }, JSON.stringify(config, null, 2)))
      : h("p", { class: "muted" }, "Uploaded without a config.json: evaluation needs the architecture named in the job."));
}

/// The few config keys a reader looks for first.
function summaryOf(config) {
  const keys = ["model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size", "vocab_size", "max_position_embeddings", "tie_word_embeddings", "torch_dtype"];
  return keys.filter((k) => config[k] !== undefined).map((k) => `${k} ${config[k]}`).join(" · ") || "show";
}

function jobsSection(jobs, id) {
  const f = (j) => (j.result ? figures(j) : null);
  return h("section", { id: "model-jobs" }, h("h3", {}, "Its jobs"),
    jobs.length === 0
      ? h("p", { class: "muted" }, "No jobs on this model yet.")
      : h("div", { class: "scroll" }, sortableTable({
        rows: jobs,
        columns: [
          { key: "name", label: "Job", value: (j) => j.name || "", cell: (j) => h("a", { href: `#/jobs/${j.id}` }, j.name || j.id.slice(0, 8)) },
          { key: "method", label: "Method", value: (j) => method(j.recipe), cell: (j) => method(j.recipe) },
          { key: "state", label: "State", cell: (j) => stateBadge(j.state) },
          { key: "ratio", label: "Ratio", numeric: true, value: (j) => f(j)?.ratio, cell: (j) => fmt.ratio(f(j)?.ratio) },
          { key: "quality", label: "Quality", value: (j) => f(j)?.quality?.compressed, cell: (j) => qualityCell(f(j)?.quality) },
          { key: "created_at", label: "Date", cell: (j) => fmt.when(j.created_at) },
        ],
      })),
    jobs.length === 20 ? h("p", {}, h("a", { href: `#/jobs?model=${id}` }, "Older jobs in the jobs list")) : null);
}

async function tensorsSection(id, total) {
  const all = [];
  let cursor = null;
  do {
    const page = await getJson(`/models/${id}/tensors?limit=${TENSOR_PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    all.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && all.length < total);
  all.sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
  const filter = h("input", { id: "tensor-filter", type: "search", placeholder: "filter by name, e.g. layers.3. or mlp" });
  const holder = h("div", { class: "scroll" });
  const draw = () => {
    const wanted = filter.value.trim();
    const rows = wanted ? all.filter((t) => t.name.includes(wanted)) : all;
    holder.replaceChildren(sortableTable({
      rows,
      caption: `${rows.length} of ${all.length} tensors`,
      columns: [
        { key: "name", label: "Tensor" },
        { key: "dtype", label: "Dtype" },
        { key: "shape", label: "Shape", value: (t) => t.parameters, cell: (t) => t.shape.join(" × ") },
        { key: "parameters", label: "Parameters", numeric: true, cell: (t) => fmt.count(t.parameters) },
        { key: "bytes", label: "Bytes", numeric: true, cell: (t) => fmt.bytes(t.bytes) },
        { key: "file", label: "File" },
        { key: "non_finite", label: "", sortable: false, cell: (t) => (t.non_finite ? h("span", { class: "worse" }, "NaN/Inf") : "") },
      ],
    }));
  };
  filter.addEventListener("input", draw);
  draw();
  return h("section", { id: "model-tensors" }, h("h3", {}, `Tensors (${all.length})`), h("label", { class: "filter" }, "Filter ", filter), holder);
}
