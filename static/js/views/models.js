// Models: the team's uploaded models and the upload form (drag-and-drop or picker, several
// files for a sharded checkpoint, a real progress bar with speed and time left, cancel, the
// server's refusal in plain words), plus the bundled demo when the list is empty.

import { api, getJson, problemOf, token } from "../api.js";
import { emptyState, field, h, sortableTable } from "../dom.js";
import * as fmt from "../format.js";

export async function render(container) {
  const list = h("div", { id: "model-list" });
  container.append(h("h2", {}, "Models"), uploadForm(() => refresh(list)), list);
  await refresh(list);
}

async function refresh(list) {
  const page = await getJson("/models?limit=100");
  if (page.items.length === 0) {
    list.replaceChildren(demoOffer());
    return;
  }
  const columns = [
    { key: "name", label: "Name", cell: (m) => {
      const original = m.duplicate_of && page.items.find((o) => o.id === m.duplicate_of);
      return h("span", {}, h("a", { href: `#/models/${m.id}` }, m.name),
        m.duplicate_of ? h("span", { class: "muted duplicate", title: "the same bytes as an earlier upload" }, ` · identical to ${original ? original.name : m.duplicate_of.slice(0, 8)}`) : null);
    } },
    { key: "bytes", label: "Size", numeric: true, cell: (m) => fmt.bytes(m.bytes) },
    { key: "parameters", label: "Parameters", numeric: true, cell: (m) => fmt.count(m.parameters) },
    { key: "dtypes", label: "Dtypes", sortable: false, cell: (m) => Object.keys(m.dtypes).join(", ") },
    { key: "architecture", label: "Architecture", cell: (m) => m.architecture || m.model_type || "" },
    { key: "created_by", label: "Uploaded by" },
    { key: "created_at", label: "Date", cell: (m) => fmt.when(m.created_at) },
    {
      key: "actions", label: "", sortable: false, cell: (m) => h("span", { class: "actions" },
        h("a", { class: "button", href: `#/new?model=${m.id}` }, "New job"),
        h("a", { class: "button secondary", href: `#/jobs?model=${m.id}` }, "Jobs"),
        h("button", { type: "button", class: "secondary", onclick: () => remove(m, list) }, "Delete")),
    },
  ];
  list.replaceChildren(sortableTable({ columns, rows: page.items, caption: `${page.items.length} model${page.items.length === 1 ? "" : "s"}`, rowAttrs: (m) => ({ dataset: { model: m.id } }) }));
}

async function remove(model, list) {
  if (!confirm(`Delete model ${model.name}? Its jobs and artifacts stay.`)) return;
  const response = await api(`/models/${model.id}`, { method: "DELETE" });
  if (!response.ok) {
    list.prepend(h("p", { class: "error", role: "alert" }, `Not deleted: ${(await problemOf(response)).detail}`));
    return;
  }
  await refresh(list);
}

function demoOffer() {
  const error = h("p", { class: "error", role: "alert" });
  const button = h("button", {
    type: "button",
    id: "demo",
    onclick: async () => {
      button.disabled = true;
      const response = await api("/demo", { method: "POST" });
      if (!response.ok) {
        error.textContent = (await problemOf(response)).detail;
        button.disabled = false;
        return;
      }
      const installed = await response.json();
      location.hash = `#/compare?model=${installed.model.id}`;
    },
  }, "Load the demo");
  return emptyState(
    "No models yet: upload one above, or load the bundled demo: a small handwritten-digits classifier compressed six ways, each evaluated against the original.",
    button, error);
}

function uploadForm(onUploaded) {
  const files = h("input", { id: "files", type: "file", multiple: true, accept: ".safetensors,.json,.txt,.model" });
  const name = h("input", { id: "upload-name", type: "text", maxlength: 255, placeholder: "from the file name" });
  const chosen = h("p", { id: "chosen", class: "muted", "aria-live": "polite" });
  const bar = h("progress", { id: "progress-bar", max: 1, value: 0 });
  const text = h("span", { id: "progress-text" });
  const progress = h("div", { id: "progress", hidden: true }, bar, text);
  const error = h("p", { class: "error", id: "upload-error", role: "alert" });
  const cancel = h("button", { type: "button", id: "cancel-upload", class: "secondary", hidden: true }, "Cancel");
  const submit = h("button", { type: "submit", id: "upload-submit" }, "Upload");
  let picked = [];
  const pick = (list) => {
    picked = [...list];
    chosen.textContent = picked.length
      ? `${picked.length} file${picked.length === 1 ? "" : "s"}: ${picked.map((f) => `${f.name} (${fmt.bytes(f.size)})`).join(", ")}`
      : "";
  };
  files.addEventListener("change", () => pick(files.files));
  const drop = h("div", {
    id: "drop-zone",
    class: "drop",
    ondragover: (event) => { event.preventDefault(); drop.classList.add("over"); },
    ondragleave: () => drop.classList.remove("over"),
    ondrop: (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      pick(event.dataTransfer.files);
    },
  },
  h("p", {}, "Drop .safetensors files here (for a sharded checkpoint: every shard, its model.safetensors.index.json and config.json), or choose them:"),
  field("Files", files), field("Name", name, "optional"), chosen);
  let current = null;
  cancel.addEventListener("click", () => current && current.abort());
  const form = h("form", {
    id: "upload-form",
    onsubmit: (event) => {
      event.preventDefault();
      if (picked.length === 0) {
        error.textContent = "Choose or drop at least one file first.";
        return;
      }
      error.textContent = "";
      current = send(picked, name.value.trim(), { bar, text, progress, cancel, submit }, (message) => {
        current = null;
        if (message) {
          error.textContent = message;
        } else {
          form.reset();
          pick([]);
          onUploaded();
        }
      });
    },
  }, drop, h("div", { class: "row" }, submit, cancel), progress, error);
  return h("section", { class: "card", "aria-label": "Upload a model" }, h("h3", {}, "Upload"), form);
}

/// Sends the files as one multipart upload; `finished(message)` gets null on success, else
/// what to tell the viewer.
function send(files, name, ui, finished) {
  const form = new FormData();
  // A folder picked or dropped whole names the model; the server otherwise takes the name from
  // config.json's _name_or_path or the weight file.
  const folder = files.map((f) => (f.webkitRelativePath || "").split("/")).find((parts) => parts.length > 1)?.[0];
  if (name || folder) form.append("name", name || folder);
  for (const file of files) form.append("file", file, file.name);
  const total = files.reduce((sum, f) => sum + f.size, 0);
  const xhr = new XMLHttpRequest();
  const started = performance.now();
  ui.progress.hidden = false;
  ui.cancel.hidden = false;
  ui.submit.disabled = true;
  ui.bar.value = 0;
  ui.text.textContent = `0 B of ${fmt.bytes(total)}`;
  xhr.upload.onprogress = (event) => {
    const elapsed = (performance.now() - started) / 1000;
    const sent = Math.min(event.loaded, total);
    const speed = sent / Math.max(elapsed, 0.001);
    const left = speed > 0 ? (total - sent) / speed : 0;
    ui.bar.value = total ? sent / total : 1;
    ui.text.textContent = `${fmt.bytes(sent)} of ${fmt.bytes(total)} · ${fmt.bytes(speed)}/s · ${fmt.seconds(left)} left`;
  };
  const done = (message) => {
    ui.cancel.hidden = true;
    ui.submit.disabled = false;
    ui.progress.hidden = true;
    finished(message);
  };
  xhr.onload = () => {
    if (xhr.status === 201) return done(null);
    let detail = `HTTP ${xhr.status}`;
    try {
      const problem = JSON.parse(xhr.responseText);
      detail = problem.detail || problem.title || detail;
    } catch {}
    done(`Refused: ${detail}`);
  };
  xhr.onerror = () => done("The upload failed: the connection was lost. Nothing was kept; try again.");
  xhr.onabort = () => done("Upload canceled. Nothing was kept.");
  xhr.open("POST", "/api/v1/models");
  xhr.setRequestHeader("Authorization", `Bearer ${token()}`);
  xhr.send(form);
  return xhr;
}
