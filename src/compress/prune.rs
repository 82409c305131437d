//! Pruning kernels. Magnitude pruning zeroes the k smallest-magnitude values exactly, over data
//! visited in chunks, with memory independent of the data size; semi-structured N:M pruning keeps
//! the N largest of every M consecutive values of a row; channel pruning zeroes whole output rows
//! chosen by their L1 or L2 norm.
//!
//! The k-th smallest |x| is found by radix selection on the bits of |x| (for non-negative floats
//! the bit pattern orders like the value): a histogram of the high 16 bits finds the bucket,
//! a histogram of the low 16 bits inside it finds the exact value T (a pass skipped when no
//! value has low bits, as when every value is a widened BF16: the bucket is then one value).
//! Values below T are pruned; values equal to T are pruned in visiting order until exactly k
//! are gone, so the achieved sparsity is exact whatever the ties (zeros already present count
//! as the smallest values).

use rayon::prelude::*;

use crate::numeric::simd::multiversion;
use crate::numeric::{Cancel, Canceled};

const BUCKETS: usize = 1 << 16;

/// Which values to zero in each chunk.
#[derive(Debug, Clone)]
pub struct MagnitudeCut {
    threshold_bits: u32,
    tie_quota: Vec<u64>,
}

#[inline(always)]
fn magnitude_bits(x: f32) -> u32 {
    x.abs().to_bits()
}

multiversion! {
    /// Zeroes every value whose magnitude's bits are below `threshold_bits`; how many.
    fn zero_below(values: &mut [f32], threshold_bits: u32) -> u64 {
        let mut zeroed = 0u64;
        for v in values.iter_mut() {
            let below = magnitude_bits(*v) < threshold_bits;
            zeroed += u64::from(below);
            *v = if below { 0.0 } else { *v };
        }
        zeroed
    }
}

/// The histogram of `key` over every magnitude, and the OR of the magnitudes' low 16 bits
/// (zero when every value is a widened BF16, whose low bits are always zero).
fn histogram<F>(
    chunks: usize,
    visit: &F,
    cancel: &Cancel,
    key: impl Fn(u32) -> Option<usize> + Sync,
) -> Result<(Vec<u64>, u32), Canceled>
where
    F: Fn(usize, &mut dyn FnMut(&[f32])) + Sync,
{
    (0..chunks)
        .into_par_iter()
        .try_fold(
            || (vec![0u64; BUCKETS], 0u32),
            |(mut h, mut low_bits), i| {
                cancel.check()?;
                visit(i, &mut |values: &[f32]| {
                    for &v in values {
                        let bits = magnitude_bits(v);
                        low_bits |= bits & 0xFFFF;
                        if let Some(b) = key(bits) {
                            h[b] += 1;
                        }
                    }
                });
                Ok((h, low_bits))
            },
        )
        .try_reduce(
            || (vec![0u64; BUCKETS], 0),
            |(mut a, a_low), (b, b_low)| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                Ok((a, a_low | b_low))
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
        // The threshold as for several tensors, with this one alone; the ties are then shared
        // out per chunk instead of per tensor.
        let mut cut = GlobalCut::of_count(k);
        for pass in [GlobalPass::High, GlobalPass::Low] {
            cut.observe(pass, chunks, &visit, cancel)?;
            cut.finish(pass);
        }
        let threshold_bits = cut.threshold_bits;
        let ties: Vec<u64> = (0..chunks)
            .into_par_iter()
            .map(|i| count_around(i, &visit, threshold_bits).1)
            .collect();
        cancel.check()?;
        let mut remaining = cut.ties_left;
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
        // Below the threshold in one branch-free pass; then the first `quota` values on it, in
        // order. A value zeroed by the first pass is below a non-zero threshold and cannot be
        // taken for a tie; with a zero threshold the first pass zeroes nothing.
        let mut zeroed = zero_below(values, self.threshold_bits);
        for v in values.iter_mut() {
            if *quota == 0 {
                break;
            }
            if magnitude_bits(*v) == self.threshold_bits {
                *quota -= 1;
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

/// How many values of chunk `i` lie below the magnitude `threshold_bits`, and how many on it.
fn count_around<F>(i: usize, visit: &F, threshold_bits: u32) -> (u64, u64)
where
    F: Fn(usize, &mut dyn FnMut(&[f32])) + Sync,
{
    let (mut below, mut on) = (0u64, 0u64);
    visit(i, &mut |values: &[f32]| {
        for v in values {
            let bits = magnitude_bits(*v);
            below += u64::from(bits < threshold_bits);
            on += u64::from(bits == threshold_bits);
        }
    });
    (below, on)
}

/// A pass of [`GlobalCut`] over every tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalPass {
    /// Histogram of the high 16 bits of |x|.
    High,
    /// Histogram of the low 16 bits inside the crossing bucket.
    Low,
    /// Per tensor: how many values fall below the threshold and how many on it.
    Count,
}

/// One magnitude threshold across several tensors (global magnitude pruning), found in three
/// passes that visit the tensors one at a time, so none is held beyond its turn. The last pass
/// yields each tensor's number of values to prune: that tensor's own exact selection of that
/// many reproduces the global choice (ties at the threshold go to the earlier tensors).
#[derive(Debug, Clone)]
pub struct GlobalCut {
    /// The fraction to prune, or a fixed count.
    sparsity: f64,
    count: Option<u64>,
    high: Vec<u64>,
    low: Vec<u64>,
    k: u64,
    bucket: usize,
    below_bucket: u64,
    threshold_bits: u32,
    ties_left: u64,
    /// Whether any magnitude seen had low 16 bits; if none had, the low pass is skipped.
    low_bits_seen: bool,
}

impl GlobalCut {
    /// The passes, in order; call [`Self::finish`] after each.
    pub const PASSES: [GlobalPass; 3] = [GlobalPass::High, GlobalPass::Low, GlobalPass::Count];

    /// A cut that will prune the fraction `sparsity` of all values seen in the first pass.
    pub fn new(sparsity: f64) -> GlobalCut {
        GlobalCut {
            sparsity,
            count: None,
            high: vec![0; BUCKETS],
            low: vec![0; BUCKETS],
            k: 0,
            bucket: 0,
            below_bucket: 0,
            threshold_bits: 0,
            ties_left: 0,
            low_bits_seen: false,
        }
    }

    /// A cut that will prune exactly `k` values.
    pub fn of_count(k: u64) -> GlobalCut {
        GlobalCut {
            count: Some(k),
            ..GlobalCut::new(0.0)
        }
    }

    /// Feeds one tensor (its chunks, through `visit`) to `pass`. Returns, in the count pass,
    /// how many of its values to prune; 0 otherwise.
    pub fn observe<F>(
        &mut self,
        pass: GlobalPass,
        chunks: usize,
        visit: F,
        cancel: &Cancel,
    ) -> Result<u64, Canceled>
    where
        F: Fn(usize, &mut dyn FnMut(&[f32])) + Sync,
    {
        let add = |total: &mut Vec<u64>, h: Vec<u64>| {
            total.iter_mut().zip(&h).for_each(|(a, b)| *a += b);
        };
        match pass {
            GlobalPass::High => {
                let (h, low_bits) =
                    histogram(chunks, &visit, cancel, |bits| Some((bits >> 16) as usize))?;
                add(&mut self.high, h);
                self.low_bits_seen |= low_bits != 0;
                Ok(0)
            }
            GlobalPass::Low => {
                // Without low bits (BF16 inputs) the crossing bucket holds one magnitude, and
                // `finish` knows the low histogram without a pass over the data.
                if self.k > 0 && self.low_bits_seen {
                    let bucket = self.bucket;
                    let (h, _) = histogram(chunks, &visit, cancel, |bits| {
                        ((bits >> 16) as usize == bucket).then_some((bits & 0xFFFF) as usize)
                    })?;
                    add(&mut self.low, h);
                }
                Ok(0)
            }
            GlobalPass::Count => {
                if self.k == 0 {
                    return Ok(0);
                }
                let (below, on) = (0..chunks)
                    .into_par_iter()
                    .map(|i| count_around(i, &visit, self.threshold_bits))
                    .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
                cancel.check()?;
                let take = on.min(self.ties_left);
                self.ties_left -= take;
                Ok(below + take)
            }
        }
    }

    /// Concludes a pass once every tensor has been observed.
    pub fn finish(&mut self, pass: GlobalPass) {
        match pass {
            GlobalPass::High => {
                let seen: u64 = self.high.iter().sum();
                self.k = self
                    .count
                    .unwrap_or_else(|| prune_count(seen, self.sparsity));
                (self.bucket, self.below_bucket) = crossing(&self.high, self.k);
            }
            GlobalPass::Low => {
                if self.k > 0 {
                    if !self.low_bits_seen {
                        self.low[0] = self.high[self.bucket];
                    }
                    let (offset, below) = crossing(&self.low, self.k - self.below_bucket);
                    self.threshold_bits = ((self.bucket as u32) << 16) | offset as u32;
                    self.ties_left = self.k - self.below_bucket - below;
                }
            }
            GlobalPass::Count => {}
        }
    }
}

/// Semi-structured N:M pruning of values whose length is a multiple of `m`: in every run of `m`
/// consecutive values, the `m − n` of smallest magnitude become zero (on equal magnitudes, the
/// earlier one goes first). Existing zeros count as the smallest.
pub fn prune_n_m(values: &mut [f32], n: usize, m: usize) {
    debug_assert!(n < m && values.len().is_multiple_of(m));
    let drop = m - n;
    for group in values.chunks_exact_mut(m) {
        let mut mask = 0u64;
        for i in 0..m {
            let bits = magnitude_bits(group[i]);
            // Rank of value i: how many come before it in (magnitude, position) order.
            let rank = (0..m)
                .filter(|&j| {
                    let other = magnitude_bits(group[j]);
                    other < bits || (other == bits && j < i)
                })
                .count();
            if rank < drop {
                mask |= 1 << i;
            }
        }
        for (i, v) in group.iter_mut().enumerate() {
            if mask >> i & 1 == 1 {
                *v = 0.0;
            }
        }
    }
}

/// The norm that ranks output channels (rows) for structured pruning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    /// Sum of absolute values.
    L1,
    /// Euclidean norm.
    #[default]
    L2,
}

impl Norm {
    /// The norm of `values`, accumulated in f64 (for L2, the square of the norm: it orders the
    /// same and is what an energy sum needs).
    pub fn measure(self, values: &[f32]) -> f64 {
        match self {
            Norm::L1 => values.iter().map(|v| f64::from(v.abs())).sum(),
            Norm::L2 => values.iter().map(|&v| f64::from(v) * f64::from(v)).sum(),
        }
    }
}

/// The `count` indices of smallest score (on equal scores, the lower index goes first), as a
/// mask: `true` for the indices to remove.
pub fn weakest(scores: &[f64], count: usize) -> Vec<bool> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    let mut mask = vec![false; scores.len()];
    for &i in order.iter().take(count) {
        mask[i] = true;
    }
    mask
}

/// Number of values to prune for a sparsity in [0, 1).
pub fn prune_count(total: u64, sparsity: f64) -> u64 {
    ((total as f64) * sparsity).floor() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut_and_apply(data: &[f32], chunk: usize, sparsity: f64) -> Vec<f32> {
        cut_counting_visits(data, chunk, prune_count(data.len() as u64, sparsity)).0
    }

    /// The cut of the `k` smallest magnitudes, applied chunk by chunk, and how many chunk
    /// visits the selection made.
    fn cut_counting_visits(data: &[f32], chunk: usize, k: u64) -> (Vec<f32>, usize) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let chunks: Vec<&[f32]> = data.chunks(chunk).collect();
        let visits = AtomicUsize::new(0);
        let visit = |i: usize, sink: &mut dyn FnMut(&[f32])| {
            visits.fetch_add(1, Ordering::Relaxed);
            sink(chunks[i])
        };
        let cut = MagnitudeCut::select(chunks.len(), k, visit, &Cancel::new()).unwrap();
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let mut v = c.to_vec();
            cut.apply(i, &mut v);
            out.extend(v);
        }
        (out, visits.into_inner())
    }

    /// The reference: indices sorted by (|x|, index), the first k zeroed.
    fn smallest_zeroed(data: &[f32], k: usize) -> Vec<f32> {
        let mut order: Vec<usize> = (0..data.len()).collect();
        order.sort_by(|&a, &b| data[a].abs().total_cmp(&data[b].abs()).then(a.cmp(&b)));
        let mut want = data.to_vec();
        for &i in &order[..k] {
            want[i] = 0.0;
        }
        want
    }

    /// `n` values in [-1, 1] from an xorshift generator.
    fn xorshift_values(mut state: u64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 2_000_001) as f32 / 1e6 - 1.0
            })
            .collect()
    }

    #[test]
    fn prunes_exactly_the_smallest_magnitudes_like_a_sort() {
        let data = xorshift_values(99, 10_007);
        for sparsity in [0.0, 0.1, 0.5, 0.9, 0.999] {
            let got = cut_and_apply(&data, 333, sparsity);
            let k = prune_count(data.len() as u64, sparsity) as usize;
            assert_eq!(got, smallest_zeroed(&data, k), "sparsity {sparsity}");
        }
    }

    #[test]
    fn bf16_values_skip_the_low_pass_and_cut_like_a_sort() {
        // Widened BF16 values (low 16 bits zero), so many magnitudes tie.
        let data: Vec<f32> = xorshift_values(7, 20_011)
            .into_iter()
            .map(|x| f32::from_bits(x.to_bits() & 0xFFFF_0000))
            .collect();
        let chunks = data.len().div_ceil(500);
        for sparsity in [0.3, 0.5, 0.97] {
            let k = prune_count(data.len() as u64, sparsity);
            let (got, visits) = cut_counting_visits(&data, 500, k);
            // The high histogram and the tie count; no low pass.
            assert_eq!(visits, 2 * chunks, "{sparsity}");
            assert_eq!(
                got,
                smallest_zeroed(&data, k as usize),
                "sparsity {sparsity}"
            );
        }
        // One value with low bits brings the low pass back.
        let mut mixed = data.clone();
        mixed[3] = 0.123_456_79;
        assert_eq!(cut_counting_visits(&mixed, 500, 100).1, 3 * chunks);
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
    fn a_global_cut_prunes_the_smallest_values_of_all_tensors_together() {
        let mut state = 3u64;
        let mut next = move |scale: f32| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state % 20_001) as f32 / 10_000.0 - 1.0) * scale
        };
        // Tensors of different scales: a global cut prunes the small one much harder.
        let mut tensors: Vec<Vec<f32>> = vec![
            (0..3000).map(|_| next(0.1)).collect(),
            (0..5000).map(|_| next(1.0)).collect(),
            (0..1001).map(|_| next(0.5)).collect(),
        ];
        tensors[1][..200].fill(0.25); // ties
        let sparsity = 0.4;
        let mut cut = GlobalCut::new(sparsity);
        let mut counts = Vec::new();
        for pass in GlobalCut::PASSES {
            for t in &tensors {
                let chunks: Vec<&[f32]> = t.chunks(128).collect();
                let n = cut
                    .observe(
                        pass,
                        chunks.len(),
                        |i, sink| sink(chunks[i]),
                        &Cancel::new(),
                    )
                    .unwrap();
                if pass == GlobalPass::Count {
                    counts.push(n);
                }
            }
            cut.finish(pass);
        }
        let all: Vec<f32> = tensors.concat();
        let k = prune_count(all.len() as u64, sparsity) as usize;
        assert_eq!(counts.iter().sum::<u64>() as usize, k);
        let mut order: Vec<usize> = (0..all.len()).collect();
        order.sort_by(|&a, &b| all[a].abs().total_cmp(&all[b].abs()).then(a.cmp(&b)));
        let mut starts = vec![0];
        for t in &tensors {
            starts.push(starts.last().unwrap() + t.len());
        }
        for (t, &count) in counts.iter().enumerate() {
            let want = order[..k]
                .iter()
                .filter(|&&i| (starts[t]..starts[t + 1]).contains(&i))
                .count();
            assert_eq!(count as usize, want, "tensor {t}");
        }
        assert!(
            counts[0] > 2900,
            "the small-scale tensor is pruned almost entirely"
        );
    }

    #[test]
    fn n_m_keeps_the_largest_of_each_group() {
        let mut v = vec![
            0.1f32, -0.4, 0.3, 0.2, 1.0, 1.0, 1.0, 1.0, 0.0, -0.0, 5.0, 0.0,
        ];
        prune_n_m(&mut v, 2, 4);
        assert_eq!(
            v,
            [0.0, -0.4, 0.3, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 5.0, 0.0]
        );
        let mut w: Vec<f32> = (0..16).map(|i| i as f32 - 7.5).collect();
        prune_n_m(&mut w, 4, 8);
        assert_eq!(w.iter().filter(|x| **x != 0.0).count(), 8);
        assert_eq!(&w[..8], &[-7.5, -6.5, -5.5, -4.5, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn weakest_breaks_ties_by_index() {
        assert_eq!(
            weakest(&[3.0, 1.0, 1.0, 0.5, 9.0], 3),
            [false, true, true, true, false]
        );
        assert_eq!(Norm::L1.measure(&[-1.0, 2.0]), 3.0);
        assert_eq!(Norm::L2.measure(&[-1.0, 2.0]), 5.0);
    }

    #[test]
    fn selection_stops_when_canceled() {
        let cancel = Cancel::new();
        cancel.cancel();
        let data = [1.0f32; 8];
        assert!(MagnitudeCut::select(1, 4, |_, sink| sink(&data), &cancel).is_err());
    }
}
