//! Magnitude pruning: zero the k smallest-magnitude values exactly, over data visited in chunks,
//! with memory independent of the data size.
//!
//! The k-th smallest |x| is found by radix selection on the bits of |x| (for non-negative floats
//! the bit pattern orders like the value): a histogram of the high 16 bits finds the bucket,
//! a histogram of the low 16 bits inside it finds the exact value T. Values below T are pruned;
//! values equal to T are pruned in visiting order until exactly k are gone, so the achieved
//! sparsity is exact whatever the ties (zeros already present count as the smallest values).

use rayon::prelude::*;

use crate::compress::{Cancel, Canceled};

const BUCKETS: usize = 1 << 16;

/// Which values to zero in each chunk.
#[derive(Debug, Clone)]
pub struct MagnitudeCut {
    threshold_bits: u32,
    tie_quota: Vec<u64>,
}

fn magnitude_bits(x: f32) -> u32 {
    x.abs().to_bits()
}

fn histogram<F>(
    chunks: usize,
    visit: &F,
    cancel: &Cancel,
    key: impl Fn(u32) -> Option<usize> + Sync,
) -> Result<Vec<u64>, Canceled>
where
    F: Fn(usize, &mut dyn FnMut(&[f32])) + Sync,
{
    (0..chunks)
        .into_par_iter()
        .try_fold(
            || vec![0u64; BUCKETS],
            |mut h, i| {
                cancel.check()?;
                visit(i, &mut |values: &[f32]| {
                    for &v in values {
                        if let Some(b) = key(magnitude_bits(v)) {
                            h[b] += 1;
                        }
                    }
                });
                Ok(h)
            },
        )
        .try_reduce(
            || vec![0u64; BUCKETS],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                Ok(a)
            },
        )
}

/// The first bucket where the running count reaches `k`, and the count before it.
fn crossing(h: &[u64], k: u64) -> (usize, u64) {
    let mut below = 0;
    for (b, &n) in h.iter().enumerate() {
        if below + n >= k {
            return (b, below);
        }
        below += n;
    }
    (h.len() - 1, below)
}

impl MagnitudeCut {
    /// Selects the `k` smallest-magnitude values among the chunks `0..chunks`; `visit(i, sink)`
    /// must feed chunk `i`'s values to `sink`, in the same order every time.
    pub fn select<F>(
        chunks: usize,
        k: u64,
        visit: F,
        cancel: &Cancel,
    ) -> Result<MagnitudeCut, Canceled>
    where
        F: Fn(usize, &mut dyn FnMut(&[f32])) + Sync,
    {
        if k == 0 {
            return Ok(MagnitudeCut {
                threshold_bits: 0,
                tie_quota: vec![0; chunks],
            });
        }
        let high = histogram(chunks, &visit, cancel, |bits| Some((bits >> 16) as usize))?;
        let (bucket, below_bucket) = crossing(&high, k);
        let low = histogram(chunks, &visit, cancel, |bits| {
            ((bits >> 16) as usize == bucket).then_some((bits & 0xFFFF) as usize)
        })?;
        let (offset, below) = crossing(&low, k - below_bucket);
        let threshold_bits = ((bucket as u32) << 16) | offset as u32;
        let ties: Vec<u64> = (0..chunks)
            .into_par_iter()
            .map(|i| {
                let mut n = 0u64;
                visit(i, &mut |values: &[f32]| {
                    n += values
                        .iter()
                        .filter(|v| magnitude_bits(**v) == threshold_bits)
                        .count() as u64;
                });
                n
            })
            .collect();
        cancel.check()?;
        let mut remaining = k - below_bucket - below;
        let tie_quota = ties
            .iter()
            .map(|&n| {
                let take = n.min(remaining);
                remaining -= take;
                take
            })
            .collect();
        Ok(MagnitudeCut {
            threshold_bits,
            tie_quota,
        })
    }

    /// Zeros chunk `chunk`'s selected values in place (values in the same order as visited).
    /// Returns how many were zeroed.
    pub fn apply(&self, chunk: usize, values: &mut [f32]) -> u64 {
        let mut quota = self.quota(chunk);
        self.apply_part(values, &mut quota)
    }

    /// Applies the cut to a chunk visited in several parts: `quota` carries the ties left.
    pub fn apply_part(&self, values: &mut [f32], quota: &mut u64) -> u64 {
        let mut zeroed = 0;
        for v in values.iter_mut() {
            let bits = magnitude_bits(*v);
            if bits < self.threshold_bits || (bits == self.threshold_bits && *quota > 0) {
                if bits == self.threshold_bits {
                    *quota -= 1;
                }
                *v = 0.0;
                zeroed += 1;
            }
        }
        zeroed
    }

    /// The tie quota of a chunk, for [`Self::apply_part`].
    pub fn quota(&self, chunk: usize) -> u64 {
        self.tie_quota[chunk]
    }
}

/// Number of values to prune for a sparsity in [0, 1).
pub fn prune_count(total: u64, sparsity: f64) -> u64 {
    ((total as f64) * sparsity).floor() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut_and_apply(data: &[f32], chunk: usize, sparsity: f64) -> Vec<f32> {
        let chunks: Vec<&[f32]> = data.chunks(chunk).collect();
        let k = prune_count(data.len() as u64, sparsity);
        let cut = MagnitudeCut::select(chunks.len(), k, |i, sink| sink(chunks[i]), &Cancel::new())
            .unwrap();
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let mut v = c.to_vec();
            cut.apply(i, &mut v);
            out.extend(v);
        }
        out
    }

    #[test]
    fn prunes_exactly_the_smallest_magnitudes_like_a_sort() {
        let mut state = 99u64;
        let data: Vec<f32> = (0..10_007)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 2_000_001) as f32 / 1e6 - 1.0
            })
            .collect();
        for sparsity in [0.0, 0.1, 0.5, 0.9, 0.999] {
            let got = cut_and_apply(&data, 333, sparsity);
            let k = prune_count(data.len() as u64, sparsity) as usize;
            // Reference: sort indices by (|x|, index) and zero the first k.
            let mut order: Vec<usize> = (0..data.len()).collect();
            order.sort_by(|&a, &b| data[a].abs().total_cmp(&data[b].abs()).then(a.cmp(&b)));
            let mut want = data.clone();
            for &i in &order[..k] {
                want[i] = 0.0;
            }
            assert_eq!(got, want, "sparsity {sparsity}");
        }
    }

    #[test]
    fn ties_are_cut_to_the_exact_count() {
        let data = vec![0.5f32; 100];
        let got = cut_and_apply(&data, 7, 0.3);
        assert_eq!(got.iter().filter(|v| **v == 0.0).count(), 30);
        assert!(
            got[..30].iter().all(|v| *v == 0.0),
            "ties go in visiting order"
        );
    }

    #[test]
    fn existing_zeros_count_as_the_smallest() {
        let mut data = vec![1.0f32; 10];
        data[3] = 0.0;
        data[7] = -0.0;
        let got = cut_and_apply(&data, 4, 0.2);
        assert_eq!(got.iter().filter(|v| **v == 0.0).count(), 2);
        assert_eq!(got[0], 1.0);
    }

    #[test]
    fn selection_stops_when_canceled() {
        let cancel = Cancel::new();
        cancel.cancel();
        let data = [1.0f32; 8];
        assert!(MagnitudeCut::select(1, 4, |_, sink| sink(&data), &cancel).is_err());
    }
}
