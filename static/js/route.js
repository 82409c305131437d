// The URL is the state a link shares: `#/view/argument?filters`.

const VIEWS = ["models", "model", "new", "jobs", "job", "compare"];

/// The current route: view name, path argument and query parameters.
export function route() {
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const [name, argument] = (path || "models").split("/");
  // A collection's path with an id is the item's view: #/jobs/<id>, #/models/<id>.
  const view = name === "jobs" && argument ? "job" : name === "models" && argument ? "model" : name;
  return { view: VIEWS.includes(view) ? view : "models", argument, params: new URLSearchParams(query || "") };
}

/// Replaces the current route's query without a history entry or a redraw (sort order, page).
export function setParams(params) {
  const { view, argument } = route();
  const base = view === "job" ? `jobs/${argument}` : view === "model" ? `models/${argument}` : view;
  const query = params.toString();
  history.replaceState(null, "", `#/${base}${query ? `?${query}` : ""}`);
}
