// The URL is the state a link shares: `#/view/argument?filters`.

const VIEWS = ["models", "new", "jobs", "job", "compare"];

/// The current route: view name, path argument and query parameters.
export function route() {
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const [name, argument] = (path || "models").split("/");
  const view = name === "jobs" && argument ? "job" : name;
  return { view: VIEWS.includes(view) ? view : "models", argument, params: new URLSearchParams(query || "") };
}

/// Replaces the current route's query without a history entry or a redraw (sort order, page).
export function setParams(params) {
  const { view, argument } = route();
  const base = view === "job" ? `jobs/${argument}` : view;
  const query = params.toString();
  history.replaceState(null, "", `#/${base}${query ? `?${query}` : ""}`);
}
