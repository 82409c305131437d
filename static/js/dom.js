// A tiny element builder and the sortable table every view uses.

import * as fmt from "./format.js";

/// h("a", {href: "#/x", class: "y", onclick: f}, "text", child, ...)
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "class") element.className = value;
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (key in element && typeof value !== "string") element[key] = value;
    else element.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export const $ = (id) => document.getElementById(id);

/// A table whose headers sort it. `columns`: [{key, label, value(row) for sorting,
/// cell(row) -> Node | string, numeric}]; `sort`: {key, descending}; `onSort(sort)` is told of
/// a change (to keep it in the URL) before the table redraws itself.
export function sortableTable({ columns, rows, sort, onSort, rowAttrs, caption }) {
  const state = { ...(sort || {}) };
  const table = h("table", { class: "data" });
  if (caption) table.append(h("caption", {}, caption));
  const thead = h("thead");
  const tbody = h("tbody");
  table.append(thead, tbody);
  const draw = () => {
    const headRow = h("tr");
    for (const column of columns) {
      const sorted = state.key === column.key;
      const label = column.sortable === false
        ? column.label
        : h("button", {
            type: "button",
            class: "sort",
            onclick: () => {
              state.descending = sorted ? !state.descending : Boolean(column.numeric);
              state.key = column.key;
              if (onSort) onSort({ ...state });
              draw();
            },
          }, column.label, sorted ? (state.descending ? " ▼" : " ▲") : "");
      headRow.append(h("th", {
        scope: "col",
        class: column.numeric ? "num" : null,
        "aria-sort": sorted ? (state.descending ? "descending" : "ascending") : null,
      }, label));
    }
    thead.replaceChildren(headRow);
    const column = columns.find((c) => c.key === state.key);
    const ordered = [...rows];
    if (column) {
      const value = column.value || ((row) => row[column.key]);
      ordered.sort((a, b) => {
        const x = value(a);
        const y = value(b);
        const missing = (v) => v === null || v === undefined || Number.isNaN(v);
        if (missing(x) !== missing(y)) return missing(x) ? 1 : -1;
        // Text in reading order (layers.2 before layers.10), numbers by value.
        const order = typeof x === "string" && typeof y === "string"
          ? x.localeCompare(y, undefined, { numeric: true })
          : x < y ? -1 : x > y ? 1 : 0;
        return state.descending ? -order : order;
      });
    }
    tbody.replaceChildren(...ordered.map((row) => {
      const tr = h("tr", rowAttrs ? rowAttrs(row) : {});
      for (const c of columns) {
        const content = c.cell ? c.cell(row) : row[c.key];
        tr.append(h("td", { class: c.numeric ? "num" : null }, content ?? ""));
      }
      return tr;
    }));
  };
  draw();
  return table;
}

/// A labelled field with its own error line, for forms that explain problems in place.
export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  const error = h("span", { class: "field-error", id: `${id}-error`, role: "alert" });
  input.setAttribute("aria-describedby", `${id}-error`);
  const wrapper = h("div", { class: "field" }, h("label", { for: id }, label), input,
    hint ? h("small", {}, hint) : null, error);
  wrapper.setError = (message) => {
    error.textContent = message || "";
    if (message) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  };
  wrapper.input = input;
  return wrapper;
}

export function stateBadge(state) {
  return h("span", { class: `badge state-${state}` }, state);
}

export function emptyState(text, ...actions) {
  return h("div", { class: "empty" }, h("p", {}, text), ...actions);
}

/// A job's progress: a bar with the fraction done while queued or running, else nothing. While
/// it evaluates, the bar follows the evaluation's stage (sequences scored, then latency
/// measurements) with the time left.
export function progressBar(job) {
  const p = job.progress || {};
  const total = p.bytes_total || 0;
  let fraction = job.state === "succeeded" ? 1 : total ? p.bytes_done / total : 0;
  let label = `${Math.round(fraction * 100)} %${p.tensors_total ? ` · ${p.tensors_done}/${p.tensors_total} tensors` : ""}`;
  if (job.state === "running" && p.phase === "evaluating") {
    const e = p.evaluation;
    fraction = e && e.total ? e.done / e.total : 0;
    label = e
      ? `evaluating: ${e.stage === "latency" ? "latency" : "accuracy"} ${e.done}/${e.total} ${e.unit}${e.seconds_left === undefined || e.seconds_left === null ? "" : ` · about ${fmt.roughly(e.seconds_left)} left`}`
      : "evaluating";
  }
  return h("span", { class: "progress" },
    h("progress", { max: 1, value: fraction, "aria-label": `progress ${label}` }),
    h("span", { class: "progress-label" }, label));
}

/// A figure card: its label, its value ("–" when there is none) and an optional detail line.
export function statCard(label, value, detail) {
  return h("div", { class: "card stat" }, h("span", { class: "stat-label" }, label), h("strong", { class: "stat-value" }, value || "–"), detail ? h("span", { class: "muted" }, detail) : null);
}
