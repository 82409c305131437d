//! `squeeze bench kernels`: every kernel step on one realistic in-memory tensor (default
//! 4096 × 11008, a Llama-7B MLP projection), BF16 and F32 input, no file I/O: GB/s of input next
//! to the memory-copy bandwidth measured in the same run, with the thread count and the SIMD
//! level in use.

use std::time::Instant;

use crate::compress::blocks::BlockType;
use crate::compress::lowrank::{Rank, max_useful_rank};
use crate::compress::prune::Norm;
use crate::compress::quantize::{Granularity, IntScheme, ScaleDtype};
use crate::compress::step::Step;
use crate::compress::tensor::{self, TensorView};
use crate::numeric::Cancel;
use crate::numeric::Dtype;
use crate::numeric::codec;
use crate::numeric::simd;

fn int(bits: u8, symmetric: bool, granularity: Granularity) -> Step {
    Step::Int(IntScheme {
        bits,
        symmetric,
        granularity,
        scale_dtype: ScaleDtype::F32,
    })
}

/// The kernels timed, by name.
fn kernels(rows: usize, cols: usize) -> Vec<(&'static str, Vec<Step>)> {
    vec![
        ("int8 per channel", vec![int(8, true, Granularity::Channel)]),
        ("int8 per tensor", vec![int(8, true, Granularity::Tensor)]),
        (
            "int8 group 128",
            vec![int(8, true, Granularity::Group(128))],
        ),
        ("int4 per channel", vec![int(4, true, Granularity::Channel)]),
        (
            "int4 group 128",
            vec![int(4, true, Granularity::Group(128))],
        ),
        (
            "int4 group 128 asym",
            vec![int(4, false, Granularity::Group(128))],
        ),
        (
            "fp8 per channel",
            vec![Step::Fp8 {
                per_channel: true,
                scale_dtype: ScaleDtype::F32,
            }],
        ),
        (
            "fp8 per tensor",
            vec![Step::Fp8 {
                per_channel: false,
                scale_dtype: ScaleDtype::F32,
            }],
        ),
        ("gguf Q8_0", vec![Step::Gguf(BlockType::Q8_0)]),
        ("gguf Q4_0", vec![Step::Gguf(BlockType::Q4_0)]),
        ("gguf Q5_1", vec![Step::Gguf(BlockType::Q5_1)]),
        ("gguf Q4_K", vec![Step::Gguf(BlockType::Q4_K)]),
        ("gguf Q5_K", vec![Step::Gguf(BlockType::Q5_K)]),
        ("gguf Q6_K", vec![Step::Gguf(BlockType::Q6_K)]),
        ("nf4", vec![Step::Nf4]),
        (
            "low-rank 128",
            vec![Step::LowRank {
                // A smaller rank when the benchmark's matrix is too small for 128 to pay.
                rank: Rank::Fixed(128.min(max_useful_rank(rows, cols)).max(1)),
                seed: 0,
            }],
        ),
        (
            "k-means 16 per tensor",
            vec![Step::Cluster {
                bits: 4,
                per_row: false,
                seed: 0,
            }],
        ),
        (
            "k-means 16 per row",
            vec![Step::Cluster {
                bits: 4,
                per_row: true,
                seed: 0,
            }],
        ),
        (
            "magnitude prune 50%",
            vec![Step::MagnitudePrune { sparsity: 0.5 }],
        ),
        ("2:4 prune", vec![Step::SemiStructured { n: 2, m: 4 }]),
        (
            "channel prune 25% L2",
            vec![Step::ChannelPrune {
                sparsity: 0.25,
                norm: Norm::L2,
            }],
        ),
        (
            "prune 50% + int8",
            vec![
                Step::MagnitudePrune { sparsity: 0.5 },
                int(8, true, Granularity::Channel),
            ],
        ),
    ]
}

/// Input bytes of `rows × cols` weight-like values in `dtype`. Each row is scaled by its own
/// factor, as real weight rows differ in range: with one range for all rows, every row's scale
/// would be the same power of two, a case the kernels take a shortcut for.
fn tensor_bytes(rows: usize, cols: usize, dtype: Dtype) -> Vec<u8> {
    let block = crate::numeric::rng::weight_like_bf16_block();
    let bf16: Vec<u8> = block
        .iter()
        .copied()
        .cycle()
        .take(rows * cols * 2)
        .collect();
    let mut values = vec![0f32; rows * cols];
    codec::decode(Dtype::BF16, &bf16, &mut values);
    for (r, row) in values.chunks_mut(cols).enumerate() {
        // The golden ratio's fractional part spreads the factors over [0.5, 1.5).
        let factor = 0.5 + (r as f64 * 0.618_033_988_749_895).fract() as f32;
        for v in row {
            *v *= factor;
        }
    }
    let mut out = vec![0u8; rows * cols * crate::numeric::float_width(dtype)];
    codec::encode(dtype, &values, &mut out);
    out
}

/// Runs every kernel and prints a table. The output buffer is reused across runs, as the
/// pipeline reuses its own, so page faults of fresh memory do not count.
pub fn kernels_bench(
    rows: usize,
    cols: usize,
    repeats: usize,
    only: Option<&str>,
) -> anyhow::Result<()> {
    let pool = crate::worker::cpu_pool();
    let memcpy = super::pipeline::memcpy_bandwidth();
    println!(
        "kernels on a {rows} × {cols} tensor, {} threads, SIMD {}, memcpy {:.2} GB/s in the same run",
        pool.current_num_threads(),
        simd::level().name(),
        memcpy / 1e9
    );
    println!("| kernel | input | GB/s of input | ratio to memcpy |\n|---|---|---|---|");
    let shape = [rows as u64, cols as u64];
    for dtype in [Dtype::BF16, Dtype::F32] {
        let bytes = tensor_bytes(rows, cols, dtype);
        let view = TensorView {
            calibrated: None,
            bytes: &bytes,
            dtype,
            shape: &shape,
        };
        let mut out = vec![0u8; bytes.len()];
        for (name, steps) in kernels(rows, cols)
            .into_iter()
            .filter(|(name, _)| only.is_none_or(|o| name.contains(o)))
        {
            let mut best = f64::INFINITY;
            for _ in 0..repeats.max(1) {
                let started = Instant::now();
                let result = pool
                    .install(|| tensor::transform_into(&view, &steps, &Cancel::new(), &mut out));
                let seconds = started.elapsed().as_secs_f64();
                std::hint::black_box(result?);
                best = best.min(seconds);
            }
            let rate = bytes.len() as f64 / best;
            println!(
                "| {name} | {dtype} | {:.2} | {:.2} |",
                rate / 1e9,
                rate / memcpy
            );
        }
    }
    Ok(())
}
