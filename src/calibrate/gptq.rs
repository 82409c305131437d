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
//! Rows (output channels) never interact: each band of rows runs the whole column sweep on its
//! own thread against the shared factor U, the block updates being faer matrix products.

use faer::linalg::solvers::DenseSolveCore;
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};
use rayon::prelude::*;

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

/// The sum of outer products of a layer's inputs, from which GPTQ's Hessian is made.
#[derive(Debug, Clone)]
pub struct Hessian {
    /// Σ x xᵀ over the samples (only the lower triangle is read).
    sum: Mat<f32>,
    /// Input vectors added.
    samples: u64,
}

impl Hessian {
    /// An empty sum for inputs of `features` values.
    pub fn new(features: usize) -> Hessian {
        Hessian {
            sum: Mat::zeros(features, features),
            samples: 0,
        }
    }

    /// Inputs per row.
    pub fn features(&self) -> usize {
        self.sum.nrows()
    }

    /// Input vectors seen.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Adds `inputs`, row-major vectors of [`Hessian::features`] values each.
    pub fn add(&mut self, inputs: &[f32]) {
        let n = self.features();
        if n == 0 || inputs.is_empty() {
            return;
        }
        assert_eq!(inputs.len() % n, 0, "whole input vectors");
        let rows = inputs.len() / n;
        let x = MatRef::from_row_major_slice(inputs, rows, n);
        faer::linalg::matmul::matmul(
            self.sum.as_mut(),
            Accum::Add,
            x.transpose(),
            x,
            1.0,
            Par::rayon(0),
        );
        self.samples += rows as u64;
    }

    /// H = 2/N · Σ x xᵀ, as GPTQ and SparseGPT define it.
    fn matrix(&self) -> Mat<f64> {
        let scale = 2.0 / self.samples.max(1) as f64;
        let n = self.features();
        Mat::from_fn(n, n, |i, j| {
            let (i, j) = if i >= j { (i, j) } else { (j, i) };
            f64::from(self.sum[(i, j)]) * scale
        })
    }

    /// H's diagonal: each input's mean square, times 2.
    pub fn diagonal(&self) -> Vec<f64> {
        let scale = 2.0 / self.samples.max(1) as f64;
        (0..self.features())
            .map(|i| f64::from(self.sum[(i, i)]) * scale)
            .collect()
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

/// The inverse Hessian's upper Cholesky factor U (H⁻¹ = UᵀU), with H dampened and dead inputs
/// given a unit diagonal; `order` permutes H first (activation order). Returns U and the dead
/// inputs (in `order`'s positions).
pub fn inverse_factor(
    hessian: &Hessian,
    dampening: f64,
    order: &[usize],
) -> Result<(Mat<f64>, Vec<bool>), GptqError> {
    let full = hessian.matrix();
    let n = full.nrows();
    let mut h = Mat::from_fn(n, n, |i, j| full[(order[i], order[j])]);
    let dead: Vec<bool> = (0..n).map(|i| h[(i, i)] == 0.0).collect();
    for (i, &d) in dead.iter().enumerate() {
        if d {
            h[(i, i)] = 1.0;
        }
    }
    let mean_diagonal = (0..n).map(|i| h[(i, i)]).sum::<f64>() / n.max(1) as f64;
    let damp = dampening * mean_diagonal;
    for i in 0..n {
        h[(i, i)] += damp;
    }
    let not_definite = || GptqError::NotPositiveDefinite { dampening };
    let inverse = h.llt(Side::Lower).map_err(|_| not_definite())?.inverse();
    let lower = inverse.llt(Side::Lower).map_err(|_| not_definite())?;
    let l = lower.L();
    // U = Lᵀ: row i of U is column i of L.
    Ok((
        Mat::from_fn(n, n, |i, j| if j >= i { l[(j, i)] } else { 0.0 }),
        dead,
    ))
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
    if hessian.features() != cols {
        return Err(GptqError::Shape {
            cols,
            features: hessian.features(),
        });
    }
    let rows = weights.len().checked_div(cols).unwrap_or(0);
    let group = scheme.group_len(cols).max(1);
    if !cols.is_multiple_of(group) {
        return Err(GptqError::Group { group, cols });
    }
    let groups_per_row = cols / group;
    // Static groups: parameters observed on the original weights.
    let params: Vec<QParams> = match scheme.granularity {
        Granularity::Tensor => {
            let (lo, hi) = crate::compress::quantize::min_max(weights);
            vec![scheme.params(lo, hi)]
        }
        _ => weights
            .chunks(group)
            .map(|g| {
                let (lo, hi) = crate::compress::quantize::min_max(g);
                scheme.params(lo, hi)
            })
            .collect(),
    };
    let mut order: Vec<usize> = (0..cols).collect();
    if options.act_order {
        let diagonal = hessian.diagonal();
        // Stable: equal diagonals keep their input order.
        order.sort_by(|&a, &b| diagonal[b].total_cmp(&diagonal[a]));
    }
    let (u, dead) = inverse_factor(hessian, options.dampening, &order)?;
    cancel.check().map_err(|_| GptqError::Canceled)?;

    let mut codes = vec![0i8; weights.len()];
    let mut values = vec![0f32; weights.len()];
    let band = rows
        .div_ceil(rayon::current_num_threads().max(1) * 4)
        .clamp(1, 64);
    let losses: Vec<f64> = codes
        .par_chunks_mut(band * cols.max(1))
        .zip(values.par_chunks_mut(band * cols.max(1)))
        .enumerate()
        .map(|(b, (codes, values))| {
            if cancel.is_canceled() {
                return 0.0;
            }
            let first = b * band;
            let band_rows = codes.len() / cols;
            let band_params = |r: usize, col: usize| match scheme.granularity {
                Granularity::Tensor => params[0],
                _ => params[(first + r) * groups_per_row + col / group],
            };
            let input = &weights[first * cols..(first + band_rows) * cols];
            sweep(
                input,
                band_rows,
                cols,
                &order,
                &dead,
                u.as_ref(),
                options.block,
                scheme,
                &band_params,
                codes,
                values,
            )
        })
        .collect();
    cancel.check().map_err(|_| GptqError::Canceled)?;
    Ok(Quantized {
        codes,
        params,
        values,
        loss: losses.iter().sum(),
    })
}

/// The column sweep for one band of rows: `input` row-major `rows` × `cols`, columns taken in
/// `order`; writes codes and dequantized values in the original layout; returns the loss.
#[allow(clippy::too_many_arguments)]
fn sweep(
    input: &[f32],
    rows: usize,
    cols: usize,
    order: &[usize],
    dead: &[bool],
    u: MatRef<f64>,
    block: usize,
    scheme: IntScheme,
    params: &dyn Fn(usize, usize) -> QParams,
    codes: &mut [i8],
    values: &mut [f32],
) -> f64 {
    // Transposed and permuted: position i holds column order[i] of every row, contiguously.
    let mut w = vec![0f64; cols * rows];
    for (i, &col) in order.iter().enumerate() {
        if dead[i] {
            continue;
        }
        for r in 0..rows {
            w[i * rows + r] = f64::from(input[r * cols + col]);
        }
    }
    let block = block.max(1);
    let mut errors = vec![0f64; block * rows];
    let mut loss = 0f64;
    for start in (0..cols).step_by(block) {
        let end = (start + block).min(cols);
        for i in start..end {
            let d = u[(i, i)];
            let col = order[i];
            let (done, rest) = w.split_at_mut((i + 1) * rows);
            let column = &done[i * rows..];
            let err = &mut errors[(i - start) * rows..][..rows];
            for r in 0..rows {
                let p = params(r, col);
                let x = column[r];
                let q = scheme.quantize(x as f32, p);
                let y = IntScheme::dequantize(q, p);
                codes[r * cols + col] = q as i8;
                values[r * cols + col] = y;
                let e = (x - f64::from(y)) / d;
                err[r] = e;
                loss += e * e;
            }
            // The error spread over the block's later columns now, one row at a time.
            for j in i + 1..end {
                let factor = u[(i, j)];
                if factor == 0.0 {
                    continue;
                }
                let target = &mut rest[(j - i - 1) * rows..][..rows];
                for (t, e) in target.iter_mut().zip(err.iter()) {
                    *t -= e * factor;
                }
            }
        }
        // And over every column after the block at once: W[end..] −= U[start..end, end..]ᵀ · E.
        if end < cols {
            let count = end - start;
            let e = MatRef::from_row_major_slice(&errors[..count * rows], count, rows);
            let later = MatMut::from_row_major_slice_mut(&mut w[end * rows..], cols - end, rows);
            faer::linalg::matmul::matmul(
                later,
                Accum::Add,
                u.submatrix(start, end, count, cols - end).transpose(),
                e,
                -1.0,
                Par::Seq,
            );
        }
    }
    loss
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::quantize::ScaleDtype;

    fn scheme(bits: u8, symmetric: bool, granularity: Granularity) -> IntScheme {
        IntScheme {
            bits,
            symmetric,
            granularity,
            scale_dtype: ScaleDtype::F32,
        }
    }

    /// Deterministic values in [-1, 1).
    fn noise(seed: u64, n: usize) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Correlated inputs: `samples` × `features`, each a mix of a few shared factors plus noise,
    /// with channel scales that differ tenfold (as real activations' do). The mix is fixed, so
    /// every seed draws from one distribution.
    fn inputs(samples: usize, features: usize, seed: u64) -> Vec<f32> {
        let factors = 4;
        let mix = noise(1234, factors * features);
        let latent = noise(seed + 1, samples * factors);
        let extra = noise(seed + 2, samples * features);
        let mut x = vec![0f32; samples * features];
        for s in 0..samples {
            for f in 0..features {
                let mut v = 0.3 * extra[s * features + f];
                for k in 0..factors {
                    v += latent[s * factors + k] * mix[k * features + f];
                }
                let channel = 0.2 + 2.0 * (f % 7) as f32 / 7.0;
                x[s * features + f] = v * channel;
            }
        }
        x
    }

    fn output_error(w: &[f32], q: &[f32], x: &[f32], cols: usize) -> f64 {
        let rows = w.len() / cols;
        let samples = x.len() / cols;
        let mut total = 0f64;
        for s in 0..samples {
            for r in 0..rows {
                let mut e = 0f64;
                for c in 0..cols {
                    e += f64::from(w[r * cols + c] - q[r * cols + c]) * f64::from(x[s * cols + c]);
                }
                total += e * e;
            }
        }
        total
    }

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
        let mut hessian = Hessian::new(cols);
        hessian.add(&inputs(200, cols, 5));
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
        let mut hessian = Hessian::new(cols);
        hessian.add(&calibration);
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
        let mut hessian = Hessian::new(cols);
        hessian.add(&x);
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
