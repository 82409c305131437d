//! `squeeze bench pipeline`: writes a synthetic BF16 model, runs the recipe through the same pipeline as jobs,
//! measures memory-copy bandwidth, and prints input GB/s, the ratio to memcpy, and the peak RSS
//! of the pipeline (taken before the memcpy baseline allocates its buffers).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use crate::formats::writer::OutputDir;
use crate::jobs::recipe;
use crate::numeric::Cancel;
use crate::pipeline::{self, InputFile, InputKind};

/// Best-of-three bandwidth of copying a 256 MiB buffer, in bytes per second (read + write
/// counted once, as `memcpy` benchmarks usually do).
pub fn memcpy_bandwidth() -> f64 {
    let len = 256 << 20;
    let source = vec![1u8; len];
    let mut target = vec![0u8; len];
    target.copy_from_slice(&source);
    (0..3)
        .map(|_| {
            let started = Instant::now();
            target.copy_from_slice(std::hint::black_box(&source));
            std::hint::black_box(&target);
            len as f64 / started.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// Writes a synthetic BF16 safetensors model: `count` matrices of `rows` × `cols` small finite
/// values (a fixed pseudo-random sequence, so runs are comparable). Returns the bytes of tensor
/// data.
pub fn write_synthetic_model(
    out: impl Write,
    count: u64,
    rows: u64,
    cols: u64,
) -> std::io::Result<u64> {
    let per = rows * cols * 2;
    let mut header = String::from("{\"__metadata__\":{\"format\":\"pt\"}");
    for i in 0..count {
        header.push_str(&format!(
            ",\"layers.{i}.weight\":{{\"dtype\":\"BF16\",\"shape\":[{rows},{cols}],\"data_offsets\":[{},{}]}}",
            i * per,
            (i + 1) * per
        ));
    }
    header.push('}');
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut out = std::io::BufWriter::new(out);
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(header.as_bytes())?;
    let block = crate::numeric::rng::weight_like_bf16_block();
    let mut left = count * per;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(count * per)
}

/// Runs the pipeline benchmark and prints its figures.
pub fn pipeline_bench(size_bytes: u64, preset: &str, work_dir: &Path) -> anyhow::Result<()> {
    let recipe = recipe::preset(preset)?;
    std::fs::create_dir_all(work_dir)?;
    let input = work_dir.join("bench-input.safetensors");
    let out_dir = work_dir.join("bench-output");
    std::fs::create_dir_all(&out_dir)?;
    let (rows, cols) = (4096u64, 4096u64);
    let count = (size_bytes / (rows * cols * 2)).max(1);
    let weights = write_synthetic_model(std::fs::File::create(&input)?, count, rows, cols)
        .context("writing the synthetic model")?;
    let inputs = [InputFile {
        name: "model.safetensors".into(),
        kind: InputKind::Weights,
        path: input.clone(),
    }];
    let pool = crate::worker::cpu_pool();
    let started = Instant::now();
    let outcome = pool.install(|| {
        pipeline::run(
            &inputs,
            &recipe,
            "bench",
            &OutputDir::durable(&out_dir),
            &Cancel::new(),
            &mut |_| {},
        )
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let throughput = weights as f64 / seconds;
    // After the pipeline, so the baseline's buffers do not count in the pipeline's peak RSS.
    let memcpy = memcpy_bandwidth();
    println!(
        "pipeline {preset}: {:.2} GiB BF16 in {seconds:.2} s = {:.2} GB/s of input on {} threads; memcpy {:.2} GB/s in the same run; ratio {:.3}; peak RSS {:.0} MiB",
        weights as f64 / (1u64 << 30) as f64,
        throughput / 1e9,
        pool.current_num_threads(),
        memcpy / 1e9,
        throughput / memcpy,
        outcome.summary.peak_rss_bytes.unwrap_or(0) as f64 / (1u64 << 20) as f64
    );
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_dir_all(&out_dir);
    Ok(())
}
