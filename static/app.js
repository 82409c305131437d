// The dashboard: sign-in, the model list with uploads, and the demo. Talks only to the public
// /api/v1.
// The token lives in localStorage; after a login link is used it is removed from the URL.

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "squeeze.token";

function token() {
  return localStorage.getItem(TOKEN_KEY);
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const response = await fetch(`/api/v1${path}`, { ...options, headers });
  if (response.status === 401 && token()) {
    signOut();
  }
  return response;
}

async function problemText(response) {
  try {
    const problem = await response.json();
    return problem.detail || problem.title || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

export function formatBytes(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

function formatCount(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} k`;
  return String(n);
}

function signOut() {
  localStorage.removeItem(TOKEN_KEY);
  show();
}

async function redeemLoginCode() {
  const match = location.hash.match(/login=([A-Za-z0-9_]+)/);
  if (!match) return;
  history.replaceState(null, "", location.pathname + location.search);
  const response = await fetch("/api/v1/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code: match[1] }),
  });
  if (response.ok) {
    localStorage.setItem(TOKEN_KEY, (await response.json()).token);
  } else {
    $("sign-in-error").textContent = await problemText(response);
  }
}

async function show() {
  const signedIn = Boolean(token());
  $("sign-in").hidden = signedIn;
  $("models").hidden = !signedIn;
  $("sign-out").hidden = !signedIn;
  $("who").textContent = "";
  if (!signedIn) return;
  const me = await api("/me");
  if (!me.ok) return;
  const identity = await me.json();
  $("who").textContent = `team ${identity.team}`;
  await loadModels();
}

async function loadModels() {
  const response = await api("/models?limit=100");
  if (!response.ok) return;
  const page = await response.json();
  const rows = $("model-rows");
  rows.replaceChildren();
  for (const model of page.items) {
    const tr = document.createElement("tr");
    const dtypes = Object.keys(model.dtypes).join(", ");
    const cells = [
      model.name,
      formatBytes(model.bytes),
      formatCount(model.parameters),
      dtypes,
      model.created_by || "",
      new Date(model.created_at).toLocaleString(),
    ];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    rows.append(tr);
  }
  $("empty").hidden = page.items.length > 0;
}

let currentUpload = null;

function upload(files) {
  const form = new FormData();
  for (const file of files) form.append("file", file, file.name);
  const xhr = new XMLHttpRequest();
  currentUpload = xhr;
  const started = performance.now();
  const total = [...files].reduce((sum, f) => sum + f.size, 0);
  $("progress").hidden = false;
  $("cancel-upload").hidden = false;
  $("upload-error").textContent = "";
  xhr.upload.onprogress = (event) => {
    const seconds = (performance.now() - started) / 1000;
    const speed = event.loaded / Math.max(seconds, 0.001);
    const left = speed > 0 ? (total - event.loaded) / speed : 0;
    $("progress-bar").value = event.loaded / (event.total || total || 1);
    $("progress-text").textContent =
      `${formatBytes(event.loaded)} of ${formatBytes(total)}, ${formatBytes(speed)}/s, ${left.toFixed(0)} s left`;
  };
  const done = () => {
    currentUpload = null;
    $("cancel-upload").hidden = true;
    $("progress").hidden = true;
  };
  xhr.onload = async () => {
    done();
    if (xhr.status === 201) {
      $("upload-form").reset();
      await loadModels();
    } else {
      let detail = `HTTP ${xhr.status}`;
      try {
        detail = JSON.parse(xhr.responseText).detail || detail;
      } catch {}
      $("upload-error").textContent = `Refused: ${detail}`;
    }
  };
  xhr.onerror = () => {
    done();
    $("upload-error").textContent = "The upload failed: the connection was lost.";
  };
  xhr.onabort = () => {
    done();
    $("upload-error").textContent = "Upload canceled.";
  };
  xhr.open("POST", "/api/v1/models");
  xhr.setRequestHeader("Authorization", `Bearer ${token()}`);
  xhr.send(form);
}

$("token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  localStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
  $("token-input").value = "";
  const me = await api("/me");
  $("sign-in-error").textContent = me.ok ? "" : "That token was not accepted.";
  await show();
});
$("sign-out").addEventListener("click", signOut);
$("upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const files = $("files").files;
  if (files.length > 0) upload(files);
});
$("cancel-upload").addEventListener("click", () => currentUpload && currentUpload.abort());

await redeemLoginCode();
await show();

const percent = (x) => (x === undefined || x === null ? "" : `${(x * 100).toFixed(2)} %`);

function renderDemo(rows, expected) {
  const body = $("demo-rows");
  body.replaceChildren();
  for (const row of rows) {
    const e = row.eval;
    const m = e ? e.compressed.metrics : {};
    const o = e ? e.original.metrics : {};
    const cells = [
      row.name || row.job_id,
      formatBytes(row.bytes_out),
      `${row.ratio.toFixed(2)}×`,
      e ? `${m.latency_ms.toFixed(3)} ms` : "",
      e ? e.compressed.kernel : "",
      e ? percent(m.accuracy) : row.eval_error || "",
      e ? `${((m.accuracy - o.accuracy) * 100).toFixed(2)} points` : "",
      e ? `${percent(m.accuracy_noise_1)} (original ${percent(o.accuracy_noise_1)})` : "",
      e && e.accepted !== undefined ? (e.accepted ? "yes" : "no") : "",
    ];
    const tr = document.createElement("tr");
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    body.append(tr);
  }
  $("demo-status").textContent =
    rows.length < expected ? `${rows.length} of ${expected} jobs done…` : `all ${expected} jobs done`;
}

async function loadDemo() {
  $("demo").disabled = true;
  $("demo-error").textContent = "";
  const response = await api("/demo", { method: "POST" });
  if (!response.ok) {
    $("demo-error").textContent = await problemText(response);
    $("demo").disabled = false;
    return;
  }
  const installed = await response.json();
  $("demo-results").hidden = false;
  loadModels();
  const expected = installed.jobs.length;
  // Until the dashboard's job views follow events, the demo table refreshes once a second.
  for (let i = 0; i < 300; i += 1) {
    const page = await (await api(`/compare?model_id=${installed.model.id}`)).json();
    renderDemo(page.items, expected);
    if (page.items.length >= expected) break;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

$("demo").addEventListener("click", loadDemo);
