//! Structured shrinking of a gated MLP (Llama, Mistral, Qwen): the intermediate channels with
//! the least weight are removed from `gate_proj` and `up_proj` (rows) and `down_proj` (columns)
//! together, so the layer computes exactly what it computed with those channels zeroed, with
//! smaller matrices. Pure functions over per-line statistics and raw tensor bytes.

use crate::compress::prune::{Norm, prune_count};

/// Statistics of one row or column of a matrix.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LineStats {
    /// Σ|x|.
    pub l1: f64,
    /// Σx².
    pub sq: f64,
    /// max |x|.
    pub max_abs: f32,
}

impl LineStats {
    /// Adds one value.
    #[inline]
    pub fn add(&mut self, x: f32) {
        self.l1 += f64::from(x.abs());
        self.sq += f64::from(x) * f64::from(x);
        self.max_abs = self.max_abs.max(x.abs());
    }

    /// Combines two partial statistics of the same line.
    pub fn merge(&mut self, other: &LineStats) {
        self.l1 += other.l1;
        self.sq += other.sq;
        self.max_abs = self.max_abs.max(other.max_abs);
    }

    /// The line's norm.
    pub fn norm(&self, norm: Norm) -> f64 {
        match norm {
            Norm::L1 => self.l1,
            Norm::L2 => self.sq.sqrt(),
        }
    }
}

/// The intermediate channels a layer keeps, ascending: all but the ⌊n·sparsity⌋ whose summed
/// norms over the gate row, the up row and the down column are smallest (ties: lower index
/// removed first).
pub fn kept_channels(
    gate_rows: &[LineStats],
    up_rows: &[LineStats],
    down_columns: &[LineStats],
    sparsity: f64,
    norm: Norm,
) -> Vec<usize> {
    let scores: Vec<f64> = gate_rows
        .iter()
        .zip(up_rows)
        .zip(down_columns)
        .map(|((g, u), d)| g.norm(norm) + u.norm(norm) + d.norm(norm))
        .collect();
    let remove = crate::compress::prune::weakest(
        &scores,
        prune_count(scores.len() as u64, sparsity) as usize,
    );
    (0..scores.len()).filter(|&i| !remove[i]).collect()
}

/// Energy and largest magnitude of the lines not kept, so error metrics can count them.
pub fn removed(lines: &[LineStats], kept: &[usize]) -> LineStats {
    let mut is_kept = vec![false; lines.len()];
    for &k in kept {
        is_kept[k] = true;
    }
    let mut total = LineStats::default();
    for (line, _) in lines.iter().zip(&is_kept).filter(|(_, k)| !**k) {
        total.merge(line);
    }
    total
}

/// The kept rows of a row-major matrix of rows `row_bytes` long.
pub fn gather_rows(bytes: &[u8], row_bytes: usize, kept: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(kept.len() * row_bytes);
    for &r in kept {
        out.extend_from_slice(&bytes[r * row_bytes..(r + 1) * row_bytes]);
    }
    out
}

/// The kept columns of a row-major matrix of `cols` elements of `width` bytes.
pub fn gather_columns(bytes: &[u8], width: usize, cols: usize, kept: &[usize]) -> Vec<u8> {
    let rows = bytes.len() / (width * cols);
    let mut out = Vec::with_capacity(rows * kept.len() * width);
    for row in bytes.chunks_exact(width * cols) {
        for &c in kept {
            out.extend_from_slice(&row[c * width..(c + 1) * width]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weakest_channels_go_across_all_three_matrices() {
        let line = |v: f64| LineStats {
            l1: v,
            sq: v * v,
            max_abs: v as f32,
        };
        let gate = [line(1.0), line(0.1), line(5.0), line(0.2)];
        let up = [line(1.0), line(0.1), line(0.1), line(0.2)];
        let down = [line(1.0), line(0.1), line(0.1), line(9.0)];
        assert_eq!(kept_channels(&gate, &up, &down, 0.5, Norm::L1), [2, 3]);
        assert_eq!(
            kept_channels(&gate, &up, &down, 0.0, Norm::L2),
            [0, 1, 2, 3]
        );
        let r = removed(&gate, &[2, 3]);
        assert_eq!((r.l1, r.sq, r.max_abs), (1.1, 1.01, 1.0));
    }

    #[test]
    fn gathering_keeps_rows_and_columns_in_order() {
        let m: Vec<u8> = (0..12).collect(); // 3 × 4 of one-byte elements
        assert_eq!(gather_rows(&m, 4, &[0, 2]), [0, 1, 2, 3, 8, 9, 10, 11]);
        assert_eq!(gather_columns(&m, 1, 4, &[1, 3]), [1, 3, 5, 7, 9, 11]);
        let wide: Vec<u8> = (0..8).collect(); // 2 × 2 of two-byte elements
        assert_eq!(gather_columns(&wide, 2, 2, &[1]), [2, 3, 6, 7]);
    }
}
