//! SparseGPT (Frantar & Alistarh, 2023): pruning by the Optimal Brain Surgeon sweep GPTQ uses
//! ([`super::obs`]), each zeroed weight's loss w² / U[i,i]² deciding which go and its removal
//! compensated by the columns after it. As in llm-compressor's `sparsegpt_sparsify`: the
//! unstructured mask is chosen per block of columns over all rows at once (the block's
//! smallest losses, the value at the target fraction included), an N:M mask per row at the
//! first column of each group of M, from the values as updated so far; then, optionally,
//! the kept weights are rounded to an integer grid in the same sweep (static groups, as
//! GPTQ).

use faer::MatRef;
use rayon::prelude::*;

use super::Pattern;
use super::gptq::{self, GptqError, Rounding};
use super::obs::{At, Band, Hessian, Rule};
use crate::compress::quantize::IntScheme;
use crate::numeric::Cancel;

/// How SparseGPT runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SparseGptOptions {
    /// Fraction of H's mean diagonal added to its diagonal (0.01 by default).
    pub dampening: f64,
    /// Columns per block (128 by default).
    pub block: usize,
}

impl Default for SparseGptOptions {
    fn default() -> Self {
        SparseGptOptions {
            dampening: 0.01,
            block: 128,
        }
    }
}

/// A pruned (and perhaps quantized) layer.
#[derive(Debug, Clone)]
pub struct Pruned {
    /// The weights, row-major, zeros where pruned.
    pub values: Vec<f32>,
    /// With quantization: the codes and parameters, as [`gptq::Quantized`] holds them.
    pub quantized: Option<gptq::Quantized>,
    /// The sweep's loss.
    pub loss: f64,
}

struct Pruning<'a> {
    pattern: Pattern,
    then: Option<Rounding<'a>>,
}

/// A weight's loss if zeroed at position `i`: w² / U[i,i]².
fn loss(w: f64, u: MatRef<f64>, i: usize) -> f64 {
    let d = u[(i, i)];
    w * w / (d * d)
}

impl Rule for Pruning<'_> {
    fn begin_block(&self, bands: &mut [Band], u: MatRef<f64>, start: usize, end: usize) {
        let Pattern::Unstructured(sparsity) = self.pattern else {
            return;
        };
        let scores: Vec<Vec<f64>> = bands
            .par_iter()
            .map(|band| {
                (start..end)
                    .flat_map(|i| band.column(i).iter().map(move |&w| loss(w, u, i)))
                    .collect()
            })
            .collect();
        let mut all: Vec<f64> = scores.concat();
        if all.is_empty() {
            return;
        }
        let at = ((all.len() as f64 * sparsity) as usize).min(all.len() - 1);
        let (_, threshold, _) = all.select_nth_unstable_by(at, f64::total_cmp);
        let threshold = *threshold;
        for (band, scores) in bands.iter_mut().zip(scores) {
            for (m, s) in band.mask.iter_mut().zip(scores) {
                *m = s <= threshold;
            }
        }
    }

    fn replace(&self, band: &mut Band, u: MatRef<f64>, at: At, replaced: &mut [f64]) {
        let rows = band.rows;
        let offset = at.i - at.block_start;
        // Groups lie whole in a block: rows and blocks are multiples of the group length.
        if let Pattern::KeepNofM { keep, of } = self.pattern
            && offset.is_multiple_of(of)
        {
            for r in 0..rows {
                let scores: Vec<f64> = (0..of)
                    .map(|k| loss(band.column(at.i + k)[r], u, at.i + k))
                    .collect();
                for k in super::smallest(&scores, of - keep) {
                    band.mask[(offset + k) * rows + r] = true;
                }
            }
        }
        let mask = &band.mask[offset * rows..][..rows];
        for (v, &zero) in replaced.iter_mut().zip(mask) {
            if zero {
                *v = 0.0;
            }
        }
        if let Some(rounding) = &self.then {
            rounding.replace(band, u, at, replaced);
        }
    }
}

/// Prunes `weights` (row-major, `cols` wide) under `pattern` by SparseGPT against `hessian`,
/// then rounds the kept weights with `quantize` if given.
pub fn prune(
    weights: &[f32],
    cols: usize,
    hessian: &Hessian,
    pattern: Pattern,
    quantize: Option<IntScheme>,
    options: SparseGptOptions,
    cancel: &Cancel,
) -> Result<Pruned, GptqError> {
    gptq::check_features(hessian, cols)?;
    pattern.check(cols).map_err(GptqError::Pattern)?;
    // N:M groups never straddle two blocks.
    let block = match pattern {
        Pattern::KeepNofM { of, .. } => options.block.max(of).next_multiple_of(of),
        Pattern::Unstructured(_) => options.block,
    };
    let params = match quantize {
        Some(scheme) => Some(gptq::static_params(weights, cols, scheme)?),
        None => None,
    };
    let rule = Pruning {
        pattern,
        then: quantize
            .zip(params.as_deref())
            .map(|(scheme, params)| Rounding::new(scheme, params, cols)),
    };
    let order: Vec<usize> = (0..cols).collect();
    let swept = gptq::sweep_layer(
        weights,
        hessian,
        options.dampening,
        &order,
        block,
        &rule,
        cancel,
    )?;
    let quantized = rule
        .then
        .as_ref()
        .map(|rounding| rounding.codes(&swept.values, swept.loss));
    Ok(Pruned {
        values: swept.values,
        quantized,
        loss: swept.loss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::synthetic::{inputs, noise, output_error};
    use crate::calibrate::wanda;
    use crate::compress::quantize::{Granularity, scheme};

    #[test]
    fn sparsegpt_prunes_to_the_pattern_and_moves_the_outputs_less_than_wanda() {
        let (rows, cols) = (16, 128);
        let w = noise(21, rows * cols);
        let hessian = Hessian::of(cols, &inputs(512, cols, 3));
        let held_out = inputs(512, cols, 4);
        for pattern in [
            Pattern::Unstructured(0.5),
            Pattern::KeepNofM { keep: 2, of: 4 },
        ] {
            let options = SparseGptOptions {
                dampening: 0.01,
                block: 32,
            };
            let pruned = prune(&w, cols, &hessian, pattern, None, options, &Cancel::new()).unwrap();
            let zeros = pruned.values.iter().filter(|v| **v == 0.0).count();
            match pattern {
                // The value at the target fraction is pruned too: one more per block at most.
                Pattern::Unstructured(_) => {
                    assert!((rows * cols / 2..=rows * cols / 2 + cols / 32).contains(&zeros))
                }
                Pattern::KeepNofM { .. } => {
                    for group in pruned.values.chunks(4) {
                        assert_eq!(
                            group.iter().filter(|v| **v != 0.0).count(),
                            2,
                            "{pattern:?}"
                        );
                    }
                }
            }
            let by_wanda = wanda::prune(&w, cols, &hessian.input_norms(), pattern).unwrap();
            let (s, a) = (
                output_error(&w, &pruned.values, &held_out, cols),
                output_error(&w, &by_wanda, &held_out, cols),
            );
            assert!(s < 0.5 * a, "{pattern:?}: SparseGPT {s} against Wanda {a}");
        }
    }

    #[test]
    fn quantized_in_the_same_sweep_the_kept_weights_lie_on_the_grid() {
        let (rows, cols) = (8, 64);
        let w = noise(5, rows * cols);
        let hessian = Hessian::of(cols, &inputs(256, cols, 6));
        let scheme = scheme(4, true, Granularity::Group(32));
        let pruned = prune(
            &w,
            cols,
            &hessian,
            Pattern::KeepNofM { keep: 2, of: 4 },
            Some(scheme),
            SparseGptOptions::default(),
            &Cancel::new(),
        )
        .unwrap();
        let q = pruned.quantized.expect("codes");
        for (i, (&v, &c)) in pruned.values.iter().zip(&q.codes).enumerate() {
            let p = q.params[i / 32];
            assert_eq!(v, IntScheme::dequantize(i32::from(c), p));
        }
        assert!(pruned.values.iter().filter(|v| **v == 0.0).count() >= rows * cols / 2);
    }
}
