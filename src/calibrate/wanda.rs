//! Wanda (Sun et al., 2023): a weight's importance is its magnitude times the norm of the
//! input it multiplies over the calibration set, |W_ij| · ‖X_j‖₂, and the least important are
//! zeroed *within each output row* (not across the tensor), with no update of the rest. It
//! needs only the inputs' norms, one pass and no matrix algebra.

use rayon::prelude::*;

use super::{Pattern, smallest};

/// `weights` (row-major, `cols` wide) with the least important zeroed under `pattern`, given
/// each input's norm over the calibration set.
pub fn prune(
    weights: &[f32],
    cols: usize,
    input_norms: &[f64],
    pattern: Pattern,
) -> Result<Vec<f32>, String> {
    pattern.check(cols)?;
    if input_norms.len() != cols {
        return Err(format!(
            "the layer has {cols} inputs but its calibration statistics have {}",
            input_norms.len()
        ));
    }
    let mut out = weights.to_vec();
    out.par_chunks_mut(cols.max(1)).for_each(|row| {
        let scores: Vec<f64> = row
            .iter()
            .zip(input_norms)
            .map(|(&w, &n)| f64::from(w.abs()) * n)
            .collect();
        match pattern {
            Pattern::Unstructured(sparsity) => {
                let k = (cols as f64 * sparsity) as usize;
                for j in smallest(&scores, k) {
                    row[j] = 0.0;
                }
            }
            Pattern::KeepNofM { keep, of } => {
                for (g, group) in scores.chunks(of).enumerate() {
                    for j in smallest(group, of - keep) {
                        row[g * of + j] = 0.0;
                    }
                }
            }
        }
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::obs::Hessian;
    use crate::calibrate::synthetic::{inputs, noise, output_error};

    fn magnitude(weights: &[f32], cols: usize, sparsity: f64) -> Vec<f32> {
        prune(
            weights,
            cols,
            &vec![1.0; cols],
            Pattern::Unstructured(sparsity),
        )
        .unwrap()
    }

    #[test]
    fn each_row_loses_its_share_and_groups_keep_n_of_m() {
        let (rows, cols) = (5, 64);
        let w = noise(4, rows * cols);
        let norms: Vec<f64> = (0..cols).map(|j| 1.0 + j as f64).collect();
        let half = prune(&w, cols, &norms, Pattern::Unstructured(0.5)).unwrap();
        for row in half.chunks(cols) {
            assert_eq!(row.iter().filter(|v| **v == 0.0).count(), 32);
        }
        let two_of_four = prune(&w, cols, &norms, Pattern::KeepNofM { keep: 2, of: 4 }).unwrap();
        for group in two_of_four.chunks(4) {
            assert_eq!(group.iter().filter(|v| **v != 0.0).count(), 2);
        }
        // Kept weights are unchanged.
        for (a, b) in two_of_four.iter().zip(&w) {
            assert!(*a == 0.0 || a == b);
        }
        assert!(prune(&w, cols, &norms, Pattern::KeepNofM { keep: 2, of: 5 }).is_err());
        assert!(prune(&w, cols, &norms[1..], Pattern::Unstructured(0.5)).is_err());
    }

    #[test]
    fn input_norms_keep_the_outputs_nearer_than_magnitude_alone() {
        let (rows, cols) = (16, 96);
        let w = noise(6, rows * cols);
        let hessian = Hessian::of(cols, &inputs(400, cols, 1));
        let held_out = inputs(400, cols, 2);
        let wanda = prune(&w, cols, &hessian.input_norms(), Pattern::Unstructured(0.5)).unwrap();
        let plain = magnitude(&w, cols, 0.5);
        let (a, b) = (
            output_error(&w, &wanda, &held_out, cols),
            output_error(&w, &plain, &held_out, cols),
        );
        assert!(a < 0.8 * b, "Wanda {a} against magnitude {b}");
    }
}
