// Drives the dashboard on a real model as a user would and keeps what they see: a private
// `squeeze serve`, the model folder uploaded, a raw-text evaluation set tokenized by the model's
// own tokenizer (the README's text), a few presets evaluated against it, and Chromium
// screenshots of the job page while it evaluates and after, the compare view and the model
// page, in target/browser-screenshots/real-*.png. Prints every job's figures.
//
//   node scripts/real-model-screenshots.mjs MODEL_DIR [PRESET...]
//     MODEL_DIR: a Hugging Face folder with config.json, tokenizer.json and safetensors
//     (../shared/checks/real-models prints SmolLM2-135M's); default presets q8_0 q4_k_m int8 w4-g128
//   Needs target/debug/squeeze (or SQUEEZE_BIN) and Debian's chromium (or SQUEEZE_CHROMIUM).
// Not part of the test suite: a SmolLM2 evaluation takes minutes on a 2-core machine.

import { mkdirSync, readdirSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { chromium } from "playwright-core";
import { startServer } from "../tests/browser/server.mjs";

const [folder, ...asked] = process.argv.slice(2);
if (!folder) {
  console.error("usage: node scripts/real-model-screenshots.mjs MODEL_DIR [PRESET...]");
  process.exit(2);
}
const presets = asked.length ? asked : ["q8_0", "q4_k_m", "int8", "w4-g128"];
const shots = new URL("../target/browser-screenshots/", import.meta.url).pathname;
mkdirSync(shots, { recursive: true });

const server = await startServer();
let token = null;
async function api(path, options = {}) {
  const response = await fetch(`${server.base}/api/v1${path}`, { ...options, headers: { Authorization: `Bearer ${token}`, ...(options.headers || {}) } });
  const text = await response.text();
  if (!response.ok) throw new Error(`${options.method || "GET"} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

const browser = await chromium.launch({ executablePath: process.env.SQUEEZE_CHROMIUM || "/usr/bin/chromium", headless: true, args: ["--no-sandbox", "--disable-gpu"] });
try {
  const page = await (await browser.newContext({ viewport: { width: 1400, height: 900 } })).newPage();
  page.setDefaultTimeout(60000);
  const shot = (name) => page.screenshot({ path: join(shots, `real-${name}.png`), fullPage: true });
  await page.goto(server.loginUrl);
  await page.waitForFunction(() => localStorage.getItem("squeeze.token"));
  token = await page.evaluate(() => localStorage.getItem("squeeze.token"));

  const form = new FormData();
  form.append("name", basename(folder));
  for (const name of readdirSync(folder).filter((n) => /\.(json|safetensors)$/.test(n))) {
    form.append("file", new Blob([readFileSync(join(folder, name))]), name);
  }
  const model = await api("/models", { method: "POST", body: form });
  console.log(`uploaded ${model.name}: ${model.tensor_count} tensors, ${(model.bytes / 2 ** 20).toFixed(1)} MiB`);
  // Plain English prose: the README, cut to about 6,000 tokens (47 sequences of 128).
  const text = readFileSync(new URL("../README.md", import.meta.url), "utf8").slice(0, 24000);
  const set = await api(`/datasets?name=readme-128&model_id=${model.id}&format=text&window=128`, { method: "POST", body: text });
  console.log(`set ${set.name}: ${set.stats.rows} sequences, ${set.stats.tokens} tokens${set.stats.warnings ? `; ${set.stats.warnings.join("; ")}` : ""}`);
  const jobs = [];
  for (const preset of presets) {
    jobs.push(await api("/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model_id: model.id, preset, name: preset, eval: { dataset_id: set.id, max_drop: 0.1 } }) }));
  }
  await page.goto(`${server.base}/#/jobs/${jobs[0].id}`);
  await page.waitForFunction(() => /evaluating: accuracy \d+\/\d+ sequences · about/.test(document.querySelector("#job-progress")?.textContent || ""), null, { timeout: 600000 });
  await page.waitForTimeout(3000);
  await shot("job-evaluating");
  await page.goto(`${server.base}/#/jobs`);
  await page.waitForFunction(() => /evaluating/.test(document.querySelector("#job-list")?.textContent || ""));
  await shot("jobs-evaluating");
  for (const job of jobs) {
    for (;;) {
      const current = await api(`/jobs/${job.id}`);
      if (["succeeded", "failed", "canceled"].includes(current.state)) break;
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
  await page.goto(`${server.base}/#/jobs/${jobs[0].id}`);
  await page.locator("#evaluation-figures").waitFor();
  await shot("job-evaluated");
  await page.goto(`${server.base}/#/jobs/${jobs[jobs.length - 2].id}`);
  await page.locator("#evaluation-figures").waitFor();
  await shot("job-evaluated-dense");
  await page.goto(`${server.base}/#/compare?model=${model.id}&select=${jobs.map((j) => j.id).join(",")}`);
  await page.locator("#pareto g.frontier circle").first().waitFor();
  await page.locator("#heatmap g.heat-cell").first().waitFor();
  await shot("compare");
  await page.goto(`${server.base}/#/compare?model=${model.id}&y=figure:kl_mean&log=1`);
  await page.locator("#pareto g.frontier circle").first().waitFor();
  await shot("compare-kl");
  await page.goto(`${server.base}/#/jobs`);
  await page.locator("#job-list tbody tr").first().waitFor();
  await shot("jobs");
  await page.goto(`${server.base}/#/models/${model.id}`);
  await page.locator("#model-tensors tbody tr").first().waitFor();
  await shot("model");

  const rows = (await api(`/compare?model_id=${model.id}`)).items;
  const pad = (s, n) => String(s).padEnd(n);
  console.log(`${pad("job", 10)}${pad("format", 20)}${pad("MiB", 8)}${pad("ratio", 7)}${pad("ppl", 9)}${pad("Δppl", 8)}${pad("KL mean", 9)}${pad("KL p99", 9)}${pad("top-1", 8)}${pad("tok/s", 8)}speed-up (p10–p90)`);
  const first = rows.find((r) => r.eval);
  if (first) console.log(`${pad("original", 10)}${pad("safetensors F32", 20)}${pad((first.bytes_in / 2 ** 20).toFixed(1), 8)}${pad("1.00", 7)}${pad(first.eval.original.metrics.perplexity.toFixed(3), 9)}${pad("", 8)}${pad("", 9)}${pad("", 9)}${pad("", 8)}${pad(first.eval.original.metrics.prompt_tokens_per_s.toFixed(0), 8)}`);
  for (const r of rows) {
    const e = r.eval;
    if (!e) {
      console.log(`${pad(r.name, 10)}not evaluated: ${r.eval_error || ""}`);
      continue;
    }
    const m = e.compressed.metrics;
    const s = e.speedups[0];
    console.log(`${pad(r.name, 10)}${pad(r.format, 20)}${pad((r.bytes_out / 2 ** 20).toFixed(1), 8)}${pad(r.ratio.toFixed(2), 7)}${pad(m.perplexity.toFixed(3), 9)}${pad(`${(e.drop * 100).toFixed(2)}%`, 8)}${pad(m.kl_mean.toFixed(4), 9)}${pad(m.kl_p99.toFixed(4), 9)}${pad((m.top1_agreement * 100).toFixed(1), 8)}${pad(m.prompt_tokens_per_s.toFixed(0), 8)}${s.median.toFixed(2)}× (${s.p10.toFixed(2)}–${s.p90.toFixed(2)}, ${s.rounds} rounds) ${e.compressed.kernel}${e.speedup_expected ? "" : ", none expected"}`);
  }
} finally {
  await browser.close();
  await server.stop();
}
