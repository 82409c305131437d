//! What a job reports: each tensor's metrics against the original, the whole job's figures
//! (size, error, time, memory, the evaluation) and its progress while it runs. The pipeline
//! fills them, the queue stores them, the API and the CLI read them.

use serde::Serialize;

/// Metrics of one tensor, measured against the original weights.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TensorReport {
    /// Tensor name.
    pub name: String,
    /// What was done to it ("int8 sym per channel", "unchanged").
    pub scheme: String,
    /// Stored dtype.
    pub dtype: String,
    /// Dimensions.
    #[sqlx(json)]
    pub shape: Vec<u64>,
    /// Bytes before.
    pub bytes_in: i64,
    /// Bytes after.
    pub bytes_out: i64,
    /// Fraction of exact zeros after.
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub sparsity: f64,
    /// ‖W − Ŵ‖ / ‖W‖ (Frobenius).
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub rel_error: f64,
    /// 10·log10(‖W‖² / ‖W − Ŵ‖²); null when the error is zero.
    #[serde(with = "crate::numeric::metric::option")]
    #[schema(value_type = Option<crate::numeric::Metric>)]
    pub sqnr_db: Option<f64>,
    /// Cosine similarity of W and Ŵ as vectors; null when either is all zero.
    #[serde(with = "crate::numeric::metric::option")]
    #[schema(value_type = Option<crate::numeric::Metric>)]
    pub cosine: Option<f64>,
    /// max |W − Ŵ|.
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub max_abs_error: f64,
    /// Why the tensor got other steps than the recipe names: the GGUF type llama-quantize's
    /// rules give it, a fallback for rows that are not whole blocks or groups.
    pub note: Option<String>,
}

/// The figures of a whole job.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Summary {
    /// Output format.
    pub format: String,
    /// Bytes of the model's files.
    pub bytes_in: u64,
    /// Bytes of the artifact's model files (recipe.json excluded).
    pub bytes_out: u64,
    /// bytes_in / bytes_out.
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub ratio: f64,
    /// Bits on disk per parameter: the real bytes of the output's weight files (headers,
    /// padding, scales and indices included) × 8 / parameters.
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub bits_per_weight: f64,
    /// Bits per parameter the schemes imply (codes, scales, zero-points, codebooks, factors at
    /// their nominal widths; unchanged tensors at their dtype), without headers, padding or
    /// layout overhead: the gap to `bits_per_weight` is what the format adds.
    #[serde(default)]
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub theoretical_bits_per_weight: f64,
    /// Real bytes of the weight files (`model.safetensors` or its shards, `model.gguf`).
    #[serde(default)]
    pub weight_files_bytes: u64,
    /// Parameters in the model.
    pub parameters: u64,
    /// Parameters in compressed tensors.
    pub compressed_parameters: u64,
    /// Tensors compressed.
    pub compressed_tensors: usize,
    /// Fraction of exact zeros over the compressed tensors.
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub sparsity: f64,
    /// Mean relative error over compressed tensors.
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub mean_rel_error: f64,
    /// Worst relative error.
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub worst_rel_error: f64,
    /// Where the worst error is.
    pub worst_tensor: Option<String>,
    /// Wall time of the pipeline.
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub wall_seconds: f64,
    /// Input bytes of weights per second.
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub throughput_bytes_per_s: f64,
    /// Peak resident memory of the process while this job ran (sampled every 20 ms; with
    /// other jobs running in the same process, theirs is included).
    pub peak_rss_bytes: Option<u64>,
    /// Wall time of the evaluation, when the job had one (`wall_seconds` is the compression's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_seconds: Option<f64>,
    /// squeeze version that produced it.
    pub squeeze_version: String,
    /// Latency and accuracy of the original and the compressed model, when the job asked for
    /// an evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<crate::eval::EvalReport>,
    /// Why the evaluation asked for could not run (the artifact is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_error: Option<String>,
}

/// Counters reported while running.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(default)]
pub struct Progress {
    /// `compressing`, then `evaluating` when the job evaluates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Tensors finished.
    pub tensors_done: u64,
    /// Tensors in the model.
    pub tensors_total: u64,
    /// Weight bytes finished.
    pub bytes_done: u64,
    /// Weight bytes in the model.
    pub bytes_total: u64,
    /// How far the evaluation is, in the `evaluating` phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<crate::eval::EvalProgress>,
    /// The artifact's size, known once compression is done: shown while the job evaluates,
    /// before the summary lands with the job's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressed: Option<CompressedSize>,
}

/// What compression made, before the job ends.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CompressedSize {
    /// Bytes of the model's files.
    pub bytes_in: u64,
    /// Bytes of the artifact's model files.
    pub bytes_out: u64,
    /// bytes_in / bytes_out.
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub ratio: f64,
    /// Bits on disk per parameter.
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub bits_per_weight: f64,
}
