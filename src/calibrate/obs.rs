//! The column sweep GPTQ and SparseGPT share (Optimal Brain Surgeon, one input column at a
//! time): each column's weights are replaced (rounded to a grid, or zeroed where a mask says),
//! and the change, divided by the inverse Hessian factor's diagonal, is subtracted from the
//! columns after it in proportion to the factor's row, so the layer's outputs on the
//! calibration inputs move as little as possible. Within a block of columns the updates are
//! applied column by column; to the columns after the block, all at once as one faer product
//! (GPTQ's lazy batch updates).
//!
//! Rows (output channels) never interact, so they are cut into bands, each swept on its own
//! thread against the shared factor; a hook before each block sees every band's current
//! values (SparseGPT chooses its unstructured mask over the whole block).

use faer::linalg::solvers::DenseSolveCore;
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};
use rayon::prelude::*;

use crate::numeric::{Cancel, Canceled};

/// The sum of outer products of a layer's inputs, from which the Hessian is made.
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

    /// The sum over `inputs`, row-major vectors of `features` values each.
    pub fn of(features: usize, inputs: &[f32]) -> Hessian {
        let mut hessian = Hessian::new(features);
        hessian.add(inputs);
        hessian
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
    pub(crate) fn matrix(&self) -> Mat<f64> {
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

    /// Each input's Euclidean norm over the samples (Wanda's ‖x_j‖₂).
    pub fn input_norms(&self) -> Vec<f64> {
        (0..self.features())
            .map(|i| f64::from(self.sum[(i, i)]).max(0.0).sqrt())
            .collect()
    }
}

/// The dampened Hessian was not positive definite.
#[derive(Debug, PartialEq)]
pub(crate) struct NotPositiveDefinite;

/// The inverse Hessian's upper Cholesky factor U (H⁻¹ = UᵀU), with H permuted by `order`,
/// dead inputs given a unit diagonal, and `dampening` × its mean diagonal added. Returns U and
/// the dead inputs (in `order`'s positions).
pub(crate) fn inverse_factor(
    hessian: &Hessian,
    dampening: f64,
    order: &[usize],
) -> Result<(Mat<f64>, Vec<bool>), NotPositiveDefinite> {
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
    let inverse = h
        .llt(Side::Lower)
        .map_err(|_| NotPositiveDefinite)?
        .inverse();
    let lower = inverse.llt(Side::Lower).map_err(|_| NotPositiveDefinite)?;
    let l = lower.L();
    // U = Lᵀ: row i of U is column i of L.
    Ok((
        Mat::from_fn(n, n, |i, j| if j >= i { l[(j, i)] } else { 0.0 }),
        dead,
    ))
}

/// One band of rows being swept.
pub(crate) struct Band {
    /// The band's first row in the layer.
    pub(crate) first_row: usize,
    /// Rows in the band.
    pub(crate) rows: usize,
    /// Position i holds column `order[i]` of every row of the band, contiguously.
    values: Vec<f64>,
    /// The current block's scaled changes, position-major like `values`.
    errors: Vec<f64>,
    /// The current block's mask (true: zero it), position-major from the block's start; for
    /// the hooks to set and read.
    pub(crate) mask: Vec<bool>,
    /// The replaced values in the layer's own layout (rows × cols).
    out: Vec<f32>,
    loss: f64,
}

impl Band {
    /// The current values at position `i` (updated by every column before it).
    pub(crate) fn column(&self, i: usize) -> &[f64] {
        &self.values[i * self.rows..][..self.rows]
    }
}

/// What the sweep gives: the replaced weights, row-major, and Σ (w − w')² / U[i,i]².
pub(crate) struct Swept {
    pub(crate) values: Vec<f32>,
    pub(crate) loss: f64,
}

/// The hooks a method gives the sweep.
pub(crate) trait Rule: Sync {
    /// Before the block of positions `start..end`, with every band's current values (each
    /// band's `mask` cleared to the block's length).
    fn begin_block(&self, _bands: &mut [Band], _u: MatRef<f64>, _start: usize, _end: usize) {}

    /// Position `at` of `band`: `replaced` holds the current values, to be overwritten with
    /// what they become.
    fn replace(&self, band: &mut Band, u: MatRef<f64>, at: At, replaced: &mut [f64]);
}

/// Where the sweep is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct At {
    /// The position (in the sweep's order).
    pub(crate) i: usize,
    /// The layer column at that position.
    pub(crate) col: usize,
    /// The current block's first position.
    pub(crate) block_start: usize,
}

/// Sweeps `weights` (row-major, `cols` wide) in `order` against the factor `u` (from
/// [`inverse_factor`] with the same order), dead positions zeroed first.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sweep(
    weights: &[f32],
    cols: usize,
    order: &[usize],
    dead: &[bool],
    u: MatRef<f64>,
    block: usize,
    rule: &dyn Rule,
    cancel: &Cancel,
) -> Result<Swept, Canceled> {
    let rows = weights.len().checked_div(cols).unwrap_or(0);
    let band_rows = rows
        .div_ceil(rayon::current_num_threads().max(1) * 4)
        .clamp(1, 64);
    let mut bands: Vec<Band> = (0..rows)
        .step_by(band_rows)
        .map(|first_row| {
            let n = band_rows.min(rows - first_row);
            let mut values = vec![0f64; cols * n];
            for (i, &col) in order.iter().enumerate() {
                if dead[i] {
                    continue;
                }
                for r in 0..n {
                    values[i * n + r] = f64::from(weights[(first_row + r) * cols + col]);
                }
            }
            Band {
                first_row,
                rows: n,
                values,
                errors: Vec::new(),
                mask: Vec::new(),
                out: vec![0f32; n * cols],
                loss: 0.0,
            }
        })
        .collect();
    let block = block.max(1);
    for start in (0..cols).step_by(block) {
        cancel.check()?;
        let end = (start + block).min(cols);
        for band in &mut bands {
            band.mask.clear();
            band.mask.resize((end - start) * band.rows, false);
        }
        rule.begin_block(&mut bands, u, start, end);
        bands
            .par_iter_mut()
            .for_each(|band| sweep_block(band, cols, order, u, start, end, rule));
    }
    let mut values = Vec::with_capacity(weights.len());
    let mut loss = 0.0;
    for band in bands {
        values.extend_from_slice(&band.out);
        loss += band.loss;
    }
    Ok(Swept { values, loss })
}

/// Positions `start..end` of one band, then their changes carried to every later position.
fn sweep_block(
    band: &mut Band,
    cols: usize,
    order: &[usize],
    u: MatRef<f64>,
    start: usize,
    end: usize,
    rule: &dyn Rule,
) {
    let rows = band.rows;
    band.errors.clear();
    band.errors.resize((end - start) * rows, 0.0);
    let mut replaced = vec![0f64; rows];
    for i in start..end {
        let d = u[(i, i)];
        let col = order[i];
        replaced.copy_from_slice(band.column(i));
        let at = At {
            i,
            col,
            block_start: start,
        };
        rule.replace(band, u, at, &mut replaced);
        let (done, rest) = band.values.split_at_mut((i + 1) * rows);
        let column = &done[i * rows..];
        let err = &mut band.errors[(i - start) * rows..][..rows];
        for r in 0..rows {
            band.out[r * cols + col] = replaced[r] as f32;
            let e = (column[r] - replaced[r]) / d;
            err[r] = e;
            band.loss += e * e;
        }
        // The change spread over the block's later positions now, one row at a time.
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
    // And over every position after the block at once: W[end..] −= U[start..end, end..]ᵀ · E.
    if end < cols {
        let count = end - start;
        let e = MatRef::from_row_major_slice(&band.errors[..count * rows], count, rows);
        let later =
            MatMut::from_row_major_slice_mut(&mut band.values[end * rows..], cols - end, rows);
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
