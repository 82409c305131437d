//! Latency measurement: warm-up, then repeats until both a minimum count and a time budget are
//! reached; median and 90th percentile of the wall times. The original and the compressed model
//! are timed in alternating rounds (A B, then B A, …) so that both see the same load on a shared
//! machine, and the speed-up is the median of the per-round ratios with its 10th–90th
//! percentile spread. Also what a figure depends on: the CPU model and the runtime's thread
//! count.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::EvalError;
use super::metrics::percentile;

/// How long and how often to repeat.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub warmup: usize,
    pub min_repeats: usize,
    pub max_repeats: usize,
    pub target: Duration,
}

/// One warm-up and at least five rounds, as `llama-bench` runs by default; quick operations
/// get many more from the time target. A 128-token prompt of a 135M model takes about half a
/// second a side here, so every further round is a second of the job.
impl Default for Budget {
    fn default() -> Self {
        Budget {
            warmup: 1,
            min_repeats: 5,
            max_repeats: 500,
            target: Duration::from_millis(400),
        }
    }
}

/// One timed operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Measure {
    /// `decode_token` (one new token after a 16-token prompt, with the KV cache), `prompt`
    /// (a whole prompt in one forward), or `batch` (one forward of a batch).
    pub name: String,
    /// Sequences per forward.
    pub batch: u64,
    /// Tokens per sequence (token models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub median_ms: f64,
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub p90_ms: f64,
    pub repeats: u64,
}

/// The per-round ratio of two timed operations: original time / compressed time, so above 1
/// the compressed model is faster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Speedup {
    /// The measurement's name, as in [`Measure::name`].
    pub name: String,
    pub batch: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Median of the per-round ratios.
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub median: f64,
    /// 10th percentile of the per-round ratios.
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub p10: f64,
    /// 90th percentile of the per-round ratios.
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub p90: f64,
    /// Rounds, each timing both models once.
    pub rounds: u64,
}

/// Median, 90th percentile and count of one side's samples, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub median_ms: f64,
    pub p90_ms: f64,
    pub repeats: u64,
}

impl Timing {
    fn of(samples: &[f64]) -> Timing {
        Timing {
            median_ms: percentile(samples, 0.5),
            p90_ms: percentile(samples, 0.9),
            repeats: samples.len() as u64,
        }
    }
}

/// Both sides of an interleaved measurement and the per-round ratios `a / b`.
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    pub a: Timing,
    pub b: Timing,
    /// Median, 10th and 90th percentile of `a / b` per round.
    pub ratio: (f64, f64, f64),
    pub rounds: u64,
}

/// Times `a` and `b` in alternating rounds (`a` then `b`, then `b` then `a`) under `budget`,
/// each round counting once against the minimum and the target time covering both.
pub fn time_pair(
    budget: Budget,
    mut a: impl FnMut() -> Result<(), EvalError>,
    mut b: impl FnMut() -> Result<(), EvalError>,
) -> Result<Paired, EvalError> {
    for _ in 0..budget.warmup {
        a()?;
        b()?;
    }
    let started = Instant::now();
    let (mut times_a, mut times_b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let timed = |run: &mut dyn FnMut() -> Result<(), EvalError>| -> Result<f64, EvalError> {
        let t = Instant::now();
        run()?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    while ratios.len() < budget.max_repeats
        && (ratios.len() < budget.min_repeats || started.elapsed() < budget.target * 2)
    {
        let (ta, tb) = if ratios.len() % 2 == 0 {
            let ta = timed(&mut a)?;
            (ta, timed(&mut b)?)
        } else {
            let tb = timed(&mut b)?;
            (timed(&mut a)?, tb)
        };
        times_a.push(ta);
        times_b.push(tb);
        ratios.push(if tb > 0.0 { ta / tb } else { f64::NAN });
    }
    Ok(Paired {
        a: Timing::of(&times_a),
        b: Timing::of(&times_b),
        ratio: (
            percentile(&ratios, 0.5),
            percentile(&ratios, 0.1),
            percentile(&ratios, 0.9),
        ),
        rounds: ratios.len() as u64,
    })
}

/// The CPU's model name, from /proc/cpuinfo.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned())
}

/// A `<key> <n> kB` line of a Linux /proc file, in bytes.
pub fn proc_kib_field(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[test]
    fn paired_rounds_alternate_which_side_runs_first() {
        let order = RefCell::new(String::new());
        let budget = Budget {
            warmup: 1,
            min_repeats: 4,
            max_repeats: 4,
            target: Duration::ZERO,
        };
        let paired = time_pair(
            budget,
            || {
                order.borrow_mut().push('a');
                Ok(())
            },
            || {
                order.borrow_mut().push('b');
                Ok(())
            },
        )
        .unwrap();
        // Warm-up a b, then rounds ab, ba, ab, ba: each side goes first in half the rounds.
        assert_eq!(order.into_inner(), "ababbaabba");
        assert_eq!(paired.rounds, 4);
        assert_eq!(paired.a.repeats, 4);
        assert_eq!(paired.b.repeats, 4);
        let (median, low, high) = paired.ratio;
        assert!(low <= median && median <= high, "{low} {median} {high}");
    }

    #[test]
    fn a_failing_side_stops_the_measurement() {
        let result = time_pair(Budget::default(), || Ok(()), || Err(EvalError::Canceled));
        assert!(matches!(result, Err(EvalError::Canceled)));
    }
}
