//! `squeeze bench products`: the evaluation's matrix products on GGUF weights, for a layer's
//! shape and a batch of rows: the integer product (where the CPU has AVX-512 VNNI), the dense
//! f32 product on the dequantized copy with the activations rounded first (the path without
//! VNNI), and candle's quantized matmul, side by side in one run, with the ratio to the dense
//! product.

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

use crate::eval::activations::{Rounding, round_tensor};
use crate::eval::integer_product::{self, IntegerWeights};

/// Times each product of `rows` activation rows with an `outputs × inputs` Q8_0 and Q4_0
/// weight and prints a table; the fastest of `repeats` runs counts.
pub fn products_bench(
    rows: usize,
    outputs: usize,
    inputs: usize,
    repeats: usize,
) -> anyhow::Result<()> {
    let pool = crate::worker::cpu_pool();
    println!(
        "products of {rows} rows with a {outputs} × {inputs} weight, {} threads, integer product {}",
        pool.current_num_threads(),
        if integer_product::available() {
            "on AVX-512 VNNI"
        } else {
            "unavailable (no AVX-512 VNNI): its scalar twin is not timed"
        }
    );
    println!("| weights | product | GMAC/s | time ÷ dense |\n|---|---|---|---|");
    let mut rng = crate::numeric::SplitMix::new(11, 5);
    let mut values = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| (rng.next_unit() as f32 - 0.5) * 0.1)
            .collect()
    };
    let w = Tensor::from_vec(values(outputs * inputs), (outputs, inputs), &Device::Cpu)?;
    let x = Tensor::from_vec(values(rows * inputs), (1, rows, inputs), &Device::Cpu)?;
    let macs = (rows * outputs * inputs) as f64;
    let time = |run: &(dyn Fn() -> candle_core::Result<Tensor> + Sync)| -> anyhow::Result<f64> {
        let mut best = f64::INFINITY;
        for _ in 0..repeats.max(1) {
            let started = Instant::now();
            std::hint::black_box(pool.install(run)?);
            best = best.min(started.elapsed().as_secs_f64());
        }
        Ok(best)
    };
    for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_0] {
        let q = QTensor::quantize(&w, dtype)?;
        let dequantized = q.dequantize(&Device::Cpu)?.t()?.contiguous()?;
        let dense = time(&|| round_tensor(&x, Rounding::Q8_0)?.broadcast_matmul(&dequantized))?;
        let mut lines = vec![("dense f32, activations rounded", dense)];
        if integer_product::available() {
            let packed = IntegerWeights::pack(&q)?;
            lines.push(("integer (VNNI)", time(&|| packed.forward(&x))?));
        }
        let candle = QMatMul::from_qtensor(q)?;
        lines.push(("candle quantized matmul", time(&|| candle.forward(&x))?));
        for (name, seconds) in lines {
            println!(
                "| {dtype:?} | {name} | {:.1} | {:.2} |",
                macs / seconds / 1e9,
                seconds / dense
            );
        }
    }
    Ok(())
}
