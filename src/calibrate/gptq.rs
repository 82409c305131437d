//! GPTQ (Frantar et al., 2022): a linear layer's weights quantized one input column at a time,
//! each column's rounding error spread over the columns not yet quantized in proportion to the
//! inverse Hessian of the layer's calibration inputs, so the layer's *outputs* on those inputs
//! move as little as the grid allows. The conventions are llm-compressor's (`gptq_quantize`):
//! H = 2/N · Σ x xᵀ; dampening a fraction of H's mean diagonal; columns never activated are
//! zeroed; the inverse's upper Cholesky factor U drives the updates; columns in blocks of 128,
//! the block's updates applied to later columns at once (one matrix product per block); scales
//! and zero-points observed on the original weights, group by group (static groups), so the
//! result stores as plain integer codes with no `g_idx`, with or without activation order.
//!
//! The sweep itself is [`super::obs`], shared with SparseGPT; this module gives it the rounding.

use faer::MatRef;

use super::obs::{self, At, Band, Hessian, Rule};
use crate::compress::quantize::{Granularity, IntScheme, QParams};
use crate::numeric::Cancel;

/// How GPTQ runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GptqOptions {
    /// Fraction of H's mean diagonal added to its diagonal (0.01 in the paper and in
    /// llm-compressor): keeps the Cholesky factorisation defined when inputs are correlated.
    pub dampening: f64,
    /// Columns per lazy-update block.
    pub block: usize,
    /// Quantize columns in order of decreasing H diagonal (the inputs with the most energy
    /// first, whose errors the rest can then absorb), groups staying where they were.
    pub act_order: bool,
}

impl Default for GptqOptions {
    fn default() -> Self {
        GptqOptions {
            dampening: 0.01,
            block: 128,
            act_order: false,
        }
    }
}

/// Why GPTQ could not run on a layer.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GptqError {
    #[error("the layer has {cols} inputs but its calibration statistics have {features}")]
    Shape { cols: usize, features: usize },
    #[error(
        "the dampened Hessian is not positive definite (inputs too few or too correlated); raise the dampening above {dampening}"
    )]
    NotPositiveDefinite { dampening: f64 },
    #[error("the group of {group} values does not divide rows of {cols}")]
    Group { group: usize, cols: usize },
    #[error("{0}")]
    Pattern(String),
    #[error("canceled")]
    Canceled,
}

/// A layer quantized by GPTQ: codes and parameters in the layout [`IntScheme`]'s round-to-
/// nearest gives (row-major, one parameter set per group of each row, or one for the tensor),
/// and what they decode to.
#[derive(Debug, Clone)]
pub struct Quantized {
    /// One code per weight, row-major.
    pub codes: Vec<i8>,
    /// Per row, its groups in order (a single one for per-tensor granularity).
    pub params: Vec<QParams>,
    /// The dequantized weights, row-major.
    pub values: Vec<f32>,
    /// GPTQ's own loss: Σ over weights of (w − q)² / U[i,i]², the quantity each step minimises.
    pub loss: f64,
}

/// Quantizes `weights` (row-major, `rows` × `cols`) with `scheme` by GPTQ against `hessian`.
/// Per-tensor parameters come from the whole tensor's range; others from each group's.
pub fn quantize(
    weights: &[f32],
    cols: usize,
    hessian: &Hessian,
    scheme: IntScheme,
    options: GptqOptions,
    cancel: &Cancel,
) -> Result<Quantized, GptqError> {
    check_features(hessian, cols)?;
    let params = static_params(weights, cols, scheme)?;
    let mut order: Vec<usize> = (0..cols).collect();
    if options.act_order {
        let diagonal = hessian.diagonal();
        // Stable: equal diagonals keep their input order.
        order.sort_by(|&a, &b| diagonal[b].total_cmp(&diagonal[a]));
    }
    let rule = Rounding::new(scheme, &params, cols);
    let swept = sweep_layer(
        weights,
        hessian,
        options.dampening,
        &order,
        options.block,
        &rule,
        cancel,
    )?;
    Ok(rule.codes(&swept.values, swept.loss))
}

/// Refuses statistics of another width than the layer's rows.
pub(super) fn check_features(hessian: &Hessian, cols: usize) -> Result<(), GptqError> {
    if hessian.features() == cols {
        Ok(())
    } else {
        Err(GptqError::Shape {
            cols,
            features: hessian.features(),
        })
    }
}

/// The inverse factor of `hessian` in `order` (its failure said as the dampening to raise),
/// then the sweep of `weights` (rows as wide as the Hessian) under `rule`.
pub(super) fn sweep_layer(
    weights: &[f32],
    hessian: &Hessian,
    dampening: f64,
    order: &[usize],
    block: usize,
    rule: &dyn Rule,
    cancel: &Cancel,
) -> Result<obs::Swept, GptqError> {
    let (u, dead) = obs::inverse_factor(hessian, dampening, order)
        .map_err(|_| GptqError::NotPositiveDefinite { dampening })?;
    let cols = hessian.features();
    obs::sweep(weights, cols, order, &dead, u.as_ref(), block, rule, cancel)
        .map_err(|_| GptqError::Canceled)
}

/// Static groups: `scheme`'s parameters observed on the original weights, per group of each
/// row in order (one for per-tensor granularity).
pub(super) fn static_params(
    weights: &[f32],
    cols: usize,
    scheme: IntScheme,
) -> Result<Vec<QParams>, GptqError> {
    let group = scheme.group_len(cols).max(1);
    if !cols.is_multiple_of(group) {
        return Err(GptqError::Group { group, cols });
    }
    let observe = |values: &[f32]| {
        let (lo, hi) = crate::compress::quantize::min_max(values);
        scheme.params(lo, hi)
    };
    Ok(match scheme.granularity {
        Granularity::Tensor => vec![observe(weights)],
        _ => weights.chunks(group).map(observe).collect(),
    })
}

/// Rounds each column to the grid of its static group.
pub(super) struct Rounding<'a> {
    scheme: IntScheme,
    params: &'a [QParams],
    group: usize,
    groups_per_row: usize,
}

impl<'a> Rounding<'a> {
    /// `params` from [`static_params`] for rows of `cols`.
    pub(super) fn new(scheme: IntScheme, params: &'a [QParams], cols: usize) -> Rounding<'a> {
        let group = scheme.group_len(cols).max(1);
        Rounding {
            scheme,
            params,
            group,
            groups_per_row: cols / group,
        }
    }

    /// The codes of swept `values`: they lie on their groups' grids, so rounding them again
    /// gives back their codes.
    pub(super) fn codes(&self, values: &[f32], loss: f64) -> Quantized {
        let cols = self.group * self.groups_per_row;
        let codes = values
            .chunks(cols.max(1))
            .enumerate()
            .flat_map(|(row, values)| {
                values
                    .iter()
                    .enumerate()
                    .map(move |(col, &v)| self.scheme.quantize(v, self.params(row, col)) as i8)
            })
            .collect();
        Quantized {
            codes,
            params: self.params.to_vec(),
            values: values.to_vec(),
            loss,
        }
    }

    fn params(&self, row: usize, col: usize) -> QParams {
        match self.scheme.granularity {
            Granularity::Tensor => self.params[0],
            _ => self.params[row * self.groups_per_row + col / self.group],
        }
    }
}

impl Rule for Rounding<'_> {
    fn replace(&self, band: &mut Band, _: MatRef<f64>, at: At, v: &mut [f64]) {
        for (r, x) in v.iter_mut().enumerate() {
            let p = self.params(band.first_row + r, at.col);
            *x = f64::from(IntScheme::dequantize(self.scheme.quantize(*x as f32, p), p));
        }
    }
}

#[cfg(test)]
mod tests {
    use faer::Side;
    use faer::linalg::solvers::DenseSolveCore;

    use super::*;
    use crate::calibrate::synthetic::{inputs, noise, output_error};
    use crate::compress::quantize::scheme;

    /// The textbook algorithm in f64, one column at a time with the inverse Hessian updated by
    /// eliminating each quantized column (no Cholesky factor, no blocks): what the blocked,
    /// factored sweep must equal.
    fn reference(
        w: &[f32],
        cols: usize,
        hessian: &Hessian,
        scheme: IntScheme,
        params: &[QParams],
        dampening: f64,
    ) -> Vec<i32> {
        let rows = w.len() / cols;
        let mut h = hessian.matrix();
        let mean = (0..cols).map(|i| h[(i, i)]).sum::<f64>() / cols as f64;
        for i in 0..cols {
            h[(i, i)] += dampening * mean;
        }
        let mut hinv = h.llt(Side::Lower).unwrap().inverse();
        let mut w: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
        let group = scheme.group_len(cols);
        let mut codes = vec![0; w.len()];
        for i in 0..cols {
            let d = hinv[(i, i)];
            for r in 0..rows {
                let p = params[r * (cols / group) + i / group];
                let q = scheme.quantize(w[r * cols + i] as f32, p);
                codes[r * cols + i] = q;
                let e = (w[r * cols + i] - f64::from(IntScheme::dequantize(q, p))) / d;
                for j in i + 1..cols {
                    w[r * cols + j] -= e * hinv[(i, j)];
                }
            }
            let pivot_row: Vec<f64> = (0..cols).map(|j| hinv[(i, j)]).collect();
            let pivot_column: Vec<f64> = (0..cols).map(|a| hinv[(a, i)]).collect();
            for a in 0..cols {
                for b in 0..cols {
                    hinv[(a, b)] -= pivot_column[a] * pivot_row[b] / d;
                }
            }
        }
        codes
    }

    #[test]
    fn the_blocked_factored_sweep_equals_the_one_column_elimination_in_f64() {
        let (rows, cols) = (6, 48);
        let w = noise(11, rows * cols);
        let hessian = Hessian::of(cols, &inputs(200, cols, 5));
        for (granularity, bits, symmetric) in [
            (Granularity::Group(16), 4, true),
            (Granularity::Channel, 3, false),
            (Granularity::Group(8), 2, false),
        ] {
            let s = scheme(bits, symmetric, granularity);
            // Blocks of 5 do not align with the groups, so the lazy updates cross them.
            let options = GptqOptions {
                dampening: 0.01,
                block: 5,
                act_order: false,
            };
            let got = quantize(&w, cols, &hessian, s, options, &Cancel::new()).unwrap();
            let want = reference(&w, cols, &hessian, s, &got.params, 0.01);
            let got_codes: Vec<i32> = got.codes.iter().map(|&c| i32::from(c)).collect();
            assert_eq!(got_codes, want, "{granularity:?} {bits} bits");
        }
    }

    #[test]
    fn gptq_moves_the_layer_outputs_less_than_rounding_to_nearest() {
        let (rows, cols) = (32, 128);
        let w = noise(3, rows * cols);
        let calibration = inputs(512, cols, 7);
        let held_out = inputs(512, cols, 8);
        let hessian = Hessian::of(cols, &calibration);
        for act_order in [false, true] {
            let s = scheme(4, true, Granularity::Group(32));
            let options = GptqOptions {
                act_order,
                ..GptqOptions::default()
            };
            let gptq = quantize(&w, cols, &hessian, s, options, &Cancel::new()).unwrap();
            let mut rtn = w.clone();
            let rtn_params = s.fake_quantize_rows(&mut rtn, cols, None);
            // Same static groups: the parameters are round-to-nearest's.
            assert_eq!(gptq.params, rtn_params);
            for (v, (&c, i)) in gptq.values.iter().zip(gptq.codes.iter().zip(0..)) {
                let p = gptq.params[i / 32];
                assert_eq!(*v, IntScheme::dequantize(i32::from(c), p));
            }
            let (g, r) = (
                output_error(&w, &gptq.values, &held_out, cols),
                output_error(&w, &rtn, &held_out, cols),
            );
            assert!(
                g < 0.7 * r,
                "act_order {act_order}: GPTQ {g} against RTN {r}"
            );
        }
    }

    #[test]
    fn dead_inputs_are_zeroed_and_mismatched_shapes_refused() {
        let (rows, cols) = (4, 16);
        let w = noise(9, rows * cols);
        let mut x = inputs(64, cols, 2);
        for s in 0..64 {
            x[s * cols + 3] = 0.0;
        }
        let hessian = Hessian::of(cols, &x);
        let s = scheme(8, true, Granularity::Channel);
        let q = quantize(
            &w,
            cols,
            &hessian,
            s,
            GptqOptions::default(),
            &Cancel::new(),
        )
        .unwrap();
        for r in 0..rows {
            assert_eq!(q.values[r * cols + 3], 0.0);
        }
        assert_eq!(
            quantize(&w, 8, &hessian, s, GptqOptions::default(), &Cancel::new()).unwrap_err(),
            GptqError::Shape {
                cols: 8,
                features: 16
            }
        );
        let canceled = Cancel::new();
        canceled.cancel();
        assert_eq!(
            quantize(&w, cols, &hessian, s, GptqOptions::default(), &canceled).unwrap_err(),
            GptqError::Canceled
        );
    }
}
