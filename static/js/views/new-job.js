// New job: pick a model, tick presets or build a recipe stage by stage (checked as you type),
// optionally an evaluation set and a sweep, and submit every variant as its own job. A 422
// from the server is shown next to the field it concerns (the problem's `stage` and `code`).

import { api, getJson, parseJson, problemOf } from "../api.js";
import { emptyState, field, h } from "../dom.js";
import { method } from "../figures.js";
import { evaluationFields } from "./evaluation-fields.js";

const GGUF_TYPES = ["Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_1", "Q4_0"];
/// "auto" writes the format that stores the last stage's result; "safetensors" is a dense
/// simulation, as large as the input.
const FORMATS = ["auto", "compressed-tensors", "gguf", "compact-safetensors", "safetensors"];
const FORMAT_LABELS = {
  auto: "auto: the format that stores the result",
  safetensors: "safetensors (dense simulation, no smaller)",
};

/// Each stage kind's parameters: [name, label, kind, default, options | check].
const STAGES = {
  quantize: {
    scheme: ["select", "int", ["int", "fp8", "nf4", "gguf"]],
    bits: ["int", 4, [2, 8], (s) => s.scheme === "int"],
    symmetric: ["bool", true, null, (s) => s.scheme === "int"],
    granularity: ["select", "group", (s) => (s.scheme === "fp8" ? ["channel", "tensor"] : ["group", "channel", "tensor"]), (s) => s.scheme === "int" || s.scheme === "fp8"],
    group_size: ["int", 128, [1, 1 << 20], (s) => s.scheme === "int" && s.granularity === "group"],
    type: ["select", "Q4_0", GGUF_TYPES, (s) => s.scheme === "gguf"],
  },
  prune: {
    method: ["select", "magnitude", ["magnitude", "semi_structured", "channels", "mlp_channels"]],
    sparsity: ["fraction", 0.5, null, (s) => s.method !== "semi_structured"],
    scope: ["select", "tensor", ["tensor", "global"], (s) => s.method === "magnitude"],
    pattern: ["pattern", "2:4", null, (s) => s.method === "semi_structured"],
    norm: ["select", "l2", ["l2", "l1"], (s) => s.method === "channels" || s.method === "mlp_channels"],
  },
  cluster: {
    bits: ["int", 4, [1, 8]],
    granularity: ["select", "tensor", ["tensor", "channel"]],
  },
  low_rank: {
    by: ["select", "energy", ["energy", "rank"]],
    energy: ["energy", 0.9, null, (s) => s.by === "energy"],
    rank: ["int", 16, [1, 1 << 20], (s) => s.by === "rank"],
  },
};

const SWEEPABLE = ["bits", "sparsity", "group_size", "rank", "energy"];

function freshStage(kind) {
  const stage = { kind };
  for (const [name, [, initial]] of Object.entries(STAGES[kind])) stage[name] = initial;
  return stage;
}

const shown = (stage, spec) => !spec[3] || spec[3](stage);

/// What is wrong with one parameter's value, or "".
function check(spec, value) {
  const [type, , range] = spec;
  if (type === "int") {
    if (!Number.isInteger(value)) return "a whole number";
    if (value < range[0] || value > range[1]) return `between ${range[0]} and ${range[1]}`;
  }
  if (type === "fraction" && !(value >= 0 && value < 1)) return "in [0, 1): the fraction of weights set to zero";
  if (type === "energy" && !(value > 0 && value <= 1)) return "in (0, 1]: the fraction of the spectrum's energy kept";
  if (type === "pattern") {
    const match = /^(\d+):(\d+)$/.exec(value);
    if (!match || +match[1] < 1 || +match[1] >= +match[2]) return "N:M with 1 ≤ N < M, e.g. 2:4";
  }
  return "";
}

function stageJson(stage) {
  const body = {};
  for (const [name, spec] of Object.entries(STAGES[stage.kind])) {
    if (name === "by" || !shown(stage, spec)) continue;
    body[name] = stage[name];
  }
  return { [stage.kind]: body };
}

function patternError(pattern) {
  if (!pattern.startsWith("re:")) return "";
  try {
    new RegExp(pattern.slice(3));
    return "";
  } catch (error) {
    return `${pattern}: not a valid regular expression`;
  }
}

const lines = (text) => text.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);

/// Where a problem from the server belongs: a field key, or null for the form as a whole.
function fieldOf(problem) {
  const stage = problem.stage ? `stage.${problem.stage - 1}.` : null;
  const byCode = {
    bits_out_of_range: "bits",
    sparsity_out_of_range: "sparsity",
    bad_group_size: "group_size",
    group_size_does_not_divide_row: "group_size",
    bad_granularity: "granularity",
    bad_rank: "rank",
    rank_grows_tensor: "rank",
    row_not_multiple_of_block: "type",
    stage_must_be_first: "kind",
    format_mismatch: "kind",
  };
  if (stage && byCode[problem.code]) return stage + byCode[problem.code];
  const topLevel = {
    format_mismatch: "format",
    bad_pattern: "targets",
    target_matches_nothing: "targets",
    not_float: "targets",
    nothing_selected: "targets",
    no_gated_mlp: "stage.0.method",
    dataset_not_found: "dataset",
    not_evaluable: "dataset",
    empty_dataset: "dataset",
    invalid_dataset: "dataset",
    dataset_mismatch: "dataset",
    bad_metric: "metric",
    bad_max_drop: "max_drop",
    bad_name: "name",
    unknown_preset: "presets",
    not_found: "model",
  };
  return topLevel[problem.code] || null;
}

export async function render(container, { params }) {
  const [models, presets] = await Promise.all([
    getJson("/models?limit=100"),
    getJson("/presets"),
  ]);
  container.append(h("h2", {}, "New job"));
  if (models.items.length === 0) {
    container.append(emptyState("No models yet: upload one first.", h("a", { class: "button", href: "#/models" }, "Upload a model")));
    return;
  }
  const state = {
    mode: params.get("mode") === "recipe" ? "recipe" : "presets",
    stages: [freshStage("quantize")],
    sweep: "",
    sweepValues: "",
  };
  const fields = {};
  const formError = h("p", { class: "error", id: "job-error", role: "alert" });
  const results = h("ul", { id: "submitted", "aria-live": "polite" });

  const modelSelect = h("select", { id: "job-model" },
    models.items.map((m) => h("option", { value: m.id, selected: m.id === params.get("model") }, `${m.name} (${m.id.slice(0, 8)})`)));
  fields.model = field("Model", modelSelect);
  const nameInput = h("input", { id: "job-name", type: "text", maxlength: 255, placeholder: "optional label" });
  fields.name = field("Name", nameInput);

  const presetBoxes = presets.items.map((p) => h("label", { class: "check" },
    h("input", { type: "checkbox", name: "preset", value: p.name, checked: p.name === params.get("preset") }),
    h("strong", {}, p.name), " ", h("span", { class: "muted" }, p.description)));
  const presetList = h("fieldset", { id: "preset-list", class: "presets" },
    h("legend", {}, "Presets (each ticked one becomes a job)"), presetBoxes);
  fields.presets = { setError: (m) => { presetError.textContent = m || ""; } };
  const presetError = h("span", { class: "field-error", role: "alert" });
  presetList.append(presetError);

  const stagesBox = h("div", { id: "stages" });
  const targets = h("textarea", { id: "job-targets", rows: 2, placeholder: "default: every float tensor of 2 or more dimensions\ne.g. re:.*\\.weight$" });
  const ignore = h("textarea", { id: "job-ignore", rows: 2, placeholder: "e.g. lm_head.weight" });
  const format = h("select", { id: "job-format" }, FORMATS.map((f) => h("option", { value: f }, FORMAT_LABELS[f] || f)));
  fields.targets = field("Targets (one per line; re: for a regular expression)", targets);
  fields.ignore = field("Ignore", ignore);
  fields.format = field("Format", format);
  const sweepSelect = h("select", { id: "sweep-param" });
  const sweepValues = h("input", { id: "sweep-values", type: "text", placeholder: "e.g. 2, 3, 4, 8" });
  fields.sweep = field("Sweep: one job per value of", sweepSelect);
  fields.sweepValues = field("Values", sweepValues, "comma-separated");
  const builder = h("div", { id: "builder" },
    stagesBox,
    h("div", { class: "row" },
      ...Object.keys(STAGES).map((kind) => h("button", { type: "button", class: "secondary", onclick: () => { state.stages.push(freshStage(kind)); drawStages(); update(); } }, `+ ${kind}`))),
    h("div", { class: "grid" }, fields.targets, fields.ignore, fields.format),
    h("div", { class: "grid" }, fields.sweep, fields.sweepValues));

  const evaluation = evaluationFields(() => update());
  Object.assign(fields, evaluation.fields);
  modelSelect.addEventListener("change", () => evaluation.load(modelSelect.value));

  const modeRadios = ["presets", "recipe"].map((mode) => h("label", { class: "check" },
    h("input", { type: "radio", name: "mode", value: mode, checked: state.mode === mode, onchange: () => { state.mode = mode; update(); } }),
    mode === "presets" ? "Presets" : "Build a recipe"));
  const preview = h("pre", { id: "job-preview", class: "code" });
  const submit = h("button", { type: "submit", id: "job-submit" }, "Submit");

  function drawStages() {
    stagesBox.replaceChildren(...state.stages.map((stage, index) => {
      const box = h("fieldset", { class: "stage", dataset: { stage: index } },
        h("legend", {}, `Stage ${index + 1}`));
      const kindSelect = h("select", { id: `stage-${index}-kind`, onchange: () => { state.stages[index] = freshStage(kindSelect.value); drawStages(); update(); } },
        Object.keys(STAGES).map((k) => h("option", { value: k, selected: k === stage.kind }, k)));
      fields[`stage.${index}.kind`] = field("Kind", kindSelect);
      const row = h("div", { class: "grid" }, fields[`stage.${index}.kind`]);
      for (const [name, spec] of Object.entries(STAGES[stage.kind])) {
        if (!shown(stage, spec)) continue;
        const id = `stage-${index}-${name}`;
        let input;
        const [type, , options] = spec;
        if (type === "select") {
          const choices = typeof options === "function" ? options(stage) : options;
          if (!choices.includes(stage[name])) stage[name] = choices[0];
          input = h("select", { id }, choices.map((c) => h("option", { value: c, selected: c === stage[name] }, c)));
        } else if (type === "bool") {
          input = h("input", { id, type: "checkbox", checked: stage[name] });
        } else if (type === "pattern") {
          input = h("input", { id, type: "text", value: stage[name] });
        } else {
          input = h("input", { id, type: "number", step: type === "int" ? 1 : "any", value: stage[name] });
        }
        const redraw = type === "select";
        input.addEventListener(redraw ? "change" : "input", () => {
          stage[name] = type === "bool" ? input.checked
            : type === "select" || type === "pattern" ? input.value
            : input.value === "" ? NaN : Number(input.value);
          if (redraw) drawStages();
          update();
        });
        fields[`stage.${index}.${name}`] = field(name.replace("_", " "), input);
        row.append(fields[`stage.${index}.${name}`]);
      }
      if (state.stages.length > 1) {
        row.append(h("button", { type: "button", class: "secondary", "aria-label": `Remove stage ${index + 1}`, onclick: () => { state.stages.splice(index, 1); drawStages(); update(); } }, "Remove"));
      }
      box.append(row);
      return box;
    }));
    const current = sweepSelect.value;
    sweepSelect.replaceChildren(h("option", { value: "" }, "no sweep"));
    state.stages.forEach((stage, index) => {
      for (const [name, spec] of Object.entries(STAGES[stage.kind])) {
        if (SWEEPABLE.includes(name) && shown(stage, spec)) {
          const value = `${index}.${name}`;
          sweepSelect.append(h("option", { value, selected: value === current }, `stage ${index + 1} ${name}`));
        }
      }
    });
  }

  /// Every request this form would send, and whether the form is free of errors.
  function requests() {
    for (const f of Object.values(fields)) f.setError("");
    let ok = true;
    const fail = (key, message) => {
      ok = false;
      if (fields[key]) fields[key].setError(message);
    };
    const common = { model_id: modelSelect.value };
    const evalSpec = evaluation.spec(fail);
    if (evalSpec) common.eval = evalSpec;
    const base = nameInput.value.trim();
    if (state.mode === "presets") {
      const chosen = presetBoxes.map((l) => l.querySelector("input")).filter((i) => i.checked).map((i) => i.value);
      if (chosen.length === 0) fail("presets", "tick at least one preset");
      return { ok, list: chosen.map((preset) => ({ ...common, preset, name: base ? (chosen.length > 1 ? `${base} ${preset}` : base) : preset })) };
    }
    state.stages.forEach((stage, index) => {
      for (const [name, spec] of Object.entries(STAGES[stage.kind])) {
        if (!shown(stage, spec)) continue;
        const problem = check(spec, stage[name]);
        if (problem) fail(`stage.${index}.${name}`, problem);
      }
    });
    const recipe = { stages: state.stages.map(stageJson), format: format.value };
    const targetList = lines(targets.value);
    const ignoreList = lines(ignore.value);
    for (const [key, list] of [["targets", targetList], ["ignore", ignoreList]]) {
      const bad = list.map(patternError).find(Boolean);
      if (bad) fail(key, bad);
    }
    if (targetList.length) recipe.targets = targetList;
    if (ignoreList.length) recipe.ignore = ignoreList;
    const label = base || method(recipe);
    if (!sweepSelect.value) return { ok, list: [{ ...common, name: label, recipe }] };
    const [index, name] = sweepSelect.value.split(".");
    const spec = STAGES[state.stages[index].kind][name];
    const values = lines(sweepValues.value).map(Number);
    if (values.length === 0) fail("sweepValues", "give at least one value");
    for (const value of values) {
      const problem = check(spec, value);
      if (problem) fail("sweepValues", `${value}: ${problem}`);
    }
    const list = values.map((value) => {
      const variant = structuredClone(recipe);
      Object.values(variant.stages[index])[0][name] = value;
      return { ...common, name: base ? `${base} ${name}=${value}` : method(variant), recipe: variant };
    });
    return { ok, list };
  }

  function update() {
    presetList.hidden = state.mode !== "presets";
    builder.hidden = state.mode !== "recipe";
    const { ok, list } = requests();
    preview.textContent = list.map((r) => JSON.stringify(r)).join("\n");
    submit.textContent = list.length > 1 ? `Submit ${list.length} jobs` : "Submit";
    return { ok, list };
  }

  const form = h("form", {
    id: "job-form",
    novalidate: true,
    oninput: () => update(),
    onsubmit: async (event) => {
      event.preventDefault();
      formError.textContent = "";
      results.replaceChildren();
      const { ok, list } = update();
      if (!ok) {
        formError.textContent = "Fix the fields marked above first.";
        return;
      }
      submit.disabled = true;
      let failed = 0;
      for (const body of list) {
        const response = await api("/jobs", { method: "POST", json: body });
        if (response.ok) {
          const job = parseJson(await response.text());
          results.append(h("li", {}, "Queued ", h("a", { href: `#/jobs/${job.id}` }, job.name || job.id)));
        } else {
          failed += 1;
          const problem = await problemOf(response);
          const key = fieldOf(problem);
          const prefix = list.length > 1 ? `${body.name}: ` : "";
          if (key && fields[key]) fields[key].setError(`${prefix}${problem.detail}`);
          else formError.textContent = `${prefix}${problem.detail}`;
          results.append(h("li", { class: "error" }, `Refused: ${prefix}${problem.detail}`));
        }
      }
      submit.disabled = false;
      if (failed === 0) location.hash = `#/jobs?model=${modelSelect.value}`;
    },
  },
  h("div", { class: "grid" }, fields.model, fields.name),
  h("fieldset", { class: "modes" }, h("legend", {}, "Recipe"), modeRadios),
  presetList, builder,
  evaluation.box,
  h("details", {}, h("summary", {}, "Requests this form sends"), preview),
  h("div", { class: "row" }, submit), formError, results);
  container.append(form);
  drawStages();
  update();
  await evaluation.load(modelSelect.value, params.get("dataset"));
  update();
}
