//! Accuracy-aware compression: methods that look at what a layer's inputs really are, taken
//! from a calibration set run through the model, rather than at the weights alone. Pure and
//! synchronous like `compress`: the statistics come in as plain sums, the layers go out as
//! codes and values, and the worker or CLI runs it on the rayon pool.
//!
//! - [`obs`]: the inputs' Hessian sums, its dampened inverse factor, and the column sweep
//!   (Optimal Brain Surgeon) that GPTQ and SparseGPT share.
//! - [`gptq`]: integer quantization with each column's rounding error compensated by the
//!   columns after it.
//! - [`sparsegpt`]: pruning with the same compensation, unstructured or N:M, optionally
//!   quantized in the same sweep.
//! - [`wanda`]: pruning by |w| × ‖x‖₂ within each output row, no update.
//! - [`sequential`]: the calibration set through a decoder layer by layer, each layer's
//!   projections observed on its original weights, compressed, and the compressed layer's
//!   outputs passed on.

pub mod gptq;
pub mod obs;
pub mod sequential;
pub mod sparsegpt;
pub(crate) mod synthetic;
pub mod wanda;

/// Which weights a pruning method may zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pattern {
    /// Any, this fraction of them (in [0, 1)).
    Unstructured(f64),
    /// `keep` of every `of` consecutive weights of a row stay (2:4 keeps 2 of 4).
    KeepNofM { keep: usize, of: usize },
}

impl Pattern {
    /// Why the pattern cannot apply to rows of `cols`, if it cannot.
    pub fn check(&self, cols: usize) -> Result<(), String> {
        match *self {
            Pattern::Unstructured(s) if !(0.0..1.0).contains(&s) => {
                Err(format!("sparsity {s} is outside [0, 1)"))
            }
            Pattern::KeepNofM { keep, of } if of == 0 || keep > of => {
                Err(format!("{keep}:{of} keeps more than it groups"))
            }
            Pattern::KeepNofM { of, .. } if !cols.is_multiple_of(of) => {
                Err(format!("groups of {of} do not divide rows of {cols}"))
            }
            _ => Ok(()),
        }
    }
}

/// Indices of the `k` smallest of `scores`, ties to the earlier index.
pub(crate) fn smallest(scores: &[f64], k: usize) -> Vec<usize> {
    let mut index: Vec<usize> = (0..scores.len()).collect();
    index.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    index.truncate(k);
    index
}
