//! Evaluation: the original and the compressed model run side by side in candle on the
//! worker's CPU, on the user's evaluation set, giving accuracy figures (perplexity, KL and
//! top-1 agreement for decoders; embedding cosine and accuracy for encoders; accuracy and its
//! curve under input noise for classifiers) and latency figures, and the verdict against the
//! user's budget. Pure and synchronous like `compress`: no database, no HTTP; the worker runs
//! it on the rayon pool (candle's matmuls use the pool they are called from).

pub mod dataset;
pub mod decoder;
pub mod encoder;
pub mod files;
pub mod latency;
pub mod metrics;
pub mod mlp;
pub mod weights;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::compress::Cancel;
pub use dataset::{Dataset, DatasetStats};
use latency::{Budget, Measure};
use weights::{Kernel, Weights};

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The model cannot be evaluated as configured.
    #[error("{0}")]
    Model(String),
    /// The artifact could not be read back.
    #[error("the artifact cannot be read: {0}")]
    Artifact(String),
    /// The runtime refused (shapes that do not fit the configuration, mostly).
    #[error("runtime: {0}")]
    Runtime(String),
    #[error("canceled")]
    Canceled,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<crate::compress::Canceled> for EvalError {
    fn from(_: crate::compress::Canceled) -> Self {
        EvalError::Canceled
    }
}

/// A job's `eval` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    /// The evaluation set (`POST /api/v1/datasets`).
    pub dataset_id: Uuid,
    /// The figure the budget applies to; by default `perplexity` for decoders, `cosine_mean`
    /// for encoders (`accuracy` when the set is labelled and the model has a head), `accuracy`
    /// for classifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// The largest acceptable drop of `metric` against the original: an absolute drop for
    /// figures where higher is better (accuracy 0.98 → 0.97 is a drop of 0.01), a relative
    /// increase for perplexity (0.05 allows 5 % higher), an absolute increase for KL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub max_drop: Option<f64>,
    /// Overrides the architecture recognised from `config.json`: `llama`, `mistral`, `qwen2`,
    /// `bert` or `mlp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
}

/// What a model is, as far as evaluation goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Architecture {
    Decoder {
        model_type: String,
        vocab_size: usize,
    },
    Encoder {
        vocab_size: usize,
        max_positions: usize,
        labels: Option<usize>,
    },
    Mlp {
        config: mlp::MlpConfig,
        inputs: usize,
        classes: usize,
    },
}

/// The architectures recognised, by `model_type`.
pub const ARCHITECTURES: [&str; 5] = ["llama", "mistral", "qwen2", "bert", "mlp"];

impl Architecture {
    /// Recognises a model from its `config.json` (or the name given in the job) and the shapes
    /// of its tensors.
    pub fn detect(
        config: &serde_json::Value,
        named: Option<&str>,
        shape_of: &dyn Fn(&str) -> Option<Vec<u64>>,
    ) -> Result<Architecture, EvalError> {
        let model_type = named
            .or(config["model_type"].as_str())
            .ok_or_else(|| {
                EvalError::Model(
                    "the model has no config.json with a model_type; name the architecture in the job's eval section".into(),
                )
            })?;
        match model_type {
            "llama" | "mistral" | "qwen2" => {
                let mut with_type = config.clone();
                with_type["model_type"] = model_type.into();
                let parsed: decoder::DecoderConfig = serde_json::from_value(with_type)
                    .map_err(|e| EvalError::Model(format!("config.json: {e}")))?;
                parsed.check()?;
                Ok(Architecture::Decoder {
                    model_type: model_type.to_owned(),
                    vocab_size: parsed.vocab_size,
                })
            }
            "bert" => {
                let parsed = encoder::parse_config(config)?;
                Ok(Architecture::Encoder {
                    vocab_size: parsed.vocab_size,
                    max_positions: parsed.max_position_embeddings,
                    labels: shape_of("classifier.weight")
                        .and_then(|s| s.first().map(|&n| n as usize)),
                })
            }
            "mlp" => {
                let parsed = mlp::MlpConfig::parse(config)?;
                let shape = |layer: &String| {
                    shape_of(&format!("{layer}.weight"))
                        .filter(|s| s.len() == 2)
                        .ok_or_else(|| {
                            EvalError::Model(format!("the mlp has no 2-D weight {layer}.weight"))
                        })
                };
                let first = shape(&parsed.layers[0])?;
                let last = shape(parsed.layers.last().expect("at least one layer"))?;
                Ok(Architecture::Mlp {
                    inputs: first[1] as usize,
                    classes: last[0] as usize,
                    config: parsed,
                })
            }
            other => Err(EvalError::Model(format!(
                "model_type {other:?} cannot be evaluated; the runtime knows {}",
                ARCHITECTURES.join(", ")
            ))),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Architecture::Decoder { model_type, .. } => model_type,
            Architecture::Encoder { .. } => "bert",
            Architecture::Mlp { .. } => "mlp",
        }
    }

    /// The dataset encoding it takes.
    pub fn dataset_kind(&self) -> &'static str {
        match self {
            Architecture::Mlp { .. } => "tensors",
            _ => "tokens",
        }
    }

    pub fn vocab_size(&self) -> Option<usize> {
        match self {
            Architecture::Decoder { vocab_size, .. } | Architecture::Encoder { vocab_size, .. } => {
                Some(*vocab_size)
            }
            Architecture::Mlp { .. } => None,
        }
    }

    /// The figures a job may name as its budget metric, the default first.
    pub fn metrics(&self, labelled: bool) -> Vec<&'static str> {
        match self {
            Architecture::Decoder { .. } => {
                vec!["perplexity", "kl_mean", "kl_p99", "top1_agreement"]
            }
            Architecture::Encoder { labels, .. } => {
                if labelled && labels.is_some() {
                    vec!["accuracy", "cosine_mean", "cosine_min"]
                } else {
                    vec!["cosine_mean", "cosine_min"]
                }
            }
            Architecture::Mlp { .. } => {
                let mut m = vec!["accuracy"];
                m.extend(NOISE_METRICS);
                m
            }
        }
    }
}

/// Noise levels of the classifier robustness curve, in standard deviations of the inputs.
pub const NOISE_LEVELS: [f64; 3] = [0.25, 0.5, 1.0];
const NOISE_METRICS: [&str; 3] = [
    "accuracy_noise_0.25",
    "accuracy_noise_0.5",
    "accuracy_noise_1",
];

/// Whether a lower value of the metric is better.
pub fn lower_is_better(metric: &str) -> bool {
    metric == "perplexity" || metric.starts_with("kl_") || metric.starts_with("latency")
}

/// The figures of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Figures {
    /// Accuracy figures by name (`perplexity`, `kl_mean`, `kl_p99`, `top1_agreement`,
    /// `cosine_mean`, `cosine_min`, `accuracy`, `accuracy_noise_<σ>`), and `latency_ms`: the
    /// headline latency (ms per generated token for decoders, ms per single-row batch
    /// otherwise).
    #[serde(with = "crate::numeric::metric::map")]
    #[schema(value_type = BTreeMap<String, crate::numeric::Metric>)]
    pub metrics: BTreeMap<String, f64>,
    /// Every latency measurement.
    pub latency: Vec<Measure>,
    /// `dense` (f32 weights, dequantized where the artifact stores another form) or `native`
    /// (candle's quantized matmul on the stored GGUF blocks).
    pub kernel: String,
    /// The GGUF block types multiplied natively.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_types: Vec<String>,
    /// Bytes of the weights in the runtime.
    pub weights_bytes: u64,
}

/// Where the figures were measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Runtime {
    pub cpu: String,
    pub threads: u64,
    /// `candle <version>`.
    pub engine: String,
}

impl Runtime {
    pub fn here() -> Runtime {
        Runtime {
            cpu: latency::cpu_model(),
            threads: rayon::current_num_threads() as u64,
            engine: "candle 0.11".into(),
        }
    }
}

/// An evaluation's results (the job's `result.eval`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvalReport {
    pub dataset_id: Option<Uuid>,
    pub architecture: String,
    /// Sequences or rows evaluated.
    pub evaluated: u64,
    pub original: Figures,
    pub compressed: Figures,
    /// Original latency / compressed latency (headline figures): above 1 is faster.
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub speedup: f64,
    pub runtime: Runtime,
    /// Whether the original's figures came from an earlier job on the same model, set and CPU.
    pub original_reused: bool,
    /// The budget's metric.
    pub metric: String,
    /// How much `metric` dropped (see `max_drop`).
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub drop: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_drop: Option<f64>,
    /// `drop <= max_drop`, when a budget was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<bool>,
}

/// How far `metric` moved for the worse from `original` to `compressed`.
pub fn drop_of(metric: &str, original: f64, compressed: f64) -> f64 {
    if metric == "perplexity" {
        compressed / original - 1.0
    } else if lower_is_better(metric) {
        compressed - original
    } else {
        original - compressed
    }
}

/// Limits on how much of a set is used.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sequences (token sets) or rows (the whole set is used for tensor sets up to this).
    pub max_sequences: usize,
    /// Tokens per sequence (longer ones are cut).
    pub max_tokens: usize,
    pub budget: Budget,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sequences: 64,
            max_tokens: 512,
            budget: Budget::default(),
        }
    }
}

/// Everything one evaluation needs.
pub struct Inputs<'a> {
    pub architecture: &'a Architecture,
    pub config: &'a serde_json::Value,
    pub dataset: &'a Dataset,
    pub original: &'a Weights,
    pub compressed: &'a Weights,
    /// The original's figures from an earlier run on this model, set and CPU.
    pub reuse: Option<Figures>,
    pub metric: Option<&'a str>,
    pub max_drop: Option<f64>,
    pub limits: Limits,
}

/// Runs both models and compares them.
pub fn evaluate(inputs: Inputs<'_>, cancel: &Cancel) -> Result<EvalReport, EvalError> {
    let (mut original, mut compressed, evaluated) = match inputs.architecture {
        Architecture::Decoder { .. } => run_decoder(&inputs, cancel)?,
        Architecture::Encoder { .. } => run_encoder(&inputs, cancel)?,
        Architecture::Mlp { config, .. } => run_mlp(&inputs, config, cancel)?,
    };
    let original_reused = inputs.reuse.is_some();
    if let Some(reused) = inputs.reuse.clone() {
        // Comparative figures (KL, agreement, cosine) are recomputed each time; the original's
        // own figures and latency come from the first measurement.
        for (k, v) in reused.metrics {
            original.metrics.insert(k, v);
        }
        original.latency = reused.latency;
    }
    for figures in [&mut original, &mut compressed] {
        if let Some(headline) = figures.latency.first() {
            figures
                .metrics
                .insert("latency_ms".into(), headline.median_ms);
        }
    }
    let labelled = match inputs.dataset {
        Dataset::Tokens(s) => s.iter().any(|s| s.label.is_some()),
        Dataset::Tensors { .. } => true,
    };
    let allowed = inputs.architecture.metrics(labelled);
    let metric = inputs.metric.unwrap_or(allowed[0]).to_owned();
    let (o, c) = (
        original.metrics.get(&metric).copied().unwrap_or(f64::NAN),
        compressed.metrics.get(&metric).copied().unwrap_or(f64::NAN),
    );
    let drop = drop_of(&metric, o, c);
    let speedup = match (
        original.metrics.get("latency_ms"),
        compressed.metrics.get("latency_ms"),
    ) {
        (Some(o), Some(c)) if *c > 0.0 => o / c,
        _ => f64::NAN,
    };
    Ok(EvalReport {
        dataset_id: None,
        architecture: inputs.architecture.name().to_owned(),
        evaluated,
        original,
        compressed,
        speedup,
        runtime: Runtime::here(),
        original_reused,
        accepted: inputs.max_drop.map(|max| drop <= max),
        max_drop: inputs.max_drop,
        metric,
        drop,
    })
}

/// Empty figures of a model.
fn figures(weights: &Weights) -> Figures {
    let (kernel, kernel_types) = match weights.kernel() {
        Kernel::Dense => ("dense".to_owned(), Vec::new()),
        Kernel::Native(types) => ("native".to_owned(), types.into_iter().collect()),
    };
    Figures {
        metrics: BTreeMap::new(),
        latency: Vec::new(),
        kernel,
        kernel_types,
        weights_bytes: weights.bytes(),
    }
}

fn token_sequences<'a>(inputs: &'a Inputs<'_>) -> Vec<&'a [u32]> {
    match inputs.dataset {
        Dataset::Tokens(seqs) => seqs
            .iter()
            .take(inputs.limits.max_sequences)
            .map(|s| &s.tokens[..s.tokens.len().min(inputs.limits.max_tokens)])
            .collect(),
        Dataset::Tensors { .. } => Vec::new(),
    }
}

/// `n` tokens taken in turn from the set (for latency prompts longer than any one sequence).
fn cycled_tokens(sequences: &[&[u32]], n: usize) -> Vec<u32> {
    sequences
        .iter()
        .flat_map(|s| s.iter().copied())
        .cycle()
        .take(n)
        .collect()
}

type Run = (Figures, Figures, u64);

fn run_decoder(inputs: &Inputs<'_>, cancel: &Cancel) -> Result<Run, EvalError> {
    let Architecture::Decoder { model_type, .. } = inputs.architecture else {
        unreachable!("called for decoders")
    };
    let mut config = inputs.config.clone();
    config["model_type"] = model_type.as_str().into();
    let parsed: decoder::DecoderConfig = serde_json::from_value(config)
        .map_err(|e| EvalError::Model(format!("config.json: {e}")))?;
    let original = decoder::Decoder::load(parsed.clone(), inputs.original)?;
    let compressed = decoder::Decoder::load(parsed.clone(), inputs.compressed)?;
    let sequences = token_sequences(inputs);
    let mut stats = metrics::NextToken::default();
    for seq in &sequences {
        cancel.check()?;
        let lo = decoder::log_softmax_rows(&original.forward(seq, &mut Default::default())?)?;
        let lc = decoder::log_softmax_rows(&compressed.forward(seq, &mut Default::default())?)?;
        stats.add(seq, &lo, &lc);
    }
    let mut fo = figures(inputs.original);
    let mut fc = figures(inputs.compressed);
    fo.metrics
        .insert("perplexity".into(), stats.perplexity_original());
    fc.metrics
        .insert("perplexity".into(), stats.perplexity_compressed());
    for (f, kl_mean, kl_p99, agree) in [
        (&mut fo, 0.0, 0.0, 1.0),
        (
            &mut fc,
            stats.kl_mean(),
            stats.kl_p99(),
            stats.top1_agreement(),
        ),
    ] {
        f.metrics.insert("kl_mean".into(), kl_mean);
        f.metrics.insert("kl_p99".into(), kl_p99);
        f.metrics.insert("top1_agreement".into(), agree);
    }
    let context = cycled_tokens(&sequences, 16);
    let prompt_len = 128.min(parsed.max_position_embeddings.unwrap_or(128));
    let prompt = cycled_tokens(&sequences, prompt_len);
    let measure = |model: &decoder::Decoder| -> Result<Vec<Measure>, EvalError> {
        let mut prefilled = decoder::Cache::default();
        model.forward(&context, &mut prefilled)?;
        let next = [context[0]];
        let (median, p90, repeats) = latency::time(inputs.limits.budget, || {
            cancel.check()?;
            let mut cache = prefilled.clone();
            model.forward(&next, &mut cache).map(|_| ())
        })?;
        let decode = Measure {
            name: "decode_token".into(),
            batch: 1,
            tokens: Some(1),
            median_ms: median,
            p90_ms: p90,
            repeats,
        };
        let (median, p90, repeats) = latency::time(inputs.limits.budget, || {
            cancel.check()?;
            model.forward(&prompt, &mut Default::default()).map(|_| ())
        })?;
        let whole = Measure {
            name: "prompt".into(),
            batch: 1,
            tokens: Some(prompt.len() as u64),
            median_ms: median,
            p90_ms: p90,
            repeats,
        };
        Ok(vec![decode, whole])
    };
    if inputs.reuse.is_none() {
        fo.latency = measure(&original)?;
    }
    fc.latency = measure(&compressed)?;
    for f in [&mut fo, &mut fc] {
        if let Some(p) = f.latency.get(1) {
            f.metrics.insert(
                "prompt_tokens_per_s".into(),
                p.tokens.unwrap_or(0) as f64 / (p.median_ms / 1e3),
            );
        }
    }
    Ok((fo, fc, sequences.len() as u64))
}

/// Sizes of the larger batch in batch latency.
const LARGE_BATCH: usize = 16;

fn run_encoder(inputs: &Inputs<'_>, cancel: &Cancel) -> Result<Run, EvalError> {
    let original = encoder::Encoder::load(inputs.config, inputs.original)?;
    let compressed = encoder::Encoder::load(inputs.config, inputs.compressed)?;
    let limited: Vec<&[u32]> = token_sequences(inputs)
        .into_iter()
        .map(|s| &s[..s.len().min(original.max_positions())])
        .collect();
    let labels: Vec<Option<u32>> = match inputs.dataset {
        Dataset::Tokens(s) => s.iter().take(limited.len()).map(|s| s.label).collect(),
        Dataset::Tensors { .. } => Vec::new(),
    };
    let mut cosines = Vec::new();
    let (mut right_o, mut right_c, mut labelled) = (0u64, 0u64, 0u64);
    for (seq, label) in limited.iter().zip(&labels) {
        cancel.check()?;
        let (eo, lo) = original.embed(&[seq])?;
        let (ec, lc) = compressed.embed(&[seq])?;
        cosines.push(metrics::cosine(&eo[0], &ec[0]));
        if let (Some(y), Some(lo), Some(lc)) = (label, lo, lc) {
            labelled += 1;
            right_o += (metrics::argmax(&lo[0]) == *y as usize) as u64;
            right_c += (metrics::argmax(&lc[0]) == *y as usize) as u64;
        }
    }
    let mut fo = figures(inputs.original);
    let mut fc = figures(inputs.compressed);
    fo.metrics.insert("cosine_mean".into(), 1.0);
    fo.metrics.insert("cosine_min".into(), 1.0);
    fc.metrics.insert(
        "cosine_mean".into(),
        cosines.iter().sum::<f64>() / cosines.len().max(1) as f64,
    );
    fc.metrics.insert(
        "cosine_min".into(),
        cosines.iter().cloned().fold(f64::INFINITY, f64::min),
    );
    if labelled > 0 {
        fo.metrics
            .insert("accuracy".into(), right_o as f64 / labelled as f64);
        fc.metrics
            .insert("accuracy".into(), right_c as f64 / labelled as f64);
    }
    let sample = limited[0];
    let measure = |model: &encoder::Encoder| -> Result<Vec<Measure>, EvalError> {
        [1, LARGE_BATCH]
            .into_iter()
            .map(|batch| {
                let rows = vec![sample; batch];
                let (median, p90, repeats) = latency::time(inputs.limits.budget, || {
                    cancel.check()?;
                    model.hidden(&rows).map(|_| ())
                })?;
                Ok(Measure {
                    name: "batch".into(),
                    batch: batch as u64,
                    tokens: Some(sample.len() as u64),
                    median_ms: median,
                    p90_ms: p90,
                    repeats,
                })
            })
            .collect()
    };
    if inputs.reuse.is_none() {
        fo.latency = measure(&original)?;
    }
    fc.latency = measure(&compressed)?;
    Ok((fo, fc, limited.len() as u64))
}

fn run_mlp(
    inputs: &Inputs<'_>,
    config: &mlp::MlpConfig,
    cancel: &Cancel,
) -> Result<Run, EvalError> {
    let Dataset::Tensors {
        inputs: x,
        features,
        labels,
    } = inputs.dataset
    else {
        return Err(EvalError::Model(
            "a classifier is evaluated on a tensors set".into(),
        ));
    };
    let features = *features;
    let original = mlp::Mlp::load(config, inputs.original)?;
    let compressed = mlp::Mlp::load(config, inputs.compressed)?;
    let mut fo = figures(inputs.original);
    let mut fc = figures(inputs.compressed);
    let sigma = metrics::std_dev(x);
    let levels = std::iter::once(0.0).chain(NOISE_LEVELS);
    for (i, level) in levels.enumerate() {
        cancel.check()?;
        let noisy = if level == 0.0 {
            x.clone()
        } else {
            metrics::with_noise(x, level * sigma, i as u64)
        };
        let name = if level == 0.0 {
            "accuracy".to_owned()
        } else {
            format!("accuracy_noise_{level}")
        };
        if inputs.reuse.is_none() {
            let acc = metrics::accuracy(&original.logits(&noisy, features)?, labels);
            fo.metrics.insert(name.clone(), acc);
        }
        let acc = metrics::accuracy(&compressed.logits(&noisy, features)?, labels);
        fc.metrics.insert(name, acc);
    }
    let rows = labels.len();
    let measure = |model: &mlp::Mlp| -> Result<Vec<Measure>, EvalError> {
        [1, LARGE_BATCH.min(rows).max(1)]
            .into_iter()
            .map(|batch| {
                let slice = &x[..batch * features];
                let (median, p90, repeats) = latency::time(inputs.limits.budget, || {
                    cancel.check()?;
                    model.logits(slice, features).map(|_| ())
                })?;
                Ok(Measure {
                    name: "batch".into(),
                    batch: batch as u64,
                    tokens: None,
                    median_ms: median,
                    p90_ms: p90,
                    repeats,
                })
            })
            .collect()
    };
    if inputs.reuse.is_none() {
        fo.latency = measure(&original)?;
    }
    fc.latency = measure(&compressed)?;
    Ok((fo, fc, rows as u64))
}

/// The report as a text table: one row per figure, original and compressed side by side.
pub fn render_table(report: &EvalReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} model, {} evaluated; kernel {} → {}{}; {} threads on {}",
        report.architecture,
        report.evaluated,
        report.original.kernel,
        report.compressed.kernel,
        if report.compressed.kernel_types.is_empty() {
            String::new()
        } else {
            format!(" ({})", report.compressed.kernel_types.join(", "))
        },
        report.runtime.threads,
        report.runtime.cpu
    );
    let _ = writeln!(
        out,
        "{:<24} {:>14} {:>14} {:>10}",
        "figure", "original", "compressed", "change"
    );
    for (name, c) in &report.compressed.metrics {
        let o = report
            .original
            .metrics
            .get(name)
            .copied()
            .unwrap_or(f64::NAN);
        let change = if o != 0.0 {
            format!("{:+.2}%", (c / o - 1.0) * 100.0)
        } else {
            "".into()
        };
        let _ = writeln!(out, "{name:<24} {o:>14.6} {c:>14.6} {change:>10}");
    }
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    let _ = writeln!(
        out,
        "{:<24} {:>14.3} {:>14.3}",
        "runtime weights MiB",
        mb(report.original.weights_bytes),
        mb(report.compressed.weights_bytes)
    );
    let _ = write!(
        out,
        "speed-up {:.2}×; {} dropped by {:.4}",
        report.speedup, report.metric, report.drop
    );
    match (report.max_drop, report.accepted) {
        (Some(max), Some(ok)) => {
            let _ = writeln!(
                out,
                " (budget {max}: {})",
                if ok { "accepted" } else { "refused" }
            );
        }
        _ => out.push('\n'),
    }
    out
}
