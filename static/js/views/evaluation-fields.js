// The new-job form's evaluation fields, driven by what the chosen model can evaluate
// (`GET /models/{id}/evaluation`): the team's sets with those that do not fit the model
// disabled and the reason said, the budget metric as a list of what the architecture reports
// (the default first), a budget field labelled with how the chosen metric's budget is read, and
// an upload of a new set (raw text tokenized with the model's tokenizer, JSONL token sequences,
// or a safetensors tensors set) without leaving the form.

import { api, getJson, parseJson, problemOf } from "../api.js";
import { field, h } from "../dom.js";

/// How `max_drop` reads for a metric's budget kind, with an example.
const BUDGET_WORDS = {
  "relative increase": (m) => [`Budget: largest relative increase of ${m} accepted`, "0.05 allows 5 % higher"],
  "absolute increase": (m) => [`Budget: largest increase of ${m} accepted`, "e.g. 0.01"],
  "absolute drop": (m) => [`Budget: largest drop of ${m} accepted`, "e.g. 0.01 (one point of a rate)"],
};

/// Builds the fields; `changed()` is called when a value changes outside the form's own input
/// events (options loaded, a set uploaded and selected).
export function evaluationFields(changed) {
  let options = null;
  const datasetSelect = h("select", { id: "job-dataset" });
  const metricSelect = h("select", { id: "job-metric" });
  const maxDrop = h("input", { id: "job-max-drop", type: "number", step: "any", min: 0, placeholder: "e.g. 0.01" });
  const fields = {
    dataset: field("Evaluation set", datasetSelect),
    metric: field("Metric", metricSelect),
    max_drop: field("Budget (largest drop accepted)", maxDrop),
  };
  const about = h("p", { class: "muted", id: "evaluation-about" });
  const upload = uploadBox(async (created) => {
    await load(currentModel, created.id);
    changed();
  });
  let currentModel = null;

  const chosenSet = () => options?.datasets.find((d) => d.id === datasetSelect.value);
  const chosenMetric = () => options?.metrics.find((m) => m.name === metricSelect.value) || options?.metrics[0];

  function drawMetric() {
    const set = chosenSet();
    const labelled = set ? set.labelled > 0 : false;
    const keep = metricSelect.value;
    metricSelect.replaceChildren(...(options?.metrics || []).map((m, i) => h("option", {
      value: i === 0 ? "" : m.name,
      disabled: m.needs_labels && !labelled,
      selected: m.name === keep,
    }, `${m.label}${i === 0 ? " (default)" : ""}${m.needs_labels && !labelled ? ": needs a labelled set" : ""}`)));
    const metric = chosenMetric();
    const [label, hint] = metric && metric.budget ? BUDGET_WORDS[metric.budget](metric.name) : ["Budget (largest drop accepted)", ""];
    fields.max_drop.querySelector("label").textContent = label;
    maxDrop.placeholder = hint;
    fields.dataset.querySelector("small")?.remove();
    if (set && set.warnings && set.warnings.length) {
      fields.dataset.insertBefore(h("small", { class: "warning" }, set.warnings.join("; ")), fields.dataset.querySelector(".field-error"));
    }
  }

  async function load(modelId, select) {
    currentModel = modelId;
    options = null;
    datasetSelect.replaceChildren(h("option", { value: "" }, "loading…"));
    const fetched = await getJson(`/models/${modelId}/evaluation`).catch((error) => ({ failed: error.message }));
    if (currentModel !== modelId) return;
    if (fetched.failed) {
      about.textContent = `Could not load the evaluation options: ${fetched.failed}`;
      datasetSelect.replaceChildren(h("option", { value: "" }, "none"));
      return;
    }
    options = fetched;
    const fitting = options.datasets.filter((d) => d.fits);
    datasetSelect.replaceChildren(h("option", { value: "" }, "none"),
      ...options.datasets.map((d) => h("option", {
        value: d.id,
        disabled: !d.fits,
        selected: d.id === select,
        title: d.reason || "",
      }, `${d.name} (${d.rows} rows)${d.fits ? "" : ` — does not fit: ${d.reason}`}`)));
    about.textContent = options.not_evaluable
      ? `This model cannot be evaluated: ${options.not_evaluable}`
      : `A ${options.architecture} model: it takes ${options.dataset_kind === "tensors" ? "a tensors set (inputs and labels)" : "token sequences"}. ${fitting.length} of ${options.datasets.length} sets fit.`;
    upload.setModel(modelId, options);
    drawMetric();
  }

  datasetSelect.addEventListener("change", drawMetric);
  metricSelect.addEventListener("change", drawMetric);

  return {
    fields,
    box: h("fieldset", { id: "evaluation-fields" }, h("legend", {}, "Evaluation (optional)"), about,
      h("div", { class: "grid" }, fields.dataset, fields.metric, fields.max_drop), upload.element),
    load,
    /// The job's `eval` section, or null; `fail(key, message)` marks a field.
    spec(fail) {
      if (!datasetSelect.value) {
        if (maxDrop.value !== "" || metricSelect.value) fail("dataset", "choose an evaluation set for a metric or a budget");
        return null;
      }
      const spec = { dataset_id: datasetSelect.value };
      if (metricSelect.value) spec.metric = metricSelect.value;
      if (maxDrop.value !== "") {
        const drop = Number(maxDrop.value);
        if (!(drop >= 0)) fail("max_drop", "a number of at least 0");
        spec.max_drop = drop;
      }
      return spec;
    },
  };
}

/// Upload of a new set for the chosen model: text files are tokenized by the server with the
/// model's tokenizer into windows; .jsonl and .safetensors are read as they are.
function uploadBox(uploaded) {
  const file = h("input", { id: "dataset-file", type: "file", accept: ".txt,.text,.md,.jsonl,.json,.safetensors" });
  const name = h("input", { id: "dataset-name", type: "text", maxlength: 255, placeholder: "from the file name" });
  const windowInput = h("input", { id: "dataset-window", type: "number", min: 2, max: 8192, step: 1, placeholder: "512" });
  const status = h("p", { id: "dataset-status", class: "muted", "aria-live": "polite" });
  const button = h("button", { type: "button", id: "dataset-upload", class: "secondary" }, "Upload set");
  let model = null;
  let takesText = false;
  const element = h("details", { id: "dataset-upload-box" },
    h("summary", {}, "Upload an evaluation set"),
    h("p", { class: "muted", id: "dataset-kinds" }),
    h("div", { class: "grid" },
      field("File", file), field("Name", name), field("Tokens per sequence (text)", windowInput)),
    h("div", { class: "row" }, button), status);
  button.addEventListener("click", async () => {
    const chosen = file.files[0];
    if (!chosen) {
      status.textContent = "Choose a file first.";
      return;
    }
    const text = !/\.(jsonl|json|safetensors)$/i.test(chosen.name);
    if (text && !takesText) {
      status.textContent = "This model has no tokenizer.json, so a text file cannot be tokenized for it: upload JSONL token sequences instead.";
      return;
    }
    const query = new URLSearchParams({ name: name.value.trim() || chosen.name.replace(/\.[^.]+$/, ""), model_id: model });
    if (text) {
      query.set("format", "text");
      if (windowInput.value) query.set("window", windowInput.value);
    }
    button.disabled = true;
    status.textContent = `uploading ${chosen.name}…`;
    const response = await api(`/datasets?${query}`, { method: "POST", body: chosen, headers: { "Content-Type": "application/octet-stream" } });
    button.disabled = false;
    if (!response.ok) {
      status.textContent = `Refused: ${(await problemOf(response)).detail}`;
      return;
    }
    const created = parseJson(await response.text());
    const warnings = created.stats.warnings || [];
    file.value = "";
    name.value = "";
    // Said once the set is listed and selected, so the form never shows it stored but absent.
    await uploaded(created);
    status.textContent = `Stored "${created.name}": ${created.stats.rows} ${created.kind === "tensors" ? "rows" : "sequences"}${created.stats.tokens ? `, ${created.stats.tokens} tokens` : ""}, and selected.${warnings.length ? ` Note: ${warnings.join("; ")}` : ""}`;
  });
  return {
    element,
    setModel(id, options) {
      model = id;
      takesText = options.takes_text;
      element.querySelector("#dataset-kinds").textContent = options.dataset_kind === "tensors"
        ? "A safetensors file with inputs [rows, features] and integer labels [rows]."
        : `A text file${takesText ? " (tokenized with the model's tokenizer into sequences)" : " (not for this model: it has no tokenizer.json)"}, or JSONL with one {"tokens": [...], "label"?: n} per line.`;
    },
  };
}
