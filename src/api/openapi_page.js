// Renders the OpenAPI document for people. Everything comes from /api/openapi.json.
const TOKEN_KEY = "squeeze.token";
const METHODS = ["get", "post", "put", "patch", "delete"];
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children.flat(Infinity)) {
    if (child == null) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
};
// Paragraphs and `code` spans: the only markup the descriptions use.
const inline = (text) => (text || "").split(/(`[^`]+`)/).map((part) =>
  part.startsWith("`") && part.endsWith("`") ? el("code", {}, part.slice(1, -1)) : part.replace(/\n/g, " "));
const prose = (text) => (text || "").split(/\n\n+/).map((para) => el("p", {}, inline(para)));
const anchor = (method, path) => `${method}-${path.replace(/[^a-zA-Z0-9]+/g, "-")}`;
const schemaLink = (ref) => {
  const name = ref.split("/").pop();
  return el("a", { href: `#schema-${name}` }, name);
};
function typeOf(schema) {
  if (!schema) return "any";
  if (schema.$ref) return schemaLink(schema.$ref);
  if (schema.oneOf) return el("span", {}, schema.oneOf.map((s, i) => [i ? " | " : "", typeOf(s)]));
  if (schema.allOf) return el("span", {}, schema.allOf.map((s, i) => [i ? " & " : "", typeOf(s)]));
  const types = [].concat(schema.type || "object");
  return el("span", {}, types.map((t, i) => [i ? " | " : "",
    t === "array" ? el("span", {}, typeOf(schema.items), "[]") :
    t === "object" && schema.properties ? "object" :
    t + (schema.format ? ` (${schema.format})` : "") + (schema.enum ? `: ${schema.enum.join(", ")}` : "")]));
}
function propertiesTable(schema) {
  const props = schema.properties || {};
  const required = new Set(schema.required || []);
  return el("table", {}, el("tr", {}, el("th", {}, "Field"), el("th", {}, "Type"), el("th", {}, "Description")),
    Object.entries(props).map(([name, prop]) => el("tr", {},
      el("td", {}, el("code", {}, name), required.has(name) ? "" : el("span", { class: "muted" }, " optional")),
      el("td", {}, typeOf(prop)),
      el("td", {}, inline(prop.description),
        prop.minimum != null || prop.maximum != null ? el("span", { class: "muted" }, ` [${prop.minimum ?? ""}..${prop.maximum ?? prop.exclusiveMaximum ?? ""}]`) : ""))));
}
function schemaBlock(name, schema) {
  const body = [el("h3", { id: `schema-${name}` }, name), ...prose(schema.description)];
  if (schema.properties) body.push(propertiesTable(schema));
  for (const variant of schema.oneOf || []) {
    body.push(el("p", {}, el("em", {}, variant.description || "variant"), ": ", typeOf(variant)));
    if (variant.properties) body.push(propertiesTable(variant));
  }
  if (schema.enum) body.push(el("p", {}, "One of: ", schema.enum.map((v, i) => [i ? ", " : "", el("code", {}, v)])));
  return el("section", { class: "schema" }, body);
}
function curlFor(method, path, op) {
  const parts = [`curl -sS`];
  if (method !== "get") parts.push(`-X ${method.toUpperCase()}`);
  const open = (op.security || []).some((s) => Object.keys(s).length === 0);
  if (!open) parts.push(`-H "Authorization: Bearer $SQUEEZE_TOKEN"`);
  const content = op.requestBody && Object.keys(op.requestBody.content || {})[0];
  if (content === "application/json") parts.push(`-H "Content-Type: application/json" -d @request.json`);
  if (content === "application/octet-stream") parts.push(`-H "Content-Type: application/octet-stream" --data-binary @model.safetensors`);
  parts.push(`"${location.origin}${path}"`);
  return parts.join(" ");
}
function tryIt(path, op) {
  const params = (op.parameters || []).filter((p) => p.in === "path" || p.in === "query");
  const inputs = params.map((p) => [p, el("input", { "aria-label": p.name, placeholder: p.name, size: 20 })]);
  const output = el("pre", { hidden: "" });
  const send = el("button", { type: "button" }, "Send");
  send.addEventListener("click", async () => {
    let url = path;
    const query = new URLSearchParams();
    for (const [p, input] of inputs) {
      if (p.in === "path") url = url.replace(`{${p.name}}`, encodeURIComponent(input.value));
      else if (input.value) query.set(p.name, input.value);
    }
    if ([...query].length) url += `?${query}`;
    const headers = {};
    const token = document.getElementById("token").value.trim();
    if (token) headers.Authorization = `Bearer ${token}`;
    output.hidden = false;
    try {
      const response = await fetch(url, { headers });
      const type = response.headers.get("content-type") || "";
      const text = type.includes("json") ? JSON.stringify(await response.json(), null, 2) : (await response.text()).slice(0, 4000);
      output.textContent = `${response.status} ${response.statusText}\n${text}`;
    } catch (err) {
      output.textContent = `request failed: ${err}`;
    }
  });
  return el("div", { class: "try" }, inputs.map(([, i]) => [i, " "]), send, output);
}
function operationBlock(method, path, op) {
  const body = [el("h3", { id: anchor(method, path) },
    el("span", { class: `method ${method}` }, method), el("span", { class: "path" }, path), el("span", {}, op.summary || ""))];
  body.push(...prose(op.description));
  const params = op.parameters || [];
  if (params.length) {
    body.push(el("h4", {}, "Parameters"), el("table", {},
      el("tr", {}, el("th", {}, "Name"), el("th", {}, "In"), el("th", {}, "Type"), el("th", {}, "Description")),
      params.map((p) => el("tr", {}, el("td", {}, el("code", {}, p.name), p.required ? "" : el("span", { class: "muted" }, " optional")),
        el("td", {}, p.in), el("td", {}, typeOf(p.schema)), el("td", {}, inline(p.description))))));
  }
  if (op.requestBody) {
    body.push(el("h4", {}, "Request body"), el("table", {},
      Object.entries(op.requestBody.content || {}).map(([type, c]) => el("tr", {}, el("td", {}, el("code", {}, type)), el("td", {}, typeOf(c.schema))))));
  }
  body.push(el("h4", {}, "Responses"), el("table", {},
    el("tr", {}, el("th", {}, "Status"), el("th", {}, "Description"), el("th", {}, "Body")),
    Object.entries(op.responses || {}).map(([status, r]) => el("tr", {}, el("td", {}, status), el("td", {}, inline(r.description)),
      el("td", {}, Object.entries(r.content || {}).map(([type, c]) => [el("code", {}, type), " ", typeOf(c.schema), el("br")]))))));
  body.push(el("h4", {}, "Example"), el("pre", {}, curlFor(method, path, op)));
  if (method === "get" && !path.endsWith("/events")) body.push(tryIt(path, op));
  return el("section", { class: "op" }, body);
}
async function main() {
  const tokenInput = document.getElementById("token");
  tokenInput.value = localStorage.getItem(TOKEN_KEY) || "";
  tokenInput.addEventListener("change", () => localStorage.setItem(TOKEN_KEY, tokenInput.value.trim()));
  const response = await fetch("/api/openapi.json");
  const doc = await response.json();
  document.getElementById("title").textContent = `${doc.info.title} ${doc.info.version} API reference`;
  document.getElementById("intro").append(...prose(doc.info.description));
  const toc = document.getElementById("toc");
  toc.replaceChildren();
  const content = document.getElementById("content");
  for (const tag of doc.tags || []) {
    const ops = [];
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const method of METHODS) {
        if (item[method] && (item[method].tags || []).includes(tag.name)) ops.push([method, path, item[method]]);
      }
    }
    if (!ops.length) continue;
    toc.append(el("h2", {}, tag.name), ...ops.map(([m, p]) => el("a", { href: `#${anchor(m, p)}` }, `${m.toUpperCase()} ${p}`)));
    content.append(el("h2", { id: `tag-${tag.name}` }, tag.name), ...prose(tag.description), ...ops.map(([m, p, op]) => operationBlock(m, p, op)));
  }
  const schemas = doc.components?.schemas || {};
  toc.append(el("h2", {}, "schemas"), ...Object.keys(schemas).map((n) => el("a", { href: `#schema-${n}` }, n)));
  content.append(el("h2", { id: "schemas" }, "Schemas"), ...Object.entries(schemas).map(([n, s]) => schemaBlock(n, s)));
  if (location.hash) document.getElementById(location.hash.slice(1))?.scrollIntoView();
}
main().catch((err) => {
  document.getElementById("content").append(el("p", { class: "error" }, `Could not load /api/openapi.json: ${err}`));
});
