//! A fixed-window limit on sign-in attempts per client address, kept in memory: guessing a
//! login code over the network is slow even though codes are long, and one client's flood
//! costs the database nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Attempts allowed per address and window.
pub const LOGIN_ATTEMPTS_PER_WINDOW: u32 = 10;
/// The window.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at once; past it, expired windows are dropped, and if every one is
/// still open, new addresses wait like a throttled one.
const MAX_ADDRESSES: usize = 10_000;

/// Attempts per address in the current window.
#[derive(Debug, Default)]
pub struct Throttle {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Throttle {
    /// Counts an attempt from `address`: `Ok` to go on, or `Err` with how long to wait.
    pub fn attempt(&self, address: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if windows.len() >= MAX_ADDRESSES && !windows.contains_key(&address) {
            windows.retain(|_, (start, _)| now.duration_since(*start) < LOGIN_WINDOW);
            if windows.len() >= MAX_ADDRESSES {
                return Err(LOGIN_WINDOW);
            }
        }
        let (start, count) = windows.entry(address).or_insert((now, 0));
        if now.duration_since(*start) >= LOGIN_WINDOW {
            *start = now;
            *count = 0;
        }
        if *count >= LOGIN_ATTEMPTS_PER_WINDOW {
            return Err(LOGIN_WINDOW.saturating_sub(now.duration_since(*start)));
        }
        *count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_own_window() {
        let throttle = Throttle::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..LOGIN_ATTEMPTS_PER_WINDOW {
            assert!(throttle.attempt(a).is_ok());
        }
        let wait = throttle.attempt(a).unwrap_err();
        assert!(wait <= LOGIN_WINDOW && wait > Duration::from_secs(50));
        assert!(throttle.attempt(b).is_ok());
    }
}
