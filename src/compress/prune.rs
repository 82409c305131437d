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
//!
//! Sharing the ties out in visiting order needs each chunk's number of values on T. A tensor's
//! selection gets them without a pass of its own: with low bits, the low pass keeps each chunk's
//! offsets inside the bucket; without, a small sample of chunks estimates the bucket first and
//! the high pass counts, per chunk, a window of buckets around the estimate. Only when the
//! estimate misses, or the bucket is too crowded to keep, does a counting pass run.

use rayon::prelude::*;

use crate::numeric::simd::multiversion;
use crate::numeric::{Cancel, Canceled};

/// Buckets of the low pass: the low 16 bits of |x|.
const BUCKETS: usize = 1 << 16;
/// Buckets of the high pass: the high 16 bits of |x|, whose sign bit is always clear.
const HIGH_BUCKETS: usize = 1 << 15;
/// Buckets either side of the sampled estimate that the high pass counts per chunk. A BF16
/// bucket is 1/128 of an octave, so the window spans half an octave of magnitude.
const WINDOW_RADIUS: usize = 32;
const WINDOW: usize = 2 * WINDOW_RADIUS + 1;
/// Tensors of fewer chunks than this are not sampled: their counting pass is cheap.
const SAMPLED_FROM: usize = 32;
/// The most values the low pass keeps per chunk in the crossing bucket (as 16-bit offsets), so
/// that a crowded bucket falls back to the counting pass rather than holding memory.
const OFFSETS_LIMIT: u64 = 1 << 24;

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

multiversion! {
    /// Counts each value's magnitude into `counts` by its high 16 bits; the OR of all
    /// magnitudes' bits.
    fn count_high(values: &[f32], counts: &mut [u32; HIGH_BUCKETS]) -> u32 {
        let mut seen = 0u32;
        for &v in values {
            let bits = magnitude_bits(v);
            seen |= bits;
            counts[(bits >> 16) as usize & (HIGH_BUCKETS - 1)] += 1;
        }
        seen
    }
}

/// One fold's histogram of the high pass. It counts in u32, a quarter of the cache a u64
/// histogram of every bucket would take, and spills into u64 totals before a count could wrap.
struct HighCounts {
    counts: Box<[u32; HIGH_BUCKETS]>,
    totals: Vec<u64>,
    since_spill: u64,
    low_bits: u32,
    /// Whether a spill fell inside a chunk, which breaks that chunk's window difference.
    spilled_inside_chunk: bool,
}

impl HighCounts {
    fn new() -> HighCounts {
        HighCounts {
            counts: vec![0u32; HIGH_BUCKETS]
                .into_boxed_slice()
                .try_into()
                .expect("length is HIGH_BUCKETS"),
            totals: Vec::new(),
            since_spill: 0,
            low_bits: 0,
            spilled_inside_chunk: false,
        }
    }

    fn spill(&mut self) {
        if self.since_spill == 0 {
            return;
        }
        self.totals.resize(HIGH_BUCKETS, 0);
        for (t, c) in self.totals.iter_mut().zip(self.counts.iter_mut()) {
            *t += u64::from(std::mem::take(c));
        }
        self.since_spill = 0;
    }

    /// Called between chunks: spills early, so a spill rarely falls inside a chunk.
    fn prepare_chunk(&mut self) {
        if self.since_spill > u64::from(u32::MAX / 2) {
            self.spill();
        }
    }

    fn add(&mut self, values: &[f32]) {
        for part in values.chunks(1 << 30) {
            if self.since_spill + part.len() as u64 > u64::from(u32::MAX) {
                self.spill();
                self.spilled_inside_chunk = true;
            }
            self.low_bits |= count_high(part, &mut self.counts) & 0xFFFF;
            self.since_spill += part.len() as u64;
        }
    }

    fn window(&self, first: usize) -> [u32; WINDOW] {
        std::array::from_fn(|j| self.counts[first + j])
    }

    fn finish(mut self) -> (Vec<u64>, u32, bool) {
        self.spill();
        self.totals.resize(HIGH_BUCKETS, 0);
        (self.totals, self.low_bits, self.spilled_inside_chunk)
    }
}

/// The high pass's result: the histogram of the high 16 bits of every magnitude, the OR of
/// their low 16 bits, and, when a window was asked for, each chunk's counts in it.
struct HighPass {
    totals: Vec<u64>,
    low_bits: u32,
    window: Option<(usize, Vec<[u32; WINDOW]>)>,
}

/// Histograms the high 16 bits of the magnitudes of `chunks` (all of `0..n` when None); with
/// `window_first`, also each chunk's counts in the buckets `window_first..+WINDOW`.
fn high_pass<F>(
    n: usize,
    chunks: Option<&[usize]>,
    visit: &F,
    cancel: &Cancel,
    window_first: Option<usize>,
) -> Result<HighPass, Canceled>
where
    F: Fn(usize, &mut dyn FnMut(&[f32])) + Sync,
{
    let first = window_first.unwrap_or(0);
    let fold = |mut acc: HighCounts,
                (i, slot): (usize, Option<&mut [u32; WINDOW]>)|
     -> Result<HighCounts, Canceled> {
        cancel.check()?;
        acc.prepare_chunk();
        let before = slot.as_ref().map(|_| acc.window(first));
        visit(i, &mut |values: &[f32]| acc.add(values));
        if let (Some(slot), Some(before)) = (slot, before) {
            let after = acc.window(first);
            *slot = std::array::from_fn(|j| after[j].wrapping_sub(before[j]));
        }
        Ok(acc)
    };
    let all: Vec<usize>;
    let chunks = match chunks {
        Some(chunks) => chunks,
        None => {
            all = (0..n).collect();
            &all
        }
    };
    let mut slots = vec![
        [0u32; WINDOW];
        if window_first.is_some() {
            chunks.len()
        } else {
            0
        }
    ];
    let (mut totals, low_bits, broken) = match window_first {
        Some(_) => fold_high(
            chunks
                .par_iter()
                .zip(slots.par_iter_mut())
                .map(|(&i, s)| (i, Some(s))),
            fold,
        )?,
        None => fold_high(chunks.par_iter().map(|&i| (i, None)), fold)?,
    };
    totals.resize(HIGH_BUCKETS, 0);
    Ok(HighPass {
        totals,
        low_bits,
        window: window_first.filter(|_| !broken).map(|first| (first, slots)),
    })
}

/// Runs the high pass's `fold` over `items` (a chunk and, with a window, its slot) and merges
/// the folds' histograms.
fn fold_high<'a, I>(
    items: I,
    fold: impl Fn(HighCounts, I::Item) -> Result<HighCounts, Canceled> + Sync + Send,
) -> Result<(Vec<u64>, u32, bool), Canceled>
where
    I: ParallelIterator<Item = (usize, Option<&'a mut [u32; WINDOW]>)>,
{
    items
        .try_fold(HighCounts::new, fold)
        .map(|acc| acc.map(HighCounts::finish))
        .try_reduce(
            || (Vec::new(), 0, false),
            |(mut totals, low, broken), (b_totals, b_low, b_broken)| {
                if totals.is_empty() {
                    totals = b_totals;
                } else if !b_totals.is_empty() {
                    totals.iter_mut().zip(&b_totals).for_each(|(x, y)| *x += y);
                }
                Ok((totals, low | b_low, broken || b_broken))
            },
        )
}

/// The chunks a tensor's sample visits: spread evenly, an eighth of them and at most 64.
fn sample_chunks(chunks: usize) -> Vec<usize> {
    let count = (chunks / 8).clamp(16, 64).min(chunks);
    let stride = chunks / count;
    (0..count).map(|j| j * stride + stride / 2).collect()
}

/// Per chunk, the low 16 bits of its magnitudes that fall in the crossing bucket.
type ChunkOffsets = Vec<Vec<u16>>;

/// The low pass inside `bucket`: its histogram of the low 16 bits, and when `keep_offsets`, each
/// chunk's low 16 bits of the values in the bucket (to count its ties once T is known).
fn low_pass<F>(
    chunks: usize,
    visit: &F,
    cancel: &Cancel,
    bucket: usize,
    keep_offsets: bool,
) -> Result<(Vec<u64>, Option<ChunkOffsets>), Canceled>
where
    F: Fn(usize, &mut dyn FnMut(&[f32])) + Sync,
{
    let offsets_of = |i: usize| -> Result<Vec<u16>, Canceled> {
        cancel.check()?;
        let mut offsets = Vec::new();
        visit(i, &mut |values: &[f32]| {
            for &v in values {
                let bits = magnitude_bits(v);
                if (bits >> 16) as usize == bucket {
                    offsets.push(bits as u16);
                }
            }
        });
        Ok(offsets)
    };
    let count = |mut h: Vec<u64>, offsets: &[u16]| {
        offsets.iter().for_each(|&o| h[usize::from(o)] += 1);
        h
    };
    if keep_offsets {
        let offsets: ChunkOffsets = (0..chunks)
            .into_par_iter()
            .map(offsets_of)
            .collect::<Result<_, _>>()?;
        let low = offsets.iter().fold(vec![0u64; BUCKETS], |h, o| count(h, o));
        return Ok((low, Some(offsets)));
    }
    let low = (0..chunks)
        .into_par_iter()
        .try_fold(|| vec![0u64; BUCKETS], |h, i| Ok(count(h, &offsets_of(i)?)))
        .try_reduce(
            || vec![0u64; BUCKETS],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                Ok(a)
            },
        )?;
    Ok((low, None))
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
        Self::select_within(chunks, k, visit, cancel, OFFSETS_LIMIT)
    }

    fn select_within<F>(
        chunks: usize,
        k: u64,
        visit: F,
        cancel: &Cancel,
        offsets_limit: u64,
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
        // A sample places the window, unless its first chunk shows low bits: then the low
        // pass's offsets count the ties and the window is not needed.
        let mut window_first = None;
        let sampled = match chunks >= SAMPLED_FROM {
            true => sample_chunks(chunks),
            false => Vec::new(),
        };
        let probe = match sampled.first() {
            Some(first) => Some(high_pass(chunks, Some(&[*first]), &visit, cancel, None)?),
            None => None,
        };
        if let Some(probe) = probe.filter(|p| p.low_bits == 0) {
            let mut sample = high_pass(chunks, Some(&sampled[1..]), &visit, cancel, None)?;
            if sample.low_bits == 0 {
                let totals = &mut sample.totals;
                totals
                    .iter_mut()
                    .zip(&probe.totals)
                    .for_each(|(a, b)| *a += b);
                let share = (k as f64 * sampled.len() as f64 / chunks as f64).round() as u64;
                let (estimate, _) = crossing(totals, share.max(1));
                window_first = Some(
                    estimate
                        .saturating_sub(WINDOW_RADIUS)
                        .min(HIGH_BUCKETS - WINDOW),
                );
            }
        }
        let high = high_pass(chunks, None, &visit, cancel, window_first)?;
        let (bucket, below_bucket) = crossing(&high.totals, k);
        let (threshold_bits, ties_left, ties) = if high.low_bits == 0 {
            // Every value of the bucket is T.
            let ties = high.window.and_then(|(first, slots)| {
                (first..first + WINDOW)
                    .contains(&bucket)
                    .then(|| slots.iter().map(|s| u64::from(s[bucket - first])).collect())
            });
            ((bucket as u32) << 16, k - below_bucket, ties)
        } else {
            let keep = high.totals[bucket] <= offsets_limit;
            let (low, offsets) = low_pass(chunks, &visit, cancel, bucket, keep)?;
            let (offset, below) = crossing(&low, k - below_bucket);
            let ties = offsets.map(|offsets| {
                offsets
                    .iter()
                    .map(|o| o.iter().filter(|&&x| usize::from(x) == offset).count() as u64)
                    .collect()
            });
            (
                ((bucket as u32) << 16) | offset as u32,
                k - below_bucket - below,
                ties,
            )
        };
        let ties: Vec<u64> = match ties {
            Some(ties) => ties,
            None => (0..chunks)
                .into_par_iter()
                .map(|i| count_around(i, &visit, threshold_bits).1)
                .collect(),
        };
        cancel.check()?;
        let mut remaining = ties_left;
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
            high: vec![0; HIGH_BUCKETS],
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
                let pass = high_pass(chunks, None, &visit, cancel, None)?;
                add(&mut self.high, pass.totals);
                self.low_bits_seen |= pass.low_bits != 0;
                Ok(0)
            }
            GlobalPass::Low => {
                // Without low bits (BF16 inputs) the crossing bucket holds one magnitude, and
                // `finish` knows the low histogram without a pass over the data.
                if self.k > 0 && self.low_bits_seen {
                    let (h, _) = low_pass(chunks, &visit, cancel, self.bucket, false)?;
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
        let sampled = sample_chunks(chunks).len();
        assert!(chunks >= SAMPLED_FROM && sampled < chunks);
        for sparsity in [0.3, 0.5, 0.97] {
            let k = prune_count(data.len() as u64, sparsity);
            let (got, visits) = cut_counting_visits(&data, 500, k);
            // The sample and the high histogram, which counts the ties: no low pass, no
            // counting pass.
            assert_eq!(visits, sampled + chunks, "{sparsity}");
            assert_eq!(
                got,
                smallest_zeroed(&data, k as usize),
                "sparsity {sparsity}"
            );
        }
        // One value with low bits (outside the sample) brings the low pass back, which keeps
        // the offsets that count the ties.
        let mut mixed = data.clone();
        mixed[3] = 0.123_456_79;
        assert!(!sample_chunks(chunks).contains(&0));
        let (got, visits) = cut_counting_visits(&mixed, 500, 100);
        assert_eq!(visits, sampled + 2 * chunks);
        assert_eq!(got, smallest_zeroed(&mixed, 100));
        // A tensor too small to sample counts its ties in a pass of their own.
        let small = &data[..(SAMPLED_FROM - 1) * 500];
        let (got, visits) = cut_counting_visits(small, 500, 4000);
        assert_eq!(visits, 2 * (SAMPLED_FROM - 1));
        assert_eq!(got, smallest_zeroed(small, 4000));
    }

    #[test]
    fn a_sample_that_misses_the_threshold_falls_back_to_counting() {
        // The sampled chunks hold magnitudes a thousand times larger than the rest, so the
        // window sits far above the true crossing bucket.
        let chunk = 256;
        let chunks = 80;
        let sampled = sample_chunks(chunks);
        let data: Vec<f32> = xorshift_values(11, chunk * chunks)
            .chunks(chunk)
            .enumerate()
            .flat_map(|(c, values)| {
                let scale = if sampled.contains(&c) { 1000.0 } else { 1.0 };
                values
                    .iter()
                    .map(move |x| f32::from_bits((x * scale).to_bits() & 0xFFFF_0000))
                    .collect::<Vec<_>>()
            })
            .collect();
        let k = prune_count(data.len() as u64, 0.5);
        let (got, visits) = cut_counting_visits(&data, chunk, k);
        assert_eq!(visits, sampled.len() + 2 * chunks);
        assert_eq!(got, smallest_zeroed(&data, k as usize));
    }

    #[test]
    fn a_crowded_bucket_counts_its_ties_in_a_pass_of_their_own() {
        // Values with low bits, many tied: the offsets are not kept beyond the limit.
        let mut data = xorshift_values(5, 9_000);
        data[1000..4000].fill(-0.123_456_79);
        let chunks: Vec<&[f32]> = data.chunks(100).collect();
        let k = 3000;
        for (limit, passes) in [(0, 3), (OFFSETS_LIMIT, 2)] {
            let visits = std::sync::atomic::AtomicUsize::new(0);
            let visit = |i: usize, sink: &mut dyn FnMut(&[f32])| {
                visits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                sink(chunks[i])
            };
            let cut =
                MagnitudeCut::select_within(chunks.len(), k, visit, &Cancel::new(), limit).unwrap();
            let mut got = Vec::new();
            for (i, c) in chunks.iter().enumerate() {
                let mut v = c.to_vec();
                cut.apply(i, &mut v);
                got.extend(v);
            }
            assert_eq!(got, smallest_zeroed(&data, k as usize), "limit {limit}");
            // The sample stops at its first chunk, which has low bits.
            let probe = 1;
            assert_eq!(
                visits.into_inner(),
                probe + passes * chunks.len(),
                "limit {limit}"
            );
        }
    }

    #[test]
    fn the_high_histogram_spills_before_a_count_could_wrap() {
        let mut counts = HighCounts::new();
        counts.add(&[1.0, -1.0, 2.0]);
        counts.since_spill = u64::from(u32::MAX) - 1;
        counts.add(&[1.0, 0.5]);
        let (totals, low_bits, spilled_inside_chunk) = counts.finish();
        assert!(spilled_inside_chunk);
        assert_eq!(low_bits, 0);
        assert_eq!(totals[(1.0f32.to_bits() >> 16) as usize], 3);
        assert_eq!(totals[(2.0f32.to_bits() >> 16) as usize], 1);
        assert_eq!(totals[(0.5f32.to_bits() >> 16) as usize], 1);
        assert_eq!(totals.iter().sum::<u64>(), 5);
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
