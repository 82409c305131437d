//! Low-rank factorization: W (m × n) ≈ A · B with A = U_r·Σ_r (m × r) and B = V_rᵀ (r × n), the
//! truncated SVD, which minimises ‖W − A·B‖_F for the rank (Eckart–Young), so the error energy
//! is exactly the discarded singular values' Σσ². The rank is fixed or the smallest that keeps a
//! fraction of the spectral energy; a rank whose factors would not be smaller than W is refused.
//!
//! Small matrices (min(m, n) ≤ [`EXACT_LIMIT`]) get an exact thin SVD in f64. Large ones get a
//! randomized SVD (Halko, Martinsson & Tropp 2011): Y = W·Ω for a Gaussian Ω of r + 10 columns,
//! two power iterations re-orthonormalised by QR, Q = qr(Y), then the exact SVD of the small
//! QᵀW. Dense algebra is faer's.

use faer::Mat;

use crate::numeric::SplitMix;

/// Matrices with at most this many rows or columns are factorized exactly.
pub const EXACT_LIMIT: usize = 512;

/// Extra random directions beyond the rank, and power iterations, of the randomized SVD.
const OVERSAMPLE: usize = 10;
const POWER_ITERATIONS: usize = 2;

/// How the rank is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rank {
    /// This rank.
    Fixed(usize),
    /// The smallest rank whose singular values keep this fraction of Σσ² (in (0, 1]).
    Energy(f64),
}

/// Why a matrix was not factorized.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LowRankError {
    #[error(
        "rank {rank} would store {factors} values for a {rows} × {cols} matrix of {dense}: not smaller"
    )]
    Grows {
        rank: usize,
        rows: usize,
        cols: usize,
        factors: usize,
        dense: usize,
    },
    #[error("the SVD did not converge")]
    NoConvergence,
}

/// The factors and what they keep.
#[derive(Debug, Clone)]
pub struct Factors {
    /// m × r, row-major.
    pub a: Vec<f32>,
    /// r × n, row-major.
    pub b: Vec<f32>,
    /// r.
    pub rank: usize,
    /// Rows m and columns n of W.
    pub rows: usize,
    pub cols: usize,
    /// The singular values computed (at least the kept ones), descending.
    pub singular_values: Vec<f64>,
    /// ‖W‖_F².
    pub energy: f64,
}

impl Factors {
    /// r·(m + n) / (m·n): the parameters kept.
    pub fn parameter_fraction(&self) -> f64 {
        (self.rank * (self.rows + self.cols)) as f64 / (self.rows * self.cols) as f64
    }

    /// Σσ² of the kept values over ‖W‖_F².
    pub fn energy_kept(&self) -> f64 {
        let kept: f64 = self.singular_values[..self.rank]
            .iter()
            .map(|s| s * s)
            .sum();
        if self.energy > 0.0 {
            (kept / self.energy).min(1.0)
        } else {
            1.0
        }
    }

    /// Rows `rows` of A·B, row-major, into `out`.
    pub fn reconstruct_rows(&self, rows: std::ops::Range<usize>, out: &mut [f32]) {
        let (r, n) = (self.rank, self.cols);
        for (i, out_row) in rows.zip(out.chunks_mut(n)) {
            out_row.fill(0.0);
            let a_row = &self.a[i * r..(i + 1) * r];
            for (k, &a) in a_row.iter().enumerate() {
                let b_row = &self.b[k * n..(k + 1) * n];
                for (o, &b) in out_row.iter_mut().zip(b_row) {
                    *o += a * b;
                }
            }
        }
    }
}

/// The largest rank whose factors are smaller than the matrix.
pub fn max_useful_rank(rows: usize, cols: usize) -> usize {
    (rows * cols).saturating_sub(1) / (rows + cols)
}

fn check_size(rank: usize, rows: usize, cols: usize) -> Result<(), LowRankError> {
    if rank > max_useful_rank(rows, cols) {
        return Err(LowRankError::Grows {
            rank,
            rows,
            cols,
            factors: rank * (rows + cols),
            dense: rows * cols,
        });
    }
    Ok(())
}

/// A thin SVD: U (m × k), σ (k), Vᵀ rows... as owned f64 matrices.
struct Svd {
    u: Mat<f64>,
    s: Vec<f64>,
    v: Mat<f64>,
}

fn thin_svd(m: &Mat<f64>) -> Result<Svd, LowRankError> {
    let svd = m.thin_svd().map_err(|_| LowRankError::NoConvergence)?;
    let s = svd.S().column_vector();
    Ok(Svd {
        u: svd.U().to_owned(),
        s: (0..s.nrows()).map(|i| s[i]).collect(),
        v: svd.V().to_owned(),
    })
}

fn gaussian(rows: usize, cols: usize, seed: u64) -> Mat<f64> {
    let mut rng = SplitMix::new(seed, 0x10A4);
    Mat::from_fn(rows, cols, |_, _| {
        // Box–Muller.
        let (u1, u2) = (rng.next_unit().max(f64::MIN_POSITIVE), rng.next_unit());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    })
}

/// The top `width` singular triplets of `w`, by randomized SVD.
fn randomized_svd(w: &Mat<f64>, width: usize, seed: u64) -> Result<Svd, LowRankError> {
    let omega = gaussian(w.ncols(), width, seed);
    let mut y = w * &omega;
    for _ in 0..POWER_ITERATIONS {
        let q = y.qr().compute_thin_Q();
        let z = w.transpose() * &q;
        let q = z.qr().compute_thin_Q();
        y = w * &q;
    }
    let q = y.qr().compute_thin_Q();
    let small = q.transpose() * w;
    let svd = thin_svd(&small)?;
    Ok(Svd {
        u: &q * &svd.u,
        s: svd.s,
        v: svd.v,
    })
}

/// Factorizes the row-major `rows × cols` matrix `w`.
pub fn factorize(
    w: &[f32],
    rows: usize,
    cols: usize,
    rank: Rank,
    seed: u64,
) -> Result<Factors, LowRankError> {
    let matrix = Mat::from_fn(rows, cols, |i, j| f64::from(w[i * cols + j]));
    let energy: f64 = w.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    let full = rows.min(cols);
    let choose = |s: &[f64]| -> usize {
        match rank {
            Rank::Fixed(r) => r.min(s.len()),
            Rank::Energy(fraction) => {
                let target = fraction * energy;
                let mut kept = 0.0;
                for (i, v) in s.iter().enumerate() {
                    kept += v * v;
                    // A relative slack absorbs the rounding of the energy sums.
                    if kept >= target * (1.0 - 1e-12) {
                        return i + 1;
                    }
                }
                s.len()
            }
        }
    };
    if let Rank::Fixed(r) = rank {
        check_size(r, rows, cols)?;
    }
    let svd = if full <= EXACT_LIMIT {
        thin_svd(&matrix)?
    } else {
        let mut width = match rank {
            Rank::Fixed(r) => r + OVERSAMPLE,
            Rank::Energy(_) => 64 + OVERSAMPLE,
        };
        loop {
            if width * 2 >= full {
                break thin_svd(&matrix)?;
            }
            let svd = randomized_svd(&matrix, width, seed)?;
            let needed = choose(&svd.s);
            let captured: f64 = svd.s.iter().map(|s| s * s).sum();
            let enough = match rank {
                Rank::Fixed(_) => true,
                Rank::Energy(f) => {
                    needed + OVERSAMPLE <= width && captured >= f * energy * (1.0 - 1e-12)
                }
            };
            if enough {
                break svd;
            }
            // Stop widening once the needed rank could not shrink the matrix anyway.
            if needed > max_useful_rank(rows, cols) {
                check_size(needed, rows, cols)?;
            }
            width *= 2;
        }
    };
    let r = choose(&svd.s);
    check_size(r, rows, cols)?;
    let a = (0..rows)
        .flat_map(|i| (0..r).map(move |k| (i, k)))
        .map(|(i, k)| (svd.u[(i, k)] * svd.s[k]) as f32)
        .collect();
    let b = (0..r)
        .flat_map(|k| (0..cols).map(move |j| (k, j)))
        .map(|(k, j)| svd.v[(j, k)] as f32)
        .collect();
    Ok(Factors {
        a,
        b,
        rank: r,
        rows,
        cols,
        singular_values: svd.s,
        energy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A matrix with a decaying spectrum: Σ_k 0.7^k · u_k v_kᵀ plus small noise.
    fn decaying(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix::new(seed, 1);
        let mut w = vec![0f32; rows * cols];
        for k in 0..rows.min(cols).min(40) {
            let u: Vec<f64> = (0..rows).map(|_| rng.next_unit() - 0.5).collect();
            let v: Vec<f64> = (0..cols).map(|_| rng.next_unit() - 0.5).collect();
            let weight = 0.7f64.powi(k as i32);
            for i in 0..rows {
                for j in 0..cols {
                    w[i * cols + j] += (weight * u[i] * v[j]) as f32;
                }
            }
        }
        for x in w.iter_mut() {
            *x += ((rng.next_unit() - 0.5) * 1e-4) as f32;
        }
        w
    }

    fn error_energy(w: &[f32], f: &Factors) -> f64 {
        let mut out = vec![0f32; w.len()];
        f.reconstruct_rows(0..f.rows, &mut out);
        w.iter()
            .zip(&out)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
            .sum()
    }

    #[test]
    fn the_error_is_the_energy_of_the_discarded_singular_values() {
        let (rows, cols) = (60, 45);
        let w = decaying(rows, cols, 1);
        for r in [1, 5, 12] {
            let f = factorize(&w, rows, cols, Rank::Fixed(r), 0).unwrap();
            assert_eq!(f.singular_values.len(), 45, "exact SVD on a small matrix");
            let discarded: f64 = f.singular_values[r..].iter().map(|s| s * s).sum();
            let err = error_energy(&w, &f);
            assert!(
                (err - discarded).abs() <= 1e-5 * f.energy,
                "rank {r}: {err} vs {discarded}"
            );
        }
    }

    #[test]
    fn energy_picks_the_smallest_rank_that_keeps_the_fraction() {
        let (rows, cols) = (50, 70);
        let w = decaying(rows, cols, 2);
        let f = factorize(&w, rows, cols, Rank::Energy(0.99), 0).unwrap();
        assert!(f.energy_kept() >= 0.99 - 1e-9);
        let one_less: f64 = f.singular_values[..f.rank - 1].iter().map(|s| s * s).sum();
        assert!(one_less / f.energy < 0.99);
        assert!(f.parameter_fraction() < 1.0);
    }

    #[test]
    fn a_rank_that_would_grow_the_matrix_is_refused() {
        let w = decaying(8, 8, 3);
        assert_eq!(max_useful_rank(8, 8), 3);
        assert!(matches!(
            factorize(&w, 8, 8, Rank::Fixed(4), 0),
            Err(LowRankError::Grows { rank: 4, .. })
        ));
        assert!(factorize(&w, 8, 8, Rank::Fixed(3), 0).is_ok());
    }

    #[test]
    fn randomized_svd_matches_the_exact_one_on_a_large_matrix() {
        let (rows, cols) = (600, 700);
        let w = decaying(rows, cols, 4);
        let matrix = Mat::from_fn(rows, cols, |i, j| f64::from(w[i * cols + j]));
        let exact = thin_svd(&matrix).unwrap();
        let f = factorize(&w, rows, cols, Rank::Fixed(20), 7).unwrap();
        for k in 0..20 {
            let (a, b) = (f.singular_values[k], exact.s[k]);
            assert!((a - b).abs() <= 1e-6 * exact.s[0], "σ{k}: {a} vs {b}");
        }
        let discarded: f64 = exact.s[20..].iter().map(|s| s * s).sum();
        let err = error_energy(&w, &f);
        assert!(
            err <= discarded * 1.01 + 1e-9 * f.energy,
            "{err} vs {discarded}"
        );
    }
}
