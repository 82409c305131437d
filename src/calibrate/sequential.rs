//! The sequential calibration pipeline for Llama-family decoders (llm-compressor's
//! "sequential" pipeline): the calibration sequences are embedded once, then taken through the
//! model one layer at a time. For each layer, a first pass through its original weights
//! observes what each projection reads (per-column sums, and Σ x xᵀ when the method needs it);
//! the method replaces the targeted projections; a second pass through the *compressed* layer
//! gives the next layer its inputs, so each layer is fitted to what its compressed predecessors
//! really produce and errors are corrected rather than compounded.
//!
//! Memory stays at one layer's weights as f32, the calibration set's hidden states
//! (sequences × tokens × hidden) and one layer's statistics, whatever the number of layers:
//! weights come from a [`TensorSource`] one tensor at a time. The forward is the evaluation
//! runtime's own ([`Frame::layer_forward`]), so calibration sees what evaluation will.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::obs::Hessian;
use crate::eval::EvalError;
use crate::eval::decoder::{DecoderConfig, DecoderLayer, Frame, Tap};
use crate::eval::weights::{Weights, candle_message, values_of};
use crate::formats::safetensors::{self, TensorInfo};
use crate::numeric::{Cancel, Canceled, codec};

/// Why calibration could not run.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    /// The model or the calibration set does not fit the method.
    #[error("{0}")]
    Input(String),
    /// The method failed on a layer.
    #[error("{tensor}: {message}")]
    Method { tensor: String, message: String },
    #[error("canceled")]
    Canceled,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<Canceled> for CalibrationError {
    fn from(_: Canceled) -> Self {
        CalibrationError::Canceled
    }
}

impl From<EvalError> for CalibrationError {
    fn from(e: EvalError) -> Self {
        match e {
            EvalError::Canceled => CalibrationError::Canceled,
            EvalError::Io(e) => CalibrationError::Io(e),
            other => CalibrationError::Input(other.to_string()),
        }
    }
}

fn runtime(e: candle_core::Error) -> CalibrationError {
    CalibrationError::Input(format!("runtime: {}", candle_message(&e)))
}

/// A tensor's shape and row-major values.
pub type Dense = (Vec<usize>, Vec<f32>);

/// A tensor with its name, as a layer's weights are rebuilt from.
type Named = (String, Vec<usize>, Vec<f32>);

/// Where calibration reads a model's weights, one tensor at a time, widened to f32.
pub trait TensorSource: Sync {
    /// `name`'s shape and row-major values; None when the model has no such tensor.
    fn read(&self, name: &str) -> Result<Option<Dense>, CalibrationError>;

    /// Rows `ids` of the matrix `name` (an embedding table), one after another.
    fn rows(&self, name: &str, ids: &[u32]) -> Result<Vec<f32>, CalibrationError> {
        let (shape, values) = self
            .read(name)?
            .ok_or_else(|| CalibrationError::Input(format!("the model has no tensor {name}")))?;
        gather_rows(name, &shape, &values, ids)
    }
}

fn gather_rows(
    name: &str,
    shape: &[usize],
    values: &[f32],
    ids: &[u32],
) -> Result<Vec<f32>, CalibrationError> {
    let &[rows, cols] = shape else {
        return Err(CalibrationError::Input(format!("{name} is not a matrix")));
    };
    let mut out = Vec::with_capacity(ids.len() * cols);
    for &id in ids {
        let id = id as usize;
        if id >= rows {
            return Err(CalibrationError::Input(format!(
                "token {id} is outside the model's vocabulary of {rows}"
            )));
        }
        out.extend_from_slice(&values[id * cols..][..cols]);
    }
    Ok(out)
}

/// A model's safetensors files, read tensor by tensor with positioned reads.
pub struct SafetensorsSource {
    files: Vec<std::fs::File>,
    /// Name → (file index, absolute offset, entry).
    tensors: HashMap<String, (usize, u64, TensorInfo)>,
}

impl SafetensorsSource {
    /// Opens `paths` and reads their headers.
    pub fn open(paths: &[PathBuf]) -> Result<SafetensorsSource, CalibrationError> {
        let mut files = Vec::new();
        let mut tensors = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            let header = safetensors::read_header(path)
                .map_err(|e| CalibrationError::Input(format!("{}: {e}", path.display())))?;
            let start = header.data_start();
            for t in header.tensors {
                tensors.insert(t.name.clone(), (index, start + t.begin, t));
            }
            files.push(std::fs::File::open(path)?);
        }
        Ok(SafetensorsSource { files, tensors })
    }

    fn entry(&self, name: &str) -> Option<&(usize, u64, TensorInfo)> {
        self.tensors
            .get(name)
            .filter(|(_, _, t)| crate::numeric::dtype::is_float(t.dtype))
    }
}

impl TensorSource for SafetensorsSource {
    fn read(&self, name: &str) -> Result<Option<Dense>, CalibrationError> {
        let Some((file, offset, info)) = self.entry(name) else {
            return Ok(None);
        };
        let mut bytes = vec![0u8; info.bytes() as usize];
        self.files[*file].read_exact_at(&mut bytes, *offset)?;
        let mut values = vec![0f32; info.elements() as usize];
        codec::decode(info.dtype, &bytes, &mut values);
        Ok(Some((
            info.shape.iter().map(|&d| d as usize).collect(),
            values,
        )))
    }

    fn rows(&self, name: &str, ids: &[u32]) -> Result<Vec<f32>, CalibrationError> {
        let Some((file, offset, info)) = self.entry(name) else {
            return Err(CalibrationError::Input(format!(
                "the model has no tensor {name}"
            )));
        };
        let &[rows, cols] = info.shape.as_slice() else {
            return Err(CalibrationError::Input(format!("{name} is not a matrix")));
        };
        let row_bytes = (cols * info.dtype.bits() / 8) as usize;
        let (mut bytes, mut out) = (vec![0u8; row_bytes], vec![0f32; ids.len() * cols as usize]);
        for (&id, slot) in ids.iter().zip(out.chunks_exact_mut(cols as usize)) {
            if u64::from(id) >= rows {
                return Err(CalibrationError::Input(format!(
                    "token {id} is outside the model's vocabulary of {rows}"
                )));
            }
            self.files[*file]
                .read_exact_at(&mut bytes, offset + u64::from(id) * row_bytes as u64)?;
            codec::decode(info.dtype, &bytes, slot);
        }
        Ok(out)
    }
}

/// What one projection input looked like over the calibration set.
#[derive(Debug, Clone)]
pub struct InputStats {
    /// Σ x xᵀ, when the method needs it.
    pub hessian: Option<Hessian>,
    /// Σ x² per input column: llama.cpp's importance matrix, and Wanda's squared norms.
    pub square_sums: Vec<f64>,
    /// Σ |x| per input column: AWQ's activation scale.
    pub abs_sums: Vec<f64>,
    /// Input vectors (tokens) seen.
    pub count: u64,
}

impl InputStats {
    fn new(features: usize, hessian: bool) -> InputStats {
        InputStats {
            hessian: hessian.then(|| Hessian::new(features)),
            square_sums: vec![0.0; features],
            abs_sums: vec![0.0; features],
            count: 0,
        }
    }

    /// Adds row-major input vectors.
    fn add(&mut self, inputs: &[f32]) {
        let features = self.square_sums.len();
        for row in inputs.chunks_exact(features) {
            for ((square, abs), &x) in self.square_sums.iter_mut().zip(&mut self.abs_sums).zip(row)
            {
                let x = f64::from(x);
                *square += x * x;
                *abs += x.abs();
            }
        }
        self.count += (inputs.len() / features) as u64;
        if let Some(h) = &mut self.hessian {
            h.add(inputs);
        }
    }

    /// Each input column's Euclidean norm over the set (Wanda's ‖x_j‖₂).
    pub fn input_norms(&self) -> Vec<f64> {
        self.square_sums.iter().map(|s| s.sqrt()).collect()
    }
}

/// A calibrated method, as the sequential pipeline drives it.
pub trait LayerMethod: Sync {
    /// Whether the projection `name` (`model.layers.{i}.….weight`) is compressed.
    fn targets(&self, name: &str) -> bool;

    /// Whether it needs Σ x xᵀ (GPTQ, SparseGPT) and not only per-column sums.
    fn needs_hessian(&self) -> bool;

    /// The replacement of `name`'s weights (`rows × cols`, row-major): the values the layers
    /// after it are to see. The method keeps whatever else it stores (codes, scales) itself.
    fn compress(
        &self,
        name: &str,
        weights: &[f32],
        cols: usize,
        stats: &InputStats,
        cancel: &Cancel,
    ) -> Result<Vec<f32>, CalibrationError>;
}

/// One layer's pass.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerReport {
    /// The layer.
    pub index: usize,
    /// Of the model's layers.
    pub layers: usize,
    /// The projections compressed.
    pub compressed: Vec<String>,
    /// Wall time of the layer: both passes and the method.
    pub seconds: f64,
    /// Of which the method.
    pub method_seconds: f64,
}

/// Sequences run side by side in one batch of the observing pass: its inputs are kept until
/// the batch is added to the statistics.
const OBSERVE_BATCH: usize = 8;

/// Runs `sequences` through the decoder layer by layer, compressing each layer's targeted
/// projections with `method` before its outputs are passed on; `progress` hears of each layer.
pub fn run_decoder(
    config: DecoderConfig,
    source: &dyn TensorSource,
    sequences: &[Vec<u32>],
    method: &dyn LayerMethod,
    cancel: &Cancel,
    progress: &mut dyn FnMut(&LayerReport),
) -> Result<Vec<LayerReport>, CalibrationError> {
    run_layers(config, source, sequences, method, cancel, progress).map(|(reports, _)| reports)
}

/// [`run_decoder`], also returning the last layer's outputs (before the final norm).
fn run_layers(
    config: DecoderConfig,
    source: &dyn TensorSource,
    sequences: &[Vec<u32>],
    method: &dyn LayerMethod,
    cancel: &Cancel,
    progress: &mut dyn FnMut(&LayerReport),
) -> Result<(Vec<LayerReport>, Vec<Tensor>), CalibrationError> {
    let frame = Frame::new(config, false)?;
    let (hidden_size, layers) = (frame.config().hidden_size, frame.config().num_hidden_layers);
    if sequences.iter().all(|s| s.is_empty()) {
        return Err(CalibrationError::Input(
            "the calibration set has no tokens".into(),
        ));
    }
    let mut hidden = sequences
        .iter()
        .filter(|s| !s.is_empty())
        .map(|seq| {
            let rows = source.rows("model.embed_tokens.weight", seq)?;
            Tensor::from_vec(rows, (1, seq.len(), hidden_size), &Device::Cpu).map_err(runtime)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut reports = Vec::with_capacity(layers);
    for index in 0..layers {
        cancel.check()?;
        let started = Instant::now();
        let mut tensors = layer_tensors(source, index)?;
        let targets: Vec<usize> = (0..tensors.len())
            .filter(|&i| Tap::of(&tensors[i].0).is_some() && method.targets(&tensors[i].0))
            .collect();
        let mut layer = build(&frame, &tensors, index)?;
        let mut method_seconds = 0.0;
        if !targets.is_empty() {
            let taps: Vec<Tap> = Tap::ALL
                .into_iter()
                .filter(|tap| {
                    targets
                        .iter()
                        .any(|&i| Tap::of(&tensors[i].0) == Some(*tap))
                })
                .collect();
            let stats = observe(
                &frame,
                &layer,
                &hidden,
                &taps,
                method.needs_hessian(),
                cancel,
            )?;
            let timer = Instant::now();
            for &i in &targets {
                let (name, shape, values) = &tensors[i];
                let stats = Tap::of(name)
                    .and_then(|tap| stats.get(&tap))
                    .ok_or_else(|| {
                        CalibrationError::Input(format!("{name} has no observed inputs"))
                    })?;
                let cols = shape.get(1).copied().unwrap_or(0);
                let replaced = method.compress(name, values, cols, stats, cancel)?;
                if replaced.len() != values.len() {
                    return Err(CalibrationError::Method {
                        tensor: name.clone(),
                        message: format!(
                            "the method returned {} values for {}",
                            replaced.len(),
                            values.len()
                        ),
                    });
                }
                tensors[i].2 = replaced;
            }
            method_seconds = timer.elapsed().as_secs_f64();
            layer = build(&frame, &tensors, index)?;
        }
        hidden = forward_all(&frame, &layer, hidden, cancel)?;
        let report = LayerReport {
            index,
            layers,
            compressed: targets.iter().map(|&i| tensors[i].0.clone()).collect(),
            seconds: started.elapsed().as_secs_f64(),
            method_seconds,
        };
        progress(&report);
        reports.push(report);
    }
    Ok((reports, hidden))
}

/// Layer `index`'s tensors as f32, with the biases the model has.
fn layer_tensors(source: &dyn TensorSource, index: usize) -> Result<Vec<Named>, CalibrationError> {
    let mut names = DecoderLayer::tensor_names(index);
    for projection in Tap::ALL.iter().flat_map(|t| t.projections()) {
        names.push(format!("model.layers.{index}.{projection}.bias"));
    }
    let mut tensors = Vec::new();
    for name in names {
        match source.read(&name)? {
            Some((shape, values)) => tensors.push((name, shape, values)),
            None if name.ends_with(".bias") => {}
            None => {
                return Err(CalibrationError::Input(format!(
                    "the model has no tensor {name}"
                )));
            }
        }
    }
    Ok(tensors)
}

fn build(frame: &Frame, tensors: &[Named], index: usize) -> Result<DecoderLayer, CalibrationError> {
    let weights = Weights::from_values(tensors.to_vec())?;
    Ok(DecoderLayer::load(&weights, index, frame.qkv_bias())?)
}

fn forward_one(
    frame: &Frame,
    layer: &DecoderLayer,
    x: Tensor,
    tap: &mut dyn FnMut(Tap, &Tensor) -> candle_core::Result<()>,
) -> candle_core::Result<Tensor> {
    let rotation = frame.rotation(0, x.dim(1)?)?;
    frame.layer_forward(layer, x, &rotation, &mut None, 0, tap)
}

fn forward_all(
    frame: &Frame,
    layer: &DecoderLayer,
    hidden: Vec<Tensor>,
    cancel: &Cancel,
) -> Result<Vec<Tensor>, CalibrationError> {
    hidden
        .into_par_iter()
        .map(|x| {
            cancel.check()?;
            forward_one(frame, layer, x, &mut |_, _| Ok(())).map_err(runtime)
        })
        .collect()
}

/// The statistics of `taps` over every sequence through `layer` as it stands.
fn observe(
    frame: &Frame,
    layer: &DecoderLayer,
    hidden: &[Tensor],
    taps: &[Tap],
    hessian: bool,
    cancel: &Cancel,
) -> Result<HashMap<Tap, InputStats>, CalibrationError> {
    let mut stats: HashMap<Tap, InputStats> = HashMap::new();
    for batch in hidden.chunks(OBSERVE_BATCH) {
        cancel.check()?;
        let seen = batch
            .par_iter()
            .map(|x| {
                let mut inputs: Vec<(Tap, Vec<f32>, usize)> = Vec::new();
                forward_one(frame, layer, x.clone(), &mut |tap, t| {
                    if taps.contains(&tap) {
                        let features = t.dims().last().copied().unwrap_or(0);
                        inputs.push((tap, values_of(t, |v| v.to_vec())?, features));
                    }
                    Ok(())
                })
                .map_err(runtime)?;
                Ok(inputs)
            })
            .collect::<Result<Vec<_>, CalibrationError>>()?;
        for (tap, values, features) in seen.into_iter().flatten() {
            stats
                .entry(tap)
                .or_insert_with(|| InputStats::new(features, hessian))
                .add(&values);
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests;
