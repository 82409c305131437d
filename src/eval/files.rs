//! Evaluation of models on disk: the uploaded model's files against an artifact folder, shared
//! by the worker and `squeeze evaluate`, and the raw outputs of one model (`--outputs`), which
//! the tests compare with an independent NumPy forward.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::weights::Weights;
use super::{
    Architecture, Dataset, EvalError, EvalReport, EvalSpec, Figures, Inputs, Limits, ReferenceCache,
};
use crate::numeric::Cancel;

/// The original model as uploaded.
pub struct Original<'a> {
    pub config: Option<&'a serde_json::Value>,
    pub weight_files: &'a [PathBuf],
}

/// The weight files of an artifact folder (safetensors shards or one GGUF file).
pub fn artifact_weight_files(dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "safetensors" || e == "gguf")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(EvalError::Artifact(format!(
            "{} holds no weight file",
            dir.display()
        )));
    }
    Ok(files)
}

/// Refuses a model whose two f32 copies (original and compressed, as the runtime holds them)
/// would not fit in this machine's memory, before anything is loaded.
pub fn check_memory(weight_files: &[PathBuf]) -> Result<(), EvalError> {
    let mut elements = 0u64;
    for path in weight_files {
        let header = crate::formats::safetensors::read_header(path)
            .map_err(|e| EvalError::Model(format!("{}: {e}", path.display())))?;
        elements += header.tensors.iter().map(|t| t.elements()).sum::<u64>();
    }
    let needed = elements.saturating_mul(4 * 2);
    if let Some(total) = memory_total()
        && needed > total / 10 * 7
    {
        return Err(EvalError::Model(format!(
            "evaluation holds the original and the compressed model as f32 ({:.1} GiB); this machine has {:.1} GiB of memory",
            needed as f64 / (1u64 << 30) as f64,
            total as f64 / (1u64 << 30) as f64
        )));
    }
    Ok(())
}

/// The machine's memory (Linux `MemTotal`).
fn memory_total() -> Option<u64> {
    super::latency::proc_kib_field("/proc/meminfo", "MemTotal:")
}

/// Loads the original and recognises its architecture.
pub fn load_original(
    original: &Original<'_>,
    named: Option<&str>,
) -> Result<(Architecture, serde_json::Value, Weights), EvalError> {
    let config = original.config.cloned().unwrap_or(serde_json::Value::Null);
    check_memory(original.weight_files)?;
    let weights = Weights::from_safetensors(original.weight_files)?;
    let shape_of = |name: &str| {
        weights
            .dims(name)
            .map(|d| d.into_iter().map(|x| x as u64).collect())
    };
    let arch = Architecture::detect(&config, named, &shape_of)?;
    Ok((arch, config, weights))
}

/// What earlier evaluations of the same original on the same set left for this one.
#[derive(Default)]
pub struct Earlier<'a> {
    /// The original's figures.
    pub figures: Option<Figures>,
    /// Where the original decoder's outputs are kept.
    pub outputs: Option<ReferenceCache<'a>>,
}

/// Evaluates an artifact folder against the original.
pub fn evaluate_artifact(
    original: &Original<'_>,
    artifact_dir: &Path,
    dataset: &Dataset,
    spec: &EvalSpec,
    earlier: Earlier<'_>,
    cancel: &Cancel,
    progress: &dyn Fn(&super::EvalProgress),
) -> Result<EvalReport, EvalError> {
    let (arch, config, original_weights) = load_original(original, spec.architecture.as_deref())?;
    cancel.check()?;
    let files = artifact_weight_files(artifact_dir)?;
    let compressed = Weights::from_artifact(
        &files,
        &original_weights.names(),
        config["model_type"]
            .as_str()
            .or(spec.architecture.as_deref()),
    )?;
    cancel.check()?;
    let mut report = super::evaluate(
        Inputs {
            architecture: &arch,
            config: &config,
            dataset,
            original: &original_weights,
            compressed: &compressed,
            reuse: earlier.figures,
            reference: earlier.outputs,
            metric: spec.metric.as_deref(),
            max_drop: spec.max_drop,
            limits: Limits::default(),
            progress,
        },
        cancel,
    )?;
    report.dataset_id = Some(spec.dataset_id);
    Ok(report)
}

/// One model's raw outputs on the first item of the set, as named tensors: `logits`
/// `[tokens, vocab]` (decoders), `embedding` `[1, hidden]` and `hidden` `[1, tokens, hidden]`
/// (encoders), `logits` `[rows, classes]` for every row (classifiers).
pub fn outputs(
    arch: &Architecture,
    config: &serde_json::Value,
    weights: &Weights,
    dataset: &Dataset,
) -> Result<HashMap<String, Tensor>, EvalError> {
    let rt = super::weights::runtime;
    let first_tokens = || match dataset {
        Dataset::Tokens(s) => Ok(s[0].tokens.clone()),
        Dataset::Tensors { .. } => Err(EvalError::Model("a token model needs a token set".into())),
    };
    let mut out = HashMap::new();
    match arch {
        Architecture::Decoder { model_type, .. } => {
            let mut c = config.clone();
            c["model_type"] = model_type.as_str().into();
            let parsed = serde_json::from_value(c).map_err(|e| EvalError::Model(e.to_string()))?;
            let model = super::decoder::Decoder::load(parsed, weights)?;
            let logits = model.forward(&first_tokens()?, &mut Default::default())?;
            out.insert("logits".to_owned(), logits);
        }
        Architecture::Encoder { .. } => {
            let model = super::encoder::Encoder::load(config, weights)?;
            let tokens = first_tokens()?;
            let (hidden, _) = model.hidden(&[&tokens])?;
            let (embedding, _) = model.embed(&[&tokens])?;
            let h = embedding[0].len();
            out.insert("hidden".to_owned(), hidden);
            out.insert(
                "embedding".to_owned(),
                Tensor::from_vec(embedding.concat(), (1, h), &Device::Cpu).map_err(rt)?,
            );
        }
        Architecture::Mlp { config, .. } => {
            let Dataset::Tensors {
                inputs, features, ..
            } = dataset
            else {
                return Err(EvalError::Model("a classifier needs a tensors set".into()));
            };
            let model = super::mlp::Mlp::load(config, weights)?;
            let logits = model.logits(inputs, *features)?;
            let (rows, classes) = (logits.len(), logits[0].len());
            out.insert(
                "logits".to_owned(),
                Tensor::from_vec(logits.concat(), (rows, classes), &Device::Cpu).map_err(rt)?,
            );
        }
    }
    Ok(out)
}
