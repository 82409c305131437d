//! Weight clustering: one-dimensional k-means over the values of a tensor (or of each row),
//! with k = 2^bits centroids, k-means++ initialisation and a seed, so a value is stored as a
//! `bits`-wide index into a small codebook.
//!
//! Determinism: the random choices come from SplitMix64 (fixed here, so a seed means the same
//! codebook in every squeeze version), sums are folded in a fixed order, and nothing depends on
//! the thread count. For a whole tensor, Lloyd's iterations run on a strided sample of at most
//! [`SAMPLE`] values (the whole tensor when smaller), then one refinement step over every value
//! moves each centroid to the mean of the values assigned to it; rows are clustered exactly.

use crate::numeric::SplitMix;

/// Most values a tensor-wide k-means iterates on before its refinement pass.
pub const SAMPLE: usize = 1 << 20;

/// Lloyd iterations at most (each costs O(k log n) on sorted values, so this is generous).
const MAX_ITERATIONS: usize = 10_000;

/// Sorted centroids and the boundaries between them.
#[derive(Debug, Clone, PartialEq)]
pub struct Codebook {
    centroids: Vec<f32>,
    boundaries: Vec<f32>,
}

impl Codebook {
    /// A codebook of these centroids (sorted and deduplicated here).
    pub fn new(mut centroids: Vec<f32>) -> Codebook {
        centroids.sort_by(f32::total_cmp);
        centroids.dedup();
        let boundaries = centroids
            .windows(2)
            .map(|w| w[0] + (w[1] - w[0]) / 2.0)
            .collect();
        Codebook {
            centroids,
            boundaries,
        }
    }

    /// The centroids, ascending.
    pub fn centroids(&self) -> &[f32] {
        &self.centroids
    }

    /// The index of the nearest centroid (a value on a boundary goes to the lower one).
    #[inline]
    pub fn index(&self, x: f32) -> usize {
        self.boundaries.partition_point(|&b| b < x)
    }

    /// Replaces every value by its nearest centroid.
    pub fn apply(&self, values: &mut [f32]) {
        for v in values.iter_mut() {
            *v = self.centroids[self.index(*v)];
        }
    }

    /// Per-centroid sums and counts of the values, for a Lloyd step.
    pub fn accumulate(&self, values: &[f32], sums: &mut [f64], counts: &mut [u64]) {
        for &v in values {
            let i = self.index(v);
            sums[i] += f64::from(v);
            counts[i] += 1;
        }
    }

    /// Moves each centroid to the mean of its values (a centroid with none stays).
    pub fn recentre(&self, sums: &[f64], counts: &[u64]) -> Codebook {
        Codebook::new(
            self.centroids
                .iter()
                .zip(sums.iter().zip(counts))
                .map(|(&c, (&s, &n))| if n > 0 { (s / n as f64) as f32 } else { c })
                .collect(),
        )
    }
}

/// k-means++ seeding: the first centroid uniformly, each next one with probability
/// proportional to its squared distance from the nearest chosen one. Stops early when every
/// value already sits on a centroid (fewer distinct values than `k`).
fn seed_centroids(values: &[f32], k: usize, rng: &mut SplitMix) -> Vec<f32> {
    let mut centroids = Vec::with_capacity(k);
    if values.is_empty() {
        return vec![0.0];
    }
    let first = values[(rng.next_unit() * values.len() as f64) as usize % values.len()];
    centroids.push(first);
    let mut distance: Vec<f64> = values
        .iter()
        .map(|&v| (f64::from(v) - f64::from(first)).powi(2))
        .collect();
    while centroids.len() < k {
        let total: f64 = distance.iter().sum();
        if total <= 0.0 {
            break;
        }
        let mut target = rng.next_unit() * total;
        let mut pick = values.len() - 1;
        for (i, &d) in distance.iter().enumerate() {
            if target < d {
                pick = i;
                break;
            }
            target -= d;
        }
        let c = values[pick];
        centroids.push(c);
        for (d, &v) in distance.iter_mut().zip(values) {
            *d = d.min((f64::from(v) - f64::from(c)).powi(2));
        }
    }
    centroids
}

/// k-means with k-means++ seeding, then Lloyd's iterations to a fixed point (or
/// [`MAX_ITERATIONS`]). In one dimension each cluster is a run of the sorted values, so an
/// iteration needs only the boundaries' positions (binary search) and prefix sums: the values
/// are sorted once and each iteration costs O(k log n) instead of O(n).
pub fn kmeans(values: &[f32], k: usize, rng: &mut SplitMix) -> Codebook {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f32::total_cmp);
    let mut prefix = Vec::with_capacity(sorted.len() + 1);
    prefix.push(0f64);
    let mut running = 0f64;
    for &v in &sorted {
        running += f64::from(v);
        prefix.push(running);
    }
    let mut book = Codebook::new(seed_centroids(&sorted, k, rng));
    for _ in 0..MAX_ITERATIONS {
        let mut start = 0;
        let n = book.centroids().len();
        let mut sums = vec![0f64; n];
        let mut counts = vec![0u64; n];
        for j in 0..n {
            // Cluster j holds the values in (boundary j−1, boundary j]; the last takes the rest.
            let end = match book.boundaries.get(j) {
                Some(&b) => sorted.partition_point(|&v| v <= b),
                None => sorted.len(),
            };
            sums[j] = prefix[end] - prefix[start];
            counts[j] = (end - start) as u64;
            start = end;
        }
        let next = book.recentre(&sums, &counts);
        if next == book {
            break;
        }
        book = next;
    }
    book
}

/// Clusters each row of `values` (rows of `cols`) on its own, in place; `first_row` numbers the
/// rows so every row gets its own random stream whatever chunk it falls in.
pub fn cluster_rows(values: &mut [f32], cols: usize, bits: u8, seed: u64, first_row: usize) {
    for (r, row) in values.chunks_mut(cols).enumerate() {
        let mut rng = SplitMix::new(seed, (first_row + r) as u64);
        kmeans(row, 1 << bits, &mut rng).apply(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix::new(seed, 0);
        (0..n)
            .map(|_| {
                let normal: f64 = (0..4).map(|_| rng.next_unit()).sum::<f64>() - 2.0;
                normal as f32
            })
            .collect()
    }

    /// Sum of squared distances to the nearest centroid, in f64.
    fn inertia(values: &[f32], centroids: &[f32]) -> f64 {
        values
            .iter()
            .map(|&v| {
                centroids
                    .iter()
                    .map(|&c| (f64::from(v) - f64::from(c)).powi(2))
                    .fold(f64::INFINITY, f64::min)
            })
            .sum()
    }

    #[test]
    fn the_nearest_centroid_wins_with_ties_to_the_lower_one() {
        let book = Codebook::new(vec![1.0, -1.0, 0.0, 1.0]);
        assert_eq!(book.centroids(), &[-1.0, 0.0, 1.0]);
        assert_eq!(book.index(-0.5), 0);
        assert_eq!(book.index(-0.49), 1);
        assert_eq!(book.index(0.5), 1);
        assert_eq!(book.index(7.0), 2);
    }

    #[test]
    fn kmeans_converges_to_a_fixed_point_and_beats_a_uniform_grid() {
        let values = data(5000, 1);
        for bits in [1u8, 2, 3, 4] {
            let k = 1usize << bits;
            let book = kmeans(&values, k, &mut SplitMix::new(42, 0));
            assert!(book.centroids().len() <= k);
            // A fixed point of Lloyd: each centroid is the mean of its values.
            let span =
                f64::from(book.centroids()[book.centroids().len() - 1] - book.centroids()[0]);
            let mut sums = vec![0f64; book.centroids().len()];
            let mut counts = vec![0u64; book.centroids().len()];
            book.accumulate(&values, &mut sums, &mut counts);
            for ((c, s), n) in book.centroids().iter().zip(&sums).zip(&counts) {
                if *n > 0 {
                    assert!(
                        (f64::from(*c) - s / *n as f64).abs() <= 1e-4 * span,
                        "{bits}: {c} vs {} span {span}",
                        s / *n as f64
                    );
                }
            }
            let (lo, hi) = values
                .iter()
                .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            let grid: Vec<f32> = (0..k)
                .map(|i| lo + (hi - lo) * (i as f32 + 0.5) / k as f32)
                .collect();
            assert!(
                inertia(&values, book.centroids()) < inertia(&values, &grid),
                "{bits} bits"
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_codebook_and_few_values_give_few_centroids() {
        let values = data(3000, 2);
        let a = kmeans(&values, 16, &mut SplitMix::new(7, 3));
        let b = kmeans(&values, 16, &mut SplitMix::new(7, 3));
        assert_eq!(a, b);
        let few = [0.5f32, 0.5, -2.0, 0.5, -2.0];
        let book = kmeans(&few, 8, &mut SplitMix::new(1, 0));
        assert_eq!(book.centroids(), &[-2.0, 0.5]);
        let constant = [3.0f32; 10];
        assert_eq!(
            kmeans(&constant, 4, &mut SplitMix::new(1, 0)).centroids(),
            &[3.0]
        );
    }

    #[test]
    fn rows_are_clustered_independently() {
        let mut values = data(4 * 100, 3);
        cluster_rows(&mut values, 100, 2, 9, 0);
        for row in values.chunks(100) {
            let mut distinct: Vec<f32> = row.to_vec();
            distinct.sort_by(f32::total_cmp);
            distinct.dedup();
            assert!(distinct.len() <= 4);
        }
    }
}
