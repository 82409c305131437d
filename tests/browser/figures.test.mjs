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
