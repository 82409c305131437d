//! Latency measurement: warm-up, then repeats until both a minimum count and a time budget are
//! reached; median and 90th percentile of the wall times. Also what a figure depends on: the
//! CPU model and the runtime's thread count.

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

impl Default for Budget {
    fn default() -> Self {
        Budget {
            warmup: 2,
            min_repeats: 10,
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

/// Times `run` under `budget`.
pub fn time(
    budget: Budget,
    mut run: impl FnMut() -> Result<(), EvalError>,
) -> Result<(f64, f64, u64), EvalError> {
    for _ in 0..budget.warmup {
        run()?;
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    while samples.len() < budget.max_repeats
        && (samples.len() < budget.min_repeats || started.elapsed() < budget.target)
    {
        let t = Instant::now();
        run()?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((
        percentile(&samples, 0.5),
        percentile(&samples, 0.9),
        samples.len() as u64,
    ))
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
