//! Accuracy figures from model outputs, in f64, as plain functions over rows (tested against
//! hand-computed values): next-token statistics between two decoders, cosine similarity,
//! top-1 accuracy, percentiles, and the seeded Gaussian noise of the robustness curve.

use super::reference::{self, Reference};
use crate::numeric::SplitMix;

/// Running next-token figures of a compressed decoder against the original's kept outputs.
#[derive(Debug, Default, Clone)]
pub struct NextToken {
    pub scored: u64,
    pub nll_original: f64,
    pub nll_compressed: f64,
    pub agree: u64,
    /// KL(original ‖ compressed) at every scored position.
    pub kl: Vec<f64>,
}

impl NextToken {
    /// Adds sequence `s` of the reference: the compressed model's logits `[tokens, vocab]`
    /// (row-major); the target of position i is token i + 1.
    pub fn add(
        &mut self,
        reference: &Reference,
        s: usize,
        tokens: &[u32],
        logits: &[f32],
        vocab: usize,
    ) {
        use rayon::prelude::*;
        let scored: Vec<(f64, reference::Scored)> = logits
            .par_chunks_exact(vocab)
            .take(reference.scored(s))
            .zip(tokens.get(1..).unwrap_or_default())
            .enumerate()
            .map(|(i, (row, &target))| {
                let at = reference.position(s, i);
                (at.target_logprob as f64, reference::score(row, target, &at))
            })
            .collect();
        for (original, compressed) in scored {
            self.scored += 1;
            self.nll_original -= original;
            self.nll_compressed -= compressed.logprob_compressed;
            self.agree += compressed.agrees as u64;
            self.kl.push(compressed.kl);
        }
    }

    /// Adds the positions another run scored after this one's.
    pub fn merge(&mut self, other: NextToken) {
        self.scored += other.scored;
        self.nll_original += other.nll_original;
        self.nll_compressed += other.nll_compressed;
        self.agree += other.agree;
        self.kl.extend(other.kl);
    }

    pub fn perplexity_original(&self) -> f64 {
        (self.nll_original / self.scored.max(1) as f64).exp()
    }
    pub fn perplexity_compressed(&self) -> f64 {
        (self.nll_compressed / self.scored.max(1) as f64).exp()
    }
    pub fn kl_mean(&self) -> f64 {
        self.kl.iter().sum::<f64>() / self.kl.len().max(1) as f64
    }
    pub fn kl_p99(&self) -> f64 {
        percentile(&self.kl, 0.99)
    }
    pub fn top1_agreement(&self) -> f64 {
        self.agree as f64 / self.scored.max(1) as f64
    }
}

/// Index of the largest value (the first of ties).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// The q-quantile by linear interpolation between order statistics (NumPy's default).
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// Cosine similarity; 1 for two zero vectors, 0 when only one is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    if aa == 0.0 && bb == 0.0 {
        1.0
    } else if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// Fraction of rows whose largest logit is the label.
pub fn accuracy(logits: &[Vec<f32>], labels: &[u32]) -> f64 {
    let right = logits
        .iter()
        .zip(labels)
        .filter(|&(l, &y)| argmax(l) == y as usize)
        .count();
    right as f64 / labels.len().max(1) as f64
}

/// Standard deviation of all values.
pub fn std_dev(values: &[f32]) -> f64 {
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    (values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt()
}

/// `values` plus Gaussian noise of standard deviation `sigma` (Box–Muller on SplitMix64, so the
/// original and the compressed model see the same draws in every run).
pub fn with_noise(values: &[f32], sigma: f64, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix::new(seed, 0x6e6f697365);
    let mut out = Vec::with_capacity(values.len());
    let mut spare: Option<f64> = None;
    for &v in values {
        let z = match spare.take() {
            Some(z) => z,
            None => {
                let u1 = rng.next_unit().max(f64::MIN_POSITIVE);
                let u2 = rng.next_unit();
                let r = (-2.0 * u1.ln()).sqrt();
                let angle = 2.0 * std::f64::consts::PI * u2;
                spare = Some(r * angle.sin());
                r * angle.cos()
            }
        };
        out.push((v as f64 + sigma * z) as f32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_softmax(x: &[f32]) -> Vec<f32> {
        let m = x.iter().cloned().fold(f32::MIN, f32::max);
        let s: f32 = x.iter().map(|v| (v - m).exp()).sum();
        x.iter().map(|v| v - m - s.ln()).collect()
    }

    #[test]
    fn next_token_figures_score_each_position_against_the_following_token() {
        let vocab = 3;
        let a = [0.0f32, 5.0, 0.0];
        let b = [5.0f32, 0.0, 0.0];
        let tokens = [0, 1, 1];
        let mut reference = Reference::default();
        reference.add_sequence(&tokens, &[a, a, a].concat(), vocab);
        let mut s = NextToken::default();
        // Targets are tokens 1 and 1; the last position has no target.
        s.add(&reference, 0, &tokens, &[a, b, b].concat(), vocab);
        assert_eq!(s.scored, 2);
        assert_eq!(s.agree, 1);
        let expected = (-(log_softmax(&a)[1] as f64)).exp();
        assert!((s.perplexity_original() - expected).abs() < 1e-5);
        assert!(s.perplexity_compressed() > s.perplexity_original());
        assert!(s.kl_mean() > 0.0 && s.kl[0] < 1e-6);
        // Hand computation of the second position: KL(softmax(a) ‖ softmax(b)).
        let (p, q) = (log_softmax(&a), log_softmax(&b));
        let kl: f64 = p
            .iter()
            .zip(&q)
            .map(|(&lp, &lq)| (lp as f64).exp() * (lp - lq) as f64)
            .sum();
        assert!((s.kl[1] - kl).abs() < 1e-5, "{} vs {kl}", s.kl[1]);
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.5);
        assert!((percentile(&v, 0.99) - 3.97).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 0.9), 7.0);
    }

    #[test]
    fn cosine_accuracy_and_noise() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - 0.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(accuracy(&[vec![0.0, 1.0], vec![1.0, 0.0]], &[1, 1]), 0.5);
        let x = vec![0.0f32; 20_000];
        let noisy = with_noise(&x, 2.0, 7);
        assert!((std_dev(&noisy) - 2.0).abs() < 0.05);
        assert_eq!(noisy, with_noise(&x, 2.0, 7));
    }
}
