//! `squeeze bench calibration`: the calibrated methods' time per layer against round-to-nearest
//! on the same weights, for SmolLM2-135M's linear shapes (or one given shape): the Hessian sum
//! over the calibration tokens, GPTQ int4 group 64 (its factor and sweep), SparseGPT and Wanda
//! at 50 %, and RTN int4 group 64, with what a whole model of those layers would take. The
//! activations are `calibrate::synthetic`'s correlated ones (a few shared factors per token plus
//! noise, channel scales tenfold apart), so the factorisation does real work.

use std::time::Instant;

use crate::calibrate::obs::Hessian;
use crate::calibrate::sparsegpt::{self, SparseGptOptions};
use crate::calibrate::synthetic;
use crate::calibrate::{Pattern, gptq, wanda};
use crate::compress::quantize::{Granularity, IntScheme, ScaleDtype};
use crate::numeric::Cancel;

/// SmolLM2-135M's linear layers per block, as (name, outputs, inputs).
const SMOLLM2_LAYERS: [(&str, usize, usize); 7] = [
    ("q_proj", 576, 576),
    ("k_proj", 192, 576),
    ("v_proj", 192, 576),
    ("o_proj", 576, 576),
    ("gate_proj", 1536, 576),
    ("up_proj", 1536, 576),
    ("down_proj", 576, 1536),
];

/// SmolLM2-135M's blocks.
const SMOLLM2_BLOCKS: usize = 30;

/// Times each method on each layer shape with `tokens` calibration tokens and prints a table.
pub fn calibration_bench(tokens: usize, shape: Option<(usize, usize)>) -> anyhow::Result<()> {
    let pool = crate::worker::cpu_pool();
    let layers: Vec<(&str, usize, usize)> = match shape {
        Some((outputs, inputs)) => vec![("layer", outputs, inputs)],
        None => SMOLLM2_LAYERS.to_vec(),
    };
    println!(
        "calibrated methods per layer, {tokens} calibration tokens, {} threads; int4 group 64, 50 % sparsity",
        pool.current_num_threads()
    );
    println!(
        "| layer | outputs × inputs | Hessian s | GPTQ s | SparseGPT s | Wanda s | RTN s | GPTQ ÷ RTN |\n|---|---|---|---|---|---|---|---|"
    );
    let scheme = IntScheme {
        bits: 4,
        symmetric: true,
        granularity: Granularity::Group(64),
        scale_dtype: ScaleDtype::F32,
    };
    let cancel = Cancel::new();
    let mut totals = [0f64; 5];
    for (name, outputs, inputs) in layers {
        let weights: Vec<f32> = synthetic::noise(3, outputs * inputs)
            .iter()
            .map(|w| w * 0.05)
            .collect();
        let activations = synthetic::inputs(tokens, inputs, 1);
        let (hessian, hessian_s) = timed(|| pool.install(|| Hessian::of(inputs, &activations)));
        let (quantized, gptq_s) = timed(|| {
            pool.install(|| {
                gptq::quantize(
                    &weights,
                    inputs,
                    &hessian,
                    scheme,
                    gptq::GptqOptions::default(),
                    &cancel,
                )
            })
        });
        quantized?;
        let (pruned, sparsegpt_s) = timed(|| {
            pool.install(|| {
                sparsegpt::prune(
                    &weights,
                    inputs,
                    &hessian,
                    Pattern::Unstructured(0.5),
                    None,
                    SparseGptOptions::default(),
                    &cancel,
                )
            })
        });
        pruned?;
        let (by_wanda, wanda_s) = timed(|| {
            pool.install(|| {
                wanda::prune(
                    &weights,
                    inputs,
                    &hessian.input_norms(),
                    Pattern::Unstructured(0.5),
                )
            })
        });
        by_wanda.map_err(anyhow::Error::msg)?;
        let (_, rtn_s) = timed(|| {
            let mut w = weights.clone();
            scheme.fake_quantize_rows_in_place(&mut w, inputs, None);
            w
        });
        for (total, s) in totals
            .iter_mut()
            .zip([hessian_s, gptq_s, sparsegpt_s, wanda_s, rtn_s])
        {
            *total += s;
        }
        println!(
            "| {name} | {outputs} × {inputs} | {hessian_s:.4} | {gptq_s:.4} | {sparsegpt_s:.4} | {wanda_s:.4} | {rtn_s:.4} | {:.0}× |",
            gptq_s / rtn_s.max(1e-9)
        );
    }
    if shape.is_none() {
        let [h, g, s, w, r] = totals.map(|t| t * SMOLLM2_BLOCKS as f64);
        println!(
            "SmolLM2-135M's {SMOLLM2_BLOCKS} blocks, these layers alone (no forward passes): Hessians {h:.1} s, GPTQ {g:.1} s, SparseGPT {s:.1} s, Wanda {w:.2} s, RTN {r:.2} s"
        );
    }
    Ok(())
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_secs_f64())
}
