// Figures the API writes as "NaN", "Infinity" and "-Infinity" (JSON has no such numbers): the
// dashboard turns them back into numbers and shows them by name, never as "Infinity ms" or a
// broken chart; free text that happens to spell them stays text.

import { test } from "node:test";
import assert from "node:assert/strict";
import { parseJson } from "../../static/js/api.js";
import * as fmt from "../../static/js/format.js";

test("named non-finite figures become numbers; names stay text", () => {
  const job = parseJson('{"name": "NaN", "result": {"mean_rel_error": "Infinity", "ratio": 2.5, "eval": {"original": {"metrics": {"perplexity": "-Infinity"}}}}, "state": "succeeded"}');
  assert.equal(job.name, "NaN");
  assert.equal(job.result.mean_rel_error, Infinity);
  assert.equal(job.result.ratio, 2.5);
  assert.equal(job.result.eval.original.metrics.perplexity, -Infinity);
});

test("formatters name non-finite values", () => {
  assert.equal(fmt.percent(Infinity), "∞");
  assert.equal(fmt.ms(NaN), "NaN");
  assert.equal(fmt.sci(-Infinity), "−∞");
  assert.equal(fmt.points(NaN), "NaN");
  assert.equal(fmt.ratio(Infinity), "∞");
  assert.equal(fmt.percent(0.0123), "1.23 %");
});

test("the error colour scale starts at the 2nd percentile, so an exactly stored tensor does not flatten it", async () => {
  const { errorDomain } = await import("../../static/js/figures.js");
  // SmolLM2's tied embedding is already on Q8_0's grid: 1e-9 beside errors of 0.5–0.7 %.
  const errors = [1e-9, ...Array.from({ length: 210 }, (_, i) => 0.005 + i * 1e-5)];
  const [low, high] = errorDomain(errors);
  assert.ok(low >= 0.005, `low ${low}`);
  assert.equal(high, errors[errors.length - 1]);
  assert.deepEqual(errorDomain([0, 0]), [1e-9, 1]);
  assert.deepEqual(errorDomain([0.01]), [0.005, 0.02]);
});

test("time estimates are rounded as estimates are", () => {
  assert.equal(fmt.roughly(7.4), "7 s");
  assert.equal(fmt.roughly(0.2), "1 s");
  assert.equal(fmt.roughly(185), "3 min");
  assert.equal(fmt.roughly(4800), "1 h 20 min");
  assert.equal(fmt.roughly(NaN), "");
});

test("a quality change reads as its budget does: points for a rate, relative for perplexity, absolute for cosine", async () => {
  const { qualityChange, useFigureCatalogue } = await import("../../static/js/figures.js");
  // As `/evaluation/figures` describes them.
  useFigureCatalogue([
    { name: "perplexity", label: "Perplexity", unit: "number", lower_is_better: true, budget: "relative increase" },
    { name: "accuracy", label: "Accuracy", unit: "rate", lower_is_better: false, budget: "absolute drop" },
    { name: "cosine_mean", label: "Embedding cosine, mean", unit: "number", lower_is_better: false, budget: "absolute drop" },
  ]);
  const perplexity = qualityChange({ metric: "perplexity", compressed: 65.081, original: 61.446, change: 65.081 - 61.446, lowerIsBetter: true });
  assert.equal(perplexity.delta, "+5.9 %");
  assert.equal(perplexity.worse, true);
  const accuracy = qualityChange({ metric: "accuracy", compressed: 0.95, original: 0.97, change: -0.02, lowerIsBetter: false });
  assert.equal(accuracy.value, "95.00 %");
  assert.equal(accuracy.delta, "−2.00 pt");
  // A cosine is not a rate: 0.9931 is shown as 0.9931, not "99.3 %", and its change as a difference.
  const cosine = qualityChange({ metric: "cosine_mean", compressed: 0.9931, original: 1, change: -0.0069, lowerIsBetter: false });
  assert.equal(cosine.value, "0.9931");
  assert.equal(cosine.delta, "−0.0069");
  assert.equal(cosine.worse, true);
});
