//! The pipeline: everything that happens to one job's bytes. Runs a recipe over a model's files
//! and writes the artifact set into a folder (`writers` picks the format's writer), with the
//! per-tensor metrics and the summary; `memory` samples the job's own peak. A job's run
//! (`run_job`) is that compression, then its evaluation step (`eval_step`) when it asks for one.
//! Shared by the workers and `squeeze compress`; no database, no async. Call it inside the
//! worker's rayon pool: chunks of a tensor run in parallel there.
//!
//! Memory stays at a few tensors whatever the model size: each tensor is mapped on its own and
//! unmapped when done (so its pages leave the process), transformed in row chunks
//! (`compress::tensor` does the chunked work), and handed to the writer's thread
//! (`write_behind`), which writes it while the next one is transformed; no more than two are in
//! flight. Where the writer stores codes alone, no dense copy of the tensor is kept.
//!
//! A calibrated first stage (Wanda, SparseGPT) runs before the tensors (`calibrated`): the
//! calibration set through the original decoder, layer by layer, the pruned projections spilled
//! to a scratch file that the tensor loop reads back in place of the stored weights.

mod calibrated;
pub mod eval_step;
pub mod feed;
pub mod files;
pub mod memory;
mod write_behind;
pub mod writers;

pub use files::{
    InputDigests, InputFile, InputKind, ModelDigest, Outcome, PipelineError, contain_panic,
    panic_message,
};

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use crate::compress::prune::{GlobalCut, Norm, prune_count};
use crate::compress::step::Step;
use crate::compress::structure::{self, LineStats};
use crate::compress::tensor::{self, Fidelity, TensorView, TransformError};
use crate::formats::TensorMeta;
use crate::formats::hf;
use crate::formats::safetensors::{self, Header, TensorInfo};
use crate::formats::writer::OutputDir;
use crate::jobs::recipe::{OutputFormat, Prune, Recipe, Selection, Stage};
use crate::jobs::report::{Progress, Summary, TensorReport};
use crate::numeric::Cancel;
use write_behind::{Dense, WriteBehind};

/// A job's whole run on the CPU pool: the compression, then, when the job asks for one, its
/// evaluation step on the artifact; a panic in either phase is contained and names it. Both
/// phases' progress goes to `progress` (the evaluation's on top of the compression's last).
pub fn run_job(
    inputs: &[InputFile],
    recipe: &Recipe,
    model_digest: impl Into<ModelDigest>,
    out_dir: &OutputDir,
    cancel: &Cancel,
    evaluation: Option<eval_step::Evaluation>,
    progress: &dyn Fn(&Progress),
) -> Result<Outcome, PipelineError> {
    let mut compressed = Progress::default();
    let mut outcome = contain_panic(
        || "compression".to_owned(),
        || {
            run(inputs, recipe, model_digest, out_dir, cancel, &mut |p| {
                compressed = p.clone();
                progress(p);
            })
        },
    )?;
    if let Some(evaluation) = evaluation {
        eval_step::run(
            evaluation,
            &mut outcome,
            inputs,
            &out_dir.path,
            cancel,
            compressed,
            progress,
        )?;
    }
    Ok(outcome)
}

/// Runs `recipe` over the model and writes the artifact set into `out_dir` (which must exist),
/// with digests when it asks for them.
pub fn run(
    inputs: &[InputFile],
    recipe: &Recipe,
    model_digest: impl Into<ModelDigest>,
    out_dir: &OutputDir,
    cancel: &Cancel,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Outcome, PipelineError> {
    let started = Instant::now();
    let memory = memory::RssPeak::start();
    let _spares = crate::compress::spare::ReleaseOnDrop;
    let (known_digests, mut digester) = match model_digest.into() {
        ModelDigest::Known(digests) => (Some(digests), None),
        ModelDigest::FromRun(digester) => (None, Some(digester)),
    };
    let mut weights: Vec<(&InputFile, Header)> = Vec::new();
    for input in inputs.iter().filter(|i| i.kind == InputKind::Weights) {
        let header = safetensors::read_header(&input.path)
            .map_err(|e| PipelineError::Input(format!("{}: {e}", input.name)))?;
        weights.push((input, header));
    }
    if weights.is_empty() {
        return Err(PipelineError::Input("the model has no weight files".into()));
    }
    let metas: Vec<TensorMeta> = weights
        .iter()
        .flat_map(|(_, h)| h.tensors.iter())
        .map(TensorMeta::from)
        .collect();
    let plan = recipe
        .plan(&metas)
        .map_err(|e| PipelineError::Input(e.to_string()))?;
    let recipe = &plan.recipe;
    let selection = recipe
        .selection()
        .map_err(|e| PipelineError::Input(e.to_string()))?;

    let mut state = Progress {
        tensors_total: metas.len() as u64,
        bytes_total: weights.iter().map(|(_, h)| h.data_len()).sum(),
        ..Progress::default()
    };
    progress(&state);
    let encode = recipe.format != OutputFormat::Safetensors;
    let shrink = match recipe.stages.first() {
        Some(Stage::Prune(Prune::MlpChannels { sparsity, norm })) => Some(MlpShrink::plan(
            inputs, &weights, &metas, *sparsity, *norm, cancel,
        )?),
        _ => None,
    };
    let global_counts = match recipe.stages.first() {
        Some(stage @ Stage::Prune(Prune::Magnitude { sparsity, .. }))
            if stage.is_global_prune() =>
        {
            Some(global_prune_counts(
                &weights, &selection, *sparsity, cancel,
            )?)
        }
        _ => None,
    };

    let calibrated =
        calibrated::prepare(inputs, &weights, recipe, &selection, &out_dir.path, cancel)?;

    let out_headers: Vec<Header> = weights
        .iter()
        .map(|(_, header)| match &shrink {
            Some(plan) => plan.header(header),
            None => header.clone(),
        })
        .collect();
    let mut writer = WriteBehind::start(writers::writer_for(&plan, out_dir, inputs, &out_headers)?);
    let mut reports = Vec::new();
    for ((input, header), out_header) in weights.iter().zip(&out_headers) {
        writer.begin_file(&input.name, out_header)?;
        let file = File::open(&input.path)?;
        for (t, out_info) in header.tensors.iter().zip(&out_header.tensors) {
            cancel.check()?;
            let index = reports.len();
            let offset = header.data_start() + t.begin;
            let data = Arc::new(map_range(&file, offset, t.bytes())?);
            let fed = feed::Fed::Range {
                offset,
                bytes: feed::InputBytes(Arc::clone(&data)),
            };
            let shrunk = shrink
                .as_ref()
                .and_then(|plan| plan.gather(t, data.bytes()));
            let planned = plan.tensor(&t.name).filter(|p| !p.steps.is_empty());
            let selected = planned.is_some();
            let scheme = planned.map_or_else(|| plan.scheme(), |p| p.scheme.clone());
            let note = plan.tensor(&t.name).and_then(|p| p.note.clone());
            let compute = || {
                contain_panic(
                    || format!("tensor {:?} ({scheme})", t.name),
                    || -> Result<TensorReport, PipelineError> {
                        if !selected && shrunk.is_none() {
                            let bits = (t.elements() * t.dtype.bits()) as f64;
                            writer.tensor(index, out_info, Dense::Mapped(data), None, bits)?;
                            let mut r = unchanged(t);
                            r.note = note;
                            return Ok(r);
                        }
                        let bytes = shrunk.as_ref().map_or(data.bytes(), |(b, _)| &b[..]);
                        let calibrated_values = match &calibrated {
                            Some(c) if selected => c.values(&t.name)?,
                            _ => None,
                        };
                        let view = TensorView {
                            bytes,
                            dtype: t.dtype,
                            shape: &out_info.shape,
                            calibrated: calibrated_values.as_deref(),
                        };
                        let mut steps = planned.map(|p| p.steps.clone()).unwrap_or_default();
                        if let Some(counts) = &global_counts {
                            steps[0] = Step::MagnitudePruneCount {
                                count: counts[&t.name],
                            };
                        }
                        // GPTQ's tensors: its values in place of the stored ones, its codes
                        // and scales as the stored form (the plan's integer step is GPTQ's
                        // scheme, already run by the pre-pass).
                        let mut given = None;
                        if let (Some(c), Some(Step::Int(scheme))) = (&calibrated, steps.first())
                            && calibrated_values.is_some()
                        {
                            given = c.encoded(&t.name, *scheme)?;
                            if given.is_some() {
                                steps = vec![Step::Calibrated];
                            }
                        }
                        // A reused buffer: fresh memory would cost a page fault per 4 KiB.
                        let mut buffer = writer.buffer();
                        let (mut fidelity, encoded) = if !encode {
                            buffer.resize(bytes.len(), 0);
                            tensor::transform_into(&view, &steps, cancel, &mut buffer)
                                .map(|f| (f, None))
                        } else if selected && !writers::reads_dense(recipe, steps.last()) {
                            tensor::transform_codes(&view, &steps, cancel, &mut buffer)
                                .map(|(f, e)| (f, Some(e)))
                        } else {
                            buffer.resize(bytes.len(), 0);
                            tensor::transform_encoded(&view, &steps, cancel, &mut buffer)
                                .map(|(f, e)| (f, Some(e)))
                        }
                        .map_err(|e| transform_error(&t.name, e))?;
                        if let Some((_, removed)) = &shrunk {
                            fidelity = fidelity.including_removed(removed);
                        }
                        let encoded = given.or(encoded).filter(|_| selected);
                        let bits = match &encoded {
                            Some(e) => e.theoretical_bits(out_info.elements(), t.dtype.bits()),
                            None => (out_info.elements() * t.dtype.bits()) as f64,
                        };
                        let scheme = match fidelity.low_rank {
                            Some(lr) => format!(
                                "{scheme} (rank {}, {:.1}% of the parameters)",
                                lr.rank,
                                lr.parameter_fraction * 100.0
                            ),
                            None => scheme.clone(),
                        };
                        drop(data);
                        writer.tensor(index, out_info, Dense::Buffer(buffer), encoded, bits)?;
                        // Bytes out are filled in once the writer has stored the tensor.
                        let mut r = report(t, &scheme, 0, &fidelity);
                        r.shape = out_info.shape.clone();
                        r.note = note;
                        Ok(r)
                    },
                )
            };
            let report = match digester.as_deref_mut() {
                Some(digester) => rayon::join(compute, || digester.take(fed)).0,
                None => compute(),
            }?;
            reports.push(report);
            state.tensors_done += 1;
            state.bytes_done += t.bytes();
            progress(&state);
        }
        writer.end_file()?;
        if let Some(digester) = digester.as_deref_mut() {
            digester.take(feed::Fed::EndFile);
        }
    }
    let (mut writer, written) = writer.finish()?;
    let mut theoretical_bits = 0f64;
    for (index, stored, bits) in written.tensors {
        reports[index].bytes_out = stored as i64;
        theoretical_bits += bits;
    }
    let mut files = written.files;
    let weight_files: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
    for input in inputs.iter().filter(|i| i.kind == InputKind::Other) {
        cancel.check()?;
        let original = std::fs::read(&input.path)?;
        let adjusted = match &shrink {
            Some(plan) => plan.side_file(&input.name, original, &weights)?,
            None => original,
        };
        if let Some(bytes) = writer.side_file(&input.name, adjusted)? {
            let mut out = out_dir.create(&input.name)?;
            out.write(&bytes)?;
            files.push(out.finish(&input.name)?);
        }
    }
    files.extend(writer.finish()?);
    let bytes_out: u64 = files.iter().map(|f| f.bytes).sum();
    let weight_bytes_out: u64 = files
        .iter()
        .filter(|f| weight_files.contains(&f.name))
        .map(|f| f.bytes)
        .sum();
    let digests = match (known_digests, digester) {
        (Some(digests), _) => digests,
        (None, Some(digester)) => digester.finish()?,
        (None, None) => unreachable!("a digest is known or taken"),
    };
    let mut provenance = serde_json::json!({
        "recipe": recipe,
        "squeeze_version": env!("CARGO_PKG_VERSION"),
    });
    for (field, digest) in [
        ("model_sha256", digests.sha256),
        ("model_blake3", digests.blake3),
    ] {
        if let Some(digest) = digest {
            provenance[field] = digest.into();
        }
    }
    if let Some(calibrated) = &calibrated {
        provenance["calibration"] = calibrated.provenance.clone();
    }
    let mut out = out_dir.create("recipe.json")?;
    out.write(&serde_json::to_vec_pretty(&provenance).expect("JSON serialises"))?;
    files.push(out.finish("recipe.json")?);
    files.sort_by(|a, b| a.name.cmp(&b.name));
    reports.sort_by(|a, b| a.name.cmp(&b.name));

    let bytes_in: u64 = inputs
        .iter()
        .filter(|i| i.kind != InputKind::Calibration)
        .map(|i| std::fs::metadata(&i.path).map(|m| m.len()))
        .sum::<io::Result<u64>>()?;
    let mut summary = summarize(
        &reports,
        &metas,
        bytes_in,
        bytes_out,
        weight_bytes_out,
        started,
        state.bytes_total,
        recipe,
    );
    summary.theoretical_bits_per_weight = theoretical_bits / summary.parameters.max(1) as f64;
    summary.peak_rss_bytes = memory.finish();
    summary.weight_files_bytes = weight_bytes_out;
    Ok(Outcome {
        files,
        tensors: reports,
        summary,
    })
}

/// Which intermediate channels each gated MLP keeps, and what the removed ones weighed.
struct MlpShrink {
    /// Per projection tensor: the kept channels, whether they are its columns (down_proj),
    /// and the statistics of the removed lines.
    tensors: HashMap<String, (Arc<Vec<usize>>, bool, LineStats)>,
    config: serde_json::Value,
    intermediate: u64,
}

impl MlpShrink {
    /// Reads `config.json` and every gated MLP's line statistics (one tensor mapped at a time)
    /// and chooses the channels to keep, the same number in every layer.
    fn plan(
        inputs: &[InputFile],
        weights: &[(&InputFile, Header)],
        metas: &[TensorMeta],
        sparsity: f64,
        norm: Norm,
        cancel: &Cancel,
    ) -> Result<MlpShrink, PipelineError> {
        let input_error = |m: String| PipelineError::Input(format!("MLP channel shrinking: {m}"));
        let config_file = inputs
            .iter()
            .find(|i| i.kind == InputKind::Other && i.name == "config.json")
            .ok_or_else(|| {
                input_error(
                    "the model has no config.json (upload it with the weights) to say its architecture"
                        .into(),
                )
            })?;
        let config: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_file.path)?)
            .map_err(|e| input_error(format!("config.json is not JSON: {e}")))?;
        let layers = hf::gated_mlps(metas.iter().map(|t| (t.name.as_str(), &t.shape[..])))
            .map_err(|e| input_error(e.to_string()))?;
        let intermediate = layers[0].intermediate;
        hf::check_gated_config(&config, intermediate).map_err(input_error)?;
        let stats = |name: &str, columns: bool| -> Result<Vec<LineStats>, PipelineError> {
            let (input, header) = weights
                .iter()
                .find(|(_, h)| h.tensors.iter().any(|t| t.name == name))
                .expect("validated names exist");
            let t = header
                .tensors
                .iter()
                .find(|t| t.name == name)
                .expect("found");
            with_mapped(&File::open(&input.path)?, header, t, |view| {
                tensor::line_stats(view, columns, cancel)
            })
        };
        let mut tensors = HashMap::new();
        for layer in &layers {
            let gate = stats(&layer.gate, false)?;
            let up = stats(&layer.up, false)?;
            let down = stats(&layer.down, true)?;
            let kept = Arc::new(structure::kept_channels(&gate, &up, &down, sparsity, norm));
            for (name, lines, columns) in [
                (&layer.gate, &gate, false),
                (&layer.up, &up, false),
                (&layer.down, &down, true),
            ] {
                let removed = structure::removed(lines, &kept);
                tensors.insert(name.clone(), (kept.clone(), columns, removed));
            }
        }
        Ok(MlpShrink {
            tensors,
            config,
            intermediate: intermediate - prune_count(intermediate, sparsity),
        })
    }

    /// A weight file's header with the shrunk shapes and the offsets that follow from them.
    fn header(&self, header: &Header) -> Header {
        let mut out = header.clone();
        let mut offset = 0;
        for t in &mut out.tensors {
            if let Some((kept, columns, _)) = self.tensors.get(&t.name) {
                let axis = usize::from(*columns);
                t.shape[axis] = kept.len() as u64;
            }
            let len = t.elements() * crate::numeric::float_width(t.dtype) as u64;
            t.begin = offset;
            t.end = offset + len;
            offset += len;
        }
        out
    }

    /// The kept rows or columns of a projection (None for other tensors), with the statistics
    /// of what was removed.
    fn gather(&self, t: &TensorInfo, bytes: &[u8]) -> Option<(Vec<u8>, LineStats)> {
        let (kept, columns, removed) = self.tensors.get(&t.name)?;
        let width = crate::numeric::float_width(t.dtype);
        let cols = t.shape[1] as usize;
        let gathered = if *columns {
            structure::gather_columns(bytes, width, cols, kept)
        } else {
            structure::gather_rows(bytes, width * cols, kept)
        };
        Some((gathered, *removed))
    }

    /// A side file as the shrunk model needs it: `config.json` with the new intermediate size,
    /// a shard index with the new total size, anything else unchanged.
    fn side_file(
        &self,
        name: &str,
        original: Vec<u8>,
        weights: &[(&InputFile, Header)],
    ) -> Result<Vec<u8>, PipelineError> {
        let pretty = |v: &serde_json::Value| {
            let mut bytes = serde_json::to_vec_pretty(v).expect("JSON serialises");
            bytes.push(b'\n');
            bytes
        };
        if name == "config.json" {
            return Ok(pretty(&hf::with_intermediate_size(
                self.config.clone(),
                self.intermediate,
            )));
        }
        if name.ends_with(".safetensors.index.json")
            && let Ok(mut index) = serde_json::from_slice::<serde_json::Value>(&original)
            && index["metadata"]["total_size"].is_u64()
        {
            let total: u64 = weights.iter().map(|(_, h)| self.header(h).data_len()).sum();
            index["metadata"]["total_size"] = total.into();
            return Ok(pretty(&index));
        }
        Ok(original)
    }
}

fn transform_error(tensor: &str, e: TransformError) -> PipelineError {
    match e {
        TransformError::Canceled => PipelineError::Canceled,
        TransformError::NonFinite { .. }
        | TransformError::OutOfRange { .. }
        | TransformError::BeyondBlockScale { .. }
        | TransformError::LowRank(_) => PipelineError::Input(format!("tensor {tensor:?}: {e}")),
        TransformError::Calibrated => PipelineError::Internal(format!("tensor {tensor:?}: {e}")),
    }
}

/// How many values each selected tensor loses under one global magnitude threshold: three
/// passes over the selected tensors, each mapped only for its turn.
fn global_prune_counts(
    weights: &[(&InputFile, Header)],
    selection: &Selection,
    sparsity: f64,
    cancel: &Cancel,
) -> Result<HashMap<String, u64>, PipelineError> {
    let mut cut = GlobalCut::new(sparsity);
    let mut counts = HashMap::new();
    for pass in GlobalCut::PASSES {
        for (input, header) in weights {
            let file = File::open(&input.path)?;
            for t in &header.tensors {
                if !selection.selects(&t.name, t.dtype, &t.shape) {
                    continue;
                }
                let count = with_mapped(&file, header, t, |view| {
                    tensor::observe_global(view, &mut cut, pass, cancel)
                })?;
                counts.insert(t.name.clone(), count);
            }
        }
        cut.finish(pass);
    }
    Ok(counts)
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    reports: &[TensorReport],
    metas: &[TensorMeta],
    bytes_in: u64,
    bytes_out: u64,
    weight_bytes_out: u64,
    started: Instant,
    weight_bytes_in: u64,
    recipe: &Recipe,
) -> Summary {
    let parameters: u64 = metas.iter().map(|m| m.shape.iter().product::<u64>()).sum();
    let compressed: Vec<(&TensorReport, u64)> = reports
        .iter()
        .filter(|r| r.scheme != UNCHANGED)
        .map(|r| (r, r.shape.iter().product::<u64>()))
        .collect();
    let compressed_parameters: u64 = compressed.iter().map(|(_, n)| n).sum();
    let zeros: f64 = compressed.iter().map(|(r, n)| r.sparsity * *n as f64).sum();
    let worst = compressed
        .iter()
        .max_by(|a, b| a.0.rel_error.total_cmp(&b.0.rel_error));
    let wall = started.elapsed().as_secs_f64();
    Summary {
        format: serde_json::to_value(recipe.format)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        bytes_in,
        bytes_out,
        ratio: bytes_in as f64 / bytes_out.max(1) as f64,
        bits_per_weight: weight_bytes_out as f64 * 8.0 / parameters.max(1) as f64,
        theoretical_bits_per_weight: 0.0,
        weight_files_bytes: weight_bytes_out,
        parameters,
        compressed_parameters,
        compressed_tensors: compressed.len(),
        sparsity: zeros / compressed_parameters.max(1) as f64,
        mean_rel_error: compressed.iter().map(|(r, _)| r.rel_error).sum::<f64>()
            / compressed.len().max(1) as f64,
        worst_rel_error: worst.map_or(0.0, |(r, _)| r.rel_error),
        worst_tensor: worst.map(|(r, _)| r.name.clone()),
        wall_seconds: wall,
        throughput_bytes_per_s: weight_bytes_in as f64 / wall.max(1e-9),
        peak_rss_bytes: None,
        eval_seconds: None,
        squeeze_version: env!("CARGO_PKG_VERSION").to_owned(),
        eval: None,
        eval_error: None,
    }
}

const UNCHANGED: &str = "unchanged";

fn unchanged(t: &TensorInfo) -> TensorReport {
    report(t, UNCHANGED, t.bytes(), &Fidelity::identical())
}

fn report(t: &TensorInfo, scheme: &str, bytes_out: u64, fidelity: &Fidelity) -> TensorReport {
    TensorReport {
        name: t.name.clone(),
        scheme: scheme.to_owned(),
        dtype: t.dtype.as_str().to_owned(),
        shape: t.shape.clone(),
        bytes_in: t.bytes() as i64,
        bytes_out: bytes_out as i64,
        sparsity: fidelity.sparsity,
        rel_error: fidelity.rel_error,
        sqnr_db: fidelity.sqnr_db,
        cosine: fidelity.cosine,
        max_abs_error: fidelity.max_abs_error,
        note: None,
    }
}

/// A read-only view of one tensor's bytes, mapped on its own so that dropping it releases the
/// pages from the process.
struct MappedRange {
    map: Option<memmap2::Mmap>,
    skip: usize,
    len: usize,
}

impl MappedRange {
    fn bytes(&self) -> &[u8] {
        match &self.map {
            Some(map) => &map[self.skip..self.skip + self.len],
            None => &[],
        }
    }
}

/// Maps tensor `t` of a weight file for the time of `work` (its pages leave the process after).
fn with_mapped<R>(
    file: &File,
    header: &Header,
    t: &TensorInfo,
    work: impl FnOnce(&TensorView) -> Result<R, TransformError>,
) -> Result<R, PipelineError> {
    let data = map_range(file, header.data_start() + t.begin, t.bytes())?;
    let view = TensorView {
        bytes: data.bytes(),
        dtype: t.dtype,
        shape: &t.shape,
        calibrated: None,
    };
    work(&view).map_err(|e| transform_error(&t.name, e))
}

fn map_range(file: &File, offset: u64, len: u64) -> io::Result<MappedRange> {
    if len == 0 {
        return Ok(MappedRange {
            map: None,
            skip: 0,
            len: 0,
        });
    }
    let page = 4096u64;
    let aligned = offset - offset % page;
    let skip = (offset - aligned) as usize;
    // SAFETY: model files are content-addressed blobs that are never modified in place (they are
    // replaced only by rename), so the mapped bytes cannot change under us.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(aligned)
            .len(skip + len as usize)
            .map(file)?
    };
    Ok(MappedRange {
        map: Some(map),
        skip,
        len: len as usize,
    })
}
