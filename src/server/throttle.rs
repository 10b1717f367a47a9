//! Login throttling: after 5 failed logins in a row for one user name or from one client address,
//! each further attempt must wait 2^(n−5) s (capped at 5 minutes) after the last failure, and is
//! answered 429 with `Retry-After` until then. A successful login clears both. In memory, per server
//! process; the keys are bounded (oldest dropped past 10,000).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before any waiting.
pub const FREE_FAILURES: u32 = 5;
/// The longest wait.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
const MAX_KEYS: usize = 10_000;

/// How long to wait after the `failures`-th failure in a row.
pub fn wait_after(failures: u32) -> Duration {
    if failures < FREE_FAILURES {
        return Duration::ZERO;
    }
    let secs = 1u64.checked_shl(failures - FREE_FAILURES).unwrap_or(u64::MAX);
    Duration::from_secs(secs).min(MAX_WAIT)
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Failed logins per key (`user:<name>`, `addr:<ip>`).
#[derive(Debug, Default)]
pub struct LoginThrottle(Mutex<HashMap<String, Failures>>);

impl LoginThrottle {
    /// Starts a login attempt: `Err(wait)` while any of `keys` must still wait; otherwise the
    /// attempt is counted as a failure at once (in the same lock, so concurrent attempts cannot all
    /// pass one check) until `succeeded` clears it.
    pub fn begin(&self, keys: &[String], now: Instant) -> Result<(), Duration> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let wait = keys
            .iter()
            .filter_map(|k| map.get(k))
            .map(|f| (f.last + wait_after(f.count)).saturating_duration_since(now))
            .max()
            .unwrap_or(Duration::ZERO);
        if !wait.is_zero() {
            return Err(wait);
        }
        Self::record(&mut map, keys, now);
        Ok(())
    }

    fn record(map: &mut HashMap<String, Failures>, keys: &[String], now: Instant) {
        // Bounded: make room first, dropping the entries whose wait is over (then the oldest).
        while map.len() + keys.len() > MAX_KEYS {
            let victim =
                map.iter().min_by_key(|(_, f)| (f.last + wait_after(f.count) > now, f.last)).map(|(k, _)| k.clone());
            match victim {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        for k in keys {
            let f = map.entry(k.clone()).or_insert(Failures { count: 0, last: now });
            f.count = f.count.saturating_add(1);
            f.last = now;
        }
    }

    /// Counts a failure without starting an attempt (tests).
    #[cfg(test)]
    pub fn failed(&self, keys: &[String], now: Instant) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Self::record(&mut map, keys, now);
    }

    pub fn succeeded(&self, keys: &[String]) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            map.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_after_five_failures() {
        let cases = [(0, 0), (4, 0), (5, 1), (6, 2), (9, 16), (13, 256), (14, 300), (200, 300)];
        for (n, secs) in cases {
            assert_eq!(wait_after(n), Duration::from_secs(secs), "{n}");
        }
    }

    #[test]
    fn a_guessing_run_is_slowed_and_a_success_clears_it() {
        let t = LoginThrottle::default();
        let keys = vec!["user:admin".to_owned(), "addr:203.0.113.9".to_owned()];
        let start = Instant::now();
        for i in 0..5 {
            assert_eq!(t.begin(&keys, start), Ok(()), "attempt {i}");
        }
        // Concurrent attempts each count: the sixth waits even before the others answered.
        assert_eq!(t.begin(&keys, start), Err(Duration::from_secs(1)));
        assert_eq!(t.begin(&keys, start + Duration::from_secs(1)), Ok(()));
        assert_eq!(t.begin(&keys, start + Duration::from_secs(2)), Err(Duration::from_secs(1)));
        // Another address is held back by the user's failures, another user by the address's.
        assert!(t.begin(&["user:admin".to_owned(), "addr:198.51.100.1".to_owned()], start).is_err());
        assert!(t.begin(&["user:bob".to_owned(), "addr:198.51.100.1".to_owned()], start).is_ok());
        t.succeeded(&keys);
        assert_eq!(t.begin(&keys, start), Ok(()));
    }

    #[test]
    fn the_table_stays_bounded() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..(MAX_KEYS + 50) {
            t.failed(&[format!("addr:{i}"), "user:admin".to_owned()], now);
        }
        let map = t.0.lock().unwrap();
        assert!(map.len() <= MAX_KEYS, "{}", map.len());
        assert!(map.contains_key("user:admin"), "the guessed user's count was not evicted");
    }
}
