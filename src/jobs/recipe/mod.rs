//! Recipes: what a job does to a model (stages, which tensors, output format) and their JSON
//! form (the names are part of the API contract: add fields, never rename), here; the plan of a
//! recipe on a model's actual tensors, which validates it, in `plan`; the built-in presets in
//! `presets`.

mod plan;
mod presets;
#[cfg(test)]
mod tests;

pub use plan::{
    MAX_PATTERN_BYTES, MAX_PATTERNS, MAX_REGEX_BYTES, MAX_REGEX_PATTERNS, Plan, PlannedTensor,
    Selection,
};
pub use presets::{Preset, preset, presets};

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::compress::lowrank::{Rank, max_useful_rank};
use crate::compress::prune::Norm;
use crate::compress::quantize::{Granularity, IntScheme, ScaleDtype};
use crate::compress::step::Step;
use crate::formats::gguf::rules::{FileType, TensorShape};
use crate::formats::{TensorMeta, hf};
use crate::numeric::Dtype;

/// A compression recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Applied in order to every selected tensor.
    pub stages: Vec<Stage>,
    /// Tensors to compress: exact names, or `re:` followed by a regular expression matched from
    /// the start of the name. Default: every floating-point tensor of two or more dimensions.
    #[serde(default = "default_targets")]
    pub targets: Vec<String>,
    /// Tensors to leave as they are, in the same syntax; wins over `targets`.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Output format.
    #[serde(default)]
    pub format: OutputFormat,
    /// How compressed-tensors stores pruned weights: `dense` (the default: every value, with a
    /// `sparsity_config` saying where the zeros are, which transformers and vLLM load today) or
    /// `bitmask` (the zeros left out: `sparse-bitmask` / `sparse-24-bitmask`, read only by
    /// compressed-tensors 0.14 and earlier; transformers with 0.15+ loads such files with
    /// random weights in place of the missing ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse_layout: Option<SparseLayout>,
    /// How a calibrated stage (`wanda`, `sparsegpt`) uses the job's calibration set; the
    /// defaults when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
}

/// How much of the calibration set a calibrated stage reads, and its numerical settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Sequences used, at most: the set's first ones (fewer when it has fewer).
    #[serde(default = "default_calibration_samples")]
    #[schema(minimum = 1, maximum = 4096)]
    pub samples: usize,
    /// Tokens kept of each sequence, at most.
    #[serde(default = "default_calibration_length")]
    #[schema(minimum = 2, maximum = 8192)]
    pub sequence_length: usize,
    /// SparseGPT's dampening: this fraction of the mean of the inputs' Σ x xᵀ diagonal is
    /// added to it before it is inverted.
    #[serde(default = "default_dampening")]
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub dampening: f64,
    /// GPTQ's column order: by decreasing input energy (the diagonal of Σ x xᵀ), each group
    /// keeping the scale the original weights give it ("static" activation order: the stored
    /// form needs no `g_idx`); false rounds the columns left to right.
    #[serde(default = "yes")]
    pub act_order: bool,
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration {
            samples: default_calibration_samples(),
            sequence_length: default_calibration_length(),
            dampening: default_dampening(),
            act_order: true,
        }
    }
}

fn default_calibration_samples() -> usize {
    128
}

fn default_calibration_length() -> usize {
    512
}

fn default_dampening() -> f64 {
    0.01
}

/// How compressed-tensors stores pruned weights: see [`Recipe::sparse_layout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SparseLayout {
    /// Every value stored; the sparsity described in `sparsity_config` (format `dense`).
    Dense,
    /// The zeros left out (compressed-tensors 0.14 and earlier).
    Bitmask,
}

/// Tensors compressed-tensors leaves dense unless a recipe names its own targets.
const COMPRESSED_TENSORS_DEFAULT_IGNORE: [&str; 2] = [
    r"re:(.*\.)?(embed_tokens|wte|wpe|word_embeddings|position_embeddings|token_type_embeddings|embed_positions)\.weight$",
    "lm_head.weight",
];

fn default_targets() -> Vec<String> {
    vec!["re:.*".to_owned()]
}

/// One step of a recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Stage {
    /// Zero weights.
    Prune(Prune),
    /// Map weights to fewer bits.
    Quantize(Quantize),
    /// Replace weights by the nearest of 2^bits centroids found by k-means (weight clustering).
    Cluster(Cluster),
    /// Replace each matrix by a rank-r product A·B (truncated SVD).
    LowRank(LowRankStage),
}

/// Low-rank factorization: give exactly one of `rank` and `energy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LowRankStage {
    /// A fixed rank; refused for a tensor it would not shrink (r·(m+n) ≥ m·n).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub rank: Option<usize>,
    /// The smallest rank keeping this fraction of each matrix's Σσ², in (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub energy: Option<f64>,
    /// Seed of the randomized SVD.
    #[serde(default)]
    pub seed: u64,
}

/// Weight clustering: k-means with k-means++ seeding over a tensor's values or each row's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Index width: 2^bits centroids, 1 to 8.
    #[schema(minimum = 1, maximum = 8)]
    pub bits: u8,
    /// `tensor` (one codebook) or `channel` (one per output row).
    #[serde(default = "tensor_granularity")]
    pub granularity: GranularityName,
    /// Seed of the k-means++ choices: the same seed gives the same codebook.
    #[serde(default)]
    pub seed: u64,
}

fn tensor_granularity() -> GranularityName {
    GranularityName::Tensor
}

/// Pruning methods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum Prune {
    /// Zero the smallest-magnitude fraction `sparsity` of each tensor.
    Magnitude {
        /// Fraction in [0, 1).
        #[schema(minimum = 0.0, exclusive_maximum = 1.0)]
        sparsity: f64,
        /// `tensor`: a threshold per tensor; `global`: one threshold across all selected
        /// tensors (must be the first stage).
        #[serde(default)]
        scope: PruneScope,
    },
    /// Semi-structured N:M: keep the N largest-magnitude values of every M consecutive values
    /// along a row (the input dimension); rows must be a multiple of M.
    SemiStructured {
        /// `"N:M"`, e.g. `"2:4"` or `"4:8"`; 0 < N < M ≤ 64.
        #[schema(value_type = String, example = "2:4")]
        pattern: NmPattern,
    },
    /// Structured shrinking of gated MLPs (Llama, Mistral, Qwen; needs the model's
    /// `config.json`): removes the intermediate channels of smallest summed norm (gate row + up
    /// row + down column) from all three projections and lowers `intermediate_size`, so the
    /// model is really smaller and still loads. Must be the first stage.
    MlpChannels {
        /// Fraction of intermediate channels removed, in [0, 1).
        #[schema(minimum = 0.0, exclusive_maximum = 1.0)]
        sparsity: f64,
        /// `l1` or `l2` (default).
        #[serde(default)]
        #[schema(value_type = String, example = "l2")]
        norm: Norm,
    },
    /// Wanda (Sun et al., 2023): in each output row, zero the weights of least |w|·‖x‖₂, where
    /// ‖x‖₂ is the norm of the input the weight multiplies over the calibration set; the rest
    /// stay as they are. Needs a calibration set; for a Llama-family decoder's layer projections
    /// (other selected tensors are refused: leave them out with ignore); must be the first stage.
    Wanda(CalibratedAmount),
    /// SparseGPT (Frantar & Alistarh, 2023): prunes column by column with the inputs'
    /// Σ x xᵀ over the calibration set, moving each removed weight's contribution onto the
    /// weights not yet visited (Optimal Brain Surgeon updates). Same inputs and rules as `wanda`.
    #[serde(rename = "sparsegpt")]
    SparseGpt(CalibratedAmount),
    /// Structured: zero whole output rows (channels) with the smallest L1 or L2 norm.
    Channels {
        /// Fraction of rows in [0, 1).
        #[schema(minimum = 0.0, exclusive_maximum = 1.0)]
        sparsity: f64,
        /// `l1` or `l2` (default).
        #[serde(default)]
        #[schema(value_type = String, example = "l2")]
        norm: Norm,
    },
}

/// How much a calibrated pruning method zeroes: exactly one of a fraction and a pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CalibratedAmount {
    /// Fraction of each row zeroed, in [0, 1); or give `pattern`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, exclusive_maximum = 1.0)]
    pub sparsity: Option<f64>,
    /// `"N:M"` (e.g. `"2:4"`) instead of a fraction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "2:4")]
    pub pattern: Option<NmPattern>,
}

impl CalibratedAmount {
    /// The pattern as the method takes it; None when the amount gives both or neither, which
    /// planning refuses.
    pub fn pattern(&self) -> Option<crate::calibrate::Pattern> {
        match (self.sparsity, self.pattern) {
            (Some(s), None) => Some(crate::calibrate::Pattern::Unstructured(s)),
            (None, Some(p)) => Some(crate::calibrate::Pattern::KeepNofM {
                keep: usize::from(p.n),
                of: usize::from(p.m),
            }),
            _ => None,
        }
    }
}

impl Prune {
    /// A calibrated method's name and amount.
    pub fn calibrated(&self) -> Option<(&'static str, &CalibratedAmount)> {
        match self {
            Prune::Wanda(amount) => Some(("wanda", amount)),
            Prune::SparseGpt(amount) => Some(("sparsegpt", amount)),
            _ => None,
        }
    }

    /// The N:M pattern the stage prunes to, whichever method applies it.
    pub fn nm_pattern(&self) -> Option<NmPattern> {
        match self {
            Prune::SemiStructured { pattern } => Some(*pattern),
            _ => self.calibrated().and_then(|(_, amount)| amount.pattern),
        }
    }
}

/// Where a magnitude threshold applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PruneScope {
    /// Each tensor gets its own threshold.
    #[default]
    Tensor,
    /// One threshold across all selected tensors.
    Global,
}

/// An N:M sparsity pattern, written `"N:M"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NmPattern {
    /// Values kept per group.
    pub n: u8,
    /// Group length.
    pub m: u8,
}

impl std::str::FromStr for NmPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("pattern {text:?} is not \"N:M\" with 0 < N < M <= 64");
        let (n, m) = text.split_once(':').ok_or_else(bad)?;
        let (n, m): (u8, u8) = (
            n.trim().parse().map_err(|_| bad())?,
            m.trim().parse().map_err(|_| bad())?,
        );
        if n == 0 || n >= m || m > 64 {
            return Err(bad());
        }
        Ok(NmPattern { n, m })
    }
}

impl Serialize for NmPattern {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}:{}", self.n, self.m))
    }
}

impl<'de> Deserialize<'de> for NmPattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Quantization schemes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "scheme", rename_all = "snake_case", deny_unknown_fields)]
pub enum Quantize {
    /// Integer codes with scales (and zero-points when asymmetric).
    Int {
        /// 2 to 8.
        #[schema(minimum = 2, maximum = 8)]
        bits: u8,
        /// Zero-point fixed at 0.
        #[serde(default = "yes")]
        symmetric: bool,
        /// `tensor`, `channel` (one scale per output row) or `group`.
        #[serde(default)]
        granularity: GranularityName,
        /// Values per scale along a row, for `group`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group_size: Option<usize>,
        /// Precision of the stored scales: `f32`, `f16` or `bf16`. Scales are rounded to it
        /// before quantizing, so stored codes × stored scale give the dequantized values.
        /// Default: `f32`, except in `compressed-tensors`, which stores scales in the weight's
        /// dtype (as vLLM and transformers load them) and accepts no other.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scale_dtype: Option<ScaleDtype>,
        /// `rtn` (round to nearest, the default) or `gptq` (Frantar et al., 2022: columns
        /// rounded in turn, each one's rounding error moved onto the columns not yet rounded
        /// through the inputs' Σ x xᵀ over a calibration set; static groups, no activation
        /// order, so the stored form is the round-to-nearest one's). `gptq` needs a
        /// calibration set, a Llama-family decoder's layer projections, and is the only stage.
        #[serde(default, skip_serializing_if = "IntMethod::is_rtn")]
        method: IntMethod,
    },
    /// FP8 E4M3 values (the `float-quantized` format of compressed-tensors) with a symmetric
    /// scale absmax / 448.
    Fp8 {
        /// `tensor` or `channel` (one scale per output row).
        #[serde(default)]
        granularity: GranularityName,
        /// Precision of the stored scales, as for `int` (default `f32`; the weight's dtype in
        /// compressed-tensors).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scale_dtype: Option<ScaleDtype>,
    },
    /// A llama-quantize file type: llama.cpp's block types, bit-exact with its reference
    /// quantizer, given to each tensor by llama-quantize's rules (the output projection, or a
    /// tied token embedding, at Q6_K or Q8_0; more bits for some attention V and FFN down
    /// projections in the `_M` and `_S` K-quant mixes; a tensor whose rows are not whole blocks
    /// falls back to the nearest type that fits, Q4_K → Q5_0, Q5_K → Q5_1 and Q6_K → Q8_0, or
    /// stays unquantized). Each tensor's type and the reason are in the job's report.
    Gguf {
        /// `Q8_0`, `Q6_K`, `Q5_K_M` (also `Q5_K`), `Q5_K_S`, `Q5_1`, `Q5_0`, `Q4_K_M` (also
        /// `Q4_K`), `Q4_K_S`, `Q4_1` or `Q4_0`.
        #[serde(rename = "type")]
        #[schema(value_type = String, example = "Q4_K_M")]
        kind: FileType,
        /// Every selected tensor at the base type (llama-quantize's `--pure`), fallbacks aside.
        #[serde(default, skip_serializing_if = "is_false")]
        pure: bool,
    },
    /// NF4 (bitsandbytes' 4-bit NormalFloat): 16 fixed levels scaled by the absmax of each block
    /// of 64 values of the flattened tensor.
    Nf4 {},
}

fn yes() -> bool {
    true
}

/// How integer codes are chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IntMethod {
    /// Each value rounded to the nearest code on its own.
    #[default]
    Rtn,
    /// GPTQ, from a calibration set.
    Gptq,
}

impl IntMethod {
    fn is_rtn(&self) -> bool {
        *self == IntMethod::Rtn
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Scale sharing, by name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GranularityName {
    /// One scale for the tensor.
    Tensor,
    /// One scale per output row.
    #[default]
    Channel,
    /// One scale per `group_size` values.
    Group,
}

/// What the job writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// The format that stores what the last stage makes (the default): integer, FP8 and
    /// pruned weights → `compressed-tensors`, GGUF types → `gguf`, clustered and low-rank
    /// weights → `compact-safetensors`, anything else (NF4, structural pruning) or a recipe the
    /// natural format cannot hold → `safetensors`. A job stores the format it resolved to.
    #[default]
    Auto,
    /// Dense safetensors in the input's dtypes, values dequantized/masked: any loader reads it
    /// (a simulation of the compression: the file is as large as the input).
    Safetensors,
    /// compressed-tensors (what vLLM and transformers load): `pack-quantized` integer codes,
    /// `naive-quantized` int8, `float-quantized` FP8, `sparse-bitmask` / `sparse-24-bitmask`
    /// for pruned tensors, and `config.json`'s `quantization_config`.
    CompressedTensors,
    /// GGUF version 3 (llama.cpp): GGUF block types, F32/F16/BF16 for the rest; Llama-family
    /// names and metadata when `config.json` says so.
    Gguf,
    /// safetensors with clustered tensors as codebook + packed indices and low-rank tensors as
    /// their two factors, `__metadata__` saying how to rebuild each.
    CompactSafetensors,
}

impl OutputFormat {
    /// The name recipes use.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Auto => "auto",
            OutputFormat::Safetensors => "safetensors",
            OutputFormat::CompressedTensors => "compressed-tensors",
            OutputFormat::Gguf => "gguf",
            OutputFormat::CompactSafetensors => "compact-safetensors",
        }
    }
}

impl Quantize {
    /// The integer scheme this stage describes (after validation).
    pub fn step(&self) -> Step {
        match *self {
            Quantize::Int {
                bits,
                symmetric,
                granularity,
                group_size,
                scale_dtype,
                ..
            } => Step::Int(IntScheme {
                bits,
                symmetric,
                granularity: match granularity {
                    GranularityName::Tensor => Granularity::Tensor,
                    GranularityName::Channel => Granularity::Channel,
                    GranularityName::Group => Granularity::Group(group_size.unwrap_or(0)),
                },
                scale_dtype: scale_dtype.unwrap_or_default(),
            }),
            Quantize::Fp8 {
                granularity,
                scale_dtype,
            } => Step::Fp8 {
                per_channel: granularity != GranularityName::Tensor,
                scale_dtype: scale_dtype.unwrap_or_default(),
            },
            Quantize::Gguf { kind, .. } => Step::Gguf(kind.base()),
            Quantize::Nf4 {} => Step::Nf4,
        }
    }
}

/// A short description of a step for reports ("int4 sym group 128", "magnitude prune 50%").
fn scale_suffix(scale_dtype: ScaleDtype) -> &'static str {
    match scale_dtype {
        ScaleDtype::F32 => "",
        ScaleDtype::F16 => " f16 scales",
        ScaleDtype::Bf16 => " bf16 scales",
    }
}

fn describe_step(step: Step) -> String {
    let percent = |f: f64| format!("{:.0}%", f * 100.0);
    match step {
        Step::MagnitudePrune { sparsity } => format!("magnitude prune {}", percent(sparsity)),
        Step::MagnitudePruneCount { count } => format!("magnitude prune {count} values"),
        Step::SemiStructured { n, m } => format!("{n}:{m} prune"),
        Step::Calibrated => "calibrated prune".to_owned(),
        Step::ChannelPrune { sparsity, norm } => {
            format!("channel prune {} by {norm:?}", percent(sparsity))
        }
        Step::Int(s) => {
            let g = match s.granularity {
                Granularity::Tensor => "per tensor".to_owned(),
                Granularity::Channel => "per channel".to_owned(),
                Granularity::Group(n) => format!("group {n}"),
            };
            let scale = scale_suffix(s.scale_dtype);
            format!(
                "int{} {} {g}{scale}",
                s.bits,
                if s.symmetric { "sym" } else { "asym" }
            )
        }
        Step::Fp8 {
            per_channel,
            scale_dtype,
        } => format!(
            "fp8 e4m3 {}{}",
            if per_channel {
                "per channel"
            } else {
                "per tensor"
            },
            scale_suffix(scale_dtype)
        ),
        Step::Gguf(kind) => format!("gguf {}", kind.name()),
        Step::Nf4 => "nf4 block 64".to_owned(),
        Step::LowRank { rank, .. } => match rank {
            Rank::Fixed(r) => format!("low-rank {r}"),
            Rank::Energy(e) => format!("low-rank keeping {:.1}% energy", e * 100.0),
        },
        Step::Cluster { bits, per_row, .. } => format!(
            "k-means {} centroids {}",
            1u32 << bits,
            if per_row { "per channel" } else { "per tensor" }
        ),
    }
}

impl Stage {
    /// The kernel step this stage runs on each tensor (after validation); None for a stage that
    /// changes the model's structure instead (MLP channel shrinking, run by the pipeline). A
    /// global magnitude stage becomes per-tensor counts in the pipeline; this is its stand-in.
    pub fn step(&self) -> Option<Step> {
        Some(match self {
            Stage::Prune(Prune::Magnitude { sparsity, .. }) => Step::MagnitudePrune {
                sparsity: *sparsity,
            },
            Stage::Prune(Prune::SemiStructured { pattern }) => Step::SemiStructured {
                n: pattern.n,
                m: pattern.m,
            },
            Stage::Prune(Prune::Channels { sparsity, norm }) => Step::ChannelPrune {
                sparsity: *sparsity,
                norm: *norm,
            },
            Stage::Prune(Prune::MlpChannels { .. }) => return None,
            Stage::Prune(Prune::Wanda(_) | Prune::SparseGpt(_)) => Step::Calibrated,
            Stage::Quantize(q) => q.step(),
            Stage::Cluster(c) => Step::Cluster {
                bits: c.bits,
                per_row: c.granularity == GranularityName::Channel,
                seed: c.seed,
            },
            Stage::LowRank(l) => Step::LowRank {
                rank: match (l.rank, l.energy) {
                    (Some(r), _) => Rank::Fixed(r),
                    (None, e) => Rank::Energy(e.unwrap_or(1.0)),
                },
                seed: l.seed,
            },
        })
    }

    /// Whether the stage needs a calibration set (its values come from a pass of the set
    /// through the model, run by the pipeline before the tensors).
    pub fn is_calibrated(&self) -> bool {
        self.calibrated_method().is_some()
    }

    /// The calibrated method's name, for messages.
    pub fn calibrated_method(&self) -> Option<&'static str> {
        match self {
            Stage::Prune(prune) => prune.calibrated().map(|(method, _)| method),
            Stage::Quantize(Quantize::Int {
                method: IntMethod::Gptq,
                ..
            }) => Some("gptq"),
            _ => None,
        }
    }

    /// Whether this is a magnitude stage with one threshold across tensors.
    pub fn is_global_prune(&self) -> bool {
        matches!(
            self,
            Stage::Prune(Prune::Magnitude {
                scope: PruneScope::Global,
                ..
            })
        )
    }

    /// A short description for reports ("int4 sym group 128", "magnitude prune 50%").
    pub fn describe(&self) -> String {
        match (self, self.step()) {
            (Stage::Quantize(Quantize::Gguf { kind, pure }), _) => {
                format!("gguf {}{}", kind.name(), if *pure { " pure" } else { "" })
            }
            (Stage::Prune(Prune::MlpChannels { sparsity, norm }), _) => {
                format!("MLP channel shrink {:.0}% by {norm:?}", sparsity * 100.0)
            }
            (Stage::Prune(prune), _) if let Some((method, amount)) = prune.calibrated() => {
                match amount.pattern() {
                    Some(crate::calibrate::Pattern::KeepNofM { keep, of }) => {
                        format!("{method} {keep}:{of} prune")
                    }
                    Some(crate::calibrate::Pattern::Unstructured(s)) => {
                        format!("{method} prune {:.0}%", s * 100.0)
                    }
                    None => format!("{method} prune"),
                }
            }
            (
                Stage::Quantize(Quantize::Int {
                    method: IntMethod::Gptq,
                    ..
                }),
                Some(step),
            ) => format!("{} gptq", describe_step(step)),
            (_, Some(step)) if self.is_global_prune() => {
                format!("{} (global)", describe_step(step))
            }
            (_, Some(step)) => describe_step(step),
            (_, None) => unreachable!("only structural stages have no step"),
        }
    }
}

/// Why a recipe cannot run on a model. Every message names the rule and, where there is one,
/// the tensor.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecipeError {
    #[error("a recipe needs at least one stage")]
    NoStages,
    #[error("stage {stage}: bits must be between 2 and 8, not {bits}")]
    Bits { stage: usize, bits: u8 },
    #[error("stage {stage}: sparsity must be in [0, 1), not {sparsity}")]
    Sparsity { stage: usize, sparsity: f64 },
    #[error("stage {stage}: granularity \"group\" needs a group_size of at least 1")]
    GroupSizeMissing { stage: usize },
    #[error("stage {stage}: group_size is only meaningful with granularity \"group\"")]
    GroupSizeUnused { stage: usize },
    #[error("stage {stage}: {method} takes granularity \"tensor\" or \"channel\"")]
    Granularity { stage: usize, method: &'static str },
    #[error("stage {stage}: clustering takes 1 to 8 bits (2 to 256 centroids), not {bits}")]
    ClusterBits { stage: usize, bits: u8 },
    #[error(
        "targets and ignore hold {count} patterns, {regexes} of them re:; at most {MAX_PATTERNS} patterns and {MAX_REGEX_PATTERNS} re: patterns are allowed"
    )]
    TooManyPatterns { count: usize, regexes: usize },
    #[error(
        "stage {stage}: low_rank takes exactly one of rank (at least 1) and energy (in (0, 1])"
    )]
    LowRankChoice { stage: usize },
    #[error(
        "stage {stage}: rank {rank} would not shrink tensor {tensor:?} ({rows} × {cols}); at most rank {max} is smaller than the tensor"
    )]
    RankGrows {
        stage: usize,
        rank: usize,
        rows: u64,
        cols: u64,
        max: usize,
        tensor: String,
    },
    #[error(
        "stage {stage}: {kind} needs rows that are a multiple of {block} values; tensor {tensor:?} has rows of {row}"
    )]
    BlockSize {
        stage: usize,
        kind: String,
        block: u64,
        row: u64,
        tensor: String,
    },
    #[error(
        "stage {stage}: global magnitude pruning and MLP channel shrinking work on the original weights, so they must be the first stage"
    )]
    NotFirst { stage: usize },
    #[error(
        "stage {stage}: {method} takes exactly one of sparsity (in [0, 1)) and pattern (\"N:M\")"
    )]
    CalibratedAmount { stage: usize, method: &'static str },
    #[error(
        "stage {stage}: {method} works from the calibration set on the original model, so it must be the first stage (gptq the only one), and a recipe has at most one calibrated stage"
    )]
    CalibratedNotFirst { stage: usize, method: &'static str },
    #[error("MLP channel shrinking: {0}")]
    Mlp(String),
    #[error(
        "stage {stage}: group_size {group_size} does not divide the row length {row} of tensor {tensor:?}, and no group of 16 or more divides every selected row; leave the tensor out with ignore, or use granularity channel"
    )]
    GroupSize {
        stage: usize,
        group_size: usize,
        row: u64,
        tensor: String,
    },
    #[error("pattern {pattern:?} is not a valid regular expression: {reason}")]
    BadPattern { pattern: String, reason: String },
    #[error("target {pattern:?} matches no tensor of this model")]
    TargetMatchesNothing { pattern: String },
    #[error("tensor {tensor:?} is {dtype}; only F32, F16 and BF16 tensors can be compressed")]
    NotFloat { tensor: String, dtype: Dtype },
    #[error("the recipe selects no tensor of this model")]
    NothingSelected,
    #[error("unknown preset {0:?}; GET /api/v1/presets lists them")]
    UnknownPreset(String),
    #[error(
        "stage {stage}: format {format} cannot store {what}; {hint} (format safetensors writes any recipe as a dense simulation)"
    )]
    FormatStage {
        stage: usize,
        format: &'static str,
        what: String,
        hint: &'static str,
    },
    #[error(
        "format {format}: tensor {tensor:?} {reason} (format safetensors writes any tensor as a dense simulation)"
    )]
    FormatTensor {
        format: &'static str,
        tensor: String,
        reason: String,
    },
}

impl RecipeError {
    /// The tensor the error is about, if any.
    pub fn tensor(&self) -> Option<&str> {
        match self {
            RecipeError::GroupSize { tensor, .. }
            | RecipeError::RankGrows { tensor, .. }
            | RecipeError::NotFloat { tensor, .. }
            | RecipeError::BlockSize { tensor, .. }
            | RecipeError::FormatTensor { tensor, .. } => Some(tensor),
            _ => None,
        }
    }

    /// The stage the error is about (1-based, as in the message), if any.
    pub fn stage(&self) -> Option<usize> {
        match self {
            RecipeError::Bits { stage, .. }
            | RecipeError::Sparsity { stage, .. }
            | RecipeError::GroupSizeMissing { stage }
            | RecipeError::GroupSizeUnused { stage }
            | RecipeError::Granularity { stage, .. }
            | RecipeError::ClusterBits { stage, .. }
            | RecipeError::LowRankChoice { stage }
            | RecipeError::RankGrows { stage, .. }
            | RecipeError::BlockSize { stage, .. }
            | RecipeError::NotFirst { stage }
            | RecipeError::CalibratedAmount { stage, .. }
            | RecipeError::CalibratedNotFirst { stage, .. }
            | RecipeError::GroupSize { stage, .. }
            | RecipeError::FormatStage { stage, .. } => Some(*stage),
            _ => None,
        }
    }

    /// A stable code.
    pub fn code(&self) -> &'static str {
        match self {
            RecipeError::NoStages => "no_stages",
            RecipeError::Bits { .. } => "bits_out_of_range",
            RecipeError::Sparsity { .. } => "sparsity_out_of_range",
            RecipeError::GroupSizeMissing { .. } | RecipeError::GroupSizeUnused { .. } => {
                "bad_group_size"
            }
            RecipeError::Granularity { .. } => "bad_granularity",
            RecipeError::ClusterBits { .. } => "bits_out_of_range",
            RecipeError::LowRankChoice { .. } => "bad_rank",
            RecipeError::RankGrows { .. } => "rank_grows_tensor",
            RecipeError::BlockSize { .. } => "row_not_multiple_of_block",
            RecipeError::NotFirst { .. } | RecipeError::CalibratedNotFirst { .. } => {
                "stage_must_be_first"
            }
            RecipeError::CalibratedAmount { .. } => "bad_sparsity",
            RecipeError::Mlp(_) => "no_gated_mlp",
            RecipeError::GroupSize { .. } => "group_size_does_not_divide_row",
            RecipeError::BadPattern { .. } => "bad_pattern",
            RecipeError::TooManyPatterns { .. } => "too_many_patterns",
            RecipeError::TargetMatchesNothing { .. } => "target_matches_nothing",
            RecipeError::NotFloat { .. } => "not_float",
            RecipeError::NothingSelected => "nothing_selected",
            RecipeError::UnknownPreset(_) => "unknown_preset",
            RecipeError::FormatStage { .. } | RecipeError::FormatTensor { .. } => "format_mismatch",
        }
    }
}
