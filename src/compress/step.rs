//! The kernel steps a tensor goes through, as the pipeline hands them to `tensor` (which runs
//! them chunk by chunk) and `fused` (which runs some of them in one pass).

use crate::compress::blocks::BlockType;
use crate::compress::lowrank::Rank;
use crate::compress::nf4;
use crate::compress::prune::Norm;
use crate::compress::quantize::{IntScheme, ScaleDtype};

/// One kernel step, as the pipeline runs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// Zero the smallest-magnitude fraction of the tensor (exactly).
    MagnitudePrune {
        /// Fraction in [0, 1).
        sparsity: f64,
    },
    /// Zero the `count` smallest-magnitude values (the per-tensor share of a global threshold).
    MagnitudePruneCount {
        /// How many.
        count: u64,
    },
    /// Keep the `n` largest of every `m` consecutive values of a row.
    SemiStructured {
        /// Kept per group.
        n: u8,
        /// Group length (divides the row).
        m: u8,
    },
    /// The values a calibrated method (Wanda, SparseGPT) computed for the tensor from the
    /// calibration set, in place of its own: the pipeline supplies them in the view
    /// ([`crate::compress::tensor::TensorView::calibrated`]); the first step only.
    Calibrated,
    /// Zero the fraction `sparsity` of whole rows (output channels) with the smallest norm.
    ChannelPrune {
        /// Fraction of rows in [0, 1).
        sparsity: f64,
        /// Ranking norm.
        norm: Norm,
    },
    /// Integer fake quantization.
    Int(IntScheme),
    /// FP8 E4M3 fake quantization, scale absmax / 448 per output row or per tensor.
    Fp8 {
        /// One scale per row (else one for the tensor).
        per_channel: bool,
        /// Precision the scales are rounded to before use.
        scale_dtype: ScaleDtype,
    },
    /// A GGUF block type, quantized and decoded back (rows are multiples of 32 values).
    Gguf(BlockType),
    /// NF4 with one absmax per 64 values of the flattened tensor.
    Nf4,
    /// W ≈ A·B by truncated SVD (the tensor as rows × cols), stored densely as A·B.
    LowRank {
        /// Fixed, or by kept energy.
        rank: Rank,
        /// Seed of the randomized SVD's Gaussian directions.
        seed: u64,
    },
    /// k-means clustering to 2^bits centroids, per tensor or per row.
    Cluster {
        /// Index width, 1 to 8.
        bits: u8,
        /// One codebook per row (else one for the tensor).
        per_row: bool,
        /// Seed of the k-means++ choices.
        seed: u64,
    },
}

impl Step {
    /// Whether the step's result has a stored form of its own (codes, a codebook, factors)
    /// rather than dense values.
    pub fn has_stored_form(&self) -> bool {
        matches!(
            self,
            Step::Int(_)
                | Step::Fp8 { .. }
                | Step::Gguf(_)
                | Step::Nf4
                | Step::LowRank { .. }
                | Step::Cluster { .. }
        )
    }

    /// The block, in values of the flattened tensor, that a chunk must start on (1: any row).
    pub(crate) fn flat_block(&self) -> usize {
        match self {
            Step::Nf4 => nf4::BLOCK,
            _ => 1,
        }
    }
}
