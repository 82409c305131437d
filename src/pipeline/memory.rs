//! The memory a job uses: a thread samples the process's resident set (`VmRSS`) every 20 ms
//! while a phase runs and keeps the highest value. The process's own high-water mark
//! (`VmHWM`) would report the largest job the process ever ran, not this one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

const EVERY: Duration = Duration::from_millis(20);

/// Samples the resident set until dropped or [`RssPeak::finish`]ed.
pub struct RssPeak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn resident() -> u64 {
    crate::eval::latency::proc_kib_field("/proc/self/status", "VmRSS:").unwrap_or(0)
}

impl RssPeak {
    /// Starts sampling.
    pub fn start() -> RssPeak {
        let peak = Arc::new(AtomicU64::new(resident()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::Builder::new()
                .name("rss-peak".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        peak.fetch_max(resident(), Ordering::Relaxed);
                        std::thread::sleep(EVERY);
                    }
                })
                .ok()
        };
        RssPeak { peak, stop, thread }
    }

    /// Stops sampling; the highest resident set seen, None where `/proc` has no figure.
    pub fn finish(mut self) -> Option<u64> {
        self.stop();
        let peak = self.peak.load(Ordering::Relaxed).max(resident());
        (peak > 0).then_some(peak)
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RssPeak {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_that_holds_memory_raises_the_peak_and_the_next_phase_starts_low() {
        let first = RssPeak::start();
        let held: Vec<u8> = vec![1; 200 << 20];
        std::thread::sleep(Duration::from_millis(100));
        std::hint::black_box(&held);
        let high = first.finish().unwrap();
        drop(held);
        let second = RssPeak::start();
        std::thread::sleep(Duration::from_millis(60));
        let low = second.finish().unwrap();
        assert!(high > low + (150 << 20), "{high} vs {low}");
    }
}
