//! The pre-pass of a calibrated first stage (Wanda, SparseGPT, GPTQ): the job's calibration
//! set is taken through the original decoder layer by layer (`calibrate::sequential`), each
//! selected projection is pruned or quantized by the method from what its inputs looked like,
//! and its new values (and GPTQ's codes and scales) are spilled to a scratch file in the output
//! folder. The main pass then reads each tensor's values back in place of the stored ones
//! (`Step::Calibrated`), so the later stages, the writers and the metrics (measured against the
//! original weights) run as for any recipe; GPTQ's codes become the tensor's stored form.
//! Memory stays at one layer's weights and statistics plus the calibration set's activations;
//! the scratch file is removed when the run ends, however it ends.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::calibrate::gptq::{self, GptqError, GptqOptions};
use crate::calibrate::sequential::{
    self, CalibrationError, InputStats, LayerMethod, SafetensorsSource,
};
use crate::calibrate::sparsegpt::{self, SparseGptOptions};
use crate::calibrate::{Pattern, wanda};
use crate::compress::encoded::Encoded;
use crate::compress::quantize::{IntScheme, QParams};
use crate::compress::step::Step;
use crate::eval::dataset::{self, Dataset};
use crate::eval::decoder::{DecoderConfig, Tap};
use crate::formats::safetensors::Header;
use crate::jobs::recipe::{Calibration, Prune, Recipe, Selection, Stage};
use crate::numeric::Cancel;

use super::files::{InputFile, InputKind, PipelineError};

/// Name of the scratch file inside the output folder while a run holds it.
const SPILL_NAME: &str = ".calibrated-values.scratch";

/// The calibrated values of every projection the first stage pruned, spilled to disk.
pub(super) struct CalibratedValues {
    file: File,
    path: PathBuf,
    /// Tensor name → where its values are in the scratch file.
    index: HashMap<String, Spilled>,
    /// What recipe.json records of the calibration: the set's file name and BLAKE3, the
    /// sequences and tokens used, the method's settings.
    pub(super) provenance: serde_json::Value,
}

impl Drop for CalibratedValues {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One tensor's share of the scratch file: its values, and for GPTQ its codes (a byte each)
/// and parameters (scale and zero-point, 4 bytes each).
#[derive(Debug, Clone, Copy)]
struct Spilled {
    at: u64,
    values: usize,
    params: usize,
}

impl CalibratedValues {
    /// GPTQ's stored form of the tensor (its codes and each group's parameters under
    /// `scheme`), when the pre-pass quantized it.
    pub(super) fn encoded(&self, name: &str, scheme: IntScheme) -> io::Result<Option<Encoded>> {
        let Some(spilled) = self.index.get(name).filter(|s| s.params > 0) else {
            return Ok(None);
        };
        let mut bytes = vec![0u8; spilled.values + spilled.params * 8];
        self.file
            .read_exact_at(&mut bytes, spilled.at + spilled.values as u64 * 4)?;
        let (codes, params) = bytes.split_at(spilled.values);
        let word = |b: &[u8]| <[u8; 4]>::try_from(b).expect("four bytes");
        Ok(Some(Encoded::Int {
            scheme,
            codes: codes.iter().map(|&c| c as i8).collect(),
            params: params
                .chunks_exact(8)
                .map(|p| QParams {
                    scale: f32::from_le_bytes(word(&p[..4])),
                    zero_point: i32::from_le_bytes(word(&p[4..])),
                })
                .collect(),
        }))
    }

    /// The tensor's calibrated values, when the pre-pass made some for it.
    pub(super) fn values(&self, name: &str) -> io::Result<Option<Vec<f32>>> {
        let Some(spilled) = self.index.get(name) else {
            return Ok(None);
        };
        let mut bytes = vec![0u8; spilled.values * 4];
        self.file.read_exact_at(&mut bytes, spilled.at)?;
        Ok(Some(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("four bytes")))
                .collect(),
        ))
    }
}

/// Which calibrated method the stage names.
#[derive(Debug, Clone, Copy)]
enum Method {
    Wanda(Pattern),
    SparseGpt(Pattern),
    Gptq,
}

/// Runs the pre-pass when the recipe's first stage is calibrated (None otherwise): checks
/// that every selected tensor is a decoder projection and that there is a calibration set,
/// then compresses layer by layer into a scratch file in `out_dir`.
pub(super) fn prepare(
    inputs: &[InputFile],
    weights: &[(&InputFile, Header)],
    recipe: &Recipe,
    selection: &Selection,
    out_dir: &std::path::Path,
    cancel: &Cancel,
) -> Result<Option<CalibratedValues>, PipelineError> {
    let Some(stage) = recipe.stages.first().filter(|s| s.is_calibrated()) else {
        return Ok(None);
    };
    let settings = recipe.calibration.unwrap_or_default();
    let name = stage.calibrated_method().unwrap_or("calibration");
    let method = match stage {
        Stage::Prune(prune) => {
            let pattern = prune
                .calibrated()
                .and_then(|(_, amount)| amount.pattern())
                .ok_or_else(|| PipelineError::Input(format!("{name}: no sparsity or pattern")))?;
            match prune {
                Prune::Wanda(_) => Method::Wanda(pattern),
                _ => Method::SparseGpt(pattern),
            }
        }
        _ => Method::Gptq,
    };
    let config = decoder_config(inputs, name)?;
    let projections: Vec<String> = (0..config.num_hidden_layers)
        .flat_map(|i| {
            Tap::ALL
                .iter()
                .flat_map(|t| t.projections())
                .map(move |p| format!("model.layers.{i}.{p}.weight"))
        })
        .collect();
    let mut targets = HashMap::new();
    for t in weights.iter().flat_map(|(_, h)| &h.tensors) {
        if !selection.selects(&t.name, t.dtype, &t.shape) {
            continue;
        }
        if !projections.contains(&t.name) {
            return Err(PipelineError::Input(format!(
                "stage 1: {name} compresses the linear projections of a decoder's layers from their inputs; tensor {:?} is not one of them (leave it out with ignore)",
                t.name
            )));
        }
        // GPTQ's scheme as the plan gives it for this tensor's dtype (compressed-tensors keeps
        // the scales in the weight's dtype, and GPTQ rounds them as the stored form will).
        let scheme = recipe.steps_for(t.dtype).into_iter().find_map(|s| match s {
            Step::Int(scheme) => Some(scheme),
            _ => None,
        });
        targets.insert(t.name.clone(), scheme);
    }
    let set = calibration_sequences(inputs, name, &settings)?;
    let sequences = set.sequences;
    // Which rows: the first `sequences` of the set's `set_sequences`, each cut to
    // `sequence_length` tokens.
    let provenance = serde_json::json!({
        "set": set.name,
        "set_blake3": set.blake3,
        "set_sequences": set.in_set,
        "sequences": sequences.len(),
        "tokens": sequences.iter().map(Vec::len).sum::<usize>(),
        "settings": settings,
    });

    let path = out_dir.join(SPILL_NAME);
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let mut values = CalibratedValues {
        file,
        path,
        index: HashMap::new(),
        provenance,
    };
    let calibrator = Calibrator {
        method,
        dampening: settings.dampening,
        act_order: settings.act_order,
        targets,
        spill: Mutex::new(Spill {
            file: io::BufWriter::new(values.file.try_clone()?),
            at: 0,
            index: HashMap::new(),
        }),
    };
    let paths: Vec<PathBuf> = weights.iter().map(|(i, _)| i.path.clone()).collect();
    let source = SafetensorsSource::open(&paths).map_err(calibration_error)?;
    sequential::run_decoder(
        config,
        &source,
        &sequences,
        &calibrator,
        cancel,
        &mut |layer| {
            tracing::info!(
                method = name,
                layer = layer.index + 1,
                layers = layer.layers,
                seconds = format!("{:.1}", layer.seconds),
                "calibrated layer done"
            );
        },
    )
    .map_err(calibration_error)?;
    let mut spill = calibrator
        .spill
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    spill.file.flush()?;
    values.index = std::mem::take(&mut spill.index);
    Ok(Some(values))
}

fn calibration_error(e: CalibrationError) -> PipelineError {
    match e {
        CalibrationError::Canceled => PipelineError::Canceled,
        CalibrationError::Io(e) => PipelineError::Io(e),
        CalibrationError::Input(m) => PipelineError::Input(format!("calibration: {m}")),
        CalibrationError::Method { tensor, message } => {
            PipelineError::Input(format!("calibration: tensor {tensor:?}: {message}"))
        }
    }
}

/// The model's `config.json` as a decoder the calibration forward runs.
fn decoder_config(inputs: &[InputFile], method: &str) -> Result<DecoderConfig, PipelineError> {
    let config = inputs
        .iter()
        .find(|i| i.kind == InputKind::Other && i.name == "config.json")
        .ok_or_else(|| {
            PipelineError::Input(format!(
                "stage 1: {method} runs the model on its calibration set and needs its config.json"
            ))
        })?;
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&config.path)?)
        .map_err(|e| PipelineError::Input(format!("config.json is not JSON: {e}")))?;
    let model_type = json["model_type"].as_str().unwrap_or("");
    if !matches!(model_type, "llama" | "mistral" | "qwen2") {
        return Err(PipelineError::Input(format!(
            "stage 1: {method} runs Llama-family decoders (llama, mistral, qwen2); config.json says model_type {model_type:?}"
        )));
    }
    let parsed: DecoderConfig = serde_json::from_value(json)
        .map_err(|e| PipelineError::Input(format!("config.json: {e}")))?;
    parsed
        .check()
        .map_err(|e| PipelineError::Input(e.to_string()))?;
    Ok(parsed)
}

/// The calibration set's first `samples` sequences, each cut to `sequence_length` tokens: a
/// token JSONL file as evaluation sets are, or UTF-8 text (`.txt`) tokenized with the model's
/// `tokenizer.json` into windows of that length.
fn calibration_sequences(
    inputs: &[InputFile],
    method: &str,
    settings: &Calibration,
) -> Result<CalibrationSet, PipelineError> {
    let set = inputs
        .iter()
        .find(|i| i.kind == InputKind::Calibration)
        .ok_or_else(|| {
            PipelineError::Input(format!(
                "stage 1: {method} needs a calibration set (squeeze compress --calibration FILE)"
            ))
        })?;
    let mut bytes = std::fs::read(&set.path)?;
    let digest = blake3::hash(&bytes).to_hex().to_string();
    if set.name.ends_with(".txt") {
        let tokenizer = inputs
            .iter()
            .find(|i| i.kind == InputKind::Other && i.name == "tokenizer.json")
            .ok_or_else(|| {
                PipelineError::Input(
                    "a text calibration set is tokenized with the model's tokenizer.json, which the model does not have; give token sequences (JSONL) instead".into(),
                )
            })?;
        bytes = dataset::tokenize_text(
            &std::fs::read(&tokenizer.path)?,
            &bytes,
            settings.sequence_length,
        )
        .map_err(|e| PipelineError::Input(format!("calibration set: {e}")))?;
    }
    let (parsed, _) = dataset::parse(&bytes)
        .map_err(|e| PipelineError::Input(format!("calibration set: {e}")))?;
    let Dataset::Tokens(sequences) = parsed else {
        return Err(PipelineError::Input(
            "calibration set: a decoder calibrates on token sequences, not tensors".into(),
        ));
    };
    let in_set = sequences.iter().filter(|s| !s.tokens.is_empty()).count();
    let sequences: Vec<Vec<u32>> = sequences
        .into_iter()
        .filter(|s| !s.tokens.is_empty())
        .take(settings.samples)
        .map(|s| {
            let mut tokens = s.tokens;
            tokens.truncate(settings.sequence_length.max(1));
            tokens
        })
        .collect();
    if sequences.is_empty() {
        return Err(PipelineError::Input("calibration set: no tokens".into()));
    }
    Ok(CalibrationSet {
        name: set.name.clone(),
        blake3: digest,
        in_set,
        sequences,
    })
}

/// The sequences a pre-pass runs, and what identifies them.
struct CalibrationSet {
    /// The set's file name.
    name: String,
    /// BLAKE3 of the file as read.
    blake3: String,
    /// Non-empty sequences in the set (the run takes the first of them).
    in_set: usize,
    sequences: Vec<Vec<u32>>,
}

/// Where pruned projections go as the layers are done.
struct Spill {
    file: io::BufWriter<File>,
    at: u64,
    index: HashMap<String, Spilled>,
}

/// The method as the sequential pass drives it: prunes or quantizes each selected projection
/// and spills the result.
struct Calibrator {
    method: Method,
    dampening: f64,
    act_order: bool,
    /// Each selected projection, with its integer scheme when the method quantizes.
    targets: HashMap<String, Option<IntScheme>>,
    spill: Mutex<Spill>,
}

impl LayerMethod for Calibrator {
    fn targets(&self, name: &str) -> bool {
        self.targets.contains_key(name)
    }

    fn needs_hessian(&self) -> bool {
        !matches!(self.method, Method::Wanda(_))
    }

    fn compress(
        &self,
        name: &str,
        weights: &[f32],
        cols: usize,
        stats: &InputStats,
        cancel: &Cancel,
    ) -> Result<Vec<f32>, CalibrationError> {
        let failed = |message: String| CalibrationError::Method {
            tensor: name.to_owned(),
            message,
        };
        let hessian = || {
            stats
                .hessian
                .as_ref()
                .ok_or_else(|| failed("no Σ x xᵀ was gathered".into()))
        };
        let method_error = |e: GptqError| match e {
            GptqError::Canceled => CalibrationError::Canceled,
            e => failed(e.to_string()),
        };
        let (values, codes) = match self.method {
            Method::Wanda(pattern) => (
                wanda::prune(weights, cols, &stats.input_norms(), pattern).map_err(failed)?,
                None,
            ),
            Method::SparseGpt(pattern) => {
                let options = SparseGptOptions {
                    dampening: self.dampening,
                    ..SparseGptOptions::default()
                };
                let pruned =
                    sparsegpt::prune(weights, cols, hessian()?, pattern, None, options, cancel)
                        .map_err(method_error)?;
                (pruned.values, None)
            }
            Method::Gptq => {
                let scheme = self
                    .targets
                    .get(name)
                    .copied()
                    .flatten()
                    .ok_or_else(|| failed("no integer scheme".into()))?;
                let options = GptqOptions {
                    dampening: self.dampening,
                    act_order: self.act_order,
                    ..GptqOptions::default()
                };
                let quantized = gptq::quantize(weights, cols, hessian()?, scheme, options, cancel)
                    .map_err(method_error)?;
                (quantized.values, Some((quantized.codes, quantized.params)))
            }
        };
        let mut bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut params_count = 0;
        if let Some((codes, params)) = &codes {
            bytes.extend(codes.iter().map(|&c| c as u8));
            for p in params {
                bytes.extend(p.scale.to_le_bytes());
                bytes.extend(p.zero_point.to_le_bytes());
            }
            params_count = params.len();
        }
        let mut spill = self.spill.lock().unwrap_or_else(|e| e.into_inner());
        spill.file.write_all(&bytes)?;
        let at = spill.at;
        spill.index.insert(
            name.to_owned(),
            Spilled {
                at,
                values: values.len(),
                params: params_count,
            },
        );
        spill.at += bytes.len() as u64;
        Ok(values)
    }
}
