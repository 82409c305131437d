// Jobs: the team's history with live progress (one Server-Sent Events stream for the whole
// team, no polling), filters kept in the URL (state, model, method, text, dates, sort, page)
// so a link shows the same list, and cancel / re-run on each row.

import { api, follow, getJson, parseJson, problemOf } from "../api.js";
import { emptyState, h, progressBar, sortableTable, stateBadge } from "../dom.js";
import { figures, method, qualityChange } from "../figures.js";
import * as fmt from "../format.js";
import { setParams } from "../route.js";

const STATES = ["queued", "running", "succeeded", "failed", "canceled"];
const METHODS = ["quantize", "int", "fp8", "nf4", "gguf", "prune", "magnitude", "semi_structured", "channels", "mlp_channels", "cluster", "low_rank"];
const PAGE = 50;

/// The request for the list the URL asks for.
function listPath(params) {
  const query = new URLSearchParams({ limit: String(PAGE) });
  const copy = (from, to = from) => { if (params.get(from)) query.set(to, params.get(from)); };
  copy("state");
  copy("model", "model_id");
  copy("method");
  copy("q");
  copy("cursor");
  // Dates are days in the viewer's time zone; the API takes instants.
  if (params.get("from")) query.set("created_after", new Date(`${params.get("from")}T00:00:00`).toISOString());
  if (params.get("to")) {
    const end = new Date(`${params.get("to")}T00:00:00`);
    end.setDate(end.getDate() + 1);
    query.set("created_before", end.toISOString());
  }
  return `/jobs?${query}`;
}

export async function rerun(job) {
  const body = { model_id: job.model_id, recipe: job.recipe, name: job.name ? `${job.name} (re-run)` : undefined, max_attempts: job.max_attempts };
  if (job.eval) body.eval = job.eval;
  return api("/jobs", { method: "POST", json: body });
}

export async function cancel(job) {
  return api(`/jobs/${job.id}/cancel`, { method: "POST" });
}

export async function render(container, { params, signal }) {
  const models = await getJson("/models?limit=100");
  container.append(h("h2", {}, "Jobs"));
  const controls = filters(params, models.items);
  const message = h("p", { class: "error", role: "alert", id: "jobs-error" });
  const body = h("div", { id: "job-list" });
  const pager = h("div", { class: "row pager" });
  container.append(controls, message, body, pager);

  let page = { items: [] };
  const rows = new Map();
  const draw = () => {
    if (page.items.length === 0) {
      const filtered = [...params.keys()].some((k) => k !== "sort" && k !== "desc");
      body.replaceChildren(emptyState(filtered ? "No job matches these filters." : "No jobs yet: start one.",
        h("a", { class: "button", href: "#/new" }, "New job")));
      return;
    }
    body.replaceChildren(h("div", { class: "scroll" }, sortableTable({
      columns: columns(message, load),
      rows: page.items,
      sort: params.get("sort") ? { key: params.get("sort"), descending: params.get("desc") === "1" } : null,
      onSort: ({ key, descending }) => {
        params.set("sort", key);
        params.set("desc", descending ? "1" : "0");
        setParams(params);
      },
      rowAttrs: (job) => ({ dataset: { job: job.id, state: job.state } }),
    })));
  };
  // Loads overlap (the stream's opening starts one while the first is out) and an event can
  // land while a load is out: only the latest load is drawn, and a job an event reported
  // later than the load's snapshot keeps the event's state.
  let latestLoad = 0;
  const reported = new Map();
  const newer = (a, b) => (Date.parse(a.updated_at) >= Date.parse(b.updated_at) ? a : b);
  async function load() {
    const ticket = ++latestLoad;
    const fetched = await getJson(listPath(params));
    if (ticket !== latestLoad) return;
    fetched.items = fetched.items.map((job) => (reported.has(job.id) ? newer(reported.get(job.id), job) : job));
    page = fetched;
    // Only the jobs on the page can meet a later load: the map stays the page's size.
    const shown = new Set(page.items.map((job) => job.id));
    for (const id of reported.keys()) if (!shown.has(id)) reported.delete(id);
    rows.clear();
    for (const job of page.items) rows.set(job.id, job);
    draw();
    pager.replaceChildren(...[
      params.get("cursor") ? h("button", { type: "button", class: "secondary", onclick: () => { params.delete("cursor"); setParams(params); load(); } }, "Newest") : null,
      page.next_cursor ? h("button", { type: "button", class: "secondary", id: "next-page", onclick: () => { params.set("cursor", page.next_cursor); setParams(params); load(); } }, "Older jobs") : null,
    ].filter(Boolean));
  }
  await load();

  // A changed job replaces its row; a new one reloads the first page (it may match the filters).
  let reloading = null;
  follow("/events", (kind, data) => {
    if (kind === "resync") return load();
    if (kind !== "job") return;
    const job = parseJson(data);
    reported.set(job.id, job);
    const index = page.items.findIndex((j) => j.id === job.id);
    if (index >= 0) {
      page.items[index] = job;
      const row = body.querySelector(`tr[data-job="${job.id}"]`);
      if (row) {
        const fresh = sortableTable({ columns: columns(message, load), rows: [job], rowAttrs: (j) => ({ dataset: { job: j.id, state: j.state } }) }).querySelector("tbody tr");
        row.replaceWith(fresh);
      } else {
        draw();
      }
    } else if (!params.get("cursor") && !reloading) {
      reloading = setTimeout(() => { reloading = null; load(); }, 200);
    }
  }, signal, { onOpen: load });
}

function columns(message, reload) {
  const action = (label, run) => h("button", {
    type: "button",
    class: "secondary",
    onclick: async () => {
      const response = await run();
      message.textContent = response.ok ? "" : (await problemOf(response)).detail;
      if (response.ok) reload();
    },
  }, label);
  const f = (job) => (job.result ? figures(job) : null);
  return [
    // Columns are paired (name and method, state and progress, ratio and bits, date and owner)
    // so the whole table fits a 1400 px window.
    { key: "name", label: "Job", value: (j) => j.name || "", cell: (j) => h("span", { class: "stacked" }, h("a", { href: `#/jobs/${j.id}` }, j.name || j.id.slice(0, 8)), j.name === method(j.recipe) ? null : h("small", { class: "muted" }, method(j.recipe))) },
    { key: "model", label: "Model", value: (j) => j.model_name || "", cell: (j) => j.model_id ? h("a", { href: `#/models/${j.model_id}` }, j.model_name || j.model_id.slice(0, 8)) : "deleted" },
    { key: "state", label: "State", cell: (j) => h("span", { class: "stacked" }, stateBadge(j.state),
      ["queued", "running"].includes(j.state) ? progressBar(j) : j.error ? h("small", { class: "muted", title: j.error }, j.error.slice(0, 60)) : null) },
    { key: "size", label: "Size", numeric: true, value: (j) => f(j)?.bytesOut, cell: (j) => fmt.bytes(f(j)?.bytesOut) },
    { key: "ratio", label: "Ratio · bits", numeric: true, value: (j) => f(j)?.ratio, cell: (j) => (f(j) ? h("span", { class: "stacked" }, fmt.ratio(f(j).ratio), h("small", { class: "muted" }, fmt.bits(f(j).bitsPerWeight))) : "") },
    { key: "latency", label: "Latency", numeric: true, value: (j) => f(j)?.latencyMs, cell: (j) => fmt.ms(f(j)?.latencyMs) },
    { key: "accuracy", label: "Quality", numeric: true, value: (j) => f(j)?.quality?.compressed, cell: (j) => qualityCell(f(j)?.quality) },
    { key: "budget", label: "Budget", value: (j) => f(j)?.quality?.accepted, cell: (j) => budgetCell(f(j)?.quality) },
    { key: "date", label: "Submitted", value: (j) => j.created_at, cell: (j) => h("span", { class: "stacked" }, fmt.when(j.created_at), h("small", { class: "muted" }, j.created_by ? `by ${j.created_by}` : "")) },
    {
      key: "actions", label: "", sortable: false, cell: (j) => h("span", { class: "actions" },
        ["queued", "running"].includes(j.state) && !j.cancel_requested ? action("Cancel", () => cancel(j)) : null,
        j.model_id && !["queued", "running"].includes(j.state) ? action("Re-run", () => rerun(j)) : null),
    },
  ];
}

/// The metric by name, its value and its change against the original (`qualityChange`).
export function qualityCell(quality) {
  if (!quality) return "";
  const shown = qualityChange(quality);
  return h("span", { title: `${shown.label}: original ${shown.original}` }, `${quality.metric} ${shown.value} `, h("span", { class: shown.worse ? "worse" : "better" }, `(${shown.delta})`));
}

/// Whether the job kept within its evaluation budget (max_drop), when it had one.
function budgetCell(quality) {
  if (!quality || quality.accepted === undefined || quality.accepted === null) return "";
  return h("span", { class: quality.accepted ? "better" : "worse" }, quality.accepted ? "within" : "over");
}

function filters(params, models) {
  const select = (id, label, options, key) => {
    const input = h("select", { id, onchange: () => apply(key, input.value) },
      h("option", { value: "" }, `any ${label}`),
      options.map(([value, text]) => h("option", { value, selected: params.get(key) === value }, text)));
    return h("label", { class: "filter" }, h("span", { class: "sr-only" }, label), input);
  };
  const search = h("input", { id: "job-search", type: "search", placeholder: "search name, model or id", value: params.get("q") || "" });
  let timer = null;
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => apply("q", search.value.trim()), 250);
  });
  const date = (key, label) => {
    const input = h("input", { id: `job-${key}`, type: "date", value: params.get(key) || "", onchange: () => apply(key, input.value) });
    return h("label", { class: "filter" }, `${label} `, input);
  };
  function apply(key, value) {
    if (value) params.set(key, value);
    else params.delete(key);
    params.delete("cursor");
    location.hash = `#/jobs?${params}`;
  }
  return h("form", { class: "filters", role: "search", onsubmit: (e) => e.preventDefault() },
    h("label", { class: "filter" }, h("span", { class: "sr-only" }, "search"), search),
    select("job-state", "state", STATES.map((s) => [s, s]), "state"),
    select("job-model-filter", "model", models.map((m) => [m.id, m.name]), "model"),
    select("job-method", "method", METHODS.map((m) => [m, m]), "method"),
    date("from", "from"), date("to", "to"),
    [...params.keys()].length ? h("a", { href: "#/jobs", class: "button secondary" }, "Clear filters") : null);
}
