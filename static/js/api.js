// The dashboard's only way to the server: the public /api/v1 with the signed-in token, problem
// details as plain messages, and Server-Sent Events read over fetch (EventSource cannot send an
// Authorization header, and the token must never travel in a URL).

const TOKEN_KEY = "squeeze.token";

export function token() {
  return localStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  localStorage.setItem(TOKEN_KEY, value);
}

export function signOut() {
  localStorage.removeItem(TOKEN_KEY);
  window.dispatchEvent(new Event("squeeze:signed-out"));
}

export async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options = { ...options, body: JSON.stringify(options.json) };
  }
  const response = await fetch(`/api/v1${path}`, { ...options, headers });
  if (response.status === 401 && token()) signOut();
  return response;
}

/// The problem document of a failed response, or one made from its status.
export async function problemOf(response) {
  try {
    const problem = await response.json();
    return { ...problem, detail: problem.detail || problem.title || `HTTP ${response.status}` };
  } catch {
    return { status: response.status, detail: `HTTP ${response.status}` };
  }
}

/// Keys whose values are free text, never figures (a job may well be named "NaN").
const TEXT_KEYS = new Set(["name", "model_name", "error", "eval_error", "detail", "title", "scheme", "worst_tensor", "created_by", "code", "type", "state"]);
const NON_FINITE = { NaN: NaN, Infinity: Infinity, "-Infinity": -Infinity };

/// JSON as the API writes it: figures that are not finite numbers arrive as the strings
/// "NaN", "Infinity" and "-Infinity" (JSON has no such numbers) and become numbers again here.
export function parseJson(text) {
  return JSON.parse(text, (key, value) =>
    typeof value === "string" && value in NON_FINITE && !TEXT_KEYS.has(key) ? NON_FINITE[value] : value,
  );
}

/// GET and parse JSON; throws an Error carrying the server's message.
export async function getJson(path) {
  const response = await api(path);
  if (!response.ok) {
    const problem = await problemOf(response);
    throw Object.assign(new Error(problem.detail), { problem });
  }
  return parseJson(await response.text());
}

/// Redeems a one-time `#login=` code from the URL, then takes it out of the URL.
export async function redeemLoginCode() {
  const match = location.hash.match(/login=([A-Za-z0-9_]+)/);
  if (!match) return null;
  history.replaceState(null, "", location.pathname + location.search + "#/models");
  const response = await fetch("/api/v1/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code: match[1] }),
  });
  if (!response.ok) return (await problemOf(response)).detail;
  setToken((await response.json()).token);
  return null;
}

/// Follows an event stream until `signal` aborts or the server ends it, calling
/// `onEvent(kind, data)` per event. A dropped connection is reopened after a pause. `onOpen`
/// runs each time the stream is connected: the server is then subscribed, so a view that
/// reads its data there misses no change that happened before or while it was away.
export async function follow(path, onEvent, signal, { reconnect = true, onOpen = null } = {}) {
  let pause = 500;
  while (!signal.aborted) {
    try {
      const response = await api(path, { signal, headers: { Accept: "text/event-stream" } });
      if (!response.ok) return;
      if (onOpen) onOpen();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let kind = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) kind = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (data.length > 0) onEvent(kind, data.join("\n"));
        }
      }
      if (!reconnect) return;
      pause = 500;
    } catch (error) {
      if (signal.aborted) return;
    }
    await new Promise((resolve) => setTimeout(resolve, pause));
    pause = Math.min(pause * 2, 10000);
  }
}
