//! Recipes: what a job does to a model (stages, which tensors, output format), their JSON form
//! (the names are part of the API contract: add fields, never rename), the built-in presets, and
//! validation against a model's actual tensors at submission time.

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::compress::lowrank::{Rank, max_useful_rank};
use crate::compress::prune::Norm;
use crate::compress::quantize::{Granularity, IntScheme, ScaleDtype};
use crate::compress::step::Step;
use crate::formats::gguf_rules::{self, FileType, TensorShape};
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
            (_, Some(step)) if self.is_global_prune() => {
                format!("{} (global)", describe_step(step))
            }
            (_, Some(step)) => describe_step(step),
            (_, None) => unreachable!("only structural stages have no step"),
        }
    }
}

/// The smallest group a recipe falls back to: below it the scales cost more than the codes save.
const SMALLEST_FALLBACK_GROUP: usize = 16;

/// The largest group size, at most `wanted` and at least [`SMALLEST_FALLBACK_GROUP`] (or
/// `wanted` itself), that divides every row length.
fn fitting_group(wanted: usize, rows: impl Iterator<Item = u64>) -> Option<usize> {
    let common = rows.fold(0u64, gcd);
    if common == 0 || common.is_multiple_of(wanted as u64) {
        return Some(wanted);
    }
    (SMALLEST_FALLBACK_GROUP.min(wanted)..=wanted)
        .rev()
        .find(|g| common.is_multiple_of(*g as u64))
}

fn gcd(a: u64, b: u64) -> u64 {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    x
}

/// A recipe as it runs on one model: see [`Recipe::plan`].
#[derive(Debug, Clone)]
pub struct Plan {
    /// The recipe as it runs (format resolved, group size fitted).
    pub recipe: Recipe,
    /// The selected tensors, in model order.
    pub tensors: Vec<PlannedTensor>,
    /// Position in `tensors` by name: the pipeline and the writers look each tensor up.
    by_name: std::collections::HashMap<String, usize>,
}

/// What happens to one selected tensor.
#[derive(Debug, Clone)]
pub struct PlannedTensor {
    /// Its name.
    pub name: String,
    /// The kernel steps run on it, in order.
    pub steps: Vec<Step>,
    /// Why its steps differ from what the recipe names (a fallback, a rule of the format).
    pub note: Option<String>,
    /// What is done to it, for its report ("int4 sym group 96", "gguf Q8_0").
    pub scheme: String,
}

impl Plan {
    /// The recipe's stages, described.
    pub fn scheme(&self) -> String {
        self.recipe
            .stages
            .iter()
            .map(Stage::describe)
            .collect::<Vec<_>>()
            .join(" + ")
    }

    /// The plan of one tensor, if it is selected.
    pub fn tensor(&self, name: &str) -> Option<&PlannedTensor> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
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
            RecipeError::NotFirst { .. } => "stage_must_be_first",
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

/// A compiled `targets`/`ignore` pattern.
#[derive(Debug, Clone)]
enum Pattern {
    Exact(String),
    Regex(Regex),
}

/// Most `targets` plus `ignore` entries in a recipe.
pub const MAX_PATTERNS: usize = 1024;
/// Most of them that are `re:` patterns.
pub const MAX_REGEX_PATTERNS: usize = 32;
/// Longest pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1024;
/// Largest compiled program of one `re:` pattern, and the most its lazy DFA may cache, in
/// bytes: a recipe's patterns together stay under 16 MiB whatever they say.
pub const MAX_REGEX_BYTES: usize = 256 << 10;

impl Pattern {
    fn compile(text: &str) -> Result<Pattern, RecipeError> {
        let bad = |reason: String| RecipeError::BadPattern {
            pattern: text.chars().take(80).collect(),
            reason,
        };
        if text.len() > MAX_PATTERN_BYTES {
            return Err(bad(format!(
                "{} bytes; a pattern has at most {MAX_PATTERN_BYTES}",
                text.len()
            )));
        }
        if text.contains('\0') {
            return Err(bad("it holds a NUL character".into()));
        }
        match text.strip_prefix("re:") {
            Some(re) => RegexBuilder::new(&format!("^(?:{re})"))
                .size_limit(MAX_REGEX_BYTES)
                .dfa_size_limit(MAX_REGEX_BYTES)
                .build()
                .map(Pattern::Regex)
                .map_err(|e| match e {
                    regex::Error::CompiledTooBig(_) => bad(format!(
                        "it compiles to more than {} KiB; use exact names or a simpler expression",
                        MAX_REGEX_BYTES >> 10
                    )),
                    e => bad(e.to_string()),
                }),
            None => Ok(Pattern::Exact(text.to_owned())),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(exact) => exact == name,
            Pattern::Regex(re) => re.is_match(name),
        }
    }

    fn is_exact(&self) -> bool {
        matches!(self, Pattern::Exact(_))
    }
}

/// Which tensors a recipe compresses.
#[derive(Debug, Clone)]
pub struct Selection {
    targets: Vec<Pattern>,
    ignore: Vec<Pattern>,
}

impl Selection {
    /// Whether the tensor is compressed: a target matches it, no ignore does, it is a float with
    /// at least one element, and it has two or more dimensions unless a target names it exactly.
    /// A tensor with a zero dimension has nothing to compress: every format stores it unchanged.
    pub fn selects(&self, name: &str, dtype: Dtype, shape: &[u64]) -> bool {
        if self.ignore.iter().any(|p| p.matches(name))
            || !crate::numeric::is_float(dtype)
            || shape.contains(&0)
        {
            return false;
        }
        self.targets
            .iter()
            .any(|p| p.matches(name) && (shape.len() >= 2 || p.is_exact()))
    }
}

impl Recipe {
    /// Compiles the tensor selection. In compressed-tensors, default targets leave embeddings
    /// and `lm_head` dense, as llm-compressor does: vLLM loads neither quantized.
    pub fn selection(&self) -> Result<Selection, RecipeError> {
        let given = self.targets.iter().chain(&self.ignore);
        let regexes = given.clone().filter(|p| p.starts_with("re:")).count();
        let count = given.count();
        if count > MAX_PATTERNS || regexes > MAX_REGEX_PATTERNS {
            return Err(RecipeError::TooManyPatterns { count, regexes });
        }
        let mut ignore = self.ignore.clone();
        if self.format == OutputFormat::CompressedTensors && self.targets == default_targets() {
            ignore.extend(
                COMPRESSED_TENSORS_DEFAULT_IGNORE
                    .iter()
                    .map(|s| s.to_string()),
            );
        }
        Ok(Selection {
            targets: self
                .targets
                .iter()
                .map(|t| Pattern::compile(t))
                .collect::<Result<_, _>>()?,
            ignore: ignore
                .iter()
                .map(|t| Pattern::compile(t))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The tensors' shapes after a first `mlp_channels` stage: its projections lose the pruned
    /// share of their intermediate channels (the rows of gate and up, the columns of down).
    fn shapes_after_mlp_shrinking(&self, tensors: &[TensorMeta]) -> Vec<TensorMeta> {
        let mut shapes = tensors.to_vec();
        let Some(Stage::Prune(Prune::MlpChannels { sparsity, .. })) = self.stages.first() else {
            return shapes;
        };
        let Ok(layers) = hf::gated_mlps(tensors.iter().map(|t| (t.name.as_str(), &t.shape[..])))
        else {
            return shapes;
        };
        for layer in layers {
            let kept = layer.intermediate
                - crate::compress::prune::prune_count(layer.intermediate, *sparsity);
            for t in shapes.iter_mut() {
                if t.name == layer.gate || t.name == layer.up {
                    t.shape[0] = kept;
                } else if t.name == layer.down {
                    t.shape[1] = kept;
                }
            }
        }
        shapes
    }

    /// Checks every rule against the model's tensors; returns the names that will be compressed.
    pub fn validate(&self, tensors: &[TensorMeta]) -> Result<Vec<String>, RecipeError> {
        Ok(self
            .plan(tensors)?
            .tensors
            .into_iter()
            .map(|t| t.name)
            .collect())
    }

    /// The format an `auto` recipe writes: the one that stores what its last stage makes, when
    /// only pruning comes before it; otherwise dense safetensors (a clustered codebook then
    /// quantized, say, is stored by no compact format).
    fn natural_format(&self) -> OutputFormat {
        let Some((last, before)) = self.stages.split_last() else {
            return OutputFormat::Safetensors;
        };
        if !before.iter().all(|s| matches!(s, Stage::Prune(_))) {
            return OutputFormat::Safetensors;
        }
        match last {
            Stage::Quantize(Quantize::Int { .. } | Quantize::Fp8 { .. })
            | Stage::Prune(Prune::Magnitude { .. } | Prune::SemiStructured { .. }) => {
                OutputFormat::CompressedTensors
            }
            Stage::Quantize(Quantize::Gguf { .. }) => OutputFormat::Gguf,
            Stage::Cluster(_) | Stage::LowRank(_) => OutputFormat::CompactSafetensors,
            _ => OutputFormat::Safetensors,
        }
    }

    /// Checks every rule against the model's tensors and decides what happens to each: the
    /// recipe as it will run (an `auto` format resolved, a group size that no row allows
    /// replaced by the largest that every row allows) and each selected tensor's steps, with
    /// the reason wherever a tensor gets other steps than the recipe names.
    pub fn plan(&self, tensors: &[TensorMeta]) -> Result<Plan, RecipeError> {
        let mut recipe = self.clone();
        let mut notes = Vec::new();
        // An auto format is the natural one, with its rules: a recipe it cannot hold is
        // refused with the reason, never written dense behind the user's back.
        if recipe.format == OutputFormat::Auto {
            recipe.format = self.natural_format();
        }
        let selected = recipe.check(tensors, &mut notes)?;
        let gguf = recipe.stages.iter().find_map(|s| match s {
            Stage::Quantize(Quantize::Gguf { kind, pure }) => Some((*kind, *pure)),
            _ => None,
        });
        let choices = gguf.map(|(kind, pure)| {
            let shapes: Vec<TensorShape> = selected
                .iter()
                .map(|t| TensorShape {
                    name: &t.name,
                    row: t.shape.last().copied().unwrap_or(1),
                })
                .collect();
            let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
            gguf_rules::choose(kind, pure, &shapes, &names)
        });
        let planned: Vec<PlannedTensor> = selected
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut steps = recipe.steps_for(t.dtype);
                let mut note = notes
                    .iter()
                    .find(|(name, _)| *name == t.name)
                    .map(|(_, n)| n.clone());
                if let Some(choice) = choices.as_ref().map(|c| &c[i]) {
                    steps.retain_mut(|step| match step {
                        Step::Gguf(kind) => match choice.kind {
                            Some(chosen) => {
                                *kind = chosen;
                                true
                            }
                            None => false,
                        },
                        _ => true,
                    });
                    note = note.or_else(|| choice.reason.clone());
                }
                let chosen = steps.iter().find_map(|s| match s {
                    Step::Gguf(kind) => Some(kind.name()),
                    _ => None,
                });
                let scheme = recipe
                    .stages
                    .iter()
                    .map(|stage| match stage {
                        Stage::Quantize(Quantize::Gguf { .. }) => match chosen {
                            Some(kind) => format!("gguf {kind}"),
                            None => "unquantized".to_owned(),
                        },
                        other => other.describe(),
                    })
                    .collect::<Vec<_>>()
                    .join(" + ");
                PlannedTensor {
                    name: t.name.clone(),
                    steps,
                    note,
                    scheme,
                }
            })
            .collect();
        let by_name = planned
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Plan {
            recipe,
            tensors: planned,
            by_name,
        })
    }

    /// Checks every rule against the model's tensors; returns the tensors that will be
    /// compressed (with their shapes after a structural stage). A group size that does not
    /// divide some selected row is replaced by the largest that divides every one, with a note
    /// for each tensor whose rows made it so.
    fn check(
        &mut self,
        tensors: &[TensorMeta],
        notes: &mut Vec<(String, String)>,
    ) -> Result<Vec<TensorMeta>, RecipeError> {
        if self.stages.is_empty() {
            return Err(RecipeError::NoStages);
        }
        for (i, stage) in self.stages.iter().enumerate() {
            let stage_no = i + 1;
            match stage {
                Stage::Prune(
                    Prune::Magnitude { sparsity, .. }
                    | Prune::Channels { sparsity, .. }
                    | Prune::MlpChannels { sparsity, .. },
                ) => {
                    if !(0.0..1.0).contains(sparsity) {
                        return Err(RecipeError::Sparsity {
                            stage: stage_no,
                            sparsity: *sparsity,
                        });
                    }
                    if i > 0 && (stage.is_global_prune() || stage.step().is_none()) {
                        return Err(RecipeError::NotFirst { stage: stage_no });
                    }
                    if stage.step().is_none() {
                        hf::gated_mlps(tensors.iter().map(|t| (t.name.as_str(), &t.shape[..])))
                            .map_err(|e| RecipeError::Mlp(e.to_string()))?;
                    }
                }
                // Checked by parsing; the row rule needs the tensors: below.
                Stage::Prune(Prune::SemiStructured { .. }) => {}
                Stage::Quantize(Quantize::Int {
                    bits,
                    granularity,
                    group_size,
                    ..
                }) => {
                    if !(2..=8).contains(bits) {
                        return Err(RecipeError::Bits {
                            stage: stage_no,
                            bits: *bits,
                        });
                    }
                    match (granularity, group_size) {
                        (GranularityName::Group, None | Some(0)) => {
                            return Err(RecipeError::GroupSizeMissing { stage: stage_no });
                        }
                        (GranularityName::Tensor | GranularityName::Channel, Some(_)) => {
                            return Err(RecipeError::GroupSizeUnused { stage: stage_no });
                        }
                        _ => {}
                    }
                }
                Stage::Quantize(Quantize::Fp8 { granularity, .. }) => {
                    if *granularity == GranularityName::Group {
                        return Err(RecipeError::Granularity {
                            stage: stage_no,
                            method: "fp8",
                        });
                    }
                }
                // The row-length rule needs the tensors: checked below.
                Stage::Quantize(Quantize::Gguf { .. } | Quantize::Nf4 {}) => {}
                Stage::LowRank(l) => match (l.rank, l.energy) {
                    (Some(r), None) if r >= 1 => {}
                    (None, Some(e)) if e > 0.0 && e <= 1.0 => {}
                    _ => return Err(RecipeError::LowRankChoice { stage: stage_no }),
                },
                Stage::Cluster(c) => {
                    if !(1..=8).contains(&c.bits) {
                        return Err(RecipeError::ClusterBits {
                            stage: stage_no,
                            bits: c.bits,
                        });
                    }
                    if c.granularity == GranularityName::Group {
                        return Err(RecipeError::Granularity {
                            stage: stage_no,
                            method: "clustering",
                        });
                    }
                }
            }
        }
        let selection = self.selection()?;
        for (text, pattern) in self.targets.iter().zip(&selection.targets) {
            let hit = tensors.iter().find(|t| pattern.matches(&t.name));
            match hit {
                None => {
                    return Err(RecipeError::TargetMatchesNothing {
                        pattern: text.clone(),
                    });
                }
                Some(t) if pattern.is_exact() && !crate::numeric::is_float(t.dtype) => {
                    return Err(RecipeError::NotFloat {
                        tensor: t.name.clone(),
                        dtype: t.dtype,
                    });
                }
                _ => {}
            }
        }
        // The later stages see the MLP projections as a first shrinking stage leaves them.
        let shrunk = self.shapes_after_mlp_shrinking(tensors);
        let selected: Vec<&TensorMeta> = shrunk
            .iter()
            .filter(|t| selection.selects(&t.name, t.dtype, &t.shape))
            .collect();
        if selected.is_empty() {
            return Err(RecipeError::NothingSelected);
        }
        for i in 0..self.stages.len() {
            if let Stage::Quantize(Quantize::Int {
                granularity: GranularityName::Group,
                group_size: Some(n),
                ..
            }) = &mut self.stages[i]
            {
                let wanted = *n;
                let fitting = fitting_group(wanted, selected.iter().map(|t| t.row_len()));
                match fitting {
                    Some(g) if g == wanted => {}
                    Some(g) => {
                        *n = g;
                        for t in selected.iter().filter(|t| t.row_len() % wanted as u64 != 0) {
                            notes.push((
                                t.name.clone(),
                                format!(
                                    "rows of {} values are not a multiple of {wanted}: groups of {g} for every tensor",
                                    t.row_len()
                                ),
                            ));
                        }
                    }
                    None => {
                        // Name the tensor without which a group would fit, else the first
                        // whose rows the group does not divide.
                        let rows: Vec<u64> = selected.iter().map(|t| t.row_len()).collect();
                        let mut before = vec![0u64; rows.len() + 1];
                        let mut after = vec![0u64; rows.len() + 1];
                        for i in 0..rows.len() {
                            before[i + 1] = gcd(before[i], rows[i]);
                            let j = rows.len() - 1 - i;
                            after[j] = gcd(after[j + 1], rows[j]);
                        }
                        let t = (0..rows.len())
                            .find(|&i| {
                                let others = gcd(before[i], after[i + 1]);
                                fitting_group(wanted, std::iter::once(others)).is_some()
                            })
                            .map(|i| selected[i])
                            .or_else(|| {
                                selected
                                    .iter()
                                    .copied()
                                    .find(|t| t.row_len() % wanted as u64 != 0)
                            })
                            .expect("some row refuses the group size");
                        return Err(RecipeError::GroupSize {
                            stage: i + 1,
                            group_size: wanted,
                            row: t.row_len(),
                            tensor: t.name.clone(),
                        });
                    }
                }
            }
            let stage = &self.stages[i];
            if let Stage::LowRank(LowRankStage {
                rank: Some(rank), ..
            }) = stage
            {
                for t in &selected {
                    let rows = t.shape.first().copied().unwrap_or(1).max(1);
                    let cols = t.shape.iter().product::<u64>() / rows;
                    let max = max_useful_rank(rows as usize, cols as usize);
                    if *rank > max {
                        return Err(RecipeError::RankGrows {
                            stage: i + 1,
                            rank: *rank,
                            rows,
                            cols,
                            max,
                            tensor: t.name.clone(),
                        });
                    }
                }
            }
            let row_block = match stage {
                Stage::Prune(Prune::SemiStructured { pattern }) => Some((
                    format!("{}:{} pruning", pattern.n, pattern.m),
                    usize::from(pattern.m),
                )),
                _ => None,
            };
            if let Some((kind, block)) = row_block
                && let Some(t) = selected.iter().find(|t| t.row_len() % block as u64 != 0)
            {
                return Err(RecipeError::BlockSize {
                    stage: i + 1,
                    kind,
                    block: block as u64,
                    row: t.row_len(),
                    tensor: t.name.clone(),
                });
            }
        }
        self.check_format(tensors, &selected)?;
        Ok(selected.into_iter().cloned().collect())
    }

    /// The steps run on a tensor stored as `dtype`: the stages' steps, with scales kept in the
    /// weight's own dtype where the format stores them so (compressed-tensors).
    pub fn steps_for(&self, dtype: Dtype) -> Vec<Step> {
        let weight_scale = weight_scale_dtype(dtype);
        let in_weight_dtype = self.format == OutputFormat::CompressedTensors;
        self.stages
            .iter()
            .filter_map(Stage::step)
            .map(|step| match step {
                Step::Int(mut scheme) if in_weight_dtype => {
                    scheme.scale_dtype = weight_scale;
                    Step::Int(scheme)
                }
                Step::Fp8 { per_channel, .. } if in_weight_dtype => Step::Fp8 {
                    per_channel,
                    scale_dtype: weight_scale,
                },
                other => other,
            })
            .collect()
    }

    /// The output format's rules: which stages it can store, last, and on which tensors.
    fn check_format(
        &self,
        tensors: &[TensorMeta],
        selected: &[&TensorMeta],
    ) -> Result<(), RecipeError> {
        let format = self.format.name();
        let stage_error = |stage: usize, what: String, hint: &'static str| {
            Err(RecipeError::FormatStage {
                stage: stage + 1,
                format,
                what,
                hint,
            })
        };
        let tensor_error = |t: &TensorMeta, reason: String| {
            Err(RecipeError::FormatTensor {
                format,
                tensor: t.name.clone(),
                reason,
            })
        };
        let last = self.stages.len() - 1;
        for (i, stage) in self.stages.iter().enumerate() {
            let what = stage.describe();
            match (self.format, stage) {
                (OutputFormat::Safetensors | OutputFormat::Auto, _)
                | (OutputFormat::CompressedTensors, Stage::Prune(_)) => {}
                (OutputFormat::CompressedTensors, Stage::Cluster(_) | Stage::LowRank(_)) => {
                    return stage_error(
                        i,
                        what,
                        "use format compact-safetensors (or safetensors for dense values)",
                    );
                }
                (
                    OutputFormat::CompressedTensors,
                    Stage::Quantize(Quantize::Gguf { .. } | Quantize::Nf4 {}),
                ) => {
                    return stage_error(
                        i,
                        what,
                        "GGUF block types go to format gguf, NF4 to format safetensors",
                    );
                }
                (OutputFormat::CompressedTensors, Stage::Quantize(q)) => {
                    if i != last {
                        return stage_error(
                            i,
                            format!("{what} followed by other stages"),
                            "its codes are what is stored, so quantize must be the last stage",
                        );
                    }
                    if let Quantize::Int {
                        scale_dtype: Some(wanted),
                        ..
                    }
                    | Quantize::Fp8 {
                        scale_dtype: Some(wanted),
                        ..
                    } = q
                        && let Some(t) = selected
                            .iter()
                            .find(|t| weight_scale_dtype(t.dtype) != *wanted)
                    {
                        return tensor_error(
                            t,
                            format!(
                                "is {}; compressed-tensors stores scales in the weight's dtype, so scale_dtype must be left out or match it",
                                t.dtype
                            ),
                        );
                    }
                }
                (OutputFormat::Gguf, Stage::Quantize(Quantize::Gguf { .. })) if i == last => {}
                (OutputFormat::Gguf, Stage::Prune(_)) => {}
                (OutputFormat::Gguf, _) => {
                    return stage_error(
                        i,
                        what,
                        "GGUF stores its own block types: end the recipe with a quantize stage of scheme gguf",
                    );
                }
                (OutputFormat::CompactSafetensors, Stage::Cluster(_) | Stage::LowRank(_))
                    if i == last => {}
                (OutputFormat::CompactSafetensors, Stage::Prune(_)) if i != last => {}
                (OutputFormat::CompactSafetensors, _) => {
                    return stage_error(
                        i,
                        what,
                        "compact-safetensors stores clustered and low-rank tensors: end the recipe with a cluster or low_rank stage",
                    );
                }
            }
        }
        match self.format {
            OutputFormat::CompressedTensors => {
                if let Some(t) = selected
                    .iter()
                    .find(|t| t.shape.len() != 2 || !t.name.ends_with(".weight"))
                {
                    return tensor_error(
                        t,
                        format!(
                            "has shape {:?}; compressed-tensors compresses the 2-D weights of linear layers (\"<module>.weight\"); leave the others out with ignore",
                            t.shape
                        ),
                    );
                }
            }
            OutputFormat::CompactSafetensors => {
                if let Some(t) = selected.iter().find(|t| t.shape.len() != 2) {
                    return tensor_error(
                        t,
                        format!(
                            "has shape {:?}; only 2-D tensors are stored factored",
                            t.shape
                        ),
                    );
                }
            }
            OutputFormat::Gguf => {
                if let Some(t) = tensors.iter().find(|t| {
                    t.shape.len() > 4 || crate::formats::gguf::dense_type(t.dtype).is_none()
                }) {
                    return tensor_error(
                        t,
                        format!(
                            "is {} with {} dimensions; GGUF holds F32, F16, BF16, F64 and signed integer tensors of at most 4 dimensions",
                            t.dtype,
                            t.shape.len()
                        ),
                    );
                }
            }
            OutputFormat::Safetensors | OutputFormat::Auto => {}
        }
        Ok(())
    }
}

/// The scale precision that matches a weight's dtype (F32 for anything but F16 and BF16).
fn weight_scale_dtype(dtype: Dtype) -> ScaleDtype {
    match dtype {
        Dtype::F16 => ScaleDtype::F16,
        Dtype::BF16 => ScaleDtype::Bf16,
        _ => ScaleDtype::F32,
    }
}

/// A named, built-in recipe.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Preset {
    /// Name to pass as `preset`.
    pub name: String,
    /// What it does, what it writes and which runtimes load it.
    pub description: String,
    /// The recipe.
    pub recipe: Recipe,
}

fn int(
    bits: u8,
    symmetric: bool,
    granularity: GranularityName,
    group_size: Option<usize>,
) -> Stage {
    Stage::Quantize(Quantize::Int {
        bits,
        symmetric,
        granularity,
        group_size,
        scale_dtype: None,
    })
}

fn recipe(format: OutputFormat, stages: Vec<Stage>) -> Recipe {
    Recipe {
        stages,
        targets: default_targets(),
        ignore: Vec::new(),
        format,
        sparse_layout: None,
    }
}

const CT: OutputFormat = OutputFormat::CompressedTensors;

/// The runtimes that load each format, for the presets' descriptions.
const CT_LOADERS: &str = "compressed-tensors safetensors: transformers (with the compressed-tensors package) and vLLM load it";
const GGUF_LOADERS: &str = "GGUF for llama.cpp and everything built on it";

/// The built-in presets: each writes the format that stores its result, so the file is as
/// small as the method makes it.
pub fn presets() -> Vec<Preset> {
    let prune50 = Stage::Prune(Prune::Magnitude {
        sparsity: 0.5,
        scope: PruneScope::Tensor,
    });
    let mut all = vec![
        Preset {
            name: "int8".into(),
            description: (format!(
                "8-bit integer weights, symmetric, one scale per output channel (W8A16); writes {CT_LOADERS}"
            )),
            recipe: recipe(CT, vec![int(8, true, GranularityName::Channel, None)]),
        },
        Preset {
            name: "int8-tensor".into(),
            description: (format!(
                "8-bit integer weights, symmetric, one scale per tensor; writes {CT_LOADERS}"
            )),
            recipe: recipe(CT, vec![int(8, true, GranularityName::Tensor, None)]),
        },
        Preset {
            name: "w4-g128".into(),
            description: (format!(
                "4-bit integer weights, symmetric, one scale per 128 values of a row (the largest group that divides every row when 128 does not; W4A16); writes {CT_LOADERS}"
            )),
            recipe: recipe(CT, vec![int(4, true, GranularityName::Group, Some(128))]),
        },
        Preset {
            name: "w4-g128-asym".into(),
            description: "4-bit integer weights with zero-points, one scale per 128 values (or the largest group that fits); writes compressed-tensors pack-quantized as llm-compressor does: vLLM and transformers with compressed-tensors 0.19 load it; transformers 5.25 with compressed-tensors 0.20.1 refuses every asymmetric packed file (its loader expects the zero-points unpacked, its decompressor packed)".into(),
            recipe: recipe(CT, vec![int(4, false, GranularityName::Group, Some(128))]),
        },
        Preset {
            name: "fp8".into(),
            description: (format!(
                "FP8 E4M3 weights, one scale per output channel (absmax / 448); writes {CT_LOADERS}"
            )),
            recipe: recipe(
                CT,
                vec![Stage::Quantize(Quantize::Fp8 {
                    granularity: GranularityName::Channel,
                    scale_dtype: None,
                })],
            ),
        },
        Preset {
            name: "fp8-tensor".into(),
            description: (format!("FP8 E4M3 weights, one scale per tensor; writes {CT_LOADERS}")),
            recipe: recipe(
                CT,
                vec![Stage::Quantize(Quantize::Fp8 {
                    granularity: GranularityName::Tensor,
                    scale_dtype: None,
                })],
            ),
        },
    ];
    for kind in FileType::ALL {
        let what = match kind {
            FileType::Q8_0 => "8-bit codes, one f16 scale per 32 values",
            FileType::Q6_K => "6-bit codes in 256-value super-blocks with 8-bit sub-block scales",
            FileType::Q5_1 => "5-bit codes with an f16 scale and minimum per 32 values",
            FileType::Q5_0 => "5-bit codes with an f16 scale per 32 values",
            FileType::Q5_K_M => {
                "5-bit K-quant super-blocks, with Q6_K for half the attention V and FFN down projections"
            }
            FileType::Q5_K_S => "5-bit K-quant super-blocks with 6-bit sub-block scales and mins",
            FileType::Q4_K_M => {
                "4-bit K-quant super-blocks, with Q6_K for half the attention V and FFN down projections"
            }
            FileType::Q4_K_S => {
                "4-bit K-quant super-blocks, with Q5_K for the first four attention V and the first eighth of the FFN down projections"
            }
            FileType::Q4_1 => "4-bit codes with an f16 scale and minimum per 32 values",
            FileType::Q4_0 => "4-bit codes with an f16 scale per 32 values",
        };
        all.push(Preset {
            name: kind.name().to_lowercase(),
            description: (format!(
                "llama.cpp {}: {what}; each tensor's type by llama-quantize's rules (the output projection or tied embedding at Q6_K or Q8_0; rows that are not whole blocks fall back to a type that fits); writes {GGUF_LOADERS}",
                kind.name()
            )),
            recipe: recipe(OutputFormat::Gguf, vec![Stage::Quantize(Quantize::Gguf { kind, pure: false })]),
        });
    }
    all.extend([
        Preset {
            name: "sparse-2of4".into(),
            description: (format!("2:4 semi-structured sparsity: the 2 largest of every 4 weights kept, every value stored with a sparsity_config (no smaller on disk; faster only where a 2:4 kernel runs it, as vLLM's); writes {CT_LOADERS}")),
            recipe: recipe(CT, vec![Stage::Prune(Prune::SemiStructured {
                pattern: NmPattern { n: 2, m: 4 },
            })]),
        },
        Preset {
            name: "cluster-16".into(),
            description: "weight clustering: 16 k-means centroids per tensor, stored as a codebook and 4-bit indices in compact safetensors (squeeze decompress rebuilds a dense checkpoint for any loader)".into(),
            recipe: recipe(OutputFormat::CompactSafetensors, vec![Stage::Cluster(Cluster {
                bits: 4,
                granularity: GranularityName::Tensor,
                seed: 0,
            })]),
        },
        Preset {
            name: "prune-50".into(),
            description: (format!("zero the 50% smallest-magnitude weights of each tensor, every value stored with a sparsity_config (no smaller on disk; set sparse_layout bitmask to leave the zeros out for compressed-tensors 0.14 and earlier); writes {CT_LOADERS}")),
            recipe: recipe(CT, vec![prune50.clone()]),
        },
        Preset {
            name: "prune-50-int8".into(),
            description: (format!("magnitude pruning to 50%, then int8 per channel (the zeros stay exact); writes {CT_LOADERS}")),
            recipe: recipe(CT, vec![prune50, int(8, true, GranularityName::Channel, None)]),
        },
    ]);
    all
}

/// The preset with this name.
pub fn preset(name: &str) -> Result<Recipe, RecipeError> {
    // Earlier names of presets that were renamed.
    let name = match name {
        "q4_k" => "q4_k_m",
        other => other,
    };
    presets()
        .into_iter()
        .find(|p| p.name == name)
        .map(|p| p.recipe)
        .ok_or_else(|| RecipeError::UnknownPreset(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Vec<TensorMeta> {
        let t = |name: &str, dtype, shape: &[u64]| TensorMeta {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        };
        vec![
            t("layers.0.mlp.weight", Dtype::BF16, &[256, 512]),
            t("layers.1.mlp.weight", Dtype::BF16, &[256, 768]),
            t("norm.weight", Dtype::F32, &[512]),
            t("ids", Dtype::I64, &[4, 4]),
        ]
    }

    fn parse(json: &str) -> Recipe {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_design_example_parses_and_round_trips() {
        let r = parse(
            r#"{"stages": [{"prune": {"method": "magnitude", "sparsity": 0.5, "scope": "tensor"}},
                           {"quantize": {"scheme": "int", "bits": 4, "symmetric": true, "granularity": "group", "group_size": 128}}],
                "targets": ["re:.*\\.weight$"], "ignore": ["lm_head.weight"], "format": "safetensors"}"#,
        );
        let again: Recipe = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(r, again);
        assert_eq!(
            r.validate(&model()).unwrap(),
            ["layers.0.mlp.weight", "layers.1.mlp.weight"]
        );
    }

    #[test]
    fn by_default_only_float_tensors_of_two_or_more_dimensions_are_selected() {
        let r = parse(r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8}}]}"#);
        assert_eq!(
            r.validate(&model()).unwrap(),
            ["layers.0.mlp.weight", "layers.1.mlp.weight"]
        );
        let named = parse(
            r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8}}], "targets": ["norm.weight"], "format": "safetensors"}"#,
        );
        assert_eq!(named.validate(&model()).unwrap(), ["norm.weight"]);
    }

    #[test]
    fn rules_that_cannot_hold_name_the_tensor_and_the_rule() {
        let group = parse(
            r#"{"stages": [{"quantize": {"scheme": "int", "bits": 4, "granularity": "group", "group_size": 512}}]}"#,
        );
        // 512 does not divide 768: every tensor gets the largest group that divides both.
        let plan = group.plan(&model()).unwrap();
        assert!(plan.scheme().contains("group 256"), "{}", plan.scheme());
        let note = |name: &str| plan.tensor(name).unwrap().note.clone();
        assert_eq!(note("layers.0.mlp.weight"), None);
        assert!(
            note("layers.1.mlp.weight")
                .unwrap()
                .contains("groups of 256")
        );
        let mut odd = model();
        odd.push(TensorMeta {
            name: "odd.weight".into(),
            dtype: Dtype::F16,
            shape: vec![8, 100],
        });
        let err = group.validate(&odd).unwrap_err();
        assert_eq!(err.code(), "group_size_does_not_divide_row");
        assert_eq!(err.tensor(), Some("odd.weight"));
        let cases = [
            (r#"{"stages": []}"#, "no_stages"),
            (
                r#"{"stages": [{"quantize": {"scheme": "int", "bits": 9}}]}"#,
                "bits_out_of_range",
            ),
            (
                r#"{"stages": [{"quantize": {"scheme": "int", "bits": 1}}]}"#,
                "bits_out_of_range",
            ),
            (
                r#"{"stages": [{"prune": {"method": "magnitude", "sparsity": 1.0}}]}"#,
                "sparsity_out_of_range",
            ),
            (
                r#"{"stages": [{"prune": {"method": "magnitude", "sparsity": -0.1}}]}"#,
                "sparsity_out_of_range",
            ),
            (
                r#"{"stages": [{"quantize": {"scheme": "int", "bits": 4, "granularity": "group"}}]}"#,
                "bad_group_size",
            ),
            (
                r#"{"stages": [{"quantize": {"scheme": "int", "bits": 4, "group_size": 64}}]}"#,
                "bad_group_size",
            ),
            (
                r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8}}], "targets": ["nope"]}"#,
                "target_matches_nothing",
            ),
            (
                r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8}}], "targets": ["re:("]}"#,
                "bad_pattern",
            ),
            (
                r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8}}], "targets": ["ids"]}"#,
                "not_float",
            ),
            (
                r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8}}], "ignore": ["re:layers"]}"#,
                "nothing_selected",
            ),
        ];
        for (json, code) in cases {
            assert_eq!(
                parse(json).validate(&model()).unwrap_err().code(),
                code,
                "{json}"
            );
        }
    }

    #[test]
    fn unknown_stages_fields_and_formats_are_parse_errors() {
        for json in [
            r#"{"stages": [{"smash": {}}]}"#,
            r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8, "colour": "red"}}]}"#,
            r#"{"stages": [{"quantize": {"scheme": "int8"}}]}"#,
            r#"{"stages": [], "format": "onnx"}"#,
        ] {
            assert!(serde_json::from_str::<Recipe>(json).is_err(), "{json}");
        }
    }

    #[test]
    fn every_preset_validates_on_a_typical_model() {
        for p in presets() {
            p.recipe
                .validate(&model())
                .unwrap_or_else(|e| panic!("{}: {e}", p.name));
        }
        assert!(preset("int8").is_ok());
        assert_eq!(preset("int3").unwrap_err().code(), "unknown_preset");
    }

    #[test]
    fn pruning_methods_parse_and_check_their_rules() {
        let global = parse(
            r#"{"stages": [{"prune": {"method": "magnitude", "sparsity": 0.5, "scope": "global"}},
                           {"quantize": {"scheme": "int", "bits": 8, "scale_dtype": "bf16"}}]}"#,
        );
        assert_eq!(global.validate(&model()).unwrap().len(), 2);
        assert_eq!(global.stages[0].describe(), "magnitude prune 50% (global)");
        assert_eq!(
            global.stages[1].describe(),
            "int8 sym per channel bf16 scales"
        );
        let late = parse(
            r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8}},
                           {"prune": {"method": "magnitude", "sparsity": 0.5, "scope": "global"}}]}"#,
        );
        assert_eq!(
            late.validate(&model()).unwrap_err().code(),
            "stage_must_be_first"
        );
        let nm =
            parse(r#"{"stages": [{"prune": {"method": "semi_structured", "pattern": "2:4"}}]}"#);
        assert_eq!(nm.validate(&model()).unwrap().len(), 2);
        assert_eq!(
            serde_json::to_value(&nm).unwrap()["stages"][0]["prune"]["pattern"],
            "2:4"
        );
        let odd = vec![TensorMeta {
            name: "odd.weight".into(),
            dtype: Dtype::F16,
            shape: vec![8, 6],
        }];
        let wide =
            parse(r#"{"stages": [{"prune": {"method": "semi_structured", "pattern": "4:8"}}]}"#);
        let err = wide.validate(&odd).unwrap_err();
        assert_eq!(err.code(), "row_not_multiple_of_block");
        assert!(err.to_string().contains("multiple of 8"), "{err}");
        for bad in ["4:4", "0:4", "2-4", "2:65", "x:4"] {
            let json = format!(
                r#"{{"stages": [{{"prune": {{"method": "semi_structured", "pattern": "{bad}"}}}}]}}"#
            );
            assert!(serde_json::from_str::<Recipe>(&json).is_err(), "{bad}");
        }
        let channels = parse(
            r#"{"stages": [{"prune": {"method": "channels", "sparsity": 1.5, "norm": "l1"}}]}"#,
        );
        assert_eq!(
            channels.validate(&model()).unwrap_err().code(),
            "sparsity_out_of_range"
        );
    }

    #[test]
    fn mlp_shrinking_needs_gated_mlps_and_comes_first() {
        let t = |name: &str, shape: &[u64]| TensorMeta {
            name: name.into(),
            dtype: Dtype::BF16,
            shape: shape.to_vec(),
        };
        let llama = vec![
            t("model.layers.0.mlp.gate_proj.weight", &[64, 16]),
            t("model.layers.0.mlp.up_proj.weight", &[64, 16]),
            t("model.layers.0.mlp.down_proj.weight", &[16, 64]),
        ];
        let shrink = parse(
            r#"{"stages": [{"prune": {"method": "mlp_channels", "sparsity": 0.5, "norm": "l1"}},
                           {"quantize": {"scheme": "int", "bits": 8}}]}"#,
        );
        assert_eq!(shrink.validate(&llama).unwrap().len(), 3);
        assert_eq!(shrink.stages[0].describe(), "MLP channel shrink 50% by L1");
        assert_eq!(shrink.stages[0].step(), None);
        assert_eq!(
            shrink.validate(&model()).unwrap_err().code(),
            "no_gated_mlp"
        );
        let late = parse(
            r#"{"stages": [{"quantize": {"scheme": "int", "bits": 8}},
                           {"prune": {"method": "mlp_channels", "sparsity": 0.5}}]}"#,
        );
        assert_eq!(
            late.validate(&llama).unwrap_err().code(),
            "stage_must_be_first"
        );
        // Later stages are checked against the shrunk shapes: [64, 16] allows rank 12, the
        // [32, 16] that halving leaves only rank 10.
        let rank = |r: usize| {
            parse(&format!(
                r#"{{"stages": [{{"prune": {{"method": "mlp_channels", "sparsity": 0.5}}}},
                               {{"low_rank": {{"rank": {r}}}}}]}}"#
            ))
        };
        assert!(rank(10).validate(&llama).is_ok());
        let err = rank(11).validate(&llama).unwrap_err();
        assert_eq!(err.code(), "rank_grows_tensor");
        assert!(err.to_string().contains("(32 × 16)"), "{err}");
    }

    #[test]
    fn low_rank_stages_check_the_rank_against_every_tensor() {
        let fixed = parse(r#"{"stages": [{"low_rank": {"rank": 64}}]}"#);
        assert_eq!(fixed.validate(&model()).unwrap().len(), 2);
        assert_eq!(fixed.stages[0].describe(), "low-rank 64");
        let big = parse(r#"{"stages": [{"low_rank": {"rank": 200}}]}"#);
        let err = big.validate(&model()).unwrap_err();
        assert_eq!(err.code(), "rank_grows_tensor");
        assert_eq!(err.tensor(), Some("layers.0.mlp.weight"));
        assert!(err.to_string().contains("at most rank 170"), "{err}");
        let energy = parse(r#"{"stages": [{"low_rank": {"energy": 0.9}}]}"#);
        assert_eq!(energy.stages[0].describe(), "low-rank keeping 90.0% energy");
        for bad in [
            r#"{"low_rank": {}}"#,
            r#"{"low_rank": {"rank": 4, "energy": 0.5}}"#,
            r#"{"low_rank": {"rank": 0}}"#,
            r#"{"low_rank": {"energy": 1.5}}"#,
        ] {
            let recipe = parse(&format!(r#"{{"stages": [{bad}]}}"#));
            assert_eq!(
                recipe.validate(&model()).unwrap_err().code(),
                "bad_rank",
                "{bad}"
            );
        }
    }

    #[test]
    fn cluster_stages_parse_and_check_their_rules() {
        let r = parse(
            r#"{"stages": [{"cluster": {"bits": 3, "granularity": "channel", "seed": 5}},
                           {"quantize": {"scheme": "int", "bits": 8}}]}"#,
        );
        assert_eq!(r.validate(&model()).unwrap().len(), 2);
        // No compact format stores a quantized codebook: auto writes it dense.
        assert_eq!(
            r.plan(&model()).unwrap().recipe.format,
            OutputFormat::Safetensors
        );
        assert_eq!(r.stages[0].describe(), "k-means 8 centroids per channel");
        for (json, code) in [
            (r#"{"cluster": {"bits": 0}}"#, "bits_out_of_range"),
            (r#"{"cluster": {"bits": 9}}"#, "bits_out_of_range"),
            (
                r#"{"cluster": {"bits": 4, "granularity": "group"}}"#,
                "bad_granularity",
            ),
        ] {
            let recipe = parse(&format!(r#"{{"stages": [{json}]}}"#));
            assert_eq!(
                recipe.validate(&model()).unwrap_err().code(),
                code,
                "{json}"
            );
        }
    }

    #[test]
    fn fp8_and_gguf_stages_parse_and_check_their_rules() {
        let fp8 = parse(r#"{"stages": [{"quantize": {"scheme": "fp8"}}]}"#);
        assert_eq!(fp8.validate(&model()).unwrap().len(), 2);
        let grouped =
            parse(r#"{"stages": [{"quantize": {"scheme": "fp8", "granularity": "group"}}]}"#);
        assert_eq!(
            grouped.validate(&model()).unwrap_err().code(),
            "bad_granularity"
        );
        let q8 = parse(r#"{"stages": [{"quantize": {"scheme": "gguf", "type": "Q8_0"}}]}"#);
        assert_eq!(q8.validate(&model()).unwrap().len(), 2);
        let odd = vec![TensorMeta {
            name: "odd.weight".into(),
            dtype: Dtype::F16,
            shape: vec![8, 100],
        }];
        // Rows that fit no block type stay unquantized, with the reason.
        let plan = q8.plan(&odd).unwrap();
        let odd_plan = plan.tensor("odd.weight").unwrap();
        assert!(odd_plan.steps.is_empty());
        assert!(odd_plan.note.as_ref().unwrap().contains("rows of 100"));
        assert_eq!(
            plan.recipe.format,
            OutputFormat::Gguf,
            "auto resolves to gguf"
        );
        assert!(
            serde_json::from_str::<Recipe>(
                r#"{"stages": [{"quantize": {"scheme": "gguf", "type": "Q3_X"}}]}"#
            )
            .is_err()
        );
    }
}
