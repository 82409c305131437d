//! Evaluation: the original and the compressed model run side by side in candle on the
//! worker's CPU, on the user's evaluation set, giving accuracy figures (perplexity, KL and
//! top-1 agreement for decoders; embedding cosine and accuracy for encoders; accuracy and its
//! curve under input noise for classifiers) and latency figures, and the verdict against the
//! user's budget. Pure and synchronous like `compress`: no database, no HTTP; the worker runs
//! it on the rayon pool (candle's matmuls use the pool they are called from).

pub mod activations;
pub mod dataset;
pub mod decoder;
pub mod encoder;
pub mod files;
pub mod integer_product;
pub mod latency;
pub mod metrics;
pub mod mlp;
pub mod reference;
mod runs;
pub mod weights;

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::numeric::Cancel;
pub use dataset::{Dataset, DatasetStats};
use latency::{Budget, Measure, Speedup};
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

impl From<crate::numeric::Canceled> for EvalError {
    fn from(_: crate::numeric::Canceled) -> Self {
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

/// What one of an evaluation's figures is, for readers that show it: its label, its unit,
/// which way is better, and how a budget on it is read.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FigureInfo {
    /// The key in `Figures::metrics` (`speedup` is `EvalReport::speedup`).
    pub name: String,
    pub label: String,
    /// `rate` (0 to 1, shown as a percentage), `number`, `nats`, `ms`, `tokens/s` or `×`.
    pub unit: &'static str,
    pub lower_is_better: bool,
    /// How `max_drop` is read for it: `relative increase`, `absolute increase` or
    /// `absolute drop`; absent for figures a budget cannot name (speed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<&'static str>,
}

/// The figure `name`'s description; unknown names get a plain one.
pub fn figure_info(name: &str) -> FigureInfo {
    let (label, unit) = match name {
        "perplexity" => ("Perplexity".to_owned(), "number"),
        "kl_mean" => ("KL divergence, mean".to_owned(), "nats"),
        "kl_p99" => ("KL divergence, 99th percentile".to_owned(), "nats"),
        "top1_agreement" => ("Top-1 agreement with the original".to_owned(), "rate"),
        "cosine_mean" => ("Embedding cosine, mean".to_owned(), "number"),
        "cosine_min" => ("Embedding cosine, lowest".to_owned(), "number"),
        "accuracy" => ("Accuracy".to_owned(), "rate"),
        "latency_ms" => ("Latency".to_owned(), "ms"),
        "prompt_tokens_per_s" => ("Prompt tokens per second".to_owned(), "tokens/s"),
        "speedup" => ("Speed-up".to_owned(), "×"),
        other => match other.strip_prefix("accuracy_noise_") {
            Some(sigma) => (format!("Accuracy under noise σ = {sigma}"), "rate"),
            None => (other.to_owned(), "number"),
        },
    };
    let speed = matches!(name, "latency_ms" | "prompt_tokens_per_s" | "speedup");
    let budget = if speed {
        None
    } else if name == "perplexity" {
        Some("relative increase")
    } else if lower_is_better(name) {
        Some("absolute increase")
    } else {
        Some("absolute drop")
    };
    FigureInfo {
        name: name.to_owned(),
        label,
        unit,
        lower_is_better: lower_is_better(name),
        budget,
    }
}

/// Every figure an evaluation can report, accuracy first, then speed.
pub fn figure_catalogue() -> Vec<FigureInfo> {
    let accuracy = ["perplexity", "kl_mean", "kl_p99", "top1_agreement"]
        .into_iter()
        .chain(["cosine_mean", "cosine_min", "accuracy"])
        .chain(NOISE_METRICS);
    accuracy
        .chain(["latency_ms", "prompt_tokens_per_s", "speedup"])
        .map(figure_info)
        .collect()
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
    /// (the stored GGUF blocks: Q8_0, Q4_0 and Q5_0 on CPUs with AVX-512 VNNI through the
    /// integer product llama.cpp uses there; otherwise candle's quantized matmul for one token
    /// at a time, and batches, such as prompts and the accuracy pass, on the blocks'
    /// dequantized copy, which candle's dense matmul multiplies faster).
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
    /// Original latency / compressed latency of the headline measurement, the median of
    /// rounds that time both models back to back: above 1 is faster.
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub speedup: f64,
    /// Every latency measurement's speed-up with its spread over rounds, the headline first.
    #[serde(default)]
    pub speedups: Vec<Speedup>,
    /// Whether the compressed model can be faster in this runtime: only when it multiplies the
    /// stored blocks natively. A dense runtime (every compressed-tensors, compact or dense
    /// artifact) does the same f32 work as the original, so its speed-up is 1 within noise.
    #[serde(default)]
    pub speedup_expected: bool,
    pub runtime: Runtime,
    /// Whether the original's accuracy figures came from an earlier evaluation on the same model
    /// and set (for decoders, its kept next-token outputs: the original is not run again; its
    /// latency is always measured anew, interleaved with the compressed model's).
    pub original_reused: bool,
    /// Seconds the accuracy pass took: both models over the set, or the compressed one alone
    /// when the original's outputs were kept.
    #[serde(default)]
    pub accuracy_seconds: f64,
    /// Seconds the latency measurements took.
    #[serde(default)]
    pub latency_seconds: f64,
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

/// How far an evaluation is, for the job's live progress: the accuracy pass over the set, then
/// the latency measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvalProgress {
    /// `accuracy` or `latency`.
    pub stage: String,
    pub done: u64,
    pub total: u64,
    /// What `done` counts: `sequences`, `noise levels` or `measurements`.
    pub unit: String,
    /// Estimated seconds until the evaluation ends, from the pace so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_left: Option<f64>,
}

/// Where a decoder's original outputs are kept (see [`reference`]), and what identifies its
/// weights: the file is used only when the weights, config and tokens are the ones it was
/// made from.
#[derive(Debug, Clone, Copy)]
pub struct ReferenceCache<'a> {
    pub path: &'a std::path::Path,
    /// A digest of the original's weights (the model's content hash).
    pub weights_identity: &'a str,
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
    /// Where the original decoder's outputs on the set are kept between evaluations.
    pub reference: Option<ReferenceCache<'a>>,
    pub metric: Option<&'a str>,
    pub max_drop: Option<f64>,
    pub limits: Limits,
    /// Called as the evaluation advances.
    pub progress: &'a dyn Fn(&EvalProgress),
}

/// Runs both models and compares them.
pub fn evaluate(inputs: Inputs<'_>, cancel: &Cancel) -> Result<EvalReport, EvalError> {
    let started = Instant::now();
    let (mut original, mut compressed, evaluated, latencies, outputs_reused) =
        match inputs.architecture {
            Architecture::Decoder { .. } => runs::decoder(&inputs, cancel)?,
            Architecture::Encoder { .. } => runs::encoder(&inputs, cancel)?,
            Architecture::Mlp { config, .. } => runs::mlp(&inputs, config, cancel)?,
        };
    let original_reused = inputs.reuse.is_some() || outputs_reused;
    if let Some(reused) = inputs.reuse.clone() {
        // Comparative figures (KL, agreement, cosine) are recomputed each time; the original's
        // own accuracy figures come from the first measurement. Latency never does: a figure
        // measured under another load would make the speed-up noise.
        for (k, v) in reused.metrics {
            if k != "latency_ms" && k != "prompt_tokens_per_s" {
                original.metrics.insert(k, v);
            }
        }
    }
    original.latency = latencies.original;
    compressed.latency = latencies.compressed;
    if let Some(prompt) = compressed.latency.iter().position(|m| m.name == "prompt") {
        for figures in [&mut original, &mut compressed] {
            let p = &figures.latency[prompt];
            let per_second = p.tokens.unwrap_or(0) as f64 / (p.median_ms / 1e3);
            figures
                .metrics
                .insert("prompt_tokens_per_s".into(), per_second);
        }
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
    let speedup = latencies
        .speedups
        .first()
        .map_or(f64::NAN, |headline| headline.median);
    let speedup_expected = compressed.kernel == "native";
    let latency_seconds = latencies.seconds;
    Ok(EvalReport {
        dataset_id: None,
        architecture: inputs.architecture.name().to_owned(),
        evaluated,
        original,
        compressed,
        speedup,
        speedups: latencies.speedups,
        speedup_expected,
        runtime: Runtime::here(),
        original_reused,
        accuracy_seconds: (started.elapsed().as_secs_f64() - latency_seconds).max(0.0),
        latency_seconds,
        accepted: inputs.max_drop.map(|max| drop <= max),
        max_drop: inputs.max_drop,
        metric,
        drop,
    })
}

/// The headline speed-up with its spread, and whether one can be expected at all.
pub fn speedup_text(report: &EvalReport) -> String {
    let spread = report
        .speedups
        .first()
        .map(|h| format!(" (rounds {:.2}–{:.2}×, {} rounds)", h.p10, h.p90, h.rounds))
        .unwrap_or_default();
    let expected = if report.speedup_expected {
        ""
    } else {
        "; no speed-up expected: the runtime multiplies dense f32 weights for both"
    };
    format!("speed-up {:.2}×{spread}{expected}", report.speedup)
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
    let _ = write!(out, "{}; ", speedup_text(report));
    let _ = write!(out, "{} dropped by {:.4}", report.metric, report.drop);
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
    let _ = writeln!(
        out,
        "accuracy pass {:.1} s{}, latency {:.1} s",
        report.accuracy_seconds,
        if report.original_reused {
            " (the original's outputs kept from an earlier run)"
        } else {
            ""
        },
        report.latency_seconds
    );
    out
}
