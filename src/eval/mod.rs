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
    /// Whether the original's accuracy figures came from an earlier job on the same model, set
    /// and CPU (its latency is always measured anew, interleaved with the compressed model's).
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

/// Turns steps done into [`EvalProgress`] with an estimate of the time left.
struct Tracker<'a> {
    report: &'a dyn Fn(&EvalProgress),
    started: Instant,
    accuracy_total: u64,
    accuracy_unit: &'static str,
    latency_total: u64,
    latency_started: Option<Instant>,
    /// Seconds per accuracy step, once the accuracy pass is over.
    accuracy_pace: Option<f64>,
    target: f64,
}

impl<'a> Tracker<'a> {
    fn new(
        inputs: &Inputs<'a>,
        accuracy_total: u64,
        accuracy_unit: &'static str,
        latency_total: u64,
    ) -> Tracker<'a> {
        let tracker = Tracker {
            report: inputs.progress,
            started: Instant::now(),
            accuracy_total,
            accuracy_unit,
            latency_total,
            latency_started: None,
            accuracy_pace: None,
            target: inputs.limits.budget.target.as_secs_f64(),
        };
        tracker.accuracy(0);
        tracker
    }

    /// A latency measurement's expected seconds before any has run: its target time for both
    /// models, or its minimum rounds at the pace of the accuracy pass, whichever is longer.
    fn latency_guess(&self, pace: Option<f64>) -> f64 {
        (2.0 * self.target).max(pace.unwrap_or(0.0) * 12.0)
    }

    fn accuracy(&self, done: u64) {
        let pace = (done > 0).then(|| self.started.elapsed().as_secs_f64() / done as f64);
        let seconds_left = pace.map(|p| {
            p * self.accuracy_total.saturating_sub(done) as f64
                + self.latency_total as f64 * self.latency_guess(Some(p))
        });
        (self.report)(&EvalProgress {
            stage: "accuracy".into(),
            done,
            total: self.accuracy_total,
            unit: self.accuracy_unit.into(),
            seconds_left,
        });
    }

    fn latency(&mut self, done: u64) {
        if self.latency_started.is_none() {
            let steps = self.accuracy_total.max(1) as f64;
            self.accuracy_pace = Some(self.started.elapsed().as_secs_f64() / steps);
            self.latency_started = Some(Instant::now());
        }
        let left = self.latency_total.saturating_sub(done) as f64;
        let per = match (done, self.latency_started) {
            (0, _) | (_, None) => self.latency_guess(self.accuracy_pace),
            (n, Some(t)) => t.elapsed().as_secs_f64() / n as f64,
        };
        (self.report)(&EvalProgress {
            stage: "latency".into(),
            done,
            total: self.latency_total,
            unit: "measurements".into(),
            seconds_left: Some(per * left),
        });
    }
}

/// Both models' timings of the latency measurements, and the speed-ups.
#[derive(Default)]
struct Latencies {
    original: Vec<Measure>,
    compressed: Vec<Measure>,
    speedups: Vec<Speedup>,
}

impl Latencies {
    /// Times the original and the compressed model's `name` in alternating rounds.
    fn measure(
        &mut self,
        inputs: &Inputs<'_>,
        (name, batch, tokens): (&str, u64, Option<u64>),
        original: impl FnMut() -> Result<(), EvalError>,
        compressed: impl FnMut() -> Result<(), EvalError>,
    ) -> Result<(), EvalError> {
        let paired = latency::time_pair(inputs.limits.budget, original, compressed)?;
        for (side, timing) in [
            (&mut self.original, paired.a),
            (&mut self.compressed, paired.b),
        ] {
            side.push(Measure {
                name: name.into(),
                batch,
                tokens,
                median_ms: timing.median_ms,
                p90_ms: timing.p90_ms,
                repeats: timing.repeats,
            });
        }
        let (median, p10, p90) = paired.ratio;
        self.speedups.push(Speedup {
            name: name.into(),
            batch,
            tokens,
            median,
            p10,
            p90,
            rounds: paired.rounds,
        });
        Ok(())
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
    /// Called as the evaluation advances.
    pub progress: &'a dyn Fn(&EvalProgress),
}

/// Runs both models and compares them.
pub fn evaluate(inputs: Inputs<'_>, cancel: &Cancel) -> Result<EvalReport, EvalError> {
    let (mut original, mut compressed, evaluated, latencies) = match inputs.architecture {
        Architecture::Decoder { .. } => run_decoder(&inputs, cancel)?,
        Architecture::Encoder { .. } => run_encoder(&inputs, cancel)?,
        Architecture::Mlp { config, .. } => run_mlp(&inputs, config, cancel)?,
    };
    let original_reused = inputs.reuse.is_some();
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

type Run = (Figures, Figures, u64, Latencies);

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
    let mut tracker = Tracker::new(inputs, sequences.len() as u64, "sequences", 2);
    let mut stats = metrics::NextToken::default();
    for (i, seq) in sequences.iter().enumerate() {
        cancel.check()?;
        let lo = decoder::log_softmax_rows(&original.forward(seq, &mut Default::default())?)?;
        let lc = decoder::log_softmax_rows(&compressed.forward(seq, &mut Default::default())?)?;
        stats.add(seq, &lo, &lc);
        tracker.accuracy(i as u64 + 1);
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
    let prefill = |model: &decoder::Decoder| -> Result<decoder::Cache, EvalError> {
        let mut prefilled = decoder::Cache::default();
        model.forward(&context, &mut prefilled)?;
        Ok(prefilled)
    };
    let decode = |model: &decoder::Decoder, prefilled: &decoder::Cache| {
        cancel.check()?;
        let mut cache = prefilled.clone();
        model.forward(&[context[0]], &mut cache).map(|_| ())
    };
    let whole = |model: &decoder::Decoder| {
        cancel.check()?;
        model.forward(&prompt, &mut Default::default()).map(|_| ())
    };
    let mut latencies = Latencies::default();
    let (prefilled_o, prefilled_c) = (prefill(&original)?, prefill(&compressed)?);
    tracker.latency(0);
    latencies.measure(
        inputs,
        ("decode_token", 1, Some(1)),
        || decode(&original, &prefilled_o),
        || decode(&compressed, &prefilled_c),
    )?;
    tracker.latency(1);
    latencies.measure(
        inputs,
        ("prompt", 1, Some(prompt.len() as u64)),
        || whole(&original),
        || whole(&compressed),
    )?;
    tracker.latency(2);
    Ok((fo, fc, sequences.len() as u64, latencies))
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
    let mut tracker = Tracker::new(inputs, limited.len() as u64, "sequences", 2);
    let mut cosines = Vec::new();
    let (mut right_o, mut right_c, mut labelled) = (0u64, 0u64, 0u64);
    for (i, (seq, label)) in limited.iter().zip(&labels).enumerate() {
        cancel.check()?;
        if i > 0 {
            tracker.accuracy(i as u64);
        }
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
    let forward = |model: &encoder::Encoder, rows: &[&[u32]]| {
        cancel.check()?;
        model.hidden(rows).map(|_| ())
    };
    let mut latencies = Latencies::default();
    for (i, batch) in [1, LARGE_BATCH].into_iter().enumerate() {
        tracker.latency(i as u64);
        let rows = vec![sample; batch];
        latencies.measure(
            inputs,
            ("batch", batch as u64, Some(sample.len() as u64)),
            || forward(&original, &rows),
            || forward(&compressed, &rows),
        )?;
    }
    tracker.latency(2);
    Ok((fo, fc, limited.len() as u64, latencies))
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
    let mut tracker = Tracker::new(inputs, 1 + NOISE_LEVELS.len() as u64, "noise levels", 2);
    for (i, level) in levels.enumerate() {
        cancel.check()?;
        if i > 0 {
            tracker.accuracy(i as u64);
        }
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
    let forward = |model: &mlp::Mlp, slice: &[f32]| {
        cancel.check()?;
        model.logits(slice, features).map(|_| ())
    };
    let mut latencies = Latencies::default();
    for (i, batch) in [1, LARGE_BATCH.min(rows).max(1)].into_iter().enumerate() {
        tracker.latency(i as u64);
        let slice = &x[..batch * features];
        latencies.measure(
            inputs,
            ("batch", batch as u64, None),
            || forward(&original, slice),
            || forward(&compressed, slice),
        )?;
    }
    tracker.latency(2);
    Ok((fo, fc, rows as u64, latencies))
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
    out
}
