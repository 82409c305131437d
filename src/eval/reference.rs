//! The original decoder's next-token outputs on an evaluation set, computed once and kept, so
//! that every later job on the same model and set runs only the compressed model (llama.cpp's
//! `--kl-divergence-base` idea, at a fraction of its size).
//!
//! Per scored position it keeps the log-probability of the token that follows, the original's
//! most probable tokens with their log-probabilities (the head: at most [`HEAD_MAX`], fewer
//! when they cover all but [`HEAD_REST`] of the probability), the probability outside the head,
//! and [`TAIL_SAMPLES`] tokens drawn from outside the head in proportion to their probability
//! (systematic sampling, seeded by the position, so a run is repeatable). Perplexity and top-1
//! agreement come out exact. KL(original ‖ compressed) is exact over the head and, over the
//! tail, the tail's probability times the mean of log p − log q over the drawn tokens: an
//! unbiased estimate whose error averages out over positions (on SmolLM2-135M at Q8_0, whose
//! distributions are flat, with 88 % of its positions needing more than 512 tokens to cover
//! 99.9 %, one 511-position sequence came out 1.5 % above the full-vocabulary KL).
//!
//! On disk: a little-endian file with a magic, the digest of everything the outputs depend on
//! (weights, config, tokens, format version), the arrays, and a SHA-256 of it all; any mismatch
//! or damage makes it a miss, never a wrong figure.

use std::io::Write;
use std::path::Path;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::numeric::simd::multiversion;

/// Tokens kept by name per position, at most.
pub const HEAD_MAX: usize = 128;
/// Probability left outside a head that needs no tail samples.
pub const HEAD_REST: f64 = 1e-4;
/// Tokens drawn from the tail of a position whose head leaves more than HEAD_REST.
pub const TAIL_SAMPLES: usize = 64;
const MAGIC: &[u8; 8] = b"SQZREF\0\x02";

/// What the original's outputs depend on, as a digest: a file made for other weights, another
/// config, other tokens or another format is a miss.
pub fn key(weights_identity: &str, config: &serde_json::Value, sequences: &[&[u32]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(MAGIC);
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update([0]);
    h.update(weights_identity.as_bytes());
    h.update([0]);
    h.update(config.to_string().as_bytes());
    h.update([0]);
    for s in sequences {
        h.update((s.len() as u64).to_le_bytes());
        for t in *s {
            h.update(t.to_le_bytes());
        }
    }
    h.finalize().into()
}

/// The original's outputs at every scored position of every sequence.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reference {
    /// Scored positions of each sequence (its tokens minus one).
    scored: Vec<u32>,
    /// Where each sequence's positions start, derived from `scored`.
    starts: Vec<u32>,
    /// Per position: the log-probability of the token that follows.
    target_logprob: Vec<f32>,
    /// Per position: the probability outside the head.
    tail_mass: Vec<f32>,
    /// Per position: the end of its head in `ids` / `logprobs`; its tail samples follow, up to
    /// `entries_end`.
    head_end: Vec<u32>,
    entries_end: Vec<u32>,
    ids: Vec<u32>,
    logprobs: Vec<f32>,
}

/// One position of the reference.
pub struct Position<'a> {
    pub target_logprob: f32,
    pub tail_mass: f32,
    /// The head's token ids, most probable first, and their log-probabilities.
    pub head_ids: &'a [u32],
    pub head_logprobs: &'a [f32],
    /// Tokens drawn from the tail in proportion to their probability, and their
    /// log-probabilities; empty when the head leaves at most HEAD_REST.
    pub sample_ids: &'a [u32],
    pub sample_logprobs: &'a [f32],
}

/// One position as it is built.
struct Kept {
    target_logprob: f32,
    tail_mass: f32,
    head: Vec<(u32, f32)>,
    samples: Vec<(u32, f32)>,
}

impl Reference {
    pub fn sequences(&self) -> usize {
        self.scored.len()
    }

    pub fn positions(&self) -> usize {
        self.target_logprob.len()
    }

    /// Kept tokens (head and samples) over all positions.
    pub fn entries(&self) -> usize {
        self.ids.len()
    }

    /// Position `i` of sequence `s`.
    pub fn position(&self, s: usize, i: usize) -> Position<'_> {
        let p = self.starts[s] as usize + i;
        let begin = if p == 0 {
            0
        } else {
            self.entries_end[p - 1] as usize
        };
        let (head, end) = (self.head_end[p] as usize, self.entries_end[p] as usize);
        Position {
            target_logprob: self.target_logprob[p],
            tail_mass: self.tail_mass[p],
            head_ids: &self.ids[begin..head],
            head_logprobs: &self.logprobs[begin..head],
            sample_ids: &self.ids[head..end],
            sample_logprobs: &self.logprobs[head..end],
        }
    }

    /// Scored positions of sequence `s`.
    pub fn scored(&self, s: usize) -> usize {
        self.scored[s] as usize
    }

    /// Adds a sequence from the original's logits `[tokens, vocab]` (row-major): the rows of
    /// all but the last token are scored against the token after them.
    pub fn add_sequence(&mut self, tokens: &[u32], logits: &[f32], vocab: usize) {
        let scored = tokens.len().saturating_sub(1);
        let rows: Vec<Kept> = logits
            .par_chunks_exact(vocab)
            .take(scored)
            .zip(tokens.get(1..).unwrap_or_default())
            .enumerate()
            .map(|(i, (row, &target))| keep(row, target, i as u64))
            .collect();
        self.starts.push(self.target_logprob.len() as u32);
        self.scored.push(rows.len() as u32);
        for kept in rows {
            self.target_logprob.push(kept.target_logprob);
            self.tail_mass.push(kept.tail_mass);
            for (id, lp) in kept.head {
                self.ids.push(id);
                self.logprobs.push(lp);
            }
            self.head_end.push(self.ids.len() as u32);
            for (id, lp) in kept.samples {
                self.ids.push(id);
                self.logprobs.push(lp);
            }
            self.entries_end.push(self.ids.len() as u32);
        }
    }

    /// Appends the sequences of `other` after this one's.
    pub fn append(&mut self, other: Reference) {
        let (positions, entries) = (self.positions() as u32, self.entries() as u32);
        self.starts
            .extend(other.starts.iter().map(|s| s + positions));
        self.scored.extend(other.scored);
        self.target_logprob.extend(other.target_logprob);
        self.tail_mass.extend(other.tail_mass);
        self.head_end
            .extend(other.head_end.iter().map(|e| e + entries));
        self.entries_end
            .extend(other.entries_end.iter().map(|e| e + entries));
        self.ids.extend(other.ids);
        self.logprobs.extend(other.logprobs);
    }

    /// Writes the reference to `path` atomically (a temporary file renamed over it).
    pub fn save(&self, path: &Path, key: &[u8; 32]) -> std::io::Result<()> {
        let (positions, entries) = (self.positions(), self.entries());
        let mut bytes =
            Vec::with_capacity(64 + 4 * (self.scored.len() + 4 * positions + 2 * entries));
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(key);
        for n in [self.scored.len(), positions, entries] {
            bytes.extend_from_slice(&(n as u64).to_le_bytes());
        }
        let words =
            |out: &mut Vec<u8>, v: &[u32]| v.iter().for_each(|x| out.extend(x.to_le_bytes()));
        let floats =
            |out: &mut Vec<u8>, v: &[f32]| v.iter().for_each(|x| out.extend(x.to_le_bytes()));
        words(&mut bytes, &self.scored);
        floats(&mut bytes, &self.target_logprob);
        floats(&mut bytes, &self.tail_mass);
        words(&mut bytes, &self.head_end);
        words(&mut bytes, &self.entries_end);
        words(&mut bytes, &self.ids);
        floats(&mut bytes, &self.logprobs);
        let digest = Sha256::digest(&bytes);
        bytes.extend_from_slice(&digest);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let temp = path.with_extension(format!(
            "tmp.{}.{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let written = (|| {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written
    }

    /// Reads the reference kept at `path` for `key`; `Ok(None)` when there is none, or it was
    /// made for other inputs, or it is damaged (the reason is logged).
    pub fn load(path: &Path, key: &[u8; 32]) -> std::io::Result<Option<Reference>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match Reference::parse(&bytes, key) {
            Ok(r) => Ok(Some(r)),
            Err(why) => {
                tracing::info!(path = %path.display(), why, "the kept reference outputs are not usable; computing them anew");
                Ok(None)
            }
        }
    }

    fn parse(bytes: &[u8], key: &[u8; 32]) -> Result<Reference, &'static str> {
        let body_len = bytes.len().checked_sub(32).ok_or("truncated")?;
        let (body, digest) = bytes.split_at(body_len);
        if body.len() < 64 || &body[..8] != MAGIC {
            return Err("not a reference file of this version");
        }
        if &body[8..40] != key {
            return Err("made for other weights, config or tokens");
        }
        if Sha256::digest(body).as_slice() != digest {
            return Err("damaged (checksum)");
        }
        let count = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        let (sequences, positions, entries) = (count(40), count(48), count(56));
        let expected = [
            sequences, positions, positions, positions, positions, entries, entries,
        ]
        .iter()
        .try_fold(64u64, |acc, n| acc.checked_add(n.checked_mul(4)?))
        .ok_or("sizes overflow")?;
        if expected != body.len() as u64 {
            return Err("sizes do not match the file");
        }
        let mut rest = &body[64..];
        let mut take = |n: u64| -> Vec<[u8; 4]> {
            let (now, later) = rest.split_at(4 * n as usize);
            rest = later;
            now.chunks_exact(4)
                .map(|c| [c[0], c[1], c[2], c[3]])
                .collect()
        };
        let words = |v: Vec<[u8; 4]>| v.into_iter().map(u32::from_le_bytes).collect::<Vec<_>>();
        let floats = |v: Vec<[u8; 4]>| v.into_iter().map(f32::from_le_bytes).collect::<Vec<_>>();
        let scored = words(take(sequences));
        let target_logprob = floats(take(positions));
        let tail_mass = floats(take(positions));
        let head_end = words(take(positions));
        let entries_end = words(take(positions));
        let ids = words(take(entries));
        let logprobs = floats(take(entries));
        let mut previous = 0;
        let mut consistent = scored.iter().map(|&n| n as u64).sum::<u64>() == positions;
        for (&head, &end) in head_end.iter().zip(&entries_end) {
            consistent &= previous <= head && head <= end;
            previous = end;
        }
        consistent &= previous as u64 == entries;
        if !consistent {
            return Err("inconsistent offsets");
        }
        let starts = scored
            .iter()
            .scan(0u32, |next, &n| {
                let start = *next;
                *next += n;
                Some(start)
            })
            .collect();
        Ok(Reference {
            scored,
            starts,
            target_logprob,
            tail_mass,
            head_end,
            entries_end,
            ids,
            logprobs,
        })
    }
}

/// One row's largest logit, where it is, and the sum of the exponentials below it.
#[derive(Debug, Clone, Copy)]
pub struct RowStats {
    pub max: f32,
    pub argmax: usize,
    /// Σ exp(logit − max), accumulated in f64.
    pub sum: f64,
}

impl RowStats {
    pub fn of(row: &[f32]) -> RowStats {
        let mut argmax = 0;
        for (i, &v) in row.iter().enumerate() {
            if v > row[argmax] {
                argmax = i;
            }
        }
        let max = row[argmax];
        RowStats {
            max,
            argmax,
            sum: sum_of_exponentials(row, max),
        }
    }

    /// ln Σ exp(logit).
    pub fn log_sum_exp(&self) -> f64 {
        self.max as f64 + self.sum.ln()
    }
}

multiversion! {
    /// Σ exp(v − max) over the row: lanes of f32 partial sums, each a few hundred terms at most
    /// before it is folded into f64, so the f32 rounding stays far below the figures' printed
    /// precision.
    fn sum_of_exponentials(row: &[f32], max: f32) -> f64 {
        let mut sum = 0f64;
        for chunk in row.chunks(256) {
            let mut lanes = [0f32; 16];
            let mut groups = chunk.chunks_exact(16);
            for group in &mut groups {
                for (lane, &v) in lanes.iter_mut().zip(group) {
                    *lane += exp_of_non_positive(v - max);
                }
            }
            for (lane, &v) in lanes.iter_mut().zip(groups.remainder()) {
                *lane += exp_of_non_positive(v - max);
            }
            sum += lanes.iter().map(|&l| l as f64).sum::<f64>();
        }
        sum
    }
}

/// e^x for x ≤ 0 as 2^n · e^r (n = round(x log2 e), r = x − n ln 2 by Cody and Waite's two-part
/// ln 2, so r keeps its precision however large n is) with e^r's Taylor polynomial to degree 6:
/// relative error below 3e-7, in plain arithmetic the compiler vectorizes (the library's expf is
/// a call per value). Below -87 it stays at e^-87, nothing beside a row's largest term of 1.
#[inline(always)]
fn exp_of_non_positive(x: f32) -> f32 {
    let x = x.max(-87.0);
    let n = (x * std::f32::consts::LOG2_E).round();
    // 0.693359375 has 9 significant bits: n times it is exact for |n| < 2^15.
    let r = (x - n * 0.693_359_4) + n * 2.121_944_4e-4;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// Whether token (a, la) comes before (b, lb) in the head's order: larger logit first, the
/// smaller id first among equal logits.
fn before(a: (u32, f32), b: (u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// What is kept of one row of the original's logits at position `index` of its sequence.
fn keep(row: &[f32], target: u32, index: u64) -> Kept {
    let stats = RowStats::of(row);
    let lse = stats.log_sum_exp();
    let mut candidates: Vec<(u32, f32)> = row
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, v))
        .collect();
    if candidates.len() > HEAD_MAX {
        candidates.select_nth_unstable_by(HEAD_MAX - 1, |&a, &b| before(a, b));
        candidates.truncate(HEAD_MAX);
    }
    candidates.sort_unstable_by(|&a, &b| before(a, b));
    let mut covered = 0f64;
    let mut head = Vec::new();
    for (id, logit) in candidates {
        let lp = logit as f64 - lse;
        head.push((id, lp as f32));
        covered += lp.exp();
        if covered >= 1.0 - HEAD_REST {
            break;
        }
    }
    let tail_mass = (1.0 - covered).max(0.0);
    let samples = if tail_mass > HEAD_REST {
        let last = *head.last().expect("a row has at least one token");
        let last = (last.0, row[last.0 as usize]);
        tail_samples(row, lse, tail_mass, last, index)
    } else {
        Vec::new()
    };
    Kept {
        target_logprob: (row[target as usize] as f64 - lse) as f32,
        tail_mass: tail_mass as f32,
        head,
        samples,
    }
}

/// TAIL_SAMPLES tokens after `last` in the head's order, drawn in proportion to their
/// probability by systematic sampling (evenly spaced points of the tail's cumulative
/// probability, from one seeded offset), with their log-probabilities.
fn tail_samples(
    row: &[f32],
    lse: f64,
    tail_mass: f64,
    last: (u32, f32),
    index: u64,
) -> Vec<(u32, f32)> {
    let offset = crate::numeric::SplitMix::new(0x7461696c, index).next_unit();
    let step = tail_mass / TAIL_SAMPLES as f64;
    let mut next = offset * step;
    let mut cumulative = 0f64;
    let mut samples = Vec::with_capacity(TAIL_SAMPLES);
    for (i, &logit) in row.iter().enumerate() {
        if before((i as u32, logit), last) != std::cmp::Ordering::Greater {
            continue;
        }
        let lp = logit as f64 - lse;
        cumulative += lp.exp();
        while next < cumulative && samples.len() < TAIL_SAMPLES {
            samples.push((i as u32, lp as f32));
            next += step;
        }
    }
    // The tail's mass was measured as one minus the head's; rounding may leave the last point
    // just beyond the summed tail: it falls on the last tail token.
    if let Some(&(id, lp)) = samples.last() {
        samples.resize(TAIL_SAMPLES, (id, lp));
    }
    samples
}

/// The next-token comparison of one compressed row against the original's kept outputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub logprob_compressed: f64,
    pub agrees: bool,
    pub kl: f64,
}

/// Scores the compressed model's logits `row` at a position whose original outputs are `at`
/// and whose next token is `target`.
pub fn score(row: &[f32], target: u32, at: &Position<'_>) -> Scored {
    let stats = RowStats::of(row);
    let lse = stats.log_sum_exp();
    let log_q = |id: u32| row[id as usize] as f64 - lse;
    let mut kl = 0f64;
    let mut covered_q = 0f64;
    for (&id, &lp) in at.head_ids.iter().zip(at.head_logprobs) {
        let lp = lp as f64;
        kl += lp.exp() * (lp - log_q(id));
        covered_q += (row[id as usize] - stats.max).exp() as f64;
    }
    let tail_p = at.tail_mass as f64;
    if !at.sample_ids.is_empty() {
        let drawn: f64 = at
            .sample_ids
            .iter()
            .zip(at.sample_logprobs)
            .map(|(&id, &lp)| lp as f64 - log_q(id))
            .sum();
        kl += tail_p * drawn / at.sample_ids.len() as f64;
    } else if tail_p > 0.0 {
        // The tail as one bucket on each side; q's from its own sum, not 1 − covered, which
        // would cancel to noise when the head holds nearly all of q.
        let tail_q = ((stats.sum - covered_q) / stats.sum).max(f64::MIN_POSITIVE);
        kl += tail_p * (tail_p.ln() - tail_q.ln());
    }
    Scored {
        logprob_compressed: log_q(target),
        agrees: at
            .head_ids
            .first()
            .is_some_and(|&top| top as usize == stats.argmax),
        kl: kl.max(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_softmax(x: &[f32]) -> Vec<f64> {
        let m = x.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let s: f64 = x.iter().map(|&v| (v as f64 - m).exp()).sum();
        x.iter().map(|&v| v as f64 - m - s.ln()).collect()
    }

    fn full_kl(p: &[f32], q: &[f32]) -> f64 {
        let (lp, lq) = (log_softmax(p), log_softmax(q));
        lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum()
    }

    /// Logits of a peaked, long-tailed distribution over `vocab`, seeded.
    fn logits(vocab: usize, seed: u64, spread: f32) -> Vec<f32> {
        let mut rng = crate::numeric::SplitMix::new(seed, 11);
        (0..vocab)
            .map(|i| spread * rng.next_unit() as f32 - (i % 97) as f32 * 0.05)
            .collect()
    }

    #[test]
    fn the_vectorised_exponential_is_within_3e_7_of_the_librarys() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -90.0 * i as f32 / 200_000.0;
            let exact = (x as f64).exp();
            let ours = exp_of_non_positive(x) as f64;
            if x >= -87.0 {
                worst = worst.max((ours - exact).abs() / exact);
            } else {
                // Clamped: below 2e-38, nothing against a row's largest term of 1.
                assert!(ours < 2e-38, "{x}: {ours}");
            }
        }
        assert!(worst < 3e-7, "{worst}");
        let row: Vec<f32> = (0..1000).map(|i| (i % 37) as f32 * -0.7).collect();
        let exact: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
        assert!((sum_of_exponentials(&row, 0.0) / exact - 1.0).abs() < 1e-6);
    }

    #[test]
    fn the_head_is_the_most_probable_tokens_and_the_samples_come_from_the_rest() {
        for spread in [2.0, 8.0, 40.0] {
            let row = logits(5000, 3, spread);
            let exact = log_softmax(&row);
            let kept = keep(&row, 17, 0);
            assert!((kept.target_logprob as f64 - exact[17]).abs() < 1e-5);
            assert!(kept.head.windows(2).all(|w| before(w[0], w[1]).is_lt()));
            assert_eq!(kept.head[0].0 as usize, RowStats::of(&row).argmax);
            let mut by_probability: Vec<usize> = (0..row.len()).collect();
            by_probability.sort_by(|&a, &b| exact[b].total_cmp(&exact[a]).then(a.cmp(&b)));
            for (&(id, lp), &expected) in kept.head.iter().zip(&by_probability) {
                assert_eq!(id as usize, expected);
                assert!((lp as f64 - exact[expected]).abs() < 1e-5);
            }
            let head_mass: f64 = kept
                .head
                .iter()
                .map(|&(id, _)| exact[id as usize].exp())
                .sum();
            assert!((kept.tail_mass as f64 - (1.0 - head_mass)).abs() < 1e-6);
            if kept.tail_mass as f64 > HEAD_REST {
                assert_eq!(kept.head.len(), HEAD_MAX);
                assert_eq!(kept.samples.len(), TAIL_SAMPLES);
                let head: std::collections::HashSet<u32> = kept.head.iter().map(|h| h.0).collect();
                for &(id, lp) in &kept.samples {
                    assert!(!head.contains(&id));
                    assert!((lp as f64 - exact[id as usize]).abs() < 1e-5);
                }
            } else {
                assert!(kept.samples.is_empty());
            }
        }
        // A flat row needs samples; a peaked one does not.
        let mut row = logits(5000, 3, 2.0);
        assert!(!keep(&row, 0, 0).samples.is_empty());
        row[42] += 30.0;
        let peaked = keep(&row, 0, 0);
        assert!(
            peaked.samples.is_empty() && peaked.head[0].0 == 42,
            "{}",
            peaked.tail_mass
        );
    }

    #[test]
    fn scores_agree_with_full_vocabulary_figures() {
        let vocab = 4000;
        for spread in [1.5, 40.0] {
            let positions = 60;
            let tokens: Vec<u32> = (0..=positions as u32)
                .map(|t| t * 37 % vocab as u32)
                .collect();
            let original: Vec<f32> = (0..=positions as u64)
                .flat_map(|s| logits(vocab, s, spread))
                .collect();
            let compressed: Vec<f32> = original
                .iter()
                .zip(logits(original.len(), 99, 0.6))
                .map(|(o, n)| o + n - 0.3)
                .collect();
            let mut reference = Reference::default();
            reference.add_sequence(&tokens, &original, vocab);
            assert_eq!(reference.scored(0), positions);
            let (mut estimated, mut exact) = (0.0, 0.0);
            for i in 0..positions {
                let (o, c) = (
                    &original[i * vocab..][..vocab],
                    &compressed[i * vocab..][..vocab],
                );
                let at = reference.position(0, i);
                let target = tokens[i + 1];
                assert!((at.target_logprob as f64 - log_softmax(o)[target as usize]).abs() < 1e-5);
                let s = score(c, target, &at);
                assert!((s.logprob_compressed - log_softmax(c)[target as usize]).abs() < 1e-5);
                let argmax = |r: &[f32]| RowStats::of(r).argmax;
                assert_eq!(s.agrees, argmax(o) == argmax(c));
                estimated += s.kl;
                exact += full_kl(o, c);
            }
            // Flat rows: the tail is sampled, and the estimate is unbiased; peaked rows: the
            // head holds all but 1e-4, and the bucket leaves almost nothing out.
            let ratio = estimated / exact;
            assert!(
                (ratio - 1.0).abs() < 0.02,
                "spread {spread}: {estimated} vs {exact}"
            );
        }
        // The same row scores zero KL and agrees.
        let row = logits(vocab, 4, 1.5);
        let mut reference = Reference::default();
        reference.add_sequence(&[1, 2], &[row.clone(), row.clone()].concat(), vocab);
        let same = score(&row, 2, &reference.position(0, 0));
        assert!(same.kl < 1e-6 && same.agrees, "{same:?}");
    }

    #[test]
    fn sequences_too_short_to_score_add_no_positions() {
        let vocab = 50;
        let mut reference = Reference::default();
        reference.add_sequence(&[7], &logits(vocab, 1, 3.0), vocab);
        reference.add_sequence(&[], &[], vocab);
        assert_eq!((reference.sequences(), reference.positions()), (2, 0));
        let mut stats = crate::eval::metrics::NextToken::default();
        stats.add(&reference, 0, &[7], &logits(vocab, 2, 3.0), vocab);
        assert_eq!(stats.scored, 0);
    }

    #[test]
    fn a_kept_file_reads_back_and_any_other_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ref.bin");
        let vocab = 300;
        let mut reference = Reference::default();
        reference.add_sequence(&[1, 2, 3], &logits(3 * vocab, 1, 9.0), vocab);
        reference.add_sequence(&[4, 5], &logits(2 * vocab, 2, 9.0), vocab);
        let mut appended = Reference::default();
        appended.add_sequence(&[1, 2, 3], &logits(3 * vocab, 1, 9.0), vocab);
        let mut second = Reference::default();
        second.add_sequence(&[4, 5], &logits(2 * vocab, 2, 9.0), vocab);
        appended.append(second);
        assert_eq!(appended, reference);
        let seqs: [&[u32]; 2] = [&[1, 2, 3], &[4, 5]];
        let key = key("weights", &serde_json::json!({"a": 1}), &seqs);
        reference.save(&path, &key).unwrap();
        let back = Reference::load(&path, &key).unwrap().unwrap();
        assert_eq!(back, reference);
        assert_eq!(
            back.position(1, 0).head_ids,
            reference.position(1, 0).head_ids
        );
        let other = super::key("weights", &serde_json::json!({"a": 2}), &seqs);
        assert!(Reference::load(&path, &other).unwrap().is_none());
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 40;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(Reference::load(&path, &key).unwrap().is_none());
        std::fs::write(&path, &bytes[..100]).unwrap();
        assert!(Reference::load(&path, &key).unwrap().is_none());
        assert!(
            Reference::load(&dir.path().join("none"), &key)
                .unwrap()
                .is_none()
        );
    }
}
