// The dashboard in headless Chromium (Debian's package) against a real `squeeze serve` with
// its private PostgreSQL: sign-in, upload, jobs from presets and sweeps followed live,
// job detail and download, the compare view's Pareto plot, refusals shown as the server said
// them. Screenshots of each view land in target/browser-screenshots.

import { after, before, test as nodeTest } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { safetensors, sha256, startServer } from "./server.mjs";

const shots = new URL("../../target/browser-screenshots/", import.meta.url).pathname;
const work = new URL("../../target/browser-work/", import.meta.url).pathname;
mkdirSync(shots, { recursive: true });
mkdirSync(work, { recursive: true });

let server;
let browser;
let page;
let token;
const errors = [];

const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });

/// A test that leaves a screenshot of the page as it was when it failed.
function test(name, body) {
  nodeTest(name, async () => {
    try {
      await body();
    } catch (error) {
      await shot(`failed-${name.slice(0, 40).replace(/[^a-z0-9]+/gi, "-")}`).catch(() => {});
      throw error;
    }
  });
}

async function api(path, options = {}) {
  const response = await fetch(`${server.base}/api/v1${path}`, {
    ...options,
    headers: { Authorization: `Bearer ${token}`, ...(options.headers || {}) },
  });
  const body = await response.text();
  return { status: response.status, body: body ? JSON.parse(body) : null };
}

async function uploadByApi(name, tensors) {
  const path = safetensors(join(work, `${name}.safetensors`), tensors);
  const response = await api(`/models?name=${name}`, {
    method: "POST",
    headers: { "Content-Type": "application/octet-stream" },
    body: readFileSync(path),
  });
  assert.equal(response.status, 201, JSON.stringify(response.body));
  return response.body;
}

before(async () => {
  server = await startServer();
  browser = await chromium.launch({
    executablePath: process.env.SQUEEZE_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  page = await context.newPage();
  page.setDefaultTimeout(20000);
  page.on("pageerror", (error) => errors.push(`page error: ${error.message}`));
  // Refusals the tests provoke are logged by Chromium as failed loads; anything else is a bug.
  page.on("console", (message) => {
    if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) errors.push(`console: ${message.text()}`);
  });
  page.on("dialog", (dialog) => dialog.accept());
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

test("the printed sign-in URL signs in, and the code leaves the URL", async () => {
  await page.goto(server.base);
  await page.locator("#token-form").waitFor();
  await shot("01-sign-in");
  await page.goto(server.loginUrl);
  await page.locator("#who").filter({ hasText: "team default" }).waitFor();
  assert.ok(!page.url().includes("login="), page.url());
  token = await page.evaluate(() => localStorage.getItem("squeeze.token"));
  assert.match(token, /^sqz_/);
  await page.locator(".empty").filter({ hasText: "No models yet" }).waitFor();
});

test("a model uploaded through the file input is listed; a pickle file is refused with the server's words", async () => {
  const path = safetensors(join(work, "tiny.safetensors"), [["layers.0.weight", [64, 128]], ["layers.1.weight", [64, 128]], ["norm.weight", [128]]]);
  await page.setInputFiles("#files", path);
  await page.fill("#upload-name", "tiny");
  await page.click("#upload-submit");
  const row = page.locator("#model-list tbody tr").filter({ hasText: "tiny" });
  await row.waitFor();
  assert.match(await row.innerText(), /64\.\d KiB/);
  assert.match(await row.innerText(), /16\.5 k/);

  // A drop onto the zone picks files as the picker does.
  const dropped = await page.evaluateHandle(() => {
    const transfer = new DataTransfer();
    transfer.items.add(new File([new Uint8Array(16)], "shard-00001.safetensors"));
    transfer.items.add(new File(["{}"], "config.json"));
    return transfer;
  });
  await page.dispatchEvent("#drop-zone", "drop", { dataTransfer: dropped });
  assert.match(await page.locator("#chosen").innerText(), /2 files: shard-00001\.safetensors \(16 B\), config\.json/);

  const pickle = join(work, "pytorch_model.bin");
  writeFileSync(pickle, Buffer.concat([Buffer.from([0x80, 0x02]), Buffer.from("c__builtin__\nset\nq\x00)\x81q\x01.")]));
  await page.setInputFiles("#files", pickle);
  await page.click("#upload-submit");
  const refused = page.locator("#upload-error");
  await refused.filter({ hasText: "Refused" }).waitFor();
  assert.match(await refused.innerText(), /pickle/i);
  await shot("02-models");
  assert.equal(await page.locator("#model-list tbody tr").count(), 1, "the refused file is not listed");
});

test("a job from a preset succeeds without a reload and its row shows the figures; its page downloads the artifact", async () => {
  await page.evaluate(() => { window.sameDocument = true; });
  await page.click("nav >> text=New job");
  await page.locator("#job-form").waitFor();
  await page.check("#preset-list input[value=int8]");
  await shot("04-new-job");
  await page.click("#job-submit");
  await page.waitForURL(/#\/jobs\?model=/);
  const first = page.locator("#job-list tbody tr").first();
  const row = page.locator(`#job-list tr[data-job="${await first.getAttribute("data-job")}"]`);
  await row.locator(".state-succeeded").waitFor({ timeout: 60000 });
  // A finished row trades its progress bar for the figures.
  assert.equal(await row.locator("progress").count(), 0);
  assert.match(await row.innerText(), /\d+(\.\d+)? (KiB|MiB)[\s\S]*\d\.\d\d×/);

  // A job submitted while the list is open appears and finishes through the event stream.
  const models = (await api("/models")).body.items;
  const submitted = await api("/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model_id: models[0].id, preset: "prune-50", name: "live" }) });
  assert.equal(submitted.status, 202);
  const live = page.locator(`#job-list tr[data-job="${submitted.body.id}"]`);
  await live.locator(".state-succeeded").waitFor({ timeout: 60000 });
  assert.equal(await page.evaluate(() => window.sameDocument), true, "the page never reloaded");
  await shot("03-jobs");

  await row.locator("a").first().click();
  await page.locator("#job-cards .stat").first().waitFor();
  const cards = await page.locator("#job-cards").innerText();
  assert.match(cards, /RATIO/i);
  assert.match(cards, /Bits per weight/i);
  // The tensor table arrives with its own request, after the cards.
  await page.locator("#job-tensors tbody tr").nth(1).waitFor();
  assert.match(await page.locator("#recipe-json").innerText(), /"quantize"/);
  await shot("05-job");
  // The weight file keeps the uploaded file's name.
  const fileRow = page.locator("#job-files tbody tr").filter({ hasText: "tiny.safetensors" });
  const listedSha = (await fileRow.locator("code.hash").innerText()).trim();
  const [download] = await Promise.all([page.waitForEvent("download"), fileRow.locator("button.download").click()]);
  const saved = join(work, "downloaded.safetensors");
  await download.saveAs(saved);
  assert.equal(download.suggestedFilename(), "tiny.safetensors");
  assert.equal(sha256(readFileSync(saved)), listedSha, "the downloaded bytes are the listed file");
});

test("a refused recipe shows the server's message next to the field; bad values are flagged as typed", async () => {
  await page.goto(`${server.base}/#/new?mode=recipe`);
  await page.locator("#stage-0-bits").waitFor();
  await page.fill("#stage-0-bits", "12");
  assert.match(await page.locator("#stage-0-bits-error").innerText(), /between 2 and 8/);
  assert.equal(await page.locator("#stage-0-bits").getAttribute("aria-invalid"), "true");
  await page.fill("#stage-0-bits", "4");
  assert.equal(await page.locator("#stage-0-bits-error").innerText(), "");
  // Rows of 128: a group of 10 divides them no more than any group from 10 down would.
  await page.fill("#stage-0-group_size", "10");
  await page.click("#job-submit");
  const message = page.locator("#stage-0-group_size-error");
  await message.filter({ hasText: "does not divide" }).waitFor();
  assert.match(await message.innerText(), /group_size 10 does not divide the row length 128/);
  await shot("04-new-job-refused");
});

test("a 576-wide model takes w4-g128 and Q4_K_M, and the job page lists each tensor's fallback", async () => {
  // SmolLM2's shapes, a few rows tall: rows of 576 (attention, gate, up) and of 1536 (down).
  const model = await uploadByApi("wide576", [
    ["model.layers.0.self_attn.v_proj.weight", [64, 576]],
    ["model.layers.0.mlp.up_proj.weight", [96, 576]],
    ["model.layers.0.mlp.down_proj.weight", [64, 1536]],
    ["model.layers.10.mlp.up_proj.weight", [32, 576]],
    ["model.layers.2.mlp.up_proj.weight", [32, 576]],
  ]);
  for (const [preset, why] of [["w4-g128", /not a multiple of 128: groups of 96/], ["q4_k_m", /not whole Q4_K blocks of 256: Q5_0 instead/]]) {
    const submitted = await api("/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model_id: model.id, preset }) });
    assert.equal(submitted.status, 202, JSON.stringify(submitted.body));
    await page.goto(`${server.base}/#/jobs/${submitted.body.id}`);
    const notes = page.locator("#tensor-notes");
    await notes.waitFor({ timeout: 60000 });
    assert.match(await notes.innerText(), why);
    assert.match(await notes.locator("summary").innerText(), /tensors? differs? from the recipe/);
    // Tensors in reading order: layers.2 before layers.10.
    const listed = await notes.innerText();
    assert.ok(listed.indexOf("layers.2.") < listed.indexOf("layers.10."), listed);
    // Where the bytes are: compressed against kept.
    assert.match(await page.locator("#bytes-split").innerText(), /5 compressed tensors: .* → .*0 kept as they were/s);
    await shot(`09-fallbacks-${preset}`);
  }
});

test("three jobs of one sweep draw three points on the compare view with the frontier marked", async () => {
  const model = await uploadByApi("sweep", [["a.weight", [32, 256]], ["b.weight", [32, 256]]]);
  await page.goto(`${server.base}/#/new?mode=recipe&model=${model.id}`);
  await page.locator("#stage-0-granularity").selectOption("channel");
  await page.locator("#job-format").selectOption("compressed-tensors");
  await page.locator("#sweep-param").selectOption("0.bits");
  await page.fill("#sweep-values", "2, 4, 8");
  assert.equal(await page.locator("#job-submit").innerText(), "Submit 3 jobs");
  await page.click("#job-submit");
  await page.waitForURL(/#\/jobs\?model=/);
  await page.goto(`${server.base}/#/compare?model=${model.id}`);
  await page.waitForFunction(() => document.querySelectorAll("#pareto g.frontier circle, #pareto g.dominated circle").length === 3, null, { timeout: 60000 });
  assert.ok(await page.locator("#pareto g.frontier circle").count() >= 1);
  assert.equal(await page.locator("#pareto g.frontier-line path").count(), 1, "the frontier is joined");
  assert.equal(await page.locator("#pareto g.original path").count(), 1, "the original is marked");
  const boxes = page.locator("#compare-list input[type=checkbox]");
  await boxes.nth(0).check();
  await boxes.nth(2).check();
  await page.locator("#side-by-side table").waitFor();
  await page.waitForFunction(() => document.querySelectorAll("#heatmap g.heat-cell rect").length === 4);
  await page.check("#differences-only");
  assert.ok(!(await page.locator("#side-by-side").innerText()).includes("Format"), "equal rows are hidden");
  assert.match(page.url(), /select=/);
  await shot("06-compare");
  await page.locator("#pareto g.frontier circle").first().click();
  await page.waitForURL(/#\/jobs\/[0-9a-f-]{36}$/);
});

test("on a perplexity axis (lower is better) the frontier joins the best jobs and the axis names the metric", async () => {
  // A tiny random Llama (tests/python/tiny_llama.py) and a token set, evaluated by each job.
  const folder = join(work, "tiny-llama");
  const python = new URL("../../target/pyvenv/bin/python", import.meta.url).pathname;
  const made = spawnSync(python, [new URL("../python/tiny_llama.py", import.meta.url).pathname, folder]);
  assert.equal(made.status, 0, String(made.stderr));
  const form = new FormData();
  for (const name of ["model.safetensors", "config.json", "tokenizer.json", "generation_config.json"]) {
    form.append("file", new Blob([readFileSync(join(folder, name))]), name);
  }
  form.append("name", "tiny-llama");
  const uploaded = await api("/models", { method: "POST", body: form });
  assert.equal(uploaded.status, 201, JSON.stringify(uploaded.body));
  let seed = 7;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2147483648) % 128;
  const lines = Array.from({ length: 4 }, () => JSON.stringify({ tokens: Array.from({ length: 40 }, next) })).join("\n");
  const set = await api(`/datasets?name=tokens&model_id=${uploaded.body.id}`, { method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: lines });
  assert.equal(set.status, 201, JSON.stringify(set.body));
  // Three sizes; a random model's perplexities fall in any order, and the frontier must
  // follow them the right way whatever it is.
  const ids = {};
  for (const [name, stage] of [
    ["int8", { quantize: { scheme: "int", bits: 8 } }],
    ["int2", { quantize: { scheme: "int", bits: 2 } }],
    ["int4", { quantize: { scheme: "int", bits: 4 } }],
  ]) {
    const job = await api("/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model_id: uploaded.body.id, name, recipe: { stages: [stage] }, eval: { dataset_id: set.body.id } }) });
    assert.equal(job.status, 202, JSON.stringify(job.body));
    ids[name] = job.body.id;
  }
  await page.goto(`${server.base}/#/compare?model=${uploaded.body.id}`);
  await page.waitForFunction(() => document.querySelectorAll("#pareto g.frontier circle, #pareto g.dominated circle").length === 3, null, { timeout: 120000 });
  assert.equal(await page.locator("#compare-y").inputValue(), "metric");
  assert.match(await page.locator("#compare-y option:checked").innerText(), /perplexity/);
  assert.match(await page.locator("#pareto").textContent(), /↓ perplexity .*lower is better/);
  const compare = await api(`/compare?model_id=${uploaded.body.id}`);
  const perplexity = Object.fromEntries(compare.body.items.map((r) => [r.name, r.eval.compressed.metrics.perplexity]));
  // The job of lowest perplexity is on the frontier; no frontier job is beaten by one that is
  // both no larger and of lower perplexity (an inverted frontier keeps such jobs).
  const onFrontier = await page.locator("#pareto g.frontier circle").evaluateAll((cs) => cs.map((c) => c.getAttribute("data-job")));
  const best = Object.entries(perplexity).sort((a, b) => a[1] - b[1])[0][0];
  assert.ok(onFrontier.includes(ids[best]), `${best} (${JSON.stringify(perplexity)}) is on the frontier`);
  const byId = Object.fromEntries(compare.body.items.map((r) => [r.job_id, r]));
  for (const id of onFrontier) {
    for (const other of compare.body.items) {
      const dominates = other.bytes_out <= byId[id].bytes_out && other.eval.compressed.metrics.perplexity < byId[id].eval.compressed.metrics.perplexity;
      assert.ok(!dominates, `${other.name} beats frontier job ${byId[id].name}`);
    }
  }
  // The method names the format it wrote.
  assert.match(await page.locator("#compare-list").innerText(), /quantize int 8 → compressed-tensors/);
  await page.check("#compare-log");
  await page.waitForFunction(() => document.querySelectorAll("#pareto g.frontier circle").length >= 1);
  assert.match(page.url(), /log=1/);
  await shot("10-compare-perplexity");
  // The jobs table names the metric and gives its change relative to the original.
  await page.goto(`${server.base}/#/jobs?model=${uploaded.body.id}`);
  await page.locator("#job-list tbody tr").nth(2).waitFor();
  assert.match(await page.locator("#job-list").innerText(), /perplexity \d+(\.\d+)? \([+−]\d/);
  // The job page gives the whole time and each phase's, and this job's own peak memory.
  await page.goto(`${server.base}/#/jobs/${ids.int8}`);
  const wall = page.locator("#wall-time");
  await wall.waitFor();
  assert.match(await wall.innerText(), /in all[\s\S]*compression .* · evaluation .* \(accuracy .*, latency .*\)/);
});

/// Uploads a random Llama folder written by tests/python/tiny_llama.py with `args`.
async function uploadLlama(name, args = []) {
  const folder = join(work, name);
  const python = new URL("../../target/pyvenv/bin/python", import.meta.url).pathname;
  const made = spawnSync(python, [new URL("../python/tiny_llama.py", import.meta.url).pathname, folder, ...args]);
  assert.equal(made.status, 0, String(made.stderr));
  const form = new FormData();
  for (const file of ["model.safetensors", "config.json", "tokenizer.json", "generation_config.json"]) {
    form.append("file", new Blob([readFileSync(join(folder, file))]), file);
  }
  form.append("name", name);
  const uploaded = await api("/models", { method: "POST", body: form });
  assert.equal(uploaded.status, 201, JSON.stringify(uploaded.body));
  return uploaded.body;
}

test("evaluation from the dashboard: sets that fit, the metric list, a text set uploaded, progress while it evaluates, every figure after, the model page", async () => {
  // Large enough that the evaluation runs for seconds, so its progress can be watched.
  const llama = await uploadLlama("llama-eval", ["--hidden", "512", "--intermediate", "1024", "--layers", "6", "--heads", "8", "--kv-heads", "4"]);
  const digits = await api("/datasets?name=digits-images", { method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: readFileSync(new URL("../../static/demo/digits-test.safetensors", import.meta.url)) });
  assert.equal(digits.status, 201, JSON.stringify(digits.body));
  await page.goto(`${server.base}/#/new?model=${llama.id}`);
  // A set of the wrong kind is offered disabled, with the reason, instead of four 422s.
  const wrong = page.locator(`#job-dataset option[value="${digits.body.id}"]`);
  await wrong.waitFor({ state: "attached" });
  assert.equal(await wrong.isDisabled(), true);
  assert.match(await wrong.innerText(), /does not fit/);
  assert.match(await page.locator("#evaluation-about").innerText(), /A llama model: it takes token sequences/);
  // The metric is a list of what the architecture reports, and the budget field says how it reads.
  const metrics = await page.locator("#job-metric option").allInnerTexts();
  assert.deepEqual(metrics, ["Perplexity (default)", "KL divergence, mean", "KL divergence, 99th percentile", "Top-1 agreement with the original"]);
  const budgetLabel = page.locator("label[for=job-max-drop]");
  assert.match(await budgetLabel.innerText(), /largest relative increase of perplexity/);
  await page.locator("#job-metric").selectOption("kl_mean");
  assert.match(await budgetLabel.innerText(), /largest increase of kl_mean/);
  await page.locator("#job-metric").selectOption("");
  // A text file, tokenized by the server with the model's tokenizer into 256-token sequences.
  await page.locator("#dataset-upload-box summary").click();
  const words = "the quick brown fox jumps over the lazy dog while compressed models keep their accuracy ";
  await page.locator("#dataset-file").setInputFiles({ name: "corpus.txt", mimeType: "text/plain", buffer: Buffer.from(words.repeat(50)) });
  await page.fill("#dataset-window", "256");
  await page.click("#dataset-upload");
  await page.locator("#dataset-status").filter({ hasText: "Stored" }).waitFor();
  const selected = await page.locator("#job-dataset option:checked").innerText();
  assert.match(selected, /^corpus \(\d+ rows\)$/);
  const rows = Number(selected.match(/\((\d+) rows/)[1]);
  assert.ok(rows >= 8, selected);
  await page.locator("#preset-list input[value=int8]").check();
  await page.fill("#job-max-drop", "0.5");
  await page.click("#job-submit");
  await page.waitForURL(/#\/jobs\?model=/);
  const jobs = await api(`/jobs?model_id=${llama.id}`);
  const job = jobs.body.items[0];
  assert.equal(job.eval.metric, undefined, "the default metric is left to the server");
  assert.equal(job.eval.max_drop, 0.5);
  await page.goto(`${server.base}/#/jobs/${job.id}`);
  // While it evaluates: the stage, sequences done of the total, and the time left.
  await page.waitForFunction(() => /evaluating: accuracy \d+\/\d+ sequences · about \d+ (s|min) left/.test(document.querySelector("#job-progress")?.textContent || ""), null, { timeout: 120000 });
  assert.match(await page.locator("#job-progress").innerText(), new RegExp(`/${Math.min(rows, 64)} sequences`));
  // The artifact's size is known once compression is done, before the evaluation ends.
  assert.match(await page.locator("#job-cards").innerText(), /RATIO\s+\d+\.\d\d×/i);
  await shot("11-job-evaluating");
  const figuresTable = page.locator("#evaluation-figures");
  await figuresTable.waitFor({ timeout: 180000 });
  const shown = await figuresTable.innerText();
  for (const label of [/Perplexity ↓ \(budget metric\)/, /KL divergence, mean ↓/, /KL divergence, 99th percentile ↓/, /Top-1 agreement with the original ↑/, /Prompt tokens per second ↑\s+\d+ tok\/s\s+\d+ tok\/s/]) {
    assert.match(shown, label);
  }
  const latency = await page.locator("#evaluation-latency").innerText();
  assert.match(latency, /one token after a 16-token prompt/);
  assert.match(latency, /\d\.\d\d× \(\d\.\d\d–\d\.\d\d, \d+ rounds\)/);
  assert.match(await page.locator("#evaluation-set").innerText(), /On the set “corpus” \(\d+ sequences\) · budget: relative increase of perplexity at most 0\.5/);
  assert.match(await page.locator("#evaluation-runtime").innerText(), /candle .* threads · kernel: original dense, compressed dense/);
  // compressed-tensors int8 runs dense here: no speed-up can be expected, and the page says so.
  assert.match(await page.locator("#latency-card").innerText(), /no speed-up expected/);
  await shot("12-job-evaluated");

  // The compare view offers every figure as an axis, with its direction, and lists the original.
  await page.goto(`${server.base}/#/compare?model=${llama.id}&y=figure:kl_mean&log=1`);
  await page.locator("#pareto g.frontier circle").first().waitFor();
  // The original's KL is 0: a log axis leaves it off and says so, rather than going linear.
  assert.match(await page.locator("#pareto figcaption").innerText(), /the original \(0 on this axis\) is off the log scale/);
  assert.doesNotMatch(await page.locator("#pareto").textContent(), /\de\+\d/, "ticks read 150, not 1.5e+2");
  // Log ticks in plain numbers too: 0.01, not SI's "10m".
  const ticks = await page.locator("#pareto svg g[aria-label='y-axis tick label'] text").allTextContents();
  assert.ok(ticks.length > 0 && ticks.every((t) => /^[\d.]*$/.test(t)), ticks.join(" "));
  assert.equal(await page.locator("#compare-y option:checked").innerText(), "KL divergence, mean");
  assert.match(await page.locator("#pareto").textContent(), /↓ KL divergence, mean \(nats\) \(lower is better\)/);
  assert.match(await page.locator("#compare-original").innerText(), /the original/);
  const axes = await page.locator("#compare-y option").allInnerTexts();
  for (const axis of ["Top-1 agreement with the original", "Prompt tokens per second", "Speed-up"]) assert.ok(axes.includes(axis), axes.join(", "));

  // The model page: files, config, architecture, tensors, its jobs.
  await page.goto(`${server.base}/#/models/${llama.id}`);
  await page.locator("#model-tensors tbody tr").first().waitFor();
  assert.match(await page.locator("#model-files").innerText(), /tokenizer\.json/);
  assert.match(await page.locator("#model-config summary").innerText(), /model_type llama · hidden_size 512/);
  assert.match(await page.locator("#model-cards").innerText(), /ARCHITECTURE\s+llama/i);
  assert.match(await page.locator("#model-evaluation").innerText(), /Sets that fit: corpus/);
  assert.match(await page.locator("#model-jobs").innerText(), /int8/);
  const tensors = await page.locator("#model-tensors caption").innerText();
  await page.fill("#tensor-filter", "layers.1.");
  await page.waitForFunction((before) => document.querySelector("#model-tensors caption").textContent !== before, tensors);
  const names = await page.locator("#model-tensors tbody td:first-child").allInnerTexts();
  assert.ok(names.length > 0 && names.every((n) => n.includes("layers.1.")), names.join(", "));
  await shot("13-model");

  // At 1400 px the jobs table fits its column: nothing cut off at the right.
  await page.setViewportSize({ width: 1400, height: 900 });
  await page.goto(`${server.base}/#/jobs`);
  await page.locator("#job-list tbody tr").first().waitFor();
  const overflow = await page.evaluate(() => {
    const holder = document.querySelector("#job-list .scroll");
    return holder.scrollWidth - holder.clientWidth;
  });
  assert.ok(overflow <= 0, `the jobs table is ${overflow} px wider than its column`);
  await shot("14-jobs-1400");
  await page.setViewportSize({ width: 1280, height: 900 });
});

test("job filters live in the URL, so a link shows the same list", async () => {
  await page.goto(`${server.base}/#/jobs`);
  await page.locator("#job-state").selectOption("succeeded");
  await page.waitForURL(/state=succeeded/);
  await page.fill("#job-search", "live");
  await page.waitForURL(/q=live/);
  await page.locator("#job-list tbody tr").first().waitFor();
  assert.equal(await page.locator("#job-list tbody tr").count(), 1);
  const link = page.url();
  await page.goto("about:blank");
  await page.goto(link);
  await page.locator("#job-list tbody tr").first().waitFor();
  assert.equal(await page.locator("#job-list tbody tr").count(), 1);
  assert.equal(await page.locator("#job-search").inputValue(), "live");
  await page.goto(`${server.base}/#/jobs?method=low_rank`);
  await page.locator(".empty").filter({ hasText: "No job matches" }).waitFor();
  await page.setViewportSize({ width: 420, height: 900 });
  await page.goto(`${server.base}/#/jobs`);
  await page.locator("#job-list tbody tr").first().waitFor();
  await shot("07-jobs-narrow");
  await page.setViewportSize({ width: 1280, height: 900 });
});

test("the demo's evaluated jobs plot accuracy against size with latency as colour", async () => {
  const demo = await api("/demo", { method: "POST" });
  assert.equal(demo.status, 201, JSON.stringify(demo.body));
  await page.goto(`${server.base}/#/compare?model=${demo.body.model.id}`);
  await page.waitForFunction((n) => document.querySelectorAll("#pareto g.frontier circle, #pareto g.dominated circle").length === n, demo.body.jobs.length, { timeout: 120000 });
  assert.equal(await page.locator("#compare-y").inputValue(), "metric");
  assert.match(await page.locator("#pareto").innerText(), /latency/);
  await shot("08-compare-demo");
});

test("sign-out forgets the token", async () => {
  await page.click("#sign-out");
  await page.locator("#token-form").waitFor();
  assert.equal(await page.evaluate(() => localStorage.getItem("squeeze.token")), null);
  assert.deepEqual(errors, [], "no script errors in the page");
});
